from .component import report  # noqa: F401
