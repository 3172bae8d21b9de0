"""Online learning evaluated offline: stream an outcome table through policies as if live.

Every policy sees the same requests in the same order; each decision is answered from the
table (what that action produced on that request, `TableExecutor`), and the policy is updated
with it through `uniscale.engine.Engine`, the per-request loop the live `Router` runs. Rewards
are computed with one set of scales for everyone, so numbers are comparable across policies.

Baselines: ``random`` (uniform over available actions), ``best_fixed`` (the single action with
the highest total reward in hindsight, among actions available all along), ``best_per_kind``
(the same per task kind, when the table has several), ``best_per_kind_xfit`` (the same with
each kind's action chosen on other requests, by cross-fitting: what routing on the request's
type can really gain), ``best_per_kind_xfit_n1`` (the same among one-sample actions: its gap
to the previous one is what test-time scaling adds out of sample), ``oracle`` (the best action
per request). Learners: ``uniscale`` (full model x strategy x n space), ``routing_only`` (each
model with one sample), ``tts_only`` (the best single model in hindsight, any strategy/n).
Scenarios insert events mid-stream: a model retired, a model added, the reward preset
switched. With ``side_observations`` every learner also learns the sub-actions each sampled
run contains (`uniscale.outcomes.sub_actions`), each with weight
`uniscale.outcomes.SIDE_OBSERVATION_WEIGHT`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from uniscale.engine import Engine, Realised, SubRun

# Rewards, results, baselines and promises live in replay_baselines (re-exported here).
from uniscale.lab.replay_baselines import F64 as F64
from uniscale.lab.replay_baselines import I64 as I64
from uniscale.lab.replay_baselines import RunResult as RunResult
from uniscale.lab.replay_baselines import Scales as Scales
from uniscale.lab.replay_baselines import _always_available as _always_available
from uniscale.lab.replay_baselines import _fixed_run as _fixed_run
from uniscale.lab.replay_baselines import _result as _result
from uniscale.lab.replay_baselines import best_fixed_run as best_fixed_run
from uniscale.lab.replay_baselines import best_per_kind_run as best_per_kind_run
from uniscale.lab.replay_baselines import best_per_kind_xfit_run as best_per_kind_xfit_run
from uniscale.lab.replay_baselines import conservative_margin as conservative_margin
from uniscale.lab.replay_baselines import default_reference as default_reference
from uniscale.lab.replay_baselines import floor_margin as floor_margin
from uniscale.lab.replay_baselines import floor_vs_reference as floor_vs_reference
from uniscale.lab.replay_baselines import oracle_run as oracle_run
from uniscale.lab.replay_baselines import random_run as random_run
from uniscale.lab.replay_baselines import reward_matrix as reward_matrix
from uniscale.lab.replay_baselines import xfit_folds as xfit_folds
from uniscale.outcomes import SIDE_OBSERVATION_WEIGHT, OutcomeTable
from uniscale.policy import Policy, QualityFloor, RewardWeights, resolve_reward
from uniscale.space import Action, ActionSpace, ModelSpec

logger = logging.getLogger(__name__)

EventKind = Literal["retire_model", "add_model", "set_reward"]


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happens before request ``t`` is served."""

    t: int
    kind: EventKind
    arg: str


def schedule(
    table: OutcomeTable,
    events: Sequence[Event],
    reward: str | RewardWeights | tuple[float, float, float],
    initial_models: Iterable[str] | None = None,
) -> tuple[NDArray[np.bool_], F64]:
    """Per-step availability (T, K) and reward weights (T, 3) implied by the events."""
    t_n, k = table.quality.shape
    models = {a.model for a in table.actions}
    active = set(models if initial_models is None else initial_models)
    w = resolve_reward(reward)
    avail = np.zeros((t_n, k), dtype=bool)
    weights = np.zeros((t_n, 3))
    ev = sorted(events, key=lambda e: e.t)
    j = 0
    for t in range(t_n):
        while j < len(ev) and ev[j].t <= t:
            e = ev[j]
            if e.kind == "retire_model":
                active.discard(e.arg)
            elif e.kind == "add_model":
                active.add(e.arg)
            elif e.kind == "set_reward":
                w = resolve_reward(e.arg)
            j += 1
        avail[t] = [a.model in active for a in table.actions]
        weights[t] = (w.quality, w.cost, w.latency)
    return avail, weights


