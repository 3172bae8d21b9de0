"""The per-request core (`uniscale.engine.Engine`) and the one decision-log schema
(`uniscale.records`): decide/record on a tiny action space, side observations, deferred
feedback, the typed record's round trip and version check, logs written before the records
were typed, and the Router and the replay learning exactly the same thing from one stream."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uniscale import (
    Action,
    ActionSpace,
    ConfigError,
    DuplicateUpdateError,
    ModelSpec,
    NonFiniteError,
    Policy,
    Router,
    ShapeError,
    StateError,
    UniScaleError,
    UnknownDecisionError,
)
from uniscale.engine import Choice, Engine, Realised, SubRun
from uniscale.execute import Outcome, Sample
from uniscale.featurize import features_digest
from uniscale.lab import ope
from uniscale.lab.replay import LearnerSpec, Scales, reward_matrix, run_learner, schedule
from uniscale.outcomes import OutcomeTable
from uniscale.records import (
    SCHEMA_VERSION,
    DecisionRecord,
    ErrorInfo,
    FeedbackInfo,
    FeedbackRecord,
    Limits,
    RewardComponents,
    SideObservation,
    parse_record,
    reward_value,
)
from uniscale.router import DecisionLog, FeedbackContext, encode_record, read_decision_log

DATA = Path(__file__).parent / "data"
DIM = 3

MODELS = [
    ModelSpec("a", price_in_per_mtok=0.1, price_out_per_mtok=0.2, parallelism=4),
    ModelSpec("b", price_in_per_mtok=2.0, price_out_per_mtok=6.0, parallelism=2),
]
ACTIONS = [
    Action("a", "single", 1),
    Action("a", "self_consistency", 2),
    Action("a", "self_consistency", 4),
    Action("a", "best_of_n", 2),
    Action("b", "single", 1),
]


def tiny_policy(**kw: Any) -> Policy:
    return Policy(ActionSpace(MODELS, ACTIONS), DIM, **kw)


def x_of(i: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([1.0, math.sin(i), math.cos(i)])


def only(policy: Policy, action: Action) -> np.ndarray[Any, np.dtype[np.bool_]]:
    return np.array([a == action for a in policy.actions])


# ---- decide and record --------------------------------------------------------------------------


def test_decide_and_record_on_a_tiny_action_space() -> None:
    pol = tiny_policy()
    eng = Engine(pol, keep_features=True)
    x = x_of(1)
    choice = eng.decide(x, input_tokens=120, max_cost_usd=0.5, request_id="r-1", now=10.0)
    d = choice.decision
    assert isinstance(choice, Choice) and choice.action in pol.actions
    assert choice.limits == Limits(0.5, None) and choice.time_s == 10.0
    upd, rec = eng.record(choice, Realised(1.0, 0.002, 1.5, 40.0, 1.0), now=11.0)
    assert upd is not None and upd.learner_updated and pol.n_pending == 0
    uids = [int(a[3]) for a in pol.core.actions()]
    assert rec.decision_id == choice.id and rec.action == choice.action
    assert rec.action_index == d.index and rec.action_uid == d.action_uid
    assert rec.propensity == d.propensity and rec.candidates == tuple(d.candidates.tolist())
    assert rec.probabilities == tuple(d.probabilities.tolist())
    assert rec.candidate_uids == tuple(uids[i] for i in rec.candidates)
    assert rec.input_tokens == 120.0 and rec.request_id == "r-1" and rec.time_s == 10.0
    assert rec.x == tuple(x.tolist()) and rec.x_sha256 == features_digest(x)
    assert rec.predicted_cost_usd == d.cost_usd and rec.predicted_latency_s == d.latency_s
    assert rec.realised_cost_usd == 0.002 and rec.realised_latency_s == 1.5
    assert rec.quality == 1.0 and rec.reward == upd.reward and rec.learning_skipped is None
    comp = rec.reward_components
    assert comp is not None and comp.weights == pol.reward_weights
    # The Python formula (table replay, re-pricing) and the Rust update agree to the last bit.
    assert comp.reward() == upd.reward
    # Recording the same decision twice: the second update is refused, noted, not raised.
    upd2, rec2 = eng.record(choice, Realised(0.0, 0.002, 1.5, 40.0, 1.0))
    assert upd2 is None and rec2.reward is None and rec2.quality == 0.0
    assert rec2.learning_skipped is not None
    assert rec2.learning_skipped.type == "DuplicateUpdateError" and eng.learning_skipped == 1
    strict = Engine(pol, strict=True)
    with pytest.raises(DuplicateUpdateError):
        strict.record(choice, Realised(0.0, 0.002, 1.5))


def test_engine_checks_its_inputs() -> None:
    with pytest.raises(ConfigError, match=r"uniscale\.Policy"):
        Engine(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_deferred"):
        Engine(tiny_policy(), max_deferred=0)
    versioned = tiny_policy(feature_version="hash-v1")
    with pytest.raises(ConfigError, match="featurizer version"):
        Engine(versioned, feature_version="other")
    Engine(versioned, feature_version="hash-v1").decide(x_of(0))
    eng = Engine(tiny_policy())
    with pytest.raises(ShapeError):
        eng.decide(np.zeros(DIM + 1))
    with pytest.raises(NonFiniteError):
        eng.decide([1.0, math.nan, 0.0])
    assert eng.policy.n_pending == 0
    assert eng.decide([1, 0, 0]).x.dtype == np.float64  # a list is taken, stored as float64


@given(
    q=st.floats(0, 1),
    cost=st.floats(0, 10),
    lat=st.floats(0, 100),
    w=st.tuples(st.floats(0, 3), st.floats(0, 3), st.floats(0, 3)),
)
def test_reward_value_is_the_rust_formula_bit_for_bit(
    q: float, cost: float, lat: float, w: tuple[float, float, float]
) -> None:
    pol = tiny_policy(reward=w, cost_scale=0.01, latency_scale=3.0)
    d = pol.select(x_of(0), now=0.0)
    upd = pol.update(d.id, q, cost_usd=cost, latency_s=lat, now=0.0)
    assert reward_value(q, cost, lat, pol.reward_weights, 0.01, 3.0) == upd.reward
    cols = reward_value(
        np.array([q]), np.array([cost]), np.array([lat]), tuple(np.array([v]) for v in w), 0.01, 3.0
    )
    assert cols[0] == upd.reward


class StubSubRuns:
    """Sub-runs of an 'a' run with 4 samples: self-consistency 2 known, others not."""

    drawn = 4.0

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.asked: list[Action] = []

    def result(self, action: Action) -> SubRun | None:
        self.asked.append(action)
        if self.fail:
            raise RuntimeError("no prefix")
        if action == Action("a", "self_consistency", 2):
            return SubRun(1.0, 0.001, 0.5, 30.0, 2.0, 100.0)
        return None


def test_side_observations_are_learned_in_record_as_observe_would() -> None:
    sc4 = Action("a", "self_consistency", 4)
    pol, twin = tiny_policy(), tiny_policy()
    eng = Engine(pol, side_observations=True, side_weight=0.5)
    x = x_of(3)
    choice = eng.decide(x, input_tokens=100, mask=only(pol, sc4), now=1.0)
    subs = StubSubRuns()
    upd, rec = eng.record(choice, Realised(1.0, 0.004, 1.0, 60.0, 4.0, sub_runs=subs), now=2.0)
    assert upd is not None
    # every same-model sampled action with n <= 4 is asked, in action order; single is not
    assert subs.asked == [Action("a", "self_consistency", 2), Action("a", "best_of_n", 2)]
    assert rec.side_observations == (SideObservation("a/self_consistency/n=2", 1.0, 2.0),)
    # ... and the policy learned exactly what an update plus an observe teach
    d = twin.select(x, 100.0, mask=only(twin, sc4), now=1.0)
    twin.update(d.id, 1.0, 0.004, 1.0, 60.0, 4.0, now=2.0)
    twin.observe(x, 1, 1.0, 100.0, 0.001, 0.5, 30.0, 2.0, weight=0.5)
    assert pol.to_bytes() == twin.to_bytes()
    # without side observations, or for a deferred quality, nothing more is learned
    off = Engine(tiny_policy())
    c = off.decide(x, mask=only(off.policy, sc4))
    assert off.record(c, Realised(1.0, 0.004, 1.0, sub_runs=subs))[1].side_observations is None
    # a failing sub-run source costs the extra learning only, and is logged
    bad = Engine(tiny_policy(), side_observations=True)
    c = bad.decide(x, mask=only(bad.policy, sc4))
    upd, rec = bad.record(c, Realised(1.0, 0.004, 1.0, sub_runs=StubSubRuns(fail=True)))
    assert upd is not None and rec.side_observations is None
    assert rec.side_observations_error == ErrorInfo("RuntimeError", "no prefix")


# ---- deferred feedback ------------------------------------------------------------------------


def test_deferred_feedback_goes_through_the_core() -> None:
    pol = tiny_policy()
    eng = Engine(pol)
    choice = eng.decide(x_of(2), input_tokens=50)
    info = FeedbackInfo("DeferredFeedback", ground_truth_given=False)
    upd, rec = eng.record(choice, Realised(None, 0.003, 2.0, 50.0, 1.0, feedback=info))
    assert upd is None and rec.quality is None and rec.reward is None
    assert rec.reward_components is None and rec.learning_skipped is None
    assert rec.feedback == FeedbackInfo("DeferredFeedback", False, deferred=True)
    assert eng.n_deferred == 1 and eng.deferred_ids() == [choice.id] and pol.n_pending == 1
    upd, fb = eng.feedback(choice.id, 0.5)
    assert isinstance(fb, FeedbackRecord) and fb.decision_id == choice.id
    assert fb.quality == 0.5 and fb.reward == upd.reward
    # the realised values stored when it ran are what the policy learned from
    assert fb.reward_components is not None and fb.reward_components.cost_usd == 0.003
    assert fb.reward_components.latency_s == 2.0 and fb.reward_components.reward() == upd.reward
    done = rec.completed(fb)
    assert done.reward == upd.reward and done.realised_cost_usd == 0.003
    assert eng.n_deferred == 0 and pol.n_pending == 0
    with pytest.raises(DuplicateUpdateError):
        eng.feedback(choice.id, 0.5)
    with pytest.raises(UnknownDecisionError):
        eng.feedback(10_000, 1.0)
    # an invalid quality keeps the stored values, so that a corrected retry completes it
    c2 = eng.decide(x_of(3))
    eng.record(c2, Realised(None, 0.001, 1.0))
    with pytest.raises(UniScaleError):
        eng.feedback(c2.id, math.nan)
    assert eng.deferred_ids() == [c2.id]
    assert eng.feedback(c2.id, 1.0)[0].cost_usd == 0.001
    # max_deferred drops the oldest
    small = Engine(tiny_policy(), max_deferred=1)
    first, second = small.decide(x_of(0)), small.decide(x_of(1))
    small.record(first, Realised(None, 0.0, 0.0))
    small.record(second, Realised(None, 0.0, 0.0))
    assert small.deferred_ids() == [second.id]


# ---- the record: round trip, version, old logs -------------------------------------------------


def full_record() -> DecisionRecord:
    pol = tiny_policy()
    eng = Engine(pol, keep_features=True, feature_version="", side_observations=True)
    sc4 = Action("a", "self_consistency", 4)
    choice = eng.decide(x_of(5), input_tokens=77, max_latency_s=30.0, mask=only(pol, sc4))
    realised = Realised(
        1.0,
        0.004,
        1.25,
        60.0,
        4.0,
        sub_runs=StubSubRuns(),
        summary={"answer": "4 \ud800", "failures": [], "confidence": None},
        feedback=FeedbackInfo("GroundTruthFeedback", True),
    )
    rec = eng.record(choice, realised)[1]
    return dataclasses.replace(rec, learning_skipped=ErrorInfo("X", "y"), error=ErrorInfo("E", "m"))


def test_decision_record_round_trips_through_json() -> None:
    rec = full_record()
    assert rec.side_observations and rec.x is not None and rec.outcome is not None
    line = encode_record(rec.to_json())
    back = parse_record(json.loads(line))
    assert back == rec
    assert DecisionRecord.from_json(rec.to_json()) == rec
    fb = FeedbackRecord(
        7, 12.5, 0.5, 0.25, RewardComponents(0.5, 0.01, 1.0, tiny_policy().reward_weights, 1, 2)
    )
    assert parse_record(json.loads(encode_record(fb.to_json()))) == fb
    assert rec.to_json()["schema"] == fb.to_json()["schema"] == SCHEMA_VERSION == 2


def test_decision_log_writes_typed_records(tmp_path: Path) -> None:
    rec = full_record()
    path = tmp_path / "d.jsonl"
    with DecisionLog(path) as log:
        log.write(rec)
        log.write({"type": "decision", "decision_id": 99, "decision": {"candidates": [0]}})
    with DecisionLog(path, include_features=False) as log:
        log.write(rec)
    a, legacy, b = list(read_decision_log(path))
    assert parse_record(a) == rec
    assert legacy["decision_id"] == 99 and parse_record(legacy).decision_id == 99
    assert "x" not in b and parse_record(b) == dataclasses.replace(rec, x=None)


def test_an_unknown_or_newer_schema_is_a_clear_error() -> None:
    j = full_record().to_json()
    with pytest.raises(
        StateError, match=r"schema 3 is written by a newer UniScale.*reads schemas 1, 2"
    ):
        parse_record({**j, "schema": 3})
    with pytest.raises(StateError, match="schema '2' is not a version this UniScale knows"):
        parse_record({**j, "schema": "2"})
    with pytest.raises(StateError, match="schema 0 is not a version"):
        parse_record({**j, "schema": 0})
    with pytest.raises(StateError, match="newer"):
        parse_record({"schema": 9, "type": "feedback", "decision_id": 1})
    with pytest.raises(StateError, match="unknown record type 'other'"):
        parse_record({**j, "type": "other"})
    with pytest.raises(StateError, match="expected a 'decision' record"):
        DecisionRecord.from_json({**j, "type": "feedback"})
    with pytest.raises(StateError, match="without a 'decision' field"):
        parse_record({"schema": 2, "type": "decision", "decision_id": 4})
    with pytest.raises(StateError, match="decision record 0: invalid field"):
        parse_record({**j, "decision": {**j["decision"], "propensity": "high"}})
    # off-policy evaluation reports it as its own error, naming the line
    with pytest.raises(ope.OPEError, match=r"log record 1: .*newer UniScale"):
        ope.records_from_log([j, {**j, "schema": 3}])


def test_logs_written_before_the_typed_records_still_read(tmp_path: Path) -> None:
    """tests/data/decision_log_v1.jsonl was written by UniScale at commit 5927728 (schema 1):
    a Router with side observations (4 scored requests, one deferred and completed by
    feedback, one left deferred), then ope_check's uniform and epsilon loggers (3 each)."""
    raw = list(read_decision_log(DATA / "decision_log_v1.jsonl"))
    assert {r["schema"] for r in raw} == {1} and len(raw) == 13
    recs = [parse_record(r, index=i) for i, r in enumerate(raw)]
    decisions = [r for r in recs if isinstance(r, DecisionRecord)]
    feedbacks = [r for r in recs if isinstance(r, FeedbackRecord)]
    assert len(decisions) == 12 and len(feedbacks) == 1
    for r, rec in zip(raw, recs, strict=True):
        if not isinstance(rec, DecisionRecord):
            continue
        d = r["decision"]
        assert rec.decision_id == r["decision_id"] and rec.propensity == d["propensity"]
        assert rec.candidates == tuple(d["candidates"]) and rec.action_uid == d["action_uid"]
        assert rec.x == tuple(r["x"]) and rec.reward == r["reward"]
        if rec.reward_components is not None:
            assert rec.reward_components.reward() == pytest.approx(r["reward"], abs=1e-12)
        # Re-written as schema 2, every key of the old record keeps its value.
        new = rec.to_json()
        assert new["schema"] == 2
        assert {k: new[k] for k in r if k != "schema"} == {
            k: v for k, v in r.items() if k != "schema"
        }
    router = [r for r in decisions if r.feedback is not None]
    assert len(router) == 6 and all(r.action is not None for r in router)
    assert sum(r.feedback.deferred for r in router if r.feedback) == 2
    assert any(r.side_observations for r in router)
    (fb,) = feedbacks
    late = next(r for r in decisions if r.decision_id == fb.decision_id and r.feedback)
    assert late.reward is None and late.completed(fb).reward == fb.reward
    # the uniform logger's old records named no model: the action stays unknown, not invented
    assert any(r.action is None for r in decisions)
    logged = ope.records_from_log(DATA / "decision_log_v1.jsonl")
    assert len(logged) == 11  # 4 scored + 1 completed + 6 from the loggers; 1 still deferred
    # a new writer appends schema 2 records to an old log; both read back
    path = tmp_path / "mixed.jsonl"
    path.write_bytes((DATA / "decision_log_v1.jsonl").read_bytes())
    rec = full_record()
    with DecisionLog(path) as log:
        log.write(rec)
    mixed = [parse_record(r) for r in read_decision_log(path)]
    assert len(mixed) == 14 and mixed[:13] == recs and mixed[13] == rec


