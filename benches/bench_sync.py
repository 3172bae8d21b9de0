"""Multi-replica learning through Redis (issue #18): what a sync round costs, and what merging
is worth.

1. **Cost of a sync round** at joint dimension D ~ 153 and D ~ 585 (the shared learner over the
   simulator's 30 actions, p = 13, with d = 10 and d = 41: D = 154 and 588), 4 replicas on one
   local redis-server: export (copy the statistics out under the lock), push (SET of the slot
   blob), pull (MGET of the 3 others + decode), rebuild (O(D^3), no lock, GIL released), and
   the whole round; next to the decision latency (``select``) it must stay off, measured
   alone and while a background thread runs sync rounds back to back. The request path never
   waits for Redis; what it can wait for is the swap (a few pointer moves) and the O(D^2)
   copy-out, both under the policy's lock.
2. **Regret of 4 replicas** on a stream dealt round-robin to them: (a) 4 isolated replicas,
   (b) 4 replicas merged through Redis every ``--sync-every`` requests (a sync round of each
   replica in turn), (c) one process seeing everything. Cumulative regret against the
   per-request oracle, on the simulated stream and on the packaged MMLU-Pro table, mean over
   seeds.

Needs ``redis-server`` on PATH (started here on a free 127.0.0.1 port, persistence off) or
``--redis-url``; without either, the Redis columns print SKIP and only the rebuild is timed.

    python benches/bench_sync.py                # ~2 min
    python benches/bench_sync.py --smoke        # CI: < 20 s
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from _common import release_build_or_exit_code

import uniscale
from uniscale import ActionSpace, Policy
from uniscale._core import sync_apply, sync_decode, sync_encode, sync_export, sync_fingerprint
from uniscale.lab import datasets, replay, sim
from uniscale.sync import RedisSync, slot_key


@contextlib.contextmanager
def local_redis(url: str | None) -> Iterator[str | None]:
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)


def sim_space() -> ActionSpace:
    return ActionSpace.grid([m.spec for m in sim.DEFAULT_SIM_MODELS], n_values=(1, 2, 4, 8))


def trained(d: int, n: int, seed: int) -> Policy:
    p = Policy(sim_space(), d, seed=seed)
    rng = np.random.default_rng(seed)
    k = p.n_actions
    for _ in range(n):
        p.observe(
            rng.normal(size=d) / np.sqrt(d),
            int(rng.integers(k)),
            float(rng.uniform()),
            input_tokens=float(rng.uniform(50, 2000)),
            output_tokens=float(rng.uniform(20, 800)),
            latency_s=float(rng.uniform(0.2, 5)),
        )
    return p


def ms(v: list[float]) -> str:
    return f"{1e3 * float(np.median(v)):8.3f}"


def us_pct(v: list[float], q: float) -> float:
    return 1e6 * float(np.percentile(v, q))


def select_latencies(p: Policy, d: int, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n, d)) / np.sqrt(d)
    out = []
    for x in xs:
        t0 = time.perf_counter()
        p.select(x, 500.0)
        out.append(time.perf_counter() - t0)
    return out


def round_cost(url: str | None, d: int, reps: int, n_select: int) -> dict[str, Any]:
    import redis

    pols = [trained(d, 300, seed) for seed in range(4)]
    core = pols[0].core
    fp = sync_fingerprint(core)
    D = (d + 1) * (core.action_features().shape[1] + 1)
    t: dict[str, list[float]] = {k: [] for k in ("export", "push", "pull", "rebuild", "round")}
    add = np.zeros_like(sync_export(core))
    for v in (sync_export(p.core) for p in pols[1:]):
        add += v
    for _ in range(reps):
        t0 = time.perf_counter()
        v = sync_export(core)
        t["export"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sync_apply(core, add * 1e-9, force=True)  # a real rebuild (not a no-op)
        t["rebuild"].append(time.perf_counter() - t0)
    base = select_latencies(pols[0], d, n_select, 1)
    during: list[float] = []
    if url is not None:
        r = redis.Redis.from_url(url)
        key = f"bench{d}"
        syncs = [RedisSync(p, url, key, f"r{i}") for i, p in enumerate(pols)]
        for s in syncs:
            s.sync_once()
        blob = sync_encode(fp, v)
        others = [slot_key(key, f"r{i}") for i in range(1, 4)]
        for _ in range(reps):
            t0 = time.perf_counter()
            r.set(slot_key(key, "r0"), blob)
            t["push"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for b in r.mget(others):
                sync_decode(b)
            t["pull"].append(time.perf_counter() - t0)
            for p in pols[1:]:  # so that every round has something new to merge
                p.observe(np.ones(d) / d, 0, 0.5)
            for s in syncs[1:]:
                s.sync_once()
            t0 = time.perf_counter()
            syncs[0].sync_once()
            t["round"].append(time.perf_counter() - t0)
        stop = threading.Event()

        def hammer() -> None:
            i = 0
            while not stop.is_set():
                pols[1 + i % 3].observe(np.ones(d) / d, 0, 0.5)
                syncs[1 + i % 3].sync_once()
                syncs[0].sync_once()
                i += 1

        th = threading.Thread(target=hammer, daemon=True)
        th.start()
        during = select_latencies(pols[0], d, n_select, 2)
        stop.set()
        th.join(30)
        for s in syncs:
            s.close()
    return {"D": D, "len": len(v), "t": t, "select": base, "select_during": during}


def regret_runs(table: Any, models: dict[str, Any], sync_every: int, url: str | None, seed: int):
    scales = replay.Scales.from_table(table)
    _avail, weights = replay.schedule(table, [], "cost_sensitive", None)
    r = replay.reward_matrix(table, weights, scales)
    oracle = r.max(axis=1)
    col_of = {a: i for i, a in enumerate(table.actions)}
    space_models = [models[m] for m in dict.fromkeys(a.model for a in table.actions)]

    def make(s: int) -> Policy:
        return Policy(
            ActionSpace(space_models, list(table.actions)),
            table.X.shape[1],
            reward="cost_sensitive",
            cost_scale=scales.cost_scale,
            latency_scale=scales.latency_scale,
            seed=s,
        )

    def run(pols: list[Policy], syncs: list[RedisSync] | None) -> float:
        regret = 0.0
        cols = [np.array([col_of[a] for a in p.actions]) for p in pols]
        for t in range(table.n_requests):
            i = t % len(pols)
            p = pols[i]
            d = p.select(table.X[t], float(table.input_tokens[t]), now=float(t))
            c = int(cols[i][d.index])
            p.update(d.id, now=float(t), **table.feedback(t, c))
            regret += float(oracle[t] - r[t, c])
            if syncs is not None and (t + 1) % sync_every == 0:
                for s in syncs:
                    s.sync_once()
        return regret

    out = {
        "isolated": run([make(seed * 10 + i) for i in range(4)], None),
        "one process": run([make(seed * 10)], None),
    }
    if url is not None:
        pols = [make(seed * 10 + i) for i in range(4)]
        key = f"regret{seed}-{time.monotonic_ns()}"
        syncs = [RedisSync(p, url, key, f"r{i}") for i, p in enumerate(pols)]
        out["merged"] = run(pols, syncs)
        for s in syncs:
            s.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (< 20 s)")
    ap.add_argument("--redis-url", help="use this Redis instead of starting redis-server")
    ap.add_argument("--requests", type=int, default=6000, help="stream length per seed")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sync-every", type=int, default=100, help="requests between sync rounds")
    args = ap.parse_args(argv)
    refused = release_build_or_exit_code()
    if refused is not None:
        return refused
    reps, n_select = (3, 200) if args.smoke else (30, 3000)
    t_n, seeds = (600, 1) if args.smoke else (args.requests, args.seeds)
    print(
        f"bench_sync: uniscale {uniscale.__version__} ({uniscale.BUILD_PROFILE} build), "
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cpus; "
        f"load average at start {' '.join(f'{v:.2f}' for v in os.getloadavg())}; 4 replicas"
    )
    t_start = time.monotonic()
    with local_redis(args.redis_url) as url:
        if url is None:
            print("no redis-server on PATH and no --redis-url: Redis columns SKIP")
        print(
            "\n1. cost of one sync round (median ms; 4 replicas; the others' slots merged)\n"
            "   D     values  export    push    pull  rebuild   round | select p50/p99 us"
            " alone, during back-to-back rounds"
        )
        for d in (10, 41):
            c = round_cost(url, d, reps, n_select)
            t = c["t"]

            def col(k: str, t: dict[str, list[float]] = t) -> str:
                return ms(t[k]) if t[k] else "    SKIP"

            during = c["select_during"]
            dur = f"{us_pct(during, 50):6.1f}/{us_pct(during, 99):7.1f}" if during else "SKIP"
            print(
                f"  {c['D']:4d} {c['len']:8d} {col('export')}{col('push')}{col('pull')}"
                f"{col('rebuild')}{col('round')} | "
                f"{us_pct(c['select'], 50):6.1f}/{us_pct(c['select'], 99):7.1f}, {dur}"
            )
        print(
            f"\n2. cumulative regret vs the per-request oracle, 4 replicas round-robin, "
            f"{t_n} requests, sync every {args.sync_every} requests, mean of {seeds} seed(s)"
        )
        sources = {
            "simulated": datasets.sim_source(t_n),
            "mmlu-pro": datasets.mmlu_pro_source(n_requests=t_n),
        }
        for name, src in sources.items():
            res: dict[str, list[float]] = {}
            for seed in range(seeds):
                for k, v in regret_runs(
                    src.table(seed), dict(src.models), args.sync_every, url, seed
                ).items():
                    res.setdefault(k, []).append(v)
            cells = "  ".join(
                f"{k} {np.mean(res[k]):9.1f}" if k in res else f"{k} SKIP"
                for k in ("isolated", "merged", "one process")
            )
            print(f"  {name:<10} {cells}")
    print(f"\n(total {time.monotonic() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
