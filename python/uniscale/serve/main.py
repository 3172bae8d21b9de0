"""Running the server: ``uniscale serve --config FILE`` / ``--demo`` (see `register`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uniscale.serve import MISSING_EXTRA, missing_dependencies

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``serve`` subcommand to the ``uniscale`` command line."""
    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible routing proxy (needs pip install 'uniscale[serve]')",
        description="Serves POST /v1/chat/completions (model 'uniscale' lets the policy choose "
        "the model, strategy and number of samples; a configured model name passes through), "
        "GET /v1/models, POST /v1/feedback, GET /metrics, GET /admin/status, POST /admin/snapshot, "
        "GET /healthz and GET /readyz. Stops gracefully on SIGTERM/Ctrl-C (in-flight requests "
        "finish, the policy is snapshotted). Configuration, headers and knobs: docs/serve.md.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="the TOML configuration file (docs/serve.md)")
    src.add_argument(
        "--demo",
        action="store_true",
        help="serve the packaged real outcome table (3 small llama.cpp models) through a "
        "built-in fake upstream: no model, network or API key needed",
    )
    p.add_argument("--host", default=None, help="override [server] host")
    p.add_argument("--port", type=int, default=None, help="override [server] port (0: any free)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="override [server] workers: processes sharing the port (more than one needs "
        "[sync]; docs/serve.md)",
    )
    p.add_argument(
        "--state-dir",
        default=None,
        help="--demo: where the policy snapshot and decision log go (default: a temporary "
        "directory, removed at exit)",
    )
    p.add_argument(
        "--demo-delay",
        type=float,
        default=0.0,
        help="--demo: play back this fraction of the recorded latencies (default 0: instant)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the configuration, print a summary and exit",
    )
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    missing = missing_dependencies()
    if missing:
        print(f"{MISSING_EXTRA} (missing: {', '.join(missing)})", file=sys.stderr)
        return 2
    from uniscale._core import ConfigError

    try:
        return _run(args)
    except ConfigError as exc:
        print(f"uniscale serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, a state directory is not writable, ...
        print(f"uniscale serve: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    import httpx

    from uniscale.serve.config import load_config

    tmp: tempfile.TemporaryDirectory[str] | None = None
    transport: httpx.AsyncBaseTransport | None = None
    if args.demo:
        from uniscale.serve.demo_upstream import demo_app, demo_config

        state_dir = Path(args.state_dir) if args.state_dir else None
        if state_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="uniscale-serve-demo-")
            state_dir = Path(tmp.name)
        cfg = demo_config(state_dir=state_dir)
        transport = httpx.ASGITransport(app=demo_app(delay_scale=args.demo_delay))
    else:
        cfg = load_config(args.config)
    server_cfg = cfg.server
    if args.host is not None:
        server_cfg = dataclasses.replace(server_cfg, host=args.host)
    if args.port is not None:
        server_cfg = dataclasses.replace(server_cfg, port=args.port)
    if args.workers is not None:
        server_cfg = dataclasses.replace(server_cfg, workers=args.workers)
    cfg = dataclasses.replace(cfg, server=server_cfg)
    check_workers(cfg)
    if args.check:
        workers = f", {cfg.server.workers} workers" if cfg.server.workers > 1 else ""
        print(
            f"{cfg.source}: OK: {len(cfg.models)} models, {len(cfg.actions())} actions, "
            f"mode {cfg.server.mode}, listening on {cfg.server.host}:{cfg.server.port}{workers}"
        )
        return 0
    try:
        if cfg.server.workers > 1:
            from uniscale.serve.workers import run_workers

            sock = listen(cfg)
            try:
                return run_workers(cfg, sock)
            finally:
                sock.close()
        _run_loop(serve(cfg, transport=transport))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


def check_workers(cfg: Any) -> None:
    """`ServeConfigError` unless ``cfg.server.workers`` is one, or in range with ``[sync]``
    (the same check as the file's, for ``--workers``)."""
    from uniscale.serve.config import MAX_WORKERS, ServeConfigError, workers_need_sync

    n = cfg.server.workers
    if not 1 <= n <= MAX_WORKERS:
        raise ServeConfigError(f"--workers must be in [1, {MAX_WORKERS}], got {n}")
    if n > 1 and not cfg.sync.enabled:
        raise ServeConfigError(f"{cfg.source}: {workers_need_sync(n)}")


def listen(cfg: Any) -> socket.socket:
    """The listening socket on ``[server] host:port`` (port 0: any free one)."""
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.server.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((cfg.server.host, cfg.server.port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot listen on {cfg.server.host}:{cfg.server.port}: {exc.strerror}"
        ) from None
    # Listen now: connections made before uvicorn starts wait in the backlog instead of being
    # refused.
    sock.listen(2048)
    return sock


def _run_loop(main: Any) -> None:
    """Run on uvloop when it is installed (the [serve] extra has it), else on asyncio's loop.
    uvicorn only picks uvloop itself when it creates the loop, which it does not here."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


async def serve(
    cfg: Any,
    *,
    transport: Any = None,
    sock: socket.socket | None = None,
    worker: Any = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM: uvicorn stops accepting, finishes in-flight requests, then
    the server snapshots the policy and closes the decision log. A worker of
    ``[server] workers`` (`uniscale.serve.workers`) passes the parent's listening ``sock``,
    its `WorkerInfo` and ``on_ready`` (called with the policy's source instead of printing)."""
    import uvicorn

    from uniscale.serve.app import Server

    server = Server(cfg, transport=transport, worker=worker)
    own_sock = sock is None
    if sock is None:
        sock = listen(cfg)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        server.app(),
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(cfg.server.graceful_shutdown_s) or None,
        access_log=False,
    )

    class _Uvicorn(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # SIGTERM/SIGINT is how `uniscale serve` is stopped: shut down gracefully and exit
            # 0 (uvicorn would re-raise the signal after its shutdown, exiting with -15).
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C: stop waiting for requests
            self.should_exit = True

    uv = _Uvicorn(config)
    if on_ready is not None:
        on_ready(server.policy_source)
    else:
        print(
            f"uniscale serve: listening on http://{host}:{port} (policy from "
            f"{server.policy_source}, mode {cfg.server.mode})",
            flush=True,
        )
    try:
        await uv.serve(sockets=[sock])
    finally:
        await server.close()  # no-op when the lifespan already closed it
        if own_sock:
            sock.close()
    if on_ready is None:
        print("uniscale serve: stopped", flush=True)
