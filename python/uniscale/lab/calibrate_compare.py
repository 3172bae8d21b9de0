"""Warm vs cold start on a replay source (paired seeds): `compare_warm_start` and its report."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uniscale._core import ConfigError
from uniscale.lab.calibrate_collect import DEFAULT_K, DEFAULT_PSEUDO_OBSERVATIONS, PREFIXES
from uniscale.lab.calibrate_warm import WarmStartReport, warm_start
from uniscale.lab.datasets import Source
from uniscale.outcomes import OutcomeTable
from uniscale.policy import Policy


@dataclass(frozen=True, slots=True)
class WarmStartComparison:
    """Paired per-seed differences, warm minus cold, of mean reward per request: over the
    whole stream and over its first ``PREFIXES`` requests; plus each run's summary rows."""

    seeds: list[int]
    calibration_items: int
    stream_requests: list[int]
    diff: list[float]
    diff_prefix: dict[int, list[float]]
    calibration_cost_usd: list[float]
    per_seed: list[list[dict[str, Any]]]

    def lines(self) -> list[str]:
        out = [
            f"warm start ({self.calibration_items} calibration items held out of each stream) "
            "minus cold start, mean reward per request, paired by seed:"
        ]
        rows = [("whole stream", self.diff)] + [
            (f"first {p} requests", d) for p, d in self.diff_prefix.items()
        ]
        for name, d in rows:
            a = np.asarray(d)
            half = _t95(len(a)) * a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else math.nan
            out.append(
                f"  {name:<18} {a.mean():+.4f} (95% CI {a.mean() - half:+.4f} .. "
                f"{a.mean() + half:+.4f}); warm ahead on {int((a > 0).sum())}/{len(a)} seeds; "
                f"per seed {', '.join(f'{v:+.4f}' for v in a)}"
            )
        out.append(
            "  calibration cost (every model, m samples + greedy, on the held-out items): "
            f"${np.mean(self.calibration_cost_usd):.3e} per seed"
        )
        return out


def _t95(n: int) -> float:
    """Two-sided 95% Student-t quantile for ``n`` paired differences (n - 1 degrees of freedom)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
    table |= {9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
    # between tabulated degrees of freedom take the next smaller one (a wider interval, never a
    # narrower one); beyond 30, 30's quantile (2.042, above the normal's 1.96)
    df = max(n - 1, 1)
    return table[max(k for k in table if k <= df)]


def _collection_cost(table: OutcomeTable) -> float:
    """Dollars the calibration collection costs: per model, its largest sampled action (all m
    samples) plus its greedy answer, on every item."""
    total = 0.0
    for model in dict.fromkeys(a.model for a in table.actions):
        cols = [j for j, a in enumerate(table.actions) if a.model == model]
        big = max(cols, key=lambda j: (table.actions[j].n, table.actions[j].strategy != "single"))
        single = [j for j in cols if table.actions[j].strategy == "single"]
        total += float(table.cost_usd[:, big].sum())
        total += float(table.cost_usd[:, single[0]].sum()) if single else 0.0
    return total


def compare_warm_start(
    source: Source,
    *,
    k: int = DEFAULT_K,
    calibration: OutcomeTable | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    reward: str = "cost_sensitive",
    pseudo_observations: int = DEFAULT_PSEUDO_OBSERVATIONS,
    request_features: bool = True,
    progress: Callable[[int], object] | None = None,
    **policy_kwargs: Any,
) -> tuple[WarmStartComparison, list[list[Any]]]:
    """Cold vs warm-started UniScale on the same streams of ``source``. With ``calibration`` =
    None, each seed's first ``k`` requests are its calibration and the rest its stream (the
    calibration is out of sample, and a different draw per seed); otherwise ``calibration`` is
    used for every seed and its items are removed from each stream. Returns the comparison and
    each seed's `uniscale.lab.replay.compare` results (baselines, ``uniscale``, ``uniscale_warm``).
    """
    from uniscale.lab.replay import LearnerSpec, Scales, compare

    diffs: list[float] = []
    prefix: dict[int, list[float]] = {p: [] for p in PREFIXES}
    cal_cost: list[float] = []
    lengths: list[int] = []
    per_seed_rows: list[list[dict[str, Any]]] = []
    per_seed: list[list[Any]] = []
    n_cal = 0
    for seed in seeds:
        full = source.table(seed)
        scales = Scales.from_table(full)
        if calibration is None:
            if not 1 <= k < full.n_requests - 1:
                raise ConfigError(f"k must be in [1, {full.n_requests - 2}], got {k}")
            cal, stream = full.subset(range(k)), full.subset(range(k, full.n_requests))
        else:
            held = set(calibration.ids)
            cal = calibration
            stream = full.subset([i for i, rid in enumerate(full.ids) if rid not in held])
            if stream.n_requests < 2:
                raise ConfigError("the calibration table holds (almost) every item of the stream")
        if not request_features:
            cal, stream = cal.without_request_features(), stream.without_request_features()
        n_cal = cal.n_requests
        cal_cost.append(_collection_cost(cal))

        def prepare(policy: Policy, cal: OutcomeTable = cal) -> WarmStartReport:
            return warm_start(policy, cal, pseudo_observations)

        learners = [
            LearnerSpec("uniscale", stream.actions, policy_kwargs),
            LearnerSpec("uniscale_warm", stream.actions, policy_kwargs, prepare=prepare),
        ]
        results = compare(
            stream,
            source.models,
            reward=reward,
            learners=learners,
            seed=seed,
            scales=scales,
            progress=progress,
        )
        cold = next(r for r in results if r.name == "uniscale")
        warm = next(r for r in results if r.name == "uniscale_warm")
        diffs.append(float(warm.reward.mean() - cold.reward.mean()))
        for p in PREFIXES:
            prefix[p].append(float(warm.reward[:p].mean() - cold.reward[:p].mean()))
        lengths.append(stream.n_requests)
        per_seed.append(results)
        per_seed_rows.append([r.summary() for r in results])
    comp = WarmStartComparison(
        seeds=list(seeds),
        calibration_items=n_cal,
        stream_requests=lengths,
        diff=diffs,
        diff_prefix=prefix,
        calibration_cost_usd=cal_cost,
        per_seed=per_seed_rows,
    )
    return comp, per_seed
