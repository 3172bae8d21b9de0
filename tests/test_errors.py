"""The bad-input battery: every error by type and message, and a rejected call changes nothing.

Also the other side of validation: inputs that are merely *unusual* (lists, ints, float32,
non-contiguous views, Fortran order) are accepted and give the same result as the canonical
float64 C-contiguous array.

The last section holds regression tests for defects this battery found in the core (partial
batch updates on overflow, accumulated overflow, the all-masked error type in batches, p = 0
shared learners, empty index lists, complex input, and a ridge too small to invert).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import Learner, MakeLearner

import uniscale
from uniscale import (
    AllMaskedError,
    ConfigError,
    DTypeError,
    NonFiniteError,
    NumericalError,
    ShapeError,
    StateError,
    UniScaleError,
    UnknownActionError,
)

K, D = 3, 2  # the shape of the `trained` fixture
X0 = np.array([0.5, -0.25])
XS = np.array([[0.5, -0.25], [1.0, 2.0]])
ALL = np.ones(K, bool)

Call = Callable[[Learner], Any]

# (id, call, exception, message regex). Every call is made on a trained (K=3, D=2) learner of
# each kind. `match` is a regex searched in str(exception).
BAD_CALLS: list[tuple[str, Call, type[Exception], str]] = [
    # -- shapes
    ("x too long", lambda m: m.select([1.0, 2.0, 3.0]), ShapeError, r"x has length 3, expected 2"),
    ("x too short", lambda m: m.scores([1.0]), ShapeError, r"x has length 1, expected 2"),
    ("x 2-D", lambda m: m.select(XS), ShapeError, r"x must be 1-D, got a 2-D array"),
    ("x scalar", lambda m: m.select(1.0), ShapeError, r"x must be 1-D, got a 0-D array"),
    ("update x length", lambda m: m.update(0, [1.0], 1.0), ShapeError, r"x has length 1"),
    ("update x 2-D", lambda m: m.update(0, XS, 1.0), ShapeError, r"x must be 1-D"),
    (
        "mask length",
        lambda m: m.select(X0, [True, True]),
        ShapeError,
        r"mask has length 2, expected 3",
    ),
    ("mask 2-D in select", lambda m: m.select(X0, ALL[None]), ShapeError, r"mask must be 1-D"),
    ("X 1-D", lambda m: m.select_many(X0), ShapeError, r"X must be 2-D, got a 1-D array"),
    (
        "X columns",
        lambda m: m.select_many(np.zeros((2, 3))),
        ShapeError,
        r"X has 3 columns, expected dim = 2",
    ),
    (
        "batch mask length",
        lambda m: m.select_many(XS, np.ones(4, bool)),
        ShapeError,
        r"mask has length 4",
    ),
    (
        "per-row mask rows",
        lambda m: m.select_many(XS, np.ones((3, K), bool)),
        ShapeError,
        r"mask has length 9, expected 6",
    ),
    (
        "mask 3-D",
        lambda m: m.select_many(XS, np.ones((2, K, 1), bool)),
        ShapeError,
        r"mask must be \(n_actions,\) or \(n_rows, n_actions\)",
    ),
    (
        "rows vs actions",
        lambda m: m.update_many([0, 1], np.zeros((3, D)), [0.0] * 3),
        ShapeError,
        r"X has 3 rows but 2 actions",
    ),
    (
        "rewards length",
        lambda m: m.update_many([0, 1, 2], np.zeros((3, D)), [0.0] * 2),
        ShapeError,
        r"rewards has length 2, expected 3",
    ),
    (
        "update_many X columns",
        lambda m: m.update_many([0], np.zeros((1, 5)), [0.0]),
        ShapeError,
        r"X has 5 columns, expected dim = 2",
    ),
    ("update_many X 1-D", lambda m: m.update_many([0], X0, [0.0]), ShapeError, r"X must be 2-D"),
    (
        "actions 2-D",
        lambda m: m.update_many([[0], [1]], np.zeros((2, D)), [0.0] * 2),
        ShapeError,
        r"actions must be 1-D",
    ),
    (
        "rewards 2-D",
        lambda m: m.update_many([0, 1], np.zeros((2, D)), [[0.0], [0.0]]),
        ShapeError,
        r"rewards must be 1-D",
    ),
    # -- dtypes
    ("x string", lambda m: m.select("ab"), DTypeError, r"x cannot be converted to float64"),
    (
        "x list of strings",
        lambda m: m.scores(["a", "b"]),
        DTypeError,
        r"x cannot be converted to float64",
    ),
    (
        "x object array",
        lambda m: m.select(np.array([1.0, "z"], dtype=object)),
        DTypeError,
        r"x cannot be converted",
    ),
    ("x ragged", lambda m: m.select([[1.0], [1.0, 2.0]]), DTypeError, r"x cannot be converted"),
    (
        "update x strings",
        lambda m: m.update(0, ["a", "b"], 1.0),
        DTypeError,
        r"x cannot be converted",
    ),
    (
        "X strings",
        lambda m: m.select_many([["a", "b"]]),
        DTypeError,
        r"X cannot be converted to float64",
    ),
    (
        "mask of ints",
        lambda m: m.select(X0, np.array([1, 0, 1])),
        DTypeError,
        r"mask must be a boolean array, got dtype int64",
    ),
    (
        "mask of floats",
        lambda m: m.select(X0, np.ones(K)),
        DTypeError,
        r"mask must be a boolean array, got dtype float64",
    ),
    (
        "mask list of ints",
        lambda m: m.select(X0, [1, 1, 1]),
        DTypeError,
        r"mask must be a boolean array",
    ),
    (
        "batch mask of ints",
        lambda m: m.select_many(XS, np.ones((2, K), dtype=np.int8)),
        DTypeError,
        r"mask must be a boolean array, got dtype int8",
    ),
    (
        "actions float",
        lambda m: m.update_many([0.0, 1.0], np.zeros((2, D)), [0.0] * 2),
        DTypeError,
        r"actions must be an array of integers",
    ),
    (
        "actions bool",
        lambda m: m.update_many([True, False], np.zeros((2, D)), [0.0] * 2),
        DTypeError,
        r"actions must be an array of integers, got dtype kind \"b\"",
    ),
    (
        "actions strings",
        lambda m: m.update_many(["0", "1"], np.zeros((2, D)), [0.0] * 2),
        DTypeError,
        r"actions must be an array of integers",
    ),
    (
        "rewards strings",
        lambda m: m.update_many([0], np.zeros((1, D)), ["a"]),
        DTypeError,
        r"rewards cannot be converted to float64",
    ),
    (
        "X object None",
        lambda m: m.update_many([0], np.array([[1.0, {}]], dtype=object), [0.0]),
        DTypeError,
        r"X cannot be converted",
    ),
    (
        "indices float",
        lambda m: m.remove_actions([0.5]),
        DTypeError,
        r"indices must be an array of integers",
    ),
    # -- non-finite
    ("x NaN", lambda m: m.select([np.nan, 0.0]), NonFiniteError, r"x\[0\] = NaN"),
    ("x inf", lambda m: m.scores([0.0, np.inf]), NonFiniteError, r"x\[1\] = inf"),
    (
        "x None is NaN",
        lambda m: m.select(np.array([1.0, None], dtype=object)),
        NonFiniteError,
        r"x\[1\] = NaN",
    ),
    ("update x -inf", lambda m: m.update(1, [-np.inf, 0.0], 1.0), NonFiniteError, r"x\[0\] = -inf"),
    ("reward NaN", lambda m: m.update(1, X0, float("nan")), NonFiniteError, r"reward = NaN"),
    ("reward inf", lambda m: m.update(1, X0, float("inf")), NonFiniteError, r"reward = inf"),
    (
        "X NaN",
        lambda m: m.select_many(np.array([[0.0, 0.0], [np.nan, 0.0]])),
        NonFiniteError,
        r"X\[2\] = NaN",
    ),
    (
        "update_many X inf",
        lambda m: m.update_many([0, 1], np.array([[0.0, 0.0], [0.0, -np.inf]]), [0.0, 0.0]),
        NonFiniteError,
        r"X\[3\] = -inf",
    ),
    (
        "update_many rewards NaN",
        lambda m: m.update_many([0, 1], np.zeros((2, D)), [0.0, np.nan]),
        NonFiniteError,
        r"rewards\[1\] = NaN",
    ),
    ("x x' overflows", lambda m: m.update(0, [1e200, 0.0], 1.0), NonFiniteError, r"overflows"),
    (
        "reward * x overflows",
        lambda m: m.update(0, [10.0, 0.0], 1e308),
        NonFiniteError,
        r"overflows",
    ),
    # -- unknown actions
    (
        "action -1",
        lambda m: m.update(-1, X0, 1.0),
        UnknownActionError,
        r"unknown action -1: valid actions are 0\.\.3",
    ),
    (
        "action K",
        lambda m: m.update(3, X0, 1.0),
        UnknownActionError,
        r"unknown action 3: valid actions are 0\.\.3",
    ),
    (
        "action huge",
        lambda m: m.update(2**40, X0, 1.0),
        UnknownActionError,
        r"unknown action 1099511627776",
    ),
    (
        "update_many action",
        lambda m: m.update_many([0, 5, 1], np.zeros((3, D)), [0.0] * 3),
        UnknownActionError,
        r"unknown action 5",
    ),
    (
        "update_many negative",
        lambda m: m.update_many([0, -2], np.zeros((2, D)), [0.0] * 2),
        UnknownActionError,
        r"unknown action -2",
    ),
    ("remove unknown", lambda m: m.remove_actions([0, 3]), UnknownActionError, r"unknown action 3"),
    ("remove negative", lambda m: m.remove_actions([-1]), UnknownActionError, r"unknown action -1"),
    # -- all masked
    (
        "select all masked",
        lambda m: m.select(X0, ~ALL),
        AllMaskedError,
        r"every action is masked out",
    ),
    # -- config
    (
        "remove every action",
        lambda m: m.remove_actions([2, 0, 1]),
        ConfigError,
        r"cannot remove every action",
    ),
    (
        "remove every action with repeats",
        lambda m: m.remove_actions([0, 1, 1, 2, 0]),
        ConfigError,
        r"cannot remove every action",
    ),
]

BUG_SELECT_MANY_ALL_MASKED = (
    "BUG: select_many reports an all-masked row as ShapeError, not AllMaskedError "
    "(rust/learner.rs Learner::select_many maps CoreError::AllMasked to CoreError::Shape). "
    "Repro: LinUCB(3, 2).select_many(np.zeros((2, 2)), np.zeros(3, bool)) -> ShapeError"
)
BUG_UPDATE_MANY_NOT_ATOMIC = (
    "BUG: update_many is not all-or-nothing: rows are applied one by one and the overflow "
    "check (x x' / reward * x) runs inside apply_update, so rows before an overflowing row stay "
    "applied. Repro: l = LinUCB(3, 2); l.update_many([0, 1], [[1, 1], [1e200, 0]], [1, 1]) "
    "-> NonFiniteError but l.n_updates == 1"
)

BUGGY_CALLS: list[tuple[str, Call, type[Exception], str, str]] = [
    (
        "select_many one row masked",
        lambda m: m.select_many(XS, np.array([[True] * K, [False] * K])),
        AllMaskedError,
        r"row 1",
        BUG_SELECT_MANY_ALL_MASKED,
    ),
    (
        "select_many shared mask all false",
        lambda m: m.select_many(XS, ~ALL),
        AllMaskedError,
        r"masked",
        BUG_SELECT_MANY_ALL_MASKED,
    ),
    (
        "update_many overflow in a later row",
        lambda m: m.update_many([0, 1], np.array([[1.0, 1.0], [1e200, 0.0]]), [1.0, 1.0]),
        NonFiniteError,
        r"overflows",
        BUG_UPDATE_MANY_NOT_ATOMIC,
    ),
]


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [pytest.param(c, e, m, id=i) for i, c, e, m in BAD_CALLS]
    + [pytest.param(c, e, m, id=i) for i, c, e, m, _r in BUGGY_CALLS],
)
def test_bad_call_raises_and_changes_nothing(
    trained: Learner, call: Call, exc: type[Exception], match: str
) -> None:
    before = trained.to_bytes()
    with pytest.raises(exc, match=match):
        call(trained)
    assert trained.to_bytes() == before, "a rejected call changed the state"
    assert trained.n_actions == K


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.update(0, X0, "high"), r"real number"),
        (lambda m: m.update("0", X0, 1.0), r"integer"),
        (lambda m: m.update(0.0, X0, 1.0), r"integer"),
        (lambda m: m.from_bytes("not bytes"), r"str"),
    ],
    ids=["reward string", "action string", "action float", "from_bytes str"],
)
def test_wrong_python_type_for_a_scalar_is_a_type_error(
    trained: Learner, call: Call, match: str
) -> None:
    # Scalar arguments are converted by PyO3's argument extraction, which raises TypeError (the
    # Python convention for "wrong type of object"), not DTypeError (for array contents).
    before = trained.to_bytes()
    with pytest.raises(TypeError, match=match):
        call(trained)
    assert trained.to_bytes() == before


def test_exception_tree() -> None:
    leaves = [
        uniscale.ShapeError,
        uniscale.DTypeError,
        uniscale.NonFiniteError,
        uniscale.UnknownActionError,
        uniscale.AllMaskedError,
        uniscale.ConfigError,
        uniscale.StateError,
        uniscale.NumericalError,
        uniscale.UnknownDecisionError,
        uniscale.ExpiredDecisionError,
        uniscale.DuplicateUpdateError,
    ]
    assert issubclass(UniScaleError, ValueError)
    for exc in leaves:
        assert issubclass(exc, UniScaleError) and exc is not UniScaleError
        assert exc.__module__ == "uniscale._core"
    assert len(set(leaves)) == len(leaves)
    # Plain `except ValueError` catches core errors (and they are not BaseException-only panics).
    with pytest.raises(ValueError, match="unknown action"):
        uniscale.LinUCB(2, 2).update(9, [0.0, 0.0], 0.0)


# --- constructors -----------------------------------------------------------------------------

BAD_CONFIGS: list[tuple[dict[str, float], str]] = [
    ({"alpha": -0.1}, r"alpha must be finite and >= 0, got -0\.1"),
    ({"alpha": float("nan")}, r"alpha must be finite"),
    ({"alpha": float("inf")}, r"alpha must be finite"),
    ({"ridge": 0.0}, r"ridge must be finite and > 0, got 0"),
    ({"ridge": -1.0}, r"ridge must be finite and > 0"),
    ({"ridge": float("nan")}, r"ridge must be finite"),
    ({"ridge": float("inf")}, r"ridge must be finite"),
    ({"discount": 0.0}, r"discount must be in \(0, 1\], got 0"),
    ({"discount": -0.5}, r"discount must be in \(0, 1\]"),
    ({"discount": 1.0000001}, r"discount must be in \(0, 1\]"),
    ({"discount": float("nan")}, r"discount must be in \(0, 1\]"),
    ({"prior_mean": float("nan")}, r"prior_mean must be finite, got NaN"),
    ({"prior_mean": float("-inf")}, r"prior_mean must be finite"),
]


@pytest.mark.parametrize(("cfg", "match"), BAD_CONFIGS, ids=[str(c) for c, _ in BAD_CONFIGS])
def test_bad_config_is_rejected(make: MakeLearner, cfg: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make(3, 2, **cfg)


def test_config_boundaries_are_accepted(make: MakeLearner) -> None:
    learner = make(3, 2, alpha=0.0, ridge=1e-6, discount=1.0, prior_mean=-5.0)
    assert (learner.alpha, learner.ridge, learner.discount, learner.prior_mean) == (
        0.0,
        1e-6,
        1.0,
        -5.0,
    )
    assert make(3, 2, discount=1e-9).discount == 1e-9


@pytest.mark.parametrize(
    ("n_actions", "dim", "match"),
    [
        (0, 2, r"n_actions must be in 1\.\.=65536, got 0"),
        (-1, 2, r"n_actions must be >= 1, got -1"),
        (2, 0, r"dim must be in 1\.\.=4096, got 0"),
        (2, -3, r"dim must be >= 1, got -3"),
        (2, 4097, r"dim must be in 1\.\.=4096, got 4097"),
        (65537, 1, r"n_actions must be in 1\.\.=65536"),
    ],
)
def test_linucb_bad_sizes(n_actions: int, dim: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        uniscale.LinUCB(n_actions, dim)


@pytest.mark.parametrize(
    ("psi", "dim", "exc", "match"),
    [
        (np.zeros((0, 2)), 2, ConfigError, r"number of actions must be in 1\.\.=65536, got 0"),
        (np.zeros((2, 1)), 0, ConfigError, r"dim must be >= 1"),
        (np.zeros((2, 1)), -1, ConfigError, r"dim must be >= 1, got -1"),
        (np.zeros((2, 1)), 2048, ConfigError, r"joint dimension \(dim \+ 1\) \* \(p \+ 1\)"),
        (np.zeros(3), 2, ShapeError, r"action_features must be 2-D, got a 1-D array"),
        (np.zeros((1, 2, 2)), 2, ShapeError, r"action_features must be 2-D, got a 3-D"),
        ([["a", "b"]], 2, DTypeError, r"action_features cannot be converted to float64"),
        (np.array([[0.0, np.nan]]), 2, NonFiniteError, r"action_features\[1\] = NaN"),
        (np.array([[np.inf], [0.0]]), 2, NonFiniteError, r"action_features\[0\] = inf"),
    ],
)
def test_shared_bad_construction(psi: Any, dim: int, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        uniscale.SharedLinUCB(psi, dim)


# --- kind-specific methods --------------------------------------------------------------------


def test_linucb_specific_errors() -> None:
    learner = uniscale.LinUCB(K, D)
    learner.update(1, X0, 1.0)
    before = learner.to_bytes()
    with pytest.raises(UnknownActionError, match=r"unknown action 3"):
        learner.theta(3)
    with pytest.raises(UnknownActionError, match=r"unknown action -1"):
        learner.theta(-1)
    with pytest.raises(ConfigError, match=r"count must be >= 0, got -1"):
        learner.add_actions(-1)
    with pytest.raises(ConfigError, match=r"too many actions \(limit 65536\)"):
        learner.add_actions(65536)
    assert learner.to_bytes() == before


def test_shared_specific_errors() -> None:
    learner = uniscale.SharedLinUCB(np.linspace(-1.0, 1.0, 2 * K).reshape(K, 2), D)
    learner.update(1, X0, 1.0)
    before = learner.to_bytes()
    with pytest.raises(UnknownActionError, match=r"unknown action 3"):
        learner.phi(X0, 3)
    with pytest.raises(ShapeError, match=r"x has length 3"):
        learner.phi([1.0, 2.0, 3.0], 0)
    with pytest.raises(NonFiniteError, match=r"x\[0\] = NaN"):
        learner.phi([np.nan, 2.0], 0)
    with pytest.raises(ShapeError, match=r"new action features have 3 columns, expected p = 2"):
        learner.add_actions(np.zeros((1, 3)))
    with pytest.raises(ShapeError, match=r"action_features must be 2-D"):
        learner.add_actions(np.zeros(2))
    with pytest.raises(NonFiniteError, match=r"action_features\[3\] = inf"):
        learner.add_actions(np.array([[0.0, 0.0], [0.0, np.inf]]))
    with pytest.raises(DTypeError, match=r"action_features cannot be converted"):
        learner.add_actions([["x", "y"]])
    assert learner.to_bytes() == before
    assert learner.n_actions == K


# --- coercion: unusual but valid inputs -------------------------------------------------------


def test_unusual_x_is_coerced(trained: Learner) -> None:
    want = trained.scores(np.array([1.0, 2.0]))
    big = np.array([[1.0, 9.0, 2.0, 9.0]])
    for x in (
        [1, 2],  # list of ints
        [1.0, 2.0],
        (1.0, 2.0),
        np.array([1, 2], dtype=np.int32),
        np.array([1.0, 2.0], dtype=np.float32),  # exactly representable
        np.array([1.0, 2.0], dtype=object),
        big[0, ::2],  # non-contiguous view
        np.array([2.0, 1.0])[::-1],  # negative stride
    ):
        got = trained.scores(x)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert trained.select(x) == trained.select(np.array([1.0, 2.0]))


def test_unusual_batches_are_coerced(make: MakeLearner, rng: np.random.Generator) -> None:
    actions = rng.integers(0, K, size=12)
    X = rng.integers(-3, 4, size=(12, D)).astype(np.float64)
    rewards = rng.integers(0, 2, size=12).astype(np.float64)
    canonical = make(K, D)
    canonical.update_many(actions, X, rewards)
    variants = [
        (actions.tolist(), X.tolist(), rewards.tolist()),  # plain lists
        (actions.astype(np.int32), X.astype(np.int64), rewards.astype(np.int8)),
        (actions.astype(np.uint8), np.asfortranarray(X), rewards),
        (np.repeat(actions, 2)[::2], np.repeat(X, 2, axis=1)[:, ::2], np.repeat(rewards, 3)[::3]),
    ]
    for a, x, r in variants:
        other = make(K, D)
        other.update_many(a, x, r)
        assert other.to_bytes() == canonical.to_bytes()
    Q = np.asfortranarray(rng.normal(size=(5, D)))
    mask = np.ones((5, K), bool)
    mask[:, 0] = False
    want = canonical.select_many(np.ascontiguousarray(Q), mask)
    np.testing.assert_array_equal(canonical.select_many(Q, mask), want)
    np.testing.assert_array_equal(canonical.select_many(Q.tolist(), mask.tolist()), want)
    np.testing.assert_array_equal(canonical.select_many(Q, mask.T.copy().T), want)


def test_scalar_arguments_accept_numpy_scalars(make: MakeLearner) -> None:
    one, two = make(K, D), make(K, D)
    one.update(2, X0, 0.5)
    two.update(np.int64(2), X0, np.float32(0.5))
    assert one.to_bytes() == two.to_bytes()
    assert isinstance(one.select(X0, [False, True, False]), int)
    assert one.select(X0, [False, True, False]) == 1  # a list of bools is a valid mask


def test_empty_batches_are_fine(trained: Learner) -> None:
    before = trained.to_bytes()
    out = trained.select_many(np.zeros((0, D)))
    assert out.shape == (0,) and out.dtype == np.int64
    trained.update_many(np.zeros(0, np.int64), np.zeros((0, D)), np.zeros(0))
    np.testing.assert_array_equal(trained.remove_actions(np.zeros(0, np.int64)), np.arange(K))
    assert trained.to_bytes() == before


def test_empty_lists_are_fine(trained: Learner) -> None:
    trained.update_many([], np.zeros((0, D)), [])
    np.testing.assert_array_equal(trained.remove_actions([]), np.arange(K))


# --- regressions: defects found while writing this battery, now fixed ---


@pytest.mark.parametrize(
    ("x", "reward"), [([1.0], 1e308), ([1e154], 0.0)], ids=["b overflows", "A overflows"]
)
def test_accepted_updates_never_make_the_state_non_finite(x: list[float], reward: float) -> None:
    learner = uniscale.LinUCB(1, 1)
    for _ in range(2):
        try:
            learner.update(0, x, reward)
        except (NonFiniteError, NumericalError):
            pass  # rejecting is fine; accepting and corrupting the state is not
    mean, bonus = learner.scores([1.0])
    assert np.isfinite(mean).all() and np.isfinite(bonus).all()
    restored = uniscale.LinUCB.from_bytes(learner.to_bytes())
    assert restored.to_bytes() == learner.to_bytes()


def test_shared_with_no_action_features_keeps_its_actions_or_refuses() -> None:
    try:
        learner = uniscale.SharedLinUCB(np.zeros((5, 0)), 2)
    except (ConfigError, ShapeError):
        return
    assert learner.n_actions == 5


def test_complex_input_is_rejected(trained: Learner) -> None:
    with pytest.raises(DTypeError, match="must be numeric"):
        trained.select(np.array([1 + 5j, 0.0]))


def test_tiny_ridge_is_rejected_or_usable() -> None:
    try:
        learner = uniscale.LinUCB(2, 2, ridge=1e-310)
    except ConfigError:
        return
    mean, bonus = learner.scores([1.0, 0.0])
    assert np.isfinite(mean).all() and np.isfinite(bonus).all()


def test_state_error_is_not_an_os_error() -> None:
    assert not issubclass(StateError, OSError)
    assert not issubclass(OSError, UniScaleError)
