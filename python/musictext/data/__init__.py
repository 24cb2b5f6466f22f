"""Corpus stages: shard planning (sources), download or render (download), clipping (clip),
caption cleaning and tokenisation (text)."""
