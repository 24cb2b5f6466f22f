"""Cut every track of a raw shard into clips and write, per clip, the renderings the chosen
families' upload paths read (``schema.RENDERINGS``; each family config's ``clip_rendering``).

A track is decoded once (soundfile, float32, all channels: what librosa.load and
music2latent's file reader decode), only as far as its clips reach (``decode_track``: a clip of
a 3-hour file costs what a clip of a song does), and cut into consecutive windows of
``clip_seconds`` at the source rate. A clip file holds exactly the clip's audio: a short final part (at least
``min_seconds``) is kept at its own length, not padded, because the upload path embeds the file
as it is. A full song (a ``whole_track`` record) is one clip of its whole span. Every clip
carries its track's curriculum ``phase`` (1 short clip, 2 full song; ``track_phase``).
Renderings:

- ``native``: the clip's samples as decoded (source rate, all source channels). MuQ-MuLan and
  MERT load it as Navidrome loads a file (librosa: channel mean, soxr_hq to 24 kHz), so their
  targets are those of the source file's segment; Music2Latent reads it with
  ``m2l_native_rate`` (a user's own files, Navidrome's exact behaviour).
- ``mono24k``: what ``librosa.load(<the native clip as a file>, sr=24000, mono=True)`` returns
  (the same channel mean and soxr_hq call, sample for sample, without importing librosa: its
  imports alone would put the clip stage over its memory bound), stored as float WAV. Loading that
  file the same way returns the same samples (librosa skips resampling at the native rate), so
  MuQ-MuLan's and MERT's targets are still those of the native file, while the channel mean and
  the soxr resampling (~22 ms per 10 s stereo clip) run here, on the CPU fan-out, instead of in
  the GPU task's decode workers (file->vector was 0.63-0.71 of forward-only on an H200 with them).
- ``stereo44k``: 44.1 kHz, two channels, what Music2Latent's upload path stores for the usual
  library file (Navidrome stores no Music2Latent vector for mono or >2-channel files): a mono
  source becomes dual-mono (L = R), more than two channels are downmixed (``downmix_matrix``),
  then other rates are resampled to 44.1 kHz once with soxr_hq (``librosa.resample``, the
  resampler of librosa.load). A stereo 44.1 kHz source is copied unchanged.

The clip files are an intermediate that the GPU stage reads; their container is a choice
(``clip_format``):
- ``wav`` (default): 32-bit float WAV, lossless for every source (soundfile decodes to float32).
  Decoding is a copy (10 s of 44.1 kHz stereo noise: ~0.7 ms on one core here, against ~7.6 ms
  for 24-bit WAV and ~17 ms for FLAC), so the decode workers never hold back a fast model.
- ``flac``: 24-bit FLAC, for when bucket space matters more than decode time (16% of the float
  WAV size on 12 synthetic tracks: 16-bit stereo sources, both renderings). Lossless only for
  sources of at most 24 bits (16/24-bit WAV, FLAC); float, MP3 and Ogg sources and the
  resampled rendering are rounded to the nearest 24-bit level: an error of at most 2**-24 of
  full scale, below float32's own resolution near full scale. Samples beyond [-1, 1] (float
  sources, resampler overshoot, a downmix) are clipped; the summary counts them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import soundfile as sf

from musictext import layout, schema, storage
from musictext.audio.decode import check_waveform, librosa_load_array, open_audio, soxr_resample
from musictext.config import load_family_config, m2l_native_rate_override
from musictext.logs import progress
from musictext.manifest import read_manifest
from musictext.rejects import ItemError, Rejections

log = logging.getLogger(__name__)

# A clip window this quiet (-80 dBFS) is a fade-out or gap, not music worth a training pair;
# whole tracks are judged by musictext.audio.decode (the embedding stage's own rule).
SILENT_WINDOW_PEAK = 1e-4
# clip_format -> soundfile (container, sample type); the format name is also the file extension.
CLIP_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}
DEFAULT_CLIP_FORMAT = "wav"
_LEVELS = 2**23  # 24-bit PCM holds integers in [-2**23, 2**23 - 1], read back as level / 2**23

STEREO44K_RATE = schema.RENDERING_RATES["stereo44k"]
MONO24K_RATE = schema.RENDERING_RATES["mono24k"]

# ----------------------------------------------------------------------------- downmix

_MINUS_3DB = 1.0 / math.sqrt(2.0)
# Speakers of the default WAVE (WAVEFORMATEXTENSIBLE) / FLAC channel layouts, in file order.
DEFAULT_LAYOUTS = {
    3: ("FL", "FR", "FC"),
    4: ("FL", "FR", "BL", "BR"),
    5: ("FL", "FR", "FC", "BL", "BR"),
    6: ("FL", "FR", "FC", "LFE", "BL", "BR"),  # 5.1
    7: ("FL", "FR", "FC", "LFE", "BC", "SL", "SR"),  # 6.1
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),  # 7.1
}
# ITU-R BS.775 stereo downmix: centre and each surround at -3 dB (1/sqrt 2), LFE dropped; a back
# centre feeds both sides at -6 dB (1/2, its -3 dB surround gain split over two sides, as ffmpeg).
SPEAKER_GAINS = {
    "FL": (1.0, 0.0), "FR": (0.0, 1.0), "FC": (_MINUS_3DB, _MINUS_3DB), "LFE": (0.0, 0.0),
    "BL": (_MINUS_3DB, 0.0), "BR": (0.0, _MINUS_3DB), "SL": (_MINUS_3DB, 0.0),
    "SR": (0.0, _MINUS_3DB), "BC": (0.5, 0.5),
}


def downmix_matrix(channels: int) -> np.ndarray:
    """[channels, 2] gains that turn a >2-channel file into stereo (``audio @ matrix``).

    3 to 8 channels: the default WAVE/FLAC layout of that count (``DEFAULT_LAYOUTS``) with the
    ITU-R BS.775 gains (``SPEAKER_GAINS``). More than 8 (no default layout): the first two
    channels are left and right, every further channel feeds both sides at -3 dB. No
    normalisation: levels stay those of the source's front pair (a float WAV keeps samples
    beyond full scale; FLAC clips and counts them).
    """
    if channels < 3:
        raise ValueError(f"a downmix needs more than two channels, got {channels}")
    if channels in DEFAULT_LAYOUTS:
        return np.array([SPEAKER_GAINS[s] for s in DEFAULT_LAYOUTS[channels]], dtype=np.float32)
    rest = [(_MINUS_3DB, _MINUS_3DB)] * (channels - 2)
    return np.array([(1.0, 0.0), (0.0, 1.0), *rest], dtype=np.float32)


def to_stereo(audio: np.ndarray) -> np.ndarray:
    """[samples, channels] -> [samples, 2]: mono as L = R, stereo as is, more channels downmixed."""
    channels = audio.shape[1]
    if channels == 1:
        return np.repeat(audio, 2, axis=1)
    if channels == 2:
        return audio
    return audio @ downmix_matrix(channels)


def render_clip(audio: np.ndarray, rate: int, rendering: str) -> tuple[np.ndarray, int]:
    """One rendering ([samples, channels] float32, its rate) of a clip decoded at ``rate``."""
    if rendering == "native":
        return audio, rate
    if rendering == "mono24k":
        return librosa_load_array(audio, rate, MONO24K_RATE)[:, None], MONO24K_RATE
    if rendering == "stereo44k":
        stereo = to_stereo(audio)
        if rate == STEREO44K_RATE:
            return stereo, rate
        resampled = soxr_resample(stereo, rate, STEREO44K_RATE, axis=0)  # librosa.resample's samples
        return resampled.astype(np.float32, copy=False), STEREO44K_RATE
    raise ValueError(f"unknown rendering {rendering!r}; expected one of {schema.RENDERINGS}")


# ----------------------------------------------------------------------------- families


def renderings_for(families: list[str], profile: str, m2l_native_rate: bool = False) -> list[str]:
    """The renderings the families' upload paths read (their configs' ``clip_rendering``)."""
    wanted = set()
    for family in families:
        cfg = load_family_config(family, profile, m2l_native_rate_override(family, m2l_native_rate))
        wanted.add(cfg.audio.clip_rendering)
    return [r for r in schema.RENDERINGS if r in wanted]


# ----------------------------------------------------------------------------- paths


def clip_file_name(clip_id: str, clip_format: str = DEFAULT_CLIP_FORMAT) -> str:
    """A file name safe on every filesystem and bucket; the hash keeps distinct ids distinct."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id).strip("._")[:80] or "clip"
    digest = hashlib.sha1(clip_id.encode()).hexdigest()[:8]
    return f"{slug}-{digest}.{clip_format}"


