"""Thin KFP components, one folder each; every body imports the musictext library.

All components are lightweight Python components whose ``base_image`` is the project's own image
(the package is preinstalled there), so the same definitions run on a cluster and, through
``kfp.local.SubprocessRunner``, on a laptop with the package installed.
"""

import os

from musictext.kfp_build import default_audio_image, default_image

# Overridable at compile time (musictext compile --image/--audio-image) for a private registry.
IMAGE = os.environ.get("MUSICTEXT_IMAGE", default_image())
# The audio-embedding step's own image: MuQ-MuLan needs transformers<5 and torchaudio.
AUDIO_IMAGE = os.environ.get("MUSICTEXT_AUDIO_IMAGE", default_audio_image())