# ---- one loop: the Router and the replay learn the same thing -----------------------------------


class TableFeaturizer:
    """The row's features and prompt size, for prompts "row <t>"."""

    version = ""

    def __init__(self, table: OutcomeTable) -> None:
        self.table = table
        self.dim = table.X.shape[1]

    def featurize_with_tokens(self, messages: Any) -> tuple[Any, int]:
        t = int(str(messages).split()[1])
        return self.table.X[t], int(self.table.input_tokens[t])


class TableQuality:
    """The table's quality for the row, as a feedback source."""

    def __init__(self, table: OutcomeTable, col_of: dict[Action, int]) -> None:
        self.table, self.col_of = table, col_of

    async def quality(self, ctx: FeedbackContext) -> float | None:
        t = int(str(ctx.messages).split()[1])
        return float(self.table.quality[t, self.col_of[ctx.outcome.action]])


class TableExecutorStub:
    """An executor whose outcomes come from the table: what the Router sees live."""

    def __init__(self, table: OutcomeTable, models: dict[str, ModelSpec]) -> None:
        self.table, self.models = table, models
        self.col_of = {a: i for i, a in enumerate(table.actions)}

    async def run(self, action: Action, messages: Any, **_: Any) -> Outcome:
        t = int(str(messages).split()[1])
        c = self.col_of[action]
        used = int(self.table.samples_used[t, c])
        tokens = int(self.table.output_tokens[t, c])
        sample = Sample("", "1", 0, action.model, 0, 0, "usage", None, None, 0.0)
        return Outcome(
            action=action,
            requested_action=action,
            text="",
            answer="1",
            samples=tuple(dataclasses.replace(sample, index=i) for i in range(used)),
            input_tokens=int(self.table.input_tokens[t]),
            output_tokens=tokens,
            cost_usd=float(self.table.cost_usd[t, c]),
            scorer_cost_usd=0.0,
            latency_s=float(self.table.latency_s[t, c]),
            requests=1,
            confidence=None,
            failures=(),
            fallback_used=False,
        )


