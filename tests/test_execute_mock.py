"""Executor unit tests against httpx.MockTransport: every strategy and fault."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import httpx
import pytest

from uniscale.execute import (
    AdaptiveConfig,
    AllSamplesFailed,
    DeadlineExceeded,
    ExecutionConfigError,
    ExecutionError,
    Executor,
    JudgeScorer,
    MeanLogprobScorer,
    Outcome,
    parse_grade,
)
from uniscale.space import Action, ModelSpec

T = TypeVar("T")
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]

BASE = "http://mock.test/v1"
PRICE_IN, PRICE_OUT = 1.0, 2.0  # $ per million tokens


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def spec(name: str = "m", **kw: Any) -> ModelSpec:
    kw.setdefault("base_url", BASE)
    kw.setdefault("price_in_per_mtok", PRICE_IN)
    kw.setdefault("price_out_per_mtok", PRICE_OUT)
    return ModelSpec(name=name, **kw)


def choice(
    i: int, text: str | None, *, logprobs: bool = True, lp: float = -0.5, endpoint: str = "chat"
) -> dict[str, Any]:
    c: dict[str, Any] = {"index": i, "finish_reason": "stop"}
    if endpoint == "chat":
        c["message"] = {"role": "assistant", "content": text}
    else:
        c["text"] = text
    if logprobs and text:
        c["logprobs"] = {"content": [{"token": t, "logprob": lp} for t in text.split()]}
    return c


def completion(
    texts: Sequence[str | None],
    *,
    prompt_tokens: int = 10,
    completion_tokens: int | None = None,
    logprobs: bool = True,
    lps: Sequence[float] | None = None,
    endpoint: str = "chat",
) -> dict[str, Any]:
    """An OpenAI-style body; usage is llama-server style (one choice's tokens) by default."""
    ct = completion_tokens if completion_tokens is not None else len((texts[0] or "").split())
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            choice(
                i,
                t,
                logprobs=logprobs,
                lp=lps[i] if lps else -0.5,
                endpoint=endpoint,
            )
            for i, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": ct},
    }


class Recorder:
    """Records request bodies; serves from a scripted function of (request number, body)."""

    def __init__(self, respond: Callable[[int, dict[str, Any], httpx.Request], Any]) -> None:
        self.respond = respond
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        k = len(self.bodies)
        self.bodies.append(body)
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            out = self.respond(k, body, request)
            if asyncio.iscoroutine(out):
                out = await out
        finally:
            self.in_flight -= 1
        if isinstance(out, httpx.Response):
            return out
        return httpx.Response(200, json=out)


def executor(rec: Recorder, models: Sequence[ModelSpec] | None = None, **kw: Any) -> Executor:
    kw.setdefault("backoff_s", 0.001)
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("deadline_s", 10.0)
    return Executor(models or [spec()], transport=httpx.MockTransport(rec), **kw)


async def run_action(ex: Executor, action: Action, *args: Any, **kw: Any) -> Outcome:
    async with ex:
        return await ex.run(action, *args, **kw)


Q = [{"role": "user", "content": "What is 2 + 2?"}]


# ---------------------------------------------------------------------------------------------
# Strategies


def test_single_request_shape_tokens_and_cost() -> None:
    rec = Recorder(lambda k, b, r: completion(["2 + 2 = 4"], prompt_tokens=12))
    out = run(run_action(executor(rec), Action("m", "single", 1), Q, seed=7, max_tokens=64))
    (body,) = rec.bodies
    assert str(rec.requests[0].url) == f"{BASE}/chat/completions"
    assert body["model"] == "m" and body["n"] == 1 and body["messages"] == Q
    assert body["temperature"] == 0.0 and body["max_tokens"] == 64 and body["seed"] == 7
    assert body["logprobs"] is True
    assert (out.text, out.answer, out.confidence, out.fallback_used) == (
        "2 + 2 = 4",
        "4",
        None,
        False,
    )
    assert out.input_tokens == 12 and out.output_tokens == 5 and out.requests == 1
    assert out.samples_used == 1 and out.samples[0].token_count_method == "logprobs"
    assert out.samples[0].mean_logprob == pytest.approx(-0.5)
    assert out.cost_usd == pytest.approx((12 * PRICE_IN + 5 * PRICE_OUT) / 1e6)
    assert out.total_cost_usd == out.cost_usd and out.failures == ()
    assert out.latency_s > 0


