"""Stage 1, ingest: plan a source's shards, then download (or render) each into a raw shard."""
