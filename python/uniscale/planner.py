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

import json
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from uniscale._core import ConfigError, plan_rules, simulate_plan

if TYPE_CHECKING:
    from uniscale.outcomes import OutcomeTable
    from uniscale.policy import Policy
    from uniscale.space import Action, ModelSpec

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


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """A plan's configuration (a TOML file: see ``uniscale/data/plan_paper.toml``)."""

    candidates: tuple[Candidate, ...]
    scenarios: tuple[Scenario, ...]
    trials: int = 1000
    seed: int = 0
    level: float = 0.95
    quantile: float = 0.9
    risk: Risk = "mean"
    latency: LatencyModel = "rounds"
    strategies: tuple[str, ...] = ()
    bootstrap: int = 500


def _num(d: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    v = d.get(key, default)
    if v is None:
        raise ConfigError(f"{where}: missing key {key!r}")
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{where}: {key} must be a finite number, got {v!r}")
    return float(v)


def _pair(
    d: Mapping[str, Any], key: str, where: str, default: tuple[float, float]
) -> tuple[float, float]:
    v = d.get(key, list(default))
    if not (
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
    ):
        raise ConfigError(f"{where}: {key} must be [mean, sd], got {v!r}")
    return float(v[0]), float(v[1])


_PLAN_KEYS = {
    "trials",
    "seed",
    "level",
    "quantile",
    "risk",
    "latency",
    "k",
    "parallelism",
    "strategies",
    "bootstrap",
}
_MODEL_KEYS = {
    "name",
    "price_in_per_mtok",
    "price_out_per_mtok",
    "latency_in_s_per_token",
    "latency_out_s_per_token",
    "input_tokens",
    "output_tokens",
    "accuracy",
    "parallelism",
    "k",
}
_SCENARIO_KEYS = {
    "name",
    "max_cost_usd",
    "max_latency_s",
    "min_accuracy",
    "max_cost_share",
    "max_latency_share",
    "min_accuracy_gap",
    "description",
}


def _check_keys(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _ks(v: Any, where: str) -> tuple[int, ...]:
    """``k`` is a list of ints, or a table {start, stop, step} (inclusive stop)."""
    if isinstance(v, dict):
        _check_keys(v, {"start", "stop", "step"}, f"{where}.k")
        try:
            ks = tuple(range(int(v["start"]), int(v["stop"]) + 1, int(v.get("step", 1))))
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{where}.k: needs integer start, stop (and step): {exc}") from None
    elif isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        ks = tuple(v)
    else:
        raise ConfigError(f"{where}: k must be a list of ints or {{start, stop, step}}")
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"{where}: k values must be >= 1 and not empty, got {list(ks)}")
    return ks


def parse_config(data: Mapping[str, Any], where: str = "config") -> PlanConfig:
    """Validates a parsed TOML document; every error names the bad key."""
    _check_keys(data, {"plan", "model", "scenario"}, where)
    p = data.get("plan", {})
    if not isinstance(p, dict):
        raise ConfigError(f"{where}: [plan] must be a table")
    _check_keys(p, _PLAN_KEYS, f"{where}: [plan]")
    risk = p.get("risk", "mean")
    if risk not in ("mean", "quantile"):
        raise ConfigError(f"{where}: [plan] risk must be 'mean' or 'quantile', got {risk!r}")
    latency = p.get("latency", "rounds")
    if latency not in ("rounds", "paper_mean"):
        raise ConfigError(f"{where}: [plan] latency must be 'rounds' or 'paper_mean'")
    trials = p.get("trials", 1000)
    bootstrap = p.get("bootstrap", 500)
    seed = p.get("seed", 0)
    for key, v in (("trials", trials), ("bootstrap", bootstrap), ("seed", seed)):
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "seed" else 1):
            raise ConfigError(f"{where}: [plan] {key} must be a non-negative int, got {v!r}")
    default_k = _ks(p.get("k", [1]), f"{where}: [plan]")
    default_par = p.get("parallelism", 1)
    strategies = p.get("strategies", [])
    if not isinstance(strategies, list) or not all(isinstance(s, str) for s in strategies):
        raise ConfigError(f"{where}: [plan] strategies must be a list of strategy names")
    candidates: list[Candidate] = []
    models = data.get("model", [])
    if not isinstance(models, list):
        raise ConfigError(f"{where}: [[model]] must be an array of tables")
    for j, m in enumerate(models):
        w = f"{where}: model[{j}]"
        if not isinstance(m, dict):
            raise ConfigError(f"{w} must be a table")
        _check_keys(m, _MODEL_KEYS, w)
        name = m.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{w}: name must be a non-empty string")
        w = f"{where}: model {name!r}"
        call = CallModel(
            _num(m, "price_in_per_mtok", w),
            _num(m, "price_out_per_mtok", w),
            _num(m, "latency_in_s_per_token", w),
            _num(m, "latency_out_s_per_token", w),
            _pair(m, "input_tokens", w, (1024.0, 64.0)),
            _pair(m, "output_tokens", w, (2048.0, 128.0)),
        )
        if min(call.row()) < 0:
            raise ConfigError(f"{w}: prices, latencies and token counts must be >= 0")
        acc = _pair(m, "accuracy", w, (math.nan, math.nan))
        if not (0 <= acc[0] <= 1 and acc[1] >= 0):
            raise ConfigError(f"{w}: accuracy must be [mean in [0, 1], sd >= 0], got {list(acc)}")
        par = m.get("parallelism", default_par)
        if not isinstance(par, int) or isinstance(par, bool) or par < 1:
            raise ConfigError(f"{w}: parallelism must be an int >= 1, got {par!r}")
        for k in _ks(m["k"], w) if "k" in m else default_k:
            candidates.append(
                Candidate(name, "best_of_k", k, call, par, acc[0], accuracy_sd=acc[1])
            )
    scenarios = []
    raw = data.get("scenario", [])
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: needs at least one [[scenario]]")
    for j, s in enumerate(raw):
        w = f"{where}: scenario[{j}]"
        if not isinstance(s, dict):
            raise ConfigError(f"{w} must be a table")
        _check_keys(s, _SCENARIO_KEYS, w)
        if not isinstance(s.get("name"), str):
            raise ConfigError(f"{w}: name must be a string")
        try:
            scenarios.append(Scenario(**s))
        except TypeError as exc:
            raise ConfigError(f"{w}: {exc}") from None
    return PlanConfig(
        tuple(candidates),
        tuple(scenarios),
        trials=trials,
        seed=seed,
        level=_num(p, "level", f"{where}: [plan]", 0.95),
        quantile=_num(p, "quantile", f"{where}: [plan]", 0.9),
        risk=risk,
        latency=latency,
        strategies=tuple(strategies),
        bootstrap=bootstrap,
    )


