"""How the server sees inside ``Router.complete`` without changing the Router.

The Router runs featurize -> ``policy.select`` -> ``executor.run`` -> learn -> log in one call.
The server needs two things from the middle of that call: the `Decision` (for the response
headers of a streamed answer, which go out before the answer is complete, and for shadow mode
and per-request presets), and the upstream's token stream (to stream single-sample answers).

Both come from a per-request `RequestSlot` in a context variable: `ServedPolicy` (a `Policy`
whose ``select`` reads and fills the slot) and `StreamTap` (an ``httpx`` transport wrapped
around the executor's, which turns the single request of a single-sample action into a
streamed one, forwards its text deltas to the slot's queue and hands the executor the
assembled, ordinary JSON response). Context variables follow the request into the executor's
tasks, so concurrent requests never see each other's slot.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from numpy.typing import ArrayLike

from uniscale._core import ConfigError, Decision
from uniscale.policy import Policy

logger = logging.getLogger(__name__)


@dataclass
class RequestSlot:
    """What one request asks of, and learns from, the middle of ``Router.complete``."""

    preset: str | None = None
    #: shadow mode: the action the policy serves instead of its own choice (an index)
    serve_index: int | None = None
    stream: bool = False
    decision: Decision | None = None
    shadow: Decision | None = None
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    #: text deltas of a streamed single-sample answer; ``None`` ends the stream
    deltas: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    stream_claimed: bool = False
    streamed: list[str] = field(default_factory=list)


CURRENT: contextvars.ContextVar[RequestSlot | None] = contextvars.ContextVar(
    "uniscale_serve_slot", default=None
)


class ServedPolicy(Policy):
    """A `Policy` whose ``select`` honours the current request's slot: a per-request reward
    preset (swapped in for this one selection; the event loop runs one ``select`` at a time),
    shadow mode (the policy's own choice is recorded in ``slot.shadow`` and the baseline is
    selected and served), and the decision is published to ``slot.decision``."""

    __slots__ = ()

    def _choose(
        self, core_select: Callable[[ArrayLike | None], Decision], mask: ArrayLike | None
    ) -> Decision:
        slot = CURRENT.get()
        if slot is None:
            return core_select(mask)
        old = self.reward_weights if slot.preset is not None else None
        try:
            if slot.preset is not None:
                self.set_reward(slot.preset)
            if slot.serve_index is not None:
                slot.shadow = core_select(mask)
                only = np.zeros(self.n_actions, dtype=bool)
                only[slot.serve_index] = True
                mask = only
            d = core_select(mask)
        finally:
            if old is not None:
                self.set_reward(old)
        slot.decision = d
        slot.decided.set()
        return d


class StreamTap(httpx.AsyncBaseTransport):
    """Wraps the executor's transport. For a request whose slot asks for streaming and whose
    decision is a single-sample action, the first chat request is sent with ``stream: true``;
    its text deltas go to ``slot.deltas`` as they arrive and the executor receives the
    assembled non-streaming JSON (content, finish reason, logprobs, usage). Everything else
    passes through untouched. An upstream that answers a streamed request with plain JSON is
    passed through as well (the server then sends the answer as one chunk)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        slot = CURRENT.get()
        d = slot.decision if slot is not None else None
        if (
            slot is None
            or d is None
            or not slot.stream
            or slot.stream_claimed
            or d.strategy != "single"
            or d.n != 1
            or not request.url.path.endswith("/chat/completions")
        ):
            return await self.inner.handle_async_request(request)
        slot.stream_claimed = True
        try:
            payload = json.loads(request.content)
        except ValueError:
            return await self.inner.handle_async_request(request)
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
        body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        streamed = httpx.Request(
            request.method,
            request.url,
            headers=headers,
            content=body,
            extensions=request.extensions,
        )
        resp = await self.inner.handle_async_request(streamed)
        ctype = resp.headers.get("content-type", "")
        if resp.status_code != 200 or "text/event-stream" not in ctype:
            return resp
        try:
            assembled = await _assemble(_lines(resp), slot)
        except (ValueError, TypeError, AttributeError, RecursionError):
            # An unusable stream: hand the executor an unusable body, which it records as a
            # MalformedResponseError (never a bare Python error out of the HTTP client).
            return httpx.Response(200, content=b"<malformed upstream stream>", request=request)
        finally:
            await resp.aclose()
        return httpx.Response(200, json=assembled, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _lines(resp: httpx.Response) -> AsyncIterator[bytes]:
    buf = b""
    stream = resp.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    async for chunk in stream:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.rstrip(b"\r")
    if buf:
        yield buf


async def _assemble(lines: AsyncIterator[bytes], slot: RequestSlot) -> dict[str, Any]:
    """Read an OpenAI server-sent-event stream; forward content deltas; return the
    non-streaming body the executor expects."""
    text: list[str] = []
    logprobs: list[Any] = []
    finish: str | None = None
    usage: Any = None
    model: Any = None
    done = False
    async for raw in lines:
        if not raw.startswith(b"data:"):
            continue
        data = raw[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        chunk = json.loads(data)  # a ValueError is the executor's MalformedResponseError
        if not isinstance(chunk, dict):
            raise ValueError("a stream chunk is not an object")
        model = chunk.get("model", model)
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(piece, str) and piece:
                text.append(piece)
                slot.streamed.append(piece)
                slot.deltas.put_nowait(piece)
            lp = choice.get("logprobs")
            if isinstance(lp, dict) and isinstance(lp.get("content"), list):
                logprobs.extend(lp["content"])
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    if not done and finish is None:
        raise httpx.RemoteProtocolError("the upstream stream ended without [DONE]")
    out: dict[str, Any] = {
        "id": f"stream-{time.time_ns()}",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(text)},
                "finish_reason": finish,
                "logprobs": {"content": logprobs} if logprobs else None,
            }
        ],
    }
    if isinstance(usage, dict):
        out["usage"] = usage
    return out


