"""Regression tests for the review findings on the Python runtime (2026-12-02): D6, D7, D10-D14.

Each test reproduces the reported failure: a decision log on a full disk or with a lone
surrogate, concurrent requests beyond the policy's pending capacity, non-finite numbers in the
log, several writer processes, a non-log file opened as a log, an API key echoed by an upstream
401, and malformed upstream bodies served over real loopback HTTP and through MockTransport.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import multiprocessing as mp
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fake_openai import FakeConfig, FakeOpenAI, JsonHandler, LoopbackServer, run
from hypothesis import given
from hypothesis import strategies as st

import uniscale.decision_log
from uniscale import ActionSpace, DecisionLog, Featurizer, Policy, Router, read_decision_log
from uniscale.execute import (
    REDACTED,
    AllSamplesFailed,
    Executor,
    Failure,
    MalformedResponseError,
    UpstreamHTTPError,
    redact_message,
)
from uniscale.router import RouterResult, encode_record, json_safe
from uniscale.space import Action, ModelSpec

Q = [{"role": "user", "content": "What is 2 + 2?"}]
GOOD = {
    "choices": [{"index": 0, "message": {"content": "it is 4"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3},
}


class _RawHandler(JsonHandler):
    def do_GET(self) -> None:
        self._send_raw(200, b'{"status":"ok"}')

    def do_POST(self) -> None:
        self._read_body()
        raw: RawServer = self.server.owner
        self._send_raw(raw.status, raw.body)


class RawServer(LoopbackServer):
    """A loopback HTTP server answering every POST with ``status`` and the raw bytes ``body``
    (no JSON encoding of its own: the point is to send what a broken upstream sends)."""

    handler = _RawHandler

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status


def mspec(name: str, base_url: str, **kw: Any) -> ModelSpec:
    kw.setdefault("price_in_per_mtok", 1.0)
    kw.setdefault("price_out_per_mtok", 2.0)
    return ModelSpec(name, base_url=base_url, **kw)


def executor(models: list[ModelSpec], **kw: Any) -> Executor:
    kw.setdefault("backoff_s", 0.001)
    kw.setdefault("timeout_s", 10.0)
    kw.setdefault("deadline_s", 30.0)
    kw.setdefault("retries", 0)
    return Executor(models, **kw)


def body_with(**usage: Any) -> bytes:
    return json.dumps({**GOOD, "usage": {**GOOD["usage"], **usage}}).encode()


# ---- D14: malformed upstream bodies -----------------------------------------------------------

DEEP = 100_000
MALFORMED: dict[str, tuple[bytes, str]] = {
    "deep_json": (b"[" * DEEP + b"]" * DEEP, r"invalid JSON .*RecursionError"),
    "deep_object": (b'{"choices":' + b"[" * DEEP + b"]" * DEEP + b"}", r"invalid JSON"),
    "huge_prompt_tokens": (
        b'{"choices":[{"message":{"content":"4"}}],"usage":{"prompt_tokens":1' + b"0" * 400 + b"}}",
        r"usage\.prompt_tokens is not a token count .*int <1329-bit integer>",
    ),
    "huge_completion_tokens": (
        body_with(completion_tokens=10**30),
        r"usage\.completion_tokens is not a token count",
    ),
    "negative_prompt_tokens": (body_with(prompt_tokens=-5), r"usage\.prompt_tokens .* -5"),
    "string_tokens": (body_with(prompt_tokens="12"), r"usage\.prompt_tokens .*str '12'"),
    "float_tokens": (body_with(completion_tokens=1e400), r"completion_tokens .*float inf"),
    "choices_not_a_list": (b'{"choices": {"0": "4"}}', r"no 'choices' list"),
    "choices_of_numbers": (b'{"choices": [1, 2]}', r"a choice is not an object"),
    "content_not_a_string": (
        b'{"choices": [{"message": {"content": 4}}]}',
        r"content is not a string",
    ),
    "bad_utf8": (b'{"choices": "\xff\xfe"}', r"invalid JSON"),
    "not_json": (b"<html>502 bad gateway</html>", r"invalid JSON"),
    "top_level_list": (b"[1, 2, 3]", r"no 'choices' list"),
    "very_long_integer": (b'{"choices": [], "x": 1' + b"0" * 5000 + b"}", r"invalid JSON"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_body_over_loopback_is_an_execution_error(case: str) -> None:
    body, match = MALFORMED[case]
    with RawServer(body) as bad:

        async def go() -> None:
            async with executor([mspec("bad", bad.base_url)]) as ex:
                await ex.run(Action("bad", "single", 1), Q)

        with pytest.raises(AllSamplesFailed, match="all 1 samples") as ei:
            run(go())
    (failure,) = ei.value.failures
    assert failure.error in ("MalformedResponseError", "EmptyContentError")
    assert _re_search(match, failure.message), failure.message


def _re_search(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_body_runs_the_fallback_with_mock_transport(case: str) -> None:
    body, match = MALFORMED[case]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "bad.test":
            return httpx.Response(200, content=body)
        return httpx.Response(200, json=GOOD)

    models = [mspec("bad", "http://bad.test/v1"), mspec("good", "http://good.test/v1")]

    async def go() -> Any:
        async with executor(models, transport=httpx.MockTransport(handler)) as ex:
            return await ex.run(Action("bad", "single", 1), Q, fallback=Action("good", "single", 1))

    out = run(go())
    assert out.fallback_used and out.answer == "4"
    sample_failures = [f for f in out.failures if f.stage == "sample"]
    assert sample_failures and _re_search(match, sample_failures[0].message)


def test_non_finite_logprobs_are_dropped_not_propagated() -> None:
    raw = json.dumps(
        {"choices": [{"message": {"content": "4"}, "logprobs": {"content": [{"logprob": 0}]}}]}
    ).replace('"logprob": 0', '"logprob": -1e400')

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw.encode())

    async def go() -> Any:
        async with executor(
            [mspec("m", "http://m.test/v1")], transport=httpx.MockTransport(handler)
        ) as ex:
            return await ex.run(Action("m", "single", 1), Q)

    out = run(go())
    assert out.answer == "4" and out.samples[0].mean_logprob is None
    assert out.samples[0].token_count_method != "logprobs"


# ---- D13: secrets never reach a failure message -----------------------------------------------

KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"  # 40 characters


def _fragments(secret: str, k: int = 8) -> list[str]:
    return [secret[i : i + k] for i in range(len(secret) - k + 1)]


def _keyed_failure(handler: Callable[[httpx.Request], httpx.Response]) -> Failure:
    """The one failure of a single-sample run against ``handler`` by a model whose API key is
    ``$UNISCALE_HARDENING_KEY``."""

    async def go() -> None:
        async with executor(
            [mspec("m", "http://m.test/v1", api_key_env="UNISCALE_HARDENING_KEY")],
            transport=httpx.MockTransport(handler),
        ) as ex:
            await ex.run(Action("m", "single", 1), Q)

    with pytest.raises(AllSamplesFailed) as ei:
        run(go())
    (failure,) = ei.value.failures
    return failure


def _assert_no_fragment(secret: str, text: str) -> None:
    leaked = [f for f in _fragments(secret) if f in text]
    assert not leaked, f"{leaked[:3]} of the secret leaked into {text!r}"


@pytest.mark.parametrize(
    "body",
    [
        # The review's case: the key is echoed at a position where the old 200-char cut
        # (before redaction) left 33 of its 40 characters.
        "x" * 167 + f"Incorrect API key provided: {KEY}",
        f"Incorrect API key provided: {KEY[:12]}****{KEY[-4:]}... {KEY[3:30]}",
        json.dumps({"error": {"message": f"bad key {KEY}", "headers": {"Authorization": "k"}}}),
        f"echo: Authorization: Bearer {KEY}",
        "y" * 195 + KEY,
    ],
)
def test_upstream_401_never_leaks_the_key(monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    monkeypatch.setenv("UNISCALE_HARDENING_KEY", KEY)
    with RawServer(body.encode(), status=401) as srv:

        async def go() -> None:
            async with executor(
                [mspec("m", srv.base_url, api_key_env="UNISCALE_HARDENING_KEY")]
            ) as ex:
                await ex.run(Action("m", "single", 1), Q)

        with pytest.raises(AllSamplesFailed) as ei:
            run(go())
    (failure,) = ei.value.failures
    assert failure.status == 401 and "HTTP 401" in failure.message
    for text in (failure.message, str(ei.value), repr(ei.value.failures)):
        _assert_no_fragment(KEY, text)


def test_upstream_error_message_is_redacted_then_truncated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNISCALE_HARDENING_KEY", KEY)
    body = "z" * 190 + KEY + "tail"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=body)

    msg = _keyed_failure(handler).message
    assert "z" * 190 + REDACTED[:10] in msg
    _assert_no_fragment(KEY, msg)


def test_network_error_text_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISCALE_HARDENING_KEY", KEY)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"proxy refused Authorization: Bearer {KEY}", request=request)

    failure = _keyed_failure(handler)
    assert failure.error == "NetworkError" and "ConnectError" in failure.message
    _assert_no_fragment(KEY, failure.message)


def test_failure_from_exception_redacts_bearer_tokens() -> None:
    exc = UpstreamHTTPError("HTTP 401: Authorization: Bearer abcdefghijklmnop", status=401)
    f = Failure.from_exception("m", exc)
    assert "abcdefghijklmnop" not in f.message and REDACTED in f.message and f.status == 401
    f2 = Failure.from_exception("m", MalformedResponseError('{"api_key": "s3cr3t-s3cr3t"}'))
    assert "s3cr3t" not in f2.message


SECRET_CHARS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=8
)


@given(
    secret=SECRET_CHARS.filter(lambda s: len(s) <= 80),
    before=st.text(max_size=300),
    after=st.text(max_size=300),
    cut=st.integers(min_value=0, max_value=80),
    limit=st.one_of(st.none(), st.integers(min_value=0, max_value=400)),
)
def test_redaction_never_leaves_an_8_char_fragment(
    secret: str, before: str, after: str, cut: int, limit: int | None
) -> None:
    # The body holds the whole secret, a prefix of it and a suffix of it, anywhere.
    body = before + secret + after + secret[:cut] + before + secret[cut:] + after
    out = redact_message(body, [secret], limit=limit)
    _assert_no_fragment(secret, out)
    if limit is not None:
        assert len(out) <= limit + 3


@given(st.text(max_size=200))
def test_redaction_without_secrets_keeps_plain_text(text: str) -> None:
    if not any(w in text.lower() for w in ("bearer", "authorization", "api", "sk-")):
        assert redact_message(text) == text


# ---- D6: Router.complete never raises after execution ------------------------------------------


@pytest.fixture
def good() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(FakeConfig(answers=["The answer is 4"])) as server:
        yield server


def router_parts(server: FakeOpenAI, **policy_kw: Any) -> tuple[Policy, Executor, Featurizer]:
    f = Featurizer(16)
    m = mspec("m", server.base_url)
    policy = Policy(
        ActionSpace([m], [Action("m", "single", 1)]), f.dim, feature_version=f.version, **policy_kw
    )
    return policy, executor([m]), f


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` parsed as strict JSON (no Infinity/NaN tokens)."""

    def no_constants(name: str) -> Any:
        raise AssertionError(f"non-JSON token {name} in the decision log")

    text = path.read_bytes().decode("ascii")  # the log is ASCII
    return [json.loads(line, parse_constant=no_constants) for line in text.splitlines()]


