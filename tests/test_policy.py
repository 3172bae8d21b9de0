"""Unit tests of `uniscale.Policy`: the pending-decision store, feedback validation, run-time
changes (presets, models), configuration errors, persistence errors, the Decision record, and
concurrent use from threads.

Every test passes ``now=`` explicitly, so nothing depends on the wall clock.
"""

from __future__ import annotations

import json
import math
import re
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sync_worker import DIM, MODELS, noisy_quality, space

import uniscale
from uniscale import (
    PRESETS,
    Action,
    ActionSpace,
    AllMaskedError,
    ConfigError,
    Decision,
    DuplicateUpdateError,
    ExpiredDecisionError,
    ModelSpec,
    NonFiniteError,
    Policy,
    PolicyCore,
    ShapeError,
    StateError,
    UniScaleError,
    UnknownActionError,
    UnknownDecisionError,
)

LEARNERS = ["disjoint", "shared"]


def make(learner: str = "disjoint", **kw: Any) -> Policy:
    return Policy(space(), DIM, learner=learner, **kw)  # type: ignore[arg-type]


def index_of(policy: Policy, model: str, strategy: str = "single", n: int = 1) -> int:
    return policy.actions.index(Action(model, strategy, n))  # type: ignore[arg-type]


def forced(policy: Policy, index: int, x: Any = None, now: float = 0.0) -> Decision:
    """A decision forced onto one action with a one-hot mask."""
    mask = np.zeros(policy.n_actions, dtype=bool)
    mask[index] = True
    d = policy.select(np.ones(DIM) if x is None else x, 500.0, mask=mask, now=now)
    assert d.index == index
    return d


def train(policy: Policy, n: int, seed: int = 0) -> None:
    """Round-robin over the actions, quality by model plus a little per log2(n), light noise."""
    rng = np.random.default_rng(seed)
    k = policy.n_actions
    for t in range(n):
        d = forced(policy, t % k, rng.normal(size=DIM), now=float(t))
        q = noisy_quality(d.model, d.n, rng)
        policy.update(d.id, q, output_tokens=256.0 * d.n, now=float(t))


PROBES = np.random.default_rng(99).normal(size=(5, DIM))


def scores(policy: Policy) -> list[tuple[np.ndarray, np.ndarray]]:
    return [policy.core.quality_scores(x) for x in PROBES]


# --------------------------------------------------------------------------------------------
# Delayed feedback and the pending store
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("learner", LEARNERS)
def test_delayed_feedback_out_of_order(learner: str) -> None:
    """Feedback in any order is accepted once each, and (discount = 1) learns the same thing as
    feedback in order: the ridge statistics are sums."""
    rng = np.random.default_rng(3)
    in_order, shuffled = make(learner), make(learner)
    feedback = []
    for t in range(30):
        x = rng.normal(size=DIM)
        i = int(rng.integers(in_order.n_actions))
        da, db = forced(in_order, i, x, now=float(t)), forced(shuffled, i, x, now=float(t))
        assert da.id == db.id
        feedback.append(
            dict(
                decision_id=da.id,
                quality=float(rng.random()),
                output_tokens=float(rng.integers(10, 500)) * da.n,
                latency_s=float(rng.uniform(1, 10)),
            )
        )
    assert in_order.n_pending == shuffled.n_pending == 30
    got_in = {f["decision_id"]: in_order.update(**f, now=50.0) for f in feedback}
    got_sh = {f["decision_id"]: shuffled.update(**f, now=50.0) for f in reversed(feedback[::2])}
    got_sh |= {f["decision_id"]: shuffled.update(**f, now=50.0) for f in feedback[1::2]}
    assert got_in == got_sh  # realised reward, cost and latency per decision
    assert in_order.n_pending == shuffled.n_pending == 0
    for (ma, ba), (mb, bb) in zip(scores(in_order), scores(shuffled), strict=True):
        np.testing.assert_allclose(ma, mb, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ba, bb, rtol=1e-9, atol=1e-12)
    for key, v in in_order.predict(700.0).items():
        np.testing.assert_allclose(v, shuffled.predict(700.0)[key], rtol=1e-9, err_msg=key)


def test_unknown_decision() -> None:
    policy = make()
    with pytest.raises(UnknownDecisionError, match="unknown decision id 0"):
        policy.update(0, 0.5, now=0.0)
    d = policy.select(np.ones(DIM), 100.0, now=0.0)
    state = policy.to_bytes()
    for bad in (d.id + 1, 10**9):
        with pytest.raises(UnknownDecisionError, match=f"unknown decision id {bad}"):
            policy.update(bad, 0.5, now=0.0)
    with pytest.raises(UnknownDecisionError):
        policy.update(-1, 0.5, now=0.0)
    assert policy.to_bytes() == state
    policy.update(d.id, 0.5, now=0.0)


