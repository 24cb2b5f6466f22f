"""A tiny MusicBench in the hub's layout: three JSON-lines metadata files and ``MusicBench.tar.gz``.

Layout (``root`` is served at ``{base}``):

- ``metadata/MusicBench_train.json``, ``MusicBench_test_A.json``, ``MusicBench_test_B.json``: JSON
  lines with every published field (``beats`` nested lists, ``chords``/``chords_time`` lists, ``key``
  a two-item list, ``keyprob`` a list, ``prompt_key`` sometimes empty). The train file is written
  the way pandas ``to_json(orient="records", lines=True)`` writes (compact, ``\\/`` escaped), the
  test files the way ``json.dumps`` does: the published serialisation is not verified, and a
  parser that reads JSON properly takes both.
- ``audio/MusicBench.tar.gz``: a real gzip tarball built with ``tarfile`` whose members are
  ``datashare/data/<ytid>.wav`` and ``datashare/data_aug2/<ytid>_<n>.wav`` (10 s, 16 kHz mono),
  with the folder entries a ``tar czf`` of the unpacked tree has.

Planted cases: an augmentation of a test clip in the train file with ``is_audioset_eval_mcaps``
false (must become test), an eval clip and its augmentation flagged true (test), a YouTube id with
underscores and one ending in ``_7`` (not an augmentation), a row whose captions are both empty
(rejected), a truncated JSON line (rejected), and a train location absent from the tarball (its
download must fail).
"""

from __future__ import annotations

import io
import json
import pathlib
import tarfile

from tests.datasets import listed_with_splits, sine_wav

SR = 16000
SECONDS = 10.0

CAP_A = ("The low quality recording features loud bells and metallic squeaking sounds. "
         "The recording is mono and noisy.")
CTRL_A = ("The chord progression in this song is D. The beat is 2. This song goes at 153.0 beats per minute. "
          "The key is F# minor.")
CAP_B = ("This is a Hungarian pop music piece. There is a female vocalist singing melodically. "
         "The main tune is being played by a piano.")
CTRL_B = "The chord progression in this song is Dm, F/C, Bb6. The beat is 3. The key is D minor."
CAP_TRAIN = ("The Rock song features a passionate male vocal, alongside harmonizing male vocals, singing over "
             "wide electric guitar melody.")
GPT_TRAIN = ("An energetic rock track where a passionate male lead is backed by harmonies over a wide electric "
             "guitar line. The chord sequence is Abmaj7, Bbmaj7, Eb. The tempo of this song is 124.0 beats per "
             "minute.")


def _beats(bpm: float, meter: int) -> list[list[float]]:
    step = 60.0 / bpm
    times = [round(0.24 + i * step, 2) for i in range(int((SECONDS - 0.3) / step))]
    return [times, [float(i % meter + 1) for i in range(len(times))]]


def _row(location: str, main: str, alt: str, *, eval_clip: bool, bpm: float = 124.0, meter: int = 4,
         key: list = ("D#", "major"), prompt_key: str = "The key of this song is D# major.",
         prompt_aug: str = "", chords: tuple[str, ...] = ("Abmaj7", "Bbmaj7", "Eb")) -> dict:
    return {
        "dataset": "MusicCaps",
        "location": location,
        "main_caption": main,
        "alt_caption": alt,
        "prompt_aug": prompt_aug,
        "prompt_ch": f"The chord sequence is {', '.join(chords)}.",
        "prompt_bt": f"The beat counts to {meter}.",
        "prompt_bpm": f"The tempo of this song is {bpm} beats per minute.",
        "prompt_key": prompt_key,
        "beats": _beats(bpm, meter),
        "bpm": bpm,
        "chords": list(chords),
        "chords_time": [round(0.464399092 + 1.3 * i, 9) for i in range(len(chords))],
        "key": list(key),
        "keyprob": [0.7431],
        "is_audioset_eval_mcaps": eval_clip,
    }


def _pandas_line(row: dict) -> str:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/")


