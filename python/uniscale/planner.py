"""`uniscale.plan`: the 3-D accuracy x cost x latency operating-point planner (issue #15).

After "3D Optimization for AI Inference Scaling: Balancing Accuracy, Cost, and Latency" (Jung,
Ricky, Chatni, arXiv 2510.18905; reference code masonjung/inference-scaling-moo). A plan
estimates, for every candidate ``(model, strategy, k)``, the expected total cost, latency and
accuracy of running ``k`` samples (Monte Carlo in Rust, `uniscale._core.simulate_plan`), keeps
what a scenario's limits allow, and picks operating points with the paper's rules
(`uniscale._core.plan_rules`). See ``docs/plan.md``.

Candidates come from a config (the paper's simulated models: accuracy is the paper's best-of-k
model) or from an outcome table (`candidates_from_table`: measured accuracy of each action with
bootstrap intervals; per-call token counts, prices and per-token latencies estimated from the
table and its models).

This module imports only NumPy, the standard library and the compiled core; tables and plots
load inside the functions that need them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from uniscale._core import ConfigError, plan_rules, simulate_plan

if TYPE_CHECKING:
    from uniscale.space import Action

F64 = NDArray[np.float64]

#: The rules in the order tables show them (``knee_paper`` is the reference code's knee).
RULES: tuple[str, ...] = ("accuracy_max", "cube", "utopia", "knee", "knee_chord", "knee_paper")
#: Built-in configs shipped with the package.
PAPER_CONFIG = Path(__file__).resolve().parent / "data" / "plan_paper.toml"
TABLE_CONFIG = Path(__file__).resolve().parent / "data" / "plan_tables.toml"

Risk = Literal["mean", "quantile"]
LatencyModel = Literal["rounds", "paper_mean"]


@dataclass(frozen=True, slots=True)
class CallModel:
    """Per-call model of one (model, strategy): prices in USD per million tokens, latencies in
    seconds per token, token counts as (mean, sd) of a normal clipped below at 1 token."""

    price_in_per_mtok: float
    price_out_per_mtok: float
    latency_in_s_per_token: float
    latency_out_s_per_token: float
    input_tokens: tuple[float, float] = (1024.0, 64.0)
    output_tokens: tuple[float, float] = (2048.0, 128.0)

    def row(self) -> list[float]:
        return [
            self.price_in_per_mtok / 1e6,
            self.price_out_per_mtok / 1e6,
            self.latency_in_s_per_token,
            self.latency_out_s_per_token,
            *self.input_tokens,
            *self.output_tokens,
        ]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One point of the plan's space. Accuracy is either the paper's best-of-k model
    (``accuracy_sd`` set) or measured (``accuracy_replicates``: bootstrap replicates of
    ``accuracy``)."""

    model: str
    strategy: str
    k: int
    call: CallModel
    parallelism: int
    accuracy: float
    accuracy_sd: float | None = None
    accuracy_replicates: F64 | None = field(default=None, compare=False)
    #: calls simulated when not ``k`` (an adaptive action planned at its expected samples)
    calls: int | None = None

    @classmethod
    def of_action(
        cls,
        action: Action,
        call: CallModel,
        parallelism: int,
        accuracy: float,
        replicates: F64,
        calls: int | None,
    ) -> Candidate:
        """The candidate for an action of a table or a policy, its accuracy measured or
        estimated (``replicates``)."""
        return cls(
            action.model,
            action.strategy,
            action.n,
            call,
            parallelism,
            accuracy,
            accuracy_replicates=replicates,
            calls=calls,
        )

    @property
    def label(self) -> str:
        return f"{self.model}/{self.strategy}/{self.k}"

    @property
    def n_calls(self) -> int:
        return self.k if self.calls is None else self.calls


