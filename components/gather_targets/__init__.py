from .component import gather_targets  # noqa: F401