def test_expired_by_ttl() -> None:
    policy = make(ttl_s=10.0)
    a = policy.select(np.ones(DIM), 100.0, now=0.0)
    b = policy.select(np.ones(DIM), 100.0, now=0.0)
    c = policy.select(np.ones(DIM), 100.0, now=5.0)
    policy.update(b.id, 0.5, now=10.0)  # exactly ttl_s old: still accepted
    with pytest.raises(ExpiredDecisionError, match=rf"decision id {a.id} expired"):
        policy.update(a.id, 0.5, now=10.5)
    with pytest.raises(ExpiredDecisionError):  # and stays expired (not "unknown")
        policy.update(a.id, 0.5, now=10.5)
    assert policy.n_pending == 1
    # a select far in the future evicts what is older than the TTL
    policy.select(np.ones(DIM), 100.0, now=100.0)
    assert policy.n_pending == 1
    with pytest.raises(ExpiredDecisionError):
        policy.update(c.id, 0.5, now=100.0)


def test_capacity_eviction() -> None:
    policy = make(capacity=3)
    ds = [policy.select(np.ones(DIM), 100.0, now=float(t)) for t in range(5)]
    assert policy.n_pending == 3
    for d in ds[:2]:  # the oldest are evicted first
        with pytest.raises(ExpiredDecisionError, match="capacity"):
            policy.update(d.id, 0.5, now=5.0)
    for d in ds[2:]:
        policy.update(d.id, 0.5, now=5.0)
    assert policy.n_pending == 0


@pytest.mark.parametrize("learner", LEARNERS)
def test_duplicate_update_rejected_and_state_unchanged(learner: str) -> None:
    policy = make(learner, budget_per_request_usd=0.001)
    d = policy.select(np.ones(DIM), 300.0, now=0.0)
    policy.update(d.id, 0.7, output_tokens=100.0 * d.n, now=1.0)
    state, total = policy.to_bytes(), policy.core.total_cost_usd
    for fb in ({"quality": 0.7}, {"quality": 0.1, "cost_usd": 5.0}):
        with pytest.raises(DuplicateUpdateError, match=rf"decision id {d.id} was already updated"):
            policy.update(d.id, **fb, now=1.0)
    assert policy.to_bytes() == state
    assert policy.core.total_cost_usd == total


BAD_FEEDBACK = [
    ({"quality": math.nan}, NonFiniteError, "quality"),
    ({"quality": math.inf}, NonFiniteError, "quality"),
    ({"quality": 0.5, "cost_usd": -0.01}, ConfigError, "cost_usd must be >= 0"),
    ({"quality": 0.5, "cost_usd": math.nan}, NonFiniteError, "cost_usd"),
    ({"quality": 0.5, "latency_s": -1.0}, ConfigError, "latency_s must be >= 0"),
    ({"quality": 0.5, "output_tokens": -5.0}, ConfigError, "output_tokens must be >= 0"),
    ({"quality": 0.5, "output_tokens": math.inf}, NonFiniteError, "output_tokens"),
    ({"quality": 0.5, "samples_used": 5.0}, ConfigError, r"samples_used must be in 1\.\.=4"),
    ({"quality": 0.5, "samples_used": 0.0}, ConfigError, "samples_used must be in"),
    ({"quality": 0.5, "samples_used": -1.0}, ConfigError, "samples_used must be >= 0"),
]


@pytest.mark.parametrize("learner", LEARNERS)
@pytest.mark.parametrize(("fb", "exc", "match"), BAD_FEEDBACK)
def test_invalid_feedback_rejected_state_unchanged(
    learner: str, fb: dict[str, float], exc: type[Exception], match: str
) -> None:
    policy = make(learner, budget_per_request_usd=0.001)
    train(policy, 10)
    d = forced(policy, index_of(policy, "mid", "adaptive_consistency", 4), now=20.0)
    state = policy.to_bytes()
    with pytest.raises(exc, match=match):
        policy.update(d.id, **fb, now=20.0)
    assert policy.to_bytes() == state
    assert policy.n_pending == 1
    policy.update(d.id, 0.5, samples_used=2.0, now=20.0)  # the decision still takes feedback
    assert policy.n_pending == 0


