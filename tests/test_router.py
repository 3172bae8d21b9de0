"""Router end to end over real loopback HTTP against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_openai import FakeConfig, FakeOpenAI, run

import uniscale
from uniscale import (
    Action,
    ActionSpace,
    ConfidenceFeedback,
    DecisionLog,
    DeferredFeedback,
    Executor,
    Featurizer,
    GroundTruthFeedback,
    JudgeFeedback,
    ModelSpec,
    Policy,
    Router,
    read_decision_log,
)
from uniscale.execute import AllSamplesFailed, Messages
from uniscale.featurize import features_digest
from uniscale.router import FeedbackContext

Q = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture
def good(fake_server: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_server("The answer is 4")


@pytest.fixture
def bad(fake_server: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_server("The answer is 5")


def spec(server: FakeOpenAI, name: str, **kw: Any) -> ModelSpec:
    kw.setdefault("price_in_per_mtok", 1.0)
    kw.setdefault("price_out_per_mtok", 2.0)
    return ModelSpec(name, base_url=server.base_url, **kw)


def setup(
    models: list[ModelSpec],
    actions: list[Action] | None = None,
    featurizer: Featurizer | None = None,
    **policy_kw: Any,
) -> tuple[Policy, Executor, Featurizer]:
    f = featurizer or Featurizer(16)
    acts = actions or [Action(m.name, "single", 1) for m in models]
    policy_kw.setdefault("feature_version", f.version)
    policy = Policy(ActionSpace(models, acts), f.dim, **policy_kw)
    ex = Executor(models, backoff_s=0.01, timeout_s=5.0, deadline_s=20.0, retries=0)
    return policy, ex, f


def records(path: Path) -> list[dict[str, Any]]:
    return list(read_decision_log(path))


def expected_reward(policy: Policy, quality: float, upd: uniscale.UpdateResult) -> float:
    """The documented reward for ``quality`` at the update's realised cost and latency."""
    w, core = policy.reward_weights, policy.core
    return (
        w.quality * quality
        - w.cost * upd.cost_usd / core.cost_scale
        - w.latency * upd.latency_s / core.latency_scale
    )


# ---- the request path ------------------------------------------------------------------------


def test_complete_selects_executes_and_updates(good: FakeOpenAI, tmp_path: Path) -> None:
    policy, ex, f = setup([spec(good, "m")])
    log = tmp_path / "d.jsonl"

    async def go() -> uniscale.RouterResult:
        async with ex, Router(policy, ex, f, log=log) as router:
            return await router.complete(Q, ground_truth="4", max_cost_usd=1.0)

    res = run(go())
    assert res.answer == "4" and res.quality == 1.0 and not res.deferred
    assert res.decision["model"] == "m" and res.decision["strategy"] == "single"
    assert res.update is not None and res.update.learner_updated
    assert res.update.reward == pytest.approx(expected_reward(policy, 1.0, res.update))
    assert res.update.cost_usd == pytest.approx(res.outcome.total_cost_usd)
    assert res.update.latency_s == pytest.approx(res.outcome.latency_s)
    assert policy.n_pending == 0
    # The estimated prompt tokens reached the policy (what the cost model predicted from).
    assert res.decision["input_tokens"] == float(f.estimate_tokens(Q))
    (req,) = good.generation_requests()
    assert req.body["messages"] == Q
    (rec,) = records(log)
    assert rec["type"] == "decision" and rec["decision_id"] == res.decision_id
    assert rec["quality"] == 1.0 and rec["reward"] == pytest.approx(res.update.reward)


