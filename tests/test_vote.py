"""Majority vote, stopping rules and the offline adaptive replay."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniscale.vote import (
    adaptive_schedule,
    beta_cdf,
    leader_is_unbeatable,
    majority_vote,
    prob_leader_is_majority,
    replay_adaptive,
    should_stop,
    vote_share,
)

answer = st.one_of(st.none(), st.sampled_from(["1", "2", "3", "4"]))
answers_st = st.lists(answer, max_size=12)


def test_vote_basics() -> None:
    v = majority_vote(["3", "5", "3", None, "5", "3"])
    assert (v.answer, v.index, v.count, v.n_samples, v.n_valid) == ("3", 0, 3, 6, 5)
    assert v.share == pytest.approx(3 / 5)
    assert v.share_of_samples == pytest.approx(3 / 6)
    assert v.counts == (("3", 3), ("5", 2))
    assert v.runner_up_count == 2


def test_tie_goes_to_earliest_first_occurrence() -> None:
    assert majority_vote(["b", "a", "a", "b"]).answer == "b"
    assert majority_vote([None, "a", "b", "b", "a"]).answer == "a"
    v = majority_vote(["x", "y", "z"])
    assert (v.answer, v.index) == ("x", 0) and v.share == pytest.approx(1 / 3)


def test_vote_without_parseable_answers() -> None:
    for answers in ([], [None, None]):
        v = majority_vote(answers)
        assert (v.answer, v.index, v.count, v.share, v.counts) == (None, None, 0, 0.0, ())
        assert v.runner_up_count == 0
    assert vote_share([None], "1") == 0.0
    assert vote_share(["1", None, "2", "1"], "1") == pytest.approx(2 / 3)


@given(answers_st)
def test_vote_properties(answers: list[str | None]) -> None:
    v = majority_vote(answers)
    valid = [a for a in answers if a is not None]
    if not valid:
        assert v.answer is None
        return
    assert v.answer in valid
    assert v.index is not None and answers[v.index] == v.answer
    assert answers.index(v.answer) == v.index  # representative = first occurrence
    assert 0.0 < v.share <= 1.0
    assert 0.0 < v.share_of_samples <= v.share
    assert v.count == max(valid.count(a) for a in valid)
    # Tie rule: no other answer with the same count occurs earlier.
    for a in set(valid):
        if valid.count(a) == v.count:
            assert answers.index(a) >= v.index
    assert sum(c for _, c in v.counts) == len(valid)
    assert v.share == pytest.approx(vote_share(answers, v.answer))


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6, unique=True), st.data())
def test_tie_rule_on_equal_counts(distinct: list[str], data: st.DataObject) -> None:
    # Every answer appears k times, first occurrences in the order of `distinct`, the rest in
    # any order: the first answer to appear must win, whatever the later order.
    k = data.draw(st.integers(1, 3))
    rest = data.draw(st.permutations([a for a in distinct for _ in range(k - 1)]))
    v = majority_vote([*distinct, *rest])
    assert v.answer == distinct[0]
    assert v.share == pytest.approx(1 / len(distinct))


def _winner_after(answers: Sequence[str | None], extra: Sequence[str | None]) -> str | None:
    return majority_vote(list(answers) + list(extra)).answer


def _can_change(answers: Sequence[str | None], budget: int) -> bool:
    """Brute force: does any filling of the remaining samples change the winner?"""
    remaining = budget - len(answers)
    current = majority_vote(answers).answer
    seen = sorted({a for a in answers if a is not None})
    alphabet: list[str | None] = [*seen, *(f"new{i}" for i in range(remaining)), None]
    return any(
        _winner_after(answers, extra) != current
        for extra in itertools.product(alphabet, repeat=remaining)
    )


@settings(max_examples=300)
@given(st.lists(answer, max_size=8), st.integers(0, 4))
def test_unbeatable_is_exact(answers: list[str | None], extra_budget: int) -> None:
    budget = max(len(answers), 1) + extra_budget
    if not answers:
        answers = []
    unbeatable = leader_is_unbeatable(answers, budget)
    if majority_vote(answers).answer is None and budget > len(answers):
        assert not unbeatable
        return
    assert unbeatable == (not _can_change(answers, budget))


@settings(max_examples=300)
@given(st.lists(answer, min_size=1, max_size=8), st.integers(0, 4), st.floats(0.5, 0.999))
def test_should_stop_never_stops_while_overtakable_under_unbeatable_rule(
    answers: list[str | None], extra_budget: int, threshold: float
) -> None:
    budget = len(answers) + extra_budget
    d = should_stop(answers, budget, rule="unbeatable", threshold=threshold)
    if d.stop:
        assert not _can_change(answers, budget)
    assert d.remaining == extra_budget
    # "both" stops whenever "unbeatable" does.
    if d.stop:
        assert should_stop(answers, budget, rule="both", threshold=threshold).stop


def test_unbeatable_examples() -> None:
    # Leader first, runner-up one behind, one sample left: a tie goes to the leader.
    assert leader_is_unbeatable(["a", "a", "b"], 4)
    # Runner-up first: a tie goes to it, so the leader is not safe.
    assert not leader_is_unbeatable(["b", "a", "a"], 4)
    # Two left: b could reach 3 > 2.
    assert not leader_is_unbeatable(["a", "a", "b"], 5)
    # A brand-new answer could take all remaining samples.
    assert not leader_is_unbeatable(["a"], 3)
    assert leader_is_unbeatable(["a", "a"], 4)
    assert leader_is_unbeatable(["a"], 1)
    assert leader_is_unbeatable([None], 1)
    assert not leader_is_unbeatable([None, None], 3)


def _beta_cdf_binomial(x: float, a: int, b: int) -> float:
    """For integer a, b: I_x(a, b) = P(Binomial(a + b - 1, x) >= a)."""
    n = a + b - 1
    return sum(math.comb(n, k) * x**k * (1 - x) ** (n - k) for k in range(a, n + 1))


@given(st.integers(1, 60), st.integers(1, 60), st.floats(0.0, 1.0))
def test_beta_cdf_matches_binomial_identity(a: int, b: int, x: float) -> None:
    assert beta_cdf(x, a, b) == pytest.approx(_beta_cdf_binomial(x, a, b), abs=1e-9)


@given(st.floats(0.1, 50), st.floats(0.1, 50), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_beta_cdf_monotone_and_symmetric(a: float, b: float, x: float, y: float) -> None:
    lo, hi = min(x, y), max(x, y)
    assert 0.0 <= beta_cdf(lo, a, b) <= beta_cdf(hi, a, b) + 1e-12 <= 1.0 + 1e-12
    # Symmetry I_x(a, b) = 1 - I_{1-x}(b, a), away from the ends where 1 - x rounds to 1.
    z = min(max(x, 1e-6), 1 - 1e-6)
    assert beta_cdf(z, a, b) == pytest.approx(1 - beta_cdf(1 - z, b, a), abs=1e-9)


def test_beta_cdf_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="a, b > 0"):
        beta_cdf(0.5, 0, 1)
    with pytest.raises(ValueError, match="a, b > 0"):
        beta_cdf(0.5, 1, math.inf)


def test_prob_leader_is_majority_values() -> None:
    # Beta(v1 + 1, 1) at 1/2: P(X > 1/2) = 1 - 2^-(v1 + 1).
    for v1 in range(6):
        assert prob_leader_is_majority(v1, 0) == pytest.approx(1 - 0.5 ** (v1 + 1))
    assert prob_leader_is_majority(3, 3) == pytest.approx(0.5)
    assert prob_leader_is_majority(5, 1) > prob_leader_is_majority(5, 2)
    with pytest.raises(ValueError, match=">= 0"):
        prob_leader_is_majority(-1, 0)


def test_should_stop_beta_rule() -> None:
    # 4 unanimous votes: p = 1 - 2^-5 = 0.96875 >= 0.95, though with 16 samples left the
    # leader could still be overtaken (so the exact rule does not stop).
    d = should_stop(["7"] * 4, 20, rule="beta")
    assert d.stop and d.reason == "beta" and d.p_majority == pytest.approx(0.96875)
    assert not should_stop(["7"] * 3, 20, rule="beta").stop
    assert not should_stop(["7"] * 4, 20, rule="unbeatable").stop
    assert should_stop(["7"] * 4, 20, rule="both").reason == "beta"
    assert not should_stop([None] * 4, 20, rule="beta").stop
    assert should_stop(["1", "2"], 2).reason == "budget"
    assert not should_stop(["7"], 20, rule="beta", threshold=0.5, min_samples=2).stop
    assert should_stop(["7", "7"], 20, rule="beta", threshold=0.5, min_samples=2).stop


def test_should_stop_validates() -> None:
    with pytest.raises(ValueError, match="budget"):
        should_stop([], 0)
    with pytest.raises(ValueError, match="threshold"):
        should_stop(["1"], 3, threshold=1.5)
    with pytest.raises(ValueError, match="unknown stop rule"):
        should_stop(["1"], 3, rule="nope")  # type: ignore[arg-type]


@given(st.integers(1, 40), st.integers(1, 5), st.integers(1, 5))
def test_adaptive_schedule(budget: int, first: int, step: int) -> None:
    s = adaptive_schedule(budget, first, step)
    assert s[-1] == budget
    assert s[0] == min(first, budget)
    assert all(b > a for a, b in itertools.pairwise(s))
    assert all(b - a <= step for a, b in itertools.pairwise(s))


def test_adaptive_schedule_example() -> None:
    assert adaptive_schedule(7, 2, 2) == (2, 4, 6, 7)
    assert adaptive_schedule(1, 2, 2) == (1,)
    with pytest.raises(ValueError, match=">= 1"):
        adaptive_schedule(0)


def test_replay_adaptive_examples() -> None:
    # Two agreeing votes of a budget of 3: unbeatable after the first round.
    r = replay_adaptive(["4", "4", "9"], first=2, step=2)
    assert (r.used, r.vote.answer, r.decision.reason) == (2, "4", "unbeatable")
    # Disagreement: needs all samples.
    r = replay_adaptive(["1", "2", "3", "2", "1", "2"], first=2, step=2, rule="unbeatable")
    assert r.used == 6 and r.vote.answer == "2" and r.decision.reason == "budget"
    with pytest.raises(ValueError, match="exceeds"):
        replay_adaptive(["1"], 2)


@settings(max_examples=200)
@given(st.lists(answer, min_size=1, max_size=8), st.integers(1, 3), st.integers(1, 3))
def test_replay_unbeatable_gives_the_full_vote_answer(
    answers: list[str | None], first: int, step: int
) -> None:
    # With the exact rule, stopping early never changes the answer the full budget would give.
    r = replay_adaptive(answers, first=first, step=step, rule="unbeatable")
    assert 1 <= r.used <= len(answers)
    assert r.vote == majority_vote(answers[: r.used])
    assert r.vote.answer == majority_vote(answers).answer
    if r.used < len(answers):
        assert r.used in adaptive_schedule(len(answers), first, step)
        assert not _can_change(answers[: r.used], len(answers))