# ----------------------------------------------------------------------------- manifest


# ----------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class TrackPart:
    """The part of a track's file that its clips cover, decoded: ``audio`` [n, channels] float32 as
    decoded and its channel mean ``mono`` [n], at ``rate``, from sample ``first`` of the file on.
    ``span``: samples in the track's whole span (manifest start_s/end_s, else the file)."""

    audio: np.ndarray
    mono: np.ndarray
    rate: int
    first: int
    span: int


def decode_track(item: str, uri: str, track: dict, clip_seconds: float, max_clips: int) -> TrackPart:
    """Decode only the frames the track's clips take: its span's first ``max_clips`` windows (the
    whole span for ``whole_track``), so memory follows the clips, not the file. The samples are
    those a whole-file decode holds there (``open_audio``), and the clips are cut from them before
    any rendering resamples, so every rendering is unchanged. Checked: every failure (missing,
    undecodable, empty, NaN, silent in what is read) is an ItemError naming the item."""
    with open_audio(item, uri) as file:
        rate = file.rate
        if file.frames == 0:
            raise ItemError(item, "zero-length audio")
        first, last = track_span(track, file.frames, rate)
        window, windows = track_policy(track, clip_seconds, max_clips, (last - first) / rate)
        spans = clip_spans(last - first, rate, window, windows, min_seconds=0.0)
        needed = spans[-1][2] if spans else 0
        # Up to the file's end, the header's frame count (an estimate for some MP3s) is not trusted.
        to_end = track.get("end_s") is None and needed >= last - first
        audio = file.read(first, -1 if to_end else needed)
    if len(audio):
        check_waveform(item, audio)  # numpy: the clip stage never loads torch
    # The channel mean, as librosa mixes: the signal MuQ-MuLan and MERT see, judged for silence.
    mono = audio.mean(axis=1, dtype=np.float32)
    return TrackPart(audio, mono, rate, first, len(audio) if to_end else last - first)


