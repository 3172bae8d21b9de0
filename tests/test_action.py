"""`uniscale.Action` is a frozen pyclass of the core: the policy hands a chosen action to Python
without calling back into Python, and one built from Python is still checked against the
strategy registry."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import uniscale
from uniscale import Action, ActionSpace, ModelSpec, Policy
from uniscale._core import ConfigError
from uniscale.strategies import Strategy, register_strategy, unregister_strategy

NAMES = st.text(min_size=1, max_size=12)
SAMPLED = st.sampled_from(["self_consistency", "best_of_n", "adaptive_consistency"])


def test_one_class_on_both_sides() -> None:
    assert uniscale.Action is uniscale.space.Action is uniscale._core.Action
    a = Action("m", "single", 1)
    assert (a.model, a.strategy, a.n) == ("m", "single", 1)
    assert str(a) == "m/single/n=1"
    assert repr(a) == "Action(model='m', strategy='single', n=1)"
    assert Action(model="m", strategy="single", n=1) == a


@given(model=NAMES, strategy=SAMPLED, n=st.integers(1, 2**32 - 1))
def test_value_semantics(model: str, strategy: str, n: int) -> None:
    a = Action(model, strategy, n)
    b = Action(model, strategy, n)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Action(model, strategy, n + 1 if n < 2**32 - 1 else n - 1)
    assert a != (model, strategy, n)
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.deepcopy(a) == a
    assert eval(repr(a), {"Action": Action}) == a


def test_frozen() -> None:
    a = Action("m", "best_of_n", 4)
    with pytest.raises(AttributeError):
        a.n = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "err", "match"),
    [
        (("m", "bogus", 1), ConfigError, "unknown strategy 'bogus'"),
        (("m", "single", 2), ConfigError, "requires n == 1"),
        (("m", "self_consistency", 0), ConfigError, r"Action.n must be an int >= 1, got 0"),
        (("m", "self_consistency", -3), ConfigError, "got -3"),
        (("m", "self_consistency", 2.0), ConfigError, "got 2.0"),
        (("m", "self_consistency", "2"), ConfigError, "got '2'"),
        (("m", "self_consistency", None), ConfigError, "got None"),
        (("m", "self_consistency", 2**32), ConfigError, "got 4294967296"),
        ((3, "single", 1), TypeError, "model"),
        (("m", 3, 1), TypeError, "strategy"),
    ],
)
def test_bad_actions_raise_clear_errors(args: tuple[Any, ...], err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        Action(*args)


def test_bool_n_is_an_int_as_before() -> None:
    # `isinstance(True, int)`: the dataclass this replaces accepted it as 1, so does this.
    assert Action("m", "single", True) == Action("m", "single", 1)


class Shortest(Strategy):
    name = "shortest_toy"


def test_decision_action_is_built_in_rust_without_the_registry() -> None:
    """The chosen action and the policy's action list come back even when a strategy has
    since left the registry (so no Python lookup runs on those paths), while building that
    action from Python is refused."""
    register_strategy(Shortest())
    try:
        models = [ModelSpec("a", 0.1, 0.2), ModelSpec("b", 1.0, 2.0)]
        acts = [Action("a", "single", 1), Action("b", "shortest_toy", 3)]
        policy = Policy(ActionSpace(models, acts), 2, seed=0)
    finally:
        unregister_strategy("shortest_toy")
    with pytest.raises(ConfigError, match="unknown strategy 'shortest_toy'"):
        Action("b", "shortest_toy", 3)
    assert [str(a) for a in policy.actions] == ["a/single/n=1", "b/shortest_toy/n=3"]
    assert all(type(a) is Action for a in policy.actions)
    seen = set()
    for i in range(20):
        mask = np.array([i % 2 == 0, i % 2 == 1])
        d = policy.select(np.ones(2), mask=mask)
        assert type(d.action) is Action
        assert (d.action.model, d.action.strategy, d.action.n) == (d.model, d.strategy, d.n)
        seen.add(str(d.action))
    assert seen == {"a/single/n=1", "b/shortest_toy/n=3"}
