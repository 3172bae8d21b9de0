"""End-to-end tests of the executor against real LLMs on loopback (marker ``real_llm``).

Two llama.cpp ``llama-server`` processes (SmolLM2-135M and Qwen2.5-Coder-0.5B, one thread each)
answer a few real GSM8K questions with ``single`` and ``self_consistency`` (n=4); a
``python -m llama_cpp.server`` (llama-cpp-python, which silently ignores ``n``) exercises the
fan-out fallback. The small models are mostly wrong on GSM8K, so the assertions are about
structure, never correctness: token accounting (checked against the raw responses, captured
with a recording transport), answer extraction and vote tallies, cost, latency, sample counts,
and the server quirks the executor must handle.

Prerequisites come from ``bash scripts/llm/setup.sh smollm2 qwen05 llamacpp-python`` (``make
llm``). Without them the tests skip, unless ``UNISCALE_REAL_LLM=1``: then they fail, so that CI
cannot pass by silently skipping.

The first tests start each (engine, model) the rest needs and ask it one question. A server that
cannot start on this CPU (it dies while loading, say with SIGSEGV) fails there once, with the
signal and the tail of its log; the tests that need that server then skip, naming the failed
start, instead of repeating the same error.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from llm_servers import (
    Engine,
    RunningServer,
    ServerError,
    engine_executable,
    servers_available,
    start_servers,
)

from uniscale.execute import Executor, Outcome
from uniscale.extract import get_extractor
from uniscale.lab import collect, datasets
from uniscale.space import Action, ModelSpec

pytestmark = pytest.mark.real_llm

T = TypeVar("T")
REQUIRED = os.environ.get("UNISCALE_REAL_LLM") == "1"
SETUP_HINT = "bash scripts/llm/setup.sh smollm2 qwen05 llamacpp-python"
ITEMS = datasets.ITEMS

MODELS = ("smollm2", "qwen05")
#: (price_in, price_out) in $/Mtok: arbitrary but distinct, so a mix-up shows in the cost.
PRICES = {"smollm2": (0.11, 0.37), "qwen05": (0.23, 0.71), "smollm2-lcp": (0.13, 0.53)}
N_QUESTIONS = 3
N_SC = 4
MAX_TOKENS = 128
TEMPERATURE = 0.7
SEED = 20240611
CTX = 4096  # total over the 8 slots: 512 tokens each, enough for prompt + 128 new tokens
LAST_NUMBER = get_extractor("last_number")


def require(ok: bool, what: str) -> None:
    """Skip (or fail, under ``UNISCALE_REAL_LLM=1``) when a prerequisite is missing."""
    if ok:
        return
    msg = f"{what} not found; build/assemble it with `{SETUP_HINT}`"
    if REQUIRED:
        pytest.fail(f"UNISCALE_REAL_LLM=1 but {msg}", pytrace=False)
    pytest.skip(msg)


#: (engine, model) -> why it could not start, filled by the start-up tests below.
START_FAILURES: dict[tuple[str, str], str] = {}


def require_started(engine: Engine, models: Sequence[str]) -> None:
    """Skip when a start-up test already failed for one of these servers: that test carries
    the error, the others would only repeat it."""
    for m in models:
        if (engine, m) in START_FAILURES:
            pytest.skip(
                f"{engine} {m} could not start on this machine; see the failure of "
                f"test_server_starts_and_answers_one_request[{engine}-{m}]"
            )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(coro: Coroutine[Any, Any, T], timeout: float = 240.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def gsm8k_questions(k: int) -> list[str]:
    rows = [json.loads(line) for line in ITEMS.read_text().splitlines() if line.strip()]
    questions = [r["question"] for r in rows if r["kind"] == "gsm8k"][:k]
    assert len(questions) == k, f"fewer than {k} gsm8k items in {ITEMS}"
    return questions


def messages(question: str) -> list[dict[str, str]]:
    return [
        {
            "role": "user",
            "content": f"{question}\nSolve it briefly, then end with 'The answer is N.'",
        }
    ]


# --------------------------------------------------------------------------------------------
# Capturing the raw HTTP exchanges


@dataclass(frozen=True)
class Exchange:
    path: str
    request: dict[str, Any]
    status: int
    response: Any


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests to a real transport and records each JSON request/response pair."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        content = await response.aread()  # cached on the response, which the client reuses
        try:
            decoded: Any = json.loads(content)
        except ValueError:
            decoded = None
        self.exchanges.append(
            Exchange(request.url.path, json.loads(request.content), response.status_code, decoded)
        )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    def generations(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.path.endswith("/chat/completions")]


@dataclass
class Run:
    model: str
    action: Action
    outcome: Outcome
    transport: RecordingTransport
    ignores_n_after: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


#: The module's runs by (model, strategy, question index).
Runs = dict[tuple[str, str, int], Run]


def spec(name: str, base_url: str, **kw: Any) -> ModelSpec:
    p_in, p_out = PRICES[name]
    return ModelSpec(
        name=name, base_url=base_url, price_in_per_mtok=p_in, price_out_per_mtok=p_out, **kw
    )


async def execute(
    model: ModelSpec, action: Action, msgs: Sequence[dict[str, str]], **kw: Any
) -> Run:
    transport = RecordingTransport()
    async with Executor(
        [model], transport=transport, timeout_s=180.0, deadline_s=220.0, retries=0
    ) as ex:
        out = await ex.run(
            action, msgs, seed=SEED, max_tokens=MAX_TOKENS, temperature=TEMPERATURE, **kw
        )
        return Run(model.name, action, out, transport, ex.ignores_n(model.name))


def check_cost(out: Outcome, name: str) -> None:
    p_in, p_out = PRICES[name]
    assert out.cost_usd == pytest.approx(
        (out.input_tokens * p_in + out.output_tokens * p_out) / 1e6
    )
    assert out.cost_usd > 0 and out.scorer_cost_usd == 0.0


def check_samples_extracted(out: Outcome) -> None:
    for s in out.samples:
        assert s.text.strip() and s.answer == LAST_NUMBER(s.text)
        assert s.answer is None or isinstance(s.answer, str)
        assert s.latency_s > 0 and s.finish_reason in ("stop", "length")


# --------------------------------------------------------------------------------------------
# Start-up: each server this file needs starts on this CPU and answers one request. These run
# first (file order), so a crash at load is reported once, here.


def llamacpp_python_ok() -> bool:
    if not servers_available(["smollm2"], engine="llama-cpp-python"):
        return False
    probe = subprocess.run(
        [str(engine_executable("llama-cpp-python")), "-c", "import llama_cpp.server"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.parametrize(
    ("engine", "model"),
    [("llama-server", "smollm2"), ("llama-server", "qwen05"), ("llama-cpp-python", "smollm2")],
)
def test_server_starts_and_answers_one_request(engine: Engine, model: str, tmp_path: Path) -> None:
    if engine == "llama-server":
        require(servers_available([model]), f"llama-server or the {model} GGUF")
    else:
        require(llamacpp_python_ok(), "llama-cpp-python[server] (venv) or the smollm2 GGUF")
    try:
        with start_servers(
            [model], ports=[free_port()], threads=2, ctx=1024, engine=engine, log_dir=tmp_path
        ) as servers:
            url = f"{servers[model].base_url}/v1/chat/completions"
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "What is 2 + 3? Answer with a number."}],
                "max_tokens": 8,
                "temperature": 0.0,
            }
            resp = httpx.post(url, json=body, timeout=120.0)
            alive = servers[model].process.poll() is None
    except ServerError as e:
        START_FAILURES[(engine, model)] = str(e)
    if (engine, model) in START_FAILURES:  # outside the except: one message, no chained trace
        pytest.fail(START_FAILURES[(engine, model)], pytrace=False)
    assert alive, f"{engine} {model} died while answering"
    assert resp.status_code == 200, resp.text[:500]
    data = resp.json()
    assert data["choices"][0]["message"]["content"].strip()
    assert data["usage"]["completion_tokens"] >= 1


# --------------------------------------------------------------------------------------------
# llama-server: single and self_consistency on both models


@pytest.fixture(scope="module")
def llama_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningServer]]:
    require(servers_available(MODELS), f"llama-server or the {'/'.join(MODELS)} GGUFs")
    require_started("llama-server", MODELS)
    logs = tmp_path_factory.mktemp("llama-server-logs")
    with start_servers(
        MODELS,
        ports=[free_port() for _ in MODELS],
        threads=1,
        ctx=CTX,
        parallel=8,
        log_dir=logs,
    ) as servers:
        yield servers


@pytest.fixture(scope="module")
def runs(llama_servers: dict[str, RunningServer]) -> Runs:
    """Every (model, strategy, question) run, all at once (each server decodes in parallel
    slots, so this is much faster than running them one after the other)."""
    questions = gsm8k_questions(N_QUESTIONS)
    jobs: list[tuple[tuple[str, str, int], ModelSpec, Action, list[dict[str, str]]]] = []
    for name in MODELS:
        m = spec(name, f"{llama_servers[name].base_url}/v1", max_concurrency=8)
        for qi, q in enumerate(questions):
            jobs.append(((name, "single", qi), m, Action(name, "single", 1), messages(q)))
            sc = Action(name, "self_consistency", N_SC)
            jobs.append(((name, "self_consistency", qi), m, sc, messages(q)))

    async def go() -> list[Run]:
        return list(await asyncio.gather(*(execute(m, a, msgs) for _, m, a, msgs in jobs)))

    t0 = time.monotonic()
    done = run(go())
    print(f"\nreal-LLM runs: {len(done)} actions in {time.monotonic() - t0:.1f} s")
    return {key: r for (key, *_), r in zip(jobs, done, strict=True)}


def runs_of(runs: Runs, model: str, strategy: str) -> list[Run]:
    out = [runs[(model, strategy, qi)] for qi in range(N_QUESTIONS)]
    assert out
    return out


@pytest.mark.parametrize("model", MODELS)
def test_single_counts_tokens_cost_and_extracts(runs: Runs, model: str) -> None:
    for r in runs_of(runs, model, "single"):
        out = r.outcome
        (ex,) = r.transport.generations()
        assert ex.status == 200
        assert ex.request["n"] == 1 and ex.request["seed"] == SEED
        assert ex.request["max_tokens"] == MAX_TOKENS and ex.request["temperature"] == TEMPERATURE
        (choice,) = ex.response["choices"]
        usage = ex.response["usage"]
        assert out.samples_used == 1 and out.requests == 1 and not out.failures
        (s,) = out.samples
        # One choice: the logprob count and the server's usage agree.
        assert s.token_count_method == "logprobs"
        assert s.output_tokens == len(choice["logprobs"]["content"]) == usage["completion_tokens"]
        assert 0 < s.output_tokens <= MAX_TOKENS
        assert out.output_tokens == s.output_tokens
        assert out.input_tokens == s.input_tokens == usage["prompt_tokens"] > 0
        assert s.text == choice["message"]["content"] and out.text == s.text
        check_samples_extracted(out)
        assert out.answer == s.answer and out.confidence is None
        check_cost(out, model)
        assert out.latency_s >= s.latency_s > 0
        assert not out.fallback_used and out.action == r.action


@pytest.mark.parametrize("model", MODELS)
def test_self_consistency_counts_every_choice_despite_llama_usage(runs: Runs, model: str) -> None:
    for r in runs_of(runs, model, "self_consistency"):
        out = r.outcome
        (ex,) = r.transport.generations()  # one request with n: llama-server honours it
        assert ex.status == 200 and ex.request["n"] == N_SC and ex.request["seed"] == SEED
        assert ex.request["temperature"] == TEMPERATURE and ex.request["logprobs"] is True
        choices = sorted(ex.response["choices"], key=lambda c: c["index"])
        assert len(choices) == N_SC
        assert out.samples_used == N_SC and out.requests == 1 and not out.failures
        assert [s.index for s in out.samples] == list(range(N_SC))
        per_choice = [len(c["logprobs"]["content"]) for c in choices]
        assert [s.output_tokens for s in out.samples] == per_choice
        assert {s.token_count_method for s in out.samples} == {"logprobs"}
        assert all(0 < k <= MAX_TOKENS for k in per_choice)
        assert sum(per_choice) == out.output_tokens
        # The quirk: usage.completion_tokens covers one choice, not the n of them.
        reported = ex.response["usage"]["completion_tokens"]
        assert reported in per_choice and reported < out.output_tokens
        # The prompt is processed (and billed) once per request.
        assert out.input_tokens == ex.response["usage"]["prompt_tokens"] > 0
        assert all(s.input_tokens == out.input_tokens for s in out.samples)
        assert [s.text for s in out.samples] == [c["message"]["content"] for c in choices]
        check_cost(out, model)
        assert out.latency_s > 0 and not out.fallback_used


@pytest.mark.parametrize("model", MODELS)
def test_self_consistency_vote_matches_the_samples(runs: Runs, model: str) -> None:
    for r in runs_of(runs, model, "self_consistency"):
        out = r.outcome
        check_samples_extracted(out)
        answers = [s.answer for s in out.samples]
        counts = Counter(a for a in answers if a is not None)
        n_valid = sum(counts.values())
        if n_valid == 0:
            assert out.answer is None and out.confidence == 0.0
            continue
        assert out.answer is not None
        assert counts[out.answer] == max(counts.values())
        assert out.confidence == pytest.approx(counts[out.answer] / n_valid)
        # Ties go to the answer seen first; the text is that answer's first sample.
        first = answers.index(out.answer)
        tied = [a for a in counts if counts[a] == counts[out.answer]]
        assert first == min(answers.index(a) for a in tied)
        assert out.text == out.samples[first].text


def test_constrained_letter_answers_from_a_real_server(
    llama_servers: dict[str, RunningServer],
) -> None:
    """The multiple-choice path of the collector's prompts: a GBNF grammar limits every sampled
    answer to one letter, which the ``choice`` extractor reads back exactly (real_v2 asks MMLU
    this way; v1's free-form letters were cut off by max_tokens two times in three)."""
    items = collect.load_items(ITEMS)
    item = next(i for i in items if i.kind == "mmlu")
    prompt = collect.prompt_for(item)
    grammar = prompt.grammar or "root ::= [ABCD]"
    model = spec("qwen05", f"{llama_servers['qwen05'].base_url}/v1", max_concurrency=8)

    async def go() -> Any:
        async with Executor([model], timeout_s=180.0, retries=0) as ex:
            return await ex.sample(
                "qwen05",
                collect.build_messages(item),
                4,
                temperature=TEMPERATURE,
                max_tokens=max(prompt.max_tokens, 2),
                seed=SEED,
                extractor="choice",
                grammar=grammar,
            )

    batch = run(go())
    assert not batch.failures and len(batch.samples) == 4
    for s in batch.samples:
        assert s.text.strip() in ("A", "B", "C", "D"), s.text
        assert s.answer == s.text.strip()
        assert s.finish_reason == "stop"
        assert s.output_tokens >= 1


def test_the_two_models_differ_and_both_ran(runs: Runs) -> None:
    """Guards against both specs pointing at one server: the reported model differs and every
    run returned text."""
    for name in MODELS:
        for strategy in ("single", "self_consistency"):
            for r in runs_of(runs, name, strategy):
                (ex,) = r.transport.generations()
                assert ex.request["model"] == name
                assert str(ex.response.get("model", name)) == name
    greedy = [runs[(m, "single", 0)].outcome.text for m in MODELS]
    assert greedy[0] != greedy[1]


# --------------------------------------------------------------------------------------------
# llama-cpp-python: a real server that ignores n -> fan-out fallback


@pytest.fixture(scope="module")
def lcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require(llamacpp_python_ok(), "llama-cpp-python[server] (venv) or the smollm2 GGUF")
    require_started("llama-cpp-python", ["smollm2"])
    logs = tmp_path_factory.mktemp("llama-cpp-python-logs")
    with start_servers(
        ["smollm2"],
        ports=[free_port()],
        threads=1,
        ctx=1024,
        engine="llama-cpp-python",
        log_dir=logs,
    ) as servers:
        yield servers["smollm2"]


def test_llamacpp_python_ignores_n_and_the_executor_fans_out(lcp_server: RunningServer) -> None:
    name = "smollm2-lcp"
    m = spec(name, f"{lcp_server.base_url}/v1", api_model="smollm2", honours_n=True)
    (question,) = gsm8k_questions(1)
    rec = RecordingTransport()

    async def go() -> tuple[Outcome, bool, int, Outcome]:
        async with Executor([m], transport=rec, timeout_s=180.0, retries=0) as ex:

            async def self_consistency(n: int, max_tokens: int) -> Outcome:
                return await ex.run(
                    Action(name, "self_consistency", n),
                    messages(question),
                    seed=SEED,
                    max_tokens=max_tokens,
                    temperature=TEMPERATURE,
                )

            assert not ex.ignores_n(name)
            first = await self_consistency(3, max_tokens=64)
            flagged = ex.ignores_n(name)
            mark = len(rec.exchanges)
            second = await self_consistency(2, max_tokens=32)
            return first, flagged, mark, second

    out, flagged, mark, out2 = run(go())

    reqs = [e for e in rec.exchanges[:mark] if e.path.endswith("/chat/completions")]
    assert all(e.status == 200 for e in reqs)
    # The n=3 request came back with one choice: the server really ignored n.
    assert reqs[0].request["n"] == 3 and len(reqs[0].response["choices"]) == 1
    # The two missing samples were fetched with single-sample requests, distinct seeds.
    assert sorted(e.request["n"] for e in reqs[1:]) == [1, 1] and len(reqs) == 3
    assert sorted(e.request["seed"] for e in reqs) == [SEED, SEED + 1, SEED + 2]
    assert flagged
    assert out.samples_used == 3 and out.requests == 3 and not out.failures
    assert [s.index for s in out.samples] == [0, 1, 2]
    # Each sample is billed from its own single-choice response.
    by_seed = {e.request["seed"]: e.response for e in reqs}
    for s in out.samples:
        resp = by_seed[SEED + s.index]
        assert s.text == resp["choices"][0]["message"]["content"]
        assert s.output_tokens == resp["usage"]["completion_tokens"] > 0
        assert s.token_count_method in ("usage", "logprobs")
        assert s.input_tokens == resp["usage"]["prompt_tokens"] > 0
    assert out.output_tokens == sum(s.output_tokens for s in out.samples)
    # Every request re-sends the prompt, so it is billed three times.
    assert out.input_tokens == sum(e.response["usage"]["prompt_tokens"] for e in reqs)
    check_cost(out, name)
    check_samples_extracted(out)
    assert out.latency_s > 0

    # Once flagged, no n>1 request is sent at all.
    reqs2 = [e for e in rec.exchanges[mark:] if e.path.endswith("/chat/completions")]
    assert [e.request["n"] for e in reqs2] == [1, 1]
    assert out2.samples_used == 2 and out2.requests == 2
