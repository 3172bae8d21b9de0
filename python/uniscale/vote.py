"""Majority voting and the adaptive-consistency stopping rules.

Everything here is a pure function of a sequence of extracted answers (``None`` = the sample's
answer could not be parsed), so the executor and offline replay of logged samples make exactly
the same decisions.

Tie rule: among answers with the highest count, the one whose *first occurrence* is earliest
wins. Unparseable samples never win; they count towards ``n_samples`` but not ``n_valid``.

Stopping rules for adaptive consistency, applied after each round of samples with a total
budget of ``budget`` samples:

``unbeatable``
    Stop when no way of filling the remaining ``budget - len(answers)`` samples (with any
    answers, old or new, or unparseable ones) changes the winner under the tie rule. This is
    exact: it never stops while the leader can still be overtaken (or tied and beaten on the
    tie rule).
``beta``
    Stop when the posterior probability that the leader is more likely than the runner-up is
    at least ``threshold``: with leader count ``v1`` and runner-up count ``v2``, the posterior
    of ``p = p1 / (p1 + p2)`` is ``Beta(v1 + a, v2 + b)`` (prior ``Beta(a, b)``, uniform by
    default) and the rule is ``P(p > 1/2) >= threshold`` (Aggarwal et al. 2023, "Let's Sample
    Step by Step: Adaptive-Consistency"). Computed with the regularised incomplete beta
    function in pure `math`.
``both``
    Stop when either rule says so (the default).

Every rule also stops when the budget is spent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "AdaptiveResult",
    "StopDecision",
    "StopRule",
    "VoteResult",
    "adaptive_schedule",
    "beta_cdf",
    "leader_is_unbeatable",
    "majority_vote",
    "prob_leader_is_majority",
    "replay_adaptive",
    "should_stop",
    "vote_share",
]

StopRule = Literal["unbeatable", "beta", "both"]
StopReason = Literal["budget", "unbeatable", "beta"]


@dataclass(frozen=True, slots=True)
class VoteResult:
    """Result of a majority vote.

    ``answer`` is the winner (``None`` when no sample was parseable) and ``index`` the position
    of its first occurrence (the sample whose full text represents it). ``share`` is
    ``count / n_valid`` (in (0, 1] whenever there is a winner, 0.0 otherwise) and
    ``share_of_samples`` is ``count / n_samples``, which also charges unparseable samples.
    ``counts`` lists ``(answer, count)`` by decreasing count, ties by first occurrence, so
    ``counts[0]`` is the winner and ``counts[1]`` the runner-up.
    """

    answer: str | None
    index: int | None
    count: int
    share: float
    share_of_samples: float
    n_samples: int
    n_valid: int
    counts: tuple[tuple[str, int], ...]

    @property
    def runner_up_count(self) -> int:
        """Votes for the second-ranked answer (0 if there is none)."""
        return self.counts[1][1] if len(self.counts) > 1 else 0


def majority_vote(answers: Sequence[str | None]) -> VoteResult:
    """Majority vote over extracted answers with the earliest-first-occurrence tie rule."""
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        if a not in counts:
            counts[a] = 0
            first[a] = i
        counts[a] += 1
    n_samples = len(answers)
    ranked = sorted(counts, key=lambda a: (-counts[a], first[a]))
    n_valid = sum(counts.values())
    if not ranked:
        return VoteResult(None, None, 0, 0.0, 0.0, n_samples, 0, ())
    winner = ranked[0]
    c = counts[winner]
    return VoteResult(
        answer=winner,
        index=first[winner],
        count=c,
        share=c / n_valid,
        share_of_samples=c / n_samples,
        n_samples=n_samples,
        n_valid=n_valid,
        counts=tuple((a, counts[a]) for a in ranked),
    )


def vote_share(answers: Sequence[str | None], answer: str) -> float:
    """Fraction of the parseable answers equal to ``answer`` (0.0 if none is parseable)."""
    valid = [a for a in answers if a is not None]
    if not valid:
        return 0.0
    return sum(1 for a in valid if a == answer) / len(valid)


def leader_is_unbeatable(answers: Sequence[str | None], budget: int) -> bool:
    """True when no filling of the remaining ``budget - len(answers)`` samples changes the winner.

    Exact under the tie rule: an answer seen before the leader wins a tie against it, so it must
    stay strictly behind; an answer seen after the leader (or not seen yet) only needs to stay
    at most level. ``False`` when there is no parseable answer yet, unless the budget is spent.
    """
    remaining = max(budget - len(answers), 0)
    vote = majority_vote(answers)
    if vote.answer is None or vote.index is None:
        return remaining == 0
    if remaining == 0:
        return True
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        if a is not None and a not in first:
            first[a] = i
    for a, c in vote.counts[1:]:
        # All remaining samples going to one challenger is its best case.
        if c + remaining > vote.count or (c + remaining == vote.count and first[a] < vote.index):
            return False
    # A brand-new answer appears after the leader, so it must strictly exceed it.
    return remaining <= vote.count


def _betacf(x: float, a: float, b: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < tiny:
        d = tiny
    d = 1.0 / d
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta function ``I_x(a, b)``: the CDF of ``Beta(a, b)`` at ``x``."""
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"beta_cdf needs finite a, b > 0, got a={a!r}, b={b!r}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return min(1.0, max(0.0, front * _betacf(x, a, b) / a))
    return min(1.0, max(0.0, 1.0 - front * _betacf(1.0 - x, b, a) / b))


