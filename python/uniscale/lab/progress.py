"""A dependency-free progress bar with rate and ETA, on stderr.

On a terminal it redraws one line; elsewhere (CI logs, pipes) it prints a line at most every
``log_every_s`` seconds so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


def _fmt_s(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class Progress:
    """``with Progress(total, "replay") as bar: bar(1)``."""

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        log_every_s: float = 10.0,
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.log_every_s = log_every_s
        self.start = time.monotonic()
        self._last = self.start
        self._drawn_at = -1

    def __call__(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        interval = 0.1 if self.tty else self.log_every_s
        if self.enabled and (now - self._last >= interval or self.done >= self.total):
            self._last = now
            self._draw(now)

    def _maybe_final(self) -> None:
        if self.enabled and self._drawn_at != self.done:
            self._draw(time.monotonic())

    def _draw(self, now: float) -> None:
        self._drawn_at = self.done
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        frac = self.done / self.total if self.total else 1.0
        width = 28
        filled = int(width * min(frac, 1.0))
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"{self.label} [{bar}] {self.done}/{self.total} {100 * frac:5.1f}% "
            f"{rate:,.0f}/s elapsed {_fmt_s(elapsed)} eta {_fmt_s(left)}"
        )
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._maybe_final()
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