@pytest.mark.parametrize(
    ("kw", "exc", "match"),
    [
        ({"x": np.ones(DIM + 1)}, ShapeError, "x"),
        ({"x": np.array([1.0, math.nan, 0.0, 0.0])}, NonFiniteError, "x"),
        ({"input_tokens": -1.0}, ConfigError, "input_tokens must be >= 0"),
        ({"input_tokens": math.nan}, NonFiniteError, "input_tokens"),
        ({"max_cost_usd": -1.0}, ConfigError, "max_cost_usd must be >= 0"),
        ({"max_latency_s": math.nan}, ConfigError, "max_latency_s must be >= 0"),
        ({"mask": np.zeros(21, dtype=bool)}, AllMaskedError, "every action is masked"),
        ({"mask": np.ones(5, dtype=bool)}, ShapeError, "mask"),
        ({"now": math.inf}, NonFiniteError, "now"),
    ],
)
def test_invalid_select_rejected_state_unchanged(
    kw: dict[str, Any], exc: type[Exception], match: str
) -> None:
    policy = make(exploration="epsilon", epsilon=0.5)
    train(policy, 10)
    state = policy.to_bytes()  # includes the id counter and the exploration generator
    args: dict[str, Any] = {"x": np.ones(DIM), "input_tokens": 100.0, "now": 20.0} | kw
    assert policy.n_actions == 21
    with pytest.raises(exc, match=match):
        policy.select(**args)
    assert policy.to_bytes() == state


def test_feature_version_mismatch() -> None:
    policy = make(feature_version="feat-v2")
    policy.select(np.ones(DIM), feature_version="feat-v2", now=0.0)
    with pytest.raises(ConfigError, match="feat-v1"):
        policy.select(np.ones(DIM), feature_version="feat-v1", now=0.0)


# --------------------------------------------------------------------------------------------
# Run-time changes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("learner", LEARNERS)
def test_preset_switch_changes_choice_keeps_statistics(learner: str) -> None:
    policy = make(learner, reward="quality_priority", alpha=0.1)
    train(policy, 210)
    x = PROBES[0]
    before = scores(policy)
    pred = policy.predict(500.0)
    q = policy.select(x, 500.0, now=1e3)
    policy.set_reward("cost_sensitive")
    assert policy.reward_weights == PRESETS["cost_sensitive"]
    c = policy.select(x, 500.0, now=1e3)
    assert c.index != q.index and c.cost_usd < q.cost_usd
    # nothing learned moved: quality posterior and cost model are the same numbers
    for (m0, b0), (m1, b1) in zip(before, scores(policy), strict=True):
        np.testing.assert_array_equal(m0, m1)
        np.testing.assert_array_equal(b0, b1)
    for key, v in pred.items():
        np.testing.assert_array_equal(v, policy.predict(500.0)[key])
    with pytest.raises(ConfigError, match="unknown reward preset 'thrifty'"):
        policy.set_reward("thrifty")
    assert policy.reward_weights == PRESETS["cost_sensitive"]
    policy.set_reward("quality_priority")
    assert policy.select(x, 500.0, now=1e3).index == q.index
    policy.set_reward((1.0, 0.0, 0.0))
    assert policy.reward_weights == uniscale.RewardWeights(1.0, 0.0, 0.0)


def assert_scores_follow_mapping(
    before: list[tuple[np.ndarray, np.ndarray]],
    after: list[tuple[np.ndarray, np.ndarray]],
    mapping: np.ndarray,
) -> None:
    """Action i before has exactly the posterior of action mapping[i] after."""
    kept = np.flatnonzero(mapping >= 0)
    for (m0, b0), (m1, b1) in zip(before, after, strict=True):
        np.testing.assert_array_equal(m1[mapping[kept]], m0[kept])
        np.testing.assert_array_equal(b1[mapping[kept]], b0[kept])