def upstream_transport(kind: str, max_connections: int) -> httpx.AsyncBaseTransport:
    """The connection layer under the executor's httpx client (``[server] upstream_http``).

    ``aiohttp`` is httpx-aiohttp's transport: httpx's client API (timeouts, errors, streaming
    as the executor uses them) over aiohttp's C HTTP parser and connection pool, which
    `benches/bench_serve.py` measured at 20-60% more proxied requests/s than httpcore at 16
    and 64 clients on this project's 2-core machine, with the same fault-test behaviour.
    ``httpx`` is httpx's own transport (httpcore), sharded over 8 pools. ``auto`` takes
    aiohttp when `httpx_aiohttp` is installed (the ``serve`` extra installs it), else httpx."""
    if kind not in ("auto", "aiohttp", "httpx"):
        raise ConfigError(f"upstream_http must be auto, aiohttp or httpx, got {kind!r}")
    if kind != "httpx":
        try:
            from httpx_aiohttp import AiohttpTransport
        except ImportError:
            if kind == "aiohttp":
                raise ConfigError(
                    "[server] upstream_http = 'aiohttp' needs the httpx-aiohttp package: "
                    "pip install 'uniscale[serve]'"
                ) from None
        else:
            limits = httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
            # trust_env=False: like httpx with an explicit transport, no proxy from the
            # environment (upstreams are reached directly, as with the httpx layer)
            return AiohttpTransport(limits=limits, trust_env=False)
    return ShardedTransport(8, max_connections)


class ShardedTransport(httpx.AsyncBaseTransport):
    """``shards`` independent connection pools, used in turn. httpcore's pool assigns queued
    requests to connections by scanning all of them for every request, so its cost grows with
    (requests in flight) x (connections); with the same connections split over a few pools
    each scan is that many times shorter (a profile at 32 clients had the scan at 20% of the
    proxy's time). Keep-alive reuse works within each pool."""

    def __init__(self, shards: int, max_connections: int) -> None:
        per = max(1, -(-max_connections // shards))
        self._pools = [
            httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=per))
            for _ in range(shards)
        ]
        self._next = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pool = self._pools[self._next]
        self._next = (self._next + 1) % len(self._pools)
        return await pool.handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()