def test_single_uses_usage_without_logprobs() -> None:
    rec = Recorder(
        lambda k, b, r: completion(["the answer is 4"], completion_tokens=9, logprobs=False)
    )
    out = run(run_action(executor(rec, request_logprobs=False), Action("m", "single", 1), "2+2?"))
    assert "logprobs" not in rec.bodies[0]
    assert rec.bodies[0]["messages"] == [{"role": "user", "content": "2+2?"}]
    assert out.samples[0].output_tokens == 9 and out.samples[0].token_count_method == "usage"


def test_self_consistency_one_request_votes_and_counts_tokens_per_choice() -> None:
    texts = ["so 5", "it is 4", "answer 4 yes", "4", "maybe 5"]
    rec = Recorder(lambda k, b, r: completion(texts, prompt_tokens=20))
    out = run(run_action(executor(rec), Action("m", "self_consistency", 5), Q, seed=3))
    assert len(rec.bodies) == 1 and rec.bodies[0]["n"] == 5
    assert rec.bodies[0]["temperature"] == 0.7 and rec.bodies[0]["seed"] == 3
    assert out.answer == "4" and out.text == "it is 4"  # first sample of the winner
    assert out.confidence == pytest.approx(3 / 5)
    assert [s.index for s in out.samples] == [0, 1, 2, 3, 4]
    # usage.completion_tokens (llama-style, one choice) is ignored: logprob entries are counted.
    expected_out = sum(len(t.split()) for t in texts)
    assert out.output_tokens == expected_out
    assert out.input_tokens == 20  # prompt billed once for the one request
    assert out.cost_usd == pytest.approx((20 * PRICE_IN + expected_out * PRICE_OUT) / 1e6)


def test_fewer_choices_than_asked_fans_out_the_remainder_and_remembers() -> None:
    def respond(k: int, body: dict[str, Any], r: httpx.Request) -> Any:
        return completion([f"answer {k}"], prompt_tokens=10)  # always one choice: ignores n

    rec = Recorder(respond)
    ex = executor(rec)

    async def go() -> tuple[Outcome, Outcome]:
        async with ex:
            a = await ex.run(Action("m", "self_consistency", 4), Q, seed=100)
            assert ex.ignores_n("m")
            b = await ex.run(Action("m", "self_consistency", 3), Q, seed=200)
            return a, b

    a, b = run(go())
    assert [body["n"] for body in rec.bodies] == [4, 1, 1, 1, 1, 1, 1]
    assert sorted(body["seed"] for body in rec.bodies[1:4]) == [101, 102, 103]
    assert sorted(body["seed"] for body in rec.bodies[4:]) == [200, 201, 202]
    assert a.samples_used == 4 and a.requests == 4 and a.input_tokens == 40
    assert b.samples_used == 3 and b.requests == 3
    assert a.answer == "0"  # all distinct: earliest sample wins the tie


def test_honours_n_false_fans_out_from_the_start() -> None:
    rec = Recorder(lambda k, b, r: completion(["7"]))
    out = run(
        run_action(executor(rec, [spec(honours_n=False)]), Action("m", "self_consistency", 3), Q)
    )
    assert [b["n"] for b in rec.bodies] == [1, 1, 1]
    assert out.answer == "7" and out.confidence == 1.0


def test_best_of_n_mean_logprob_scorer() -> None:
    rec = Recorder(
        lambda k, b, r: completion(["it is 3", "it is 4", "it is 5"], lps=[-2.0, -0.1, -0.1])
    )
    out = run(run_action(executor(rec), Action("m", "best_of_n", 3), Q, scorer=MeanLogprobScorer()))
    assert out.text == "it is 4"  # tie at -0.1 goes to the earlier sample
    assert out.confidence == pytest.approx(math.exp(-0.1))


def test_best_of_n_without_logprobs_falls_back_to_vote() -> None:
    rec = Recorder(lambda k, b, r: completion(["5", "4", "4"], logprobs=False))
    out = run(run_action(executor(rec), Action("m", "best_of_n", 3), Q))
    assert out.answer == "4" and out.confidence == pytest.approx(2 / 3)
    assert [f.error for f in out.failures] == ["NoScores"]


