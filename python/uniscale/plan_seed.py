"""Seeding a policy with a `uniscale.planner.Plan`: the actions it keeps, a prior from its
estimates (both used by `Policy.from_plan`), and the plan's JSON file. Loaded on first use of
its names from `uniscale.planner`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from uniscale._core import ConfigError
from uniscale.planner import Plan
from uniscale.policy import Policy

if TYPE_CHECKING:
    from uniscale.space import Action


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
        a = Action(c.model, strategy, c.k)
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
        a = Action(c.model, strategy, c.k)
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


# `Policy.from_plan` under the name `uniscale.planner` exports.
policy_from_plan = Policy.from_plan


def write_json(plan_: Plan, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(plan_.to_json(), indent=2) + "\n", encoding="utf-8")
    return p
