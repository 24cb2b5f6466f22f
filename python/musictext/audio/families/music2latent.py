"""Music2Latent ("music2latent", exported as "latent"): the whole file through ``encode``;
per-frame rows [re/im interleave of the 64 latent channels | 64 magnitudes] -> 576 = 3 x 192.

Navidrome's upload path calls ``model.encode(path, max_waveform_length=44100 * 10)``, which
reads every channel of the file at its own rate, and takes the latents of channel 0 and 1 as
the real and imaginary parts (navidrome-contract.md, "What is actually stored"). So a stereo
file's left and right channels become re and im, and it stores no vector for a mono file
(IndexError) or one with more than two channels (to_R128's reshape fails).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from musictext import storage
from musictext.audio.decode import load_channels
from musictext.audio.families.base import AudioConfigBase, FamilyAdapter, FamilySpec, Loaded
from musictext.audio.features import music2latent_features
from musictext.hub import is_remote, mirror_remote
from musictext.lazy import lazy_module
from musictext.rejects import ItemError

# Loaded on first use (the clip stage reads this module's config only); the stand-in model,
# an nn.Module, lives in _music2latent_tiny.py for the same reason.
torch = lazy_module("torch")

log = logging.getLogger(__name__)

M2L_CHECKPOINT = "music2latent.pt"
# What the sidecar passes to encode (10 s at 44.1 kHz): the length of encode's internal chunks.
M2L_MAX_WAVEFORM = 44100 * 10
# music2latent 0.1.8's STFT hop and time downscaling (hparams.hop, 2 ** freq_downsample_list.count(0)).
M2L_HOP = 512
M2L_DOWNSCALE = 8
# The shortest file encode gives one latent frame for: 3 hops of STFT context + 8 hops.
M2L_MIN_SAMPLES = 3 * M2L_HOP + M2L_DOWNSCALE * M2L_HOP
# Why Navidrome's upload path stores nothing for a file; the embed step records these reasons.
MONO_REASON = (
    "mono file: Navidrome stores no Music2Latent vector for mono files "
    "(its upload path reads latent channel 1 as the imaginary part)"
)
MULTICHANNEL_REASON = (
    "Navidrome stores no Music2Latent vector for files with more than two channels "
    "(to_R128 reshapes exactly two latent channels to 128 rows)"
)


class Music2LatentAudioConfig(AudioConfigBase):
    kind: Literal["music2latent"]
    latent_channels: int  # 64
    # Training targets read the clip's 44.1 kHz stereo rendering ("stereo44k"), the vector
    # Navidrome stores for the usual library file. True reads the clip as decoded from its
    # source ("native"): its own rate taken as 44.1 kHz and its own channels, exactly what the
    # upload path does with the user's files (mono and >2-channel clips are then rejected).
    m2l_native_rate: bool = False

    @property
    def window_dim(self) -> int:
        # re/im interleave (2*C rows) + magnitude (C rows)
        return 3 * int(self.latent_channels)

    @property
    def clip_rendering(self) -> str:
        return "native" if self.m2l_native_rate else "stereo44k"


class Music2LatentAdapter(FamilyAdapter):
    """The whole file through ``encode``. A unit is a track's [channels, samples]; equal-shaped
    tracks share one ``encode`` call, their channels stacked as encode's "channels" (music2latent
    encodes each channel on its own, with per-sample normalisation only)."""

    def load_file(self, item, uri):
        audio, _ = load_channels(item, uri)  # the file's own rate: encode(path) never resamples
        channels = int(audio.shape[0])
        if channels == 1:
            raise ItemError(item, MONO_REASON)
        if channels > 2:
            raise ItemError(item, f"{channels}-channel file: {MULTICHANNEL_REASON}")
        if audio.shape[-1] < M2L_MIN_SAMPLES:
            raise ItemError(
                item, f"{audio.shape[-1]} samples: shorter than one Music2Latent frame ({M2L_MIN_SAMPLES})"
            )
        return audio

    def units(self, loaded):
        track = loaded[None] if loaded.dim() == 1 else loaded  # the tensor path: one channel
        if track.dim() != 2 or track.numel() == 0:
            raise ValueError(f"expected a waveform [channels, samples], got shape {tuple(loaded.shape)}")
        return [track]

    def run(self, batch):
        tracks, channels, samples = batch.shape
        latents = self.loaded.model.encode(
            batch.reshape(tracks * channels, samples),
            max_waveform_length=M2L_MAX_WAVEFORM,
            max_batch_size=max(1, int(self.cfg.batch_windows)) * channels,
        )
        latents = torch.as_tensor(latents)
        # [channels, C, T] per track: two channels are (re, im); one is the tensor path's mono quirk.
        return [music2latent_features(x) for x in latents.reshape(tracks, channels, *latents.shape[1:])]


def build_tiny_music2latent(cfg: Music2LatentAudioConfig, device: torch.device) -> Loaded:
    from musictext.audio.families._music2latent_tiny import TinyMusic2Latent
    from musictext.audio.random_init import init_seed

    arch = dict(cfg.random_init_arch)
    model = TinyMusic2Latent(
        cfg.sample_rate,
        int(cfg.latent_channels),
        hidden=int(arch.get("hidden", 64)),
        n_mels=int(arch.get("n_mels", 64)),
        seed=init_seed(cfg.kind, arch),
    )
    return Loaded(model.to(device).eval(), None, cfg.sample_rate)


def load_music2latent_checkpoint(cfg: Music2LatentAudioConfig, device: torch.device) -> Loaded:
    from music2latent.hparams import sample_rate as m2l_rate

    checkpoint = m2l_checkpoint_path(cfg.model)
    log.info("Music2Latent checkpoint %s", checkpoint)
    return Loaded(load_music2latent(checkpoint, device), None, int(m2l_rate))


def m2l_checkpoint_path(ref: str) -> str:
    """A local checkpoint file for a Music2Latent reference.

    ``ref`` is a ``.pt`` file or a directory holding ``music2latent.pt`` (local, file:// or a
    bucket URI mirrored through fsspec), or a hub repo id (downloaded through huggingface_hub,
    which honours HF_HOME / HF_HUB_OFFLINE) -- never music2latent's own download into
    site-packages.
    """
    ref = storage.local_path(ref)
    if is_remote(ref):
        local = mirror_remote(ref)
        candidates = [local / M2L_CHECKPOINT, local / Path(ref.rstrip("/")).name]
        for cand in candidates:
            if cand.is_file():
                return str(cand)
        raise FileNotFoundError(f"{ref}: no {M2L_CHECKPOINT} in the mirrored location {local}")
    path = Path(ref)
    if path.is_dir():
        path = path / M2L_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f"{ref}: directory without {M2L_CHECKPOINT}")
        return str(path)
    if path.is_file():
        return str(path)
    if ref.startswith((".", "/")) or ref.endswith(".pt"):
        raise FileNotFoundError(f"Music2Latent checkpoint {ref} does not exist")
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=ref, filename=M2L_CHECKPOINT)


def load_music2latent(checkpoint: str, device: torch.device):
    """music2latent's EncoderDecoder around a UNet loaded from ``checkpoint``, no download."""
    from music2latent.inference import EncoderDecoder
    from music2latent.models import UNet

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("gen_state_dict", state)
    gen = UNet()
    result = gen.load_state_dict(state, strict=False)
    missing_encoder = [k for k in result.missing_keys if k.startswith("encoder.")]
    if missing_encoder:
        raise ValueError(
            f"{checkpoint}: not a Music2Latent checkpoint ({len(missing_encoder)} encoder "
            f"weights missing, e.g. {missing_encoder[:3]})"
        )
    codec = EncoderDecoder.__new__(EncoderDecoder)  # skips __init__'s unconditional download
    codec.device = device
    codec.load_path_inference = checkpoint
    codec.gen = gen.to(device).eval()
    return codec


def save_music2latent_checkpoint(gen: torch.nn.Module, directory: str | os.PathLike) -> str:
    """Write a UNet's weights in music2latent's checkpoint layout (tests, mirrors)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / M2L_CHECKPOINT
    torch.save({"gen_state_dict": gen.state_dict()}, path)
    return str(path)


FAMILY = FamilySpec(
    name="music2latent",
    config=Music2LatentAudioConfig,
    adapter=Music2LatentAdapter,
    load_checkpoint=load_music2latent_checkpoint,
    build_random_init=build_tiny_music2latent,
    export_name="latent",
)