def test_best_of_n_judge_scorer() -> None:
    judge = spec("judge", base_url="http://judge.test/v1", price_in_per_mtok=10.0)

    def respond(k: int, body: dict[str, Any], r: httpx.Request) -> Any:
        if r.url.host == "judge.test":
            prompt = body["messages"][0]["content"]
            assert "What is 2 + 2?" in prompt
            grade = {"three": "Grade: 2", "four": "Grade: 9/10", "five": "I refuse"}
            cand = next(w for w in grade if f"it is {w}" in prompt)
            return completion([grade[cand]], prompt_tokens=50)
        return completion(["it is three", "it is four", "it is five"])

    rec = Recorder(respond)
    out = run(run_action(executor(rec), Action("m", "best_of_n", 3), Q, scorer=JudgeScorer(judge)))
    assert out.text == "it is four" and out.confidence == pytest.approx(0.9)
    judge_bodies = [
        b for b, r in zip(rec.bodies, rec.requests, strict=True) if r.url.host == "judge.test"
    ]
    assert len(judge_bodies) == 3 and all(b["temperature"] == 0.0 for b in judge_bodies)
    assert out.scorer_cost_usd > 0 and out.scorer_cost_usd >= 3 * 50 * 10.0 / 1e6
    assert out.total_cost_usd == pytest.approx(out.cost_usd + out.scorer_cost_usd)
    assert out.requests == 1  # generation requests only


@pytest.mark.parametrize(
    ("text", "grade"),
    [("Grade: 7", 0.7), ("8/10", 0.8), ("score is **10**", 1.0), ("6.5 out of 10", 0.65),
     ("I'd say 3", 0.3), ("Grade: 11", None), ("no idea", None)],
)  # fmt: skip
def test_parse_grade(text: str, grade: float | None) -> None:
    assert parse_grade(text) == (None if grade is None else pytest.approx(grade))


def test_adaptive_stops_early_and_bills_only_samples_used() -> None:
    rec = Recorder(lambda k, b, r: completion(["x = 4"] * b["n"], prompt_tokens=10))
    out = run(run_action(executor(rec), Action("m", "adaptive_consistency", 3), Q))
    assert [b["n"] for b in rec.bodies] == [2]
    assert out.samples_used == 2 and out.stop_reason == "unbeatable"
    assert out.output_tokens == 2 * 3 and out.input_tokens == 10
    assert out.answer == "4" and out.confidence == 1.0


def test_adaptive_runs_rounds_until_decided() -> None:
    rounds = [["1", "2"], ["2", "3"], ["2", "2"], ["9", "9"]]
    rec = Recorder(lambda k, b, r: completion(rounds[k]))
    ex = executor(rec, adaptive=AdaptiveConfig(first=2, step=2, rule="unbeatable"))
    out = run(run_action(ex, Action("m", "adaptive_consistency", 8), Q, seed=0))
    # After 6: 2 has 4 votes, 2 left -> cannot be overtaken.
    assert [b["n"] for b in rec.bodies] == [2, 2, 2]
    assert [b["seed"] for b in rec.bodies] == [0, 2, 4]
    assert out.samples_used == 6 and out.answer == "2" and out.stop_reason == "unbeatable"
    assert out.confidence == pytest.approx(4 / 6)


def test_adaptive_uses_budget_when_undecided() -> None:
    rec = Recorder(lambda k, b, r: completion([str(k * 10 + i) for i in range(b["n"])]))
    out = run(run_action(executor(rec), Action("m", "adaptive_consistency", 5), Q))
    assert [b["n"] for b in rec.bodies] == [2, 2, 1]
    assert out.samples_used == 5 and out.stop_reason == "budget" and out.answer == "0"


# ---------------------------------------------------------------------------------------------
# Faults


def test_500_is_retried_then_succeeds() -> None:
    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        return httpx.Response(500, text="boom") if k < 2 else completion(["4"])

    rec = Recorder(respond)
    out = run(run_action(executor(rec, retries=2), Action("m", "single", 1), Q))
    assert len(rec.bodies) == 3 and out.answer == "4" and out.requests == 1


