"""Bad input never sinks a stage: the item is named, logged, skipped and recorded."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import ValidationError

from musictext import layout, storage

log = logging.getLogger(__name__)


class ItemError(ValueError):
    """An input item that cannot be used; the message names the item and the reason."""

    def __init__(self, item: str, reason: str):
        super().__init__(f"{item}: {reason}")
        self.item = item
        self.reason = reason


@dataclass
class Rejections:
    stage: str
    rows: list[dict] = field(default_factory=list)

    def add(self, item: str, reason: str) -> None:
        log.warning("[%s] rejected %s: %s", self.stage, item, reason)
        self.rows.append({"stage": self.stage, "item": item, "reason": reason})

    def __len__(self) -> int:
        return len(self.rows)

    def write(self, artifact_dir: str) -> None:
        """Always written (possibly empty) so downstream stages can gather every stage's list."""
        storage.write_jsonl(storage.join(artifact_dir, layout.REJECTED), self.rows)


def json_lines(text: str, name: str, rejections: Rejections, what: str = "") -> Iterator[tuple[str, dict]]:
    """(``name:line``, object) of every non-blank line of a JSON-lines text; a line that is not
    a JSON object is rejected under ``name:line`` and the others are still read. ``what`` names
    the rows in the rejection ("manifest row")."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        item = f"{name}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            rejections.add(item, f"not valid JSON ({err.msg})")
            continue
        if not isinstance(row, dict):
            rejections.add(item, f"{what} is not a JSON object" if what else "not a JSON object")
            continue
        yield item, row


def utf8_text(data: bytes, name: str, rejections: Rejections | None) -> str:
    """A text file's text (UTF-8, a BOM dropped). A line whose bytes are not UTF-8 is rejected
    under ``name:line`` with the byte offset and left blank (so later line numbers still match
    the file); every other line is kept. Without ``rejections``, bad bytes raise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if rejections is None:
            raise
    lines, offset = [], 0
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            rejections.add(f"{name}:{number}", f"not valid UTF-8 (byte offset {offset + err.start})")
            lines.append(line[len(line.rstrip(b"\r\n")):].decode("ascii"))  # the line ending only
        offset += len(line)
    return "".join(lines).removeprefix("\ufeff")


def describe_validation(err: ValidationError) -> str:
    """Every field a pydantic model refused, as "field.sub: reason; ...", for a rejection."""
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "record"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def read_rejections(artifact_dir: str) -> list[dict]:
    uri = storage.join(artifact_dir, layout.REJECTED)
    return list(storage.read_jsonl(uri)) if storage.exists(uri) else []
