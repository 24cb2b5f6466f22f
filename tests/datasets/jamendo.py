"""A tiny MTG-Jamendo in the published layout.

``metadata/`` mirrors the GitHub repository: ``data/raw_30s_cleantags_50artists.tsv``,
``data/autotagging.tsv`` as git leaves a symlink in a raw download (31 bytes of text: the target's
name), ``data/splits/split-{0,1}/autotagging-{train,validation,test}.tsv``,
``data/download/raw_30s_audio-low_sha256_{tars,tracks}.txt`` and ``audio_licenses.txt``. Every TSV
is written by Python's csv writer, as the dataset's scripts do: CRLF line endings, tags as extra
tab-separated columns.

``audio/raw_30s/audio-low/raw_30s_audio-low-{02,14}.tar``: first member the folder ``NN``, then
``NN/<id>.low.mp3`` (6 s, 22.05 kHz mono MP3).

Tracks: 1418302, 4402, 31602, 60002 (folder 02) and 214, 1014, 7714, 12314 (folder 14).
214 is also in the Song Describer fixture (shared group ``jamendo:214``). 31602 and 60002 are in
no split file: 31602's artist (14) has 214 in split-0 test, 60002's artist is unknown (hashed).
7714's member is missing from its tar; 12314's member is corrupt (its bytes do not match the
published sha256). 502 has no tags; two rows are malformed (a bad DURATION, a PATH that does not
match the TRACK_ID).
"""

from __future__ import annotations

import csv
import hashlib
import io
import pathlib
import tarfile

import numpy as np
import soundfile as sf

MAIN = "raw_30s_cleantags_50artists.tsv"
HEADER = ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"]

# (id, artist, album, duration, tags)
TRACKS = [
    (214, 14, 31, 124.6, ["genre---punkrock"]),
    (1014, 120, 150, 201.0, ["genre---easylistening", "genre---jazz", "instrument---doublebass", "instrument---piano",
                             "mood/theme---calm", "mood/theme---slow"]),
    (4402, 644, 691, 487.7, ["genre---electronic", "genre---experimental", "genre---postrock", "mood/theme---dark"]),
    (7714, 300, 412, 150.2, ["instrument---synthesizer", "mood/theme---relaxing"]),
    (12314, 301, 413, 222.2, ["genre---rock", "instrument---electricguitar"]),
    (31602, 14, 4321, 96.2, ["genre---easylistening", "instrument---classicalguitar"]),
    (60002, 9999, 9998, 180.0, ["genre---ambient", "mood/theme---film", "mood/theme---relaxing"]),
    (502, 77, 88, 61.0, []),  # no tags: rejected
    (1418302, 777, 1234, 245.3, ["genre---classical", "genre---orchestral", "instrument---orchestra",
                                 "instrument---voice", "mood/theme---epic", "mood/theme---film"]),
]
BAD_ROWS = [  # (after which track id, raw fields)
    (4402, ["track_0000999", "artist_000001", "album_000001", "99/999.mp3", "n/a", "genre---pop"]),
    (31602, ["track_0000777", "artist_000001", "album_000001", "77/7777.mp3", "100.0", "genre---pop"]),
]
SPLITS = {  # split set -> part -> ids (artist-disjoint, as published)
    0: {"train": [1014, 1418302, 7714], "validation": [4402], "test": [214, 12314]},
    1: {"train": [214, 4402, 12314], "validation": [1014], "test": [1418302, 7714]},
}
MISSING = {7714}  # listed in the sha256 list, absent from the tar
CORRUPT = {12314}  # in the tar, but not the bytes the sha256 list publishes
LICENCES = {
    214: ("Intro chiante by David TMX", "Attribution-Non-Commercial-Share-Alike",
          "http://creativecommons.org/licenses/by-nc-sa/2.0/"),
    1014: ("Les Jardins Japonais by Sans Bagage", "Attribution-Non-Commercial-No Derivatives",
           "http://creativecommons.org/licenses/by-nc-nd/2.5/"),
    1418302: ("Cellule by Silence", None, "http://artlibre.org/licence/lal/"),
}


