#!/usr/bin/env python3
"""Load benchmark of ``uniscale serve``: the proxy's added latency over a direct call.

Starts, on 127.0.0.1 only, an instant fake OpenAI upstream (a raw asyncio HTTP/1.1 server in
its own process answering every chat request with a fixed completion) and a real
``uniscale serve --config`` process in front of it (two models, single-sample actions only,
so every proxied request makes exactly one upstream request; decision log on, like
production). Then, for 1, 16 and 64 concurrent clients (keep-alive connections driven by a
minimal asyncio HTTP client, so the load generator costs little CPU), it alternates rounds of
direct calls to the upstream and calls through the proxy, and prints requests/s through the
proxy, the latency percentiles of both paths, and the proxy's added latency (proxy p50 minus
direct p50, and the same at p99), against the targets p50 < 1 ms and p99 < 5 ms added at 16
clients, with zero errors. Closed-loop clients queue behind each other (added latency ~
clients / throughput), so it then also runs both paths open loop: Poisson arrivals at a
quarter of the 16-client throughput (``--rate``) over 16 connections, latency counted from
each request's scheduled arrival, which is the proxy's cost to a request below saturation.

Bounded: a fixed number of requests per round, every round under a time limit, every
subprocess stopped at the end (also on errors and Ctrl-C). Refuses to time a debug build
(exit 2); exit 1 if a request failed or, outside ``--smoke``, a target was missed.

    python benches/bench_serve.py            # ~1-2 min
    python benches/bench_serve.py --smoke    # CI: < 30 s, verdict shown as "smoke"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import release_build_or_exit_code

TARGET_P50_MS = 1.0
TARGET_P99_MS = 5.0
TARGET_CLIENTS = 16
LEVELS = (1, 16, 64)

_COMPLETION = json.dumps(
    {
        "id": "bench",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "The answer is 42."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
).encode()


# --------------------------------------------------------------------------------------------
# The instant upstream (``--role upstream``: its own process)


async def _upstream_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(_COMPLETION)).encode()
        + b"\r\n\r\n"
        + _COMPLETION
    )
    try:
        while True:
            headers = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", headers)
            if m:
                await reader.readexactly(int(m.group(1)))
            writer.write(head)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _run_upstream() -> None:
    server = await asyncio.start_server(_upstream_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"upstream {port}", flush=True)
    async with server:
        await server.serve_forever()


# --------------------------------------------------------------------------------------------
# A minimal keep-alive HTTP client


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        req = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.writer.write(req)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        m = re.search(rb"(?i)content-length:\s*(\d+)", head)
        data = await self.reader.readexactly(int(m.group(1))) if m else b""
        return status, data

    async def chat(self, body: bytes) -> int | None:
        """POST a chat completion: its status, or None when the connection failed (then
        closed, so the next call reconnects)."""
        try:
            status, _ = await self.post("/v1/chat/completions", body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return None
        return status

    async def timed_chat(self, body: bytes, since: float, lat: list[float]) -> bool:
        """`chat`, appending its latency from ``since`` (a ``perf_counter`` time) to ``lat``
        when it was answered; True when it failed (any status but 200)."""
        status = await self.chat(body)
        if status is not None:
            lat.append(time.perf_counter() - since)
        return status != 200

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _round(
    port: int, body: bytes, clients: int, requests: int, limit_s: float
) -> tuple[list[float], int, float]:
    """``requests`` POSTs over ``clients`` connections; latencies (s), errors, wall time."""
    lat: list[float] = []
    errors = 0
    left = [requests]

    async def worker() -> None:
        nonlocal errors
        conn = _Conn("127.0.0.1", port)
        try:
            while left[0] > 0:
                left[0] -= 1
                failed = await conn.timed_chat(body, time.perf_counter(), lat)
                errors += failed  # not `errors += await ...`: it would read errors before awaiting
        finally:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(clients))), limit_s)
    return lat, errors, time.perf_counter() - t0


async def _open_round(
    port: int, body: bytes, conns: int, rate: float, requests: int, limit_s: float, seed: int
) -> tuple[list[float], int]:
    """Open loop: ``requests`` POSTs arriving as a Poisson process of ``rate`` per second,
    dealt round-robin over ``conns`` keep-alive connections. A request's latency runs from its
    scheduled arrival, so time spent waiting behind a slow one counts (no coordinated
    omission). Latencies (s) and errors."""
    import random

    rng = random.Random(seed)
    arrivals, t = [], 0.0
    for _ in range(requests):
        t += rng.expovariate(rate)
        arrivals.append(t)
    lat: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.05

    async def worker(k: int) -> None:
        nonlocal errors
        conn = _Conn("127.0.0.1", port)
        try:
            for a in arrivals[k::conns]:
                due = start + a
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                failed = await conn.timed_chat(body, due, lat)
                errors += failed
        finally:
            conn.close()

    await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(conns))), limit_s)
    return lat, errors


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000.0


# --------------------------------------------------------------------------------------------
# Processes


@contextlib.contextmanager
def _process(cmd: list[str], pattern: str, env: dict[str, str]) -> Iterator[re.Match[str]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(pattern, line)
        if m is None:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"{cmd[2:4]} did not start: {line!r} {err[-2000:]}")
        yield m
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port (for ``--workers``): its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("--workers needs redis-server on PATH (make redis installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s, contextlib.suppress(OSError):
                s.connect(("127.0.0.1", port))
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _config(upstream_port: int, state: Path, workers: int = 1, redis_url: str = "") -> str:
    url = f"http://127.0.0.1:{upstream_port}/v1"
    sync = f"[sync]\nredis_url = '{redis_url}'\n" if workers > 1 else ""
    return (
        f"[server]\nhost = '127.0.0.1'\nport = 0\nmax_inflight = 256\nworkers = {workers}\n"
        f"{sync}"
        "[policy]\nstrategies = ['single']\nn_values = [1]\n"
        "[executor]\ntimeout_s = 10\ndeadline_s = 20\nretries = 0\n"
        f"[state]\npolicy_path = '{state / 'policy.bin'}'\n"
        f"decision_log = '{state / 'decisions.jsonl'}'\nsnapshot_interval_s = 3600\n"
        f"[[models]]\nname = 'small'\nbase_url = '{url}'\nmax_concurrency = 256\n"
        "price_in_per_mtok = 0.05\nprice_out_per_mtok = 0.1\n"
        f"[[models]]\nname = 'large'\nbase_url = '{url}'\nmax_concurrency = 256\n"
        "price_in_per_mtok = 2\nprice_out_per_mtok = 6\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a short run for CI (< 30 s)")
    ap.add_argument("--requests", type=int, default=None, help="requests per round and path")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per level and path")
    ap.add_argument(
        "--rate",
        type=float,
        default=None,
        help="offered load of the open-loop run over 16 connections, requests/s (default: a "
        "quarter of the 16-client closed-loop throughput just measured)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="[server] workers of the proxy (more than one starts a throwaway redis-server "
        "for [sync]; default 1)",
    )
    ap.add_argument("--role", choices=["upstream"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "upstream":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run_upstream())
        return 0
    code = release_build_or_exit_code()
    if code is not None:
        return code
    per_round = args.requests or (150 if args.smoke else 1500)
    rounds = args.rounds or (1 if args.smoke else 3)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    messages = [{"role": "user", "content": "What is 6 times 7? Answer with a number."}]
    direct_body = json.dumps({"model": "small", "messages": messages}).encode()
    proxy_body = json.dumps({"model": "uniscale", "messages": messages}).encode()
    rows = []
    open_row: list[float] = []
    failed = 0
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        state = Path(tmp)
        cfg = state / "uniscale.toml"
        up_cmd = [sys.executable, __file__, "--role", "upstream"]
        with contextlib.ExitStack() as stack:
            redis_url = stack.enter_context(_redis()) if args.workers > 1 else ""
            um = stack.enter_context(_process(up_cmd, r"upstream (\d+)", env))
            up_port = int(um.group(1))
            cfg.write_text(_config(up_port, state, args.workers, redis_url))
            serve_cmd = [sys.executable, "-m", "uniscale.cli", "serve", "--config", str(cfg)]
            with _process(serve_cmd, r"listening on http://127\.0\.0\.1:(\d+)", env) as pm:
                px_port = int(pm.group(1))

                async def run_all() -> None:
                    nonlocal failed
                    # warm up both paths (connections, first-call costs)
                    await _round(up_port, direct_body, 4, 100, 60)
                    await _round(px_port, proxy_body, 4, 100, 60)
                    for clients in LEVELS:
                        d_lat: list[float] = []
                        p_lat: list[float] = []
                        p_wall = 0.0
                        errs = 0
                        for _ in range(rounds):
                            lat, e, _w = await _round(up_port, direct_body, clients, per_round, 120)
                            d_lat += lat
                            errs += e
                            lat, e, w = await _round(px_port, proxy_body, clients, per_round, 120)
                            p_lat += lat
                            p_wall += w
                            errs += e
                        failed += errs
                        rows.append(
                            (
                                clients,
                                len(p_lat) / p_wall,
                                _pct(d_lat, 0.5),
                                _pct(d_lat, 0.99),
                                _pct(p_lat, 0.5),
                                _pct(p_lat, 0.99),
                                errs,
                            )
                        )
                    # open loop below saturation: what a request pays for the proxy when it
                    # does not queue behind the others (closed-loop clients always do)
                    rate = args.rate or 0.25 * next(r[1] for r in rows if r[0] == TARGET_CLIENTS)
                    n_open = max(50, min(per_round, int(rate * (4 if args.smoke else 15))))
                    d_lat, e1 = await _open_round(
                        up_port, direct_body, TARGET_CLIENTS, rate, n_open, 120, 1
                    )
                    p_lat, e2 = await _open_round(
                        px_port, proxy_body, TARGET_CLIENTS, rate, n_open, 120, 1
                    )
                    failed += e1 + e2
                    open_row.extend((rate, n_open, _pct(d_lat, 0.5), _pct(d_lat, 0.99)))
                    open_row.extend((_pct(p_lat, 0.5), _pct(p_lat, 0.99), e1 + e2))

                asyncio.run(run_all())
    elapsed = time.perf_counter() - t_start
    print(
        f"uniscale serve added latency over a direct call (loopback, instant upstream, "
        f"{args.workers} worker(s), "
        f"{rounds} x {per_round} requests per path and level, {os.cpu_count()} CPUs, "
        f"{elapsed:.1f} s)"
    )
    print(
        f"{'clients':>7} {'proxy req/s':>11} {'direct p50':>10} {'direct p99':>10} "
        f"{'proxy p50':>9} {'proxy p99':>9} {'added p50':>9} {'added p99':>9} "
        f"{'ratio p50':>9} {'errors':>6}"
    )
    verdict_ok = failed == 0
    for clients, rps, dp50, dp99, pp50, pp99, errs in rows:
        add50, add99 = pp50 - dp50, pp99 - dp99
        print(
            f"{clients:>7} {rps:>11.0f} {dp50:>8.2f}ms {dp99:>8.2f}ms {pp50:>7.2f}ms "
            f"{pp99:>7.2f}ms {add50:>7.2f}ms {add99:>7.2f}ms {pp50 / dp50:>8.1f}x {errs:>6}"
        )
        if clients == TARGET_CLIENTS:
            ok50, ok99 = add50 < TARGET_P50_MS, add99 < TARGET_P99_MS
            verdict_ok = verdict_ok and ok50 and ok99
            target_line = (
                f"targets at {TARGET_CLIENTS} clients: added p50 {add50:.2f} ms "
                f"(target < {TARGET_P50_MS:g} ms: {'met' if ok50 else 'MISSED'}), added p99 "
                f"{add99:.2f} ms (target < {TARGET_P99_MS:g} ms: {'met' if ok99 else 'MISSED'}), "
                f"errors {errs}"
            )
    print(target_line)
    if open_row:
        rate, n_open, dp50, dp99, pp50, pp99, errs = open_row
        print(
            f"open loop, {rate:.0f} req/s Poisson over {TARGET_CLIENTS} connections "
            f"({n_open:.0f} requests per path): direct p50 {dp50:.2f} ms p99 {dp99:.2f} ms, "
            f"proxy p50 {pp50:.2f} ms p99 {pp99:.2f} ms, added p50 {pp50 - dp50:.2f} ms "
            f"p99 {pp99 - dp99:.2f} ms, errors {errs:.0f}"
        )
    if args.smoke:
        print(f"verdict: smoke ({'no errors' if failed == 0 else f'{failed} ERRORS'})")
        return 0 if failed == 0 else 1
    print(f"verdict: {'PASS' if verdict_ok else 'FAIL'}")
    return 0 if verdict_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
