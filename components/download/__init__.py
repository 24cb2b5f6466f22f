from .component import download  # noqa: F401
