"""Stage 1, ingest: plan a source's shards, then download (or render) each into a raw shard.

``base`` (the Source interface, shared helpers), ``registry`` (which sources exist),
``download`` (one shard into the raw-shard layout), ``synthetic/`` (the built-in corpus),
``template`` (a minimal working source to copy for a new dataset).
"""
