from .component import list_sources  # noqa: F401