def test_500_forever_raises_all_samples_failed_with_status() -> None:
    rec = Recorder(lambda k, b, r: httpx.Response(503, text="down"))
    with pytest.raises(AllSamplesFailed, match="all 1 samples") as ei:
        run(run_action(executor(rec, retries=2), Action("m", "single", 1), Q))
    assert len(rec.bodies) == 3
    (f,) = ei.value.failures
    assert (f.error, f.status, f.model) == ("UpstreamHTTPError", 503, "m")
    assert "HTTP 503" in f.message and "down" in f.message


def test_400_is_not_retried() -> None:
    rec = Recorder(lambda k, b, r: httpx.Response(400, json={"error": "bad"}))
    with pytest.raises(AllSamplesFailed) as ei:
        run(run_action(executor(rec, retries=3), Action("m", "single", 1), Q))
    assert len(rec.bodies) == 1 and ei.value.failures[0].status == 400


def throttled_once(retry_after: str) -> Recorder:
    """A 429 with ``Retry-After: retry_after`` to the first request, then the answer "4"."""

    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        if k == 0:
            return httpx.Response(429, headers={"Retry-After": retry_after})
        return completion(["4"])

    return Recorder(respond)


def test_429_honours_retry_after() -> None:
    rec = throttled_once("0.3")
    t0 = time.monotonic()
    out = run(run_action(executor(rec, backoff_s=0.0), Action("m", "single", 1), Q))
    assert time.monotonic() - t0 >= 0.3 and out.answer == "4" and len(rec.bodies) == 2


def test_429_retry_after_is_capped() -> None:
    rec = throttled_once("3600")
    t0 = time.monotonic()
    out = run(run_action(executor(rec, max_retry_after_s=0.05), Action("m", "single", 1), Q))
    assert time.monotonic() - t0 < 2.0 and out.answer == "4"


def test_read_timeout_is_typed_and_not_retried_by_default() -> None:
    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        raise httpx.ReadTimeout("slow", request=r)

    rec = Recorder(respond)
    with pytest.raises(AllSamplesFailed) as ei:
        run(run_action(executor(rec, retries=3), Action("m", "single", 1), Q))
    assert len(rec.bodies) == 1 and ei.value.failures[0].error == "RequestTimeout"
    rec2 = Recorder(respond)
    with pytest.raises(AllSamplesFailed):
        run(run_action(executor(rec2, retries=2, retry_timeouts=True), Action("m", "single", 1), Q))
    assert len(rec2.bodies) == 3


def test_connection_errors_are_retried() -> None:
    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        if k < 2:
            raise httpx.ConnectError("refused", request=r)
        return completion(["4"])

    rec = Recorder(respond)
    assert run(run_action(executor(rec, retries=2), Action("m", "single", 1), Q)).answer == "4"
    rec2 = Recorder(lambda k, b, r: (_ for _ in ()).throw(httpx.ConnectError("no", request=r)))
    with pytest.raises(AllSamplesFailed) as ei:
        run(run_action(executor(rec2, retries=1), Action("m", "single", 1), Q))
    assert len(rec2.bodies) == 2 and ei.value.failures[0].error == "NetworkError"


def test_deadline_bounds_a_hanging_request() -> None:
    async def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        await asyncio.sleep(30)
        return completion(["4"])

    rec = Recorder(respond)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"deadline of 0\.2s"):
        run(run_action(executor(rec, deadline_s=0.2), Action("m", "single", 1), Q))
    assert time.monotonic() - t0 < 2.0


def test_deadline_mid_adaptive_returns_what_succeeded() -> None:
    async def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        if k == 0:
            return completion(["1", "2"])
        await asyncio.sleep(30)
        return completion(["2", "2"])

    rec = Recorder(respond)
    out = run(run_action(executor(rec, deadline_s=0.3), Action("m", "adaptive_consistency", 6), Q))
    assert out.samples_used == 2 and out.answer == "1" and out.stop_reason == "deadline"
    assert [f.error for f in out.failures] == ["DeadlineExceeded"]


