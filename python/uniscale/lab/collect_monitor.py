"""Watching a collection run: llama-server ``/health`` probes and the progress line."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Mapping
from typing import IO

import httpx

from uniscale.lab.progress import progress_bar


def _root_url(base_url: str) -> str:
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))


_BUSY = -1  # connected, but /health did not answer in time: a loaded server, not a dead one


async def _health(client: httpx.AsyncClient, base_url: str) -> int | None:
    """Status of ``GET /health``; `_BUSY` on a read timeout; None when nothing answers."""
    try:
        resp = await client.get(f"{_root_url(base_url)}/health")
    except httpx.ReadTimeout:
        return _BUSY
    except httpx.HTTPError:
        return None
    return resp.status_code


def _server_up(status: int | None) -> bool:
    # 404: the endpoint has no /health (not llama-server); assume it is up.
    return status is not None and status != 503 and status < 500


class _Progress:
    """collect's status line: a tqdm bar over all pairs (rate, elapsed, ETA) with per-model
    counts, rates and failures as its postfix; redrawn on a tty, timestamped lines otherwise."""

    def __init__(
        self, todo: Mapping[str, int], enabled: bool, stream: IO[str], every_s: float = 60.0
    ) -> None:
        self.todo = dict(todo)
        self.done: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.t0 = time.monotonic()
        self.bar = progress_bar(
            sum(self.todo.values()),
            "collect",
            enabled=enabled,
            stream=stream,
            log_every_s=every_s,
            timestamps=True,
        )

    def update(self, model: str, ok: bool, force: bool = False) -> None:
        if ok:
            self.done[model] += 1
        else:
            self.failed[model] += 1
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        if ok:
            self.bar.update(1)
        if force:
            self.bar.refresh()

    def postfix(self) -> str:
        """``a 3/10 (1.20/min) | b 5/10 (2.00/min) | 1 failed``, and with several models the
        ETA of the slowest (tqdm's own ETA assumes the overall rate holds to the end)."""
        elapsed = time.monotonic() - self.t0
        eta = 0.0
        parts = []
        for m, n in self.todo.items():
            d = self.done[m]
            rate = d / elapsed * 60 if elapsed > 0 else 0.0
            left = n - d - self.failed[m]
            if left > 0:
                eta = max(eta, left / rate * 60 if rate > 0 else math.inf)
            parts.append(f"{m} {d}/{n} ({rate:.2f}/min)")
        parts.append(f"{sum(self.failed.values())} failed")
        if len(self.todo) > 1:
            parts.append(f"slowest model ETA {_fmt_s(eta) if math.isfinite(eta) else '?'}")
        return " | ".join(parts)

    def close(self) -> None:
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        self.bar.close()


def _fmt_s(s: float) -> str:
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