def test_the_policy_learns_which_model_is_right(good: FakeOpenAI, bad: FakeOpenAI) -> None:
    # The wrong model is the cheaper one: only the quality feedback can make "good" win.
    models = [spec(bad, "bad", price_out_per_mtok=0.5), spec(good, "good", price_out_per_mtok=2.0)]
    policy, ex, f = setup(models, alpha=0.5, seed=3)
    prompts = [f"What is {i} + {4 - i}?" for i in range(5)]

    async def go() -> list[str]:
        chosen = []
        async with ex:
            router = Router(policy, ex, f)
            for i in range(40):
                r = await router.complete(prompts[i % 5], ground_truth="4")
                chosen.append(r.decision["model"])
        return chosen

    chosen = run(go())
    assert "bad" in chosen[:10]  # it did try the wrong model ...
    assert Counter(chosen[-15:])["good"] == 15  # ... and learned to avoid it
    assert policy.n_pending == 0
    assert len(bad.generation_requests()) + len(good.generation_requests()) == 40


def test_confidence_feedback_uses_vote_share_and_logprobs(good: FakeOpenAI) -> None:
    good.config.answers = ["it is 4", "it is 4", "it is 5"]
    acts = [Action("m", "self_consistency", 3)]
    policy, ex, f = setup([spec(good, "m")], actions=acts)

    async def go() -> tuple[float | None, float | None]:
        async with ex:
            router = Router(policy, ex, f, feedback=ConfidenceFeedback())
            sc = await router.complete(Q, ground_truth=None)
            return sc.quality, sc.outcome.confidence

    q, conf = run(go())
    assert q == pytest.approx(2 / 3) and conf == pytest.approx(2 / 3)

    # single: exp(mean logprob) of the chosen sample (the fake returns -0.25 per token).
    policy, ex, f = setup([spec(good, "s")])

    async def go_single(**kw: Any) -> float | None:
        async with ex:
            router = Router(policy, ex, f, feedback=ConfidenceFeedback(**kw))
            return (await router.complete(Q)).quality

    assert run(go_single()) == pytest.approx(math.exp(-0.25))
    good.config.logprobs = False
    policy, ex, f = setup([spec(good, "s")])
    assert run(go_single(single_default=0.3)) == pytest.approx(0.3)


def test_default_feedback_prefers_ground_truth(good: FakeOpenAI) -> None:
    policy, ex, f = setup([spec(good, "m")])

    async def go() -> list[uniscale.RouterResult]:
        async with ex:
            router = Router(policy, ex, f)
            return [await router.complete(Q, ground_truth="5"), await router.complete(Q)]

    wrong, unlabeled = run(go())
    assert wrong.quality == 0.0 and wrong.update is not None
    assert wrong.update.reward == pytest.approx(expected_reward(policy, 0.0, wrong.update))
    # Without a label it falls back to the confidence proxy.
    assert unlabeled.quality == pytest.approx(math.exp(-0.25)) and unlabeled.update is not None
    assert unlabeled.update.reward == pytest.approx(
        expected_reward(policy, math.exp(-0.25), unlabeled.update)
    )


def test_judge_feedback(good: FakeOpenAI) -> None:
    with FakeOpenAI(FakeConfig(answers=["Grade: 8"])) as judge_server:
        judge = spec(judge_server, "judge")
        policy, ex, f = setup([spec(good, "m")])

        async def go() -> float | None:
            async with ex:
                router = Router(policy, ex, f, feedback=JudgeFeedback(judge))
                return (await router.complete(Q)).quality

        assert run(go()) == pytest.approx(0.8)
        (req,) = judge_server.generation_requests()
        assert "The answer is 4" in req.body["messages"][0]["content"]


# ---- deferred feedback -----------------------------------------------------------------------


