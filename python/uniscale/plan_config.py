"""Plan configuration: the TOML of `uniscale.planner` (models, candidates and scenarios), validated
at load with messages that name the bad key. Loaded on first use of its names from
`uniscale.planner`, so ``import uniscale`` does not load it."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniscale._core import ConfigError
from uniscale.planner import CallModel, Candidate, LatencyModel, Risk, Scenario


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


def _tables(
    items: list[Any], where: str, allowed: set[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The entries of an array of tables, each with where it is (``where[j]``), checked to be
    a table with only ``allowed`` keys."""
    for j, t in enumerate(items):
        w = f"{where}[{j}]"
        if not isinstance(t, dict):
            raise ConfigError(f"{w} must be a table")
        _check_keys(t, allowed, w)
        yield w, t


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
    for w, m in _tables(models, f"{where}: model", _MODEL_KEYS):
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
    for w, s in _tables(raw, f"{where}: scenario", _SCENARIO_KEYS):
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
