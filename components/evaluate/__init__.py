from .component import evaluate  # noqa: F401
