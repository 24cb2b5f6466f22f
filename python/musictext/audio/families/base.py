"""What every model family module builds on: its config base, its adapter base, the loaded
bundle, and the ``FamilySpec`` it exports as ``FAMILY``.

Nothing here imports ``musictext.config``: the config imports the families to build its
``audio`` union, so the dependency runs one way only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from musictext import schema
from musictext.audio.decode import load_librosa
from musictext.audio.features import cut_windows, prepare_waveform, window_starts
from musictext.lazy import lazy_module

# Loaded on first use: the family configs are read by steps that never run a model (clip).
torch = lazy_module("torch")


class AudioConfigBase(BaseModel):
    """The ``audio:`` fields every family has; a family adds ``kind``, its own fields and
    ``window_dim`` (pydantic models are ABCs: a family without it cannot be built)."""

    model_config = ConfigDict(extra="forbid")

    # Each family narrows this to ``Literal["<its kind>"]``; the config union discriminates on it.
    kind: str
    # Hub id, local directory or bucket URI (gs://, s3://) of the real checkpoint.
    model: str
    # Demo/tests: build a small random-init model of the real architecture instead of loading.
    random_init: bool = False
    # Architecture overrides for the random-init model (e.g. fewer layers); ignored when loading.
    random_init_arch: dict[str, Any] = Field(default_factory=dict)
    sample_rate: int
    # Throughput knobs; targets are always reduced and enriched in float32.
    batch_windows: int = 8
    autocast: Literal["none", "bf16", "fp16"] = "none"
    storage_dtype: Literal["float32", "float16"] = "float32"
    decode_workers: int = 2

    @model_validator(mode="before")
    @classmethod
    def _only_own_fields(cls, data: Any) -> Any:
        # Says which kind refused a field (pydantic's own message names only the field).
        if isinstance(data, dict):
            foreign = sorted(set(data) - set(cls.model_fields))
            if foreign:
                raise ValueError(
                    f"audio of kind {data.get('kind')!r} has no field {foreign}; "
                    f"its fields are {sorted(cls.model_fields)}"
                )
        return data

    @classmethod
    def kind_name(cls) -> str:
        """The one value this class's ``kind: Literal[...]`` accepts."""
        values = get_args(cls.model_fields["kind"].annotation)
        if len(values) != 1 or not isinstance(values[0], str):
            raise TypeError(f"{cls.__name__}.kind must be Literal['<one kind>']")
        return values[0]

    @property
    @abstractmethod
    def window_dim(self) -> int:
        """Rows of the per-window matrix x[D, T] that is enriched."""

    @property
    def target_dim(self) -> int:
        """Length of the enriched vector: [mean | IQR/1.349 | dmean]."""
        return 3 * self.window_dim

    @property
    def clip_rendering(self) -> str:
        """The clip file this family's upload path reads (``schema.RENDERINGS``): the clip as
        decoded from its source, loaded like any file (a family may read another)."""
        return "native"


class WindowedAudioConfig(AudioConfigBase):
    """Families that cut a track into fixed windows (seconds) before the model."""

    window_s: float
    hop_s: float


@dataclass
class Loaded:
    """A loaded model (eval mode, on its device), its preprocessor if any, the rate it consumes."""

    model: Any
    processor: Any = None
    sample_rate: int = 0


class LibrosaLoadedConfig(WindowedAudioConfig):
    """A family whose upload path is ``librosa.load(file, sr=sample_rate, mono=True)``."""

    @property
    def clip_rendering(self) -> str:
        # The clip stage stores that call's result ("mono24k"): the same vectors as the native
        # file, without the resampling in the GPU task. Other rates read the native clip.
        return "mono24k" if self.sample_rate == schema.RENDERING_RATES["mono24k"] else "native"


class FamilyAdapter(ABC):
    """How a file becomes the model's input, that input becomes units, and a batch of units
    becomes columns [D, t].

    Subclasses never touch enrichment or cross-track batching (the shared AudioEmbedder does).
    """

    def __init__(self, cfg: AudioConfigBase, loaded: Loaded | None = None):
        self.cfg = cfg
        self.loaded = loaded

    @abstractmethod
    def load_file(self, item: str, uri: str) -> torch.Tensor:
        """Decode ``uri`` as the family's upload path does; bad files raise ItemError(item, ..)."""

    def from_tensor(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """The sidecar's tensor path (``embed_audio_tensor``): mono by channel mean, then
        torchaudio's resampling to the model rate."""
        return prepare_waveform(waveform, sample_rate, self.cfg.sample_rate)

    def units(self, loaded: torch.Tensor) -> list[torch.Tensor]:
        """Model inputs of one track; the default is the whole (mono) track."""
        _check_mono(loaded)
        return [loaded]

    def n_units(self, samples: int) -> int:
        """How many units a track of ``samples`` samples (at the model rate) becomes."""
        return 1

    @abstractmethod
    def run(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """[B, *unit shape] equal-shaped units -> B float32 matrices [D, t]."""


def _check_mono(track: torch.Tensor) -> None:
    if track.dim() != 1 or track.numel() == 0:
        raise ValueError(f"expected a non-empty mono waveform, got shape {tuple(track.shape)}")


class WindowedAdapter(FamilyAdapter):
    """Units are the config's windows, the last one aligned to the end of the track; files are
    loaded as ``librosa.load(file, sr=model rate, mono=True)`` (soxr_hq)."""

    cfg: WindowedAudioConfig

    def _chunk_hop(self) -> tuple[int, int]:
        sr = self.cfg.sample_rate
        return int(float(self.cfg.window_s) * sr), int(float(self.cfg.hop_s) * sr)

    def load_file(self, item, uri):
        return load_librosa(item, uri, self.cfg.sample_rate)

    def units(self, loaded):
        _check_mono(loaded)
        return cut_windows(loaded, *self._chunk_hop())

    def n_units(self, samples):
        return len(window_starts(samples, *self._chunk_hop()))


# (audio config, device) -> Loaded
LoadFn = Callable[[Any, "torch.device"], Loaded]


@dataclass(frozen=True)
class FamilySpec:
    """Everything the shared code needs from one family; its module exports it as ``FAMILY``."""

    # configs/<name>.yaml and FamilyConfig.family
    name: str
    # its ``audio:`` section; ``config.kind_name()`` is the family's audio kind
    config: type[AudioConfigBase]
    adapter: type[FamilyAdapter]
    # the real checkpoint (hub id, directory or bucket URI) and the seeded random-init stand-in
    load_checkpoint: LoadFn
    build_random_init: LoadFn
    # Navidrome's model id: checkpoints/{export_name}_best_r1.pt; the family name unless set
    export_name: str = ""

    def __post_init__(self):
        if not self.export_name:
            object.__setattr__(self, "export_name", self.name)

    @property
    def kind(self) -> str:
        return self.config.kind_name()
