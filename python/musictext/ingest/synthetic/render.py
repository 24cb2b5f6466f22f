"""Rendering a synthetic clip's MIDI to audio with FluidSynth and a General MIDI soundfont."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pretty_midi
import soundfile as sf

from musictext.ingest.synthetic.attributes import ClipSpec, SongSpec
from musictext.ingest.synthetic.midi import build_midi, build_song_midi
from musictext.rejects import ItemError

SAMPLE_RATE = 44100
CHANNELS = 2
SOUNDFONT_ENV = "MUSICTEXT_SOUNDFONT"
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
SOUNDFONT_PACKAGE = "timgm6mb-soundfont"
FLUIDSYNTH_PACKAGE = "fluidsynth"
# Channel peaks of 60 specs (seed 0): loud clips median -4 dBFS, soft ones ~14 dB lower. FluidSynth
# writes 16-bit samples, so the densest loud clips (4 of 32) reach full scale and are clipped there:
# that keeps loud clips loud, where scaling a float render down would make them soft.
FLUIDSYNTH_GAIN = 1.0
SILENT_RENDER_PEAK = 1e-4  # -80 dBFS: a render this quiet means the instrument produced nothing


def find_soundfont() -> str:
    """$MUSICTEXT_SOUNDFONT, else the Debian TimGM6mb soundfont (small, so renders are fast)."""
    path = os.environ.get(SOUNDFONT_ENV) or DEFAULT_SOUNDFONT
    if not os.path.isfile(path):
        raise RuntimeError(
            f"soundfont {path} not found: install the Debian package '{SOUNDFONT_PACKAGE}' "
            f"(apt-get install -y {SOUNDFONT_PACKAGE}) or point ${SOUNDFONT_ENV} at a .sf2 file"
        )
    return path


def find_fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RuntimeError(
            f"the fluidsynth program is not on PATH: install the Debian package "
            f"'{FLUIDSYNTH_PACKAGE}' (apt-get install -y {FLUIDSYNTH_PACKAGE})"
        )
    return exe


def check_renderer() -> tuple[str, str]:
    """Fail early, with the apt package to install, instead of rejecting every clip."""
    return find_fluidsynth(), find_soundfont()


def _fit_length(audio: np.ndarray, n: int) -> np.ndarray:
    """[samples, channels] cut or zero-padded to exactly ``n`` samples, with a 30 ms fade so the
    cut does not click."""
    out = np.zeros((n, audio.shape[1]), dtype=np.float32)
    m = min(n, len(audio))
    out[:m] = audio[:m]
    fade = min(int(0.03 * SAMPLE_RATE), n)
    out[n - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    return out


def render(spec: ClipSpec, fluidsynth: str | None = None, soundfont: str | None = None) -> np.ndarray:
    """FluidSynth's stereo output, float32 [samples, 2] at 44.1 kHz, exactly ``spec.duration_s``
    long. Kept stereo (its reverb, chorus and panning make L and R differ) so that the demo
    exercises Music2Latent's two-channel path; deterministic for a spec."""
    return render_midi(build_midi(spec), spec.duration_s, spec.track_id, fluidsynth, soundfont)


def render_song(song: SongSpec, fluidsynth: str | None = None, soundfont: str | None = None) -> np.ndarray:
    """A full song rendered like ``render``, ``song.duration_s`` long."""
    return render_midi(build_song_midi(song), song.duration_s, song.track_id, fluidsynth, soundfont)


def render_midi(pm: pretty_midi.PrettyMIDI, duration_s: float, item: str, fluidsynth: str | None = None,
                soundfont: str | None = None) -> np.ndarray:
    """``pm`` through FluidSynth: float32 [samples, 2] at 44.1 kHz, ``duration_s`` long; ItemError
    naming ``item`` when FluidSynth fails or renders silence."""
    if fluidsynth is None or soundfont is None:
        fluidsynth, soundfont = check_renderer()
    with tempfile.TemporaryDirectory(prefix="musictext-render-") as tmp:
        mid, wav = os.path.join(tmp, "clip.mid"), os.path.join(tmp, "clip.wav")
        pm.write(mid)
        # -ni: no MIDI input, no shell; -F renders the file faster than real time.
        cmd = [fluidsynth, "-ni", "-q", "-g", str(FLUIDSYNTH_GAIN), "-r", str(SAMPLE_RATE),
               "-F", wav, soundfont, mid]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(120.0, 2 * duration_s))
        if proc.returncode != 0 or not os.path.exists(wav):
            detail = proc.stderr.strip()[-300:]
            raise ItemError(item, f"fluidsynth failed (rc={proc.returncode}): {detail}")
        stereo, rate = sf.read(wav, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ItemError(item, f"fluidsynth wrote {rate} Hz, expected {SAMPLE_RATE}")
    if stereo.shape[1] != CHANNELS:
        raise ItemError(item, f"fluidsynth wrote {stereo.shape[1]} channels, expected {CHANNELS}")
    audio = _fit_length(stereo, int(round(duration_s * SAMPLE_RATE)))
    peak = float(np.abs(audio).max())
    if peak < SILENT_RENDER_PEAK:
        raise ItemError(item, f"rendered silence (peak {peak:.2e})")
    if peak > 0.99:  # a dense loud clip: scale down rather than clip
        audio *= 0.99 / peak
    return audio


def wav_bytes(audio: np.ndarray) -> bytes:
    """Stereo 16-bit WAV: what a downloaded source file looks like, at half the float size."""
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()
