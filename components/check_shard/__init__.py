from .component import check_shard  # noqa: F401
