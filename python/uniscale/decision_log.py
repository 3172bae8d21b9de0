"""The append-only JSONL decision log (`DecisionLog`, `read_decision_log`).

One strict-ASCII JSON line per decision and per deferred feedback, the records of
`uniscale.records`, written under a per-file lock with a torn tail repaired on open; what
replay and off-policy evaluation read. Re-exported by `uniscale.router`; the records and the
locking are described in docs/architecture.md, section "Router and decision log".
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from uniscale._core import (
    StateError,
)
from uniscale.records import DecisionRecord, FeedbackRecord

# logs under the router's name, where its records came from before the split
logger = logging.getLogger("uniscale.router")


class DecisionLog:
    """Append-only JSON-lines decision log, one object per line, flushed per line.

    ``include_features`` writes the feature vector ``x`` into each decision record (its SHA-256
    is always written). ``fsync=True`` also syncs each line to disk. Lines are strict ASCII
    JSON (`json_safe`: non-finite floats become ``null``, lone surrogates are escaped), so every
    line parses anywhere.

    Several threads and processes may append to one file: each line is written with one
    ``write`` under an exclusive ``flock`` of the file (plus a thread lock), and starts on a
    fresh line (a newline is written first when the file does not end in one, e.g. after a
    writer was killed mid-line). Opening an existing file checks that it is a decision log
    (`StateError` otherwise, and the file is left untouched) and, under the same lock, cuts off
    an incomplete last line left by a crash.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, include_features: bool = True, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.include_features = include_features
        self.fsync = fsync
        self._lock = threading.Lock()
        # Unbuffered binary append: each record is one write(2) at the end of the file.
        self._fh = self.path.open("a+b", buffering=0)
        try:
            fd = self._fh.fileno()
            with _file_lock(fd):
                _check_is_decision_log(self.path, fd)
                _repair_tail(self.path, fd)
        except BaseException:
            self._fh.close()
            raise

    def write(self, record: DecisionRecord | FeedbackRecord | Mapping[str, Any]) -> None:
        """Append one record as one line: a `DecisionRecord` or `FeedbackRecord` (its
        ``to_json()``; without the features unless ``include_features``), or any
        JSON-serialisable mapping, written as it is.

        Raises ``TypeError`` for a value JSON cannot hold, ``ValueError`` on a closed log and
        ``OSError`` when the disk refuses the write.
        """
        if isinstance(record, DecisionRecord):
            if not self.include_features and record.x is not None:
                record = replace(record, x=None)
            record = record.to_json()
        elif isinstance(record, FeedbackRecord):
            record = record.to_json()
        line = encode_record(record)
        with self._lock:
            if self._fh.closed:
                raise ValueError(f"decision log {self.path} is closed")
            fd = self._fh.fileno()
            with _file_lock(fd):
                size = os.fstat(fd).st_size
                if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a writer died mid-line: start a line of our own
                _write_all(fd, line)
                if self.fsync:
                    os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DecisionLog({str(self.path)!r}, include_features={self.include_features})"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (inf, -inf, NaN) replaced by ``None``, tuples as
    lists and NumPy scalars and arrays as Python values: what strict JSON can hold."""
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One decision-log line: strict JSON (``allow_nan=False`` after `json_safe`), ASCII only
    (a lone surrogate in an answer becomes the escape ``\\udxxx``, still valid JSON), with the
    newline."""
    try:
        # the common case, a record of plain Python values: `json_safe` would copy it unchanged
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (
        TypeError,
        ValueError,
    ):  # NumPy values, a non-finite float, a Mapping that is not a dict
        text = json.dumps(
            json_safe(record), separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    return text.encode("ascii") + b"\n"


if sys.platform == "win32":  # pragma: no cover - no flock; the thread lock still applies

    @contextlib.contextmanager
    def _file_lock(fd: int) -> Iterator[None]:
        yield

else:
    import fcntl

    @contextlib.contextmanager
    def _file_lock(fd: int) -> Iterator[None]:
        """Exclusive advisory lock on the whole file, between processes."""
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


_SNIFF_BYTES = 65536
_SNIFF_LINES = 8


def _is_log_record(obj: object) -> bool:
    return isinstance(obj, dict) and ("decision_id" in obj or ("schema" in obj and "type" in obj))


def _check_is_decision_log(path: Path, fd: int) -> None:
    """Raise `StateError` unless the file is empty or looks like a decision log: no NUL bytes,
    UTF-8, and one of its first lines a JSON object with the log's keys (``decision_id``, or
    ``schema`` and ``type``). A single incomplete first line must start with ``{``."""
    if os.fstat(fd).st_size == 0:  # empty, or a device such as /dev/null
        return
    head = os.pread(fd, _SNIFF_BYTES, 0)
    if not head.strip():
        return

    def refuse(why: str) -> StateError:
        return StateError(
            f"{path} is not a UniScale decision log ({why}); refusing to append to it "
            "(the file was not modified)"
        )

    if b"\x00" in head:
        raise refuse("it holds binary data")
    complete, _, partial = head.rpartition(b"\n")
    try:
        # Not final when the sample is cut: its last character may be split.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SNIFF_BYTES)
    except UnicodeDecodeError:
        raise refuse("it is not UTF-8 text") from None
    lines = [ln for ln in complete.split(b"\n") if ln.strip()]
    if not lines:
        if not partial.lstrip().startswith(b"{"):
            raise refuse("its first line is not a JSON object")
        return
    for raw in lines[:_SNIFF_LINES]:
        try:
            if _is_log_record(json.loads(raw)):
                return
        except (ValueError, RecursionError):
            continue
    raise refuse(
        f"none of its first {min(len(lines), _SNIFF_LINES)} lines is a JSON object with "
        "'decision_id' or 'schema' and 'type'"
    )


def _repair_tail(path: Path, fd: int) -> None:
    """Cut off an incomplete last line (no trailing newline) left by a crash. The caller holds
    the file lock, so no live writer is in the middle of a line."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    pos = size
    chunk = 65536
    cut = 0
    while pos > 0:
        start = max(0, pos - chunk)
        block = os.pread(fd, pos - start, start)
        i = block.rfind(b"\n")
        if i >= 0:
            cut = start + i + 1
            break
        pos = start
    logger.warning(
        "decision log %s ends with an incomplete line (%d bytes); cutting it off",
        path,
        size - cut,
    )
    os.ftruncate(fd, cut)


def read_decision_log(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Iterate the records of a decision log.

    A line that is not a JSON object (a crash mid-write, two writers' lines merged by an old
    writer) is skipped with a warning naming it, and the number skipped is logged at the end;
    the rest of the file is still read. Blank lines are ignored.
    """
    p = Path(path)
    bad = 0
    with p.open("rb") as fh:
        lineno = 0
        for raw in fh:
            lineno += 1
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                bad += 1
                what = "incomplete last" if not raw.endswith(b"\n") else "corrupt"
                logger.warning("%s:%d: skipping a %s line (%s)", p, lineno, what, exc)
                continue
            if not isinstance(rec, dict):
                bad += 1
                logger.warning(
                    "%s:%d: skipping a line that is not a JSON object (%s)",
                    p,
                    lineno,
                    type(rec).__name__,
                )
                continue
            yield rec
    if bad:
        logger.warning("%s: skipped %d unreadable line(s) of %d", p, bad, lineno)


#: how much of a log's end `last_decision_id` reads
_TAIL_BYTES = 1 << 20


def last_decision_id(*paths: str | os.PathLike[str]) -> int | None:
    """The largest ``decision_id`` among the records at the end (last MiB) of the first of
    ``paths`` that has any (e.g. a log, then its newest rotated file), or None. A process that
    restarts after a crash moves its policy's next id past it
    (`Policy.advance_decision_ids`): its snapshot may predate decisions the log already holds,
    and an id must never be issued twice."""
    for path in paths:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - _TAIL_BYTES))
                tail = fh.read()
        except FileNotFoundError:
            continue
        lines = tail.split(b"\n")
        if size > _TAIL_BYTES:
            lines = lines[1:]  # the first line is cut
        best: int | None = None
        for raw in lines:
            if b'"decision_id"' not in raw:
                continue
            try:
                did = json.loads(raw).get("decision_id")
            except (ValueError, RecursionError, AttributeError):
                continue  # a torn or foreign line
            if isinstance(did, int) and not isinstance(did, bool) and did >= 0:
                best = did if best is None else max(best, did)
        if best is not None:
            return best
    return None