def test_truncated_json_is_malformed() -> None:
    rec = Recorder(lambda k, b, r: httpx.Response(200, content=b'{"choices": [{"mess'))
    with pytest.raises(AllSamplesFailed) as ei:
        run(run_action(executor(rec), Action("m", "single", 1), Q))
    f = ei.value.failures[0]
    assert f.error == "MalformedResponseError" and "invalid JSON" in f.message
    assert len(rec.bodies) == 1  # not retried


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"object": "error"}, "no 'choices' list"),
        ({"choices": []}, "empty 'choices'"),
        ({"choices": [{"index": 0, "message": {"role": "assistant"}}]}, "no message.content"),
        ({"choices": [{"index": 0, "message": {"content": 5}}]}, "not a string"),
        ({"choices": ["x"]}, "not an object"),
        ([1, 2], "no 'choices' list"),
    ],
)
def test_missing_fields_are_malformed(body: Any, match: str) -> None:
    rec = Recorder(lambda k, b, r: body)
    with pytest.raises(AllSamplesFailed) as ei:
        run(run_action(executor(rec), Action("m", "single", 1), Q))
    assert ei.value.failures[0].error == "MalformedResponseError"
    assert match in ei.value.failures[0].message


def test_empty_content_in_some_choices_keeps_the_rest() -> None:
    rec = Recorder(lambda k, b, r: completion(["4", "", "  ", "4", "5"], prompt_tokens=8))
    out = run(run_action(executor(rec), Action("m", "self_consistency", 5), Q))
    assert out.samples_used == 3 and [s.index for s in out.samples] == [0, 3, 4]
    assert [f.error for f in out.failures] == ["EmptyContentError"] * 2
    assert out.answer == "4" and out.confidence == pytest.approx(2 / 3)
    assert len(rec.bodies) == 1  # choices came back (empty), so no fan-out
    assert out.input_tokens == 8


def test_partial_fan_out_failure_returns_successes() -> None:
    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        return httpx.Response(500) if b["seed"] == 1 else completion(["4"])

    rec = Recorder(respond)
    ex = executor(rec, [spec(honours_n=False)], retries=0)
    out = run(run_action(ex, Action("m", "self_consistency", 3), Q, seed=0))
    assert out.samples_used == 2 and [s.index for s in out.samples] == [0, 2]
    assert [f.status for f in out.failures] == [500]
    assert out.requests == 2  # the failed request is not billed


def test_fallback_when_primary_fails_entirely() -> None:
    models = [spec("big"), spec("small", base_url="http://small.test/v1", price_in_per_mtok=0.5)]

    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        if b["model"] == "big":
            return httpx.Response(500)
        return completion(["small says 4"], prompt_tokens=6)

    rec = Recorder(respond)
    primary, fb = Action("big", "self_consistency", 3), Action("small", "single", 1)
    out = run(run_action(executor(rec, models, retries=1), primary, Q, fallback=fb))
    assert out.fallback_used and out.action == fb and out.requested_action == primary
    assert out.answer == "4" and out.samples[0].model == "small"
    assert [(f.model, f.error, f.stage) for f in out.failures] == [
        ("big", "UpstreamHTTPError", "sample"),
        ("big", "AllSamplesFailed", "action"),
    ]
    assert out.cost_usd == pytest.approx((6 * 0.5 + 3 * PRICE_OUT) / 1e6)
    assert rec.bodies[-1]["temperature"] == 0.0  # the fallback's own strategy default


def test_fallback_failing_too_raises_with_all_failures() -> None:
    models = [spec("a"), spec("b")]
    rec = Recorder(lambda k, b, r: httpx.Response(502))
    with pytest.raises(AllSamplesFailed, match="and fallback") as ei:
        run(
            run_action(
                executor(rec, models, retries=0),
                Action("a", "single", 1),
                Q,
                fallback=Action("b", "single", 1),
            )
        )
    assert [(f.model, f.stage) for f in ei.value.failures] == [
        ("a", "sample"), ("a", "action"), ("b", "sample"), ("b", "action"),
    ]  # fmt: skip


def test_no_fallback_on_success() -> None:
    rec = Recorder(lambda k, b, r: completion(["4"]))
    out = run(run_action(executor(rec, [spec("a"), spec("b")]), Action("a", "single", 1), Q,
                         fallback=Action("b", "single", 1)))  # fmt: skip
    assert not out.fallback_used and len(rec.bodies) == 1


# ---------------------------------------------------------------------------------------------
# Token counting, endpoints, keys, concurrency, configuration