@pytest.mark.parametrize("learner", LEARNERS)
def test_retire_model_while_serving(learner: str) -> None:
    policy = make(learner)
    train(policy, 60)
    old_actions = policy.actions
    big = forced(policy, index_of(policy, "big", "best_of_n", 2), PROBES[1], now=100.0)
    mid = forced(policy, index_of(policy, "mid", "self_consistency", 4), PROBES[2], now=100.0)
    before = scores(policy)

    mapping = policy.retire_model("big")
    assert mapping.dtype == np.int64 and len(mapping) == len(old_actions)
    for i, a in enumerate(old_actions):
        assert (mapping[i] == -1) == (a.model == "big")
        if mapping[i] >= 0:
            assert policy.actions[mapping[i]] == a
    assert "big" not in policy.models and policy.n_actions == 14
    assert_scores_follow_mapping(before, scores(policy), mapping)
    restored = Policy.from_bytes(policy.to_bytes())  # the retirement survives a restart

    # feedback for a decision on the retired model is still accepted
    assert restored.update(big.id, 0.9, output_tokens=512.0, now=101.0).learner_updated == (
        learner == "shared"
    )
    r = policy.update(big.id, 0.9, output_tokens=512.0, now=101.0)
    assert r.learner_updated == (learner == "shared")  # the shared model learns from features
    if learner == "disjoint":
        assert_scores_follow_mapping(before, scores(policy), mapping)
    policy.update(mid.id, 0.6, now=101.0)
    restored.update(mid.id, 0.6, now=101.0)
    assert policy.n_pending == restored.n_pending == 0
    assert restored.to_bytes() == policy.to_bytes()

    # never chosen again, even when exploring
    policy.set_exploration("epsilon", epsilon=1.0)
    assert all(policy.select(x, 100.0, now=102.0).model != "big" for x in PROBES)

    with pytest.raises(ConfigError, match='no active model named "big"'):
        policy.retire_model("big")
    with pytest.raises(ConfigError, match='no active model named "huge"'):
        policy.retire_model("huge")
    with pytest.raises(ConfigError, match="already registered"):
        policy.add_model(ModelSpec("big", 1.0, 1.0))  # a retired name is not reused


def test_pending_decision_follows_its_action_across_a_retirement() -> None:
    """A decision made before a retirement that shifts indices updates the right arm after."""
    policy = make("disjoint")
    train(policy, 42)
    j = index_of(policy, "big", "adaptive_consistency", 4)
    d = forced(policy, j, PROBES[3], now=100.0)
    mapping = policy.retire_model("cheap")  # every later index shifts down by 7
    assert mapping[j] == j - 7
    before = scores(policy)
    policy.update(d.id, 1.0, samples_used=3.0, now=100.0)
    for (m0, b0), (m1, b1) in zip(before, scores(policy), strict=True):
        changed = np.flatnonzero((m0 != m1) | (b0 != b1))
        np.testing.assert_array_equal(changed, [mapping[j]])


@pytest.mark.parametrize("learner", LEARNERS)
def test_add_model_while_serving(learner: str) -> None:
    policy = make(learner)
    train(policy, 42)
    k = policy.n_actions
    pending = policy.select(PROBES[0], 300.0, now=100.0)
    before = scores(policy)
    idx = policy.add_model(ModelSpec("new", 0.5, 2.0, parallelism=2), n_values=(1, 2))
    assert idx == list(range(k, k + 4))
    assert [policy.actions[i].model for i in idx] == ["new"] * 4
    assert policy.actions[:k] == space().ordered_actions()
    assert "new" in policy.models
    identity = np.arange(k)
    after = [(m[:k], b[:k]) for m, b in scores(policy)]
    assert_scores_follow_mapping(before, after, identity)
    policy.update(pending.id, 0.5, now=100.0)
    d = forced(policy, idx[2], PROBES[1], now=101.0)
    assert d.model == "new" and policy.update(d.id, 0.8, now=101.0).learner_updated
    assert policy.predict(300.0)["cost_usd"].shape == (k + 4,)

    with pytest.raises(ConfigError, match="already registered"):
        policy.add_model(ModelSpec("mid", 1.0, 1.0))
    with pytest.raises(ConfigError, match="is not for model"):
        policy.add_model(ModelSpec("other"), actions=[Action("mid", "single", 1)])
    assert policy.n_actions == k + 4


def test_retiring_the_last_model_is_refused() -> None:
    policy = Policy(ActionSpace.grid(MODELS[:1], n_values=(1, 2)), DIM)
    state = policy.to_bytes()
    with pytest.raises(ConfigError, match="at least one must remain"):
        policy.retire_model("cheap")
    assert policy.to_bytes() == state


# --------------------------------------------------------------------------------------------
# Configuration errors
# --------------------------------------------------------------------------------------------

GOOD = ("m", 1.0, 2.0, 1, True, 0.0005, 0.02, 256.0)


def core_with(model: tuple[Any, ...] = GOOD, actions: Any = (("single", 1),), **kw: Any) -> Any:
    return PolicyCore([(model, list(actions))], DIM, **kw)


