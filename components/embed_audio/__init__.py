from .component import embed_audio  # noqa: F401
