"""A tiny Song Describer Dataset in the Zenodo layout (record 10072001).

``metadata/song_describer.csv`` as pandas ``to_csv`` writes it (LF line endings, minimal quoting:
a caption with a line break and doubled quotes is one quoted field; ``is_valid_subset`` True,
False or empty) and ``metadata/audio_licenses.txt`` (MTG-Jamendo's four-line blocks).
``audio/audio.zip`` holds ``audio/NN/<id>.2min.mp3`` (15 s, 44.1 kHz stereo MP3) under the zip's
top folder ``audio/``, with the folder entries ``zip -r`` writes.

Tracks: 214 (two captions, one validated, one multi-line -> test; also in the MTG-Jamendo
fixture), 1051200 (empty is_valid_subset -> train/valid by hash), 415600 (validated -> test),
1408979 (not in audio.zip -> its download fails), 1004034 (its only caption is empty: the row is
dropped and the track rejected); a row whose track_id is not a number is rejected.
"""

from __future__ import annotations

import csv
import io
import pathlib
import zipfile

import numpy as np
import soundfile as sf

HEADER = ["caption_id", "track_id", "caption", "is_valid_subset", "familiarity", "artist_id", "album_id", "path",
          "duration"]
# (caption_id, track_id, caption, is_valid_subset, familiarity, artist_id, album_id, duration)
ROWS = [
    (101, 214, "Fast, raw punk rock with shouted vocals and distorted guitars.", "True", 3, 14, 31, 124.6),
    (102, 214, 'A short punk song.\nThe drums are loud and the guitars sound "fuzzy".', "False", 2, 14, 31, 124.6),
    (103, 415600, "Reggae groove with offbeat guitar skanks and a deep bass line", "True", 1, 5120, 6034, 201.3),
    (104, 1004034, "", "False", 4, 812, 990, 250.0),
    (105, 1051200, "A calm piano piece, perfect for a rainy afternoon, with soft strings in the background.", "", 4,
     5001, 6001, 312.4),
    (106, 1408979, "Dreamy synth pads over a slow electronic beat.", "False", 0, 7003, 8004, 180.9),
    (107, 415600, "relaxing reggae, good for summer", "False", 5, 5120, 6034, 201.3),
]
BAD_ROW = ["108", "abc", "A caption for a track with no id", "True", "3", "1", "1", "00/abc.mp3", "100.0"]
NOT_IN_ZIP = {1408979}
LICENCES = {
    214: ("Intro chiante by David TMX", "Attribution-Non-Commercial-Share-Alike",
          "http://creativecommons.org/licenses/by-nc-sa/2.0/"),
    415600: ("Skank by Roots Band", "Attribution-Share-Alike", "http://creativecommons.org/licenses/by-sa/3.0/"),
}


def mp3(num: int, secs: float = 15.0, sr: int = 44100) -> bytes:
    t = np.arange(int(secs * sr)) / sr
    f0 = 100.0 + num % 997
    left = 0.2 * np.sin(2 * np.pi * f0 * t)
    right = 0.2 * np.sin(2 * np.pi * f0 * 1.5 * t)
    buf = io.BytesIO()
    sf.write(buf, np.stack([left, right], axis=1).astype(np.float32), sr, format="MP3")
    return buf.getvalue()


def make_fixture(root: pathlib.Path) -> dict:
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")  # pandas to_csv: LF, minimal quoting
    writer.writerow(HEADER)
    lines_before_bad = 0
    for cid, tid, caption, valid, fam, artist, album, duration in ROWS:
        writer.writerow([cid, tid, caption, valid, fam, artist, album, f"{tid % 100:02d}/{tid}.mp3", duration])
        if cid == 105:
            lines_before_bad = out.getvalue().count("\n")
            writer.writerow(BAD_ROW)
    (meta / "song_describer.csv").write_bytes(out.getvalue().encode())

    lines = []
    for num, (attribution, words, url) in LICENCES.items():
        lines += [f"{num % 100:02d}/{num}.mp3", f"{attribution} from Jamendo: http://www.jamendo.com/track/{num}",
                  f"Available under a Creative Commons {words} license: {url}", ""]
    (meta / "audio_licenses.txt").write_text("\n".join(lines) + "\n")

    (root / "audio").mkdir(parents=True, exist_ok=True)
    tracks = sorted({r[1] for r in ROWS if r[2]} - NOT_IN_ZIP)
    with zipfile.ZipFile(root / "audio" / "audio.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("audio/", b"")
        for folder in sorted({f"{t % 100:02d}" for t in tracks}):
            zf.writestr(f"audio/{folder}/", b"")
        for t in tracks:
            zf.writestr(f"audio/{t % 100:02d}/{t}.2min.mp3", mp3(t))

    csv_lines = (meta / "song_describer.csv").read_text().split("\n")
    empty_line = 1 + next(i for i, x in enumerate(csv_lines) if x.startswith("104,"))
    return {
        "options": {"metadata": str(meta), "audio_base_url": "{base}/audio"},
        "expected": {
            "records": 4,
            "rejected": {
                f"song_describer.csv:{empty_line}": "empty caption",
                f"song_describer.csv:{lines_before_bad + 1}": "bad track_id",
                "song_describer-1004034": "no non-empty caption",
            },
            # 214 and 415600 are validated (test); 1051200 and 1408979 hash to train (split_seed 0)
            "splits": {"train": 2, "valid": 0, "test": 2},
            "audio_fail": {"song_describer-1408979": "1408979.2min.mp3 is not in"},
        },
    }