def test_tokenize_used_for_multi_choice_without_logprobs() -> None:
    texts = ["one two three", "four five"]

    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        if r.url.path == "/tokenize":
            return {"tokens": list(range(len(b["content"].split())))}
        return completion(texts, logprobs=False, completion_tokens=3)

    rec = Recorder(respond)
    out = run(run_action(executor(rec), Action("m", "self_consistency", 2), Q))
    assert str(rec.requests[1].url) == "http://mock.test/tokenize"
    assert [s.output_tokens for s in out.samples] == [3, 2]
    assert {s.token_count_method for s in out.samples} == {"tokenize"}
    assert out.requests == 1  # tokenize calls are not billed requests


def test_chars_estimate_when_tokenize_unavailable_and_usage_is_per_choice() -> None:
    texts = ["a" * 40, "b" * 80]

    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        if r.url.path == "/tokenize":
            return httpx.Response(404)
        return completion(texts, logprobs=False, completion_tokens=10)

    rec = Recorder(respond)
    ex = executor(rec)

    async def go() -> tuple[Outcome, Outcome]:
        async with ex:
            return (
                await ex.run(Action("m", "self_consistency", 2), Q),
                await ex.run(Action("m", "self_consistency", 2), Q),
            )

    a, b = run(go())
    assert [s.output_tokens for s in a.samples] == [10, 20]
    assert {s.token_count_method for s in a.samples} == {"chars"}
    # tokenize is tried during the first run only (at most once per choice, concurrently).
    tokenize_calls = [i for i, r in enumerate(rec.requests) if r.url.path == "/tokenize"]
    second_run_start = max(i for i, r in enumerate(rec.requests) if r.url.path != "/tokenize")
    assert 1 <= len(tokenize_calls) <= 2 and max(tokenize_calls) < second_run_start
    assert b.output_tokens == 30 and {s.token_count_method for s in b.samples} == {"chars"}


def test_usage_split_when_usage_is_a_sum() -> None:
    texts = ["a" * 40, "b" * 120]  # estimates 10 and 30

    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        if r.url.path == "/tokenize":
            return httpx.Response(404)
        return completion(texts, logprobs=False, completion_tokens=48)  # OpenAI-style sum

    rec = Recorder(respond)
    out = run(run_action(executor(rec), Action("m", "self_consistency", 2), Q))
    assert [s.output_tokens for s in out.samples] == [12, 36]
    assert {s.token_count_method for s in out.samples} == {"usage_split"}


def test_completions_endpoint() -> None:
    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        body = completion(["  42", " 42 again"], endpoint="completions", logprobs=False)
        body["choices"][0]["logprobs"] = {"tokens": ["4", "2"], "token_logprobs": [-1.0, -3.0]}
        body["choices"][1]["logprobs"] = {"tokens": ["4", "2", "x"], "token_logprobs": [0, 0, 0]}
        return body

    rec = Recorder(respond)
    model = spec(endpoint="completions", api_model="gemma-base")
    msgs = [
        {"role": "system", "content": "Q: 1+1\nA: 2"},
        {"role": "user", "content": "Q: 40+2\nA:"},
    ]
    out = run(run_action(executor(rec, [model]), Action("m", "self_consistency", 2), msgs))
    (body,) = rec.bodies
    assert str(rec.requests[0].url) == f"{BASE}/completions"
    assert body["prompt"] == "Q: 1+1\nA: 2\n\nQ: 40+2\nA:" and body["model"] == "gemma-base"
    assert body["logprobs"] == 1 and "messages" not in body
    assert out.answer == "42" and out.text == "  42"
    assert [s.output_tokens for s in out.samples] == [2, 3]
    assert out.samples[0].mean_logprob == pytest.approx(-2.0)