def load_config(path: str | Path) -> PlanConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(data, str(p))


# ---- measured curves from an outcome table -------------------------------------------------


def bootstrap_means(values: F64, replicates: int, seed: int, chunk: int = 64) -> F64:
    """(K, B) bootstrap replicates of the column means of ``values`` (T, K): the same resampled
    rows for every column (paired), drawn as multinomial counts so memory is O(chunk x T)."""
    t = values.shape[0]
    rng = np.random.default_rng([seed, 0x706C616E])  # "plan"
    out = np.empty((values.shape[1], replicates))
    done = 0
    while done < replicates:
        b = min(chunk, replicates - done)
        counts = rng.multinomial(t, np.full(t, 1.0 / t), size=b).astype(np.float64)
        out[:, done : done + b] = (counts @ values).T / t
        done += b
    return out


def clipped_normal_mean(mu: float, sd: float, floor: float = 1.0) -> float:
    """E[max(X, floor)] for X ~ N(mu, sd^2)."""
    if sd <= 0:
        return max(mu, floor)
    a = (floor - mu) / sd
    cdf = 0.5 * (1.0 + math.erf(a / math.sqrt(2.0)))
    return floor * cdf + mu * (1.0 - cdf) + sd * math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)


def matched_normal(mean: float, sd: float) -> tuple[float, float]:
    """(mu, sd) of a normal whose clipping at one token has expectation ``mean``: token counts
    with a spread near their mean (short answers next to long ones) would otherwise come out
    of the clip up to ~20% longer on average than measured."""
    if sd <= 0 or mean <= 1:
        return max(mean, 1.0), max(sd, 0.0)
    lo, hi = mean - 10 * sd - 1, mean
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if clipped_normal_mean(mid, sd) < mean:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi), sd