def test_full_disk_counts_a_log_failure_and_returns_the_answer(
    good: FakeOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy, ex, f = router_parts(good)
    path = tmp_path / "d.jsonl"

    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def go() -> tuple[RouterResult, Router]:
        async with ex, Router(policy, ex, f, log=path) as router:
            monkeypatch.setattr(uniscale.decision_log, "_write_all", full)
            return await router.complete(Q, ground_truth="4"), router

    with caplog.at_level("ERROR", logger="uniscale.router"):
        res, router = run(go())
    assert res.answer == "4" and res.quality == 1.0 and res.update is not None
    assert router.log_failures == 1 and router.learning_skipped == 0
    assert policy.n_pending == 0  # the policy learned
    assert "could not write the decision record of decision" in caplog.text
    assert "No space left on device" in caplog.text


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux /dev/full")
def test_dev_full_as_the_decision_log(good: FakeOpenAI) -> None:
    policy, ex, f = router_parts(good)

    async def go() -> tuple[RouterResult, Router]:
        async with ex, Router(policy, ex, f, log="/dev/full") as router:
            return await router.complete(Q, ground_truth="4"), router

    res, router = run(go())
    assert res.answer == "4" and router.log_failures == 1 and policy.n_pending == 0
    with DecisionLog("/dev/full") as log, pytest.raises(OSError, match="No space left"):
        log.write({"decision_id": 1})


def test_lone_surrogate_answer_is_logged_as_an_escape(good: FakeOpenAI, tmp_path: Path) -> None:
    good.config.answers = ["4 \ud800 end"]  # the fake sends it JSON-escaped; httpx decodes it
    policy, ex, f = router_parts(good)
    path = tmp_path / "d.jsonl"

    async def go() -> tuple[RouterResult, Router]:
        async with ex, Router(policy, ex, f, log=path) as router:
            res = await router.complete(Q, ground_truth="4 \ud800 end", extractor=lambda t: t)
            return res, router

    res, router = run(go())
    assert res.answer == "4 \ud800 end" and res.quality == 1.0
    assert router.log_failures == 0
    assert b"\\ud800" in path.read_bytes()
    (rec,) = log_lines(path)
    assert rec["outcome"]["answer"] == "4 \ud800 end" and rec["reward"] is not None
    assert [r["decision_id"] for r in read_decision_log(path)] == [res.decision_id]


def test_more_concurrent_requests_than_capacity_skip_learning_not_answers(
    good: FakeOpenAI, tmp_path: Path
) -> None:
    good.config.delay_s = 0.05  # every select happens before the first answer arrives
    policy, ex, f = router_parts(good, capacity=4)
    path = tmp_path / "d.jsonl"

    async def go() -> tuple[list[RouterResult], Router]:
        async with ex, Router(policy, ex, f, log=path) as router:
            results = await asyncio.gather(
                *(router.complete(Q, ground_truth="4") for _ in range(8))
            )
            return list(results), router

    results, router = run(go())
    assert [r.answer for r in results] == ["4"] * 8
    skipped = [r for r in results if r.learning_skipped]
    assert len(skipped) == 4 and router.learning_skipped == 4 and router.log_failures == 0
    assert all(r.update is None and not r.deferred and r.quality == 1.0 for r in skipped)
    recs = log_lines(path)
    assert sorted(r["decision_id"] for r in recs) == sorted(r.decision_id for r in results)
    lost = [r for r in recs if "learning_skipped" in r]
    assert len(lost) == 4
    for r in lost:
        assert r["learning_skipped"]["type"] == "ExpiredDecisionError"
        assert re.search("capacity", r["learning_skipped"]["message"])
        assert r["reward"] is None and r["quality"] == 1.0 and r["outcome"]["answer"] == "4"


def test_malformed_upstream_body_runs_the_fallback_and_is_logged(tmp_path: Path) -> None:
    # D14 through the router: the fallback answers and the decision is logged.
    with RawServer(MALFORMED["huge_prompt_tokens"][0]) as bad, FakeOpenAI() as fine:
        f = Featurizer(16)
        models = [mspec("bad", bad.base_url), mspec("fine", fine.base_url)]
        acts = [Action("bad", "single", 1), Action("fine", "single", 1)]
        policy = Policy(ActionSpace(models, acts), f.dim, feature_version=f.version)
        path = tmp_path / "d.jsonl"

        async def go() -> RouterResult:
            async with (
                executor(models) as ex,
                Router(policy, ex, f, log=path, fallback=Action("fine", "single", 1)) as router,
            ):
                return await router.complete(Q, ground_truth="4", mask=[True, False])

        res = run(go())
    assert res.answer == "4" and res.outcome.fallback_used and res.quality == 0.0
    (rec,) = log_lines(path)
    assert rec["outcome"]["fallback_used"] is True
    assert any(fl["error"] == "MalformedResponseError" for fl in rec["outcome"]["failures"])


# ---- D10: strict JSON in the decision log ------------------------------------------------------


def test_non_finite_numbers_are_written_as_null(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    with DecisionLog(path) as log:
        log.write(
            {
                "decision_id": 1,
                "scores": [math.inf, -math.inf, math.nan, 1.5],
                "nested": {"cost": np.float64("inf"), "ok": np.float32(2.0), "n": np.int64(3)},
                "tuple": (math.nan,),
                "array": np.array([1.0, np.inf]),
            }
        )
    raw = path.read_bytes()
    assert b"Infinity" not in raw and b"NaN" not in raw
    (rec,) = log_lines(path)
    assert rec["scores"] == [None, None, None, 1.5]
    assert rec["nested"] == {"cost": None, "ok": 2.0, "n": 3}
    assert rec["tuple"] == [None] and rec["array"] == [1.0, None]
    assert json_safe({"a": [math.inf]}) == {"a": [None]}


def test_unencodable_record_is_a_type_error(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "d.jsonl") as log, pytest.raises(TypeError, match="not JSON"):
        log.write({"decision_id": 1, "bad": object()})
    assert (tmp_path / "d.jsonl").read_bytes() == b""


def test_router_logs_an_infinite_limit_as_null(good: FakeOpenAI, tmp_path: Path) -> None:
    policy, ex, f = router_parts(good)
    path = tmp_path / "d.jsonl"

    async def go() -> RouterResult:
        async with ex, Router(policy, ex, f, log=path) as router:
            return await router.complete(Q, ground_truth="4", max_latency_s=math.inf)

    res = run(go())
    assert res.answer == "4"
    (rec,) = log_lines(path)
    assert rec["limits"] == {"max_cost_usd": None, "max_latency_s": None}


@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_every_record_encodes_to_one_strict_ascii_json_line(value: Any) -> None:
    line = encode_record({"decision_id": 0, "v": value})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    text = line.decode("ascii")
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON token {name}"))


# ---- D11: several writer processes on one log ------------------------------------------------


def _writer_process(path: str, tag: str, n: int) -> None:
    with DecisionLog(path) as log:
        for i in range(n):
            log.write({"schema": 1, "type": "decision", "decision_id": i, "writer": tag})


def _killed_mid_line(path: str) -> None:
    """A writer SIGKILLed in the middle of a line: half a record, no newline, no cleanup. It
    holds the file lock, as `DecisionLog.write` does while it writes (the kernel releases it
    when the process dies); a writer that skipped the lock could land its half line between
    another writer's tail check and its write, which no log format can undo."""
    import fcntl

    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b'{"schema":1,"type":"decision","decision_id":99,"wri')
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")
def test_writer_killed_mid_line_does_not_merge_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "d.jsonl"
    ctx = mp.get_context("spawn")
    with DecisionLog(path) as log:  # a long-lived writer with the file already open
        log.write({"schema": 1, "type": "decision", "decision_id": 0, "writer": "main"})
        killed = ctx.Process(target=_killed_mid_line, args=(str(path),))
        killed.start()
        killed.join(60)
        assert killed.exitcode == -signal.SIGKILL
        assert not path.read_bytes().endswith(b"\n")
        # The next append starts on a fresh line instead of completing the dead writer's.
        log.write({"schema": 1, "type": "decision", "decision_id": 1, "writer": "main"})
    lines = path.read_bytes().split(b"\n")
    assert lines[1].startswith(b'{"schema":1,"type":"decision","decision_id":99,"wri')
    assert lines[1].endswith(b'"wri') and json.loads(lines[2])["decision_id"] == 1
    with caplog.at_level("WARNING", logger="uniscale.router"):
        assert [r["decision_id"] for r in read_decision_log(path)] == [0, 1]
    assert "d.jsonl:2: skipping a corrupt line" in caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_two_writer_processes_and_a_killed_one(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    ctx = mp.get_context("spawn")
    n = 300
    procs = [ctx.Process(target=_writer_process, args=(str(path), t, n)) for t in "ab"]
    procs.append(ctx.Process(target=_killed_mid_line, args=(str(path),)))
    path.touch()
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, -signal.SIGKILL]
    recs = list(read_decision_log(path))
    got = sorted((r["writer"], r["decision_id"]) for r in recs)
    assert got == sorted((t, i) for t in "ab" for i in range(n))
    # Reopening (a fresh writer) cuts an incomplete tail, if the kill left one at the end.
    with DecisionLog(path) as log:
        log.write({"schema": 1, "type": "decision", "decision_id": n, "writer": "c"})
    assert len(list(read_decision_log(path))) == 2 * n + 1
    assert path.read_bytes().endswith(b"\n")


# ---- D12: DecisionLog refuses files that are not decision logs --------------------------------


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"ULSB\x00\x01\x00\x00" + bytes(range(256)) * 4, "binary data"),
        (b"\xff\xfe\x80 not utf-8 \x81", "not UTF-8 text"),
        (b"just some text without a newline", "first line is not a JSON object"),
        (
            b'{"item_id": "a1", "model": "m", "status": "ok"}\n'
            b'{"item_id": "a2", "model": "m", "status": "ok"}\n'
            b'{"item_id": "a3", "model": "m", "sta',
            r"none of its first 2 lines is a JSON object with 'decision_id'",
        ),
        (b"[1, 2, 3]\n[4, 5]", "none of its first 1 lines"),
    ],
    ids=["policy_bin", "latin1", "text", "other_jsonl", "json_arrays"],
)
def test_a_non_log_file_is_refused_and_left_intact(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "policy.bin"
    path.write_bytes(content)
    with pytest.raises(
        uniscale.StateError, match=rf"policy\.bin is not a UniScale decision log .*{why}"
    ):
        DecisionLog(path)
    assert path.read_bytes() == content  # never truncated
    policy_path = tmp_path / "p2.bin"
    policy_path.write_bytes(content)
    f = Featurizer(16)
    m = ModelSpec("m", base_url="http://unused.test/v1")
    policy = Policy(ActionSpace([m], [Action("m", "single", 1)]), f.dim)
    with pytest.raises(uniscale.StateError, match="not a UniScale decision log"):
        Router(policy, executor([m]), f, log=policy_path)
    assert policy_path.read_bytes() == content


def test_a_real_policy_file_is_refused(tmp_path: Path) -> None:
    f = Featurizer(16)
    m = ModelSpec("m", base_url="http://unused.test/v1")
    policy = Policy(ActionSpace([m], [Action("m", "single", 1)]), f.dim)
    path = tmp_path / "policy.bin"
    policy.save(path)
    before = path.read_bytes()
    with pytest.raises(uniscale.StateError, match="not a UniScale decision log"):
        DecisionLog(path)
    assert path.read_bytes() == before
    Policy.load(path)  # still loads


def test_logs_that_are_logs_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    # A legacy merged first line (an old writer died mid-line), then good records.
    path.write_bytes(
        b'{"schema":1,"type":"deci{"schema":1,"type":"decision","decision_id":1}\n'
        b'{"schema":1,"type":"decision","decision_id":2}\n'
    )
    with DecisionLog(path) as log:
        log.write({"schema": 1, "type": "feedback", "decision_id": 1})
    assert [r["type"] for r in read_decision_log(path)] == ["decision", "feedback"]
    only_partial = tmp_path / "p.jsonl"
    only_partial.write_bytes(b'{"schema":1,"type":"dec')  # a crash during the first write
    with DecisionLog(only_partial) as log:
        log.write({"schema": 1, "type": "decision", "decision_id": 5})
    assert [r["decision_id"] for r in read_decision_log(only_partial)] == [5]


def test_malformed_body_echoing_the_key_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    # D13 on the MalformedResponseError path: a usage field that echoes the key.
    monkeypatch.setenv("UNISCALE_HARDENING_KEY", KEY)
    tail = KEY[6:]  # no "sk-" prefix: only the key itself can catch it

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body_with(prompt_tokens=tail))

    failure = _keyed_failure(handler)
    assert failure.error == "MalformedResponseError"
    assert "usage.prompt_tokens is not a token count" in failure.message
    assert REDACTED in failure.message
    _assert_no_fragment(KEY, failure.message)


