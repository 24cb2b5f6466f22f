from .component import cleanup_jobs  # noqa: F401
