"""``uniscale serve --demo``: the packaged real outcome table played back as an OpenAI endpoint.

`uniscale.lab.datasets.REAL_TABLE` holds, for 340 benchmark items and three small llama.cpp
models (smollm2, qwen05, qwen15), 8 sampled answers and a greedy answer each, with their token
counts and mean log probabilities. `demo_app` serves them as ``POST /v1/chat/completions``
(plain and streamed), ``GET /v1/models`` and ``GET /health``: a prompt that contains an item's
question gets that item's recorded answers (greedy at temperature 0, else the samples in turn,
starting at ``seed``); any other prompt is mapped to an item by a hash of its text. So the
demo works on a fresh machine with no model, no network and no key, and what the policy learns
is what these models really answered. ``delay_scale`` plays back that fraction of the recorded
latency (0: instant).

This module reads the lab's data files (``uniscale[lab]`` is needed for the demo only).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from uniscale.lab.collect import latest_ok, load_items, read_records
from uniscale.lab.datasets import DEFAULT_PRICES, ITEMS, REAL_TABLE
from uniscale.serve.config import ServeConfig, parse_config

DEMO_MODELS = ("smollm2", "qwen05", "qwen15")
#: the demo's upstream lives inside the server process (an in-process transport), at this URL
DEMO_BASE_URL = "http://uniscale-demo.invalid/v1"


@dataclass(frozen=True, slots=True)
class _Answer:
    text: str
    output_tokens: int
    mean_logprob: float | None
    finish_reason: str
    latency_s: float


@dataclass(frozen=True, slots=True)
class _Entry:
    input_tokens: int
    greedy: _Answer
    samples: tuple[_Answer, ...]


def _answer(raw: dict[str, Any]) -> _Answer:
    return _Answer(
        text=str(raw.get("text") or "") or " ",
        output_tokens=max(1, int(raw.get("output_tokens") or 1)),
        mean_logprob=raw.get("mean_logprob"),
        finish_reason=str(raw.get("finish_reason") or "stop"),
        latency_s=float(raw.get("latency_s") or 0.0),
    )


class DemoTable:
    """The recorded answers by (model, item) and the items' questions."""

    def __init__(self, table: Path = REAL_TABLE, items: Path = ITEMS) -> None:
        self.items = load_items(items)
        self.questions = [(it.question, it.id) for it in self.items]
        self.entries: dict[tuple[str, str], _Entry] = {}
        for (item_id, model), raw in latest_ok(read_records(table)).items():
            samples = tuple(_answer(s) for s in raw.get("samples") or [])
            greedy = raw.get("greedy")
            if not samples:
                continue
            self.entries[(model, item_id)] = _Entry(
                int(raw.get("input_tokens") or 1),
                _answer(greedy) if isinstance(greedy, dict) else samples[0],
                samples,
            )
        self.models = sorted({m for m, _ in self.entries})
        self._by_prompt: dict[str, str] = {}

    def item_for(self, prompt: str) -> str:
        hit = self._by_prompt.get(prompt)
        if hit is not None:
            return hit
        found = next((iid for q, iid in self.questions if q and q in prompt), None)
        if found is None:
            h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
            found = self.items[h % len(self.items)].id
        if len(self._by_prompt) < 100_000:
            self._by_prompt[prompt] = found
        return found


def demo_app(table: DemoTable | None = None, *, delay_scale: float = 0.0) -> Starlette:
    """The fake endpoint (see the module docs)."""
    tab = table or DemoTable()
    counter = [0]

    async def chat(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            model = body["model"]
            messages = body["messages"]
            prompt = "\n".join(str(m.get("content", "")) for m in messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse({"error": {"message": "bad request"}}, status_code=400)
        item = tab.item_for(prompt)
        entry = tab.entries.get((model, item))
        if entry is None:
            return JSONResponse(
                {"error": {"message": f"model {model!r} unknown; try {tab.models}"}},
                status_code=404,
            )
        n = int(body.get("n") or 1)
        temperature = float(body.get("temperature") or 0.0)
        if temperature == 0.0:
            answers = [entry.greedy] * n
        else:
            start = body.get("seed")
            if not isinstance(start, int):
                start = counter[0]
                counter[0] += n
            answers = [entry.samples[(start + i) % len(entry.samples)] for i in range(n)]
        if delay_scale > 0:
            await asyncio.sleep(delay_scale * max(a.latency_s for a in answers))
        want_lp = bool(body.get("logprobs"))
        usage = {
            "prompt_tokens": entry.input_tokens,
            "completion_tokens": sum(a.output_tokens for a in answers),
            "total_tokens": entry.input_tokens + sum(a.output_tokens for a in answers),
        }

        def logprobs(a: _Answer) -> dict[str, Any] | None:
            if not want_lp or a.mean_logprob is None:
                return None
            return {"content": [{"token": "", "logprob": a.mean_logprob}] * a.output_tokens}

        if body.get("stream"):
            return StreamingResponse(
                _stream(model, answers[0], usage, logprobs(answers[0])),
                media_type="text/event-stream",
            )
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": a.text},
                "finish_reason": a.finish_reason,
                "logprobs": logprobs(a),
            }
            for i, a in enumerate(answers)
        ]
        return JSONResponse(
            {
                "id": f"demo-{time.time_ns()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                "usage": usage,
            }
        )

    async def models(request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "demo"} for m in tab.models]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


async def _stream(
    model: str, a: _Answer, usage: dict[str, int], logprobs: dict[str, Any] | None
) -> AsyncIterator[bytes]:
    words = a.text.split(" ")
    pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
    lp = (logprobs or {}).get("content") or []
    per = max(1, len(lp) // max(1, len(pieces))) if lp else 0
    for i, piece in enumerate(pieces):
        chunk_lp = lp[i * per : (i + 1) * per] if i < len(pieces) - 1 else lp[i * per :]
        choice = {
            "index": 0,
            "delta": {"content": piece},
            "finish_reason": None,
            "logprobs": {"content": chunk_lp} if lp else None,
        }
        yield _sse({"object": "chat.completion.chunk", "model": model, "choices": [choice]})
    done = {"index": 0, "delta": {}, "finish_reason": a.finish_reason}
    yield _sse({"object": "chat.completion.chunk", "model": model, "choices": [done]})
    yield _sse({"object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def demo_config(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    state_dir: Path | None = None,
    base_url: str = DEMO_BASE_URL,
) -> ServeConfig:
    """The configuration ``--demo`` serves with: the three recorded models at the prices
    replay charges them (`DEFAULT_PRICES`), single answers and self-consistency up to 8."""
    lines = [
        "[server]",
        f'host = "{host}"',
        f"port = {port}",
        "[policy]",
        'reward = "quality_priority"',
        'extractor = "answer_number"',
        "n_values = [1, 2, 4, 8]",
        "[executor]",
        "timeout_s = 30",
        "deadline_s = 60",
        'fallback = "smollm2/single/1"',
    ]
    if state_dir is not None:
        lines += [
            "[state]",
            f'policy_path = "{(state_dir / "policy.bin").as_posix()}"',
            f'decision_log = "{(state_dir / "decisions.jsonl").as_posix()}"',
        ]
    for m in DEMO_MODELS:
        pin, pout = DEFAULT_PRICES[m]
        lines += [
            "[[models]]",
            f'name = "{m}"',
            f'base_url = "{base_url}"',
            f"price_in_per_mtok = {pin}",
            f"price_out_per_mtok = {pout}",
            "parallelism = 1",
            "max_concurrency = 16",
        ]
    return parse_config("\n".join(lines) + "\n", "<demo>")
