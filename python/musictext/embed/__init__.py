"""Stage 3, embed: each family's audio targets per clip shard, the shard index, per-family gathering."""