@pytest.mark.parametrize(
    ("build", "exc", "match"),
    [
        (lambda: make(reward="thrifty"), ConfigError, "unknown reward preset 'thrifty'"),
        (lambda: make(reward=(1.0, -1.0, 0.0)), ConfigError, "RewardWeights.cost"),
        (lambda: make(learner="tree"), ConfigError, "learner must be 'shared' or 'disjoint'"),
        (lambda: make(exploration="boltzmann"), ConfigError, "unknown exploration"),
        (lambda: make(exploration="epsilon", epsilon=1.5), ConfigError, "invalid exploration"),
        (lambda: make(exploration="softmax", temperature=0.0), ConfigError, "invalid exploration"),
        (lambda: make(ttl_s=0.0), ConfigError, "ttl_s must be > 0"),
        (lambda: make(capacity=0), ConfigError, "capacity must be >= 1"),
        (lambda: Policy(space(), 0), ConfigError, "dim must be >= 1"),
        (lambda: make(budget_per_request_usd=-1.0), ConfigError, "budget target"),
        (
            lambda: make(budget_per_request_usd=1.0, budget_per_hour_usd=1.0),
            ConfigError,
            "at most one",
        ),
        (lambda: make(cost_scale=0.0), ConfigError, "cost_scale must be finite and > 0"),
        (lambda: Policy("grid", DIM), ConfigError, "space must be an ActionSpace"),  # type: ignore[arg-type]
        # the Python records validate first (ValueError naming the field) ...
        (lambda: ActionSpace([MODELS[0]], []), ValueError, "the action space is empty"),
        (lambda: ModelSpec("m", price_in_per_mtok=-1.0), ValueError, "price_in_per_mtok"),
        (lambda: ModelSpec("m", price_out_per_mtok=-0.5), ValueError, "price_out_per_mtok"),
        (lambda: ModelSpec("m", parallelism=0), ValueError, "parallelism"),
        (lambda: Action("m", "single", 2), ValueError, "'single' requires n == 1"),
        (lambda: Action("m", "beam", 2), ValueError, "unknown strategy"),
        (
            lambda: ActionSpace.grid([MODELS[0], ModelSpec("cheap", 9.0, 9.0)]),
            ValueError,
            "duplicate model name 'cheap'",
        ),
        # ... and the core validates the same things for any caller of PolicyCore
        (lambda: PolicyCore([], DIM), ConfigError, "the action space is empty"),
        (lambda: core_with(actions=[]), ConfigError, "the action space is empty"),
        (lambda: core_with((*GOOD[:1], -1.0, *GOOD[2:])), ConfigError, "price_in_per_mtok"),
        (lambda: core_with((*GOOD[:2], -1.0, *GOOD[3:])), ConfigError, "price_out_per_mtok"),
        (lambda: core_with((*GOOD[:3], 0, *GOOD[4:])), ConfigError, "parallelism must be >= 1"),
        (lambda: core_with(actions=[("single", 2)]), ConfigError, "'single' requires n == 1"),
        (lambda: core_with(actions=[("beam", 2)]), ConfigError, "unknown strategy"),
        (
            lambda: core_with(actions=[("best_of_n", 2), ("best_of_n", 2)]),
            ConfigError,
            "duplicate action",
        ),
        (
            lambda: PolicyCore([(GOOD, [("single", 1)]), (GOOD, [("single", 1)])], DIM),
            ConfigError,
            "already registered",
        ),
    ],
)
def test_bad_configuration(build: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        build()


def test_config_errors_are_uniscale_errors() -> None:
    """Every core configuration error is catchable as UniScaleError and as ValueError."""
    with pytest.raises(UniScaleError):
        make(learner="tree")
    assert issubclass(ConfigError, UniScaleError) and issubclass(UniScaleError, ValueError)


# --------------------------------------------------------------------------------------------
# Persistence errors
# --------------------------------------------------------------------------------------------

HEADER = 21  # magic 8, version 4, kind 1, payload length 8


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Policy, Path]:
    policy = make("shared")
    train(policy, 30)
    policy.select(PROBES[0], 100.0, now=100.0)  # one pending decision in the file
    path = tmp_path / "policy.uniscale"
    policy.save(path)
    return policy, path


