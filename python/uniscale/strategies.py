"""Test-time-scaling strategies: one object per strategy, one registry.

A strategy is how an action ``(model, strategy, n)`` spends its ``n`` samples. Each one is a
`Strategy` object that owns everything about it:

* its draw schedule (`Strategy.draw`: all ``n`` at once, or rounds with early stopping);
* how it picks the answer from the samples drawn (`Strategy.decide`: vote, best score, first);
* its offline replay over recorded samples (`Strategy.replay`, used by the outcome tables of
  `uniscale.outcomes` and the router's side observations), which decides as a live run would;
* which smaller actions an executed run contains (`Strategy.sub_runs`, side observations);
* what the policy's core needs to know (`Strategy.info`: whether it stops adaptively, whether
  it has its own action-feature slot, whether it is one greedy sample).

The executor (`uniscale.execute`), the outcome tables (`uniscale.outcomes`), the router and the
policy call these objects; none of them names a strategy. The four built-ins are registered
here; `register_strategy` adds another (a new strategy touches one file: its own).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from uniscale._core import ConfigError, StrategyInfo
from uniscale.vote import AdaptiveResult, StopRule, majority_vote, replay_adaptive, should_stop

if TYPE_CHECKING:
    from uniscale.space import Action

__all__ = [
    "BUILTIN_STRATEGIES",
    "AdaptiveConfig",
    "AdaptiveConsistency",
    "BestOfN",
    "Draws",
    "Pick",
    "Replay",
    "SelfConsistency",
    "Single",
    "Strategy",
    "get_strategy",
    "register_strategy",
    "registered_strategies",
    "strategy_names",
    "unregister_strategy",
]

Scores = Sequence[float | None]


@dataclass(frozen=True, slots=True)
class Pick:
    """A strategy's choice among samples in draw order: the chosen sample's position and the
    confidence the run reports (vote share, best score, or ``None``)."""

    index: int
    confidence: float | None


@dataclass(frozen=True, slots=True)
class Replay:
    """What a run decides over pre-drawn samples: the chosen position, how many samples it
    used, and whether its quality is judged by its answer (a vote: the winning answer against
    the reference) or by the chosen sample (its recorded correctness)."""

    index: int
    used: int
    by_answer: bool


class Draws(Protocol):
    """The live run a draw schedule drives (`uniscale.execute.Executor`)."""

    async def draw(self, k: int, first_index: int) -> None:
        """Draw ``k`` samples indexed from ``first_index`` (failures are recorded, not raised)."""
        ...

    def answers(self) -> list[str | None]:
        """The answers of the samples drawn successfully so far, in draw order."""
        ...


_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Strategy:
    """Base of every strategy: one sampled draw of ``n`` samples decided by majority vote.

    Subclasses set ``name`` and override what differs. Class attributes (the data the policy's
    core receives through `info`):

    ``adaptive``: the run may stop before ``n`` samples (the cost model learns the mean used);
    ``feature``: the strategy has its own action-feature slot (its indicator and its
    ``log2 n`` interaction); the one without is the baseline the others are relative to;
    ``greedy``: one greedy sample (``n == 1``, temperature 0 by default, no sub-runs);
    ``needs_scorer``: `decide` wants the scorer's scores of the samples.
    """

    name: str = ""
    adaptive: bool = False
    feature: bool = True
    greedy: bool = False
    needs_scorer: bool = False

    def info(self) -> StrategyInfo:
        """What the policy's core keeps of this strategy (it derives the feature layout)."""
        return StrategyInfo(
            self.name, adaptive=self.adaptive, feature=self.feature, single_sample=self.greedy
        )

    def check_n(self, n: int) -> None:
        """Raises `ConfigError` when ``n`` is not a sample count this strategy runs with."""
        if self.greedy and n != 1:
            raise ConfigError(f"strategy {self.name!r} requires n == 1")

    async def draw(self, run: Draws, n: int) -> str | None:
        """Draws the run's samples; returns the stop reason (``None``: no early stopping)."""
        await run.draw(n, 0)
        return None

    def vote(self, answers: Sequence[str | None]) -> Pick:
        """Majority vote (earliest-first tie rule); the fallback of every strategy when its own
        rule cannot decide (no scores, a deadline)."""
        v = majority_vote(answers)
        return Pick(0 if v.index is None else v.index, None if self.greedy else v.share)

    def decide(self, answers: Sequence[str | None], scores: Scores | None) -> Pick | None:
        """Picks among ``answers`` (draw order; ``scores`` when ``needs_scorer``); ``None`` when
        the scores allow no choice (the executor then votes)."""
        return self.vote(answers)

    def replay(self, answers: Sequence[str | None], scores: Scores | None, n: int) -> Replay | None:
        """What a live run with budget ``n`` decides over pre-drawn ``answers`` (at least ``n``,
        in draw order); ``None`` when it cannot be told (a scorer's verdict is missing)."""
        if self.needs_scorer and scores is None:
            return None
        pick = self.decide(answers[:n], None if scores is None else scores[:n])
        if pick is None:
            return None
        return Replay(pick.index, n, not self.needs_scorer)

    def sub_runs(self, executed: Action, drawn: float, actions: Sequence[Action]) -> list[int]:
        """Indices into ``actions`` of the runs contained in ``executed`` (an action of this
        strategy that drew ``drawn`` samples): the same model, a sampled strategy, ``n`` no
        larger than ``drawn``, other than ``executed`` itself. Their outcomes follow from a
        prefix of the executed run's samples (each strategy's `replay`)."""
        if self.greedy:
            return []
        return [
            i
            for i, a in enumerate(actions)
            if a.model == executed.model
            and not get_strategy(a.strategy).greedy
            and a.n <= drawn
            and a != executed
        ]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Single(Strategy):
    """One greedy answer: the baseline (no feature slot of its own)."""

    name = "single"
    feature = False
    greedy = True

    def decide(self, answers: Sequence[str | None], scores: Scores | None) -> Pick | None:
        return Pick(0, None)

    def replay(self, answers: Sequence[str | None], scores: Scores | None, n: int) -> Replay | None:
        return Replay(0, 1, False)


