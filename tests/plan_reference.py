"""NumPy reference of the planner (`rust/plan.rs`, `rust/pareto.rs::plan_choice`): the oracle
the Rust Monte Carlo and rules are tested against, and the reference `benches/bench_plan.py`
times. Same formulas, written as they read; its random numbers are NumPy's, so comparisons are
of distributions and means, never of individual draws.

Per call: ``L_in ~ N(mu_in, sd_in^2)``, ``L_out ~ N(mu_out, sd_out^2)``, each clipped below at
1; ``C = c_in L_in + c_out L_out``, ``T = t_in L_in + t_out L_out``. k calls with parallelism
P: ``C(k) = sum``, ``T(k)`` = sum over ``ceil(k / P)`` rounds of the slowest call of the round
(or the reference code's ``sum / P``); accuracy the best of k clipped draws
``N(mu_A, sd_A^2)``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


def simulate_point(
    call: F64,
    k: int,
    parallelism: int,
    acc_mean: float,
    acc_sd: float,
    trials: int,
    rng: np.random.Generator,
    latency: str = "rounds",
) -> tuple[F64, F64, F64]:
    """(cost, latency, accuracy) draws, each (trials,), of one point; ``call`` is one row of
    `uniscale._core.simulate_plan`'s ``calls``."""
    c_in, c_out, t_in, t_out, mu_in, sd_in, mu_out, sd_out = (float(v) for v in call)
    lin = np.maximum(rng.normal(mu_in, sd_in, (trials, k)), 1.0)
    lout = np.maximum(rng.normal(mu_out, sd_out, (trials, k)), 1.0)
    cost = (c_in * lin + c_out * lout).sum(axis=1)
    per_call = t_in * lin + t_out * lout
    if latency == "rounds":
        rounds = -(-k // parallelism)
        padded = np.zeros((trials, rounds * parallelism))
        padded[:, :k] = per_call
        lat = padded.reshape(trials, rounds, parallelism).max(axis=2).sum(axis=1)
    else:
        lat = per_call.sum(axis=1) / (parallelism if parallelism > 1 else 1)
    acc = np.clip(rng.normal(acc_mean, acc_sd, (trials, k)), 0.0, 1.0).max(axis=1)
    return cost, lat, acc


def clipped_normal_mean(mu: float, sd: float, floor: float = 1.0) -> float:
    """E[max(X, floor)] for X ~ N(mu, sd^2), in closed form."""
    if sd == 0:
        return max(mu, floor)
    a = (floor - mu) / sd
    cdf = 0.5 * (1.0 + math.erf(a / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    return floor * cdf + mu * (1.0 - cdf) + sd * pdf


def closed_form_cost_latency(call: F64, k: int) -> tuple[float, float]:
    """E[C(k)] for any P, and E[T(k)] for P = 1 (or k = 1), in closed form."""
    c_in, c_out, t_in, t_out, mu_in, sd_in, mu_out, sd_out = (float(v) for v in call)
    e_in = clipped_normal_mean(mu_in, sd_in)
    e_out = clipped_normal_mean(mu_out, sd_out)
    return k * (c_in * e_in + c_out * e_out), k * (t_in * e_in + t_out * e_out)


# ---- rules ----------------------------------------------------------------------------------


def front(acc: F64, cost: F64, lat: F64, idx: list[int]) -> list[int]:
    """Non-dominated points of ``idx`` (maximise acc, minimise cost and latency)."""
    out = []
    for i in idx:
        dominated = any(
            acc[j] >= acc[i]
            and cost[j] <= cost[i]
            and lat[j] <= lat[i]
            and (acc[j] > acc[i] or cost[j] < cost[i] or lat[j] < lat[i])
            for j in idx
        )
        if not dominated:
            out.append(i)
    return out


def plan_choice(
    acc: F64,
    cost: F64,
    lat: F64,
    max_cost: float,
    max_latency: float,
    min_accuracy: float,
) -> tuple[list[int], list[int], dict[str, int | None]]:
    """(feasible, front, picks) as `uniscale._core.plan_rules` defines them (feasibility on the
    expectations themselves)."""
    n = len(acc)
    feas = [
        i
        for i in range(n)
        if cost[i] <= max_cost and lat[i] <= max_latency and acc[i] >= min_accuracy
    ]
    names = ("accuracy_max", "cube", "utopia", "knee", "knee_chord", "knee_paper")
    if not feas:
        return [], [], dict.fromkeys(names)
    fr = front(acc, cost, lat, feas)

    def ref(v: F64, limit: float) -> float:
        if math.isfinite(limit):
            return limit
        m = max(0.0, *(float(v[i]) for i in feas))
        return m if m > 0 else 1.0

    cr, tr = ref(cost, max_cost), ref(lat, max_latency)

    def p(i: int) -> F64:
        return np.array([cost[i] / cr, lat[i] / tr, acc[i]])

    def argmax(idx: list[int], score: dict[int, float]) -> int:
        return max(sorted(idx), key=lambda i: (score[i], -i))

    picks: dict[str, int | None] = {}
    picks["accuracy_max"] = min(feas, key=lambda i: (-acc[i], cost[i], lat[i], i))
    picks["cube"] = argmax(
        feas, {i: max(0.0, 1 - p(i)[0]) * max(0.0, 1 - p(i)[1]) * p(i)[2] for i in feas}
    )
    picks["utopia"] = argmax(
        fr,
        {i: -math.sqrt(p(i)[0] ** 2 + p(i)[1] ** 2 + (1 - p(i)[2]) ** 2) for i in fr},
    )
    order = sorted(fr, key=lambda i: (cost[i], lat[i], -acc[i], i))
    pts = [p(i) for i in order]
    m = len(pts)
    for name in ("knee", "knee_chord", "knee_paper"):
        picks[name] = None
    if m >= 3:
        curv = []
        for j in range(1, m - 1):
            a, b, c = pts[j - 1], pts[j], pts[j + 1]
            denom = np.linalg.norm(b - a) * np.linalg.norm(c - b) * np.linalg.norm(c - a)
            k = 2 * np.linalg.norm(np.cross(b - a, c - a)) / denom if denom > 1e-300 else 0.0
            curv.append((k, -j))
        picks["knee"] = order[-max(curv)[1]]
        v = pts[-1] - pts[0]
        dist = []
        for j in range(1, m - 1):
            w = pts[j] - pts[0]
            vl = np.linalg.norm(v)
            d = np.linalg.norm(np.cross(w, v)) / vl if vl > 1e-300 else np.linalg.norm(w)
            dist.append((d, -j))
        picks["knee_chord"] = order[-max(dist)[1]]
        best, best_k = 0, -1.0
        for j in range(1, m - 1):
            dp = (pts[j + 1] - pts[j - 1]) / 2
            ddp = pts[j + 1] - 2 * pts[j] + pts[j - 1]
            cross = abs(dp[0] * ddp[1] - dp[1] * ddp[0])
            nd = np.linalg.norm(dp)
            if nd > 1e-10 and cross / nd**3 > best_k:
                best, best_k = j, cross / nd**3
        picks["knee_paper"] = order[best]
    return feas, fr, picks
