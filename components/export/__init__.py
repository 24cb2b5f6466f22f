from .component import export  # noqa: F401
