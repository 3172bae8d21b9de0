#!/usr/bin/env python3
"""Time of the planner's Monte Carlo (`uniscale._core.simulate_plan`) on the issue's grid.

The paper's nine simulated models (``uniscale/data/plan_paper.toml``) x k in 4, 8, ..., 128
(32 values, P = 4): 288 points, 300 trials each, best-of-k accuracy; about 19,000 simulated
calls per trial row, 5.7 million calls (17 million normal draws) in all. Next to it the NumPy
reference of ``tests/plan_reference.py`` (the test oracle: per point, every draw as one
vectorised (trials, k) array) on the same grid, measured in this run, interleaved
(uniscale, NumPy, uniscale, ...), median of ``--repeats``; the ratio is NumPy / uniscale.
uniscale runs on every core (``threads=0``) and single-threaded (``--threads 1`` row); the
NumPy reference is single-threaded (BLAS is not involved).

Target (issue #15): the grid "in well under a second": median < 0.5 s. Refuses to time a
debug build (exit 2). Exit 1 if the target is missed (not in ``--smoke`` mode).

    python benches/bench_plan.py            # ~15 s
    python benches/bench_plan.py --smoke    # CI: a few seconds, verdict shown as "smoke"
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import release_build_or_exit_code

# the test oracle is the reference, shared on purpose: the bench times what the tests trust
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from plan_reference import simulate_point

TARGET_S = 0.5
TRIALS = 300


def grid() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from uniscale.planner import PAPER_CONFIG, load_config

    cands = load_config(PAPER_CONFIG).candidates
    calls = np.array([c.call.row() for c in cands])
    k = np.array([c.k for c in cands], dtype=np.int64)
    par = np.array([c.parallelism for c in cands], dtype=np.int64)
    mean = np.array([c.accuracy for c in cands])
    sd = np.array([c.accuracy_sd for c in cands], dtype=np.float64)
    return calls, k, par, mean, sd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="one repeat, a third of the grid")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    args = ap.parse_args()
    code = release_build_or_exit_code()
    if code is not None:
        return code
    from uniscale._core import simulate_plan

    calls, k, par, mean, sd = grid()
    if args.smoke:
        calls, k, par, mean, sd = calls[::3], k[::3], par[::3], mean[::3], sd[::3]
    repeats = 1 if args.smoke else args.repeats
    n = len(k)

    def rust(threads: int) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            est = simulate_plan(
                calls, k, par, mean, accuracy_sd=sd, trials=TRIALS, seed=1, threads=threads
            )
            return est.mean

        return run

    def numpy_ref() -> np.ndarray:
        rng = np.random.default_rng(1)
        out = np.empty((n, 3))
        for i in range(n):
            draws = simulate_point(calls[i], int(k[i]), int(par[i]), mean[i], sd[i], TRIALS, rng)
            out[i] = [d.mean() for d in draws]
        return out

    runners = {"uniscale": rust(0), "uniscale 1 thread": rust(1), "NumPy reference": numpy_ref}
    times: dict[str, list[float]] = {name: [] for name in runners}
    results: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    calls_total = int(k.sum()) * TRIALS
    print(
        f"planner Monte Carlo: {n} points ({len(set(map(tuple, calls)))} models x "
        f"{len(set(k.tolist()))} k), {TRIALS} trials, {calls_total:,} simulated calls; "
        f"python {platform.python_version()}, median of {repeats}"
    )
    print(f"{'':<20} {'seconds':>9} {'M calls/s':>10} {'vs NumPy':>9}")
    for name, s in med.items():
        ratio = med["NumPy reference"] / s
        print(f"{name:<20} {s:>9.3f} {calls_total / s / 1e6:>10.1f} {ratio:>8.1f}x")
    # the two implementations estimate the same expectations (different random numbers)
    rel = np.abs(results["uniscale"] - results["NumPy reference"]) / np.abs(
        results["NumPy reference"]
    )
    print(f"check: largest relative difference of the means, uniscale vs NumPy: {rel.max():.2e}")
    ok = med["uniscale"] < TARGET_S and rel.max() < 0.05
    tag = "smoke" if args.smoke else ("PASS" if ok else "FAIL")
    print(f"[{tag}] grid in {med['uniscale']:.3f} s (target < {TARGET_S} s)")
    return 0 if ok or args.smoke else 1


if __name__ == "__main__":
    raise SystemExit(main())