def test_failed_action_beyond_capacity_is_logged_and_raises_its_own_error(
    good: FakeOpenAI, tmp_path: Path
) -> None:
    # D6 on the failure path: the ExecutionError is what the caller gets, not an
    # ExpiredDecisionError from the quality-0 update, and both decisions are logged.
    good.config.fail_times = 100
    good.config.delay_s = 0.05
    policy, ex, f = router_parts(good, capacity=1)
    path = tmp_path / "d.jsonl"

    async def go() -> tuple[list[BaseException | RouterResult], Router]:
        async with ex, Router(policy, ex, f, log=path) as router:
            out = await asyncio.gather(
                *(router.complete(Q) for _ in range(2)), return_exceptions=True
            )
            return list(out), router

    results, router = run(go())
    assert all(isinstance(r, AllSamplesFailed) for r in results)
    notes = [n for r in results for n in getattr(r, "__notes__", [])]
    assert sum("its learning was skipped (ExpiredDecisionError)" in n for n in notes) == 1
    assert sum("recorded with quality 0" in n for n in notes) == 1
    recs = log_lines(path)
    assert len(recs) == 2 and all(r["error"]["type"] == "AllSamplesFailed" for r in recs)
    assert router.learning_skipped == 1 and router.log_failures == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def", f"Authorization: Bearer {REDACTED}"),
        ('{"api_key": "s3cr3t"}', f'{{"api_key": "{REDACTED}"}}'),
        ("bad key sk-proj-abcdefghijkl, retry", f"bad key {REDACTED}, retry"),
        ("authorization failed for user", "authorization failed for user"),
        ("x-api-key=abc123&y=1", f"x-api-key={REDACTED}&y=1"),
    ],
)
def test_redaction_patterns(text: str, expected: str) -> None:
    assert redact_message(text) == expected
