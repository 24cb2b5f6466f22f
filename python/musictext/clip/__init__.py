"""Stage 2, clip: fixed-length mono clips at every model's rate, Parquet shards (CLIP_SCHEMA)."""