@dataclass(frozen=True, slots=True)
class Scenario:
    """A deployment's limits. Absolute limits (``max_cost_usd``, ``max_latency_s``) or shares
    of the largest expected value among the candidates (``max_cost_share``,
    ``max_latency_share``, for configs that must work on any table); at most one of each
    pair. ``min_accuracy_gap``: accuracy at least the best candidate's expectation minus
    this (replaces ``min_accuracy`` when set). Missing limits are open (infinite)."""

    name: str
    max_cost_usd: float | None = None
    max_latency_s: float | None = None
    min_accuracy: float = 0.0
    max_cost_share: float | None = None
    max_latency_share: float | None = None
    min_accuracy_gap: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        for key in ("max_cost_usd", "max_latency_s", "max_cost_share", "max_latency_share"):
            v = getattr(self, key)
            if v is not None and not (isinstance(v, int | float) and v > 0 and not math.isnan(v)):
                raise ConfigError(f"scenario {self.name!r}: {key} must be > 0, got {v!r}")
        if not (isinstance(self.min_accuracy, int | float) and math.isfinite(self.min_accuracy)):
            raise ConfigError(f"scenario {self.name!r}: min_accuracy must be a finite number")
        g = self.min_accuracy_gap
        if g is not None and not (isinstance(g, int | float) and 0 <= g < math.inf):
            raise ConfigError(f"scenario {self.name!r}: min_accuracy_gap must be >= 0, got {g!r}")
        if self.max_cost_usd is not None and self.max_cost_share is not None:
            raise ConfigError(
                f"scenario {self.name!r}: give at most one of max_cost_usd and max_cost_share"
            )
        if self.max_latency_s is not None and self.max_latency_share is not None:
            raise ConfigError(
                f"scenario {self.name!r}: give at most one of max_latency_s and max_latency_share"
            )

    def limits(self, mean: F64) -> tuple[float, float, float]:
        """(max_cost_usd, max_latency_s, min_accuracy) resolved against the candidates'
        expectations."""

        def one(absolute: float | None, share: float | None, col: int) -> float:
            if absolute is not None:
                return float(absolute)
            if share is not None:
                top = float(mean[:, col].max()) if len(mean) else 0.0
                return share * top if top > 0 else math.inf
            return math.inf

        min_acc = self.min_accuracy
        if self.min_accuracy_gap is not None and len(mean):
            min_acc = float(mean[:, 2].max()) - self.min_accuracy_gap
        return (
            one(self.max_cost_usd, self.max_cost_share, 0),
            one(self.max_latency_s, self.max_latency_share, 1),
            min_acc,
        )


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario's feasible set, Pareto front and picks (indices into `Plan.candidates`)."""

    scenario: Scenario
    max_cost_usd: float
    max_latency_s: float
    min_accuracy: float
    feasible: tuple[int, ...]
    front: tuple[int, ...]
    picks: dict[str, int | None]


