#!/usr/bin/env python3
"""Decisions per second and `select` latency of uniscale's LinUCB learners against references.

Table 1 (disjoint LinUCB), for d in {16, 64} and K in {8, 64, 1024}:
  * decisions/s of a Python `select` + `update` loop on a seeded synthetic stream, and
  * p50/p99 latency of one `select` call (perf_counter_ns around each call),
for uniscale.LinUCB, a compact NumPy LinUCB (defined below), MABWiser's LinUCB and Vowpal
Wabbit's `cb_explore_adf` (the last two only where they are installed). Every library of a cell
sees the same stream (same contexts, same reward table, same noise) from the same starting state.

Table 2 (shared LinUCB): uniscale.SharedLinUCB `select` latency vs K at d=16, p=8, next to a
naive NumPy scorer that forms the K joint vectors of size D=(d+1)(p+1) and evaluates K full
quadratic forms with the same A^-1.

Ratios are computed from numbers measured in this run, interleaved (every library runs one slice
of each cell in turn, `--repeats` times), so load from other processes on a shared machine hits
all of them alike. Refuses to time a debug build (exit 2). See benches/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from _common import release_build_or_exit_code


def _pin_blas_threads(argv: list[str]) -> str:
    """Apply --blas-threads (default 1) before NumPy loads its BLAS; returns what was done.

    On a 2-core machine shared with other work, multi-threaded OpenBLAS turns the small matrix
    products of the NumPy references into scheduler waits (the naive shared scorer went from
    ~0.08 ms to ~24 ms at K=64), and uniscale computes each call on one thread, so the fair
    default is one BLAS thread. `--blas-threads 0` leaves the environment as it is.
    """
    n = "1"
    for i, a in enumerate(argv):
        if a == "--blas-threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--blas-threads="):
            n = a.split("=", 1)[1]
    if n.strip() == "0":
        return "unchanged"
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = n
    return n


BLAS_THREADS = _pin_blas_threads(sys.argv[1:]) if __name__ == "__main__" else "unchanged"

import numpy as np  # noqa: E402  (after the BLAS thread setting above)

ALPHA = 1.0
RIDGE = 1.0
NOISE = 0.1
SEED = 20240611

DISJOINT_DIMS = (16, 64)
DISJOINT_KS = (8, 64, 1024)
SHARED_D = 16
SHARED_P = 8
SHARED_KS = (8, 64, 256, 1024, 4096)
SHARED_WARM_UPDATES = 2000

ALL_LIBS = ("uniscale", "numpy", "mabwiser", "vw")
SHARED_LIBS = ("uniscale", "numpy")  # table 2 rows; "numpy" is the naive scorer there

# Targets: (description, check) evaluated on the results; printed PASS/FAIL (or "smoke").
TARGET_D16K8_NUMPY = 10.0
TARGET_D16K8_VW = 50.0
TARGET_D16K8_P99_US = 10.0
TARGET_D64K64_NUMPY = 2.0
TARGET_D64K64_P99_US = 150.0
TARGET_SHARED_K1024_P50_US = 100.0


# --------------------------------------------------------------------------------------------
# The stream
# --------------------------------------------------------------------------------------------


class Stream:
    """Seeded synthetic stream for one (d, K) cell, generated in fixed-size chunks.

    Round t has context x_t ~ N(0, I/d) and reward r_t(a) = theta_a . x_t + 0.1 * eps_t. Chunk
    c is drawn from `default_rng([seed, d, K, c])`, so every consumer of a cell sees the same
    rounds in the same order however many it takes. Generation happens outside timed regions.
    """

    def __init__(self, d: int, k: int, seed: int = SEED) -> None:
        self.d, self.k, self.seed = d, k, seed
        self.theta = np.random.default_rng([seed, d, k]).normal(size=(k, d)) / np.sqrt(d)
        # Bound memory: the reward rows of a chunk are Python lists (cheap to index in the loop).
        self.chunk = max(16, min(1024, (1 << 18) // k))
        self._c = 0
        self._buf: list[tuple[np.ndarray, list[float]]] = []
        self._pos = 0

    def _fill(self) -> None:
        rng = np.random.default_rng([self.seed, self.d, self.k, self._c])
        self._c += 1
        x = rng.normal(size=(self.chunk, self.d)) / np.sqrt(self.d)
        r = x @ self.theta.T + NOISE * rng.normal(size=(self.chunk, 1))
        self._buf = list(zip(list(x), r.tolist(), strict=True))  # rows of x are C-contiguous views
        self._pos = 0

    def take(self, n: int) -> list[tuple[np.ndarray, list[float]]]:
        out: list[tuple[np.ndarray, list[float]]] = []
        while len(out) < n:
            if self._pos >= len(self._buf):
                self._fill()
            m = min(n - len(out), len(self._buf) - self._pos)
            out.extend(self._buf[self._pos : self._pos + m])
            self._pos += m
        return out


# --------------------------------------------------------------------------------------------
# The learners under test. Each adapter exposes `select(x) -> int` and `update(a, x, r)` as plain
# callables; for uniscale they are the extension's own bound methods (no Python wrapper).
# --------------------------------------------------------------------------------------------


class NumpyLinUCB:
    """Reference disjoint LinUCB in NumPy: per-arm A^-1 kept by Sherman-Morrison, batched scoring.

    score_a(x) = theta_a . x + alpha * sqrt(x' A_a^-1 x), with A_a = ridge I + sum x x' and
    theta_a = A_a^-1 b_a.
    select is O(K d^2) in two vectorised calls; update touches one arm in O(d^2).
    """

    def __init__(self, k: int, d: int, alpha: float = ALPHA, ridge: float = RIDGE) -> None:
        self.alpha = alpha
        self.ainv = np.broadcast_to(np.eye(d) / ridge, (k, d, d)).copy()
        self.b = np.zeros((k, d))
        self.theta = np.zeros((k, d))

    def select(self, x: np.ndarray) -> int:
        ax = self.ainv @ x  # (K, d)
        var = ax @ x  # (K,)
        return int(np.argmax(self.theta @ x + self.alpha * np.sqrt(var)))

    def update(self, a: int, x: np.ndarray, r: float) -> None:
        ai = self.ainv[a]
        v = ai @ x
        ai -= np.outer(v, v) / (1.0 + x @ v)
        self.b[a] += r * x
        self.theta[a] = ai @ self.b[a]


@dataclass
class Adapter:
    select: Callable[[np.ndarray], int]
    update: Callable[[int, np.ndarray, float], None]
    note: str = ""


def make_uniscale(k: int, d: int) -> Adapter:
    import uniscale

    lrn = uniscale.LinUCB(k, d, ALPHA, RIDGE)
    return Adapter(lrn.select, lrn.update)


def make_numpy(k: int, d: int) -> Adapter:
    lrn = NumpyLinUCB(k, d)
    return Adapter(lrn.select, lrn.update)


def make_mabwiser(k: int, d: int) -> Adapter:
    from mabwiser.mab import MAB, LearningPolicy

    mab = MAB(
        arms=list(range(k)),
        learning_policy=LearningPolicy.LinUCB(alpha=ALPHA, l2_lambda=RIDGE),
        seed=SEED,
    )
    # MABWiser needs a fit() before predict(); a zero context with zero reward leaves every arm
    # at the prior (A = ridge I, b = 0), so its state matches the other learners' start.
    mab.fit(decisions=[0], rewards=[0.0], contexts=np.zeros((1, d)))

    def select(x: np.ndarray) -> int:
        return mab.predict(x[None, :])

    def update(a: int, x: np.ndarray, r: float) -> None:
        mab.partial_fit([a], [r], x[None, :])

    return Adapter(select, update)


def make_vw(k: int, d: int) -> Adapter:
    import vowpalwabbit

    # Default cb_explore_adf exploration (epsilon-greedy, epsilon = 0.05); -q CA gives every
    # action its own weights on the context, the analogue of disjoint LinUCB.
    vw = vowpalwabbit.Workspace(
        f"--cb_explore_adf -q CA --epsilon 0.05 --quiet --random_seed {SEED % 65536}"
    )
    actions = [f"|A a{j}" for j in range(k)]
    names = [f"c{i}:" for i in range(d)]
    rng = random.Random(SEED)
    last: dict[str, object] = {"x": None, "ctx": "", "pmf": None}

    def context_line(x: np.ndarray) -> str:
        # Formatting the context is part of using VW from Python; it is timed.
        if last["x"] is x:
            return last["ctx"]  # type: ignore[return-value]
        ctx = "shared |C " + " ".join([n + repr(v) for n, v in zip(names, x.tolist(), strict=True)])
        last["x"], last["ctx"] = x, ctx
        return ctx

    def select(x: np.ndarray) -> int:
        pmf = vw.predict([context_line(x), *actions])
        last["pmf"] = pmf
        return rng.choices(range(k), weights=pmf)[0]

    def update(a: int, x: np.ndarray, r: float) -> None:
        pmf = last["pmf"]
        prob = pmf[a] if pmf is not None else 1.0 / k  # type: ignore[index]
        lines = [context_line(x), *actions]
        lines[1 + a] = f"0:{-r!r}:{prob!r} " + actions[a]  # VW minimises cost = -reward
        vw.learn(lines)

    return Adapter(select, update)


FACTORIES: dict[str, Callable[[int, int], Adapter]] = {
    "uniscale": make_uniscale,
    "numpy": make_numpy,
    "mabwiser": make_mabwiser,
    "vw": make_vw,
}
LABELS = {"uniscale": "uniscale", "numpy": "NumPy ref", "mabwiser": "MABWiser", "vw": "VW cb_adf"}


def availability() -> dict[str, str]:
    """'' if importable, else the reason it is not."""
    out = {"uniscale": "", "numpy": ""}
    for lib, mod in (("mabwiser", "mabwiser.mab"), ("vw", "vowpalwabbit")):
        try:
            __import__(mod)
            out[lib] = ""
        except Exception as e:  # ImportError, or a broken wheel
            out[lib] = f"not installed ({type(e).__name__})"
    return out


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


@dataclass
class Meter:
    """Accumulates one library's measurements in one cell across interleaved slices."""

    rounds: int = 0
    loop_s: float = 0.0
    best_rate: float = 0.0
    lat_ns: list[int] = field(default_factory=list)


def run_decisions(ad: Adapter, stream: Stream, budget_s: float, meter: Meter) -> None:
    """select + update loop for about `budget_s` of loop time (stream prep is not timed)."""
    sel, upd = ad.select, ad.update
    spent, done, n = 0.0, 0, 2
    while True:
        items = stream.take(n)
        gc.disable()
        t0 = time.perf_counter()
        for x, rr in items:
            a = sel(x)
            upd(a, x, rr[a])
        dt = time.perf_counter() - t0
        gc.enable()
        spent += dt
        done += n
        if spent >= budget_s:
            break
        rate = done / spent if spent > 0 else 1e6
        n = max(1, min(int(rate * (budget_s - spent)) + 1, 4 * done, 50_000))
    meter.rounds += done
    meter.loop_s += spent
    meter.best_rate = max(meter.best_rate, done / spent)


def run_latency(ad: Adapter, stream: Stream, budget_s: float, min_calls: int, meter: Meter) -> None:
    """Single `select` calls timed one by one with perf_counter_ns (no updates in between)."""
    sel = ad.select
    pc = time.perf_counter_ns
    lat = meter.lat_ns
    spent, done, n = 0, 0, 8
    budget_ns = int(budget_s * 1e9)
    while True:
        xs = [x for x, _ in stream.take(n)]
        gc.disable()
        for x in xs:
            t0 = pc()
            sel(x)
            t1 = pc()
            lat.append(t1 - t0)
            spent += t1 - t0
        gc.enable()
        done += n
        if spent >= budget_ns and done >= min_calls:
            break
        per = spent / done if done else 1e3
        left = max(budget_ns - spent, 0) / max(per, 1.0)
        n = max(1, min(int(left) + 1, 4 * done, 50_000), min_calls - done)


def run_latency_interleaved(
    run: list[str],
    ads: dict[str, Adapter],
    streams: dict[str, Stream],
    meters: dict[str, Meter],
    cfg: argparse.Namespace,
) -> None:
    """`run_latency` for every library of ``run``, interleaved slice by slice over
    ``cfg.repeats`` rounds (so that a noisy stretch of the machine hits them all alike)."""
    for _ in range(cfg.repeats):
        for lib in run:
            run_latency(
                ads[lib],
                streams[lib],
                cfg.latency_s / cfg.repeats,
                max(1, cfg.min_calls // cfg.repeats),
                meters[lib],
            )


def pct(v: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(v, dtype=np.float64), q)) / 1e3 if v else float("nan")


# --------------------------------------------------------------------------------------------
# Table 1: disjoint LinUCB
# --------------------------------------------------------------------------------------------


def bench_disjoint(libs: list[str], avail: dict[str, str], cfg: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    for d in DISJOINT_DIMS:
        for k in DISJOINT_KS:
            run = [lib for lib in libs if not avail[lib]]
            ads = {lib: FACTORIES[lib](k, d) for lib in run}
            streams = {lib: Stream(d, k) for lib in run}
            meters = {lib: Meter() for lib in run}
            for _ in range(cfg.repeats):  # interleave the libraries, slice by slice
                for lib in run:
                    run_decisions(ads[lib], streams[lib], cfg.decide_s / cfg.repeats, meters[lib])
            run_latency_interleaved(run, ads, streams, meters, cfg)
            for lib in libs:
                if avail[lib]:
                    rows.append({"d": d, "K": k, "lib": lib, "status": avail[lib]})
                    continue
                m = meters[lib]
                rows.append(
                    {
                        "d": d,
                        "K": k,
                        "lib": lib,
                        "status": "ok",
                        "rounds": m.rounds,
                        "loop_s": m.loop_s,
                        "decisions_per_s": m.rounds / m.loop_s,
                        "best_slice_decisions_per_s": m.best_rate,
                        "select_calls": len(m.lat_ns),
                        "select_p50_us": pct(m.lat_ns, 50),
                        "select_p99_us": pct(m.lat_ns, 99),
                    }
                )
            print(f"  .. d={d} K={k} done", file=sys.stderr, flush=True)
            del ads
            gc.collect()
    return rows


# --------------------------------------------------------------------------------------------
# Table 2: shared LinUCB vs a naive NumPy scorer
# --------------------------------------------------------------------------------------------


class NaiveShared:
    """What scoring costs without the Kronecker trick: K joint vectors, K quadratic forms in D."""

    def __init__(self, psi: np.ndarray, ainv: np.ndarray, theta: np.ndarray, alpha: float) -> None:
        k = psi.shape[0]
        self.v = np.hstack([np.ones((k, 1)), psi])  # (K, p+1)
        self.ainv, self.theta, self.alpha = ainv, theta, alpha

    def select(self, x: np.ndarray) -> int:
        u = np.concatenate(([1.0], x))
        phi = (u[None, :, None] * self.v[:, None, :]).reshape(self.v.shape[0], -1)  # (K, D)
        var = np.einsum("kd,kd->k", phi @ self.ainv, phi)
        return int(np.argmax(phi @ self.theta + self.alpha * np.sqrt(var)))


def bench_shared(libs: list[str], cfg: argparse.Namespace) -> tuple[list[dict], list[str]]:
    import uniscale

    rows: list[dict] = []
    checks: list[str] = []
    d, p = SHARED_D, SHARED_P
    for k in SHARED_KS:
        psi = np.random.default_rng([SEED, p, k, 7]).normal(size=(k, p)) / np.sqrt(p)
        lrn = uniscale.SharedLinUCB(psi, d, ALPHA, RIDGE)
        # Warm the model with a fixed batch (the state, not the cost, depends on it).
        wrng = np.random.default_rng([SEED, d, p, 11])
        n_warm = SHARED_WARM_UPDATES if not cfg.smoke else 200
        xw = wrng.normal(size=(n_warm, d)) / np.sqrt(d)
        aw = wrng.integers(0, k, size=n_warm)
        rw = wrng.normal(size=n_warm)
        lrn.update_many(aw, xw, rw)
        run = [lib for lib in libs if lib in SHARED_LIBS]
        ads: dict[str, Adapter] = {}
        if "uniscale" in run:
            ads["uniscale"] = Adapter(lrn.select, lrn.update)
        if "numpy" in run:
            # Same statistics, built directly: A = ridge I + sum phi phi', b = sum r phi.
            u = np.hstack([np.ones((n_warm, 1)), xw])
            v = np.hstack([np.ones((k, 1)), psi])[aw]
            phi = (u[:, :, None] * v[:, None, :]).reshape(n_warm, -1)
            a_mat = RIDGE * np.eye(phi.shape[1]) + phi.T @ phi
            ainv = np.linalg.inv(a_mat)
            theta = ainv @ (phi.T @ rw)
            naive = NaiveShared(psi, ainv, theta, ALPHA)
            ads["numpy"] = Adapter(naive.select, lambda a, x, r: None)
            if "uniscale" in run:  # sanity: both score the same model
                xs = np.random.default_rng([SEED, 99]).normal(size=(50, d)) / np.sqrt(d)
                agree = sum(int(lrn.select(x) == naive.select(x)) for x in xs)
                checks.append(
                    f"shared K={k}: naive NumPy picks the same action as uniscale"
                    f" on {agree}/50 contexts"
                )
        streams = {lib: Stream(d, k, seed=SEED + 1) for lib in run}
        meters = {lib: Meter() for lib in run}
        run_latency_interleaved(run, ads, streams, meters, cfg)
        for lib in run:
            m = meters[lib]
            rows.append(
                {
                    "d": d,
                    "p": p,
                    "D": (d + 1) * (p + 1),
                    "K": k,
                    "lib": lib,
                    "select_calls": len(m.lat_ns),
                    "select_p50_us": pct(m.lat_ns, 50),
                    "select_p99_us": pct(m.lat_ns, 99),
                }
            )
        print(f"  .. shared K={k} done", file=sys.stderr, flush=True)
    return rows, checks


# --------------------------------------------------------------------------------------------
# Sanity check: the NumPy reference is the same algorithm as uniscale.LinUCB
# --------------------------------------------------------------------------------------------


def agreement_check(n: int = 500) -> str:
    import uniscale

    d, k = 16, 8
    u, ref = uniscale.LinUCB(k, d, ALPHA, RIDGE), NumpyLinUCB(k, d)
    same = 0
    for x, rr in Stream(d, k, seed=SEED + 2).take(n):
        a, b = u.select(x), ref.select(x)
        same += int(a == b)
        u.update(a, x, rr[a])
        ref.update(a, x, rr[a])  # both follow uniscale's choice so the states stay comparable
    return (
        f"disjoint d={d} K={k}: NumPy reference picks the same action as uniscale"
        f" on {same}/{n} rounds"
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt_rate(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


def fmt_us(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    if v >= 1e4:
        return f"{v / 1e3:.1f}ms"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


def find(rows: list[dict], **kw: object) -> dict | None:
    for r in rows:
        if all(r.get(key) == val for key, val in kw.items()):
            return r
    return None


def report(
    d_rows: list[dict], s_rows: list[dict], libs: list[str], cfg: argparse.Namespace
) -> tuple[list[str], list[dict]]:
    out: list[str] = []
    if d_rows:
        out.append(
            "Table 1: disjoint LinUCB, select+update loop from Python (same seeded stream per cell)"
        )
        out.append(
            f"{'d':>3} {'K':>5}  {'library':<10} {'decisions/s':>11} {'rounds':>8}"
            f" {'sel p50 us':>10} {'sel p99 us':>10}"
        )
        for d in DISJOINT_DIMS:
            for k in DISJOINT_KS:
                for lib in libs:
                    r = find(d_rows, d=d, K=k, lib=lib)
                    if r is None:
                        continue
                    if r["status"] != "ok":
                        out.append(f"{d:>3} {k:>5}  {LABELS[lib]:<10} {r['status']}")
                        continue
                    out.append(
                        f"{d:>3} {k:>5}  {LABELS[lib]:<10} {fmt_rate(r['decisions_per_s']):>11}"
                        f" {r['rounds']:>8} {fmt_us(r['select_p50_us']):>10}"
                        f" {fmt_us(r['select_p99_us']):>10}"
                    )
        if "uniscale" in libs:
            others = [lib for lib in ("numpy", "vw", "mabwiser") if lib in libs]
            out.append("")
            out.append("Ratios, uniscale / other (decisions/s; select p50 in brackets), same run:")
            out.append(
                f"{'d':>3} {'K':>5}  " + "  ".join(f"{'vs ' + LABELS[o]:<20}" for o in others)
            )
            for d in DISJOINT_DIMS:
                for k in DISJOINT_KS:
                    u = find(d_rows, d=d, K=k, lib="uniscale")
                    if u is None or u["status"] != "ok":
                        continue
                    cells = []
                    for o in others:
                        r = find(d_rows, d=d, K=k, lib=o)
                        if r is None or r["status"] != "ok":
                            cells.append(f"{'not installed' if r else '-':<20}")
                        else:
                            s = (
                                f"{fmt_ratio(u['decisions_per_s'], r['decisions_per_s'])}"
                                f" [{fmt_ratio(r['select_p50_us'], u['select_p50_us'])}]"
                            )
                            cells.append(f"{s:<20}")
                    out.append(f"{d:>3} {k:>5}  " + "  ".join(cells))
    if s_rows:
        out.append("")
        out.append(
            f"Table 2: SharedLinUCB select latency vs K (d={SHARED_D}, p={SHARED_P}, "
            f"D={(SHARED_D + 1) * (SHARED_P + 1)}); naive = NumPy, K full quadratic forms in D"
        )
        out.append(
            f"{'K':>5}  {'uniscale p50':>12} {'p99':>8}  {'naive p50':>10} {'p99':>8}"
            f"  {'naive/uniscale p50':>18}"
        )
        for k in SHARED_KS:
            u = find(s_rows, K=k, lib="uniscale")
            n = find(s_rows, K=k, lib="numpy")
            up50, up99 = (u["select_p50_us"], u["select_p99_us"]) if u else (None, None)
            np50, np99 = (n["select_p50_us"], n["select_p99_us"]) if n else (None, None)
            out.append(
                f"{k:>5}  {fmt_us(up50):>12} {fmt_us(up99):>8}"
                f"  {fmt_us(np50):>10} {fmt_us(np99):>8}"
                f"  {fmt_ratio(np50, up50):>18}"
            )

    # Targets
    targets: list[dict] = []

    def target(name: str, value: float | None, ok: bool | None, why: str = "") -> None:
        if value is None or ok is None:
            verdict = "SKIP"
        elif cfg.smoke:
            verdict = "smoke"
        else:
            verdict = "PASS" if ok else "FAIL"
        targets.append({"target": name, "value": value, "verdict": verdict, "note": why})

    def ratio(d: int, k: int, other: str) -> tuple[float | None, str]:
        u, o = find(d_rows, d=d, K=k, lib="uniscale"), find(d_rows, d=d, K=k, lib=other)
        if u is None or o is None:
            return None, "not run"
        if o["status"] != "ok":
            return None, o["status"]
        return u["decisions_per_s"] / o["decisions_per_s"], ""

    def lat(rows: list[dict], q: str, **kw: object) -> float | None:
        r = find(rows, lib="uniscale", **kw)
        return r[q] if r and r.get("status", "ok") == "ok" else None

    def at_least(label: str, measured: tuple[float | None, str], bound: float) -> None:
        v, why = measured
        target(f"{label} >= {bound:g}x", v, None if v is None else v >= bound, why)

    def below(label: str, v: float | None, bound: float) -> None:
        target(f"{label} < {bound:g} us", v, None if v is None else v < bound)

    at_least("d=16 K=8: uniscale/NumPy decisions/s", ratio(16, 8, "numpy"), TARGET_D16K8_NUMPY)
    at_least("d=16 K=8: uniscale/VW decisions/s", ratio(16, 8, "vw"), TARGET_D16K8_VW)
    below(
        "d=16 K=8: uniscale select p99",
        lat(d_rows, "select_p99_us", d=16, K=8),
        TARGET_D16K8_P99_US,
    )
    at_least("d=64 K=64: uniscale/NumPy decisions/s", ratio(64, 64, "numpy"), TARGET_D64K64_NUMPY)
    below(
        "d=64 K=64: uniscale select p99",
        lat(d_rows, "select_p99_us", d=64, K=64),
        TARGET_D64K64_P99_US,
    )
    below(
        "shared d=16 p=8 K=1024: uniscale select p50",
        lat(s_rows, "select_p50_us", K=1024),
        TARGET_SHARED_K1024_P50_US,
    )

    out.append("")
    out.append("Targets" + (" (smoke mode: no verdict)" if cfg.smoke else "") + ":")
    for t in targets:
        val = (
            "-"
            if t["value"] is None
            else (f"{t['value']:.1f}x" if t["target"].endswith("x") else f"{t['value']:.2f} us")
        )
        note = f"  ({t['note']})" if t["note"] else ""
        out.append(f"  [{t['verdict']:>5}] {t['target']:<55} measured {val}{note}")
    return out, targets


def environment() -> dict[str, object]:
    import uniscale

    env: dict[str, object] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "uniscale_build": uniscale.BUILD_PROFILE,
        "uniscale_version": getattr(uniscale, "__version__", "?"),
        "cpus": os.cpu_count(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "blas_threads_pinned": BLAS_THREADS,
        "loadavg_start": os.getloadavg(),
    }
    for mod, key in (("mabwiser", "mabwiser"), ("vowpalwabbit", "vowpalwabbit")):
        try:
            m = __import__(mod)
            env[key] = getattr(m, "__version__", "installed")
        except Exception:
            env[key] = None
    try:
        from threadpoolctl import threadpool_info

        env["blas"] = [
            {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
    except Exception:
        env["blas"] = None
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny time budgets (< 20 s in all); verdicts are reported as 'smoke'",
    )
    ap.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    ap.add_argument(
        "--only",
        metavar="LIBS",
        help=f"comma-separated subset of {','.join(ALL_LIBS)} (default: all)",
    )
    ap.add_argument(
        "--tables",
        default="disjoint,shared",
        help="which tables to run: disjoint,shared (default: both)",
    )
    ap.add_argument(
        "--decide-s",
        type=float,
        default=None,
        help="seconds of select+update loop per library per cell (default 2.0; smoke 0.05)",
    )
    ap.add_argument(
        "--latency-s",
        type=float,
        default=None,
        help="seconds of timed select calls per library per cell (default 0.6; smoke 0.02)",
    )
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads for the NumPy references, set before NumPy loads "
        "(default 1; 0 = leave OPENBLAS_NUM_THREADS etc. as they are)",
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="interleaved slices per library per cell (default 3)"
    )
    cfg = ap.parse_args(argv)

    refused = release_build_or_exit_code()
    if refused is not None:
        return refused

    libs = list(ALL_LIBS)
    if cfg.only:
        libs = [s.strip() for s in cfg.only.split(",") if s.strip()]
        bad = [s for s in libs if s not in ALL_LIBS]
        if bad:
            ap.error(f"--only: unknown library {bad}; choose from {','.join(ALL_LIBS)}")
    tables = {s.strip() for s in cfg.tables.split(",") if s.strip()}
    if not tables <= {"disjoint", "shared"}:
        ap.error("--tables: choose from disjoint,shared")
    if cfg.decide_s is None:
        cfg.decide_s = 0.05 if cfg.smoke else 2.0
    if cfg.latency_s is None:
        cfg.latency_s = 0.02 if cfg.smoke else 0.6
    cfg.repeats = max(1, cfg.repeats if not cfg.smoke else 1)
    cfg.min_calls = 20 if cfg.smoke else 200

    avail = availability()
    env = environment()
    t_start = time.perf_counter()
    header = [
        f"bench_learners: uniscale {env['uniscale_version']} ({env['uniscale_build']} build), "
        f"python {env['python']}, numpy {env['numpy']}, {env['cpus']} cpus"
        + (" [SMOKE: tiny budgets, numbers are not meaningful]" if cfg.smoke else ""),
        f"  mabwiser: {env['mabwiser'] or avail['mabwiser']};"
        f" vowpalwabbit: {env['vowpalwabbit'] or avail['vw']}",
        f"  OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}"
        f" OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']} "
        f"(left as found); BLAS threads pinned: {BLAS_THREADS}; blas={env['blas']}",
        f"  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average at start "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"
        " (1/5/15 min; > ~1 means other work shares the 2 cores)",
        f"  alpha={ALPHA} ridge={RIDGE} seed={SEED}; decide {cfg.decide_s:g}s"
        f" + select {cfg.latency_s:g}s "
        f"per library per cell in {cfg.repeats} interleaved slices",
    ]
    print("\n".join(header), flush=True)

    checks: list[str] = []
    if "uniscale" in libs and "numpy" in libs and "disjoint" in tables:
        checks.append(agreement_check(100 if cfg.smoke else 500))
    d_rows = bench_disjoint(libs, avail, cfg) if "disjoint" in tables else []
    s_rows: list[dict] = []
    if "shared" in tables:
        s_rows, s_checks = bench_shared(libs, cfg)
        checks.extend(s_checks)
    lines, targets = report(d_rows, s_rows, libs, cfg)
    print()
    print("\n".join(lines))
    if checks:
        print()
        print("Checks:")
        for c in checks:
            print("  " + c)
    elapsed = time.perf_counter() - t_start
    load_end = os.getloadavg()
    print(
        f"\n(total {elapsed:.1f} s; load average at end {' '.join(f'{v:.2f}' for v in load_end)})"
    )

    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(
                {
                    "env": env,
                    "smoke": cfg.smoke,
                    "config": {k: v for k, v in vars(cfg).items()},
                    "disjoint": d_rows,
                    "shared": s_rows,
                    "targets": targets,
                    "checks": checks,
                    "elapsed_s": elapsed,
                    "loadavg_end": load_end,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