def _per_model_calls(
    table: OutcomeTable, models: Mapping[str, ModelSpec]
) -> dict[tuple[str, bool], CallModel]:
    """Per (model, sampled?): token distributions and per-token latencies from the table.

    Input tokens: mean and sd over requests. Output tokens of a greedy call (``single``):
    mean and sd over requests of the one-sample action. Sampled calls (every other strategy)
    are as long as the recorded samples: their mean is output tokens per sample used over the
    model's sampled actions, with the greedy coefficient of variation (the table keeps only
    per-run totals of samples). Both as normals moment-matched to the clip at one token
    (`matched_normal`). Per-token latencies: non-negative least squares of the one-sample
    latency on (input, output) tokens (zero when the table recorded no latency, as for
    MMLU-Pro)."""
    calls: dict[tuple[str, bool], CallModel] = {}
    lin = np.asarray(table.input_tokens, dtype=np.float64)
    in_tokens = matched_normal(float(lin.mean()), float(lin.std()))
    for name in dict.fromkeys(a.model for a in table.actions):
        cols = [i for i, a in enumerate(table.actions) if a.model == name]
        col = min(cols, key=lambda i: (table.actions[i].n, table.actions[i].strategy != "single"))
        used = np.maximum(table.samples_used[:, col], 1.0)
        lout = table.output_tokens[:, col] / used
        lat = table.latency_s[:, col] / np.ceil(used / max(models[name].parallelism, 1))
        t_in = t_out = 0.0
        if np.any(lat > 0):
            design = np.column_stack([lin, lout])
            coef, *_ = np.linalg.lstsq(design, lat, rcond=None)
            t_in, t_out = (float(max(c, 0.0)) for c in coef)
            if coef.min() < 0:  # one coefficient negative: refit the other alone
                j = int(np.argmax(coef))
                x = design[:, j]
                v = max(float(x @ lat) / max(float(x @ x), 1e-300), 0.0)
                t_in, t_out = (v, 0.0) if j == 0 else (0.0, v)
        spec = models[name]
        greedy_mean, greedy_sd = float(lout.mean()), float(lout.std())
        sampled = [i for i in cols if table.actions[i].strategy != "single"]
        sampled_mean = (
            float(table.output_tokens[:, sampled].sum() / table.samples_used[:, sampled].sum())
            if sampled
            else greedy_mean
        )
        cv = greedy_sd / greedy_mean if greedy_mean > 0 else 0.0
        for is_sampled, mean_out in ((False, greedy_mean), (True, sampled_mean)):
            calls[(name, is_sampled)] = CallModel(
                spec.price_in_per_mtok,
                spec.price_out_per_mtok,
                t_in,
                t_out,
                in_tokens,
                matched_normal(mean_out, cv * mean_out),
            )
    return calls


def _whole_calls(samples: float) -> tuple[int, float]:
    """Whole calls for the simulation of ``samples`` expected samples, and the share of the
    price each is charged so that the expected cost stays that of ``samples`` (an adaptive
    action expected to use 3.4 samples runs 4 calls at 0.85 of the price)."""
    k = max(1, math.ceil(samples - 1e-9))
    return k, min(samples / k, 1.0)


def _call_prices(
    price_in: float, price_out: float, calls: int, share: float, bills_prompt_once: bool
) -> tuple[float, float]:
    """(input, output) price per call of a run of ``calls`` calls charged ``share`` each; a
    model that bills the prompt once for the run is charged ``1 / calls`` of the input price
    per call (the same expectation)."""
    if bills_prompt_once and calls > 1:
        return price_in / calls, price_out * share
    return price_in * share, price_out * share


