"""Bad input at every stage costs that item only: it is named with the reason in the stage's
rejections and, through the index and the report, in the run's rejected.json; every other item
goes on (each stage's items in = items out + items rejected).

The inputs: corrupt, truncated, silent, NaN, empty, huge (a WAV header claiming ~2 GB over 3 s of
data; a 10-minute file cut into seconds-long clips), mistyped (``captions: 5``, ``split: "dev"``,
a numbers column of captions), bytes that are not UTF-8, audio paths that leave their shard
(``../../etc/passwd``, absolute, a URL), a missing file, and a clip id in two shards. The stages
run as library calls (fast); ``test_a_local_run_over_a_folder_with_bad_files`` runs the CLI.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from musictext import layout, schema, storage
from musictext.clip.cut import clip_shard
from musictext.config import TextConfig, load_family_config, m2l_native_rate_override
from musictext.embed.index import gather_targets, write_index
from musictext.embed.targets import embed_clips, embed_shard
from musictext.ingest.download import download_shard
from musictext.ingest.plan import plan
from musictext.rejects import read_rejections
from musictext.report.assemble import assemble_run
from musictext.text.prepare import prepare_text
from tests.audio_fixtures import make_clip_shard, renderings_of, tone

RATE = 16000
CLIP_S = 2.0
# Music2Latent on the clip as decoded (m2l_native_rate): the clip stage writes only the native
# rendering, no resampling (librosa's resampler cost ~2 s a clip on the shared test machine).
# Its demo model is a small random-init one. Good files are stereo (it refuses mono ones).
FAMILY = "music2latent"
RENDERING = "native"
GOOD = [("good/a.wav", "train"), ("good/b.wav", "train"), ("good/c.wav", "valid"), ("good/d.wav", "test"),
        ("good/e.wav", "test"), ("good/f.wav", "train")]


def stereo(seconds: float, freq: float, rate: int = RATE) -> np.ndarray:
    return np.stack([tone(freq, rate, seconds), tone(1.5 * freq, rate, seconds, amp=0.2)], axis=1)


def _wav(samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


@functools.cache
def bad_audio() -> dict[str, tuple[bytes, str]]:
    """{file name: (bytes, the word its rejection holds, or "" when the file is usable)}."""
    three_s = stereo(3.0, 440)
    flac = io.BytesIO()
    sf.write(flac, three_s, RATE, format="FLAC")
    nan = three_s.copy()
    nan[100, 0] = np.nan
    wav = _wav(three_s)
    data = wav.index(b"data")
    # The data chunk claims 0x7FFFFFF0 bytes (~18 hours at 16 kHz); 3 s follow. Usable: libsndfile
    # trusts the file's size, and the clip stage reads only the clip's frames.
    huge = wav[:4] + struct.pack("<I", 0x7FFFFFF0 + 36) + wav[8:data + 4] + struct.pack("<I", 0x7FFFFFF0) + wav[data + 8:]
    return {
        "corrupt.wav": (b"RIFF\x00\x00\x00\x00WAVEthis is not audio at all" * 10, "undecodable"),
        "truncated.flac": (flac.getvalue()[: len(flac.getvalue()) // 2], "undecodable"),
        "silent.wav": (_wav(np.zeros((3 * RATE, 2), np.float32)), "silent"),
        "nan.wav": (_wav(nan, subtype="FLOAT"), "NaN"),
        "empty.wav": (_wav(np.zeros(0, np.float32)), "zero-length"),
        "huge-header.wav": (huge, ""),
        "ten-minutes.wav": (_wav(stereo(600.0, 220, 8000), rate=8000), ""),
    }


def write_folder(root: Path) -> Path:
    """A music folder: the good tones and every bad file, captioned in captions.csv, plus rows
    the listing refuses (a path that leaves the folder, a caption that is not UTF-8)."""
    music = root / "music"
    rows = []
    for i, (rel, split) in enumerate(GOOD):
        (music / rel).parent.mkdir(parents=True, exist_ok=True)
        (music / rel).write_bytes(_wav(stereo(3.0, 220 * (i + 1))))
        rows.append([rel, f"a test tone number {i}", split])
    for name, (data, _) in bad_audio().items():
        (music / "bad" / name).parent.mkdir(parents=True, exist_ok=True)
        (music / "bad" / name).write_bytes(data)
        rows.append([f"bad/{name}", f"a {name} file", "train"])
    (music / "bad" / "vanishes.wav").write_bytes(_wav(stereo(3.0, 330)))
    rows.append(["bad/vanishes.wav", "a file deleted after the listing", "train"])
    (music / "bad" / "dangling.wav").symlink_to(root / "nowhere.wav")  # listed, but nothing to fetch
    rows.append(["bad/dangling.wav", "a link to a file that is not there", "train"])
    rows.append(["../../etc/passwd", "a path out of the folder", "train"])
    buf = io.StringIO()
    csv.writer(buf).writerows([["path", "caption", "split"], *rows])
    data = buf.getvalue().encode() + "good/a.wav,caf\xe9 latin-1 caption,train\r\n".encode("latin-1")
    (music / "captions.csv").write_bytes(data)
    return music


def manifest_row(track_id: str, path: str, **changes) -> dict:
    return {"track_id": track_id, "source": "folder", "split": "train", "path": path,
            "captions": ["a row added to the manifest"], "tags": [], "licence": "x", **changes}


# Rows a foreign or damaged manifest can hold: (row or raw line, the item named, a word of the reason).
BAD_MANIFEST_ROWS = [
    (manifest_row("mistyped", "audio/x.wav", captions=5), "mistyped", "captions: Input should be a valid list"),
    (manifest_row("traversal", "../../etc/passwd"), "traversal", "leaves its directory"),
    (manifest_row("absolute", "/etc/passwd"), "absolute", "absolute or a URL"),
    (manifest_row("url", "https://example.com/a.wav"), "url", "absolute or a URL"),
    (manifest_row("missing", "audio/not-there.wav"), "missing", "audio file missing"),
]


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    """Every stage once, from the folder to the run's deliverables (library calls)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    music = write_folder(root)
    listing = root / "listing"
    specs = plan(["folder"], {"folder": {"dir": str(music)}}, 100, 100, 0, str(listing))
    (music / "bad" / "vanishes.wav").unlink()  # listed, then gone before its download
    assert len(specs) == 1
    raw = root / "raw"
    downloaded = download_shard(specs[0], str(listing), str(raw))

    # A damaged manifest: the download's rows plus rows nothing valid writes, and one line of bytes.
    manifest = raw / layout.MANIFEST
    lines = manifest.read_bytes().splitlines()
    lines += [json.dumps(row).encode() for row, _, _ in BAD_MANIFEST_ROWS]
    lines.append(json.dumps(manifest_row("bad-utf8", "audio/x.wav", captions=["x"])).encode().replace(b'"x"]',
                                                                                                   b'"caf\xe9"]'))
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    clips = root / "clips0"
    clipped = clip_shard(str(raw), str(clips), [RENDERING], CLIP_S, max_clips_per_track=1)

    # A second clip shard from another writer: a clip of the first shard again, audio the embedder
    # cannot use, paths that leave the shard, a mistyped split.
    first_clip = storage.read_parquet(str(clips / layout.CLIPS)).column("clip_id").to_pylist()[0]
    nan = stereo(2.0, 700)
    nan[:, 1] = np.nan
    other = make_clip_shard(root / "clips1", [
        {"clip_id": "other-good#0", "split": "test", "audio": renderings_of(stereo(2.0, 880), RATE, [RENDERING])},
        {"clip_id": first_clip, "split": "train", "audio": renderings_of(stereo(2.0, 990), RATE, [RENDERING])},
        {"clip_id": "other-corrupt#0", "audio": renderings_of(b"not audio", RATE, [RENDERING])},
        {"clip_id": "other-missing#0", "audio": renderings_of(None, RATE, [RENDERING])},
        {"clip_id": "other-nan#0", "audio": {RENDERING: (nan, RATE)}, "subtype": "FLOAT", "ext": "wav"},
    ])
    table = pq.read_table(other / layout.CLIPS).to_pylist()
    table.append({**table[0], "clip_id": "other-escape#0",
                  "audio": [{**table[0]["audio"][0], "path": "../../etc/passwd"}]})
    table.append({**table[0], "clip_id": "other-dev#0", "split": "dev"})
    pq.write_table(pa.Table.from_pylist(table, schema=schema.CLIP_SCHEMA), other / layout.CLIPS)

    targets = []
    for k, shard in enumerate([clips, other]):
        out = root / f"targets{k}"
        embed_shard(str(shard), str(out), [FAMILY], "demo", m2l_native_rate=True)
        targets.append(out)
    index = root / "index"
    indexed = write_index([str(clips), str(other)], str(index), [str(t) for t in targets],
                          upstream_dirs=[str(listing), str(raw)])
    gathered = root / "gathered"
    gather_targets(str(index), FAMILY, str(gathered))
    text = root / "text"
    listed = layout.read_index(str(index))
    prepare_text(listed["shards"], str(text), TextConfig(), dropped=listed["dropped"])

    evaluation, export, run = root / "eval", root / "export", root / "run"
    chance = {"R@1": 0.1, "R@5": 0.5, "R@10": 1.0, "MRR": 0.3}
    storage.write_json(str(evaluation / layout.METRICS_FILE), {
        "family": FAMILY, "n_test": 3, "text_to_audio": chance, "audio_to_text": chance, "chance": chance,
        "blocks": {}})
    export.mkdir()
    summary = assemble_run([str(evaluation)], [str(export)], [str(gathered), str(text)], str(index), str(run))
    return {"root": root, "listing": listing, "raw": raw, "downloaded": downloaded, "clips": clips,
            "clipped": clipped, "other": other, "targets": targets, "index": index, "indexed": indexed,
            "gathered": gathered, "text": text, "run": run, "summary": summary, "first_clip": first_clip}


