"""Regression tests for the review of 2026-12-02 on the policy's state: finite inputs that used
to drive stored values non-finite (D2), checksum-valid but inconsistent state (D3), updates that
mutated before failing (D15), and out-of-range decision ids (D18).

Policy payload layout (rust/policy/persist.rs `to_bytes`), all little-endian after the 21-byte
header:
dim, model_slots, next_uid, n_models (u64 each); per model: name (u64 length + bytes), price_in,
price_out (f64), parallelism (u32), bills_prompt_once (u8), latency_in, latency_out,
prior_output_tokens (f64), retired (u8); n_actions (u64); per action: model (u64), strategy
(u8), n (u32), uid (u64); learner kind (u8) and the learner payload; cost model; pacer; ...;
rng, next_id (u64); n_pending and the pending decisions; n_done and the answered ids.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np
import pytest

from uniscale import (
    ActionSpace,
    ConfigError,
    ExpiredDecisionError,
    ModelSpec,
    NonFiniteError,
    Policy,
    StateError,
    UniScaleError,
    UnknownDecisionError,
)

DIM = 3
# format 5 interaction prior at the end of a policy payload (tests/test_state.py)
PRIOR = 8 + 1 + 8 + 8 + 8
MODELS = [ModelSpec("cheap", 0.2, 0.8, parallelism=4), ModelSpec("big", 5.0, 20.0)]
HEADER = 21


def make(learner: str = "disjoint", **kw: Any) -> Policy:
    space = ActionSpace.grid(MODELS, n_values=(1, 4))
    return Policy(space, DIM, learner=learner, **kw)  # type: ignore[arg-type]


def reseal(body: bytes) -> bytes:
    """Header length fixed up and CRC-32 recomputed: the altered payload reaches validation."""
    b = bytearray(body)
    struct.pack_into("<Q", b, 13, len(b) - HEADER)
    return bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)))


def learner_span(blob: bytes) -> tuple[int, int]:
    """(start, end) of the learner section (kind byte included) of a Policy blob."""
    pos = HEADER
    dim, _slots, _uid, n_models = struct.unpack_from("<4Q", blob, pos)
    pos += 32
    for _ in range(n_models):
        (name_len,) = struct.unpack_from("<Q", blob, pos)
        pos += 8 + name_len + 8 + 8 + 4 + 1 + 8 * 3 + 1
    (n_actions,) = struct.unpack_from("<Q", blob, pos)
    pos += 8 + n_actions * (8 + 1 + 4 + 8)
    if struct.unpack_from("<I", blob, 8)[0] >= 7:  # the strategy list: name and three flags each
        (n_strategies,) = struct.unpack_from("<Q", blob, pos)
        pos += 8
        for _ in range(n_strategies):
            (name_len,) = struct.unpack_from("<Q", blob, pos)
            pos += 8 + name_len + 3
    start = pos
    kind = blob[pos]
    pos += 1
    if kind == 1:  # shared: K, d, p, config (4 f64), psi, n_updates, A, b
        k, d, p = struct.unpack_from("<3Q", blob, pos)
        joint = (d + 1) * (p + 1)
        pos += 24 + 32 + 8 + 8 * k * p + 8 + 8 + 8 * joint * joint + 8 + 8 * joint
    else:  # disjoint: K, d, config, per arm n_updates, A, b
        k, d = struct.unpack_from("<2Q", blob, pos)
        pos += 16 + 32 + k * (8 + 8 + 8 * d * d + 8 + 8 * d)
    assert dim == d
    return start, pos


def assert_finite_state(policy: Policy) -> None:
    """The state saves, loads back to the same bytes, and what it reports is finite."""
    blob = policy.to_bytes()
    again = Policy.from_bytes(blob)
    assert again.to_bytes() == blob
    assert math.isfinite(policy.pacing_lambda) and math.isfinite(policy.pacing_credit)
    assert math.isfinite(policy.core.total_cost_usd)


# --- D2: finite inputs never make the stored state non-finite -------------------------------


@pytest.mark.parametrize("learner", ["disjoint", "shared"])
def test_two_updates_of_1e308_dollars_are_refused_not_stored_as_inf(learner: str) -> None:
    policy = make(learner, budget_per_request_usd=1e-3)
    a = policy.select(np.ones(DIM), 100.0, now=0.0)
    b = policy.select(np.ones(DIM), 100.0, now=0.0)
    state = policy.to_bytes()
    # with a cost weight the reward itself overflows: refused, nothing changes
    with pytest.raises(NonFiniteError, match=r"reward .* overflows"):
        policy.update(a.id, 0.5, cost_usd=1e308, now=1.0)
    assert policy.to_bytes() == state
    policy.set_reward((1.0, 0.0, 0.0))
    policy.update(a.id, 0.5, cost_usd=1e308, now=1.0)
    state = policy.to_bytes()
    with pytest.raises(NonFiniteError, match=r"overflow the running total"):
        policy.update(b.id, 0.5, cost_usd=1e308, now=1.0)
    assert policy.to_bytes() == state and policy.n_pending == 1
    assert_finite_state(policy)


def test_subnormal_hourly_budget_with_free_feedback_keeps_lambda_finite() -> None:
    """5e-324 dollars per hour times a one-second gap underflows to a 0-dollar target per
    request; zero-cost feedback was 0/0: lambda NaN, every score NaN."""
    policy = make(budget_per_hour_usd=5e-324)
    for t in range(4):
        d = policy.select(np.ones(DIM), 100.0, now=float(t))
        policy.update(d.id, 0.5, cost_usd=0.0, now=float(t))
    assert policy.pacing_lambda == 0.0
    d = policy.select(np.ones(DIM), 100.0, now=10.0)
    assert math.isfinite(d.score)
    policy.update(d.id, 0.5, cost_usd=1e-6, now=10.0)  # any spend is far over such a budget
    assert policy.pacing_lambda > 0 and math.isfinite(policy.pacing_lambda)
    assert_finite_state(policy)


def test_huge_hourly_budget_and_clock_jumps_keep_the_pacer_finite() -> None:
    policy = make(budget_per_hour_usd=1e308)
    for now in (-1e308, 1e308, 0.0, 1e308):
        d = policy.select(np.ones(DIM), 100.0, now=now)
        policy.update(d.id, 0.5, cost_usd=1.0, now=now)
    assert_finite_state(policy)


@pytest.mark.parametrize("learner", ["disjoint", "shared"])
def test_input_tokens_whose_predicted_cost_overflows_are_refused(learner: str) -> None:
    policy = make(learner)
    state = policy.to_bytes()
    with pytest.raises(NonFiniteError, match=r"predicted (cost|latency|output tokens)"):
        policy.select(np.ones(DIM), 1e308, now=0.0)
    assert policy.to_bytes() == state
    d = policy.select(np.ones(DIM), 1e6, now=0.0)  # large but representable: fine
    assert math.isfinite(d.cost_usd)
    assert_finite_state(policy)


def test_token_feedback_whose_cost_overflows_is_refused() -> None:
    """A model priced at 1e200 dollars per million tokens: 1e200 output tokens cost inf."""
    gold = ModelSpec("gold", 1e200, 1e200)
    policy = Policy(ActionSpace.grid([gold], n_values=(1,)), DIM)
    d = policy.select(np.ones(DIM), 100.0, now=0.0)
    state = policy.to_bytes()
    with pytest.raises(NonFiniteError, match=r"realised cost_usd .* overflows"):
        policy.update(d.id, 0.5, output_tokens=1e200, now=0.0)
    with pytest.raises(NonFiniteError, match=r"realised cost_usd .* overflows"):
        policy.observe(np.ones(DIM), 0, 0.5, output_tokens=1e200)
    assert policy.to_bytes() == state
    policy.update(d.id, 0.5, output_tokens=1e300, cost_usd=0.0, latency_s=1e300, now=0.0)
    assert_finite_state(policy)


def test_subnormal_pacing_step_is_refused() -> None:
    """With lambda > 0, set_budget derives the debt as lambda / step: inf for step = 5e-324."""
    policy = make(budget_per_request_usd=1e-9)
    d = policy.select(np.ones(DIM), 100.0, now=0.0)
    policy.update(d.id, 0.5, cost_usd=1e-3, now=0.0)
    assert policy.pacing_lambda > 0
    state = policy.to_bytes()
    for step in (5e-324, 1e-310):
        with pytest.raises(ConfigError, match=r"pacing step must be finite and >= 1e-300"):
            policy.set_budget(per_request_usd=1e-9, pacing_step=step)
    assert policy.to_bytes() == state
    policy.set_budget(per_request_usd=1e-9, pacing_step=1e-300)
    assert_finite_state(policy)


# --- D15: a refused update changes nothing ---------------------------------------------------


@pytest.mark.parametrize("learner", ["disjoint", "shared"])
def test_refused_update_does_not_expire_other_decisions(learner: str) -> None:
    policy = make(learner, ttl_s=10.0)
    old = policy.select(np.ones(DIM), 100.0, now=0.0)
    mask = np.array([a.n == 4 for a in policy.actions])
    d = policy.select(np.ones(DIM), 100.0, mask=mask, now=5.0)
    state = policy.to_bytes()
    for bad in ({"samples_used": 5.0}, {"samples_used": 0.5}, {"cost_usd": 1e308}):
        with pytest.raises(UniScaleError):
            policy.update(d.id, 0.5, now=12.0, **bad)  # `old` is past its TTL at t = 12
        assert policy.to_bytes() == state
        assert policy.n_pending == 2
    policy.update(d.id, 0.5, samples_used=2.0, now=12.0)
    assert policy.n_pending == 0  # the successful update applied the expiry
    with pytest.raises(ExpiredDecisionError):
        policy.update(old.id, 0.5, now=12.0)


# --- D3: checksum-valid but inconsistent state is a StateError -------------------------------


def test_shared_learner_narrower_than_the_action_space_is_refused() -> None:
    """The review's repro: the learner section of a policy with one model slot fewer (p - 1
    action features, same actions and dim) spliced in, CRC recomputed. It used to load, and
    after add_model select panicked (index out of bounds in rust/shared.rs)."""
    wide = make("shared", model_slots=3).to_bytes()
    narrow = make("shared", model_slots=2).to_bytes()
    ws, we = learner_span(wide)
    ns, ne = learner_span(narrow)
    forged = reseal(wide[:ws] + narrow[ns:ne] + wide[we:-4])
    with pytest.raises(StateError, match=r"inconsistent policy state: .*action features"):
        Policy.from_bytes(forged)
    # the untouched blobs load (the splice itself is sound)
    Policy.from_bytes(reseal(wide[:ws] + wide[ws:we] + wide[we:-4]))


def pending_blob() -> tuple[bytes, int]:
    """A disjoint policy with three answered decisions and one pending; returns the blob and the
    offset of the pending decision (id, x, uid, model, strategy, n, psi, input, prediction,
    created)."""
    policy = make()
    for t in range(3):
        d = policy.select(np.ones(DIM), 100.0, now=float(t))
        policy.update(d.id, 0.5, now=float(t))
    policy.select(np.ones(DIM), 100.0, now=3.0)
    blob = policy.to_bytes()
    entry = 8 + (8 + 8 * DIM) + 8 + 8 + 1 + 4 + 8 + 8 + 5 * 8 + 8
    # answered ids, the conservative-mode flag, the interaction scale and prior
    done = 8 + 3 * 8 + 1 + 8 + PRIOR
    return blob, len(blob) - 4 - done - entry


@pytest.mark.parametrize(
    ("field", "fmt", "value", "match"),
    [
        ("uid", "<Q", 10**6, r"uid 1000000 is not below the uid counter"),
        ("model", "<Q", 7, r"pending decision is inconsistent"),
        ("n", "<I", 3, r"invalid \(single, n = 3\)|disagrees with action uid"),
        ("id", "<Q", 1, r"both pending and answered"),
        ("input", "<d", -1.0, r"invalid prediction"),
    ],
)
def test_pending_decision_inconsistent_with_the_space_is_refused(
    field: str, fmt: str, value: float, match: str
) -> None:
    blob, at = pending_blob()
    offsets = {"id": 0, "uid": 8 + 8 + 8 * DIM}
    offsets["model"] = offsets["uid"] + 8
    offsets["n"] = offsets["model"] + 8 + 1
    offsets["input"] = offsets["n"] + 4 + 8
    Policy.from_bytes(blob)  # as written, it loads
    b = bytearray(blob[:-4])
    struct.pack_into(fmt, b, at + offsets[field], value)
    with pytest.raises(StateError, match=match):
        Policy.from_bytes(reseal(bytes(b)))


def test_answered_ids_must_be_issued_and_distinct() -> None:
    blob, _ = pending_blob()
    first_done = len(blob) - 4 - PRIOR - 8 - 1 - 3 * 8
    for value, match in [(2, r"answered decision 2 is listed twice"), (99, r"not below")]:
        b = bytearray(blob[:-4])
        struct.pack_into("<Q", b, first_done, value)
        with pytest.raises(StateError, match=match):
            Policy.from_bytes(reseal(bytes(b)))


def test_decision_id_counter_at_2_64_does_not_wrap() -> None:
    blob = make().to_bytes()
    # fresh policy: the payload ends with rng, next_id, n_pending = 0, n_done = 0, then the
    # conservative-mode flag (one byte), the interaction scale (8 bytes) and prior (PRIOR)
    at = len(blob) - 4 - 33 - PRIOR
    assert blob[at : at + 8] == bytes(8)
    policy = Policy.from_bytes(reseal(blob[:at] + struct.pack("<Q", 2**64 - 1) + blob[at + 8 : -4]))
    state = policy.to_bytes()
    with pytest.raises(StateError, match=r"decision ids are exhausted"):
        policy.select(np.ones(DIM), 10.0, now=0.0)
    assert policy.to_bytes() == state


# --- D18: any out-of-range decision id is an UnknownDecisionError -----------------------------


@pytest.mark.parametrize(
    "bad_id",
    [2**63, 2**64 - 1, 2**64, 2**200, -1, -(2**70), np.uint64(2**63), np.int64(-1), True, 1.5],
)
def test_out_of_range_decision_ids_are_unknown(bad_id: Any) -> None:
    policy = make()
    d = policy.select(np.ones(DIM), 10.0, now=0.0)
    d = policy.select(np.ones(DIM), 10.0, now=0.0)  # id 1 exists: True must not mean 1
    state = policy.to_bytes()
    with pytest.raises(UnknownDecisionError, match=r"unknown decision id"):
        policy.update(bad_id, 0.5, now=0.0)
    assert policy.to_bytes() == state
    policy.update(d.id, 0.5, now=0.0)


def cost_offsets(blob: bytes) -> dict[str, int]:
    """Offsets in the cost model (format 6), which follows the learner: n_models; 4
    output-token regressions per model (count u64, A 2x2, b 2: data only, length-prefixed),
    one latency regression per model (count, A 3x3, b 3); the adaptive-sample table (u64
    length, (uid u64, sum f64, count f64) each); log-ratio statistics (count, sum, sum of
    squares f64) per (model, strategy) then per model; the per-action observation counts (u64
    length, (uid u64, count u64) each); the cost-exploration flag (u8). The pacer follows."""
    _, pos = learner_span(blob)
    (m,) = struct.unpack_from("<Q", blob, pos)
    pos += 8
    ridge2 = 8 + (8 + 8 * 4) + (8 + 8 * 2)
    ridge3 = 8 + (8 + 8 * 9) + (8 + 8 * 3)
    pos += 4 * m * ridge2 + m * ridge3
    (k,) = struct.unpack_from("<Q", blob, pos)
    out = {"adaptive": pos + 8}
    pos += 8 + 24 * k
    out["log_stats"] = pos
    pos += 5 * m * 24
    (j,) = struct.unpack_from("<Q", blob, pos)
    out["action_obs"] = pos + 8
    out["flag"] = pos + 8 + 16 * j
    out["pacer"] = pos + 8 + 16 * j + 1
    return out


def pacer_offset(blob: bytes) -> int:
    return cost_offsets(blob)["pacer"]


def paced_blob() -> bytes:
    policy = make(budget_per_hour_usd=1.0)
    mask = np.array([a.strategy == "adaptive_consistency" for a in policy.actions])
    for t in range(3):
        d = policy.select(np.ones(DIM), 100.0, mask=mask, now=float(t))
        policy.update(d.id, 0.5, samples_used=2.0, now=float(t))
    return policy.to_bytes()


@pytest.mark.parametrize(
    ("field", "fmt", "value", "match"),
    [
        # pacer: kind u8 @0, target @1, lambda @9, step @17, gap @25, last request @33,
        # n_costs @41, total @49, debt @57, carry-over @65
        (17, "<d", 5e-324, r"pacing step must be finite and >= 1e-300"),
        (25, "<d", -1.0, r"request gap estimate must be in"),
        (25, "<d", math.inf, r"gap is not finite"),
        (33, "<d", math.inf, r"last request time is infinite"),
        (49, "<d", -1.0, r"total cost must be >= 0"),
        (57, "<d", math.nan, r"pacing debt is not finite"),
        (65, "<d", -2.0, r"carry-over must be >= 0"),
    ],
)
def test_pacer_fields_out_of_range_are_refused(
    field: int, fmt: str, value: float, match: str
) -> None:
    blob = paced_blob()
    at = pacer_offset(blob)
    assert blob[at] == 2  # per-hour budget
    assert struct.unpack_from("<d", blob, at + 17) == (0.05,)  # the default step
    b = bytearray(blob[:-4])
    struct.pack_into(fmt, b, at + field, value)
    with pytest.raises(StateError, match=match):
        Policy.from_bytes(reseal(bytes(b)))


def test_adaptive_sample_table_must_be_sorted_and_issued() -> None:
    policy = make()
    # two adaptive actions observed: a two-entry table, sorted by action uid
    for i, a in enumerate(policy.actions):
        if a.strategy == "adaptive_consistency":
            policy.observe(np.ones(DIM), i, 0.5, samples_used=2.0)
    blob = policy.to_bytes()
    table = cost_offsets(blob)["adaptive"]
    (first,) = struct.unpack_from("<Q", blob, table)
    (second,) = struct.unpack_from("<Q", blob, table + 24)
    assert first < second
    for entry, uid, match in [(0, second, r"not sorted"), (1, 10**6, r"uid never issued")]:
        b = bytearray(blob[:-4])
        struct.pack_into("<Q", b, table + 24 * entry, uid)
        with pytest.raises(StateError, match=match):
            Policy.from_bytes(reseal(bytes(b)))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"price_in_per_mtok": 1.7e308}, r"price_in_per_mtok must be in \[0, 1e300\]"),
        ({"latency_out_s_per_token": 1e308}, r"latency_out_s_per_token must be in \[0, 1e300\]"),
        ({"prior_output_tokens": 1e301}, r"prior_output_tokens must be in \[0, 1e300\]"),
    ],
)
def test_model_parameters_that_overflow_the_cost_model_are_refused(
    spec: dict[str, float], match: str
) -> None:
    """A per-token latency of 1e308 s became an infinite per-thousand-token prior in the cost
    model: the policy (built or extended with add_model) could no longer be saved."""
    kw = {"price_in_per_mtok": 1.0, "price_out_per_mtok": 1.0} | spec
    with pytest.raises(ConfigError, match=match):
        Policy(ActionSpace.grid([ModelSpec("m", **kw)]), DIM)  # type: ignore[arg-type]
    policy = make()
    state = policy.to_bytes()
    with pytest.raises(ConfigError, match=match):
        policy.add_model(ModelSpec("m", **kw))  # type: ignore[arg-type]
    assert policy.to_bytes() == state


def test_default_scales_that_overflow_are_refused() -> None:
    """Each value in range, but one answer of such a model costs inf dollars: cost_scale."""
    gold = ModelSpec("gold", 1.0, 1e300, prior_output_tokens=1e300)
    with pytest.raises(ConfigError, match=r"default cost_scale .* overflows"):
        Policy(ActionSpace.grid([gold], n_values=(1,)), DIM)
    policy = Policy(ActionSpace.grid([gold], n_values=(1,)), DIM, cost_scale=1.0)
    assert_finite_state(policy)


def test_action_uid_counter_at_2_64_does_not_wrap() -> None:
    blob = bytearray(make().to_bytes()[:-4])
    struct.pack_into("<Q", blob, HEADER + 16, 2**64 - 1)  # dim, model_slots, next_uid
    policy = Policy.from_bytes(reseal(bytes(blob)))
    state = policy.to_bytes()
    with pytest.raises(ConfigError, match=r"action uids are exhausted"):
        policy.add_model(ModelSpec("new", 1.0, 1.0), ["single"], n_values=(1,))
    assert policy.to_bytes() == state


def test_cost_model_statistics_must_be_valid() -> None:
    """Format 3's pooled statistics: a negative count or sum of squares, or per-action
    observation counts out of order or for a uid never issued, is a StateError at load."""
    policy = make()
    for i in range(policy.n_actions):
        policy.observe(np.ones(DIM), i, 0.5, output_tokens=30.0 * policy.actions[i].n,
                       latency_s=1.0, input_tokens=100.0)  # fmt: skip
    blob = policy.to_bytes()
    off = cost_offsets(blob)
    assert Policy.from_bytes(blob).to_bytes() == blob
    cases = [
        (off["log_stats"], "<d", -1.0, r"invalid log-ratio statistics"),
        (off["log_stats"] + 16, "<d", -1.0, r"invalid log-ratio statistics"),
        (off["log_stats"] + 8, "<d", math.inf, r"not finite"),
        (off["action_obs"], "<Q", 10**6, r"not sorted|never issued"),
        (off["action_obs"] + 16 * (policy.n_actions - 1), "<Q", 10**6, r"uid never issued"),
    ]
    for at, fmt, value, match in cases:
        b = bytearray(blob[:-4])
        struct.pack_into(fmt, b, at, value)
        with pytest.raises(StateError, match=match):
            Policy.from_bytes(reseal(bytes(b)))


def test_strategy_list_must_fit_the_actions_and_the_layout() -> None:
    """Format 7's strategy list (name, adaptive, feature slot, single sample each) sits between
    the actions and the learner; flags that contradict the saved actions or the learner's
    feature width are a StateError."""
    for learner in ("shared", "disjoint"):
        blob = make(learner).to_bytes()
        start, _ = learner_span(blob)
        name = b"self_consistency"
        flags = blob.rindex(name, 0, start) + len(name)
        assert blob[flags : flags + 3] == b"\x00\x01\x00"
        b = bytearray(blob[:-4])
        b[flags + 2] = 1  # "single sample": the saved n = 4 action contradicts it
        with pytest.raises(StateError, match=r"invalid \(self_consistency, n = 4\)"):
            Policy.from_bytes(reseal(bytes(b)))
        b = bytearray(blob[:-4])
        b[flags + 1] = 0  # no feature slot: psi is two columns narrower than the learner's
        if learner == "shared":
            with pytest.raises(StateError, match=r"action features"):
                Policy.from_bytes(reseal(bytes(b)))