@st.composite
def tables(draw: st.DrawFn) -> OutcomeTable:
    t_n = draw(st.integers(1, 25))
    k = len(ACTIONS)
    rows = st.lists(st.floats(-2, 2), min_size=DIM, max_size=DIM)
    x = np.array(draw(st.lists(rows, min_size=t_n, max_size=t_n)))
    q = np.array(draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=t_n * k, max_size=t_n * k)))
    cost = np.array(draw(st.lists(st.floats(0, 0.01), min_size=t_n * k, max_size=t_n * k)))
    lat = np.array(draw(st.lists(st.floats(0.01, 5), min_size=t_n * k, max_size=t_n * k)))
    out = np.array(draw(st.lists(st.integers(1, 400), min_size=t_n * k, max_size=t_n * k)))
    used = np.array([a.n for a in ACTIONS] * t_n, dtype=np.float64)
    tokens = np.array(draw(st.lists(st.integers(1, 2000), min_size=t_n, max_size=t_n)))
    return OutcomeTable(
        ids=[f"r{i}" for i in range(t_n)],
        kinds=[""] * t_n,
        X=x,
        input_tokens=tokens.astype(np.float64),
        actions=list(ACTIONS),
        quality=q.reshape(t_n, k),
        cost_usd=cost.reshape(t_n, k),
        latency_s=lat.reshape(t_n, k),
        output_tokens=out.reshape(t_n, k).astype(np.float64),
        samples_used=used.reshape(t_n, k),
    )