def reasons(directory) -> dict[str, str]:
    return {r["item"]: r["reason"] for r in read_rejections(str(directory))}


def assert_named(found: dict[str, str], item: str, word: str) -> None:
    matches = [reason for name, reason in found.items() if name.startswith(item)]
    assert matches and any(word in reason for reason in matches), (item, word, found)


def test_listing_and_download(chain):
    listed = reasons(chain["listing"])
    assert any("../../etc/passwd" in r and "outside the folder" in r for r in listed.values()), listed
    assert any("UTF-8" in r and "byte offset" in r for r in listed.values()), listed
    downloaded = reasons(chain["raw"])
    assert sorted(item.split("-")[1] for item in downloaded) == ["bad_dangling.wav", "bad_vanishes.wav"], downloaded
    assert all("not found" in reason for reason in downloaded.values()), downloaded
    # Items in = items out + items rejected: the listed records (the shard's size).
    assert chain["downloaded"]["tracks"] + chain["downloaded"]["rejected"] == len(GOOD) + len(bad_audio()) + 2


def test_clip_stage(chain):
    found = reasons(chain["clips"])
    track = {name: f"folder-bad_{name}-" for name in bad_audio()}  # folder ids: folder-<path>-<hash>
    for name, (_, word) in bad_audio().items():
        if word:
            assert_named(found, track[name], word)
        else:
            assert not any(item.startswith(track[name]) for item in found), (name, found)
    for _, item, word in BAD_MANIFEST_ROWS:
        assert_named(found, item, word)
    assert any(item == "manifest.jsonl:" + item.split(":")[-1] and "not valid UTF-8 (byte offset" in reason
               for item, reason in found.items()), found
    clipped = chain["clipped"]
    # Every manifest entry became clips or a rejection: good tones, the huge-header and the
    # 10-minute file one clip each.
    manifest_entries = chain["downloaded"]["tracks"] + len(BAD_MANIFEST_ROWS) + 1
    assert clipped["tracks"] == manifest_entries
    assert clipped["tracks_clipped"] + len(found) == manifest_entries
    rows = storage.read_parquet(str(chain["clips"] / layout.CLIPS)).to_pylist()
    assert len(rows) == len(GOOD) + 2 and all(r["end_s"] - r["start_s"] == CLIP_S for r in rows)