def prob_leader_is_majority(
    leader_count: int, runner_up_count: int, prior: tuple[float, float] = (1.0, 1.0)
) -> float:
    """Posterior ``P(p_leader > p_runner_up)`` = ``P(Beta(v1 + a, v2 + b) > 1/2)``."""
    if leader_count < 0 or runner_up_count < 0:
        raise ValueError("vote counts must be >= 0")
    a, b = prior
    return 1.0 - beta_cdf(0.5, leader_count + a, runner_up_count + b)


@dataclass(frozen=True, slots=True)
class StopDecision:
    """Whether adaptive consistency should stop after the samples seen so far, and why."""

    stop: bool
    reason: StopReason | None
    vote: VoteResult
    remaining: int
    p_majority: float


def should_stop(
    answers: Sequence[str | None],
    budget: int,
    *,
    rule: StopRule = "both",
    threshold: float = 0.95,
    prior: tuple[float, float] = (1.0, 1.0),
    min_samples: int = 1,
) -> StopDecision:
    """Apply the stopping rule(s) to the answers so far, out of a total budget of samples.

    Never stops before ``min_samples`` samples (unless the budget is spent) and never stops on
    the Beta rule without a parseable answer.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if rule not in ("unbeatable", "beta", "both"):
        raise ValueError(f"unknown stop rule {rule!r}")
    vote = majority_vote(answers)
    remaining = max(budget - len(answers), 0)
    p = (
        prob_leader_is_majority(vote.count, vote.runner_up_count, prior)
        if vote.answer is not None
        else 0.0
    )
    reason: StopReason | None = None
    if remaining == 0:
        reason = "budget"
    elif len(answers) >= min_samples:
        if rule in ("unbeatable", "both") and leader_is_unbeatable(answers, budget):
            reason = "unbeatable"
        elif rule in ("beta", "both") and vote.answer is not None and p >= threshold:
            reason = "beta"
    return StopDecision(reason is not None, reason, vote, remaining, p)


def adaptive_schedule(budget: int, first: int = 2, step: int = 2) -> tuple[int, ...]:
    """Cumulative sample counts at which adaptive consistency checks the stopping rule.

    ``adaptive_schedule(7, 2, 2) == (2, 4, 6, 7)``.
    """
    if budget < 1 or first < 1 or step < 1:
        raise ValueError("budget, first and step must all be >= 1")
    points = []
    k = min(first, budget)
    while True:
        points.append(k)
        if k >= budget:
            return tuple(points)
        k = min(k + step, budget)


@dataclass(frozen=True, slots=True)
class AdaptiveResult:
    """Replay of adaptive consistency over a fixed sequence of samples."""

    vote: VoteResult
    used: int
    decision: StopDecision


def replay_adaptive(
    answers: Sequence[str | None],
    budget: int | None = None,
    *,
    first: int = 2,
    step: int = 2,
    rule: StopRule = "both",
    threshold: float = 0.95,
    prior: tuple[float, float] = (1.0, 1.0),
    min_samples: int = 1,
) -> AdaptiveResult:
    """Run adaptive consistency offline over pre-drawn ``answers`` (in draw order).

    ``budget`` defaults to ``len(answers)``; it may not exceed it. Returns the vote over the
    samples actually used and the number used, as the live executor would have.
    """
    n = len(answers) if budget is None else budget
    if n > len(answers):
        raise ValueError(f"budget {n} exceeds the {len(answers)} answers given")
    decision: StopDecision | None = None
    used = 0
    for used in adaptive_schedule(n, first, step):
        decision = should_stop(
            answers[:used],
            n,
            rule=rule,
            threshold=threshold,
            prior=prior,
            min_samples=min_samples,
        )
        if decision.stop:
            break
    assert decision is not None  # adaptive_schedule is never empty
    return AdaptiveResult(decision.vote, used, decision)
