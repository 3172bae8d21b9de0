"""Regression tests for the review findings on the Python runtime (2026-12-02): D6, D7, D10-D14.

Each test reproduces the reported failure: a decision log on a full disk or with a lone
surrogate, concurrent requests beyond the policy's pending capacity, non-finite numbers in the
log, several writer processes, a non-log file opened as a log, an API key echoed by an upstream
401, and malformed upstream bodies served over real loopback HTTP and through MockTransport.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uniscale.execute import (
    REDACTED,
    AllSamplesFailed,
    Executor,
    Failure,
    MalformedResponseError,
    UpstreamHTTPError,
    redact_message,
)
from uniscale.space import Action, ModelSpec

T = TypeVar("T")
Q = [{"role": "user", "content": "What is 2 + 2?"}]
GOOD = {
    "choices": [{"index": 0, "message": {"content": "it is 4"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3},
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


class RawServer:
    """A loopback HTTP server answering every POST with ``status`` and the raw bytes ``body``
    (no JSON encoding of its own: the point is to send what a broken upstream sends)."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status
        raw = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, b'{"status":"ok"}')

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._send(raw.status, raw.body)

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


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

    async def go() -> None:
        async with executor(
            [mspec("m", "http://m.test/v1", api_key_env="UNISCALE_HARDENING_KEY")],
            transport=httpx.MockTransport(handler),
        ) as ex:
            await ex.run(Action("m", "single", 1), Q)

    with pytest.raises(AllSamplesFailed) as ei:
        run(go())
    msg = ei.value.failures[0].message
    assert "z" * 190 + REDACTED[:10] in msg
    _assert_no_fragment(KEY, msg)


def test_network_error_text_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISCALE_HARDENING_KEY", KEY)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"proxy refused Authorization: Bearer {KEY}", request=request)

    async def go() -> None:
        async with executor(
            [mspec("m", "http://m.test/v1", api_key_env="UNISCALE_HARDENING_KEY")],
            transport=httpx.MockTransport(handler),
        ) as ex:
            await ex.run(Action("m", "single", 1), Q)

    with pytest.raises(AllSamplesFailed) as ei:
        run(go())
    (failure,) = ei.value.failures
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