def test_save_load_file(saved: tuple[Policy, Path]) -> None:
    policy, path = saved
    loaded = Policy.load(path)
    assert loaded.to_bytes() == policy.to_bytes() == path.read_bytes()
    assert loaded.n_pending == 1 and loaded.actions == policy.actions


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:-1], id="crc-cut"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"NOTSCALE" + b[8:], id="magic"),
        pytest.param(lambda b: b[:100] + bytes([b[100] ^ 0x40]) + b[101:], id="bit-flip"),
        pytest.param(lambda b: b + b"\0", id="trailing"),
        pytest.param(lambda b: with_crc(b[:8] + struct.pack("<I", 99) + b[12:-4]), id="version"),
        pytest.param(lambda b: with_crc(b[:12] + b"\x01" + b[13:-4]), id="kind-linucb"),
        pytest.param(lambda b: with_crc(b[:13] + struct.pack("<Q", 2**60) + b[21:-4]), id="length"),
        pytest.param(
            lambda b: with_crc(b[:HEADER] + struct.pack("<Q", 2**40) + b[HEADER + 8 : -4]),
            id="dim-huge",
        ),
    ],
)
def test_corrupted_policy_file(saved: tuple[Policy, Path], corrupt: Any) -> None:
    _, path = saved
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(StateError):
        Policy.load(path)
    with pytest.raises(StateError):
        Policy.from_bytes(path.read_bytes())


def test_learner_state_is_not_a_policy(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="LinUCB"):
        Policy.from_bytes(uniscale.LinUCB(3, 2).to_bytes())


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        Policy.load(tmp_path / "nope.uniscale")


def test_payload_corruption_never_panics() -> None:
    """Every single-byte change of the payload (three bit patterns, CRC recomputed): either a
    StateError, or a policy that selects, takes feedback (or refuses with a UniScaleError) and
    saves to bytes that load again.

    (A panic in the core would surface as pyo3's PanicException, a BaseException; any exception
    other than a UniScaleError fails the test.)"""
    policy = make("disjoint")  # d = 4: a small blob, so every byte can be tried
    train(policy, 30)
    policy.select(PROBES[0], 100.0, now=100.0)  # one pending decision, 30 answered ids
    blob = policy.to_bytes()
    loaded = 0
    for pos in range(HEADER, len(blob) - 4):
        for xor in (0x01, 0x80, 0xFF):
            body = bytearray(blob[:-4])
            body[pos] ^= xor
            try:
                p = Policy.from_bytes(with_crc(bytes(body)))
            except StateError:
                continue
            loaded += 1
            try:
                d = p.select(PROBES[0], 100.0, now=200.0)
                p.update(d.id, 0.5, now=200.0)
            except UniScaleError:
                pass
            again = p.to_bytes()
            assert Policy.from_bytes(again).to_bytes() == again, (pos, xor)
    assert loaded > 0  # most bytes are matrix entries or floats: a changed value still loads


def test_decision_ids_past_2_63_take_feedback() -> None:
    """Decision ids are u64 in the core (and in `Decision.id`), so every id `select` hands out
    must be accepted by `update`. Minimal repro: a state whose id counter is 2**63."""
    blob = Policy(ActionSpace.grid(MODELS[:1], n_values=(1,)), DIM).to_bytes()
    # fresh policy: the payload ends with rng (8), next_id (8), n_pending = 0 (8), n_done = 0 (8),
    # the conservative-mode flag (1), the interaction scale (8) and the interaction prior (33)
    at = len(blob) - 4 - 33 - 33
    assert blob[at : at + 8] == bytes(8)
    policy = Policy.from_bytes(with_crc(blob[:at] + struct.pack("<Q", 2**63) + blob[at + 8 : -4]))
    d = policy.select(np.ones(DIM), 10.0, now=0.0)
    assert d.id == 2**63
    policy.update(d.id, 0.5, now=0.0)  # OverflowError: the binding takes decision_id as i64
    assert policy.n_pending == 0


# --------------------------------------------------------------------------------------------
# The Decision record
# --------------------------------------------------------------------------------------------

DICT_KEYS = {
    "id", "index", "action_uid", "model", "strategy", "n", "quality_mean", "quality_bonus",
    "mean", "bonus", "score", "prediction", "input_tokens", "propensity", "explored",
    "fallback", "conservative", "pacing_lambda", "quality_multiplier", "candidates",
    "probabilities", "pruned",
    "created_s",
}  # fmt: skip
REASON = re.compile(r"^(masked|cost|latency|dominated:\d+)$")


