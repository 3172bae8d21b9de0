"""Off-policy evaluation: what would another policy have earned, judged from decision logs alone.

`evaluate` returns three estimates of a target policy's mean reward per request from logged
records (`LoggedDecision`, or a `uniscale.DecisionLog` file read with `records_from_log`), each
with a confidence interval: ``ips`` (inverse propensity scoring), ``snips`` (self-normalised
IPS) and ``dr`` (doubly robust, with a cross-fitted `RidgeRewardModel`). Targets:
`fixed_action_target` and `PolicyTarget` (a frozen greedy copy of a `Policy`). `ope_check`
checks the estimators against replay ground truth on a full-information `OutcomeTable`.

The estimators, intervals, clipping, support and targets are described in docs/replay.md,
section "Off-policy evaluation".
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

# Records, targets and reward models live in ope_records and ope_models (re-exported here).
from uniscale.lab.ope_models import RewardFn as RewardFn
from uniscale.lab.ope_models import RewardModel, RidgeRewardModel
from uniscale.lab.ope_models import _cross_fit as _cross_fit
from uniscale.lab.ope_models import _features as _features
from uniscale.lab.ope_records import _RECORD_TYPES as _RECORD_TYPES
from uniscale.lab.ope_records import ESTIMATORS as ESTIMATORS
from uniscale.lab.ope_records import F64 as F64
from uniscale.lab.ope_records import I64 as I64
from uniscale.lab.ope_records import (
    LoggedDecision,
    OPEError,
    PolicyTarget,
    TargetPolicy,
    fixed_action_target,
    records_from_log,
)
from uniscale.lab.ope_records import _as_record as _as_record
from uniscale.lab.ope_records import _target_probs as _target_probs
from uniscale.policy import RewardWeights
from uniscale.records import DecisionRecord, FeedbackRecord

__all__ = [
    "CheckResult",
    "Estimate",
    "LoggedDecision",
    "OPEError",
    "OPEResult",
    "PolicyTarget",
    "RewardModel",
    "RidgeRewardModel",
    "TargetPolicy",
    "evaluate",
    "fixed_action_target",
    "ope_check",
    "records_from_log",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Estimators


@dataclass(frozen=True, slots=True)
class Estimate:
    """One estimate of the target's mean reward per request, with its interval."""

    estimator: str
    value: float
    se: float
    ci_low: float
    ci_high: float
    level: float
    ci_method: str

    def covers(self, value: float) -> bool:
        return self.ci_low <= value <= self.ci_high

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "value": self.value,
            "se": self.se,
            "ci": [self.ci_low, self.ci_high],
            "level": self.level,
            "ci_method": self.ci_method,
        }


@dataclass(frozen=True, slots=True)
class OPEResult:
    """Estimates plus the diagnostics that say how far to trust them.

    ``ess``: effective sample size of the (clipped) weights; ``weight_mean`` should be near 1
    (far from 1 means the propensities or the support are off); ``n_clipped``: records whose
    weight was capped at ``clip``; ``support_deficit``: mean target mass outside the logged
    candidates (that mass is estimated as reward 0)."""

    estimates: dict[str, Estimate]
    n: int
    ess: float
    weight_mean: float
    weight_max: float
    clip: float | None
    n_clipped: int
    support_deficit: float
    logged_mean_reward: float
    reward_model: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
            "n": self.n,
            "ess": self.ess,
            "weight_mean": self.weight_mean,
            "weight_max": self.weight_max,
            "clip": self.clip,
            "n_clipped": self.n_clipped,
            "support_deficit": self.support_deficit,
            "logged_mean_reward": self.logged_mean_reward,
            "reward_model": self.reward_model,
        }

    def table(self, truth: float | None = None) -> str:
        lines = []
        head = f"{'estimator':<9} {'value':>9} {'se':>8}  {'CI':>21}"
        if truth is not None:
            head += "  truth in CI"
        lines.append(head)
        for e in self.estimates.values():
            row = (
                f"{e.estimator:<9} {e.value:>9.4f} {e.se:>8.4f}  "
                f"[{e.ci_low:>8.4f}, {e.ci_high:>8.4f}]"
            )
            if truth is not None:
                row += f"  {'yes' if e.covers(truth) else 'NO'}"
            lines.append(row)
        lvl = next(iter(self.estimates.values())).level if self.estimates else 0.95
        method = next(iter(self.estimates.values())).ci_method if self.estimates else "normal"
        clip = f", clipped {self.n_clipped} at {self.clip:g}" if self.clip is not None else ""
        lines.append(
            f"n={self.n}  ESS={self.ess:,.1f}  mean weight={self.weight_mean:.3f}  "
            f"max weight={self.weight_max:.1f}{clip}  support deficit="
            f"{self.support_deficit:.3f}  ({100 * lvl:g}% CIs, {method})"
        )
        return "\n".join(lines)


def _point(kind: str, w: F64, r: F64, dm: F64, qa: F64) -> float:
    if kind == "ips":
        return float(np.mean(w * r))
    if kind == "snips":
        s = float(w.sum())
        return float((w * r).sum() / s) if s > 0 else 0.0
    return float(np.mean(dm + w * (r - qa)))


def _terms(kind: str, w: F64, r: F64, dm: F64, qa: F64, value: float) -> F64:
    if kind == "ips":
        return w * r
    if kind == "snips":
        m = float(w.mean())
        return w * (r - value) / m if m > 0 else np.zeros_like(w)
    return dm + w * (r - qa)