def clip_spans(samples: int, rate: int, clip_seconds: float, max_clips: int,
               min_seconds: float) -> list[tuple[int, int, int]]:
    """(clip index, start sample, stop sample) of consecutive, non-overlapping windows.

    A final part shorter than ``clip_seconds`` is kept (at its own length) when it holds at
    least ``min_seconds`` of audio and dropped otherwise.
    """
    n = int(round(clip_seconds * rate))
    out = []
    for k in range(max_clips):
        start = k * n
        stop = min(start + n, samples)
        if stop <= start or stop - start < min_seconds * rate:
            break
        out.append((k, start, stop))
    return out


def encode_clip(audio: np.ndarray, rate: int, clip_format: str = DEFAULT_CLIP_FORMAT) -> tuple[bytes, int]:
    """File bytes of a float clip ([samples] or [samples, channels]), and how many samples had
    to be clipped to fit (24-bit only)."""
    container, subtype = CLIP_FORMATS[clip_format]
    data, clipped = _pcm24(audio) if subtype == "PCM_24" else (np.asarray(audio, dtype=np.float32), 0)
    buf = io.BytesIO()
    sf.write(buf, np.ascontiguousarray(data), rate, format=container, subtype=subtype)
    return buf.getvalue(), clipped


def _pcm24(audio: np.ndarray) -> tuple[np.ndarray, int]:
    """Nearest 24-bit levels, as the int32 soundfile writes to PCM_24 (it keeps the top 24 bits),
    and the count of samples clipped to fit. We round ourselves: libsndfile's float conversion
    floors in some containers and rounds in others."""
    levels = np.rint(np.asarray(audio, dtype=np.float64) * _LEVELS)
    clipped = int(np.count_nonzero((levels < -_LEVELS) | (levels > _LEVELS - 1)))
    return np.left_shift(np.clip(levels, -_LEVELS, _LEVELS - 1).astype(np.int32), 8), clipped


