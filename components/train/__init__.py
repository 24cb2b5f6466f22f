from .component import train  # noqa: F401
