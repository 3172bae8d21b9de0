"""`Policy`: the per-request decision engine (configuration here, all numbers in Rust).

Design: the LinUCB learner models **quality** only; cost and latency come from the online cost
model; the reward ``w_q * quality - w_c * cost / cost_scale - w_l * latency / latency_scale`` is
assembled at selection time. So a preset switch (``set_reward``) or a budget multiplier applies
immediately and keeps every statistic learned so far valid.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex

import numpy as np
from numpy.typing import ArrayLike, NDArray

from uniscale._core import (
    ConfigError,
    Decision,
    PolicyConfig,
    PolicyCore,
    UnknownActionError,
    UpdateResult,
)
from uniscale.reward import _FLOOR_DEFAULTS, PRESETS, QualityFloor, RewardWeights, resolve_reward
from uniscale.space import STRATEGIES, Action, ActionSpace, ModelSpec, Strategy, strategy_infos
from uniscale.strategies import get_strategy

if TYPE_CHECKING:
    from typing import Unpack

    from uniscale._core import _PolicySettings
    from uniscale.planner import Plan

__all__ = [
    "PRESETS",
    "Policy",
    "PolicyConfig",
    "QualityFloor",
    "RewardWeights",
    "UpdateResult",
    "resolve_reward",
]


class Policy:
    """Selects ``(model, strategy, n)`` per request and learns from delayed feedback.

    Settings come as one `PolicyConfig` (``config=``) or as its fields by keyword (they
    build one, on top of ``config`` if both are given); its defaults are set once, in Rust,
    and `PolicyConfig`'s docstring says why they are what they are. ``policy.config`` is the
    config it was built with.

    ``interaction_scale`` (in [0, 1], default 1) multiplies the request features inside the
    quality learner: with the shared learner that is a ridge ``1 / s**2`` times stronger on the
    request x action interactions than on the action main effects, and an exploration bonus
    ``s`` times smaller on them; 0 makes the learner context-free. Measured by
    ``scripts/interaction_scale.py`` (``docs/interaction_scale.md``): 0.3 beats 1 in all six
    (table, preset) cells of the real and MMLU-Pro tables and loses in all three of the
    simulator, whose task types really matter; the default stays 1, and the data-driven
    ``interaction_prior`` below does this job better. With the disjoint learner, whose
    per-action models have no separate main effect, it shrinks everything.

    ``interaction_prior`` (shared learner only) estimates the quality means with a ridge ``m``
    times stronger on the request x action interactions than on everything else (prior standard
    deviation ``1 / sqrt(m)``); the exploration bonus keeps the width of the one-ridge
    posterior, so shrinkage chosen from little data cannot stop the exploration that would
    overturn it. ``"auto"`` (the default for the shared learner without discounting; 1
    otherwise) starts at 1 and re-chooses ``m`` from {1, 4, 16, 64, 256, 1024} by
    empirical Bayes (the marginal likelihood of the feedback so far) after 32, 128, 512, 2048
    updates and then every 4096, so interactions count only as far as the data support them
    (``rust/evidence.rs``). Needs ``discount = 1``. With ``m > 1`` the learner keeps a second
    copy of its statistics (twice the memory and update time). Measured by
    ``scripts/policy_ablation.py`` (``docs/interaction_prior.md``).

    ``cost_exploration`` (off by default; `set_cost_exploration` switches it at run time):
    pooled cost/latency corrections across models and optimism about arms with little data, so
    a `ModelSpec` prior wrong by 10x cannot freeze a model out (``docs/cost_uncertainty.md``).

    ``strategies`` names the strategies the action features have room for (default: every
    registered one, `uniscale.strategies`); the core derives its feature layout from them and
    saves them with its state. Actions, including those of models added later, use these.

    ``select`` returns a `Decision` (id, action, predicted cost and latency, propensity,
    candidates, pruning reasons); ``update(decision.id, quality=..., ...)`` may come later, out of
    order, or never (pending decisions expire after ``ttl_s`` or when more than ``capacity`` are
    waiting). Thread-safe: the core is locked inside Rust with the GIL released.
    """

    __slots__ = ("_config", "_core", "_specs")

    def __init__(
        self,
        space: ActionSpace,
        dim: int,
        *,
        config: PolicyConfig | None = None,
        strategies: Sequence[str] | None = None,
        **settings: Unpack[_PolicySettings],
    ) -> None:
        if not isinstance(space, ActionSpace):
            raise ConfigError(f"space must be an ActionSpace, got {type(space).__name__}")
        if config is None:
            config = PolicyConfig(**settings)
        elif settings:
            config = config.replace(**settings)
        self._specs: dict[str, ModelSpec] = space.models
        self._config: PolicyConfig | None = config
        self._core = PolicyCore(space.core_models(), dim, config, strategy_infos(strategies))
        if config.baseline is not None:
            self.set_baseline(
                config.baseline,
                delta=config.conservative_delta,
                confidence=config.conservative_confidence,
            )
        floor = config.quality_floor
        if floor is not None:
            if not isinstance(floor, QualityFloor):
                raise ConfigError(f"quality_floor must be a QualityFloor, got {floor!r}")
            self.set_quality_floor(
                floor.reference, tolerance=floor.tolerance, confidence=floor.confidence
            )

    # ---- the per-request loop ----

    def select(
        self,
        x: ArrayLike,
        input_tokens: float = 0.0,
        max_cost_usd: float | None = None,
        max_latency_s: float | None = None,
        *,
        mask: ArrayLike | None = None,
        now: float | None = None,
        feature_version: str | None = None,
    ) -> Decision:
        """Choose an action for request features ``x`` (shape ``(dim,)``).

        Actions whose predicted cost or latency break the limits are pruned, then dominated
        ones; if no action meets the limits the cheapest allowed one is returned with
        ``decision.fallback == True`` (the request never fails for this).
        """
        if feature_version is not None:
            self._check_feature_version(feature_version)
        return self._choose(
            lambda m: self._core.select(x, input_tokens, max_cost_usd, max_latency_s, m, now), mask
        )

    def _choose(
        self, core_select: Callable[[ArrayLike | None], Decision], mask: ArrayLike | None
    ) -> Decision:
        """How ``select`` uses the core's selection (``core_select(mask)``, the request's other
        inputs bound); the one place a subclass changes it (the server's `ServedPolicy`)."""
        return core_select(mask)

    def update(
        self,
        decision_id: int,
        quality: float,
        cost_usd: float | None = None,
        latency_s: float | None = None,
        output_tokens: float | None = None,
        samples_used: float | None = None,
        *,
        now: float | None = None,
    ) -> UpdateResult:
        """Feedback for a decision. ``output_tokens`` is the total over the samples used.

        Raises `UnknownDecisionError`, `ExpiredDecisionError` or `DuplicateUpdateError`
        (nothing is learned twice); invalid values are rejected before any state changes.
        """
        return self._core.update(
            decision_id, quality, cost_usd, latency_s, output_tokens, samples_used, now
        )

    def observe(
        self,
        x: ArrayLike,
        action: SupportsIndex | Action,
        quality: float,
        input_tokens: float = 0.0,
        cost_usd: float | None = None,
        latency_s: float | None = None,
        output_tokens: float | None = None,
        samples_used: float | None = None,
        *,
        weight: float = 1.0,
    ) -> UpdateResult:
        """Learns from an outcome of ``action`` (an index or an `Action` of this policy) on
        request ``x`` that no decision asked for, exactly as `update` would for a decision.

        Uses: a sub-action observed for free inside a larger test-time-scaling run (the first
        two of eight samples are a self-consistency n = 2 run; `uniscale.outcomes.sub_actions`
        says which), a warm start from a full-information outcome table, or another replica's
        feedback. The budget pacer is not charged. Raises `UnknownActionError` for an action
        this policy does not have; invalid values are rejected before any state changes.

        ``weight`` (> 0) counts the outcome that many times in the quality learner (the cost
        model learns from it once): below 1 for observations that are correlated with others
        (sub-runs of one run) or for a capped prior, so that they cannot make the learner more
        confident than they are worth.
        """
        index = self._action_index(action)
        return self._core.observe(
            x,
            index,
            quality,
            input_tokens,
            cost_usd,
            latency_s,
            output_tokens,
            samples_used,
            weight,
        )

    def _action_index(self, action: SupportsIndex | Action) -> int:
        if isinstance(action, Action):
            try:
                return self.actions.index(action)
            except ValueError:
                raise UnknownActionError(
                    f"{action} is not an action of this policy (retired, or never added)"
                ) from None
        if isinstance(action, bool | np.bool_):
            raise UnknownActionError(f"action must be an int index or an Action, got {action!r}")
        try:
            return operator.index(action)  # int, numpy integers
        except TypeError:
            raise UnknownActionError(
                f"action must be an int index or an Action, got {action!r}"
            ) from None

    def _check_feature_version(self, version: str) -> None:
        mine = self._core.feature_version
        if mine and version != mine:
            raise ConfigError(
                f"this policy was trained on featurizer version {mine!r} but got a "
                f"{version!r} vector; re-featurize or train a new policy"
            )

    # ---- run-time changes ----

    def set_reward(self, reward: str | RewardWeights | tuple[float, float, float]) -> None:
        """Switch preset or weights; learned statistics stay valid (quality is learned alone)."""
        w = resolve_reward(reward)
        self._core.set_weights(w.quality, w.cost, w.latency)

    @property
    def reward_weights(self) -> RewardWeights:
        return RewardWeights(*self._core.weights)

    def set_baseline(
        self,
        action: Action | int | None,
        *,
        delta: float | None = None,
        confidence: float | None = None,
        quality_sd: float | None = None,
        quality_range: tuple[float, float] | None = None,
    ) -> None:
        """Conservative mode: ``action`` is what the team serves today, and exploration is
        constrained so that, with probability about ``confidence``, the cumulative reward never
        falls below the baseline's by more than ``delta`` times the baseline's cumulative reward
        (in absolute value), at any point of the stream (Kazerouni et al. 2017).

        Each request, the learner's choice is played only if a pessimistic bound on the
        policy's cumulative reward including it (realised rewards so far, lower confidence
        bounds for decisions still waiting for feedback) stays above ``(1 - delta)`` times an
        optimistic bound on the baseline's on the same requests (its realised rewards where it
        was played, upper confidence bounds where it was not, plus a noise allowance);
        otherwise the baseline is played and ``decision.conservative`` is set. The baseline's
        own rewards build the budget, so the policy starts by playing it. ``quality_sd`` is the
        noise scale of one quality (0.5 suits qualities in [0, 1]) and the quality bounds are
        clipped to ``quality_range``. The bound is as good as the
        linear model's confidence sets; ``tests/test_conservative.py`` measures it on the real
        tables over many seeds. Changing the reward weights restarts the account, as does
        calling this again; ``None`` turns the mode off. If the baseline's model is retired the
        mode is suspended (``conservative_status()["baseline"]`` is ``None``). ``delta`` and
        ``confidence`` default to `PolicyConfig`'s ``conservative_delta`` and
        ``conservative_confidence``; ``quality_sd`` and ``quality_range`` to 0.5 and (0, 1)
        (set in ``PolicyCore.set_conservative``).
        """
        index = None if action is None else self._action_index(action)
        self._core.set_conservative(index, delta, confidence, quality_sd, quality_range)

    def set_quality_floor(
        self,
        reference: Action | int | None,
        *,
        tolerance: float | None = None,
        confidence: float | None = None,
        quality_sd: float | None = None,
        quality_range: tuple[float, float] | None = None,
    ) -> None:
        """Quality-floor mode: keep the quality of ``reference`` (the action a team serves
        today) and spend as little as possible. The promise is about the stream: with
        probability about ``confidence``, cumulative quality never falls more than
        ``tolerance`` per request below what the reference would have scored on the same
        requests, at any point (a window would forget a shortfall; a per-request rule would
        forbid every action that is worse on *some* requests, which is every cheaper one).

        Mechanism: conservative mode (`set_baseline`) with quality as the metric and an
        additive allowance of ``tolerance`` per request, plus three things of its own:

        * **A price on quality.** Candidates are ranked by the reward weights with the quality
          weight times a multiplier (`conservative_status()["multiplier"]`), a dual variable
          on "expected quality >= the reference's - tolerance": it grows while the learner's
          (optimistic) choices fall short of the reference on the request at hand and shrinks
          while they have quality to spare, so the floor is spent where it saves most (cheaper
          answers on some task types paid for by better ones on others), like the budget
          pacer's multiplier on cost.
        * **The best allowed action, not the reference.** A choice is served only if the lower
          confidence bound of the cumulative quality, including it, stays above the
          reference's upper bound minus the allowance; otherwise the best-ranked candidate
          that passes is served (the reference when nothing else does) and
          ``decision.conservative`` is set. An action whose bounds beat the reference's on a
          request is always allowed, even when the slack is negative.
        * **Retrospective counterfactuals.** The reference's quality on the answered requests
          it did not serve is bounded with the learner's *current* statistics (the summed
          features' mean and width), not with the wider bounds each had when decided, so the
          shortfall budget tightens as the reference's quality is learned.

        The reference's quality is learned from the requests served by it; no labels beyond
        the usual feedback. Unlike `set_baseline`, a change of reward weights keeps the
        account (qualities do not depend on them). ``None`` turns the mode off. Measured in
        docs/quality_floor.md. ``tolerance`` and ``confidence`` default to `QualityFloor`'s;
        ``quality_sd`` and ``quality_range`` as in `set_baseline`.
        """
        index = None if reference is None else self._action_index(reference)
        if tolerance is None:
            tolerance = _FLOOR_DEFAULTS.tolerance
        if confidence is None:
            confidence = _FLOOR_DEFAULTS.confidence
        self._core.set_conservative(
            index, 0.0, confidence, quality_sd, quality_range, float(tolerance)
        )

    def conservative_status(self) -> dict[str, Any] | None:
        """Conservative (or quality-floor) mode's account (``None`` when off): ``metric``
        ("reward", or "quality" for a quality floor), ``tolerance``, ``baseline`` (its index),
        ``decisions``, ``overrides`` (how often the baseline replaced the learner's choice),
        ``non_baseline``, ``policy_lower``, ``baseline_upper`` and ``slack`` (what exploration
        may still spend, in reward units), with the settings; a quality floor adds
        ``multiplier`` (its price on quality), ``retrospective`` and
        ``counterfactual_requests`` (answered requests the reference did not serve)."""
        return self._core.conservative_status()

    def set_exploration(
        self,
        kind: Literal["greedy", "epsilon", "softmax"],
        *,
        epsilon: float | None = None,
        temperature: float | None = None,
    ) -> None:
        """Change the exploration rule (``None``: the `PolicyConfig` default)."""
        self._core.set_exploration(kind, epsilon, temperature)

    def set_cost_exploration(self, on: bool = True) -> None:
        """Treat cost and latency as uncertain (off by default; saved with the policy).

        On: output lengths and speeds are pooled across models (a shared log-ratio to the
        configured prior per strategy plus a shrunk per-model deviation), and the scores,
        dominance pruning and the request's limits use optimistic estimates for models with
        little data of their own, so a `ModelSpec` prior that is wrong by 10x in either
        direction cannot freeze a model out; an action with fewer than two outcomes is never
        pruned as dominated. Off: the configured priors with one observation's weight, updated
        per (model, strategy) by that arm's own data, as point predictions.

        Off by default because, measured, on the packaged tables the corrected predictions make
        the quality learner explore more than the streams pay for (docs/cost_uncertainty.md);
        switch it on when the priors are guesses (a new model, default `prior_output_tokens`).
        Statistics are kept either way, so switching it on mid-stream uses all data so far.
        """
        self._core.set_cost_exploration(bool(on))

    @property
    def cost_exploration(self) -> bool:
        """Whether cost exploration is on (`set_cost_exploration`)."""
        return self._core.cost_exploration

    def set_budget(
        self,
        *,
        per_request_usd: float | None = None,
        per_hour_usd: float | None = None,
        pacing_step: float | None = None,
        pacing_carryover: float | None = None,
    ) -> None:
        """Set (or clear, with no arguments) a long-run spend target held by pacing.

        The multiplier on cost follows the running overspend relative to the target;
        ``pacing_carryover`` is how many requests' worth of unspent budget is kept as credit
        and spent later (0: unspent budget is forgotten, and spend tends to land below the
        target when the policy sometimes spends less on its own). ``None``: the `PolicyConfig`
        default. See ``rust/pacing.rs``."""
        self._core.set_budget(per_request_usd, per_hour_usd, pacing_step, pacing_carryover)

    def add_model(
        self,
        model: ModelSpec,
        strategies: Sequence[Strategy] = STRATEGIES,
        n_values: Sequence[int] = (1, 2, 4, 8),
        *,
        actions: Sequence[Action] | None = None,
    ) -> list[int]:
        """Add a model (and its actions) while serving; returns the new action indices."""
        acts: list[tuple[str, int]]
        if actions is None:
            acts = [
                (s, n) for s in strategies for n in n_values if get_strategy(s).greedy == (n == 1)
            ]
        else:
            for a in actions:
                if a.model != model.name:
                    raise ConfigError(f"action {a} is not for model {model.name!r}")
            acts = [(a.strategy, a.n) for a in actions]
        idx = self._core.add_model(model.info(), acts)
        self._specs[model.name] = model
        return [int(i) for i in idx]

    def retire_model(self, name: str) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Retire a model; returns ``mapping[old_index] = new_index`` (-1 = removed)."""
        return self._core.retire_model(name)

    # ---- introspection ----

    @property
    def actions(self) -> list[Action]:
        """Current actions in index order (``decision.index`` points into this list)."""
        return self._core.action_list()

    @property
    def models(self) -> dict[str, ModelSpec]:
        active = set(self._core.models())
        return {k: v for k, v in self._specs.items() if k in active}

    @property
    def core(self) -> PolicyCore:
        """The Rust core (for tests and tools; everything else has a method here)."""
        return self._core

    @property
    def config(self) -> PolicyConfig | None:
        """The settings this policy was built with (run-time changes such as `set_reward` are
        not reflected); ``None`` for a policy restored from bytes, whose state keeps the
        settings but not the config object."""
        return self._config

    @property
    def action_uids(self) -> list[int]:
        """Stable identity of each current action, in index order (``decision.action_uid``)."""
        return self._core.action_uids()

    def quality_scores(self, x: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Quality posterior ``(mean, bonus)`` per action for request features ``x``."""
        return self._core.quality_scores(x)

    @property
    def alpha(self) -> float:
        """The quality learner's exploration width."""
        return self._core.alpha

    @property
    def feature_version(self) -> str:
        """The featurizer version this policy was trained on ("" = unchecked)."""
        return self._core.feature_version

    @property
    def cost_scale(self) -> float:
        """Dollars per unit of reward (set from the action space when not given)."""
        return self._core.cost_scale

    @property
    def latency_scale(self) -> float:
        """Seconds per unit of reward (set from the action space when not given)."""
        return self._core.latency_scale

    @property
    def total_cost_usd(self) -> float:
        """Dollars charged to the budget pacer so far."""
        return self._core.total_cost_usd

    @property
    def dim(self) -> int:
        return self._core.dim

    @property
    def n_actions(self) -> int:
        return self._core.n_actions

    @property
    def n_pending(self) -> int:
        return self._core.n_pending

    @property
    def next_decision_id(self) -> int:
        """The id the next decision will get (saved with the policy)."""
        return self._core.next_decision_id

    def advance_decision_ids(self, at_least: int) -> int:
        """Moves the next decision id up to ``at_least``, never down, so that no id is issued
        twice; returns the next id. The workers of one ``uniscale serve`` take disjoint id
        ranges this way, so a decision id names the worker that made it."""
        if isinstance(at_least, bool) or not isinstance(at_least, int) or not 0 <= at_least < 2**64:
            raise ConfigError(f"at_least must be an int in [0, 2**64), got {at_least!r}")
        return self._core.advance_decision_ids(at_least)

    @property
    def pacing_lambda(self) -> float:
        return self._core.pacing_lambda

    @property
    def interaction_scale(self) -> float:
        """Scale of the request features inside the quality learner (see the constructor)."""
        return self._core.interaction_scale

    @property
    def interaction_prior(self) -> tuple[float, bool]:
        """``(m, auto)``: the ridge multiplier now on the request x action interactions, and
        whether empirical Bayes re-chooses it (see the constructor)."""
        return self._core.interaction_prior

    @property
    def pacing_credit(self) -> float:
        """Unspent budget kept as credit, in requests' worth of the target."""
        return self._core.pacing_credit

    def predict(self, input_tokens: float) -> dict[str, np.ndarray[Any, np.dtype[np.float64]]]:
        """Cost-model predictions for every action at this prompt size.

        ``cost_usd`` and ``latency_s`` are point predictions (what decisions report);
        ``cost_usd_low`` and ``latency_s_low`` the optimistic ones the scores and dominance
        pruning use (lower the less the model has seen of the action's model and strategy;
        equal to the point predictions while cost exploration is off);
        ``cost_usd_for_limit`` and ``latency_s_for_limit`` what ``max_cost_usd`` and
        ``max_latency_s`` are checked against (the point prediction once the action has
        observations of its own, else the optimistic one).
        """
        return self._core.predict(input_tokens).to_dict()

    @property
    def action_observations(self) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """Outcomes observed per action (decisions and side observations). With cost
        exploration on, an action with fewer than two is never pruned as dominated: its quality
        bound is still the prior's."""
        return self._core.action_observations()

    # ---- persistence ----

    def to_bytes(self) -> bytes:
        return self._core.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, models: Sequence[ModelSpec] | None = None) -> Policy:
        """Restore a policy. ``models`` restores endpoint settings of the ModelSpecs (the state
        itself keeps prices, parallelism and latency priors)."""
        return cls._wrap(PolicyCore.from_bytes(data), models)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomic save (temp file, fsync, rename): a crash never leaves a half-written file.

        The bytes are loaded back (every validation of `load`) before the old file is
        replaced; if they do not load, `StateError` is raised and the old file stays. A
        temporary file left by a writer killed mid-save is removed by the next save. If
        ``path`` is a symbolic link, its target is replaced and the link kept; an existing
        file keeps its permission bits (a 0600 file stays 0600).
        """
        self._core.save(Path(path))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], models: Sequence[ModelSpec] | None = None
    ) -> Policy:
        return cls._wrap(PolicyCore.load(Path(path)), models)

    @classmethod
    def from_plan(
        cls,
        plan: Plan,
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
        """A policy seeded by a `uniscale.planner.Plan` (``uniscale plan``).

        ``mode="restrict"``: the action space is the plan's Pareto front for ``scenario``
        (``keep="front"``) or only its rules' picks (``keep="picks"``); best-of-k candidates
        of simulated models map to ``best_of_n``. ``mode="prior"``: the action space is
        ``actions`` (e.g. every action of a table) and every planned candidate among them is
        observed once with its planned accuracy, cost and latency at weight
        ``prior_weight`` (`uniscale.planner.seed_with_plan`). Other keyword arguments go to
        `Policy`. ``scripts/plan_seed.py`` measures both on the real tables
        (``docs/plan.md``)."""
        from uniscale.plan_seed import plan_actions, seed_with_plan

        specs = {m.name: m for m in models} if not isinstance(models, Mapping) else dict(models)
        if mode == "restrict":
            acts = plan_actions(plan, scenario, keep)
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
            seed_with_plan(policy, plan, weight=prior_weight)
        return policy

    @classmethod
    def _wrap(
        cls,
        core: PolicyCore,
        models: Sequence[ModelSpec] | None,
        config: PolicyConfig | None = None,
    ) -> Policy:
        self = cls.__new__(cls)
        self._core = core
        self._config = config
        given = {m.name: m for m in (models or [])}
        self._specs = {
            info.name: given.get(info.name) or ModelSpec.from_info(info)
            for info in core.model_table()
        }
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_policy, (self.to_bytes(), list(self._specs.values()), self._config))

    def __repr__(self) -> str:
        return (
            f"Policy({len(self.models)} models, {self.n_actions} actions, dim={self.dim}, "
            f"learner={self._core.learner!r}, weights={self.reward_weights})"
        )


def _restore_policy(
    data: bytes, models: list[ModelSpec], config: PolicyConfig | None = None
) -> Policy:
    return Policy._wrap(PolicyCore.from_bytes(data), models, config)