def make_fixture(root: pathlib.Path) -> dict:
    from musictext.ingest.base import hashed_split

    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)

    test_a = [
        _row("data/-FEPOSP7ay0.wav", CAP_A, CAP_A, eval_clip=True, bpm=153.0, meter=2, key=["F#", "minor"],
             prompt_key="The key is F# minor.", chords=("D",)),
        _row("data/3QNFY4MKTy4.wav", CAP_B, CAP_B, eval_clip=True, bpm=86.0, meter=3, key=["D", "minor"],
             prompt_key="The key is D minor.", chords=("Dm", "F/C", "Bb6")),
    ]
    test_b = [
        {**test_a[0], "main_caption": f"{CAP_A} {CTRL_A}", "alt_caption": CAP_A},
        {**test_a[1], "main_caption": f"{CAP_B} {CTRL_B}", "alt_caption": CAP_B},
    ]
    for name, rows in (("MusicBench_test_A.json", test_a), ("MusicBench_test_B.json", test_b)):
        (meta / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    # A clip and its augmentation share all but the location, main caption and tempo.
    piano = {"alt": "This is an instrumental classical music performance with a gentle piano tune.",
             "eval_clip": True, "meter": 2, "key": ["A", "minor"], "prompt_key": ""}
    woodwind = {"alt": "The low quality recording features a traditional song with a woodwind melody.",
                "eval_clip": False, "meter": 3, "key": ["F#", "minor"], "prompt_key": ""}
    train = [
        _row("data/0LE6Ll1rVlg.wav", GPT_TRAIN, CAP_TRAIN, eval_clip=False),
        _row("data_aug2/0LE6Ll1rVlg_1.wav", f"{GPT_TRAIN} The volume is lowered.", CAP_TRAIN, eval_clip=False,
             prompt_aug="The volume is lowered.", key=["F", "major"], prompt_key="The key is F major."),
        # An augmentation of a test clip whose own flag is false: the test files make it test.
        _row("data_aug2/-FEPOSP7ay0_2.wav", f"{CAP_A} This song is pitched up by two semitones.", CAP_A,
             eval_clip=False, bpm=153.0, meter=2, key=["G#", "minor"], prompt_key="The key is G# minor."),
        _row("data/2MpzHv5KNZU.wav", "A gentle piano tune with birds singing in the background.", bpm=57.0, **piano),
        _row("data_aug2/2MpzHv5KNZU_1.wav", "A slower gentle piano tune with birds singing.", bpm=51.3, **piano),
        _row("data/k8Pq2Lr_z_7.wav", "A lo-fi hip hop beat with a muted trumpet sample.",
             "Lo-fi hip hop with trumpet.", eval_clip=False, bpm=88.0, key=["B", "major"],
             prompt_key="The key is B major."),
        _row("data/3w_LsKl-3Pk.wav", "A soulful woodwind melody over wooden percussion.", bpm=92.0, **woodwind),
        _row("data_aug2/3w_LsKl-3Pk_3.wav", "A faster soulful woodwind melody over wooden percussion.", bpm=101.2,
             **woodwind),
        _row("data_aug2/0XxinBtKouQ_1.wav", "", "", eval_clip=False, bpm=158.0),
    ]
    lines = [_pandas_line(r) for r in train]
    lines.append(_pandas_line(_row("data_aug2/0LE6Ll1rVlg_3.wav", "x", "y", eval_clip=False))[:90])  # truncated
    (meta / "MusicBench_train.json").write_text("\n".join(lines) + "\n", encoding="utf-8")

    # The tarball: every location but one (3w_LsKl-3Pk_3) and the rejected row's.
    missing = "data_aug2/3w_LsKl-3Pk_3.wav"
    in_tar = [r["location"] for r in test_a + train[:-1] if r["location"] != missing]
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    with tarfile.open(audio / "MusicBench.tar.gz", "w:gz") as tar:
        for folder in ("datashare", "datashare/data", "datashare/data_aug2"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for i, location in enumerate(in_tar):
            data = sine_wav(220.0 + 55.0 * i, SECONDS, SR)
            info = tarfile.TarInfo(f"datashare/{location}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))

    test_ids = ["-FEPOSP7ay0", "3QNFY4MKTy4", "-FEPOSP7ay0_2", "2MpzHv5KNZU", "2MpzHv5KNZU_1"]
    hashed = {"0LE6Ll1rVlg": "0LE6Ll1rVlg", "0LE6Ll1rVlg_1": "0LE6Ll1rVlg", "k8Pq2Lr_z_7": "k8Pq2Lr_z_7",
              "3w_LsKl-3Pk": "3w_LsKl-3Pk", "3w_LsKl-3Pk_3": "3w_LsKl-3Pk"}
    splits = {f"musicbench-{t}": "test" for t in test_ids}
    fractions = {"train": 0.9, "valid": 0.1}
    splits.update({f"musicbench-{t}": hashed_split(f"yt:{y}", 0, fractions) for t, y in hashed.items()})
    return listed_with_splits(
        meta, splits,
        rejected={"musicbench-0XxinBtKouQ_1": "no caption", "MusicBench_train.json:10": "not valid JSON"},
        audio_fail={"musicbench-3w_LsKl-3Pk_3": "datashare/data_aug2/3w_LsKl-3Pk_3.wav"},
    )
