"""Corpus stages: shard planning (sources), download/render (download), clipping (clip), captions (text)."""
