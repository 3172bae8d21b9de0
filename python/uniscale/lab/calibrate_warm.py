"""Warm start from a calibration table: the per-action summary and the capped prior
(`warm_start`). See `uniscale.lab.calibrate` for why the prior is capped per model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from uniscale._core import ConfigError
from uniscale.lab.calibrate_collect import DEFAULT_PSEUDO_OBSERVATIONS, F64
from uniscale.outcomes import OutcomeTable
from uniscale.policy import Policy
from uniscale.space import Action


@dataclass(frozen=True, slots=True)
class ActionStats:
    """One action's mean outcome over the calibration items."""

    action: Action
    items: int
    quality: float
    cost_usd: float
    latency_s: float
    output_tokens: float
    samples_used: float


def action_stats(table: OutcomeTable) -> list[ActionStats]:
    """Mean outcome of every action of ``table`` over its items, in the table's action order."""
    if table.n_requests < 1:
        raise ConfigError("the calibration table has no items")
    return [
        ActionStats(
            action=a,
            items=table.n_requests,
            quality=float(table.quality[:, j].mean()),
            cost_usd=float(table.cost_usd[:, j].mean()),
            latency_s=float(table.latency_s[:, j].mean()),
            output_tokens=float(table.output_tokens[:, j].mean()),
            samples_used=float(table.samples_used[:, j].mean()),
        )
        for j, a in enumerate(table.actions)
    ]


def format_stats(stats: Sequence[ActionStats]) -> str:
    """A fixed-width table: one line per action, best quality first within each model."""
    head = f"{'action':<36} {'items':>5} {'quality':>7} {'$/request':>10} {'latency s':>9} "
    head += f"{'out tok':>8} {'samples':>7}"
    lines = [head, "-" * len(head)]
    for s in stats:
        lines.append(
            f"{s.action!s:<36} {s.items:>5} {s.quality:>7.3f} {s.cost_usd:>10.3e} "
            f"{s.latency_s:>9.2f} {s.output_tokens:>8.1f} {s.samples_used:>7.2f}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Warm start


@dataclass(frozen=True, slots=True)
class PriorObservation:
    """What `warm_start` observed for one action, and with which weight (pseudo-observations:
    the model's ``pseudo_observations`` shared by its actions)."""

    action: Action
    weight: float
    quality: float
    cost_usd: float
    latency_s: float
    output_tokens: float
    samples_used: float


@dataclass(frozen=True, slots=True)
class WarmStartReport:
    """What a warm start transferred: per action its mean outcome and the number of
    pseudo-observations (the same for every action, whatever ``items`` is), at the mean
    request ``x`` / ``input_tokens``; ``cold`` are the policy's actions the table lacks."""

    items: int
    pseudo_observations: int
    x: F64
    input_tokens: float
    transferred: list[PriorObservation]
    cold: list[Action]


def warm_start(
    policy: Policy,
    table: OutcomeTable,
    pseudo_observations: int = DEFAULT_PSEUDO_OBSERVATIONS,
) -> WarmStartReport:
    """Give ``policy`` a prior from a calibration ``table``: for every action of the policy the
    table prices, its mean outcome over the table's items, observed `Policy.observe`
    ``pseudo_observations`` times at the mean request. The prior's strength does not grow
    with the number of items (module docstring: what is transferred, and why it cannot lock
    the policy in more than that many real outcomes would). ``pseudo_observations = 0`` is a
    no-op. Raises `ConfigError` for a negative count, an empty table or a feature dimension
    that is not the policy's."""
    if isinstance(pseudo_observations, bool) or not isinstance(pseudo_observations, int):
        raise ConfigError(f"pseudo_observations must be an int, got {pseudo_observations!r}")
    if pseudo_observations < 0:
        raise ConfigError(f"pseudo_observations must be >= 0, got {pseudo_observations}")
    if table.n_requests < 1:
        raise ConfigError("the calibration table has no items")
    if table.X.shape[1] != policy.dim:
        raise ConfigError(
            f"the calibration table has {table.X.shape[1]} request features but the policy "
            f"has dim={policy.dim}; featurize the calibration items as the policy's requests"
        )
    x = np.ascontiguousarray(table.X.mean(axis=0), dtype=np.float64)
    input_tokens = float(table.input_tokens.mean())
    by_action = {s.action: s for s in action_stats(table)}
    plan = [by_action[a] for a in policy.actions if a in by_action]
    cold = [a for a in policy.actions if a not in by_action]
    per_model: dict[str, int] = {}
    for s in plan:
        per_model[s.action.model] = per_model.get(s.action.model, 0) + 1
    if pseudo_observations > 0:
        for s in plan:
            policy.observe(
                x,
                s.action,
                s.quality,
                input_tokens,
                cost_usd=s.cost_usd,
                latency_s=s.latency_s,
                output_tokens=s.output_tokens,
                samples_used=s.samples_used,
                weight=pseudo_observations / per_model[s.action.model],
            )
    return WarmStartReport(
        items=table.n_requests,
        pseudo_observations=pseudo_observations,
        x=x,
        input_tokens=input_tokens,
        transferred=[
            PriorObservation(
                action=s.action,
                weight=(
                    pseudo_observations / per_model[s.action.model] if pseudo_observations else 0.0
                ),
                quality=s.quality,
                cost_usd=s.cost_usd,
                latency_s=s.latency_s,
                output_tokens=s.output_tokens,
                samples_used=s.samples_used,
            )
            for s in plan
        ],
        cold=cold,
    )
