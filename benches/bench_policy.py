#!/usr/bin/env python3
"""Per-request cost of `uniscale.Policy` from Python, and the cost model's error on a test stream.

Setup: 4 models x (single n=1; self_consistency, best_of_n, adaptive_consistency at
n in {2, 4, 8, 12, 16}) = 64 actions, request features d = 32, for learner="disjoint" and
learner="shared", warmed with a seeded select+update stream. Every timed `select` does the full
per-request work: quality posterior for all 64 actions, cost-model prediction for all 64, pruning
by explicit `max_cost_usd` / `max_latency_s` limits and by dominance, scoring, exploration.

* select p50 / p99: `policy.select(x, input_tokens, max_cost_usd, max_latency_s)` through the
  Python `Policy` wrapper, each call bracketed by `time.perf_counter_ns()` (no updates between
  the timed calls). Target: select p99 < 50 us at K=64, d=32, per learner. Also shown: the share
  of calls over 1 ms and the p99 of the thread's CPU time per call (`time.thread_time_ns()`),
  which tell a preempted call on a loaded machine from a slow code path.
* decisions/s: a loop `d = policy.select(...); policy.update(d.id, quality, output_tokens=...)`
  (the feedback values are looked up from a precomputed table; stream generation is not timed).
* cost model: after the benchmark stream, the mean absolute error of the predicted output tokens
  per sample on a held-out test stream, next to a per-model running mean fitted on the same
  training requests (the baseline a hand-written gateway would use).

Learners run interleaved in `--repeats` slices, so outside load hits both alike. Refuses to time
a debug build (exit 2). `--smoke` runs tiny budgets (< 10 s) and prints no verdict.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from _common import release_build_or_exit_code

SEED = 20240611
D = 32
K = 64
N_VALUES = (1, 2, 4, 8, 12, 16)
TARGET_P99_US = 50.0
LEARNERS = ("disjoint", "shared")

# (name, price in, price out, parallelism, bills prompt once, true output tokens per sample as
#  base + slope * input_tokens / 1000, quality offset)
MODEL_TABLE = [
    ("tiny", 0.05, 0.2, 8, True, 60.0, 40.0, -0.25),
    ("small", 0.2, 0.8, 4, True, 120.0, 90.0, -0.05),
    ("medium", 1.0, 4.0, 2, False, 220.0, 150.0, 0.10),
    ("large", 5.0, 20.0, 1, False, 350.0, 60.0, 0.25),
]


def build_space():  # -> uniscale.ActionSpace
    from uniscale import ActionSpace, ModelSpec

    models = [
        ModelSpec(name, pin, pout, parallelism=par, bills_prompt_once=once)
        for name, pin, pout, par, once, *_ in MODEL_TABLE
    ]
    space = ActionSpace.grid(models, n_values=N_VALUES)
    if len(space) != K:
        raise AssertionError(f"expected {K} actions, built {len(space)}")
    return space


class Stream:
    """Seeded requests: features x ~ N(0, I/d), prompt length log-uniform in [50, 4000] tokens,
    per-action quality (logistic in a model-specific linear function of x, plus diminishing
    returns in n) and per-model true output length depending on the prompt length."""

    def __init__(self, actions: list, seed: int) -> None:
        rng = np.random.default_rng([seed, 0])
        names = [m[0] for m in MODEL_TABLE]
        self.model_of = np.array([names.index(a.model) for a in actions])
        self.n_of = np.array([a.n for a in actions], dtype=float)
        self.theta = rng.normal(size=(len(MODEL_TABLE), D)) / math.sqrt(D)
        self.offset = np.array([m[7] for m in MODEL_TABLE])
        self.base = np.array([m[5] for m in MODEL_TABLE])
        self.slope = np.array([m[6] for m in MODEL_TABLE])
        self.seed = seed
        self.chunk = 0

    def take(self, n: int) -> list[tuple[np.ndarray, float, list[float], list[float]]]:
        """n requests: (x, input_tokens, quality per action, output tokens per sample per model)."""
        rng = np.random.default_rng([self.seed, 1, self.chunk])
        self.chunk += 1
        x = rng.normal(size=(n, D)) / math.sqrt(D)
        tokens = np.exp(rng.uniform(math.log(50), math.log(4000), size=n))
        logit = x @ self.theta.T + self.offset  # (n, models)
        q = 1 / (1 + np.exp(-3 * logit[:, self.model_of]))
        q = q + 0.04 * np.log2(self.n_of) + 0.1 * rng.normal(size=(n, K))
        out = (self.base + self.slope * tokens[:, None] / 1000) * rng.lognormal(
            0.0, 0.15, size=(n, len(MODEL_TABLE))
        )
        return [(x[i], float(tokens[i]), q[i].tolist(), out[i].tolist()) for i in range(n)]


@dataclass
class Meter:
    lat_ns: list[int] = field(default_factory=list)
    cpu_ns: list[int] = field(default_factory=list)
    rounds: int = 0
    loop_s: float = 0.0
    fallbacks: int = 0
    candidates: int = 0
    limit_pruned: int = 0
    dominated: int = 0
    decisions: int = 0


@dataclass
class Bench:
    learner: str
    policy: object
    stream: Stream
    limits: tuple[float, float]
    meter: Meter = field(default_factory=Meter)


def make_bench(learner: str, warm: int):  # -> Bench
    from uniscale import Policy

    space = build_space()
    policy = Policy(space, D, learner=learner, reward="balanced")
    stream = Stream(policy.actions, SEED)
    # Explicit limits: the median predicted cost and the 70th percentile predicted latency of a
    # 1000-token request under the prior, so the limits prune about half of the actions.
    pred = policy.predict(1000.0)
    limits = (float(np.median(pred["cost_usd"])), float(np.quantile(pred["latency_s"], 0.7)))
    b = Bench(learner, policy, stream, limits)
    for x, tok, q, out in stream.take(warm):
        d = policy.select(x, tok, limits[0], limits[1])
        policy.update(d.id, q[d.index], output_tokens=out[stream.model_of[d.index]] * d.n)
    return b


def run_latency(b: Bench, budget_s: float, min_calls: int) -> None:
    sel = b.policy.select
    mc, ml = b.limits
    pc, tc = time.perf_counter_ns, time.thread_time_ns
    lat, cpu = b.meter.lat_ns, b.meter.cpu_ns
    spent, done = 0, 0
    decisions = []
    while spent < budget_s * 1e9 or done < min_calls:
        items = b.stream.take(256)
        gc.disable()
        for x, tok, _, _ in items:
            c0 = tc()
            t0 = pc()
            d = sel(x, tok, mc, ml)
            t1 = pc()
            c1 = tc()
            lat.append(t1 - t0)
            cpu.append(c1 - c0)
            spent += t1 - t0
            decisions.append(d)
        gc.enable()
        done += len(items)
    m = b.meter
    for d in decisions:  # describe what the timed calls did (outside the timed region)
        reasons = list(d.pruned.values())
        m.decisions += 1
        m.fallbacks += d.fallback
        m.candidates += len(d.candidates)
        m.limit_pruned += sum(r in ("cost", "latency") for r in reasons)
        m.dominated += sum(r.startswith("dominated") for r in reasons)


def run_decisions(b: Bench, budget_s: float) -> None:
    p = b.policy
    sel, upd = p.select, p.update
    mc, ml = b.limits
    model_of = b.stream.model_of.tolist()
    spent, done = 0.0, 0
    while spent < budget_s:
        items = b.stream.take(512)
        gc.disable()
        t0 = time.perf_counter()
        for x, tok, q, out in items:
            d = sel(x, tok, mc, ml)
            i = d.index
            upd(d.id, q[i], output_tokens=out[model_of[i]] * d.n)
        dt = time.perf_counter() - t0
        gc.enable()
        spent += dt
        done += len(items)
    b.meter.rounds += done
    b.meter.loop_s += spent


def pct_us(v: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(v, dtype=np.float64), q)) / 1e3


def cost_model_error(learner: str, n_train: int, n_test: int) -> dict[str, float]:
    """Output-token MAE on a held-out stream: a fresh policy's learned cost model after `n_train`
    select+update requests vs a per-model running mean of the same observations (starting from
    the same prior, 256 tokens)."""
    from uniscale import Policy

    p = Policy(build_space(), D, learner=learner, reward="balanced")
    train = Stream(p.actions, SEED + 1)
    model_of = train.model_of
    sums = np.zeros(len(MODEL_TABLE))
    counts = np.zeros(len(MODEL_TABLE))
    for x, tok, q, out in train.take(n_train):
        d = p.select(x, tok)
        m = model_of[d.index]
        p.update(d.id, q[d.index], output_tokens=out[m] * d.n)
        sums[m] += out[m]
        counts[m] += 1
    prior = np.array([p.models[row[0]].prior_output_tokens for row in MODEL_TABLE])
    running = np.where(counts > 0, sums / np.maximum(counts, 1), prior)
    rng = np.random.default_rng([SEED, 2])
    err_learned, err_mean, truth = [], [], []
    for _, tok, _, out in Stream(p.actions, SEED + 2).take(n_test):
        a = int(rng.integers(K))  # any action may be asked about (planner, explanation)
        m = model_of[a]
        pred = float(p.predict(tok)["output_tokens_per_sample"][a])
        err_learned.append(abs(pred - out[m]))
        err_mean.append(abs(running[m] - out[m]))
        truth.append(out[m])
    return {
        "mae_learned": float(np.mean(err_learned)),
        "mae_running_mean": float(np.mean(err_mean)),
        "mean_truth": float(np.mean(truth)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="tiny budgets (< 10 s); no verdict")
    ap.add_argument(
        "--latency-s",
        type=float,
        default=None,
        help="seconds of timed select calls per learner (default 1.0; smoke 0.05)",
    )
    ap.add_argument(
        "--decide-s",
        type=float,
        default=None,
        help="seconds of select+update loop per learner (default 2.0; smoke 0.1)",
    )
    ap.add_argument(
        "--repeats", type=int, default=3, help="interleaved slices per learner (default 3)"
    )
    ap.add_argument(
        "--warm", type=int, default=None, help="warm-up select+update rounds (default 2000)"
    )
    cfg = ap.parse_args(argv)

    refused = release_build_or_exit_code()
    if refused is not None:
        return refused
    import uniscale

    smoke = cfg.smoke
    latency_s = cfg.latency_s if cfg.latency_s is not None else (0.05 if smoke else 1.0)
    decide_s = cfg.decide_s if cfg.decide_s is not None else (0.1 if smoke else 2.0)
    warm = cfg.warm if cfg.warm is not None else (200 if smoke else 2000)
    repeats = 1 if smoke else max(1, cfg.repeats)
    min_calls = 100 if smoke else 1000

    t_start = time.perf_counter()
    print(
        f"bench_policy: uniscale {uniscale.__version__} ({uniscale.BUILD_PROFILE} build), "
        f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} cpus"
        + (" [SMOKE: tiny budgets, numbers are not meaningful]" if smoke else "")
    )
    print(
        f"  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average at start "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} (1/5/15 min)"
    )
    benches = [make_bench(learner, warm) for learner in LEARNERS]
    b0 = benches[0]
    names = sorted({a.model for a in b0.policy.actions}, key=[m[0] for m in MODEL_TABLE].index)
    print(
        f"  K={b0.policy.n_actions} actions ({len(names)} models x {K // len(names)}: "
        f"n_values={N_VALUES}), d={D}, reward=balanced, greedy, default alpha; warm-up {warm} "
        f"select+update; max_cost_usd={b0.limits[0]:.3g} max_latency_s={b0.limits[1]:.3g}"
    )
    print(
        f"  select {latency_s:g}s + select/update {decide_s:g}s per learner, "
        f"in {repeats} interleaved slices"
    )

    for _ in range(repeats):
        for b in benches:
            run_latency(b, latency_s / repeats, min_calls // repeats)
            run_decisions(b, decide_s / repeats)

    print()
    print("Policy.select from Python (cost prediction + limit and dominance pruning + scoring)")
    print(
        "  learner    sel p50 us  sel p99 us  >1ms   cpu p99 us   calls  decisions/s  "
        "candidates  pruned:limits  dominated  fallback"
    )
    for b in benches:
        m = b.meter
        n = max(m.decisions, 1)
        slow = sum(v > 1_000_000 for v in m.lat_ns) / max(len(m.lat_ns), 1)
        print(
            f"  {b.learner:<9} {pct_us(m.lat_ns, 50):>10.1f}  {pct_us(m.lat_ns, 99):>10.1f}"
            f"  {slow:>4.1%}  {pct_us(m.cpu_ns, 99):>11.1f}"
            f"  {len(m.lat_ns):>6}  {m.rounds / m.loop_s:>11.0f}  {m.candidates / n:>10.1f}"
            f"  {m.limit_pruned / n:>13.1f}  {m.dominated / n:>9.1f}  {m.fallbacks / n:>8.1%}"
        )
    print(
        "  (sel = wall clock per call, the target's measure; >1ms = share of calls over 1 ms, "
        "which on a busy\n   machine are preemptions by the scheduler (a ~4 ms time slice), not "
        "work; cpu = this thread's CPU time per call)"
    )

    print()
    print(
        "Targets"
        + (" (smoke mode: no verdict)" if smoke else "")
        + f": select p99 < {TARGET_P99_US:g} us at K={K}, d={D}"
    )
    for b in benches:
        p99 = pct_us(b.meter.lat_ns, 99)
        verdict = "smoke" if smoke else ("PASS" if p99 < TARGET_P99_US else "FAIL")
        print(f"  {b.learner:<9} select p99 {p99:.1f} us < {TARGET_P99_US:g} us: {verdict}")

    print()
    n_train, n_test = (300, 300) if smoke else (2000, 2000)
    print(
        f"Cost model: output tokens per sample, trained on {n_train} select+update requests, "
        f"tested on {n_test} held-out requests (a random action each)"
    )
    for learner in LEARNERS:
        e = cost_model_error(learner, n_train, n_test)
        mean = e["mean_truth"]
        print(
            f"  {learner:<9} learned MAE {e['mae_learned']:.1f} tokens "
            f"({e['mae_learned'] / mean:.1%} of the mean {mean:.0f}); per-model running mean "
            f"MAE {e['mae_running_mean']:.1f} ({e['mae_running_mean'] / mean:.1%}); "
            f"running mean / learned = {e['mae_running_mean'] / e['mae_learned']:.2f}x"
        )
    print(
        f"\n(total {time.perf_counter() - t_start:.1f} s; load average at end "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