def test_deferred_feedback_uses_the_realised_values(good: FakeOpenAI, tmp_path: Path) -> None:
    policy, ex, f = setup([spec(good, "m")])
    log = tmp_path / "d.jsonl"

    async def go() -> tuple[Router, uniscale.RouterResult]:
        async with ex:
            router = Router(policy, ex, f, feedback=DeferredFeedback(), log=log)
            return router, await router.complete(Q, ground_truth="4")

    router, res = run(go())
    assert res.deferred and res.update is None and res.quality is None
    assert router.n_deferred == 1 and policy.n_pending == 1

    upd = router.feedback(res.decision_id, 1.0)
    assert upd.reward == pytest.approx(expected_reward(policy, 1.0, upd))
    assert upd.cost_usd == pytest.approx(res.outcome.total_cost_usd)
    assert upd.latency_s == pytest.approx(res.outcome.latency_s)
    assert router.n_deferred == 0 and policy.n_pending == 0
    with pytest.raises(uniscale.DuplicateUpdateError):
        router.feedback(res.decision_id, 1.0)
    with pytest.raises(uniscale.UnknownDecisionError):
        router.feedback(10_000, 1.0)
    router.log.close()  # type: ignore[union-attr]

    dec, fb = records(log)
    assert dec["type"] == "decision" and dec["quality"] is None and dec["reward"] is None
    assert dec["feedback"]["deferred"] is True
    assert fb["type"] == "feedback" and fb["decision_id"] == res.decision_id
    assert fb["reward"] == pytest.approx(upd.reward)
    assert fb["reward_components"]["cost_usd"] == pytest.approx(res.outcome.total_cost_usd)


def test_invalid_feedback_value_is_deferred_and_raised(good: FakeOpenAI) -> None:
    class Broken:
        async def quality(self, ctx: FeedbackContext) -> float | None:
            return math.nan

    policy, ex, f = setup([spec(good, "m")])

    async def go() -> Router:
        async with ex:
            router = Router(policy, ex, f, feedback=Broken())
            with pytest.raises(uniscale.ConfigError, match="returned quality nan"):
                await router.complete(Q)
            return router

    router = run(go())
    assert router.n_deferred == 1 and policy.n_pending == 1
    (pending,) = router.engine.deferred_ids()
    upd = router.feedback(pending, 0.5)
    # The realised cost kept from the execution: 11 prompt tokens at $1/M plus the 4 output
    # tokens of "The answer is 4" at $2/M.
    assert upd.cost_usd == pytest.approx((11 * 1.0 + 4 * 2.0) / 1e6)
    assert upd.learner_updated and policy.n_pending == 0 and router.n_deferred == 0


# ---- failures --------------------------------------------------------------------------------


def test_failing_upstream_records_quality_zero(good: FakeOpenAI, tmp_path: Path) -> None:
    good.config.fail_times = 100
    policy, ex, f = setup([spec(good, "m")])
    log = tmp_path / "d.jsonl"

    async def go() -> None:
        async with ex, Router(policy, ex, f, log=log) as router:
            await router.complete(Q, ground_truth="4")

    with pytest.raises(AllSamplesFailed) as info:
        run(go())
    assert any("recorded with quality 0" in n for n in info.value.__notes__)
    assert policy.n_pending == 0  # the decision was updated, not left hanging
    (rec,) = records(log)
    assert rec["quality"] == 0.0 and rec["outcome"] is None
    assert rec["error"]["type"] == "AllSamplesFailed"
    comp = rec["reward_components"]
    assert comp["cost_usd"] == 0.0 and comp["latency_s"] > 0.0
    w = comp["weights"]
    expected = -w["latency"] * comp["latency_s"] / comp["latency_scale"]
    assert rec["reward"] == pytest.approx(expected)


def test_fallback_answer_credits_the_failed_action_with_zero(
    good: FakeOpenAI, bad: FakeOpenAI
) -> None:
    bad.config.fail_times = 100
    models = [spec(bad, "broken"), spec(good, "backup")]
    policy, ex, f = setup(models, actions=[Action("broken", "single", 1)])
    ex.add_model(models[1])

    async def go() -> uniscale.RouterResult:
        async with ex:
            router = Router(policy, ex, f, fallback=Action("backup", "single", 1))
            return await router.complete(Q, ground_truth="4")

    res = run(go())
    assert res.outcome.fallback_used and res.answer == "4"
    assert res.quality == 0.0 and res.update is not None
    assert res.update.reward == pytest.approx(expected_reward(policy, 0.0, res.update))
    assert res.update.cost_usd == pytest.approx(res.outcome.total_cost_usd)


