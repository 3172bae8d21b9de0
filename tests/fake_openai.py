"""A small OpenAI-compatible fake server (standard library only) for integration tests.

Serves ``POST /v1/chat/completions``, ``POST /v1/completions``, llama-server's
``POST /tokenize`` and ``GET /health`` on 127.0.0.1 (port 0: the OS picks one) from a
``ThreadingHTTPServer`` in a daemon thread. Its behaviour is set through `FakeConfig` (mutable at
any time): slow responses, failing the next N requests with a status (and ``Retry-After``),
ignoring ``n`` like ``llama_cpp.server``, llama-server-style usage (``completion_tokens`` of one
choice), logprobs on request, truncated JSON, empty content.

Texts come from ``config.answers`` in rotation (one per choice, across requests). A "token" is a
whitespace-separated word, so `FakeOpenAI.tokens` gives the true count the executor must find.

    with FakeOpenAI() as fake:
        fake.config.answers = ["it is 4"]
        ... Executor([ModelSpec("m", base_url=fake.base_url)]) ...
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, TypeVar

T = TypeVar("T")


@dataclass
class FakeConfig:
    """What the fake server does; tests change fields between (or during) calls."""

    answers: list[str] = field(default_factory=lambda: ["The answer is 4"])
    delay_s: float = 0.0
    fail_times: int = 0
    fail_status: int = 500
    retry_after: str | None = None
    ignore_n: bool = False
    llama_usage: bool = True
    logprobs: bool = True
    tokenize: bool = True
    truncate_times: int = 0
    empty_times: int = 0
    prompt_tokens: int = 11
    finish_reason: str = "stop"  # "length" plays a reply cut off by max_tokens
    logprob: Callable[[str], float] = lambda text: -0.25


@dataclass
class Received:
    """One request the server saw."""

    method: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


class JsonHandler(BaseHTTPRequestHandler):
    """What every loopback fake's handler shares: HTTP/1.1, no stderr log, JSON replies."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def _read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(obj).encode(), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Any  # the LoopbackServer whose handler answers


class LoopbackServer:
    """A ``ThreadingHTTPServer`` on 127.0.0.1 (port 0: the OS picks one) in a daemon thread,
    answered by the class attribute `handler`, which reaches this object as
    ``self.server.owner``. Use as a context manager, or `start` / `stop`."""

    handler: type[BaseHTTPRequestHandler]
    _server: _Server | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), self.handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class _Handler(JsonHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._send(400, {"error": "bad json"})
            return
        fake: FakeOpenAI = self.server.owner
        fake._enter(Received("POST", self.path, body, dict(self.headers.items())))
        try:
            self._dispatch(fake, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)
        finally:
            fake._leave()

    def _dispatch(self, fake: FakeOpenAI, body: dict[str, Any]) -> None:
        cfg = fake.config
        if self.path == "/tokenize":
            if not cfg.tokenize:
                self._send(404, {"error": "no tokenizer"})
                return
            content = str(body.get("content", ""))
            self._send(200, {"tokens": list(range(len(content.split())))})
            return
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self._send(404, {"error": "not found"})
            return
        if cfg.delay_s:
            time.sleep(cfg.delay_s)
        with fake.lock:
            fail = cfg.fail_times > 0
            if fail:
                cfg.fail_times -= 1
            truncate = not fail and cfg.truncate_times > 0
            if truncate:
                cfg.truncate_times -= 1
        if fail:
            headers = {"Retry-After": cfg.retry_after} if cfg.retry_after is not None else {}
            self._send(cfg.fail_status, {"error": {"message": "injected failure"}}, headers)
            return
        if truncate:
            self._send_raw(200, b'{"id": "x", "choices": [{"index": 0, "mess')
            return
        self._send(200, fake._completion(self.path.endswith("chat/completions"), body))


class FakeOpenAI(LoopbackServer):
    """The fake server. Use as a context manager, or `start` / `stop`."""

    handler = _Handler

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._next_answer = 0

    # -- inspection -----------------------------------------------------------------------------

    def generation_requests(self) -> list[Received]:
        """Requests to the completion endpoints (not /tokenize or /health)."""
        with self.lock:
            return [r for r in self.received if r.path.startswith("/v1/")]

    @staticmethod
    def tokens(text: str) -> int:
        """The fake's token count of ``text`` (whitespace-separated words)."""
        return len(text.split())

    # -- internals ------------------------------------------------------------------------------

    def _enter(self, rec: Received) -> None:
        with self.lock:
            self.received.append(rec)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def _completion(self, chat: bool, body: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        n = int(body.get("n", 1) or 1)
        if cfg.ignore_n:
            n = 1
        want_logprobs = bool(body.get("logprobs")) and cfg.logprobs
        choices = []
        with self.lock:
            texts = []
            for _ in range(n):
                texts.append(cfg.answers[self._next_answer % len(cfg.answers)])
                self._next_answer += 1
            empty = min(cfg.empty_times, n)
            cfg.empty_times -= empty
        for i, text in enumerate(texts):
            out = "" if i < empty else text
            c: dict[str, Any] = {"index": i, "finish_reason": self.config.finish_reason}
            if chat:
                c["message"] = {"role": "assistant", "content": out}
            else:
                c["text"] = out
            if want_logprobs:
                lp = cfg.logprob(out)
                c["logprobs"] = {"content": [{"token": t, "logprob": lp} for t in out.split()]}
            choices.append(c)
        per_choice = [self.tokens(c) for c in texts]
        completion_tokens = per_choice[-1] if cfg.llama_usage else sum(per_choice)
        return {
            "id": "fake",
            "object": "chat.completion" if chat else "text_completion",
            "model": body.get("model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": cfg.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": cfg.prompt_tokens + completion_tokens,
            },
        }


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run ``coro`` on a fresh event loop; a hung test fails after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))
