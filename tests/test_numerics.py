"""Ill-conditioned and extreme inputs: regression tests for the learner-numerics findings of the
2026-12-02 review (D1, D4, D5, D9, D10, D18), each reproducing the reported failure.

The invariants checked here: every state an accepted operation produces saves and loads back
(file, bytes, pickle, deepcopy); updates with finite, in-range inputs never raise
NumericalError (``A = ridge I + sum x x'`` is positive definite in exact arithmetic); every
accepted operation keeps the statistics, theta and every reported score finite; a rejected
operation changes nothing; out-of-range indices of any size are `UnknownActionError`.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Learner, MakeLearner, build

import uniscale
from uniscale import (
    ActionSpace,
    ConfigError,
    ModelSpec,
    NonFiniteError,
    Policy,
    ShapeError,
    UnknownActionError,
)
from uniscale._core import REFRESH_PERIOD

UNIX_TIME = 1.7e9


def assert_round_trips(learner: Learner, tmp_path: Path) -> None:
    """The state loads back by every route, to the same bytes and (near) the same scores."""
    blob = learner.to_bytes()
    path = tmp_path / "state.bin"
    learner.save(path)
    kind = type(learner)
    x = np.ones(learner.dim)
    mean, bonus = learner.scores(x)
    assert np.isfinite(mean).all() and np.isfinite(bonus).all()
    for restored in (
        kind.load(path),
        kind.from_bytes(blob),
        pickle.loads(pickle.dumps(learner)),
        copy.deepcopy(learner),
    ):
        assert restored.to_bytes() == blob
        m2, b2 = restored.scores(x)
        assert np.isfinite(m2).all() and np.isfinite(b2).all()
        assert np.isfinite(restored.theta()).all()


# --- D1: state that saves but never loads ---------------------------------------------------


def test_d1_huge_features_state_loads_back(tmp_path: Path) -> None:
    # Repro: LinUCB(1, 2).update(0, [1e8, 1e8], 1.0) saved a matrix I + 1e16 [[1, 1], [1, 1]]
    # that is singular in floating point; load raised StateError ("not positive definite").
    learner = uniscale.LinUCB(1, 2)
    learner.update(0, [1e8, 1e8], 1.0)
    assert_round_trips(learner, tmp_path)


@pytest.mark.parametrize("ridge", [1.0, 1e-8])
def test_d1_unix_time_features_never_raise_and_always_load(
    kind: str, ridge: float, tmp_path: Path
) -> None:
    # x = [1, unix time]: features in the billions next to an intercept, over a refresh period.
    learner = build(kind, 3, 2, ridge=ridge, alpha=0.3)
    rng = np.random.default_rng(1)
    for i in range(REFRESH_PERIOD + 300):
        x = [1.0, UNIX_TIME + 37.0 * i]
        learner.update(i % 3, x, float(rng.random()))
        if i % 211 == 0:
            assert_round_trips(learner, tmp_path)
        assert learner.select(x) in range(3)
    assert_round_trips(learner, tmp_path)


def test_d1_many_updates_of_ill_conditioned_batches_load(kind: str, tmp_path: Path) -> None:
    learner = build(kind, 4, 3, ridge=1e-8)
    rng = np.random.default_rng(2)
    for _ in range(30):
        X = np.column_stack(
            [np.ones(64), UNIX_TIME + rng.integers(0, 10**6, 64), rng.normal(size=64) * 1e-6]
        )
        learner.update_many(rng.integers(0, 4, 64), X, rng.random(64))
        assert np.isfinite(learner.theta()).all()
    assert_round_trips(learner, tmp_path)


def test_d1_shared_unix_time_predictions_survive_the_round_trip(tmp_path: Path) -> None:
    learner = build("shared", 3, 2, ridge=1.0)
    rng = np.random.default_rng(3)
    for i in range(2000):
        learner.update(i % 3, [1.0, UNIX_TIME + i], 0.2 + 0.3 * (i % 3) + 0.01 * rng.random())
    restored = uniscale.SharedLinUCB.from_bytes(learner.to_bytes())
    x = np.array([1.0, UNIX_TIME + 2000])
    np.testing.assert_allclose(restored.scores(x)[0], learner.scores(x)[0], rtol=1e-6, atol=1e-6)
    # what was learned is what was fed: the three actions' qualities, in order
    assert np.all(np.diff(learner.scores(x)[0]) > 0.1)


def make_policy(learner: str, ridge: float) -> Policy:
    models = [ModelSpec("cheap", 0.2, 0.8), ModelSpec("big", 5.0, 20.0)]
    return Policy(ActionSpace.grid(models, n_values=(1, 2)), 2, learner=learner, ridge=ridge)  # type: ignore[arg-type]


@pytest.mark.parametrize("learner", ["shared", "disjoint"])
@pytest.mark.parametrize("ridge", [1.0, 1e-8])
def test_d1_policy_with_unix_time_keeps_learning_and_loads(
    learner: str, ridge: float, tmp_path: Path
) -> None:
    # Repro: a shared-learner Policy fed x = [1, unix_time] raised NumericalError from about the
    # 10th update (the feedback was lost) and its saved state did not load.
    policy = make_policy(learner, ridge)
    rng = np.random.default_rng(4)
    for i in range(1200):
        x = [1.0, UNIX_TIME + 60.0 * i]
        d = policy.select(x, 300.0, now=float(i))
        r = policy.update(d.id, quality=float(rng.random()), now=float(i))
        assert r.learner_updated
        if i % 300 == 0:
            Policy.from_bytes(policy.to_bytes())
    path = tmp_path / "policy.bin"
    policy.save(path)
    for restored in (Policy.load(path), pickle.loads(pickle.dumps(policy)), copy.deepcopy(policy)):
        assert restored.to_bytes() == policy.to_bytes()
        restored.select([1.0, UNIX_TIME], 300.0, now=0.0)


# --- D4: out of memory aborted the interpreter ----------------------------------------------


def run_limited(code: str, limit_bytes: int) -> subprocess.CompletedProcess[str]:
    prelude = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({limit_bytes}, {limit_bytes}))
        import numpy as np
        import uniscale
        """
    )
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    import os

    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


