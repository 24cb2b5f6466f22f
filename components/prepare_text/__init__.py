from .component import prepare_text  # noqa: F401