def test_api_key_sent_and_never_leaked(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-very-secret-123"
    monkeypatch.setenv("UNISCALE_TEST_KEY", secret)

    def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        assert r.headers["authorization"] == f"Bearer {secret}"
        return httpx.Response(401, text=f"bad key {r.headers['authorization']}")

    rec = Recorder(respond)
    with pytest.raises(AllSamplesFailed) as ei:
        run(run_action(executor(rec, [spec(api_key_env="UNISCALE_TEST_KEY")]),
                       Action("m", "single", 1), Q))  # fmt: skip
    assert len(rec.bodies) == 1
    msg = ei.value.failures[0].message
    assert "401" in msg and "[REDACTED]" in msg
    assert (
        secret not in msg and secret not in str(ei.value) and secret not in repr(ei.value.failures)
    )


def test_missing_api_key_env_is_a_config_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNISCALE_MISSING_KEY", raising=False)
    rec = Recorder(lambda k, b, r: completion(["4"]))
    with pytest.raises(AllSamplesFailed) as ei:
        run(run_action(executor(rec, [spec(api_key_env="UNISCALE_MISSING_KEY")]),
                       Action("m", "single", 1), Q))  # fmt: skip
    f = ei.value.failures[0]
    assert f.error == "ExecutionConfigError" and "'UNISCALE_MISSING_KEY'" in f.message
    assert rec.bodies == []


def test_fan_out_is_bounded_by_max_concurrency() -> None:
    async def respond(k: int, b: dict[str, Any], r: httpx.Request) -> Any:
        await asyncio.sleep(0.05)
        return completion(["4"])

    rec = Recorder(respond)
    ex = executor(rec, [spec(honours_n=False, max_concurrency=2)])
    out = run(run_action(ex, Action("m", "self_consistency", 6), Q))
    assert out.samples_used == 6 and len(rec.bodies) == 6
    assert rec.max_in_flight == 2


def test_configuration_errors() -> None:
    rec = Recorder(lambda k, b, r: completion(["4"]))
    with pytest.raises(ExecutionConfigError, match="unknown model 'nope'"):
        run(run_action(executor(rec), Action("nope", "single", 1), Q))
    with pytest.raises(ExecutionConfigError, match=r"\['n'\] are set by the executor"):
        run(run_action(executor(rec), Action("m", "single", 1), Q, n=3))
    with pytest.raises(ExecutionConfigError, match="unknown extractor"):
        run(run_action(executor(rec), Action("m", "single", 1), Q, extractor="nope"))
    with pytest.raises(ExecutionConfigError, match="unknown model 'zz'"):
        run(
            run_action(
                executor(rec), Action("m", "single", 1), Q, fallback=Action("zz", "single", 1)
            )
        )
    with pytest.raises(ValueError, match="duplicate model name"):
        executor(rec, [spec("a"), spec("a")])
    with pytest.raises(ValueError, match="deadline_s"):
        executor(rec, deadline_s=0)
    assert rec.bodies == []
    assert issubclass(ExecutionConfigError, ExecutionError)


def test_extra_params_and_custom_extractor() -> None:
    rec = Recorder(lambda k, b, r: completion(["The answer is (C)"]))
    out = run(run_action(executor(rec), Action("m", "single", 1), Q, extractor="choice", top_p=0.9))
    assert rec.bodies[0]["top_p"] == 0.9 and out.answer == "C"


def test_closed_executor_refuses_work() -> None:
    rec = Recorder(lambda k, b, r: completion(["4"]))
    ex = executor(rec)

    async def go() -> None:
        await ex.aclose()
        await ex.run(Action("m", "single", 1), Q)

    with pytest.raises(AllSamplesFailed) as ei:
        run(go())
    assert "closed" in ei.value.failures[0].message


def test_sample_api_for_data_collection() -> None:
    rec = Recorder(lambda k, b, r: completion(["1", "2", "3"], prompt_tokens=4))
    ex = executor(rec)

    async def go() -> Any:
        async with ex:
            return await ex.sample("m", Q, 3, temperature=1.0, extractor="last_number")

    batch = run(go())
    assert [s.answer for s in batch.samples] == ["1", "2", "3"]
    assert rec.bodies[0]["temperature"] == 1.0
    assert batch.requests == 1 and batch.input_tokens == 4 and batch.failures == ()


def test_configuration_errors_do_not_trigger_the_fallback() -> None:
    rec = Recorder(lambda k, b, r: completion(["4"]))
    with pytest.raises(ExecutionConfigError, match="unknown extractor"):
        run(
            run_action(
                executor(rec, [spec("a"), spec("b")]),
                Action("a", "single", 1),
                Q,
                extractor="nope",
                fallback=Action("b", "single", 1),
            )
        )
    assert rec.bodies == []
