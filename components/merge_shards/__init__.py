from .component import merge_shards  # noqa: F401
