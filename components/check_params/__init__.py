from .component import check_params  # noqa: F401