# ---- configuration checks ----------------------------------------------------------------------


def test_feature_version_mismatch_is_refused(good: FakeOpenAI) -> None:
    policy, ex, _ = setup([spec(good, "m")], featurizer=Featurizer(16))
    v2 = Featurizer(16, seed=1)  # same dim, other hash functions: a different feature space
    with pytest.raises(uniscale.ConfigError, match=r"'hash-v1-d16'.*'hash-v1-d16-s1'"):
        Router(policy, ex, v2)
    with pytest.raises(uniscale.ConfigError, match="featurizer version"):
        policy.select(v2("x"), 3.0, feature_version=v2.version)
    with pytest.raises(uniscale.ConfigError, match="dim 32 does not match"):
        Router(policy, ex, Featurizer(32))
    other = Executor([spec(good, "other")])
    with pytest.raises(uniscale.ConfigError, match=r"does not know the policy's models \['m'\]"):
        Router(policy, other, Featurizer(16))


# ---- decision log ------------------------------------------------------------------------------


def test_decision_log_round_trips(good: FakeOpenAI, tmp_path: Path) -> None:
    models = [spec(good, "a"), spec(good, "b", price_out_per_mtok=4.0)]
    policy, ex, f = setup(models, exploration="softmax", temperature=0.5)
    log = tmp_path / "d.jsonl"
    prompts: list[Messages] = ["What is 2 + 2?", [{"role": "user", "content": "And 3 + 1?"}]]

    async def go() -> list[uniscale.RouterResult]:
        async with ex, Router(policy, ex, f, log=log) as router:
            return [await router.complete(p, ground_truth="4") for p in prompts]

    results = run(go())
    recs = records(log)
    assert len(recs) == 2
    uids = {a[0]: a[3] for a in policy.core.actions()}
    for prompt, res, rec in zip(prompts, results, recs, strict=True):
        x = f(prompt)
        assert rec["x"] == x.tolist()  # exact: JSON floats round-trip
        assert rec["x_sha256"] == features_digest(x)
        assert rec["feature_version"] == f.version
        d = rec["decision"]
        assert d == json.loads(json.dumps(res.decision))
        assert 0.0 < d["propensity"] <= 1.0
        assert sorted(d["candidates"]) == [0, 1]
        assert sum(d["probabilities"]) == pytest.approx(1.0)
        assert rec["candidate_uids"] == [uids[policy.actions[i].model] for i in d["candidates"]]
        assert rec["outcome"]["answer"] == "4" and rec["outcome"]["samples_used"] == 1
        comp = rec["reward_components"]
        assert comp["quality"] == 1.0 and comp["cost_usd"] == pytest.approx(
            res.outcome.total_cost_usd
        )
        assert rec["reward"] == pytest.approx(res.update.reward)  # type: ignore[union-attr]


def test_decision_log_without_features(good: FakeOpenAI, tmp_path: Path) -> None:
    policy, ex, f = setup([spec(good, "m")])
    path = tmp_path / "d.jsonl"

    async def go() -> None:
        async with ex:
            with DecisionLog(path, include_features=False) as log:
                await Router(policy, ex, f, log=log).complete(Q)

    run(go())
    (rec,) = records(path)
    assert "x" not in rec and rec["x_sha256"] == features_digest(f(Q))


def test_truncated_last_line_is_skipped_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    with DecisionLog(path) as log:
        for i in range(3):
            log.write({"type": "decision", "decision_id": i, "payload": "x" * 50})
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # a crash in the middle of the third line
    assert [r["decision_id"] for r in records(path)] == [0, 1]

    with DecisionLog(path) as log:  # reopening cuts the partial line off before appending
        log.write({"type": "decision", "decision_id": 3})
    assert [r["decision_id"] for r in records(path)] == [0, 1, 3]
    assert path.read_bytes().count(b"\n") == 3


