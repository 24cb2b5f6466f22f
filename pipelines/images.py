"""The container images the components run in: one name each, tagged with the package version.

``musictext compile --image/--audio-image`` (a private registry, a digest) rewrites them in the
compiled YAML; nothing here reads the environment.
"""

from musictext import __version__

REGISTRY = "ghcr.io/musictext"
# Every step but audio embedding: the library with transformers 5 (images/Dockerfile).
IMAGE = f"{REGISTRY}/musictext:{__version__}"
# The audio-embedding step: MuQ-MuLan needs transformers<5 and torchaudio (images/Dockerfile.audio).
AUDIO_IMAGE = f"{REGISTRY}/musictext-audio:{__version__}"