class SelfConsistency(Strategy):
    """``n`` samples at once, majority vote."""

    name = "self_consistency"


class BestOfN(Strategy):
    """``n`` samples at once; the highest-scoring one (a `uniscale.scorers.Scorer`)."""

    name = "best_of_n"
    needs_scorer = True

    def decide(self, answers: Sequence[str | None], scores: Scores | None) -> Pick | None:
        best: int | None = None
        best_score = -math.inf
        for i, sc in enumerate(scores or ()):
            # Strict ">" keeps the earliest sample on ties.
            if sc is not None and math.isfinite(sc) and (best is None or sc > best_score):
                best, best_score = i, sc
        return None if best is None else Pick(best, best_score)

    def replay(self, answers: Sequence[str | None], scores: Scores | None, n: int) -> Replay | None:
        if scores is None:
            return None
        pool = [-math.inf if s is None else s for s in scores[:n]]
        best = max(range(n), key=lambda i: (pool[i], -i))
        return Replay(best, n, False)


@dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    """Round sizes and stopping rule for ``adaptive_consistency`` (see `uniscale.vote`)."""

    first: int = 2
    step: int = 2
    rule: StopRule = "both"
    threshold: float = 0.95
    prior: tuple[float, float] = (1.0, 1.0)
    min_samples: int = 2

    def __post_init__(self) -> None:
        if self.first < 1 or self.step < 1:
            raise ValueError("AdaptiveConfig.first and .step must be >= 1")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"AdaptiveConfig.threshold must be in (0, 1], got {self.threshold}")

    def replay(self, answers: Sequence[str | None], budget: int) -> AdaptiveResult:
        """What a live run with this configuration and ``budget`` samples decides over
        pre-drawn ``answers`` (in draw order): the same rounds and stopping rule."""
        return replay_adaptive(
            answers,
            budget,
            first=self.first,
            step=self.step,
            rule=self.rule,
            threshold=self.threshold,
            prior=self.prior,
            min_samples=min(self.min_samples, budget),
        )


