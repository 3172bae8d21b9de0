"""Progress bars for the lab's long loops: `tqdm`, configured once for terminals and for logs.

On a terminal the bar redraws one line (rate, elapsed, ETA). Elsewhere (CI logs, pipes,
``nohup ... > log``) it prints a whole line at most every ``log_every_s`` seconds, optionally
timestamped, so logs stay readable. tqdm comes with the ``[lab]`` extra; it is imported when a
bar is made, so ``uniscale --help`` works without it.
"""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm


class _LineStream:
    """What tqdm writes (``"\\r" + line``, redrawn in place) as whole lines, for logs."""

    def __init__(self, stream: IO[str], timestamps: bool) -> None:
        self.stream = stream
        self.timestamps = timestamps
        self._last = ""

    def write(self, s: str) -> None:
        line = s.replace("\r", "").rstrip()
        if not line or line == self._last:  # tqdm's closing "\n", or a redraw of the same line
            return
        self._last = line
        stamp = time.strftime("%Y-%m-%d %H:%M:%S ") if self.timestamps else ""
        self.stream.write(stamp + line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(
    total: int,
    desc: str = "",
    *,
    enabled: bool = True,
    stream: IO[str] | None = None,
    log_every_s: float = 10.0,
    timestamps: bool = False,
) -> tqdm[Any]:
    """``with progress_bar(total, "replay") as bar: bar.update(1)`` on stderr (or ``stream``).

    ``enabled=False`` prints nothing. Not on a terminal: a line every ``log_every_s`` seconds
    (and the final one), each prefixed with the local time when ``timestamps``.
    """
    try:
        from tqdm import tqdm
    except ImportError as e:  # the runtime does not need it; the lab extra brings it
        raise ImportError(
            "progress bars need tqdm, part of the lab extra: pip install 'uniscale[lab]'"
        ) from e
    out = stream if stream is not None else sys.stderr
    tty = bool(getattr(out, "isatty", lambda: False)())
    n = max(int(total), 0)
    if tty:
        return tqdm(
            total=n, desc=desc, file=out, disable=not enabled, mininterval=0.1, dynamic_ncols=True
        )
    # Not a terminal: no width to fit (a short bar, the whole postfix), and tqdm's monitor
    # thread must not force redraws more often than the interval asked for.
    return tqdm(
        total=n,
        desc=desc,
        file=_LineStream(out, timestamps),
        disable=not enabled,
        mininterval=log_every_s,
        maxinterval=max(log_every_s, 10.0),
    )