def evaluate(
    records: Iterable[LoggedDecision | Mapping[str, Any]] | str | os.PathLike[str],
    target: TargetPolicy,
    *,
    estimators: Sequence[str] = ESTIMATORS,
    clip: float | None = None,
    level: float = 0.95,
    ci: Literal["normal", "bootstrap"] = "normal",
    n_bootstrap: int = 1000,
    seed: int = 0,
    reward_model: Callable[[], RewardModel] = RidgeRewardModel,
    q: RewardFn | None = None,
    folds: int = 2,
    weights: str | RewardWeights | tuple[float, float, float] | None = None,
) -> OPEResult:
    """Estimate ``target``'s mean reward per request from logged records.

    ``records``: `LoggedDecision` objects, dicts (either decision-log records or flat dicts with
    ``x, action, propensity, reward, candidates``), or a decision-log path (``weights``
    re-prices a log's rewards, see `records_from_log`). DR's reward model: ``q(x, candidates)``
    if given is used as-is (a known or separately trained model, no fitting); otherwise
    ``reward_model()`` (a `RewardModel` factory, default `RidgeRewardModel`) is cross-fitted
    with ``folds`` folds. Raises `OPEError` on invalid records or target output.
    """
    bad = [e for e in estimators if e not in ESTIMATORS]
    if bad or not estimators:
        raise OPEError(f"unknown estimators {bad}; expected some of {list(ESTIMATORS)}")
    if not 0.0 < level < 1.0:
        raise OPEError(f"level must be in (0, 1), got {level}")
    if clip is not None and not clip > 0:
        raise OPEError(f"clip must be > 0, got {clip}")
    if ci not in ("normal", "bootstrap"):
        raise OPEError(f"ci must be 'normal' or 'bootstrap', got {ci!r}")
    if folds < 2:
        raise OPEError(f"folds must be >= 2, got {folds}")
    if isinstance(records, str | os.PathLike):
        recs = records_from_log(records, weights=weights)
    else:
        items = list(records)
        if any(
            isinstance(r, DecisionRecord | FeedbackRecord)
            or (isinstance(r, Mapping) and ("decision" in r or "type" in r))
            for r in items
        ):
            recs = records_from_log(items, weights=weights)  # type: ignore[arg-type]
        else:
            recs = [_as_record(r, i) for i, r in enumerate(items)]
    n = len(recs)
    if n < 2:
        raise OPEError(f"need at least 2 records with a reward, got {n}")

    r = np.array([x.reward for x in recs])
    p = np.array([x.propensity for x in recs])
    probs = [_target_probs(target, x, i) for i, x in enumerate(recs)]
    j = [x.candidates.index(x.action) for x in recs]
    w_raw = np.array([pr[jj] for pr, jj in zip(probs, j, strict=True)]) / p
    deficit = float(np.mean([1.0 - pr.sum() for pr in probs]))
    w = w_raw if clip is None else np.minimum(w_raw, clip)
    n_clipped = 0 if clip is None else int((w_raw > clip).sum())

    dm = np.zeros(n)
    qa = np.zeros(n)
    model_name: str | None = None
    if "dr" in estimators:
        qs: list[F64]
        if q is None:
            qs = _cross_fit(recs, reward_model, folds, seed)
            name = getattr(reward_model, "__name__", type(reward_model).__name__)
            model_name = f"{name} (cross-fitted, {folds} folds)"
        else:
            qs = [np.asarray(q(x.x, x.candidates), dtype=np.float64) for x in recs]
            model_name = f"given ({getattr(q, '__name__', type(q).__name__)})"
        for i in range(n):
            if qs[i].shape != (len(recs[i].candidates),) or not np.all(np.isfinite(qs[i])):
                raise OPEError(f"record {i}: the reward model gave {qs[i]!r}")
            dm[i] = float(probs[i] @ qs[i])
            qa[i] = float(qs[i][j[i]])

    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    out: dict[str, Estimate] = {}
    rng = np.random.default_rng(seed)
    boot_idx = [rng.integers(0, n, size=n) for _ in range(n_bootstrap)] if ci == "bootstrap" else []
    for kind in estimators:
        v = _point(kind, w, r, dm, qa)
        se = float(np.std(_terms(kind, w, r, dm, qa, v), ddof=1) / math.sqrt(n))
        if ci == "normal":
            lo, hi = v - z * se, v + z * se
        else:
            vals = np.array([_point(kind, w[b], r[b], dm[b], qa[b]) for b in boot_idx])
            lo, hi = (float(t) for t in np.quantile(vals, [0.5 - level / 2, 0.5 + level / 2]))
            se = float(vals.std(ddof=1))
        out[kind] = Estimate(kind, v, se, float(lo), float(hi), level, ci)
    ess = float(w.sum() ** 2 / (w**2).sum()) if (w > 0).any() else 0.0
    return OPEResult(
        estimates=out,
        n=n,
        ess=ess,
        weight_mean=float(w.mean()),
        weight_max=float(w_raw.max()),
        clip=clip,
        n_clipped=n_clipped,
        support_deficit=deficit,
        logged_mean_reward=float(r.mean()),
        reward_model=model_name,
    )


# The ground-truth check lives in its own module and imports this one; re-exported here.
from uniscale.lab.ope_replay import CheckResult, ope_check  # noqa: E402