class TableExecutor:
    """Answers a decision from an outcome table: what the chosen column produced on request
    ``t``, as the `uniscale.engine.Realised` the engine records, with the sub-runs the run
    contains (the table builds every sampled action of a model from prefixes of one sample
    order, so those are the outcomes the executed run's own samples imply)."""

    __slots__ = ("_col_of", "table")

    def __init__(self, table: OutcomeTable) -> None:
        self.table = table
        self._col_of = {a: i for i, a in enumerate(table.actions)}

    def run(self, t: int, col: int) -> Realised:
        r = self._outcome(t, col)
        return Realised(
            r.quality,
            r.cost_usd,
            r.latency_s,
            r.output_tokens,
            r.samples_used,
            sub_runs=_TableSubRuns(self, t, r.samples_used),
        )

    def sub_run(self, t: int, action: Action) -> SubRun | None:
        col = self._col_of.get(action)
        return None if col is None else self._outcome(t, col)

    def _outcome(self, t: int, col: int) -> SubRun:
        return SubRun(**self.table.feedback(t, col), input_tokens=float(self.table.input_tokens[t]))


@dataclass(frozen=True, slots=True)
class _TableSubRuns:
    executor: TableExecutor
    t: int
    drawn: float

    def result(self, action: Action) -> SubRun | None:
        return self.executor.sub_run(self.t, action)


@dataclass(frozen=True, slots=True)
class LearnerSpec:
    """How to build one learning policy for a replay. ``prepare``, when set, is called on the
    fresh policy before the first request (e.g. `uniscale.lab.calibrate.warm_start`)."""

    name: str
    actions: Sequence[Action]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    prepare: Callable[[Policy], object] | None = None


def run_learner(
    spec: LearnerSpec,
    table: OutcomeTable,
    models: Mapping[str, ModelSpec],
    r: F64,
    oracle: F64,
    events: Sequence[Event],
    scales: Scales,
    reward: str | RewardWeights | tuple[float, float, float],
    *,
    initial_models: Iterable[str] | None = None,
    progress: Callable[[int], object] | None = None,
    side_observations: bool = False,
    side_weight: float = SIDE_OBSERVATION_WEIGHT,
    agreement_weight: float = 0.0,
) -> RunResult:
    """Streams the table through a fresh `Policy` over ``spec.actions``.

    With ``agreement_weight`` w > 0 the policy learns from ``(1 - w) * quality + w *
    agreement`` (`OutcomeTable.with_agreement_reward`: the vote's agreement as a dense,
    label-free reward term), while the run is scored on the table's own quality and ``r``.

    With ``side_observations``, after each update the policy also learns
    (`Policy.observe`, weight `uniscale.outcomes.SIDE_OBSERVATION_WEIGHT`) the outcomes of the
    sub-actions the chosen run contained (`uniscale.outcomes.sub_actions`): the table builds
    every sampled action of a model from prefixes of one sample order, so those are the
    outcomes the executed run's own samples imply."""
    col_of = {a: i for i, a in enumerate(table.actions)}
    active = set(initial_models) if initial_models is not None else {a.model for a in spec.actions}
    acts = [a for a in spec.actions if a.model in active]
    space = ActionSpace(
        [models[m] for m in sorted({a.model for a in acts}, key=_model_order(acts))], acts
    )
    pol = Policy(
        space,
        dim=table.X.shape[1],
        reward=reward,
        cost_scale=scales.cost_scale,
        latency_scale=scales.latency_scale,
        **dict(spec.kwargs),
    )
    if spec.prepare is not None:
        spec.prepare(pol)

    def mapping() -> I64:
        return np.array([col_of[a] for a in pol.actions], dtype=np.int64)

    cols = mapping()
    engine = Engine(pol, side_observations=side_observations, side_weight=side_weight, strict=True)
    answer = TableExecutor(
        table if agreement_weight == 0.0 else table.with_agreement_reward(agreement_weight)
    )
    t_n = table.n_requests
    chosen = np.zeros(t_n, dtype=np.int64)
    ev = sorted(events, key=lambda e: e.t)
    j = 0
    fallbacks = 0
    for t in range(t_n):
        while j < len(ev) and ev[j].t <= t:
            e = ev[j]
            j += 1
            if e.kind == "set_reward":
                pol.set_reward(e.arg)
            elif e.kind == "retire_model" and e.arg in pol.models:
                pol.retire_model(e.arg)
            elif e.kind == "add_model" and e.arg not in pol.models:
                new = [a for a in spec.actions if a.model == e.arg]
                if new:
                    pol.add_model(models[e.arg], actions=new)
            cols = mapping()
        choice = engine.decide(table.X[t], input_tokens=float(table.input_tokens[t]), now=float(t))
        c = int(cols[choice.decision.index])
        chosen[t] = c
        fallbacks += int(choice.decision.fallback)
        engine.record(choice, answer.run(t, c), now=float(t))
        if progress is not None:
            progress(1)
    extra: dict[str, Any] = {"fallbacks": fallbacks, "pacing_lambda": pol.pacing_lambda}
    status = pol.conservative_status()
    if status is not None:
        extra["overrides"] = int(status["overrides"])
        extra["non_baseline"] = int(status["non_baseline"])
    return _result(spec.name, table, chosen, r, oracle, **extra)