def test_embed_stage(chain):
    found = reasons(chain["targets"][1] / FAMILY)
    for item, word in [("other-corrupt#0", "undecodable"), ("other-missing#0", "missing"),
                       ("other-nan#0", "NaN"), ("other-escape#0", "leaves its directory"),
                       ("other-dev#0", "split: Input should be 'train', 'valid' or 'test'")]:
        assert_named(found, item, word)
    meta = storage.read_json(str(chain["targets"][1] / FAMILY / layout.META))
    assert meta["n"] == 2 and meta["n"] + meta["n_rejected"] == 7  # other-good and the duplicate


def test_merge_stage_keeps_a_duplicate_once_everywhere(chain):
    dup = chain["first_clip"]
    merged = [r for r in layout.read_index(str(chain["index"]))["rejected"] if r["stage"] == "merge_shards"]
    assert {r["item"] for r in merged} == {dup, "other-escape#0", "other-dev#0"}
    gathered = [i for f in layout.target_files(str(chain["gathered"]))
                for i in storage.read_parquet(f, columns=["clip_id"]).column("clip_id").to_pylist()]
    assert sorted(gathered) == sorted(set(gathered)) and dup in gathered
    text_ids = storage.read_parquet(str(chain["text"] / layout.TEXT)).column("clip_id").to_pylist()
    assert set(text_ids) >= set(gathered)
    text_rows = storage.read_parquet(str(chain["text"] / layout.TEXT)).to_pylist()
    assert [r["split"] for r in text_rows if r["clip_id"] == dup] == ["train"]  # the first shard's copy


