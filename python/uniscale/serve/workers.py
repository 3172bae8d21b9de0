"""``[server] workers = N``: N processes serve one port, each a replica of one policy.

One Python process runs out of CPU long before an upstream does (docs/serve.md, Load
benchmark). With ``workers = N`` the parent binds the port and starts N worker processes
(``spawn``) that accept on that one socket; each is a full ``uniscale serve`` with its own
policy, and ``[sync]`` (required) merges what they learn through Redis, exactly as separate
replicas do (docs/sync.md). What each worker keeps for itself:

* **replica id** ``<replica_id>-w<i>`` (``replica_id`` defaults to the host name), stable
  across restarts, so a restarted worker recovers its slot;
* **state files** ``policy.w<i>.bin`` beside the configured ``policy_path`` (and its ``.sync``
  copy), **decision log** ``<log>.w<i>.jsonl``; `worker_paths` lists them;
* **decision ids** ``[i * 2**40, (i + 1) * 2**40)`` (`Policy.advance_decision_ids`), so an id
  names the worker that made it: ``POST /v1/feedback`` that reaches another worker is forwarded
  to the owner's Redis inbox (202), with no ``replica`` field needed.

``GET /metrics`` aggregates every worker (prometheus_client's multiprocess mode, in a temporary
directory the parent owns): counters and histograms are summed, the gauges of live workers
carry a ``pid`` label, ``uniscale_inflight`` and ``uniscale_pending_decisions`` are summed.

The parent restarts a worker that dies (at most `MAX_RESTARTS` in `RESTART_WINDOW_S`, then it
stops the others and exits 1), forwards SIGTERM/SIGINT to the workers (each finishes its
in-flight requests and snapshots, as a single process does) and exits 0 when they all did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from multiprocessing.queues import Queue

    from uniscale.serve.config import ServeConfig

logger = logging.getLogger(__name__)

#: each worker's decision ids are ``[index << WORKER_ID_BITS, (index + 1) << WORKER_ID_BITS)``
#: (2**40 ids each; 64 workers stay below 2**53, exact in every JSON reader)
WORKER_ID_BITS = 40
#: a worker that dies is restarted, at most this many times in `RESTART_WINDOW_S`
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
#: how long the parent waits for every worker to load its policy and listen
STARTUP_TIMEOUT_S = 120.0
#: the environment variable prometheus_client reads for its multiprocess mode
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """Which worker of how many this process is, and the replica id the workers share."""

    index: int
    count: int
    base_replica: str

    def replica(self, index: int | None = None) -> str:
        """The replica id of worker ``index`` (default: this one)."""
        return f"{self.base_replica}-w{self.index if index is None else index}"

    @property
    def first_id(self) -> int:
        return self.index << WORKER_ID_BITS

    def owner(self, decision_id: int) -> int | None:
        """The worker whose id range holds ``decision_id`` (None: no worker's)."""
        owner = decision_id >> WORKER_ID_BITS
        return owner if owner < self.count else None


def _suffixed(path: Path | None, index: int) -> Path | None:
    if path is None:
        return None
    return path.with_name(f"{path.stem}.w{index}{path.suffix}")


def worker_paths(cfg: ServeConfig, index: int) -> tuple[Path | None, Path | None]:
    """Worker ``index``'s policy snapshot and decision log (``policy.w0.bin``, ...)."""
    return _suffixed(cfg.state.policy_path, index), _suffixed(cfg.state.decision_log, index)


def worker_config(cfg: ServeConfig, info: WorkerInfo) -> ServeConfig:
    """``cfg`` as worker ``info.index`` runs it: its own state files, log and replica id."""
    policy_path, log = worker_paths(cfg, info.index)
    state = dataclasses.replace(cfg.state, policy_path=policy_path, decision_log=log)
    sync = dataclasses.replace(cfg.sync, replica_id=info.replica())
    server = dataclasses.replace(cfg.server, workers=1)
    return dataclasses.replace(cfg, state=state, sync=sync, server=server)


def _worker_main(
    cfg: ServeConfig, info: WorkerInfo, sock: socket.socket, ready: Queue[tuple[int, str]]
) -> None:
    """A worker process: ``uniscale serve`` on the inherited socket. SIGINT is left to the
    parent (a terminal's Ctrl-C reaches the whole process group): the parent sends SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format=f"[worker {info.index}] %(message)s")
    from uniscale.serve.main import _run_loop, serve

    def on_ready(source: str) -> None:
        ready.put((info.index, source))

    _run_loop(serve(worker_config(cfg, info), sock=sock, worker=info, on_ready=on_ready))


class _Supervisor:
    def __init__(self, cfg: ServeConfig, sock: socket.socket) -> None:
        self.cfg = cfg
        self.sock = sock
        self.n = cfg.server.workers
        self.base = cfg.sync.replica_id or socket.gethostname()
        self.ctx = multiprocessing.get_context("spawn")
        self.ready: Queue[tuple[int, str]] = self.ctx.Queue()
        self.procs: dict[int, BaseProcess] = {}
        self.restarts: deque[float] = deque()
        self.stopping = False

    def start(self, index: int) -> None:
        info = WorkerInfo(index, self.n, self.base)
        p = self.ctx.Process(
            target=_worker_main,
            args=(self.cfg, info, self.sock, self.ready),
            name=f"uniscale-serve-w{index}",
            daemon=False,
        )
        p.start()
        self.procs[index] = p

    def wait_ready(self) -> dict[int, str]:
        """Each worker's policy source, once all of them listen; raises `RuntimeError` when
        one dies first or they take longer than `STARTUP_TIMEOUT_S`."""
        import queue

        sources: dict[int, str] = {}
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while len(sources) < self.n:
            if self.stopping:
                raise RuntimeError("stopped while the workers were starting")
            try:
                i, src = self.ready.get(timeout=0.2)
                sources[i] = src
                continue
            except queue.Empty:
                pass
            for i, p in self.procs.items():
                if i not in sources and not p.is_alive():
                    raise RuntimeError(f"worker {i} exited with code {p.exitcode} while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not start within {STARTUP_TIMEOUT_S:.0f} s")
        return sources

    def watch(self) -> int:
        """Restart dead workers until stopped; 1 when they keep dying."""
        while not self.stopping:
            time.sleep(0.2)
            self._drain_ready()
            for i, p in list(self.procs.items()):
                if p.is_alive() or self.stopping:
                    continue
                _mark_dead(p)
                now = time.monotonic()
                while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
                    self.restarts.popleft()
                if len(self.restarts) >= MAX_RESTARTS:
                    print(
                        f"uniscale serve: worker {i} exited with code {p.exitcode}; "
                        f"{MAX_RESTARTS} restarts in {RESTART_WINDOW_S:.0f} s, giving up",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
                self.restarts.append(now)
                print(
                    f"uniscale serve: worker {i} exited with code {p.exitcode}; restarting it",
                    file=sys.stderr,
                    flush=True,
                )
                self.start(i)
        return 0

    def _drain_ready(self) -> None:
        import queue

        with contextlib.suppress(queue.Empty):
            while True:
                self.ready.get_nowait()

    def stop(self) -> int:
        """SIGTERM every worker and wait for it (graceful shutdown, then a kill)."""
        self.stopping = True
        for p in self.procs.values():
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.server.graceful_shutdown_s + 30.0
        failed = 0
        for i, p in self.procs.items():
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                print(f"uniscale serve: worker {i} did not stop; killing it", file=sys.stderr)
                p.kill()
                p.join()
            if p.exitcode != 0:
                failed += 1
                print(f"uniscale serve: worker {i} exited with code {p.exitcode}", file=sys.stderr)
            _mark_dead(p)
        return 1 if failed else 0


def _mark_dead(p: BaseProcess) -> None:
    """Drop a dead worker's live gauges from the aggregated metrics."""
    if p.pid is None or not os.environ.get(METRICS_DIR_ENV):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(p.pid)  # type: ignore[no-untyped-call]


def run_workers(cfg: ServeConfig, sock: socket.socket) -> int:
    """Serve ``cfg`` with ``cfg.server.workers`` processes on the listening ``sock`` until
    SIGTERM/SIGINT; the exit code."""
    n = cfg.server.workers
    metrics_dir = tempfile.mkdtemp(prefix="uniscale-metrics-")
    previous = os.environ.get(METRICS_DIR_ENV)
    os.environ[METRICS_DIR_ENV] = metrics_dir  # the workers inherit it at spawn
    sup = _Supervisor(cfg, sock)

    def on_signal(sig: int, frame: Any) -> None:
        sup.stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        for i in range(n):
            sup.start(i)
        try:
            sources = sup.wait_ready()
        except RuntimeError as exc:
            print(f"uniscale serve: {exc}", file=sys.stderr, flush=True)
            code = 0 if sup.stopping else 1  # stopped on purpose while starting: not a failure
        else:
            host, port = sock.getsockname()[:2]
            srcs = ", ".join(sources[i] for i in sorted(sources))
            print(
                f"uniscale serve: listening on http://{host}:{port} (policy from {srcs}, "
                f"mode {cfg.server.mode}, {n} workers)",
                flush=True,
            )
            code = sup.watch()
    finally:
        code = max(code, sup.stop())
        for s, h in old.items():
            signal.signal(s, h)
        if previous is None:
            os.environ.pop(METRICS_DIR_ENV, None)
        else:
            os.environ[METRICS_DIR_ENV] = previous
        shutil.rmtree(metrics_dir, ignore_errors=True)
    print("uniscale serve: stopped", flush=True)
    return code
