"""Executor integration tests over real loopback HTTP against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import fake_openai
import pytest
from fake_openai import FakeOpenAI

from uniscale.execute import AllSamplesFailed, DeadlineExceeded, Executor, Outcome
from uniscale.space import Action, ModelSpec

T = TypeVar("T")
Q = [{"role": "user", "content": "What is 2 + 2?"}]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return fake_openai.run(coro, timeout=30)


@pytest.fixture
def fake(fake_server: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_server()


@pytest.fixture
def fake2(fake_server: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_server("backup says 4")


def model(server: FakeOpenAI, name: str = "m", **kw: Any) -> ModelSpec:
    kw.setdefault("price_in_per_mtok", 1.0)
    kw.setdefault("price_out_per_mtok", 3.0)
    return ModelSpec(name=name, base_url=server.base_url, **kw)


async def execute(
    models: Sequence[ModelSpec], action: Action, messages: Any = Q, ex_kw: Any = None, **kw: Any
) -> Outcome:
    opts = {"backoff_s": 0.01, "timeout_s": 5.0, "deadline_s": 20.0, **(ex_kw or {})}
    async with Executor(models, **opts) as ex:
        return await ex.run(action, messages, **kw)


def test_health_endpoint(fake: FakeOpenAI) -> None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{fake.port}/health", timeout=5) as resp:
        assert resp.status == 200


def test_self_consistency_with_llama_usage_counts_every_choice(fake: FakeOpenAI) -> None:
    fake.config.answers = ["I think 5", "it is 4", "so the answer is 4", "4", "maybe 6 or 5"]
    out = run(execute([model(fake)], Action("m", "self_consistency", 5), seed=1))
    (req,) = fake.generation_requests()
    assert req.body["n"] == 5 and req.body["logprobs"] is True and req.body["seed"] == 1
    assert out.answer == "4" and out.text == "it is 4" and out.confidence == pytest.approx(0.6)
    true_tokens = sum(fake.tokens(t) for t in fake.config.answers)
    assert out.output_tokens == true_tokens  # not the one-choice usage the server reported
    assert out.input_tokens == fake.config.prompt_tokens
    assert out.cost_usd == pytest.approx((11 * 1.0 + true_tokens * 3.0) / 1e6)


def test_tokenize_fallback_without_logprobs(fake: FakeOpenAI) -> None:
    fake.config.logprobs = False
    fake.config.answers = ["one two three four", "five six"]
    out = run(execute([model(fake)], Action("m", "self_consistency", 2)))
    assert [s.output_tokens for s in out.samples] == [4, 2]
    assert {s.token_count_method for s in out.samples} == {"tokenize"}
    assert sum(1 for r in fake.received if r.path == "/tokenize") == 2


def test_chars_fallback_without_tokenizer(fake: FakeOpenAI) -> None:
    fake.config.logprobs = False
    fake.config.tokenize = False
    fake.config.answers = ["x" * 20, "y" * 8]
    out = run(execute([model(fake)], Action("m", "self_consistency", 2)))
    assert [(s.output_tokens, s.token_count_method) for s in out.samples] == [
        (5, "chars"), (2, "chars"),
    ]  # fmt: skip


def test_ignored_n_is_detected_and_fanned_out(fake: FakeOpenAI) -> None:
    fake.config.ignore_n = True
    fake.config.answers = ["4", "4", "5", "4", "6"]
    out = run(execute([model(fake)], Action("m", "self_consistency", 5), seed=10))
    reqs = fake.generation_requests()
    assert [r.body["n"] for r in reqs] == [5, 1, 1, 1, 1]
    assert sorted(r.body["seed"] for r in reqs[1:]) == [11, 12, 13, 14]
    assert out.samples_used == 5 and out.requests == 5 and out.answer == "4"
    assert out.input_tokens == 5 * fake.config.prompt_tokens
    assert {s.token_count_method for s in out.samples} == {"logprobs"}


def test_fan_out_concurrency_bound_on_the_wire(fake: FakeOpenAI) -> None:
    fake.config.delay_s = 0.15
    spec = model(fake, honours_n=False, max_concurrency=2)
    out = run(execute([spec], Action("m", "self_consistency", 6)))
    assert out.samples_used == 6
    assert fake.max_in_flight == 2


def test_best_of_n_over_http(fake: FakeOpenAI) -> None:
    fake.config.answers = ["short 3", "a much longer answer 4", "mid answer 5"]
    fake.config.logprob = lambda text: -1.0 / max(len(text), 1)  # longer text = higher score
    out = run(execute([model(fake)], Action("m", "best_of_n", 3)))
    assert out.answer == "4" and out.samples_used == 3


def test_adaptive_over_http_stops_after_first_round(fake: FakeOpenAI) -> None:
    fake.config.answers = ["it is 4"]
    out = run(execute([model(fake)], Action("m", "adaptive_consistency", 3)))
    assert [r.body["n"] for r in fake.generation_requests()] == [2]
    assert out.samples_used == 2 and out.stop_reason == "unbeatable"


def test_failures_are_retried(fake: FakeOpenAI) -> None:
    fake.config.fail_times = 2
    out = run(execute([model(fake)], Action("m", "single", 1), ex_kw={"retries": 2}))
    assert out.answer == "4" and len(fake.generation_requests()) == 3


def test_429_retry_after_over_http(fake: FakeOpenAI) -> None:
    fake.config.fail_times, fake.config.fail_status, fake.config.retry_after = 1, 429, "0.4"
    t0 = time.monotonic()
    out = run(execute([model(fake)], Action("m", "single", 1), ex_kw={"backoff_s": 0.0}))
    assert time.monotonic() - t0 >= 0.4 and out.answer == "4"


def test_slow_server_times_out_and_falls_back(fake: FakeOpenAI, fake2: FakeOpenAI) -> None:
    fake.config.delay_s = 3.0
    models = [model(fake, "slow"), model(fake2, "backup")]
    t0 = time.monotonic()
    out = run(
        execute(
            models,
            Action("slow", "single", 1),
            ex_kw={"timeout_s": 0.3},
            fallback=Action("backup", "single", 1),
        )
    )
    assert time.monotonic() - t0 < 2.5
    assert out.fallback_used and out.text == "backup says 4"
    assert out.failures[0].error == "RequestTimeout"


def test_deadline_over_http(fake: FakeOpenAI) -> None:
    fake.config.delay_s = 3.0
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        run(execute([model(fake)], Action("m", "single", 1), ex_kw={"deadline_s": 0.4}))
    assert time.monotonic() - t0 < 2.5


def test_connection_refused_falls_back(fake2: FakeOpenAI) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = ModelSpec("dead", base_url=f"http://127.0.0.1:{port}/v1")
    out = run(
        execute(
            [dead, model(fake2, "backup")],
            Action("dead", "self_consistency", 3),
            ex_kw={"retries": 1},
            fallback=Action("backup", "single", 1),
        )
    )
    assert out.fallback_used and out.failures[0].error == "NetworkError"


def test_truncated_json_and_empty_content(fake: FakeOpenAI) -> None:
    fake.config.truncate_times = 1
    with pytest.raises(AllSamplesFailed) as ei:
        run(execute([model(fake)], Action("m", "single", 1)))
    assert ei.value.failures[0].error == "MalformedResponseError"
    fake.config.empty_times = 1
    out = run(execute([model(fake)], Action("m", "self_consistency", 3)))
    assert out.samples_used == 2 and [f.error for f in out.failures] == ["EmptyContentError"]


def test_completions_endpoint_over_http(fake: FakeOpenAI) -> None:
    fake.config.answers = [" 42"]
    spec = model(fake, endpoint="completions")
    out = run(execute([spec], Action("m", "single", 1), "Q: 40 + 2 =\nA:"))
    (req,) = fake.generation_requests()
    assert req.path == "/v1/completions" and req.body["prompt"] == "Q: 40 + 2 =\nA:"
    assert out.answer == "42" and out.output_tokens == 1


def test_api_key_header(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "k-123")
    run(execute([model(fake, api_key_env="FAKE_OPENAI_KEY")], Action("m", "single", 1)))
    (req,) = fake.generation_requests()
    headers = {k.lower(): v for k, v in req.headers.items()}
    assert headers["authorization"] == "Bearer k-123"


def test_concurrent_runs_share_one_executor(fake: FakeOpenAI) -> None:
    fake.config.delay_s = 0.05
    fake.config.answers = ["7"]

    async def go() -> list[Outcome]:
        async with Executor([model(fake, max_concurrency=3)], timeout_s=5.0) as ex:
            return await asyncio.gather(
                *(ex.run(Action("m", "self_consistency", 2), Q) for _ in range(8))
            )

    outs = run(go())
    assert all(o.answer == "7" and o.samples_used == 2 for o in outs)
    assert fake.max_in_flight <= 3