@pytest.mark.parametrize("learner", LEARNERS)
def test_decision_fields(learner: str) -> None:
    policy = make(learner, exploration="softmax", temperature=0.5)
    train(policy, 42)
    mask = np.ones(policy.n_actions, dtype=bool)
    mask[0] = False
    pred = policy.predict(800.0)
    d = policy.select(
        # limits apply to the point prediction of arms with data of their own, else to the
        # optimistic one (no latency was ever reported here)
        PROBES[0], 800.0, max_cost_usd=float(np.quantile(pred["cost_usd_for_limit"], 0.7)),
        max_latency_s=float(np.quantile(pred["latency_s_for_limit"], 0.3)), mask=mask, now=123.5,
    )  # fmt: skip
    out = d.to_dict()
    assert set(out) == DICT_KEYS
    again = json.loads(json.dumps(out))  # JSON-serialisable as it is, and lossless
    assert again == out
    assert again["candidates"] == d.candidates.tolist()
    assert again["probabilities"] == d.probabilities.tolist()
    assert set(again["prediction"]) == {
        "output_tokens_per_sample", "samples", "rounds", "cost_usd", "latency_s"
    }  # fmt: skip
    assert again["prediction"]["cost_usd"] == d.cost_usd
    assert (out["id"], out["index"], out["model"], out["n"]) == (d.id, d.index, d.model, d.n)
    assert out["created_s"] == 123.5 and out["input_tokens"] == 800.0

    assert isinstance(d.candidates, np.ndarray) and d.candidates.dtype == np.int64
    assert isinstance(d.probabilities, np.ndarray) and d.probabilities.dtype == np.float64
    assert d.candidates.shape == d.probabilities.shape
    assert d.pruned and all(isinstance(i, int) for i in d.pruned)
    assert all(REASON.match(r) for r in d.pruned.values()), d.pruned
    assert {"masked", "cost", "latency"} <= {r.split(":")[0] for r in d.pruned.values()}
    assert d.pruned[0] == "masked"
    assert out["pruned"] == {str(i): r for i, r in d.pruned.items()}

    assert d.action == policy.actions[d.index]
    assert d.action_uid == policy.core.actions()[d.index][3]
    assert d.strategy == d.action.strategy and d.model == d.action.model
    assert d.mean + d.bonus - d.pacing_lambda * d.cost_usd / policy.core.cost_scale == (
        pytest.approx(d.score)
    )
    assert f"id={d.id}" in repr(d)


# --------------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------------

N_THREADS = 8
ROUNDS = 1000
TIMEOUT_S = 60.0