@given(
    table=tables(),
    exploration=st.sampled_from(["greedy", "epsilon", "softmax"]),
    seed=st.integers(0, 2**16),
)
def test_router_and_replay_paths_learn_identical_policies(
    table: OutcomeTable, exploration: str, seed: int
) -> None:
    models = {m.name: m for m in MODELS}
    scales = Scales(0.004, 3.0)
    kwargs = {"exploration": exploration, "epsilon": 0.3, "temperature": 0.2, "seed": seed}
    # the replay path: run_learner streams the table through the Engine
    replayed: list[Policy] = []
    spec = LearnerSpec("uniscale", ACTIONS, kwargs, prepare=replayed.append)
    _, weights = schedule(table, (), "cost_sensitive")
    r = reward_matrix(table, weights, scales)
    run = run_learner(spec, table, models, r, r.max(axis=1), (), scales, "cost_sensitive")
    # the Router path: the same stream as live requests, answered from the table
    live = Policy(
        ActionSpace(MODELS, ACTIONS),
        DIM,
        reward="cost_sensitive",
        cost_scale=scales.cost_scale,
        latency_scale=scales.latency_scale,
        **kwargs,  # type: ignore[arg-type]
    )
    executor = TableExecutorStub(table, models)
    router = Router(
        live,
        executor,  # type: ignore[arg-type]
        TableFeaturizer(table),  # type: ignore[arg-type]
        feedback=TableQuality(table, executor.col_of),
    )

    async def stream() -> list[int]:
        out = []
        for t in range(table.n_requests):
            res = await router.complete(f"row {t}")
            out.append(executor.col_of[res.outcome.action])
        return out

    chosen = asyncio.run(stream())
    assert chosen == run.chosen.tolist()
    assert live.n_pending == 0 and replayed[0].n_pending == 0
    # Same decisions, same learner and cost-model statistics. (The serialized states differ
    # only in clocks: the replay runs on step numbers, the Router on wall time.)
    assert np.array_equal(live.core.predict(100.0), replayed[0].core.predict(100.0))
    mine = Policy.from_bytes(live.to_bytes())
    theirs = Policy.from_bytes(replayed[0].to_bytes())
    mine.set_exploration("greedy")
    theirs.set_exploration("greedy")
    for p in np.vstack([table.X, np.ones((1, DIM))]):
        da, db = mine.select(p, 100.0, now=0.0), theirs.select(p, 100.0, now=0.0)
        assert (da.index, da.quality_mean, da.quality_bonus, da.score) == (
            db.index,
            db.quality_mean,
            db.quality_bonus,
            db.score,
        )