GIB = 1 << 30


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS semantics")
@pytest.mark.parametrize(
    ("code", "expect"),
    [
        ("uniscale.LinUCB(64, 4096)", "ConfigError"),
        ("uniscale.LinUCB(1, 4096).add_actions(63)", "ConfigError"),
        ("uniscale.LinUCB(65536, 256)", "ConfigError"),
        ("uniscale.LinUCB(5, 4096)", "MemoryError"),  # under the cap, over this limit
        ("uniscale.SharedLinUCB(np.zeros((65536, 2047)), 1)", "MemoryError"),
        ("uniscale.SharedLinUCB(np.zeros((2, 4095)), 1)", "ConfigError"),  # joint dim
    ],
)
def test_d4_oversized_learners_raise_instead_of_aborting(code: str, expect: str) -> None:
    # Repro: LinUCB(64, 4096) under a 3 GiB address-space limit died of SIGABRT.
    probe = f"""
    try:
        {code}
    except Exception as e:
        print(type(e).__name__, e)
    else:
        print("accepted")
    """
    limit = 3 * GIB if expect == "ConfigError" else GIB + GIB // 2
    out = run_limited(probe, limit)
    assert out.returncode == 0, f"killed by a signal / crashed: {out.returncode} {out.stderr}"
    assert out.stdout.startswith(expect), out.stdout + out.stderr


def test_d4_the_cap_is_documented_in_the_message() -> None:
    with pytest.raises(ConfigError, match=r"GiB of state, above the limit of 2 GiB"):
        uniscale.LinUCB(64, 4096)


# --- D5: update_many is all-or-nothing --------------------------------------------------------