def _model_order(acts: Sequence[Action]) -> Callable[[str], int]:
    first: dict[str, int] = {}
    for i, a in enumerate(acts):
        first.setdefault(a.model, i)
    return lambda m: first[m]


def standard_learners(
    table: OutcomeTable,
    r: F64,
    avail: NDArray[np.bool_],
    **policy_kwargs: Any,
) -> list[LearnerSpec]:
    """UniScale over the full space, routing-only (n = 1), TTS-only (best model in hindsight)."""
    actions = table.actions
    routing = [a for a in actions if a.strategy == "single"]
    always = avail.all(axis=0)
    totals = np.where(always, r.sum(axis=0), -np.inf)
    per_model: dict[str, float] = {}
    for i, a in enumerate(actions):
        per_model[a.model] = max(per_model.get(a.model, -math.inf), float(totals[i]))
    best_model = max(per_model, key=lambda m: per_model[m])
    tts = [a for a in actions if a.model == best_model]
    return [
        LearnerSpec("uniscale", actions, policy_kwargs),
        LearnerSpec("routing_only", routing, policy_kwargs),
        LearnerSpec(f"tts_only[{best_model}]", tts, policy_kwargs),
    ]


def parse_action(spec: str, actions: Sequence[Action]) -> Action:
    """``MODEL`` (one sample) or ``MODEL/STRATEGY/N``, checked against ``actions``."""
    parts = spec.split("/")
    if len(parts) == 1:
        a = Action(parts[0], "single", 1)
    elif len(parts) == 3:
        try:
            n = int(parts[2])
        except ValueError:
            raise ValueError(f"action {spec!r}: N must be an integer") from None
        a = Action(parts[0], parts[1], n)
    else:
        raise ValueError(f"action {spec!r} must be MODEL or MODEL/STRATEGY/N")
    if a not in actions:
        known = ", ".join(sorted({f"{b.model}/{b.strategy}/{b.n}" for b in actions}))
        raise ValueError(f"action {spec!r} is not in this table; known: {known}")
    return a


