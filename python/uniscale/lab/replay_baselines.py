"""What a replay judges policies by: the reward scales and matrix, a run's result, the
hindsight baselines (oracle, random, best fixed, best per kind, cross-fitted) and the
conservative and quality-floor promises along a stream."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from uniscale.outcomes import OutcomeTable
from uniscale.records import reward_value
from uniscale.space import Action, ModelSpec

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Scales:
    cost_scale: float
    latency_scale: float

    @classmethod
    def from_table(cls, table: OutcomeTable) -> Scales:
        """Mean cost and latency of one answer from the most expensive / slowest model (its
        ``single`` action, else its smallest-n action): normalised cost 1.0 reads "as much as
        asking the priciest model once" (the same convention as `Policy`'s default scales)."""
        cheapest_per_model: dict[str, int] = {}
        for i, a in enumerate(table.actions):
            j = cheapest_per_model.get(a.model)
            if j is None or (a.n, a.strategy != "single") < (
                table.actions[j].n,
                table.actions[j].strategy != "single",
            ):
                cheapest_per_model[a.model] = i
        cols = list(cheapest_per_model.values())
        c = float(table.cost_usd[:, cols].mean(axis=0).max())
        lat = float(table.latency_s[:, cols].mean(axis=0).max())
        return cls(c if c > 0 else 1.0, lat if lat > 0 else 1.0)


@dataclass
class RunResult:
    name: str
    chosen: I64
    reward: F64
    quality: F64
    cost_usd: F64
    latency_s: F64
    oracle_reward: F64
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        t = len(self.reward)
        regret = self.oracle_reward - self.reward
        return {
            "policy": self.name,
            "requests": t,
            "accuracy": float(self.quality.mean()),
            "cost_usd_total": float(self.cost_usd.sum()),
            "cost_usd_per_request": float(self.cost_usd.mean()),
            "latency_s_mean": float(self.latency_s.mean()),
            "reward_total": float(self.reward.sum()),
            "reward_mean": float(self.reward.mean()),
            "regret_total": float(regret.sum()),
            **self.extra,
        }

    def cumulative_regret(self) -> F64:
        return np.cumsum(self.oracle_reward - self.reward)


def reward_matrix(table: OutcomeTable, weights: F64, scales: Scales) -> F64:
    """r[t, k] under the weights in force at step t (`uniscale.records.reward_value`)."""
    return reward_value(
        table.quality,
        table.cost_usd,
        table.latency_s,
        (weights[:, :1], weights[:, 1:2], weights[:, 2:3]),
        scales.cost_scale,
        scales.latency_scale,
    )


def _result(
    name: str, table: OutcomeTable, chosen: I64, r: F64, oracle: F64, **extra: Any
) -> RunResult:
    rows = np.arange(len(chosen))
    return RunResult(
        name=name,
        chosen=chosen,
        reward=r[rows, chosen],
        quality=table.quality[rows, chosen],
        cost_usd=table.cost_usd[rows, chosen],
        latency_s=table.latency_s[rows, chosen],
        oracle_reward=oracle,
        extra=dict(extra),
    )


def oracle_run(table: OutcomeTable, r: F64, avail: NDArray[np.bool_]) -> RunResult:
    masked = np.where(avail, r, -np.inf)
    chosen = masked.argmax(axis=1).astype(np.int64)
    return _result("oracle", table, chosen, r, masked.max(axis=1))


def random_run(
    table: OutcomeTable, r: F64, avail: NDArray[np.bool_], oracle: F64, seed: int
) -> RunResult:
    rng = np.random.default_rng(seed)
    chosen = np.array([rng.choice(np.flatnonzero(row)) for row in avail], dtype=np.int64)
    return _result("random", table, chosen, r, oracle)


def _always_available(avail: NDArray[np.bool_], columns: Sequence[int] | None = None) -> I64:
    """Columns available at every step (among ``columns``, in their order, when given)."""
    always = np.asarray(avail.all(axis=0), dtype=bool)
    cols = (
        np.flatnonzero(always)
        if columns is None
        else np.array([c for c in columns if always[c]], dtype=np.int64)
    )
    if len(cols) == 0:
        raise ValueError("no action is available for the whole stream")
    return np.asarray(cols, dtype=np.int64)


def best_fixed_run(
    table: OutcomeTable,
    r: F64,
    avail: NDArray[np.bool_],
    oracle: F64,
    columns: Sequence[int] | None = None,
    name: str = "best_fixed",
) -> RunResult:
    """The best single action in hindsight among those available at every step."""
    cols = _always_available(avail, columns)
    totals = r[:, cols].sum(axis=0)
    best = int(cols[int(np.argmax(totals))])
    return _fixed_run(name, table, best, r, oracle)


def _fixed_run(name: str, table: OutcomeTable, col: int, r: F64, oracle: F64) -> RunResult:
    """Action ``col`` on every request."""
    chosen = np.full(table.n_requests, col, dtype=np.int64)
    return _result(name, table, chosen, r, oracle, action=str(table.actions[col]))