def test_one_billing_formula_for_the_executor_and_the_table() -> None:
    from uniscale.execute import _Tally
    from uniscale.outcomes import run_usage

    spec = ModelSpec("m", price_in_per_mtok=0.3, price_out_per_mtok=1.7, bills_prompt_once=False)
    assert spec.cost_usd(1000, 250) == (1000 * 0.3 + 250 * 1.7) / 1e6
    sample = Sample("", None, 0, "m", 1000, 250, "usage", None, None, 0.5)
    tally = _Tally()
    tally.bill(spec, 1000, [sample])
    tally.bill(spec, 1000, [sample])  # fan-out: two requests, the prompt billed twice
    assert tally.cost_usd == spec.cost_usd(1000, 250) * 2
    assert run_usage(spec, 1000, [sample, sample])[0] == spec.cost_usd(2000, 500)


def fixed_table(t_n: int = 4) -> OutcomeTable:
    rng = np.random.default_rng(0)
    k = len(ACTIONS)
    return OutcomeTable(
        ids=[f"r{i}" for i in range(t_n)],
        kinds=[""] * t_n,
        X=rng.normal(size=(t_n, DIM)),
        input_tokens=np.full(t_n, 100.0),
        actions=list(ACTIONS),
        quality=rng.integers(0, 2, size=(t_n, k)).astype(np.float64),
        cost_usd=rng.uniform(0, 0.01, size=(t_n, k)),
        latency_s=rng.uniform(0.1, 3, size=(t_n, k)),
        output_tokens=np.full((t_n, k), 50.0),
        samples_used=np.tile(np.array([a.n for a in ACTIONS], dtype=np.float64), (t_n, 1)),
    )


def test_a_swapped_router_log_gets_the_records_with_its_feature_setting(tmp_path: Path) -> None:
    # uniscale serve rotates its log by assigning router.log
    table = fixed_table()
    executor = TableExecutorStub(table, {m.name: m for m in MODELS})
    router = Router(
        tiny_policy(),
        executor,  # type: ignore[arg-type]
        TableFeaturizer(table),  # type: ignore[arg-type]
        feedback=TableQuality(table, executor.col_of),
    )

    async def go() -> None:
        await router.complete("row 0")  # no log: nothing written
        router.log = DecisionLog(tmp_path / "a.jsonl")
        await router.complete("row 1")
        router.log.close()
        router.log = DecisionLog(tmp_path / "b.jsonl", include_features=False)
        await router.complete("row 2")
        router.log.close()

    asyncio.run(go())
    (a,) = read_decision_log(tmp_path / "a.jsonl")
    (b,) = read_decision_log(tmp_path / "b.jsonl")
    assert a["x"] == table.X[1].tolist() and "x" not in b
    assert b["x_sha256"] == features_digest(table.X[2]) and router.log_failures == 0
