"""The append-only JSONL outcome table: reading, repairing a torn last line, and the locked,
fsynced writer."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from uniscale.lab.collect_items import CollectError, Record

# The collector logs under one name, as before the split (its run logs show %(name)s).
logger = logging.getLogger("uniscale.lab.collect")


def meta_path(path: str | Path) -> Path:
    """Sidecar of a table: ``x.jsonl`` / ``x.jsonl.gz`` -> ``x.meta.json``."""
    p = Path(path)
    name = p.name
    for suffix in (".gz", ".jsonl"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return p.with_name(name + ".meta.json")


def repair_jsonl(path: str | Path) -> int:
    """Cut a truncated last line (no trailing newline) off ``path``; return bytes dropped."""
    p = Path(path)
    if not p.exists():
        return 0
    with open(p, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Scan back in blocks for the last newline.
        pos = size
        keep = 0
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    dropped = size - keep
    logger.warning("%s: dropped a truncated last line (%d bytes)", p, dropped)
    return dropped


def _open_text(path: Path) -> IO[str]:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_records(path: str | Path) -> Iterator[Record]:
    """Every parseable record line of a table (plain or gzip); bad lines are logged and skipped."""
    p = Path(path)
    if not p.exists():
        return
    with _open_text(p) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                if not line.endswith("\n"):  # a line being written, or cut off by a crash
                    logger.info("%s:%d: incomplete last line ignored", p, lineno)
                else:
                    logger.warning("%s:%d: unparseable line skipped", p, lineno)
                continue
            if isinstance(rec, dict) and "item_id" in rec and "model" in rec:
                yield rec
            else:
                logger.warning("%s:%d: not a record, skipped", p, lineno)


def latest_ok(records: Iterable[Record]) -> dict[tuple[str, str], Record]:
    """The last ``ok`` record of each (item_id, model)."""
    out: dict[tuple[str, str], Record] = {}
    for rec in records:
        if rec.get("status") == "ok":
            out[(str(rec["item_id"]), str(rec["model"]))] = rec
    return out


class _TableWriter:
    """Appends records to the table, one fsynced line each, under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(path.with_name(path.name + ".lock"), "a+")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "?"
            self._lock.close()
            raise CollectError(
                f"{path} is locked by another collector (pid {holder}); stop it or wait"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        repair_jsonl(path)
        self._f = open(path, "ab")

    def append(self, rec: Record) -> None:
        """Write ``rec`` as one line. Raises ``TypeError``/``ValueError`` (nothing written) for
        a value JSON cannot hold, ``OSError`` when the disk refuses it."""
        self._f.write(_record_line(rec))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
        self._lock.close()


def _record_line(rec: Record) -> bytes:
    """One table line as UTF-8 bytes. A text UTF-8 cannot encode (a lone surrogate a server
    sent as ``\\ud800``) makes the line ASCII-escaped JSON instead: still valid, and it reads
    back to the same string."""
    try:
        return (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(rec, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