@dataclass(frozen=True, slots=True)
class Plan:
    """Candidates with Monte Carlo estimates (arrays (n, 3): cost_usd, latency_s, accuracy)
    and each scenario's result."""

    candidates: tuple[Candidate, ...]
    mean: F64
    lo: F64
    hi: F64
    pessimistic: F64
    scenarios: tuple[ScenarioResult, ...]
    trials: int
    seed: int
    level: float
    quantile: float
    risk: Risk
    latency: LatencyModel
    source: str = ""

    def scenario(self, name: str) -> ScenarioResult:
        for s in self.scenarios:
            if s.scenario.name == name:
                return s
        known = ", ".join(s.scenario.name for s in self.scenarios)
        raise ConfigError(f"no scenario {name!r} in this plan; it has {known}")

    def table(self, name: str, *, rows: Literal["front", "feasible"] = "front") -> str:
        """A text table of one scenario: its front (or every feasible point) with expectations
        and intervals, each rule's pick marked."""
        s = self.scenario(name)
        marks: dict[int, list[str]] = {}
        for rule, i in s.picks.items():
            if i is not None:
                marks.setdefault(i, []).append(rule)
        idx = s.front if rows == "front" else s.feasible
        pct = round(100 * self.level)
        head = (
            f"{'candidate':<34} {'E[cost] $':>11} {f'{pct}% interval':>21} "
            f"{'E[latency] s':>12} {f'{pct}% interval':>17} {'E[acc]':>7} "
            f"{f'{pct}% interval':>13}  picked by"
        )
        lines = [
            f"scenario {s.scenario.name}: cost <= {_limit(s.max_cost_usd)} USD, latency <= "
            f"{_limit(s.max_latency_s)} s, accuracy >= {s.min_accuracy:.4g} "
            f"({'expectations' if self.risk == 'mean' else f'{self.quantile:g} quantiles'}); "
            f"{len(s.feasible)} of {len(self.candidates)} candidates feasible, "
            f"{len(s.front)} Pareto-optimal",
            head,
            "-" * len(head),
        ]
        for i in idx:
            m, lo, hi = self.mean[i], self.lo[i], self.hi[i]
            lines.append(
                f"{self.candidates[i].label:<34} {m[0]:>11.4g} [{lo[0]:>9.4g}, {hi[0]:>9.4g}] "
                f"{m[1]:>12.4g} [{lo[1]:>7.4g}, {hi[1]:>7.4g}] {m[2]:>7.4f} "
                f"[{lo[2]:.3f}, {hi[2]:.3f}]  {', '.join(marks.get(i, []))}"
            )
        lines.append(
            "picks: "
            + "; ".join(
                f"{r}={self.candidates[i].label if i is not None else '-'}"
                for r, i in s.picks.items()
            )
        )
        return "\n".join(lines)

    def picked(self, name: str, rules: Sequence[str] = RULES) -> list[Candidate]:
        """The distinct candidates picked by ``rules`` in scenario ``name``."""
        s = self.scenario(name)
        out: list[Candidate] = []
        for r in rules:
            i = s.picks.get(r)
            if i is not None and self.candidates[i] not in out:
                out.append(self.candidates[i])
        return out

    def front_candidates(self, name: str) -> list[Candidate]:
        return [self.candidates[i] for i in self.scenario(name).front]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "trials": self.trials,
            "seed": self.seed,
            "level": self.level,
            "quantile": self.quantile,
            "risk": self.risk,
            "latency": self.latency,
            "candidates": [
                {
                    "label": c.label,
                    "mean": self.mean[i].tolist(),
                    "lo": self.lo[i].tolist(),
                    "hi": self.hi[i].tolist(),
                    "pessimistic": self.pessimistic[i].tolist(),
                }
                for i, c in enumerate(self.candidates)
            ],
            "scenarios": [
                {
                    "name": s.scenario.name,
                    "max_cost_usd": _json_float(s.max_cost_usd),
                    "max_latency_s": _json_float(s.max_latency_s),
                    "min_accuracy": s.min_accuracy,
                    "feasible": list(s.feasible),
                    "front": list(s.front),
                    "picks": {
                        r: (self.candidates[i].label if i is not None else None)
                        for r, i in s.picks.items()
                    },
                }
                for s in self.scenarios
            ],
        }


def _limit(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.4g}"


def _json_float(v: float) -> float | None:
    return None if math.isinf(v) else v


def plan(
    candidates: Sequence[Candidate],
    scenarios: Sequence[Scenario],
    *,
    trials: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    quantile: float = 0.9,
    risk: Risk = "mean",
    latency: LatencyModel = "rounds",
    threads: int = 0,
    progress: Callable[[int], None] | None = None,
    batch_calls: float = 2e7,
    source: str = "",
) -> Plan:
    """Estimates every candidate by Monte Carlo and applies every rule in every scenario.

    ``risk="mean"``: feasible when the expectations meet the limits; ``"quantile"``: when the
    ``quantile`` quantile of cost and latency and the ``1 - quantile`` quantile of accuracy do
    (a risk-averse plan). Rules score expectations either way. Candidates are simulated in
    batches of about ``batch_calls`` simulated calls, calling ``progress(points_done)`` after
    each; batching changes no number (each candidate has its own random stream, keyed on
    ``seed`` and its position)."""
    if not candidates:
        raise ConfigError("a plan needs at least one candidate")
    if not scenarios:
        raise ConfigError("a plan needs at least one scenario")
    if risk not in ("mean", "quantile"):
        raise ConfigError(f"risk must be 'mean' or 'quantile', got {risk!r}")
    names = [s.name for s in scenarios]
    if len(set(names)) != len(names):
        raise ConfigError(f"scenario names must be distinct, got {names}")
    # batch key: the accuracy kind, and for measured curves the number of replicates (one
    # (n, B) matrix per batch)
    measured = [
        -1 if c.accuracy_replicates is None else len(c.accuracy_replicates) for c in candidates
    ]
    n = len(candidates)
    parts: list[tuple[F64, F64, F64, F64]] = []
    start = 0
    while start < n:
        # the batch: same accuracy kind, about batch_calls simulated calls
        stop, calls = start, 0.0
        while stop < n and measured[stop] == measured[start]:
            calls += candidates[stop].n_calls * trials
            stop += 1
            if calls >= batch_calls:
                break
        batch = candidates[start:stop]
        est = simulate_plan(
            np.array([c.call.row() for c in batch], dtype=np.float64),
            np.array([c.n_calls for c in batch], dtype=np.int64),
            np.array([c.parallelism for c in batch], dtype=np.int64),
            np.array([c.accuracy for c in batch], dtype=np.float64),
            accuracy_sd=None
            if measured[start] >= 0
            else np.array([c.accuracy_sd for c in batch], dtype=np.float64),
            accuracy_replicates=np.stack([np.asarray(c.accuracy_replicates) for c in batch])
            if measured[start] >= 0
            else None,
            trials=trials,
            seed=seed,
            level=level,
            quantile=quantile,
            latency=latency,
            first_stream=start,
            threads=threads,
        )
        parts.append((est.mean, est.lo, est.hi, est.pessimistic))
        if progress is not None:
            progress(len(batch))
        start = stop
    mean, lo, hi, pess = (np.concatenate([p[j] for p in parts]) for j in range(4))
    check = pess if risk == "quantile" else mean
    results = []
    for sc in scenarios:
        max_cost, max_latency, min_acc = sc.limits(mean)
        choice = plan_rules(
            mean[:, 2],
            mean[:, 0],
            mean[:, 1],
            max_cost=max_cost,
            max_latency=max_latency,
            min_accuracy=min_acc,
            check_accuracy=check[:, 2],
            check_cost=check[:, 0],
            check_latency=check[:, 1],
        )
        results.append(
            ScenarioResult(
                sc,
                max_cost,
                max_latency,
                min_acc,
                tuple(int(i) for i in choice.feasible),
                tuple(int(i) for i in choice.front),
                dict(choice.picks),
            )
        )
    return Plan(
        tuple(candidates),
        mean,
        lo,
        hi,
        pess,
        tuple(results),
        trials,
        seed,
        level,
        quantile,
        risk,
        latency,
        source,
    )


