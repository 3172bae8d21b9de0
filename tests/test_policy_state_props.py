"""Property (review of 2026-12-02, D2/D3): after any sequence of Policy operations, with huge
and tiny finite values as well as ordinary ones,

* every accepted operation leaves a state that saves and loads back (the same bytes), whose
  reported numbers (pacing multiplier, credit, spend) are finite;
* every refused operation raises a `UniScaleError` (never a panic or another exception) and
  changes nothing (an update of an expired id may only drop expired decisions);
* the loaded copy keeps working: it selects or refuses with a `UniScaleError`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from uniscale import (
    Action,
    ActionSpace,
    ExpiredDecisionError,
    ModelSpec,
    Policy,
    UniScaleError,
)

DIM = 2
# Ordinary values next to the extremes of the finite doubles.
EXTREME = [5e-324, 1e-300, 1e-3, 0.5, 1.0, 7.0, 1e6, 1e150, 1e300, 1.7e308]
NONNEG = st.sampled_from([0.0, *EXTREME])
SIGNED = st.sampled_from([0.0, *EXTREME, *(-v for v in EXTREME)])
OPTIONAL = st.none() | NONNEG


def base_policy(learner: str, seed: int) -> Policy:
    space = ActionSpace(
        [ModelSpec("a", 0.5, 2.0, parallelism=2), ModelSpec("b", 3.0, 12.0)],
        [
            Action("a", "single", 1),
            Action("a", "self_consistency", 4),
            Action("b", "single", 1),
            Action("b", "adaptive_consistency", 4),
        ],
    )
    return Policy(space, DIM, learner=learner, model_slots=4, seed=seed)  # type: ignore[arg-type]


# Request features are as extreme as every policy-level value: the learners accept what keeps
# their state finite and loadable and refuse the rest before mutating (tests/test_numerics.py).
FEATURE = SIGNED
xs = st.lists(FEATURE, min_size=DIM, max_size=DIM)

operations = st.one_of(
    st.tuples(st.just("select"), xs, NONNEG, OPTIONAL, SIGNED),
    st.tuples(
        st.just("update"),
        st.integers(0, 12),
        SIGNED,
        OPTIONAL,
        OPTIONAL,
        OPTIONAL,
        st.sampled_from([None, None, None, 1.0, 2.0, 4.0]),
        SIGNED,
    ),
    st.tuples(
        st.just("observe"),
        xs,
        st.integers(0, 6),
        SIGNED,
        NONNEG,
        OPTIONAL,
        OPTIONAL,
        OPTIONAL,
    ),
    st.tuples(
        st.just("budget"),
        st.sampled_from(["none", "request", "hour"]),
        NONNEG,
        NONNEG,
        NONNEG,
    ),
    st.tuples(st.just("reward"), NONNEG, NONNEG, NONNEG),
    st.tuples(st.just("explore"), st.sampled_from(["greedy", "epsilon", "softmax"]), NONNEG),
    st.tuples(st.just("add"), st.integers(0, 99), NONNEG, NONNEG, NONNEG, NONNEG, NONNEG),
    st.tuples(st.just("retire"), st.sampled_from(["a", "b", "c0", "c1"])),
    st.tuples(st.just("reload")),
)


def apply(policy: Policy, op: tuple[Any, ...], issued: list[int]) -> Policy:
    kind = op[0]
    if kind == "select":
        _, x, tokens, max_cost, now = op
        d = policy.select(np.array(x), tokens, max_cost_usd=max_cost, now=now)
        issued.append(d.id)
    elif kind == "update":
        _, which, quality, cost, latency, out, samples, now = op
        decision = issued[which % len(issued)] if issued else which
        policy.update(decision, quality, cost, latency, out, samples, now=now)
    elif kind == "observe":
        _, x, action, quality, tokens, cost, latency, out = op
        policy.observe(np.array(x), action, quality, tokens, cost, latency, out)
    elif kind == "budget":
        _, which, target, step, carryover = op
        policy.set_budget(
            per_request_usd=target if which == "request" else None,
            per_hour_usd=target if which == "hour" else None,
            pacing_step=step,
            pacing_carryover=carryover,
        )
    elif kind == "reward":
        policy.set_reward((op[1], op[2], op[3]))
    elif kind == "explore":
        _, how, v = op
        policy.set_exploration(how, epsilon=v, temperature=v)
    elif kind == "add":
        _, i, price_in, price_out, latency_in, latency_out, prior = op
        spec = ModelSpec(
            f"c{i}",
            price_in,
            price_out,
            latency_in_s_per_token=latency_in,
            latency_out_s_per_token=latency_out,
            prior_output_tokens=prior,
        )
        policy.add_model(spec, ["single", "best_of_n"], n_values=(1, 2))
    elif kind == "retire":
        policy.retire_model(op[1])
    elif kind == "reload":
        policy = Policy.from_bytes(policy.to_bytes())
    return policy


def assert_sound(policy: Policy) -> None:
    blob = policy.to_bytes()  # verified to load back, else StateError
    assert Policy.from_bytes(blob).to_bytes() == blob
    for v in (policy.pacing_lambda, policy.pacing_credit, policy.core.total_cost_usd):
        assert math.isfinite(v), v


@given(
    learner=st.sampled_from(["disjoint", "shared"]),
    seed=st.integers(0, 2**32),
    ops=st.lists(operations, min_size=1, max_size=25),
)
def test_any_accepted_sequence_keeps_the_state_finite_and_loadable(
    learner: str, seed: int, ops: list[tuple[Any, ...]]
) -> None:
    policy = base_policy(learner, seed)
    # a few decisions to give feedback on from the start
    issued = [policy.select(np.ones(DIM), 100.0, now=0.0).id for _ in range(3)]
    for op in ops:
        before = policy.to_bytes()
        n_pending = policy.n_pending
        try:
            policy = apply(policy, op, issued)
        except ExpiredDecisionError:
            assert policy.n_pending <= n_pending  # only expired decisions may go
        except UniScaleError:
            assert policy.to_bytes() == before, f"refused {op[0]} changed the state"
        assert_sound(policy)
    loaded = Policy.from_bytes(policy.to_bytes())
    try:
        loaded.select(np.ones(DIM), 100.0, now=0.0)
    except UniScaleError:
        pass
    assert_sound(loaded)