def best_per_kind_run(
    table: OutcomeTable, r: F64, avail: NDArray[np.bool_], oracle: F64
) -> RunResult:
    """For each task kind, the single action with the highest total reward on that kind's
    requests in hindsight (among actions available all along): what a hand-written router that
    knows every request's type, and the best action for each type, would get. Its gap over
    ``best_fixed`` is the most that routing on the request's type can gain on this stream."""
    always = _always_available(avail)
    kinds = np.asarray(table.kinds)
    chosen = np.zeros(table.n_requests, dtype=np.int64)
    picked: dict[str, str] = {}
    for kind in dict.fromkeys(table.kinds):
        rows = kinds == kind
        best = int(always[int(np.argmax(r[rows][:, always].sum(axis=0)))])
        chosen[rows] = best
        picked[kind] = str(table.actions[best])
    return _result("best_per_kind", table, chosen, r, oracle, actions=picked)


def xfit_folds(n: int, folds: int, seed: int) -> I64:
    """Fold of each of ``n`` rows: a seeded shuffle dealt round-robin, so fold sizes differ by at
    most one. The generator is keyed on ``(seed, "xfit")``, not on ``seed`` alone: replay
    sources order a seed's rows with ``default_rng(seed)``, and the same permutation again would
    put every item in the same fold on every seed."""
    key = int.from_bytes(b"xfit", "little")
    return np.asarray(np.random.default_rng([seed, key]).permutation(n) % folds, dtype=np.int64)


def best_per_kind_xfit_run(
    table: OutcomeTable,
    r: F64,
    avail: NDArray[np.bool_],
    oracle: F64,
    *,
    folds: int = 5,
    seed: int = 0,
    columns: Sequence[int] | None = None,
    name: str = "best_per_kind_xfit",
) -> RunResult:
    """`best_per_kind_run` with each choice made out of sample (``folds``-fold cross-fitting):
    the requests are dealt into folds by a seeded shuffle, and a request's kind gets the action
    with the highest total reward on that kind's requests *in the other folds*. A router that
    learns the per-kind choice from data (even from every action's outcome on 80% of the table)
    can expect about this much, so its gap over ``best_fixed`` is the headroom routing on the
    request's type really has; ``best_per_kind``'s larger gap includes picking, per kind, the
    luckiest of K actions on the very requests it is scored on. A kind absent from the other
    folds gets the best action over all of them. ``columns`` restricts the choice (e.g. to one
    sample per model, which measures what test-time scaling adds out of sample)."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    always = _always_available(avail, columns)
    t_n = table.n_requests
    fold = xfit_folds(t_n, folds, seed)
    kinds = np.asarray(table.kinds)
    chosen = np.zeros(t_n, dtype=np.int64)
    ra = r[:, always]
    for f in range(folds):
        test, train = fold == f, fold != f
        overall = int(always[int(np.argmax(ra[train].sum(axis=0)))])
        for kind in dict.fromkeys(table.kinds):
            rows = test & (kinds == kind)
            fit = train & (kinds == kind)
            chosen[rows] = (
                int(always[int(np.argmax(ra[fit].sum(axis=0)))]) if fit.any() else overall
            )
    return _result(name, table, chosen, r, oracle, folds=folds)


def conservative_margin(reward: F64, baseline_reward: F64, delta: float) -> F64:
    """Conservative mode's promise along a stream: after each request ``t``, the policy's
    cumulative reward minus ``(B_t - delta * |B_t|)``, where ``B_t`` is the baseline's
    cumulative reward on the same requests. The promise holds at ``t`` when this is >= 0."""
    cum = np.cumsum(reward)
    base = np.cumsum(baseline_reward)
    return np.asarray(cum - (base - delta * np.abs(base)), dtype=np.float64)


def floor_vs_reference(floor: RunResult, reference: RunResult) -> tuple[float, float]:
    """Quality-floor mode's run against its reference's on the same stream: (accuracy minus
    the reference's, share of the reference's cost saved; 0 when the reference costs
    nothing)."""
    acc = float(floor.quality.mean() - reference.quality.mean())
    ref_cost = float(reference.cost_usd.mean())
    saved = float(1.0 - floor.cost_usd.mean() / ref_cost) if ref_cost > 0 else 0.0
    return acc, saved


def floor_margin(quality: F64, reference_quality: F64, tolerance: float) -> F64:
    """Quality-floor mode's promise along a stream: after each request ``t``, the policy's
    cumulative quality minus the reference's plus ``tolerance * t``; >= 0 means it held."""
    t = np.arange(1, len(quality) + 1, dtype=np.float64)
    return np.asarray(
        np.cumsum(quality) - np.cumsum(reference_quality) + tolerance * t, dtype=np.float64
    )


def default_reference(actions: Sequence[Action], models: Mapping[str, ModelSpec]) -> Action:
    """What teams run today: the priciest model (input + output list price) answering once
    (its cheapest action when it has no one-sample action)."""
    present = [m for m in dict.fromkeys(a.model for a in actions) if m in models]
    if not present:
        raise ValueError("no action's model has a ModelSpec")
    top = max(present, key=lambda m: models[m].price_in_per_mtok + models[m].price_out_per_mtok)
    own = [a for a in actions if a.model == top]
    return next((a for a in own if a.n == 1), min(own, key=lambda a: a.n))
