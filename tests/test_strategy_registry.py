"""The strategy registry: a new strategy is one object in one file (this one), and the
executor, the outcome tables, side observations and the policy's core take it as they take the
built-ins. Property tests pin the strategies' replay to their live decisions."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from fake_openai import FakeOpenAI
from hypothesis import given
from hypothesis import strategies as st

import uniscale
from uniscale._core import ConfigError, StrategyInfo, action_features
from uniscale.execute import Executor
from uniscale.outcomes import Sample, action_outcome, sub_actions
from uniscale.space import STRATEGIES, Action, ActionSpace, ModelSpec
from uniscale.strategies import (
    AdaptiveConfig,
    AdaptiveConsistency,
    Pick,
    Strategy,
    get_strategy,
    register_strategy,
    strategy_names,
    unregister_strategy,
)
from uniscale.vote import majority_vote, replay_adaptive

Q = [{"role": "user", "content": "What is 2 + 2?"}]


class Longest(Strategy):
    """The toy strategy: ``n`` samples at once, keep the longest answer (earliest on ties)."""

    name = "longest"

    def decide(self, answers: Sequence[str | None], scores: Any) -> Pick | None:
        best = max(range(len(answers)), key=lambda i: (len(answers[i] or ""), -i))
        return Pick(best, None)


@pytest.fixture
def longest() -> Iterator[Strategy]:
    s = register_strategy(Longest())
    try:
        yield s
    finally:
        unregister_strategy("longest")


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


# ---- the toy strategy end to end ---------------------------------------------------------------


def test_registry_names_and_errors(longest: Strategy) -> None:
    assert strategy_names() == (*STRATEGIES, "longest")
    assert get_strategy("longest") is longest
    with pytest.raises(ConfigError, match="already registered"):
        register_strategy(Longest())
    with pytest.raises(ConfigError, match="built in"):
        unregister_strategy("single")
    with pytest.raises(ConfigError, match="unknown strategy 'beam'"):
        get_strategy("beam")
    with pytest.raises(ConfigError, match="1-64 characters"):

        class Bad(Strategy):
            name = "Has/Slash"

        register_strategy(Bad())
    assert Action("m", "longest", 3).strategy == "longest"  # type: ignore[arg-type]
    assert longest.info() == StrategyInfo("longest")
    assert pickle.loads(pickle.dumps(longest.info())) == longest.info()


def test_toy_strategy_runs_through_the_executor_over_http(longest: Strategy) -> None:
    with FakeOpenAI() as fake:
        fake.config.answers = ["I think 5", "it is 4", "so the answer is 1234"]
        spec = ModelSpec(name="m", base_url=fake.base_url, price_out_per_mtok=3.0)

        async def go() -> Any:
            async with Executor([spec], backoff_s=0.01, timeout_s=5.0) as ex:
                return await ex.run(Action("m", "longest", 3), Q)  # type: ignore[arg-type]

        out = run(go())
        (req,) = fake.generation_requests()
    assert req.body["n"] == 3 and req.body["temperature"] == 0.7  # a sampled strategy
    assert out.answer == "1234" and out.text == "so the answer is 1234"
    assert out.samples_used == 3 and out.confidence is None and out.stop_reason is None


def test_toy_strategy_in_tables_and_side_observations(longest: Strategy) -> None:
    spec = ModelSpec(name="m", price_out_per_mtok=2.0)
    samples = [Sample(a, a == "42", 10, 0.0, 1.0) for a in ("7", "42", "7", "1000")]
    q, _cost, _lat, out, used = action_outcome(
        Action("m", "longest", 2),  # type: ignore[arg-type]
        spec,
        samples,
        None,
        "42",
        5,
    )
    assert (q, out, used) == (1.0, 20.0, 2.0)  # "42" is longer than "7"
    actions = [
        Action("m", "single", 1),
        Action("m", "self_consistency", 2),
        Action("m", "longest", 2),  # type: ignore[arg-type]
        Action("m", "longest", 4),  # type: ignore[arg-type]
        Action("other", "longest", 2),  # type: ignore[arg-type]
    ]
    assert sub_actions(actions[3], 4.0, actions) == [1, 2]
    assert sub_actions(actions[2], 2.0, actions) == [1]
    assert sub_actions(actions[0], 1.0, actions) == []


def test_toy_strategy_gets_a_feature_slot_and_survives_save_and_load(
    longest: Strategy, tmp_path: Any
) -> None:
    models = [ModelSpec(name="a", price_out_per_mtok=1.0), ModelSpec(name="b")]
    space = ActionSpace.grid(models, ("single", "self_consistency", "longest"), (1, 2, 4))  # type: ignore[arg-type]
    slots = 4
    psi = space.features(slots)
    # single is the baseline; four slotted strategies: S + 1 + 4 + 1 + 4 + 1
    assert psi.shape == (len(space), slots + 11)
    row = {str(a): psi[i] for i, a in enumerate(space.ordered_actions())}["a/longest/n=4"]
    assert row[slots + 1 + 3] == 1.0 and row[slots + 1 + 4] == pytest.approx(0.5)
    assert row[slots + 6 + 3] == pytest.approx(0.5)  # log2(4)/4 times the longest indicator

    policy = uniscale.Policy(space, 3, model_slots=slots, seed=7)
    assert [s.name for s in policy.core.strategies()] == [*STRATEGIES, "longest"]
    rng = np.random.default_rng(0)
    for _ in range(30):
        x = rng.normal(size=3)
        d = policy.select(x, 200.0)
        policy.update(d.id, quality=float(d.action.strategy == "longest"), cost_usd=1e-5)
    blob = policy.to_bytes()
    again = uniscale.Policy.from_bytes(blob)
    x = np.array([0.3, -0.1, 0.2])
    d1, d2 = again.select(x, 200.0), policy.select(x, 200.0)
    # loading recomputes the learner's inverse exactly (not by rank-one updates): same choice,
    # scores equal to rounding
    assert (d1.id, d1.index, d1.action) == (d2.id, d2.index, d2.action)
    assert d1.score == pytest.approx(d2.score, rel=1e-9)
    assert again.actions == policy.actions
    path = tmp_path / "p.bin"
    policy.save(path)
    assert uniscale.Policy.load(path).to_bytes() == policy.to_bytes()
    # the strategy list is data in the state: it loads without the strategy registered
    unregister_strategy("longest")
    try:
        loaded = uniscale.Policy.from_bytes(blob)
        assert loaded.core.strategies()[-1] == StrategyInfo("longest")
        assert loaded.n_actions == policy.n_actions
    finally:
        register_strategy(longest)
    # a model added while serving may use it too
    policy.add_model(ModelSpec(name="c"), ("longest",), (2,))  # type: ignore[arg-type]
    assert Action("c", "longest", 2) in policy.actions  # type: ignore[arg-type]


def test_serve_config_accepts_a_registered_strategy(longest: Strategy) -> None:
    from uniscale.serve.config import ServeConfigError, example_config, parse_action, parse_config

    text = example_config().replace(
        'strategies = ["single", "self_consistency"]', 'strategies = ["single", "longest"]'
    )
    cfg = parse_config(text, "x.toml")
    assert {a.strategy for a in cfg.actions()} == {"single", "longest"}
    assert parse_action("m/longest/n=4") == Action("m", "longest", 4)  # type: ignore[arg-type]
    bad = text.replace('"longest"]', '"beam"]')
    with pytest.raises(ServeConfigError, match=r"expected one of single, .*, longest"):
        parse_config(bad, "x.toml")


def test_builtin_list_keeps_todays_layout() -> None:
    models = [ModelSpec(name="a", price_out_per_mtok=3.0)]
    space = ActionSpace.grid(models, STRATEGIES, (1, 2, 8))
    core = space.core_models()
    default = action_features(core, 3)
    assert default.shape[1] == 3 + 9
    np.testing.assert_array_equal(space.features(3, STRATEGIES), default)
    infos = [get_strategy(s).info() for s in STRATEGIES]
    np.testing.assert_array_equal(action_features(core, 3, infos), default)
    with pytest.raises(ConfigError, match="unknown strategy"):
        action_features(core, 3, infos[:2])


# ---- invariants of the strategy math ----------------------------------------------------------

ANSWERS = st.lists(st.sampled_from(["1", "2", "3", None]), min_size=1, max_size=12)
SCORES = st.floats(-5.0, 5.0, allow_nan=False)


@given(ANSWERS, st.data())
def test_replay_of_an_n_run_is_decide_on_its_first_n_samples(
    answers: list[str | None], data: st.DataObject
) -> None:
    scores = data.draw(st.lists(SCORES, min_size=len(answers), max_size=len(answers)))
    n = data.draw(st.integers(1, len(answers)))
    for name in ("self_consistency", "best_of_n"):
        s = get_strategy(name)
        r = s.replay(answers, scores, n)
        pick = s.decide(answers[:n], scores[:n] if s.needs_scorer else None)
        assert r is not None and pick is not None
        assert r.index == pick.index and r.used == n
    assert get_strategy("best_of_n").replay(answers, None, n) is None


@given(ANSWERS, st.data())
def test_adaptive_replay_uses_a_prefix_and_votes_over_it(
    answers: list[str | None], data: st.DataObject
) -> None:
    n = data.draw(st.integers(1, len(answers)))
    s = get_strategy("adaptive_consistency")
    r = s.replay(answers, None, n)
    assert r is not None and 1 <= r.used <= n and r.by_answer
    assert r == s.replay(answers[:n], None, n)  # nothing past the budget is looked at
    v = majority_vote(answers[: r.used])
    assert answers[r.index] == v.answer
    # the registry's default configuration replays as the outcome tables always did
    old = replay_adaptive(answers[:n], n)
    assert (old.used, old.vote.answer) == (r.used, v.answer)
    assert AdaptiveConsistency(AdaptiveConfig()).replay(answers, None, n) == r


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(1, 8)), max_size=10), st.data())
def test_sub_runs_are_smaller_runs_of_the_same_model(
    grid: list[tuple[str, int]], data: st.DataObject
) -> None:
    names = ("self_consistency", "best_of_n", "adaptive_consistency")
    actions = list(
        dict.fromkeys(
            [Action(m, "single", 1) for m in ("a", "b")]
            + [Action(m, data.draw(st.sampled_from(names)), n) for m, n in grid]
        )
    )
    executed = data.draw(st.sampled_from(actions))
    drawn = data.draw(st.integers(1, executed.n))
    subs = sub_actions(executed, float(drawn), actions)
    assert len(set(subs)) == len(subs)
    for i in subs:
        a = actions[i]
        assert a.model == executed.model and a.n <= drawn and a != executed
        assert a.strategy != "single"
    if executed.strategy == "single":
        assert subs == []


def _old_action_outcome(
    action: Action, samples: Sequence[Sample], greedy: Sample | None, gold: str
) -> tuple[bool, int]:
    """The outcome rule before the registry (string checks), as the oracle."""
    n = action.n
    if action.strategy == "single":
        chosen = greedy if greedy is not None else samples[0]
        return chosen.correct, 1
    pool = samples[:n]
    if action.strategy == "self_consistency":
        v = majority_vote([s.answer for s in pool])
        return v.answer is not None and v.answer == gold, n
    if action.strategy == "best_of_n":
        best = max(range(n), key=lambda i: (pool[i].score, -i))
        return pool[best].correct, n
    r = replay_adaptive([s.answer for s in pool], n)
    return r.vote.answer is not None and r.vote.answer == gold, r.used


@given(
    st.lists(
        st.tuples(st.sampled_from(["1", "2", None]), st.booleans(), SCORES), min_size=1, max_size=9
    ),
    st.data(),
)
def test_outcomes_match_the_rule_before_the_registry(
    recorded: list[tuple[str | None, bool, float]], data: st.DataObject
) -> None:
    samples = [Sample(a, c, 3 + i, sc, 0.5) for i, (a, c, sc) in enumerate(recorded)]
    greedy = data.draw(st.none() | st.just(Sample("1", True, 2, 0.0, 0.1)))
    spec = ModelSpec(name="m", price_out_per_mtok=1.0)
    for name in STRATEGIES:
        n = 1 if name == "single" else data.draw(st.integers(1, len(samples)))
        action = Action("m", name, n)
        q, _c, _l, _o, used = action_outcome(action, spec, samples, greedy, "1", 4)
        correct, old_used = _old_action_outcome(action, samples, greedy, "1")
        assert (q, used) == (float(correct), float(old_used))
