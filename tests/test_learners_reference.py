"""The Rust learners against the NumPy oracle in reference.py, over random configurations and
random update streams (hypothesis), plus the batch, mask, tie and determinism contracts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray
from reference import RefLinUCB, RefSharedLinUCB, masked_argmax

import uniscale

# Scores must agree to 1e-9 relative. The absolute floor is for scores whose exact value is
# (near) zero: a mean prior_mean + theta.x that cancels, or a bonus at x ~ 0. There only an
# absolute accuracy of about cond(A) * eps * |terms| is possible for *any* implementation (Rust
# uses a Sherman-Morrison inverse, the oracle a direct solve); with the bounds drawn below
# (ridge >= 0.05, |x|, |r|, |psi| <= 2, <= 40 updates) that is below 1e-11, so 1e-10 leaves
# margin without hiding a real error (a wrong formula is off by O(0.01) or more).
RTOL = 1e-9
ATOL = 1e-10
# Two reference totals closer than this are a near tie: either choice is correct.
TIE = 1e-9

Ref = RefLinUCB | RefSharedLinUCB
Learner = uniscale.LinUCB | uniscale.SharedLinUCB


def finite(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@dataclass
class Case:
    kind: str
    k: int
    d: int
    psi: NDArray[np.float64]
    cfg: dict[str, float]
    actions: NDArray[np.int64]
    X: NDArray[np.float64]
    rewards: NDArray[np.float64]
    queries: NDArray[np.float64]
    masks: NDArray[np.bool_]

    def make(self) -> tuple[Learner, Ref]:
        if self.kind == "linucb":
            return uniscale.LinUCB(self.k, self.d, **self.cfg), RefLinUCB(
                self.k, self.d, **self.cfg
            )
        return (
            uniscale.SharedLinUCB(self.psi, self.d, **self.cfg),
            RefSharedLinUCB(self.psi, self.d, **self.cfg),
        )


def draw_cfg(draw: st.DrawFn, ridge: st.SearchStrategy[float]) -> dict[str, float]:
    """A learner configuration with its ridge from ``ridge``."""
    return {
        "alpha": draw(finite(0.0, 3.0)),
        "ridge": draw(ridge),
        # gamma = 1 is the common case and takes a different (Sherman-Morrison) code path.
        "discount": draw(st.one_of(st.just(1.0), finite(0.5, 1.0))),
        "prior_mean": draw(finite(-1.0, 1.0)),
    }


def draw_case(
    draw: st.DrawFn,
    kind: str,
    k: int,
    d: int,
    p: int,
    cfg: dict[str, float],
    n: int,
    masks: NDArray[np.bool_],
    *,
    psi: st.SearchStrategy[float],
    x: st.SearchStrategy[float],
    reward: st.SearchStrategy[float],
) -> Case:
    """A `Case` with action features from ``psi``, ``n`` updates (contexts from ``x``, rewards
    from ``reward``) and one query (from ``x``) per row of ``masks``."""
    return Case(
        kind=kind,
        k=k,
        d=d,
        psi=draw(arrays(np.float64, (k, p), elements=psi)),
        cfg=cfg,
        actions=draw(arrays(np.int64, n, elements=st.integers(0, k - 1))),
        X=draw(arrays(np.float64, (n, d), elements=x)),
        rewards=draw(arrays(np.float64, n, elements=reward)),
        queries=draw(arrays(np.float64, (len(masks), d), elements=x)),
        masks=masks,
    )


@st.composite
def cases(draw: st.DrawFn, kind: str, max_updates: int = 40) -> Case:
    k = draw(st.integers(1, 6))
    d = draw(st.integers(1, 5))
    p = draw(st.integers(1, 3)) if kind == "shared" else 0
    cfg = draw_cfg(draw, finite(0.05, 10.0))
    n = draw(st.integers(0, max_updates))
    n_q = 4
    masks = draw(arrays(np.bool_, (n_q, k)))
    masks[np.arange(n_q), draw(arrays(np.int64, n_q, elements=st.integers(0, k - 1)))] = True
    small = finite(-2.0, 2.0)
    return draw_case(draw, kind, k, d, p, cfg, n, masks, psi=small, x=small, reward=small)


def assert_choice_ok(
    got: int, ref_total: NDArray[np.float64], mask: NDArray[np.bool_] | None
) -> None:
    """`got` must be the reference's choice, except in a near tie, where it must at least be one
    of the tied (allowed) best actions."""
    allowed = np.ones(len(ref_total), bool) if mask is None else mask
    assert allowed[got], f"chose masked-out action {got}"
    want = masked_argmax(ref_total, mask)
    best = ref_total[want]
    tie = TIE * max(1.0, abs(best))
    if got != want:
        contenders = np.flatnonzero(allowed & (ref_total >= best - tie))
        assert len(contenders) > 1 and got in contenders, (
            f"chose {got} (score {ref_total[got]!r}), reference chose {want} (score {best!r})"
        )


def check_against(learner: Learner, ref: Ref, case: Case) -> None:
    """Scores, theta, select (with and without mask) of `learner` match `ref` at every query."""
    assert learner.n_updates == ref.n_updates
    np.testing.assert_allclose(learner.theta(), ref.theta(), rtol=RTOL, atol=ATOL)
    for x, mask in zip(case.queries, case.masks, strict=True):
        mean, bonus = learner.scores(x)
        ref_mean, ref_bonus = ref.scores(x)
        np.testing.assert_allclose(mean, ref_mean, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(bonus, ref_bonus, rtol=RTOL, atol=ATOL)
        total = ref_mean + ref_bonus
        assert_choice_ok(learner.select(x), total, None)
        assert_choice_ok(learner.select(x, mask), total, mask)


@pytest.mark.parametrize("kind", ["linucb", "shared"])
@given(data=st.data())
def test_matches_reference_along_a_stream(kind: str, data: st.DataObject) -> None:
    case = data.draw(cases(kind))
    learner, ref = case.make()
    check_against(learner, ref, case)  # the prior alone
    half = len(case.actions) // 2
    for i, (a, x, r) in enumerate(zip(case.actions, case.X, case.rewards, strict=True)):
        if i == half:
            check_against(learner, ref, case)
        learner.update(int(a), x, float(r))
        ref.update(int(a), x, float(r))
    check_against(learner, ref, case)


@given(data=st.data())
def test_shared_phi_is_the_kronecker_product(data: st.DataObject) -> None:
    case = data.draw(cases("shared", max_updates=0))
    learner, ref = case.make()
    assert isinstance(learner, uniscale.SharedLinUCB) and isinstance(ref, RefSharedLinUCB)
    assert learner.joint_dim == ref.joint_dim == (case.d + 1) * (case.psi.shape[1] + 1)
    for x in case.queries:
        for a in range(case.k):
            np.testing.assert_array_equal(learner.phi(x, a), ref.phi(x, a))
    np.testing.assert_array_equal(learner.action_features(), case.psi)


@pytest.mark.parametrize("kind", ["linucb", "shared"])
@given(data=st.data())
def test_batch_forms_equal_the_loop_of_single_calls(kind: str, data: st.DataObject) -> None:
    case = data.draw(cases(kind))
    batched, _ = case.make()
    looped, _ = case.make()
    batched.update_many(case.actions, case.X, case.rewards)
    for a, x, r in zip(case.actions, case.X, case.rewards, strict=True):
        looped.update(int(a), x, float(r))
    # Same operations in the same order: bit-identical, not merely close.
    assert batched.to_bytes() == looped.to_bytes()
    assert batched.n_updates == looped.n_updates == len(case.actions)

    Q, masks = case.queries, case.masks
    singles = [looped.select(x) for x in Q]
    np.testing.assert_array_equal(batched.select_many(Q), singles)
    per_row = [looped.select(x, m) for x, m in zip(Q, masks, strict=True)]
    np.testing.assert_array_equal(batched.select_many(Q, masks), per_row)
    shared_mask = masks[0]
    shared = [looped.select(x, shared_mask) for x in Q]
    np.testing.assert_array_equal(batched.select_many(Q, shared_mask), shared)
    out = batched.select_many(Q)
    assert out.dtype == np.int64 and out.shape == (len(Q),)


@pytest.mark.parametrize("kind", ["linucb", "shared"])
@given(data=st.data())
def test_identical_streams_give_bit_identical_state(kind: str, data: st.DataObject) -> None:
    case = data.draw(cases(kind))
    one, _ = case.make()
    two, _ = case.make()
    for learner in (one, two):
        for a, x, r in zip(case.actions, case.X, case.rewards, strict=True):
            learner.update(int(a), x, float(r))
    assert one.to_bytes() == two.to_bytes()
    for x in case.queries:
        m1, b1 = one.scores(x)
        m2, b2 = two.scores(x)
        assert m1.tobytes() == m2.tobytes() and b1.tobytes() == b2.tobytes()


@pytest.mark.parametrize("kind", ["linucb", "shared"])
@given(data=st.data())
def test_select_respects_every_mask(kind: str, data: st.DataObject) -> None:
    case = data.draw(cases(kind, max_updates=10))
    learner, _ = case.make()
    learner.update_many(case.actions, case.X, case.rewards)
    for x, mask in zip(case.queries, case.masks, strict=True):
        assert mask[learner.select(x, mask)]
    for row, mask in zip(learner.select_many(case.queries, case.masks), case.masks, strict=True):
        assert mask[row]


# --- ties -------------------------------------------------------------------------------------


def test_fresh_linucb_ties_go_to_the_lowest_allowed_index() -> None:
    learner = uniscale.LinUCB(5, 3)
    x = np.array([0.3, -1.0, 2.0])
    mean, bonus = learner.scores(x)
    assert len(set((mean + bonus).tolist())) == 1  # a genuine, exact tie
    assert learner.select(x) == 0
    assert learner.select(x, np.array([False, False, True, True, True])) == 2
    np.testing.assert_array_equal(
        learner.select_many(np.stack([x, x]), np.array([[False, True, True, False, False]] * 2)),
        [1, 1],
    )


def test_identically_trained_arms_tie_to_the_lower_index() -> None:
    learner = uniscale.LinUCB(4, 2, alpha=0.1)
    x = np.array([1.0, 0.5])
    for arm in (3, 1):  # same data, applied to arm 3 first
        for _ in range(5):
            learner.update(arm, x, 1.0)
    mean, bonus = learner.scores(x)
    assert mean[1] + bonus[1] == mean[3] + bonus[3] > mean[0] + bonus[0]
    assert learner.select(x) == 1
    assert learner.select(x, np.array([True, False, True, True])) == 3


@given(
    row=arrays(np.float64, 2, elements=finite(-2.0, 2.0)),
    copies=st.integers(2, 5),
    x=arrays(np.float64, 3, elements=finite(-2.0, 2.0)),
    reward=finite(-1.0, 1.0),
    first=st.integers(0, 4),
)
def test_shared_duplicate_actions_tie_to_the_lowest_index(
    row: NDArray[np.float64], copies: int, x: NDArray[np.float64], reward: float, first: int
) -> None:
    # Every action has the same features, hence bit-identical scores.
    learner = uniscale.SharedLinUCB(np.tile(row, (copies, 1)), 3, alpha=0.7)
    learner.update(copies - 1, x, reward)
    assert learner.select(x) == 0
    mask = np.arange(copies) >= min(first, copies - 1)
    assert learner.select(x, mask) == min(first, copies - 1)


# --- editing the action set -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linucb", "shared"])
@given(data=st.data())
def test_add_and_remove_actions_match_the_reference(kind: str, data: st.DataObject) -> None:
    case = data.draw(cases(kind, max_updates=20))
    learner, ref = case.make()
    learner.update_many(case.actions, case.X, case.rewards)
    ref.update_many(case.actions, case.X, case.rewards)

    n_new = data.draw(st.integers(0, 3))
    if isinstance(learner, uniscale.LinUCB):
        assert isinstance(ref, RefLinUCB)
        new = learner.add_actions(n_new)
        ref.A = np.concatenate([ref.A, np.tile(ref.ridge * np.eye(case.d), (n_new, 1, 1))])
        ref.b = np.concatenate([ref.b, np.zeros((n_new, case.d))])
        ref.counts = np.concatenate([ref.counts, np.zeros(n_new, dtype=np.int64)])
    else:
        assert isinstance(ref, RefSharedLinUCB)
        psi_new = data.draw(arrays(np.float64, (n_new, case.psi.shape[1]), elements=finite(-2, 2)))
        new = learner.add_actions(psi_new)
        ref.psi = np.concatenate([ref.psi, psi_new])
    np.testing.assert_array_equal(new, np.arange(case.k, case.k + n_new))
    assert learner.n_actions == ref.n_actions == case.k + n_new

    total = case.k + n_new
    drop = data.draw(st.lists(st.integers(0, total - 1), max_size=total - 1, unique=True))
    mapping = learner.remove_actions(np.array(drop, dtype=np.int64))
    keep = np.setdiff1d(np.arange(total), drop)
    want = np.full(total, -1)
    want[keep] = np.arange(len(keep))
    np.testing.assert_array_equal(mapping, want)
    if isinstance(ref, RefLinUCB):
        ref.A, ref.b, ref.counts = ref.A[keep], ref.b[keep], ref.counts[keep]
    else:
        ref.psi = ref.psi[keep]
    assert learner.n_actions == ref.n_actions == len(keep)

    case.masks = np.ones((len(case.queries), len(keep)), bool)
    check_against(learner, ref, case)


@given(
    d=st.integers(25, 48),
    k=st.integers(2, 10),
    n=st.integers(0, 40),
    alpha=st.sampled_from([0.05, 1.0, 3.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_disjoint_select_above_screen_dim_is_the_exact_argmax(
    d: int, k: int, n: int, alpha: float, seed: int
) -> None:
    """From d = 25 the disjoint learner's `select` screens actions in float32 before an exact
    float64 re-score (rust/linucb.rs); its choice must still be the argmax of its own float64
    `scores` (ties to the lowest index) and agree with the NumPy oracle wherever the oracle's
    top two scores are not within rounding of each other."""
    rng = np.random.default_rng(seed)
    learner = uniscale.LinUCB(n_actions=k, dim=d, alpha=alpha, ridge=1.0)
    ref = RefLinUCB(k, d, alpha=alpha, ridge=1.0)
    for _ in range(n):
        x, a, r = rng.normal(size=d), int(rng.integers(k)), float(rng.normal())
        learner.update(a, x, r)
        ref.update(a, x, r)
    X = rng.normal(size=(8, d)) * rng.choice([1e-6, 1.0, 1e6])
    mask = rng.random((8, k)) < 0.7
    mask[:, 0] = True
    chosen = learner.select_many(X, mask=mask)
    for i, x in enumerate(X):
        mean, bonus = learner.scores(x)
        total = mean + bonus
        assert learner.select(x) == masked_argmax(total)
        assert chosen[i] == learner.select(x, mask=mask[i]) == masked_argmax(total, mask[i])
        rm, rb = ref.scores(x)
        top = np.sort(rm + rb)[::-1]
        if top[0] - top[1] > 1e-9 * max(1.0, abs(top[0])):
            assert learner.select(x) == ref.select(x)


# --- extreme but finite inputs (review of 2026-12-02, D1/D5/D9/D10) ---------------------------

# Features up to 1e9 in magnitude (unix times, byte counts), mixed with tiny ones; ridge down to
# 1e-8; rewards up to 1e3. Nothing here is an error: every operation must be accepted.
EXTREME = st.one_of(finite(-1e9, 1e9), finite(-1e-6, 1e-6), st.sampled_from([1.0, 1.7e9, 0.0]))


@st.composite
def extreme_cases(draw: st.DrawFn, kind: str) -> Case:
    k = draw(st.integers(1, 4))
    d = draw(st.integers(1, 4))
    p = draw(st.integers(1, 2)) if kind == "shared" else 0
    n = draw(st.integers(1, 60))
    cfg = draw_cfg(draw, st.one_of(st.sampled_from([1e-8, 1e-6, 1.0]), finite(1e-8, 10.0)))
    masks = np.ones((4, k), bool)
    return draw_case(
        draw,
        kind,
        k,
        d,
        p,
        cfg,
        n,
        masks,
        psi=finite(-3.0, 3.0),
        x=EXTREME,
        reward=finite(-1e3, 1e3),
    )


def assert_finite_and_loadable(learner: Learner) -> None:
    blob = learner.to_bytes()
    restored = type(learner).from_bytes(blob)
    assert restored.to_bytes() == blob
    assert np.isfinite(learner.theta()).all() and np.isfinite(restored.theta()).all()


@pytest.mark.parametrize("kind", ["linucb", "shared"])
@given(data=st.data())
def test_extreme_streams_are_accepted_stay_finite_and_load(kind: str, data: st.DataObject) -> None:
    """After every accepted operation the state saves and loads back and everything it reports
    is finite; with features up to 1e9 and ridge down to 1e-8 no operation is refused."""
    case = data.draw(extreme_cases(kind))
    learner, _ = case.make()
    batched, _ = case.make()
    half = len(case.actions) // 2
    for i, (a, x, r) in enumerate(zip(case.actions, case.X, case.rewards, strict=True)):
        learner.update(int(a), x, float(r))
        if i % 7 == 0 or i == half:
            assert_finite_and_loadable(learner)
    batched.update_many(case.actions[:half], case.X[:half], case.rewards[:half])
    assert_finite_and_loadable(batched)
    batched.update_many(case.actions[half:], case.X[half:], case.rewards[half:])
    assert_finite_and_loadable(learner)
    assert_finite_and_loadable(batched)
    for x in case.queries:
        for m in (learner, batched):
            mean, bonus = m.scores(x)
            assert np.isfinite(mean).all() and np.isfinite(bonus).all()
            assert 0 <= m.select(x) < case.k
    assert list(learner.select_many(case.queries)) == [learner.select(x) for x in case.queries]


@pytest.mark.parametrize("kind", ["linucb", "shared"])
@given(data=st.data())
def test_well_scaled_tiny_ridge_matches_reference(kind: str, data: st.DataObject) -> None:
    """Ridge down to 1e-8 with well-scaled features: the exact fallbacks for large
    Sherman-Morrison denominators keep the learner's confidence widths on the oracle's."""
    case = data.draw(cases(kind, max_updates=25))
    case.cfg["ridge"] = data.draw(st.sampled_from([1e-8, 1e-6, 1e-4]))
    learner, ref = case.make()
    for a, x, r in zip(case.actions, case.X, case.rewards, strict=True):
        learner.update(int(a), x, float(r))
        ref.update(int(a), x, float(r))
    assert_finite_and_loadable(learner)
    # A tiny ridge makes A nearly singular along unseen directions, where theta is only
    # determined to cond(A) * eps (1e8 * |b| here); the bonus depends on A alone and must agree.
    for x in case.queries:
        mean, bonus = learner.scores(x)
        _ref_mean, ref_bonus = ref.scores(x)
        assert np.isfinite(mean).all() and np.isfinite(bonus).all()
        np.testing.assert_allclose(
            bonus, ref_bonus, rtol=1e-4, atol=1e-6 * max(1.0, ref_bonus.max())
        )


@pytest.mark.parametrize("kind", ["linucb", "shared"])
@given(
    x=st.floats(1e-12, 1e150),
    reward=st.floats(-1e305, 1e305, allow_nan=False),
    ridge=st.sampled_from([1e-10, 1e-8, 1.0, 1e10]),
    repeats=st.integers(1, 3),
)
def test_huge_values_are_rejected_before_mutation_or_kept_finite(
    kind: str, x: float, reward: float, ridge: float, repeats: int
) -> None:
    learner = build_kind(kind, ridge)
    for _ in range(repeats):
        before = learner.to_bytes()
        try:
            learner.update(0, [x], reward)
        except uniscale.NonFiniteError:
            assert learner.to_bytes() == before
        assert_finite_and_loadable(learner)
        mean, bonus = learner.scores([1.0])
        assert np.isfinite(mean).all() and np.isfinite(bonus).all()


def build_kind(kind: str, ridge: float) -> Learner:
    if kind == "linucb":
        return uniscale.LinUCB(2, 1, ridge=ridge)
    return uniscale.SharedLinUCB(np.array([[0.0], [1.0]]), 1, ridge=ridge)