@pytest.mark.parametrize("discount", [1.0, 0.9])
def test_d5_update_many_applies_every_row_or_none(kind: str, discount: float) -> None:
    # Repro: LinUCB(1, 2, discount=0.9).update_many([0, 0], [[.5, .5], [1e10, 1e10]], [0, 0])
    # raised NumericalError with the first row applied. Now the rows are valid (the second is
    # merely ill-conditioned) and both are applied; a rejected batch leaves nothing behind.
    learner = build(kind, 1, 2, discount=discount)
    learner.update_many([0, 0], [[0.5, 0.5], [1e10, 1e10]], [0.0, 0.0])
    assert learner.n_updates == 2
    type(learner).from_bytes(learner.to_bytes())
    before = learner.to_bytes()
    with pytest.raises(NonFiniteError):
        learner.update_many([0, 0, 0], [[0.5, 0.5], [1.0, 1.0], [1e151, 0.0]], [0.0, 1.0, 0.0])
    with pytest.raises(NonFiniteError, match="overflows"):
        learner.update_many([0, 0], [[1.0, 0.0], [1.0, 0.0]], [1.0, 6e299])
    assert learner.to_bytes() == before


@pytest.mark.parametrize("discount", [1.0, 0.9])
def test_d5_update_many_rolls_back_on_accumulated_theta_overflow(
    kind: str, discount: float
) -> None:
    # Each row alone is fine; together they would push theta past the limit.
    learner = build(kind, 2, 1, ridge=1e-10, discount=discount)
    # one row's bound on |theta| (n |b| / ridge) is half the limit, three rows' 1.5 times it
    reward = 5e294 if kind == "linucb" else 0.5e300 * 1e-10 / learner.joint_dim  # type: ignore[union-attr]
    learner.update(0, [1e-5], reward)
    before = learner.to_bytes()
    with pytest.raises(NonFiniteError, match="overflows"):
        learner.update_many([0] * 2, [[1e-5]] * 2, [reward] * 2)
    assert learner.to_bytes() == before
    assert np.isfinite(learner.theta()).all()


# --- D9: theta overflow with a tiny ridge -----------------------------------------------------


def test_d9_theta_overflow_is_rejected_before_mutation(make: MakeLearner) -> None:
    # Repro: LinUCB(2, 1, ridge=1e-10).update(0, [1e-8], 9e307) -> theta [inf].
    learner = make(2, 1, ridge=1e-10)
    before = learner.to_bytes()
    with pytest.raises(NonFiniteError, match=r"theta"):
        learner.update(0, [1e-8], 9e307)
    assert learner.to_bytes() == before
    assert np.isfinite(learner.theta()).all()


@pytest.mark.parametrize("reward", [1e250, -1e280, 1e295, 9e307])
@pytest.mark.parametrize("x", [1e-8, 1e-3, 1.0, 1e5])
def test_d9_accepted_updates_keep_theta_finite(make: MakeLearner, reward: float, x: float) -> None:
    learner = make(2, 1, ridge=1e-10)
    for _ in range(3):
        try:
            learner.update(0, [x], reward)
        except NonFiniteError:
            pass
        assert np.isfinite(learner.theta()).all()
        mean, bonus = learner.scores([1.0])
        assert np.isfinite(mean).all() and np.isfinite(bonus).all()
        type(learner).from_bytes(learner.to_bytes())


# --- D10: finite but huge inputs gave inf/NaN scores ------------------------------------------


def test_d10_alpha_is_bounded(make: MakeLearner) -> None:
    with pytest.raises(ConfigError, match=r"alpha must be <= 1e6"):
        make(2, 2, alpha=1.79e308)
    assert make(2, 2, alpha=1e6).alpha == 1e6


def test_d10_huge_action_features_are_rejected() -> None:
    with pytest.raises(NonFiniteError, match=r"action_features\[1\] = 1e300 exceeds"):
        uniscale.SharedLinUCB(np.array([[0.0, 1e300]]), 2)
    learner = uniscale.SharedLinUCB(np.array([[0.0, 1.0]]), 2)
    with pytest.raises(NonFiniteError, match=r"exceeds the feature limit"):
        learner.add_actions(np.array([[1e200, 0.0]]))
    assert learner.n_actions == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.select([1e155, 0.0]),
        lambda m: m.scores([0.0, -1e155]),
        lambda m: m.select_many(np.array([[0.0, 0.0], [1e155, 0.0]])),
        lambda m: m.update(0, [1e155, 0.0], 0.0),
    ],
    ids=["select", "scores", "select_many", "update"],
)
def test_d10_features_whose_square_overflows_are_rejected(trained: Learner, call: Any) -> None:
    before = trained.to_bytes()
    with pytest.raises(NonFiniteError, match=r"exceeds the feature limit 1e150"):
        call(trained)
    assert trained.to_bytes() == before