# ----------------------------------------------------------------------------- shard


def _write_renderings(clip_id, segment, rate, renderings, out_dir, clip_format, stats) -> list[dict]:
    """Write each rendering of one clip; its CLIP_SCHEMA ``audio`` cell."""
    refs = []
    for rendering in renderings:
        audio, new_rate = render_clip(segment, rate, rendering)
        data, clipped = encode_clip(audio, new_rate, clip_format)
        rel = f"audio/{rendering}/{clip_file_name(clip_id, clip_format)}"
        storage.write_bytes(storage.join(out_dir, rel), data)
        stats["clipped_samples"] += clipped
        refs.append({"rendering": rendering, "sample_rate": new_rate, "channels": int(audio.shape[1]),
                     "path": rel})
    return refs


def track_span(track: dict, samples: int, rate: int) -> tuple[int, int]:
    """The [start, stop) samples of the track's item: its manifest ``start_s``/``end_s`` (a
    segment of a longer file), else the whole file."""
    start_s, end_s = track.get("start_s"), track.get("end_s")
    start = 0 if start_s is None else int(round(float(start_s) * rate))
    stop = samples if end_s is None else min(samples, int(round(float(end_s) * rate)))
    if start >= samples:
        raise ItemError(str(track["track_id"]), f"segment starts at {start_s} s, after the file's end "
                                                f"({samples / rate:.2f} s)")
    return start, stop


def track_policy(track: dict, clip_seconds: float, max_clips: int, span_seconds: float) -> tuple[float, int]:
    """(window length, windows at most) for a track: a full song (``whole_track``) is one clip of
    its whole span; a source's own ``clip_seconds``/``max_clips`` beat the pipeline's."""
    if track.get("whole_track"):
        return max(span_seconds, 1e-9), 1
    return float(track.get("clip_seconds") or clip_seconds), int(track.get("max_clips") or max_clips)


def track_phase(track: dict) -> int:
    """The manifest row's curriculum phase (schema.PHASES); rows written before records carried
    one: a whole track is a full song, anything cut into windows a short clip."""
    phase = track.get("phase")
    if phase is None:
        return schema.SONG_PHASE if track.get("whole_track") else schema.CLIP_PHASE
    if phase not in schema.PHASES:
        raise ItemError(str(track["track_id"]), f"phase {phase!r} is not one of {schema.PHASES}")
    return int(phase)


def _clip_track(track, raw_dir, out_dir, renderings, clip_seconds, max_clips, min_seconds, clip_format,
                rejections, stats):
    track_id = track["track_id"]
    captions = track["captions"]  # non-blank, stripped (manifest.TrackRow)
    phase = track_phase(track)
    try:
        uri = storage.join(raw_dir, track["path"])  # confined to the shard by manifest.TrackRow
        part = decode_track(track_id, uri, track, clip_seconds, max_clips)
    except ItemError as err:
        if track.get("origin"):  # the file the user can fix, not our copy of it
            raise ItemError(err.item, f"{err.reason} (from {track['origin']})") from None
        raise
    audio, mono, rate, first = part.audio, part.mono, part.rate, part.first
    if part.span < min_seconds * rate:
        raise ItemError(track_id, f"too short: {part.span / rate:.2f} s < min_seconds {min_seconds}")
    if audio.shape[1] > 2:
        stats["downmixed_tracks"] += 1
    window, windows = track_policy(track, clip_seconds, max_clips, part.span / rate)
    rows = []
    for k, start, stop in clip_spans(len(mono), rate, window, windows, min(min_seconds, window)):
        clip_id = f"{track_id}#{k}"
        if float(np.abs(mono[start:stop]).max()) < SILENT_WINDOW_PEAK:
            rejections.add(clip_id, "silent clip")
            continue
        refs = _write_renderings(clip_id, audio[start:stop], rate, renderings, out_dir, clip_format, stats)
        rows.append(
            {
                "clip_id": clip_id,
                "track_id": track_id,
                "source": str(track["source"]),
                "split": str(track["split"]),
                "audio": refs,
                "start_s": (first + start) / rate,
                "end_s": (first + stop) / rate,
                "captions": captions,
                "tags": [str(t) for t in track.get("tags") or []],
                "licence": str(track["licence"]),
                "phase": phase,
            }
        )
    return rows