# ---- measured curves from an outcome table -------------------------------------------------


# The configuration, the measured candidates and the plan-seeded policy live in plan_config.py,
# plan_curves.py and plan_seed.py. Their names resolve from here on first use (PEP 562), so that
# ``import uniscale`` (which imports `plan` from this module) loads none of them.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("PlanConfig", "_num", "_pair", "_PLAN_KEYS", "_MODEL_KEYS", "_SCENARIO_KEYS"),
        "uniscale.plan_config",
    ),
    **dict.fromkeys(("_check_keys", "_ks", "parse_config", "load_config"), "uniscale.plan_config"),
    **dict.fromkeys(
        ("bootstrap_means", "clipped_normal_mean", "matched_normal", "_per_model_calls"),
        "uniscale.plan_curves",
    ),
    **dict.fromkeys(
        ("_whole_calls", "_call_prices", "candidates_from_table", "candidates_from_policy"),
        "uniscale.plan_curves",
    ),
    **dict.fromkeys(
        ("plan_actions", "seed_with_plan", "policy_from_plan", "write_json"), "uniscale.plan_seed"
    ),
}

if TYPE_CHECKING:
    from uniscale.plan_config import _MODEL_KEYS as _MODEL_KEYS
    from uniscale.plan_config import _PLAN_KEYS as _PLAN_KEYS
    from uniscale.plan_config import _SCENARIO_KEYS as _SCENARIO_KEYS
    from uniscale.plan_config import PlanConfig as PlanConfig
    from uniscale.plan_config import _check_keys as _check_keys
    from uniscale.plan_config import _ks as _ks
    from uniscale.plan_config import _num as _num
    from uniscale.plan_config import _pair as _pair
    from uniscale.plan_config import load_config as load_config
    from uniscale.plan_config import parse_config as parse_config
    from uniscale.plan_curves import _call_prices as _call_prices
    from uniscale.plan_curves import _per_model_calls as _per_model_calls
    from uniscale.plan_curves import _whole_calls as _whole_calls
    from uniscale.plan_curves import bootstrap_means as bootstrap_means
    from uniscale.plan_curves import candidates_from_policy as candidates_from_policy
    from uniscale.plan_curves import candidates_from_table as candidates_from_table
    from uniscale.plan_curves import clipped_normal_mean as clipped_normal_mean
    from uniscale.plan_curves import matched_normal as matched_normal
    from uniscale.plan_seed import plan_actions as plan_actions
    from uniscale.plan_seed import policy_from_plan as policy_from_plan
    from uniscale.plan_seed import seed_with_plan as seed_with_plan
    from uniscale.plan_seed import write_json as write_json


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