def test_d10_scores_that_overflow_in_combination_are_an_error_not_inf(
    make: MakeLearner,
) -> None:
    learner = make(2, 1, ridge=1e-10)
    learner.update(0, [1e-5], 1e285)  # theta ~ 5e289: legal, finite
    assert np.isfinite(learner.theta()).all()
    for call in (
        lambda: learner.select([1e150]),
        lambda: learner.scores([1e150]),
        lambda: learner.select_many(np.array([[1e150]])),
    ):
        with pytest.raises(NonFiniteError, match=r"score"):
            call()
    mean, bonus = learner.scores([1.0])
    assert np.isfinite(mean).all() and np.isfinite(bonus).all()


def test_d10_policy_never_decides_on_non_finite_scores() -> None:
    policy = make_policy("disjoint", 1e-10)
    policy.observe([1e-5, 0.0], 0, 1e285)
    with pytest.raises(NonFiniteError):
        policy.select([1e150, 0.0], 300.0, now=0.0)
    with pytest.raises(NonFiniteError, match="exceeds the feature limit"):
        policy.select([1e155, 0.0], 300.0, now=0.0)


# --- D18: shapes and indices ------------------------------------------------------------------


def test_d18_transposed_mask_is_a_shape_error(trained: Learner) -> None:
    X = np.zeros((2, 2))
    mask = np.ones((3, 2), bool)  # (K, n): as many entries as (n, K), but transposed
    with pytest.raises(ShapeError, match=r"shape \(3, 2\), expected \(n_rows, n_actions\)"):
        trained.select_many(X, mask)
    ok = np.ones((2, 3), bool)
    ok[:, 0] = False
    assert (trained.select_many(X, ok) != 0).all()


def test_d18_square_mask_is_read_as_rows_by_actions(make: MakeLearner) -> None:
    learner = make(3, 2)
    mask = np.eye(3, dtype=bool)
    np.testing.assert_array_equal(learner.select_many(np.zeros((3, 2)), mask), [0, 1, 2])
    np.testing.assert_array_equal(learner.select_many(np.zeros((3, 2)), mask.T.copy()), [0, 1, 2])


HUGE_INDICES = [2**63, 2**64 + 3, -(2**63) - 1, -(2**100), np.uint64(2**64 - 1)]


@pytest.mark.parametrize("action", HUGE_INDICES, ids=str)
def test_d18_out_of_range_indices_are_unknown_actions(trained: Learner, action: Any) -> None:
    # Repro: update(2**63, ...) raised OverflowError.
    before = trained.to_bytes()
    with pytest.raises(UnknownActionError, match=r"unknown action"):
        trained.update(action, [0.0, 0.0], 1.0)
    if isinstance(trained, uniscale.LinUCB):
        with pytest.raises(UnknownActionError):
            trained.theta(action)
    else:
        with pytest.raises(UnknownActionError):
            trained.phi([0.0, 0.0], action)
    assert trained.to_bytes() == before


def test_d18_bool_action_is_rejected(trained: Learner) -> None:
    before = trained.to_bytes()
    with pytest.raises(UnknownActionError, match=r"int index"):
        trained.update(True, [0.0, 0.0], 1.0)
    assert trained.to_bytes() == before


@pytest.mark.parametrize("action", [*HUGE_INDICES, True], ids=str)
def test_d18_policy_observe_huge_index(action: Any) -> None:
    policy = make_policy("shared", 1.0)
    before = policy.to_bytes()
    with pytest.raises(UnknownActionError):
        policy.observe([0.0, 0.0], action, 0.5)
    with pytest.raises(UnknownActionError):
        policy._core.observe([0.0, 0.0], action, 0.5)
    assert policy.to_bytes() == before