def row(track: tuple) -> list:
    num, artist, album, duration, tags = track
    return [f"track_{num:07d}", f"artist_{artist:06d}", f"album_{album:06d}", f"{num % 100:02d}/{num}.mp3",
            duration, *tags]


def tsv_bytes(rows: list[list]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter="\t")  # the dataset's writer: lineterminator "\r\n"
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue().encode()


def mp3(num: int, secs: float = 6.0, sr: int = 22050) -> bytes:
    t = np.arange(int(secs * sr)) / sr
    f0 = 100.0 + num % 997  # a different tone per track
    x = 0.2 * np.sin(2 * np.pi * f0 * t) * (1 - (t * 2) % 1)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="MP3")
    return buf.getvalue()


def _tar(path: pathlib.Path, folder: str, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(folder)  # the first member is the folder itself
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_560_000_000
        tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_560_000_000
            tar.addfile(info, io.BytesIO(data))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_fixture(root: pathlib.Path) -> dict:
    data = root / "metadata" / "data"
    (data / "download").mkdir(parents=True, exist_ok=True)
    rows = []
    for track in TRACKS:
        rows.append(row(track))
        rows += [bad for after, bad in BAD_ROWS if after == track[0]]
    main = tsv_bytes(rows)
    (data / MAIN).write_bytes(main)
    (data / "autotagging.tsv").write_bytes(MAIN.encode())  # git symlink as downloaded raw: 31 bytes
    by_id = {t[0]: t for t in TRACKS}
    for n, parts in SPLITS.items():
        folder = data / "splits" / f"split-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        for part, ids in parts.items():
            (folder / f"autotagging-{part}.tsv").write_bytes(tsv_bytes([row(by_id[i]) for i in ids]))

    lines = []
    for num, (attribution, words, url) in LICENCES.items():
        licence = (f"Available under a Creative Commons {words} license: {url}" if words
                   else f"Available under License Art Libre: {url}")
        lines += [f"{num % 100:02d}/{num}.mp3", f"{attribution} from Jamendo: http://www.jamendo.com/track/{num}",
                  licence, ""]
    (root / "metadata" / "audio_licenses.txt").write_text("\n".join(lines) + "\n")

    audio = root / "audio" / "raw_30s" / "audio-low"
    audio.mkdir(parents=True, exist_ok=True)
    tar_lines, track_lines = [], []
    for nn in ("02", "14"):
        members, listed = {}, {}
        for num, *_rest, tags in sorted(TRACKS):
            if f"{num % 100:02d}" != nn or not tags:
                continue
            name, good = f"{nn}/{num}.low.mp3", mp3(num)
            listed[name] = _sha(good)
            if num in CORRUPT:
                members[name] = good[: len(good) // 2]
            elif num not in MISSING:
                members[name] = good
        tar_name = f"raw_30s_audio-low-{nn}.tar"
        _tar(audio / tar_name, nn, members)
        tar_lines.append(f"{_sha((audio / tar_name).read_bytes())} {tar_name}")
        track_lines += [f"{sha} {name}" for name, sha in listed.items()]
    (data / "download" / "raw_30s_audio-low_sha256_tars.txt").write_text("\n".join(tar_lines) + "\n")
    (data / "download" / "raw_30s_audio-low_sha256_tracks.txt").write_text("\n".join(track_lines) + "\n")

    bad_line = {tuple(bad): 2 + rows.index(bad) for _, bad in BAD_ROWS}  # header is line 1
    return {
        "options": {"metadata": str(root / "metadata"), "audio_base_url": "{base}/audio"},
        "expected": {
            "records": 8,
            "rejected": {
                f"{MAIN}:{bad_line[tuple(BAD_ROWS[0][1])]}": "bad DURATION",
                f"{MAIN}:{bad_line[tuple(BAD_ROWS[1][1])]}": "does not match TRACK_ID",
                "jamendo-track_0000502": "no captionable tags",
            },
            # split-0: train 1014 1418302 7714; valid 4402; test 214 12314 + 31602 (artist 14);
            # 60002: hashed by its artist (train with split_seed 0)
            "splits": {"train": 4, "valid": 1, "test": 3},
            "audio_fail": {
                "jamendo-track_0007714": "7714.low.mp3 is not in",
                "jamendo-track_0012314": "sha256 mismatch",
            },
        },
    }
