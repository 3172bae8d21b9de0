"""The typed Rust/Python boundary: `PolicyConfig` (defaults set once, in Rust), `ModelInfo`,
`Prediction` and `UpdateResult` instead of positional tuples."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest

from uniscale import (
    PRESETS,
    Action,
    ActionSpace,
    ConfigError,
    ModelInfo,
    ModelSpec,
    Policy,
    PolicyConfig,
    Prediction,
    QualityFloor,
    RewardWeights,
    UpdateResult,
)
from uniscale._core import REWARD_PRESETS

DIM = 3
MODELS = [ModelSpec("small", 0.1, 0.4), ModelSpec("large", 2.0, 8.0, parallelism=2)]


def space() -> ActionSpace:
    return ActionSpace.grid(MODELS, n_values=(1, 2))


def test_defaults_are_the_policys() -> None:
    c = PolicyConfig()
    assert (c.learner, c.alpha, c.prior_mean, c.reward) == ("shared", 0.3, 0.5, "cost_sensitive")
    assert c.weights == (1.0, 1.0, 0.2)
    assert c.interaction_prior is None
    p = Policy(space(), DIM)
    assert p.config == c
    assert p.alpha == 0.3
    assert p.interaction_prior == (1.0, True)  # None resolves to empirical Bayes here
    assert Policy(space(), DIM, discount=0.99).interaction_prior == (1.0, False)


def test_keywords_and_config_build_the_same_policy() -> None:
    kw: dict[str, Any] = {"alpha": 0.7, "reward": "balanced", "seed": 3, "exploration": "epsilon"}
    by_kw = Policy(space(), DIM, **kw)
    by_config = Policy(space(), DIM, config=PolicyConfig(**kw))
    assert by_kw.config == by_config.config
    assert by_kw.to_bytes() == by_config.to_bytes()
    # keywords on top of a config override it
    on_top = Policy(space(), DIM, config=PolicyConfig(alpha=0.1), alpha=0.7)
    assert on_top.config is not None and on_top.config.alpha == 0.7


def test_replace_repr_dict_equality_hash_and_pickle() -> None:
    c = PolicyConfig(reward=RewardWeights(1.0, 0.5, 0.0), baseline=Action("small", "single", 1))
    assert c.reward == (1.0, 0.5, 0.0)
    d = c.replace(alpha=2.0)
    assert d.alpha == 2.0 and c.alpha == 0.3 and d.baseline == c.baseline
    assert d != c and c == PolicyConfig(**c.to_dict()) and hash(c) == hash(copy.copy(c))
    plain = PolicyConfig(alpha=0.5, reward=(1.0, 0.2, 0.0), interaction_prior="auto")
    assert eval(repr(plain), {"PolicyConfig": PolicyConfig}) == plain
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(c, proto)) == c
    with pytest.raises(TypeError, match="alpah"):
        c.replace(alpah=1.0)
    assert PolicyConfig() != object()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"reward": "thrifty"}, "unknown reward preset 'thrifty'"),
        ({"reward": (1.0, float("nan"), 0.0)}, "RewardWeights.cost"),
        ({"reward": (1.0, 2.0)}, "3-tuple"),
        ({"learner": "tree"}, "learner must be 'shared' or 'disjoint'"),
        ({"exploration": "boltzmann"}, "unknown exploration"),
        ({"exploration": "epsilon", "epsilon": 2.0}, "invalid exploration"),
        ({"budget_per_request_usd": 1.0, "budget_per_hour_usd": 1.0}, "at most one"),
        ({"latency_scale": -1.0}, "latency_scale must be finite and > 0"),
        ({"interaction_prior": "sometimes"}, "interaction_prior must be a number >= 1 or 'auto'"),
        (
            {"baseline": 0, "quality_floor": QualityFloor(reference=0)},
            "at most one of baseline and quality_floor",
        ),
    ],
)
def test_bad_settings_fail_when_the_config_is_built(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PolicyConfig(**kw)


def test_numeric_domains_fail_when_the_policy_is_built() -> None:
    c = PolicyConfig(ttl_s=0.0)
    with pytest.raises(ConfigError, match="ttl_s must be > 0"):
        Policy(space(), DIM, config=c)


def test_presets_come_from_rust() -> None:
    assert {k: (w.quality, w.cost, w.latency) for k, w in PRESETS.items()} == REWARD_PRESETS


def test_config_survives_pickling_the_policy_not_loading_bytes() -> None:
    p = Policy(space(), DIM, alpha=0.5)
    assert pickle.loads(pickle.dumps(p)).config == p.config
    assert Policy.from_bytes(p.to_bytes()).config is None


def test_model_info_round_trip() -> None:
    p = Policy(space(), DIM)
    table = p.core.model_table()
    assert all(isinstance(m, ModelInfo) for m in table)
    assert table[1] == MODELS[1].info()
    assert pickle.loads(pickle.dumps(table[1])) == table[1]
    assert ModelSpec.from_info(table[1]).info() == table[1]
    assert table[1].to_dict()["parallelism"] == 2
    p.retire_model("small")
    assert [m.retired for m in p.core.model_table()] == [True, False]
    info = ModelInfo(**{**table[0].to_dict(), "retired": True})
    with pytest.raises(ConfigError, match="retired"):
        p.core.add_model(info, [("single", 1)])


def test_prediction_is_named_once() -> None:
    p = Policy(space(), DIM)
    pred = p.core.predict(700.0)
    assert isinstance(pred, Prediction) and len(pred) == p.n_actions
    arr = pred.as_array()
    assert arr.shape == (p.n_actions, len(Prediction.COLUMNS)) == (p.n_actions, 9)
    assert np.array_equal(np.asarray(pred), arr)
    for j, name in enumerate(Prediction.COLUMNS):
        assert np.array_equal(getattr(pred, name), arr[:, j])
        assert np.array_equal(p.predict(700.0)[name], arr[:, j])


def test_update_result_is_typed() -> None:
    p = Policy(space(), DIM)
    d = p.select(np.ones(DIM), 100.0)
    r = p.update(d.id, 1.0)
    assert isinstance(r, UpdateResult) and r.learner_updated
    assert r == UpdateResult(r.reward, r.cost_usd, r.latency_s, True)
    assert pickle.loads(pickle.dumps(r)) == r
    assert repr(r).startswith("UpdateResult(reward=")
    assert p.action_uids[d.index] == d.action_uid