def _check_args(renderings, clip_seconds, max_clips_per_track, min_seconds, clip_format) -> list[str]:
    if clip_format not in CLIP_FORMATS:
        raise ValueError(f"clip_format must be one of {sorted(CLIP_FORMATS)}, got {clip_format!r}")
    unknown = sorted(set(renderings) - set(schema.RENDERINGS))
    if unknown or not renderings:
        raise ValueError(f"renderings must be a non-empty subset of {schema.RENDERINGS}, got {renderings}")
    if clip_seconds <= 0:
        raise ValueError(f"clip_seconds must be > 0, got {clip_seconds}")
    if max_clips_per_track < 1:
        raise ValueError(f"max_clips_per_track must be >= 1, got {max_clips_per_track}")
    if not 0 < min_seconds <= clip_seconds:
        raise ValueError(f"min_seconds must be in (0, clip_seconds], got {min_seconds}")
    return [r for r in schema.RENDERINGS if r in set(renderings)]


def clip_shard(
    raw_dir: str,
    out_dir: str,
    renderings: list[str],
    clip_seconds: float,
    max_clips_per_track: int = 1,
    min_seconds: float = 1.0,
    clip_format: str = DEFAULT_CLIP_FORMAT,
) -> dict:
    """Write clips.parquet (schema.CLIP_SCHEMA), audio/<rendering>/<clip>.<clip_format> and
    rejected.jsonl. ``renderings``: see ``renderings_for``. Every manifest row is checked
    (``manifest.TrackRow``): its audio path must stay inside ``raw_dir``."""
    renderings = _check_args(renderings, clip_seconds, max_clips_per_track, min_seconds, clip_format)
    storage.makedirs(out_dir)
    rejections = Rejections("clip")
    rows_read, entries = read_manifest(raw_dir, rejections)
    tracks = [row.model_dump() for row in rows_read]
    rows: list[dict] = []
    stats = {"clipped_samples": 0, "downmixed_tracks": 0}
    for track in progress(tracks, desc="clip tracks"):
        try:
            rows.extend(
                _clip_track(track, raw_dir, out_dir, renderings, clip_seconds, max_clips_per_track,
                            min_seconds, clip_format, rejections, stats)
            )
        except ItemError as err:
            rejections.add(err.item, err.reason)
    table = pa.Table.from_pylist(rows, schema=schema.CLIP_SCHEMA)
    storage.write_parquet(storage.join(out_dir, layout.CLIPS), table)
    rejections.write(out_dir)
    if stats["clipped_samples"]:
        log.warning("%d samples exceeded full scale and were clipped to fit 24 bits", stats["clipped_samples"])
    return {
        "tracks": entries,
        "clips": len(rows),
        "full_songs": sum(r["phase"] == schema.SONG_PHASE for r in rows),  # of the clips
        "tracks_clipped": len({r["track_id"] for r in rows}),
        "rejected": len(rejections),
        "renderings": renderings,
        "clip_seconds": float(clip_seconds),
        "clip_format": clip_format,
        "clipped_samples": stats["clipped_samples"],
        "downmixed_tracks": stats["downmixed_tracks"],
    }