def compare(
    table: OutcomeTable,
    models: Mapping[str, ModelSpec],
    *,
    reward: str | RewardWeights | tuple[float, float, float] = "cost_sensitive",
    events: Sequence[Event] = (),
    initial_models: Iterable[str] | None = None,
    learners: Sequence[LearnerSpec] | None = None,
    seed: int = 0,
    scales: Scales | None = None,
    progress: Callable[[int], object] | None = None,
    side_observations: bool = False,
    side_weight: float = SIDE_OBSERVATION_WEIGHT,
    agreement_weight: float = 0.0,
    baseline: Action | None = None,
    conservative_delta: float = 0.05,
    quality_floor: QualityFloor | None = None,
    **policy_kwargs: Any,
) -> list[RunResult]:
    """Every baseline and learner on the same stream (``table`` rows in the given order).

    With ``baseline`` (the action a team serves today) also that action alone (``baseline``)
    and UniScale in conservative mode around it (``uniscale_conservative``, `Policy.set_baseline`
    with ``conservative_delta``); the latter's result carries its margin to the promise
    (`conservative_margin`) in ``extra``. With ``quality_floor`` also its reference alone
    (``reference``) and UniScale in quality-floor mode (``uniscale_floor``), whose ``extra``
    carries `floor_margin`'s minimum and whether the floor held at every request."""
    scales = scales or Scales.from_table(table)
    avail, weights = schedule(table, events, reward, initial_models)
    r = reward_matrix(table, weights, scales)
    orc = oracle_run(table, r, avail)
    results = [
        orc,
        random_run(table, r, avail, orc.reward, seed),
        best_fixed_run(table, r, avail, orc.reward),
    ]
    if len(set(table.kinds)) > 1:
        results.append(best_per_kind_run(table, r, avail, orc.reward))
        results.append(best_per_kind_xfit_run(table, r, avail, orc.reward, seed=seed))
        single = [i for i, a in enumerate(table.actions) if a.n == 1]
        if 0 < len(single) < len(table.actions):
            results.append(
                best_per_kind_xfit_run(
                    table,
                    r,
                    avail,
                    orc.reward,
                    seed=seed,
                    columns=single,
                    name="best_per_kind_xfit_n1",
                )
            )
    specs = list(
        learners if learners is not None else standard_learners(table, r, avail, **policy_kwargs)
    )
    base_col = -1
    if baseline is not None:
        base_col = table.actions.index(baseline)
        results.append(_fixed_run("baseline", table, base_col, r, orc.reward))
        specs.append(
            LearnerSpec(
                "uniscale_conservative",
                table.actions,
                {**policy_kwargs, "baseline": baseline, "conservative_delta": conservative_delta},
            )
        )
    ref_col = -1
    if quality_floor is not None:
        ref = quality_floor.reference
        ref_action = ref if isinstance(ref, Action) else table.actions[int(ref)]
        ref_col = table.actions.index(ref_action)
        results.append(_fixed_run("reference", table, ref_col, r, orc.reward))
        floor = QualityFloor(ref_action, quality_floor.tolerance, quality_floor.confidence)
        specs.append(
            LearnerSpec("uniscale_floor", table.actions, {**policy_kwargs, "quality_floor": floor})
        )
    for spec in specs:
        results.append(
            run_learner(
                spec,
                table,
                models,
                r,
                orc.reward,
                events,
                scales,
                reward,
                initial_models=initial_models,
                progress=progress,
                side_observations=side_observations,
                side_weight=side_weight,
                agreement_weight=agreement_weight,
            )
        )
        if spec.name == "uniscale_conservative":
            run = results[-1]
            margin = conservative_margin(run.reward, r[:, base_col], conservative_delta)
            run.extra.update(
                delta=conservative_delta,
                baseline=str(baseline),
                promise_min_margin=float(margin.min()),
                promise_held=bool((margin >= 0).all()),
            )
        if spec.name == "uniscale_floor" and quality_floor is not None:
            run = results[-1]
            margin = floor_margin(run.quality, table.quality[:, ref_col], quality_floor.tolerance)
            run.extra.update(
                tolerance=quality_floor.tolerance,
                reference=str(table.actions[ref_col]),
                floor_min_margin=float(margin.min()),
                floor_held=bool((margin >= 0).all()),
                served_by_reference=float((run.chosen == ref_col).mean()),
            )
    return results


def compare_conservative(
    table: OutcomeTable,
    models: Mapping[str, ModelSpec],
    baseline: str,
    *,
    reward: str | RewardWeights | tuple[float, float, float] = "cost_sensitive",
    seed: int = 0,
    conservative_delta: float = 0.05,
) -> dict[str, RunResult]:
    """`compare` without the learners, with ``baseline`` (``MODEL`` or ``MODEL/STRATEGY/N``,
    `parse_action`): UniScale in conservative mode (``uniscale_conservative``) against the
    baseline alone and the fixed baselines on one stream; the results by name."""
    res = compare(
        table,
        models,
        reward=reward,
        seed=seed,
        learners=[],
        baseline=parse_action(baseline, table.actions),
        conservative_delta=conservative_delta,
    )
    return {r.name: r for r in res}


def aiq(points: Sequence[tuple[float, float]]) -> float:
    """RouterBench's AIQ: area under the non-decreasing quality-vs-cost frontier of the
    points, divided by the cost range (so it is an average quality, in [0, 1] for accuracy)."""
    pts = sorted(points)
    if len(pts) < 2:
        return float(pts[0][1]) if pts else 0.0
    frontier: list[tuple[float, float]] = []
    best = -math.inf
    for c, q in pts:
        best = max(best, q)
        frontier.append((c, best))
    lo, hi = frontier[0][0], frontier[-1][0]
    if hi <= lo:
        return float(frontier[-1][1])
    area = 0.0
    for (c0, q0), (c1, _q1) in itertools.pairwise(frontier):
        area += (c1 - c0) * q0  # step function: quality reached at c0 holds until c1
    return area / (hi - lo)