def test_corrupt_middle_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # D11: one bad line (two writers' lines merged) must not make the whole log unreadable.
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"decision_id": 0}\n{"decision_id": 1, oops\n{"decision_id": 2}\n')
    with caplog.at_level("WARNING", logger="uniscale.router"):
        assert [r["decision_id"] for r in records(path)] == [0, 2]
    assert "d.jsonl:2: skipping a corrupt line" in caplog.text
    assert "skipped 1 unreadable line(s) of 3" in caplog.text
    caplog.clear()
    path.write_bytes(b'{"decision_id": 0}\n[1, 2]\n')
    with caplog.at_level("WARNING", logger="uniscale.router"):
        assert [r["decision_id"] for r in records(path)] == [0]
    assert "d.jsonl:2: skipping a line that is not a JSON object (list)" in caplog.text


def test_closed_log_refuses_writes(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "d.jsonl")
    log.close()
    with pytest.raises(ValueError, match="is closed"):
        log.write({"a": 1})


def test_ground_truth_feedback_without_truth_defers() -> None:
    ctx: Any = type("Ctx", (), {"ground_truth": None})()
    assert asyncio.run(GroundTruthFeedback().quality(ctx)) is None


def test_side_observations_teach_the_voting_sub_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One request with n = 4 returns "5", "4", "4", "4" (the fake rotates answers per choice).
    answers = ["The answer is 5", "The answer is 4", "The answer is 4", "The answer is 4"]
    with FakeOpenAI(FakeConfig(answers=answers)) as server:
        m = spec(server, "m")
        acts = [
            Action("m", "single", 1),
            Action("m", "self_consistency", 2),
            Action("m", "self_consistency", 4),
            Action("m", "best_of_n", 2),
            Action("m", "adaptive_consistency", 2),
            Action("m", "adaptive_consistency", 4),
        ]
        policy, ex, f = setup([m], acts)
        seen: list[tuple[str, float, dict[str, float]]] = []
        real = Policy.observe

        def spy(self: Policy, x: Any, action: int, quality: float, **kw: float) -> Any:
            seen.append((str(self.actions[action]), quality, kw))
            return real(self, x, action, quality, **kw)

        monkeypatch.setattr(Policy, "observe", spy)
        mask = [a == Action("m", "self_consistency", 4) for a in policy.actions]
        log = tmp_path / "d.jsonl"

        async def go() -> list[uniscale.RouterResult]:
            async with ex, Router(policy, ex, f, log=log, side_observations=True) as router:
                with_gt = await router.complete(Q, ground_truth="4", mask=mask)
                # no ground truth: the quality is the vote share, so no sub-run is observed
                without = await router.complete(Q, mask=mask)
                return [with_gt, without]

        res = run(go())
    assert res[0].quality == 1.0  # "4" wins 3 to 1
    got = {(a, q, kw["samples_used"]) for a, q, kw in seen}
    assert got == {
        ("m/self_consistency/n=2", 0.0, 2.0),  # "5" vs "4": the tie goes to the first answer
        ("m/adaptive_consistency/n=2", 0.0, 2.0),
        ("m/adaptive_consistency/n=4", 1.0, 4.0),  # not settled after 2, settled after 4
    }
    for _a, _q, kw in seen:
        assert 0 < kw["cost_usd"] <= res[0].outcome.cost_usd
        assert kw["input_tokens"] == res[0].outcome.samples[0].input_tokens
    recs = records(log)
    assert [o["action"] for o in recs[0]["side_observations"]] == [
        "m/self_consistency/n=2",
        "m/adaptive_consistency/n=2",
        "m/adaptive_consistency/n=4",
    ]
    assert "side_observations" not in recs[1]