class AdaptiveConsistency(Strategy):
    """Samples in rounds (``first``, then ``step`` more) until the vote's leader is settled
    (`uniscale.vote.should_stop`), at most ``n``; majority vote over what was drawn."""

    name = "adaptive_consistency"
    adaptive = True

    def __init__(self, config: AdaptiveConfig | None = None) -> None:
        self.config = config or AdaptiveConfig()

    async def draw(self, run: Draws, n: int) -> str | None:
        cfg = self.config
        attempted = 0
        while True:
            k = min(cfg.first if attempted == 0 else cfg.step, n - attempted)
            before = len(run.answers())
            await run.draw(k, attempted)
            attempted += k
            answers = run.answers()
            if len(answers) == before:
                return "round_failed"  # the endpoint is failing; do not keep hammering it
            decision = should_stop(
                answers,
                len(answers) + (n - attempted),
                rule=cfg.rule,
                threshold=cfg.threshold,
                prior=cfg.prior,
                min_samples=min(cfg.min_samples, n),
            )
            if decision.stop:
                assert decision.reason is not None
                return decision.reason

    def replay(self, answers: Sequence[str | None], scores: Scores | None, n: int) -> Replay | None:
        r = self.config.replay(answers[:n], n)
        return Replay(0 if r.vote.index is None else r.vote.index, r.used, True)


BUILTIN_STRATEGIES: tuple[str, ...] = (
    "single",
    "self_consistency",
    "best_of_n",
    "adaptive_consistency",
)

_REGISTRY: dict[str, Strategy] = {
    s.name: s for s in (Single(), SelfConsistency(), BestOfN(), AdaptiveConsistency())
}


def register_strategy(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Adds ``strategy`` to the registry (``replace`` to swap a registered non-built-in one);
    returns it. Policies created afterwards learn it (their default strategy list is every
    registered strategy, in registration order)."""
    if not isinstance(strategy, Strategy):
        raise ConfigError(f"a strategy must be a Strategy instance, got {type(strategy).__name__}")
    name = strategy.name
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ConfigError(
            f"strategy name {name!r} must be 1-64 characters of a-z, 0-9 and _, "
            "starting with a letter"
        )
    if name in BUILTIN_STRATEGIES:
        raise ConfigError(f"strategy {name!r} is built in and cannot be replaced")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"a strategy named {name!r} is already registered")
    if not strategy.feature:
        raise ConfigError(
            f"strategy {name!r}: only the baseline 'single' has no feature slot of its own"
        )
    _REGISTRY[name] = strategy
    return strategy


def unregister_strategy(name: str) -> None:
    """Removes a registered non-built-in strategy (tests); saved policies that use it keep
    loading, but its actions can no longer be run."""
    if name in BUILTIN_STRATEGIES:
        raise ConfigError(f"strategy {name!r} is built in and cannot be removed")
    if _REGISTRY.pop(name, None) is None:
        raise ConfigError(f"no strategy named {name!r} is registered")


def get_strategy(name: str) -> Strategy:
    """The registered strategy called ``name``; `ConfigError` when there is none."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown strategy {name!r}; expected one of {strategy_names()}"
        ) from None


def check_action(strategy: str, n: object) -> None:
    """Validates an action's ``(strategy, n)`` (`uniscale.Action`'s constructor calls it):
    ``strategy`` registered, ``n`` an int >= 1 that the strategy runs with; `ConfigError`
    otherwise."""
    s = get_strategy(strategy)
    if not (isinstance(n, int) and n >= 1):
        raise ConfigError(f"Action.n must be an int >= 1, got {n!r}")
    s.check_n(n)


def strategy_names() -> tuple[str, ...]:
    """Names of the registered strategies: the built-ins first, then in registration order."""
    return tuple(_REGISTRY)


def registered_strategies() -> tuple[Strategy, ...]:
    return tuple(_REGISTRY.values())