def test_every_rejection_reaches_the_runs_rejected_json_and_count(chain):
    rejected = json.loads((chain["run"] / layout.REJECTED_JSON).read_text())
    stages = {(r["stage"], r["item"]) for r in rejected}
    expected = [("list", None), ("download", None), ("clip", "mistyped"), ("clip", "traversal"),
                ("clip", "folder-bad_corrupt.wav-"), ("embed_audio", "other-corrupt#0"),
                ("merge_shards", chain["first_clip"])]
    for stage, item in expected:
        assert any(s == stage and (item is None or i.startswith(item)) for s, i in stages), (stage, item, stages)
    # Everything each stage recorded, once: list, download, clip, merge (in the index), embed (the
    # gathered family's), text (nothing: the rows the merge dropped are not checked again).
    merged = [r for r in layout.read_index(str(chain["index"]))["rejected"] if r["stage"] == "merge_shards"]
    assert read_rejections(str(chain["text"])) == []
    every = (len(read_rejections(str(chain["listing"]))) + len(read_rejections(str(chain["raw"])))
             + len(read_rejections(str(chain["clips"]))) + len(merged) + len(read_rejections(str(chain["gathered"]))))
    assert chain["summary"]["rejected"] == len(rejected) == every == 23
    metrics = json.loads((chain["run"] / layout.METRICS_FILE).read_text())
    assert metrics["rejected_count"] == len(rejected)
    html = (chain["run"] / layout.REPORT_HTML).read_text()
    assert "other-escape#0" in html and "vanishes" in html