@pytest.mark.parametrize("learner", LEARNERS)
def test_threads_share_one_policy(learner: str) -> None:
    """8 threads select and answer (some immediately, some batched out of order) on one Policy.

    No exception, no deadlock (timeout), unique ids, no lost update: every decision is answered
    exactly once, nothing is left pending, the pacer saw every cost, and the final learner equals
    a single-threaded replay of the same (action, x, quality) triples."""
    policy = make(learner, exploration="epsilon", epsilon=0.2, budget_per_request_usd=0.002)
    start = threading.Barrier(N_THREADS)

    def worker(seed: int) -> list[tuple[int, int, np.ndarray, float, float]]:
        rng = np.random.default_rng(seed)
        done: list[tuple[int, int, np.ndarray, float, float]] = []
        held: list[tuple[Decision, np.ndarray]] = []
        start.wait(timeout=TIMEOUT_S)
        for t in range(ROUNDS):
            x = rng.normal(size=DIM)
            limit = 0.004 if t % 3 == 0 else None
            d = policy.select(x, 400.0, max_cost_usd=limit, now=float(t))
            held.append((d, x))
            if t % 4 != 3:
                continue
            for d, x in reversed(held):
                q, c = float(rng.random()), float(rng.uniform(0, 0.01))
                policy.update(d.id, q, cost_usd=c, now=float(t))
                done.append((d.id, d.index, x, q, c))
            held.clear()
        for d, x in held:
            q, c = float(rng.random()), float(rng.uniform(0, 0.01))
            policy.update(d.id, q, cost_usd=c, now=float(ROUNDS))
            done.append((d.id, d.index, x, q, c))
        return done

    with ThreadPoolExecutor(N_THREADS) as pool:
        futures = [pool.submit(worker, s) for s in range(N_THREADS)]
        logs = [f.result(timeout=TIMEOUT_S) for f in futures]
    records = [r for log in logs for r in log]
    total = N_THREADS * ROUNDS
    assert len(records) == total
    assert sorted(r[0] for r in records) == list(range(total))  # unique, none skipped
    assert policy.n_pending == 0
    assert policy.core.total_cost_usd == pytest.approx(sum(r[4] for r in records), rel=1e-9)

    replay = make(learner)
    for t, (_, index, x, q, c) in enumerate(sorted(records, key=lambda r: r[0])):
        d = forced(replay, index, x, now=float(t))
        replay.update(d.id, q, cost_usd=c, now=float(t))
    for (ma, ba), (mb, bb) in zip(scores(policy), scores(replay), strict=True):
        np.testing.assert_allclose(ma, mb, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ba, bb, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------------------------
# observe: outcomes no decision asked for (sub-actions, warm starts, other replicas)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("learner", LEARNERS)
def test_observe_learns_exactly_what_a_decision_would(learner: str) -> None:
    via_decision = make(learner, budget_per_request_usd=0.001)
    via_observe = make(learner, budget_per_request_usd=0.001)
    rng = np.random.default_rng(5)
    for t in range(30):
        k = int(rng.integers(via_decision.n_actions))
        x = rng.normal(size=DIM)
        a = via_decision.actions[k]
        fb = {
            "quality": float(rng.random()),
            "latency_s": float(rng.uniform(0.5, 3.0)),
            "output_tokens": 200.0 * a.n,
            "samples_used": float(a.n),
        }
        d = forced(via_decision, k, x, now=float(t))
        want = via_decision.update(d.id, **fb, now=float(t))
        # alternate index (Python and NumPy integers) and Action forms
        form = (a, k, np.int64(k))[t % 3]
        got = via_observe.observe(x, form, input_tokens=500.0, **fb)
        assert got.reward == pytest.approx(want.reward, rel=1e-12)
        assert got.cost_usd == pytest.approx(want.cost_usd, rel=1e-12)
        assert got.learner_updated
    for (m1, b1), (m2, b2) in zip(scores(via_decision), scores(via_observe), strict=True):
        np.testing.assert_allclose(m2, m1, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b2, b1, rtol=1e-10, atol=1e-12)
    for key, v in via_decision.predict(800.0).items():
        np.testing.assert_allclose(via_observe.predict(800.0)[key], v, rtol=1e-10)
    # nothing was spent on the observing policy's behalf: no pacing, no pending decisions
    assert via_observe.pacing_lambda == 0.0 and via_decision.pacing_lambda > 0.0
    assert via_observe.n_pending == 0


@pytest.mark.parametrize("learner", LEARNERS)
@pytest.mark.parametrize(
    ("args", "kw", "exc", "match"),
    [
        ((np.ones(DIM), 21, 0.5), {}, UnknownActionError, "21"),
        ((np.ones(DIM), -1, 0.5), {}, UnknownActionError, "-1"),
        ((np.ones(DIM), Action("gone", "single", 1), 0.5), {}, UnknownActionError, "gone"),
        ((np.ones(DIM), True, 0.5), {}, UnknownActionError, "int index"),
        ((np.ones(DIM), 1.0, 0.5), {}, UnknownActionError, "int index"),
        ((np.ones(DIM + 1), 0, 0.5), {}, ShapeError, "x"),
        ((np.full(DIM, math.nan), 0, 0.5), {}, NonFiniteError, "x"),
        ((np.ones(DIM), 0, math.nan), {}, NonFiniteError, "quality"),
        ((np.ones(DIM), 0, 0.5), {"input_tokens": -3.0}, ConfigError, "input_tokens"),
        ((np.ones(DIM), 0, 0.5), {"latency_s": -1.0}, ConfigError, "latency_s must be >= 0"),
        ((np.ones(DIM), 0, 0.5), {"samples_used": 2.0}, ConfigError, "samples_used"),
    ],
)
def test_observe_rejects_bad_input_state_unchanged(
    learner: str, args: tuple[Any, ...], kw: dict[str, float], exc: type[Exception], match: str
) -> None:
    policy = make(learner)
    train(policy, 10)
    state = policy.to_bytes()
    with pytest.raises(exc, match=match):
        policy.observe(*args, **kw)
    assert policy.to_bytes() == state


def test_sub_actions_are_the_runs_a_sampled_run_contains() -> None:
    from uniscale.outcomes import sub_actions

    acts = space().ordered_actions()
    names = lambda idx: {str(acts[i]) for i in idx}  # noqa: E731
    assert sub_actions(Action("mid", "single", 1), 1, acts) == []
    assert names(sub_actions(Action("mid", "self_consistency", 4), 4, acts)) == {
        "mid/self_consistency/n=2",
        "mid/best_of_n/n=2",
        "mid/best_of_n/n=4",
        "mid/adaptive_consistency/n=2",
        "mid/adaptive_consistency/n=4",
    }
    # adaptive consistency that stopped after 2 of 4 samples contains only the n = 2 runs
    assert names(sub_actions(Action("big", "adaptive_consistency", 4), 2, acts)) == {
        "big/self_consistency/n=2",
        "big/best_of_n/n=2",
        "big/adaptive_consistency/n=2",
    }
