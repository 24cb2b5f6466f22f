"""Fixtures of the dataset sources, one module each (``make_fixture(root)`` returns the source's
``options`` and what parsing them must give, ``expected``), and what their tests share: building a
fixture once per test module, parsing a metadata folder into records and rejections, and checking
the result against ``expected``."""

from __future__ import annotations

import collections
import io
import math
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from musictext.ingest.base import Source
    from musictext.ingest.records import Record


class Made(NamedTuple):
    """A fixture built under ``root``: ``info`` is what its ``make_fixture`` returned."""

    root: pathlib.Path
    info: dict


class Parsed(NamedTuple):
    """A source's records by track id, and its rejections (item -> reason)."""

    records: dict[str, Record]
    rejected: dict[str, str]


def build(tmp_path_factory: pytest.TempPathFactory, make: Callable[[pathlib.Path], dict]) -> Made:
    """``make`` (a ``make_fixture``) run in a fresh temporary folder."""
    root = tmp_path_factory.mktemp(f"{make.__module__.rsplit('.', 1)[-1]}-{make.__name__}")
    return Made(root, make(root))


def parse_source(source: type[Source], meta_dir: str | pathlib.Path = "", /, **options) -> Parsed:
    """A fresh ``source`` parses ``meta_dir`` with ``options``; nothing is fetched."""
    from musictext.rejects import Rejections

    src = source()
    rejections = Rejections("list")
    records = {r.track_id: r for r in src.parse(str(meta_dir), src.options(options), rejections)}
    return Parsed(records, {row["item"]: row["reason"] for row in rejections.rows})


def fixture_options(info: dict, base: str | None = None) -> dict:
    """The fixture's options, each ``{base}`` in them replaced by ``base`` (kept without one)."""
    if base is None:
        return dict(info["options"])
    return {k: v.replace("{base}", base) if isinstance(v, str) else v for k, v in info["options"].items()}


def parse_fixture(source: type[Source], made: Made, base: str | None = None, **overrides) -> Parsed:
    """The fixture parsed as listed: its own options (``{base}`` replaced, ``overrides`` on top),
    its ``metadata`` option as the metadata folder."""
    options = fixture_options(made.info, base) | overrides
    return parse_source(source, options.get("metadata", ""), **options)


def source_fixtures(make: Callable[[pathlib.Path], dict], source: type[Source], base: str | None = None):
    """The module-scoped pytest fixtures ``made`` (``make`` built once, a ``Made``) and ``parsed``
    (it parsed by ``source`` as listed, see ``parse_fixture``) of a source's tests; a test module
    binds them to those names: ``made, parsed = source_fixtures(...)``."""

    @pytest.fixture(scope="module")
    def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
        return build(tmp_path_factory, make)

    @pytest.fixture(scope="module")
    def parsed(made: Made) -> Parsed:
        return parse_fixture(source, made, base)

    return made, parsed


def split_counts(splits: dict[str, str]) -> dict[str, int]:
    """How many records each split has (splits with none left out), from each record's split."""
    return dict(collections.Counter(splits.values()))


def check_expected(parsed: Parsed, expected: dict) -> None:
    """``parsed`` is what the fixture's ``expected`` says: the number of records, every rejection
    (its item, and its reason containing the expected text), the splits (records per split, or
    each record's split; ``track_splits`` too where given) and every record whose audio must
    fail listed."""
    records, rejected = parsed
    assert len(records) == expected["records"]
    assert set(rejected) == set(expected["rejected"])
    for item, reason in expected["rejected"].items():
        assert reason in rejected[item], (item, rejected[item])
    splits = expected.get("splits")
    if splits is not None:
        if all(isinstance(n, int) for n in splits.values()):
            counts = split_counts({tid: r.split for tid, r in records.items()})
            assert counts == {s: n for s, n in splits.items() if n}
        else:
            assert {tid: r.split for tid, r in records.items()} == splits
    if "track_splits" in expected:
        assert {tid: r.split for tid, r in records.items()} == expected["track_splits"]
    assert set(expected.get("audio_fail", {})) <= set(records)


def sine_wav(freq: float, seconds: float, sr: int) -> bytes:
    """A mono 16-bit WAV of a sine at ``freq`` Hz."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * math.pi * freq * t)).astype("float32"), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def listed_with_splits(meta: pathlib.Path, track_splits: dict[str, str], rejected: dict[str, str],
                       audio_fail: dict[str, str]) -> dict:
    """``make_fixture``'s answer for a source whose metadata is in ``meta`` and whose audio
    archive is served under ``{base}/audio``, from each record's split."""
    return {
        "options": {"metadata": str(meta), "audio_base_url": "{base}/audio"},
        "expected": {
            "records": len(track_splits),
            "rejected": rejected,
            "splits": split_counts(track_splits),
            "track_splits": track_splits,  # per record
            "audio_fail": audio_fail,
        },
    }