def candidates_from_table(
    table: OutcomeTable,
    models: Mapping[str, ModelSpec],
    *,
    strategies: Sequence[str] = (),
    bootstrap: int = 500,
    seed: int = 0,
) -> list[Candidate]:
    """One candidate per action of ``table`` (restricted to ``strategies`` when given):
    accuracy measured (mean quality over the requests, paired bootstrap replicates), cost and
    latency simulated from per-call models estimated from the table (`_per_model_calls`).

    A model that bills the prompt once for n samples is charged ``1/k`` of the input price per
    call (the same expectation). An ``adaptive_consistency`` action is planned at the samples
    it was measured to use: its mean samples used rounded up to whole calls, each priced at
    ``mean / calls`` of the model's price, so the expected cost is the measured one (latency
    counts the rounded-up calls, a slight overestimate)."""
    if bootstrap < 1:
        raise ConfigError(f"bootstrap must be >= 1, got {bootstrap}")
    cols = [i for i, a in enumerate(table.actions) if not strategies or a.strategy in strategies]
    if not cols:
        raise ConfigError(f"no action of the table has a strategy in {list(strategies)}")
    calls = _per_model_calls(table, models)
    q = np.asarray(table.quality[:, cols], dtype=np.float64)
    reps = bootstrap_means(q, bootstrap, seed)
    est = q.mean(axis=0)
    out = []
    for j, i in enumerate(cols):
        a = table.actions[i]
        spec = models[a.model]
        call = calls[(a.model, a.strategy != "single")]
        n_calls, share = a.n, 1.0
        if a.strategy == "adaptive_consistency":
            used = float(np.mean(table.samples_used[:, i]))
            if math.isfinite(used) and used > 0:
                n_calls, share = _whole_calls(min(used, a.n))
        price_in, price_out = _call_prices(
            call.price_in_per_mtok, call.price_out_per_mtok, n_calls, share, spec.bills_prompt_once
        )
        call = replace(call, price_in_per_mtok=price_in, price_out_per_mtok=price_out)
        out.append(
            Candidate(
                a.model,
                a.strategy,
                a.n,
                call,
                spec.parallelism,
                float(est[j]),
                accuracy_replicates=reps[j],
                calls=None if n_calls == a.n else n_calls,
            )
        )
    return out


def candidates_from_policy(
    policy: Policy,
    x: NDArray[np.float64] | Sequence[float],
    input_tokens: float,
    *,
    alpha: float = 0.3,
    quality_sd: float = 0.5,
    input_tokens_sd: float = 0.0,
    output_cv: float = 0.5,
    replicates: int = 200,
) -> list[Candidate]:
    """One candidate per action of a live `Policy`, for a request with features ``x`` and
    ``input_tokens`` prompt tokens: what the policy currently believes.

    Accuracy: the learner's quality mean for ``x`` (clipped to [0, 1]), with "replicates"
    at the deterministic normal quantiles of its posterior spread, ``quality_sd * bonus /
    alpha`` (the bonus is ``alpha * sqrt(x' A^-1 x)``; pass the policy's ``alpha``;
    ``quality_sd = 0.5`` is the noise scale of a quality in [0, 1], as in
    `Policy.set_baseline`). Cost and latency: the cost model's `Policy.predict` at this prompt
    size -- output tokens per sample (spread ``output_cv`` times the mean), the expected
    samples used rounded up to whole calls with prices scaled so that the expected cost is the
    prediction's (adaptive actions are planned at what they were seen to use), the model's
    parallelism, and a per-token latency that reproduces the predicted seconds. The Monte
    Carlo's means then match the cost model's predictions (latency a little above, from
    waiting for the slowest call of a round)."""
    from statistics import NormalDist

    if not (alpha > 0 and quality_sd >= 0 and output_cv >= 0 and replicates >= 1):
        raise ConfigError("alpha must be > 0, quality_sd and output_cv >= 0, replicates >= 1")
    if len(np.asarray(x)) != policy.dim:
        raise ConfigError(f"x has {len(np.asarray(x))} features, the policy {policy.dim}")
    pred = policy.predict(float(input_tokens))
    mean, bonus = policy.quality_scores(np.asarray(x, dtype=np.float64))
    z = np.array([NormalDist().inv_cdf((j + 0.5) / replicates) for j in range(replicates)])
    out = []
    for i, a in enumerate(policy.actions):
        spec = policy.models[a.model]
        samples = max(float(pred["samples"][i]), 1.0)
        k, share = _whole_calls(samples)
        per_sample = max(float(pred["output_tokens_per_sample"][i]), 0.0)
        rounds = math.ceil(k / spec.parallelism)
        per_round_s = max(float(pred["latency_s"][i]), 0.0) / rounds
        t_in, t_out = 0.0, 0.0
        if per_sample > 0:
            t_out = per_round_s / per_sample
        elif input_tokens > 0:
            t_in = per_round_s / input_tokens
        call = CallModel(
            *_call_prices(
                spec.price_in_per_mtok, spec.price_out_per_mtok, k, share, spec.bills_prompt_once
            ),
            t_in,
            t_out,
            matched_normal(float(input_tokens), input_tokens_sd),
            matched_normal(per_sample, output_cv * per_sample),
        )
        q = float(np.clip(mean[i], 0.0, 1.0))
        spread = quality_sd * float(bonus[i]) / alpha
        reps = np.clip(mean[i] + spread * z, 0.0, 1.0)
        out.append(
            Candidate(
                a.model,
                a.strategy,
                a.n,
                call,
                spec.parallelism,
                q,
                accuracy_replicates=reps,
                calls=k,
            )
        )
    return out


