"""Test fixtures for ``uniscale serve``: a real fake upstream and the server on loopback.

`Upstream` is an OpenAI-compatible HTTP server (standard library, a thread, 127.0.0.1, port 0)
whose behaviour is set per call through `Upstream.mode`: ``ok``, ``500``, ``garbage``
(truncated JSON), ``hang`` (answers after ``hang_s``), ``disconnect`` (headers, half a body,
then the socket closes), ``stream_disconnect`` (a streamed answer cut off after two chunks). It
streams (server-sent events) when asked, returns logprobs when asked, and echoes the request's
``Authorization`` header into its error bodies (to prove the proxy redacts it).

`running_server` runs a `uniscale.serve.app.Server` under uvicorn in a thread with its own
event loop on an ephemeral port and stops it on exit (the lifespan shutdown runs: snapshot,
log closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fake_openai import JsonHandler, LoopbackServer

from uniscale.serve.config import ServeConfig, parse_config

MSGS = [{"role": "user", "content": "What is 6 x 7?"}]


def post(base: str, model: str = "uniscale", **kw: object) -> httpx.Response:
    """POST the chat completion of `MSGS` for ``model`` (plus the body fields ``kw``) to the
    server at ``base``."""
    body = {"model": model, "messages": MSGS, **kw}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30)


class _UpstreamHandler(JsonHandler):
    def do_GET(self) -> None:
        self._send(200, {"status": "ok"})

    def do_POST(self) -> None:
        up: Upstream = self.server.owner
        body = json.loads(self._read_body() or b"{}")
        with up.lock:
            up.received.append(body)
            mode = up.script.pop(0) if up.script else up.mode
        try:
            up._handle(self, mode, body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@dataclass
class Upstream(LoopbackServer):
    handler = _UpstreamHandler
    answers: list[str] = field(default_factory=lambda: ["The answer is 42"])
    mode: str = "ok"
    #: modes for the next requests, consumed first (then ``mode``)
    script: list[str] = field(default_factory=list)
    hang_s: float = 5.0
    delay_s: float = 0.0
    prompt_tokens: int = 7
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0

    def texts(self, n: int) -> list[str]:
        with self.lock:
            out = [self.answers[(self._next + i) % len(self.answers)] for i in range(n)]
            self._next += n
        return out

    def _handle(self, h: Any, mode: str, body: dict[str, Any]) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if mode == "500":
            auth = h.headers.get("Authorization", "")
            h._send(500, {"error": {"message": f"upstream broke; you sent {auth!r}"}})
            return
        if mode == "garbage":
            h._send_raw(200, b'{"id": "x", "choices": [{"index": 0, "mess')
            return
        if mode == "hang":
            time.sleep(self.hang_s)
        if mode == "disconnect":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "5000")
            h.end_headers()
            h.wfile.write(b'{"id": "x", "choices": [')
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        n = int(body.get("n") or 1)
        texts = self.texts(n)
        want_lp = bool(body.get("logprobs"))
        if body.get("stream"):
            self._stream(h, texts[0], want_lp, cut=mode == "stream_disconnect")
            return
        choices = []
        for i, t in enumerate(texts):
            c: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": t},
                "finish_reason": "stop",
            }
            if want_lp:
                c["logprobs"] = {"content": [{"token": w, "logprob": -0.1} for w in t.split()]}
            choices.append(c)
        completion = sum(len(t.split()) for t in texts)
        h._send(
            200,
            {
                "id": "up",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": choices,
                "usage": {
                    "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": self.prompt_tokens + completion,
                },
            },
        )

    def _stream(self, h: Any, text: str, want_lp: bool, cut: bool) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        words = text.split(" ")
        for i, w in enumerate(words):
            piece = w if i == len(words) - 1 else w + " "
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {"content": piece},
                "finish_reason": None,
            }
            if want_lp:
                choice["logprobs"] = {"content": [{"token": w, "logprob": -0.1}]}
            h.wfile.write(b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n")
            h.wfile.flush()
            if cut and i == 1:
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            time.sleep(0.01)
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {
            "choices": [],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": self.prompt_tokens + len(words),
            },
        }
        for obj in (end, usage):
            h.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()


def config(
    models: dict[str, str],
    *,
    tmp: Path | None = None,
    server: str = "",
    policy: str = "",
    executor: str = "timeout_s = 5\ndeadline_s = 10\nretries = 0\n",
    extra_models: str = "",
    prices: dict[str, tuple[float, float]] | None = None,
) -> ServeConfig:
    """A configuration for ``models`` (name -> base_url) with state under ``tmp``."""
    lines = ["[server]", 'host = "127.0.0.1"', "port = 0", server, "[policy]", "dim = 16", policy]
    lines += ["[executor]", executor]
    if tmp is not None:
        lines += [
            "[state]",
            f'policy_path = "{tmp / "policy.bin"}"',
            f'decision_log = "{tmp / "decisions.jsonl"}"',
        ]
    for i, (name, url) in enumerate(models.items()):
        pin, pout = (prices or {}).get(name, (0.1 * (i + 1), 0.2 * (i + 1)))
        lines += [
            "[[models]]",
            f'name = "{name}"',
            f'base_url = "{url}"',
            f"price_in_per_mtok = {pin}",
            f"price_out_per_mtok = {pout}",
            "parallelism = 4",
            extra_models,
        ]
    return parse_config("\n".join(lines) + "\n", "<test>")


@dataclass
class Running:
    base_url: str
    server: Any  # uniscale.serve.app.Server
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's event loop (to touch its objects safely)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextlib.contextmanager
def running_server(
    cfg: ServeConfig, *, transport: httpx.AsyncBaseTransport | None = None, worker: Any = None
) -> Iterator[Running]:
    import uvicorn

    from uniscale.serve.app import Server

    server = Server(cfg, transport=transport, worker=worker)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(
        uvicorn.Config(server.app(), log_level="warning", lifespan="on", access_log=False)
    )
    loop = asyncio.new_event_loop()
    errors: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(uv.serve(sockets=[sock]))
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if errors or not thread.is_alive():
            raise RuntimeError(f"the server did not start: {errors}")
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not start within 20 s")
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", server, loop)
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()
        loop.close()
    if errors:
        raise errors[0]


@contextlib.contextmanager
def serving(
    models: Sequence[str] = ("small", "large"),
    *,
    answers: list[str] | None = None,
    **config_kw: Any,
) -> Iterator[tuple[Upstream, Running]]:
    """One `Upstream` (answering ``answers``, else its default) behind every model of
    ``models``, and the server in front of it configured by `config` with ``config_kw``."""
    with Upstream(**({} if answers is None else {"answers": answers})) as up:
        with running_server(config({m: up.base_url for m in models}, **config_kw)) as run:
            yield up, run


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_serve(cfg_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    """A real ``uniscale serve --config cfg_path`` process, once it listens: the process, its
    base URL and the policy source(s) its listening line names (``fresh``, a path, or one per
    worker joined by ", "). The line must also name the workers when there are several."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uniscale.cli", "serve", "--config", str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"listening on (http://127\.0\.0\.1:\d+) \(policy from (.*?), mode ", line)
    if m is None:
        proc.kill()
        raise AssertionError(
            f"no listening line: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, m.group(1), m.group(2)


def serve_toml(base_url: str, *, server: str = "", extra: str = "") -> str:
    """The configuration file of the real-process tests: two models behind ``base_url``, state
    and log under ``state/`` beside the file; ``server`` adds [server] keys, ``extra`` tables."""
    return (
        f"[server]\nhost = '127.0.0.1'\nport = 0\n{server}[policy]\ndim = 16\n"
        "[executor]\ntimeout_s = 5\ndeadline_s = 10\nretries = 0\n"
        "[state]\npolicy_path = 'state/policy.bin'\ndecision_log = 'state/log.jsonl'\n"
        f"{extra}"
        f"[[models]]\nname = 'small'\nbase_url = '{base_url}'\n"
        f"[[models]]\nname = 'large'\nbase_url = '{base_url}'\nprice_out_per_mtok = 5\n"
    )
