from .component import clip  # noqa: F401