# ---- the policy seeded by a plan -----------------------------------------------------------


def plan_actions(
    plan: Plan, scenario: str, keep: Literal["front", "picks"] = "front"
) -> list[Action]:
    """The actions a plan keeps for ``scenario``: its Pareto front, or only the rules'
    picks. Candidates of the paper's best-of-k model map to ``best_of_n``."""
    from uniscale.space import Action

    chosen = plan.front_candidates(scenario) if keep == "front" else plan.picked(scenario)
    if not chosen:
        raise ConfigError(f"scenario {scenario!r}: nothing feasible, so nothing to keep")
    out = []
    for c in chosen:
        strategy = "best_of_n" if c.strategy == "best_of_k" else c.strategy
        if strategy == "best_of_n" and c.k == 1:
            strategy = "single"
        a = Action(c.model, strategy, c.k)  # type: ignore[arg-type]
        if a not in out:
            out.append(a)
    return out


def seed_with_plan(
    policy: Policy,
    plan_: Plan,
    *,
    weight: float = 1.0,
    x: NDArray[np.float64] | None = None,
    input_tokens: float = 0.0,
) -> int:
    """Pre-weights ``policy`` with the plan: every candidate that is an action of the policy
    is observed once (`Policy.observe`, weight ``weight``) with its planned accuracy as the
    quality and its expected cost and latency, at request features ``x`` (default zeros:
    with the shared learner that informs each action's main effect only, not how it varies
    with the request). Returns the number of actions seeded."""
    from uniscale.space import Action

    actions = set(policy.actions)
    x0 = np.zeros(policy.dim) if x is None else np.asarray(x, dtype=np.float64)
    seeded = 0
    for i, c in enumerate(plan_.candidates):
        strategy = "best_of_n" if c.strategy == "best_of_k" else c.strategy
        a = Action(c.model, strategy, c.k)  # type: ignore[arg-type]
        if a in actions:
            policy.observe(
                x0,
                a,
                float(np.clip(plan_.mean[i, 2], 0.0, 1.0)),
                input_tokens,
                cost_usd=float(plan_.mean[i, 0]),
                latency_s=float(plan_.mean[i, 1]),
                weight=weight,
            )
            seeded += 1
    return seeded


def policy_from_plan(
    plan_: Plan,
    scenario: str,
    models: Mapping[str, ModelSpec] | Sequence[ModelSpec],
    dim: int,
    *,
    mode: Literal["restrict", "prior"] = "restrict",
    keep: Literal["front", "picks"] = "front",
    actions: Sequence[Action] | None = None,
    prior_weight: float = 1.0,
    **policy_kwargs: Any,
) -> Policy:
    """`Policy.from_plan`: see there."""
    from uniscale.policy import Policy
    from uniscale.space import ActionSpace

    specs = {m.name: m for m in models} if not isinstance(models, Mapping) else dict(models)
    if mode == "restrict":
        acts = plan_actions(plan_, scenario, keep)
    elif mode == "prior":
        if actions is None:
            raise ConfigError("mode='prior' needs the full action space in actions=")
        acts = list(actions)
    else:
        raise ConfigError(f"mode must be 'restrict' or 'prior', got {mode!r}")
    missing = sorted({a.model for a in acts} - set(specs))
    if missing:
        raise ConfigError(f"no ModelSpec for planned model(s) {missing}")
    names = list(dict.fromkeys(a.model for a in acts))
    policy = Policy(ActionSpace([specs[n] for n in names], acts), dim, **policy_kwargs)
    if mode == "prior":
        seed_with_plan(policy, plan_, weight=prior_weight)
    return policy


def write_json(plan_: Plan, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(plan_.to_json(), indent=2) + "\n", encoding="utf-8")
    return p