def test_text_stage_on_its_own(tmp_path):
    """Without the index's list, text preparation names mistyped, undecodable and duplicate rows."""
    good = make_clip_shard(tmp_path / "a", [{"clip_id": "t#0", "audio": {"native": (None, RATE)}}])
    mistyped = pa.schema([f if f.name != "captions" else pa.field("captions", pa.int64()) for f in schema.CLIP_SCHEMA])
    row = pq.read_table(good / layout.CLIPS).to_pylist()[0]
    (tmp_path / "b").mkdir()
    pq.write_table(pa.Table.from_pylist([{**row, "clip_id": "five#0", "captions": 5}], schema=mistyped),
                   tmp_path / "b" / layout.CLIPS)
    table = pa.Table.from_pylist([row, {**row, "clip_id": "u#0"}], schema=schema.CLIP_SCHEMA)
    caption = b"bad caf\xe9 caption"
    captions = pa.ListArray.from_arrays(pa.array([0, 1, 2], pa.int32()), pa.Array.from_buffers(
        pa.string(), 2, [None, pa.array([0, 4, 4 + len(caption)], pa.int32()).buffers()[1],
                         pa.py_buffer(b"fine" + caption)]))
    (tmp_path / "c").mkdir()
    pq.write_table(table.set_column(table.schema.get_field_index("captions"), "captions", captions),
                   tmp_path / "c" / layout.CLIPS)
    out = tmp_path / "text"
    summary = prepare_text([str(good), str(tmp_path / "b"), str(tmp_path / "c")], str(out), TextConfig())
    found = reasons(out)
    assert found == {
        "five#0": "bad clip row: captions: Input should be a valid list (got 5)",
        f"{tmp_path / 'c'}/{layout.CLIPS}:row 1": "not valid UTF-8 (invalid continuation byte at byte 7 of a string)",
        "t#0": "duplicate clip id across clip shards",
    }
    assert summary["clips"] == 1 and summary["clips_in"] == 1


def test_embed_stage_on_its_own_names_a_huge_and_a_truncated_clip(tmp_path):
    """The embedder reads what a clip file holds: a header claiming hours costs nothing, a cut
    FLAC is undecodable."""
    files = bad_audio()
    shard = make_clip_shard(tmp_path / "s", [
        {"clip_id": "huge#0", "audio": {RENDERING: (files["huge-header.wav"][0], RATE)}},
        {"clip_id": "truncated#0", "audio": {RENDERING: (files["truncated.flac"][0], RATE)}, "ext": "flac"},
    ])
    cfg = load_family_config(FAMILY, "demo", m2l_native_rate_override(FAMILY, True))
    meta = embed_clips([str(shard)], str(tmp_path / "t"), cfg)
    assert meta["n"] == 1 and set(reasons(tmp_path / "t")) == {"truncated#0"}
    assert "undecodable" in reasons(tmp_path / "t")["truncated#0"]


@pytest.mark.slow  # a whole local run (~4 min on 2 cores)
def test_a_local_run_over_a_folder_with_bad_files(tmp_path):
    music = write_folder(tmp_path)
    (music / "bad" / "vanishes.wav").unlink()  # the listing names it (the dangling link: the download)
    cmd = [sys.executable, "-m", "musictext_kfp.cli", "run", "--local", "--runs-dir", str(tmp_path / "runs"),
           "--run-id", "bad", "--sources", "folder", "--folder", str(music), "--families", FAMILY,
           "--clip-seconds", str(CLIP_S), "--m2l-native-rate", "--epochs-stage1", "1", "--epochs-stage2", "1",
           "--batch-size", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rejected = json.loads((tmp_path / "runs" / "bad" / layout.REJECTED_JSON).read_text())
    items = {r["item"]: (r["stage"], r["reason"]) for r in rejected}
    for name, (_, word) in bad_audio().items():
        hit = [v for k, v in items.items() if k.startswith(f"folder-bad_{name}-")]
        assert bool(hit) == bool(word) and (not word or any(word in reason for _, reason in hit)), (name, items)
    assert any(stage == "list" and "outside the folder" in reason for stage, reason in items.values())
    assert any(stage == "download" and item.startswith("folder-bad_dangling.wav-") for item, (stage, _) in items.items())
    metrics = json.loads((tmp_path / "runs" / "bad" / layout.METRICS_FILE).read_text())
    assert metrics["rejected_count"] == len(rejected)
