"""Validation of a ``POST /v1/chat/completions`` body and its ``uniscale`` knobs (body field or
``x-uniscale-*`` headers) into a `_ChatRequest`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request

from uniscale.extract import available_extractors
from uniscale.policy import PRESETS
from uniscale.serve.http import HTTPError, ServerBase
from uniscale.space import Action

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "response_format")
_KNOBS = (
    "max_cost_usd",
    "max_latency_s",
    "deadline_s",
    "preset",
    "max_samples",
    "extractor",
    "ground_truth",
)
_HEADER_KNOBS = {
    "x-uniscale-max-cost-usd": "max_cost_usd",
    "x-uniscale-max-latency-s": "max_latency_s",
    "x-uniscale-deadline-s": "deadline_s",
    "x-uniscale-preset": "preset",
    "x-uniscale-max-samples": "max_samples",
    "x-uniscale-extractor": "extractor",
    "x-uniscale-ground-truth": "ground_truth",
}


@dataclass(frozen=True, slots=True)
class _ChatRequest:
    """A validated chat request: what `Server._route` passes to ``Router.complete``."""

    model: str
    routed: bool
    messages: list[dict[str, str]]
    stream: bool
    include_usage: bool
    max_cost_usd: float | None
    max_latency_s: float | None
    preset: str | None
    extractor: str
    ground_truth: str | None
    mask: np.ndarray[Any, np.dtype[np.bool_]]
    serve_index: int | None
    params: dict[str, Any]


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise HTTPError(400, "'messages' must be a non-empty array", param="messages")
    out: list[dict[str, str]] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise HTTPError(400, f"messages[{i}] must be an object", param="messages")
        role = m.get("role")
        if role not in _ROLES:
            raise HTTPError(
                400, f"messages[{i}].role must be one of {sorted(_ROLES)}", param="messages"
            )
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise HTTPError(
                        400,
                        f"messages[{i}]: only text content parts are supported",
                        param="messages",
                    )
                parts.append(str(part.get("text", "")))
            content = "".join(parts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise HTTPError(400, f"messages[{i}].content must be a string", param="messages")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


class ChatParsing(ServerBase):
    """Turns a request into a validated `_ChatRequest` (raises `HTTPError`)."""

    def _parse_chat(self, request: Request, body: dict[str, Any]) -> _ChatRequest:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise HTTPError(400, "'model' must be a non-empty string", param="model")
        routed = model in self.cfg.server.route_names
        if not routed and model not in self._model_names:
            known = ", ".join([*self.cfg.server.route_names, *sorted(self._model_names)])
            raise HTTPError(
                404,
                f"model {model!r} does not exist here; use one of {known}",
                param="model",
                code="model_not_found",
            )
        for key in _UNSUPPORTED:
            if body.get(key) is not None:
                raise HTTPError(400, f"'{key}' is not supported by uniscale serve", param=key)
        n = body.get("n", 1)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n != 1):
            raise HTTPError(
                400,
                "only n = 1 is supported: UniScale chooses how many samples to draw and answers "
                "with one choice (cap the samples with uniscale.max_samples)",
                param="n",
            )
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise HTTPError(400, "'stream' must be a boolean", param="stream")
        so = body.get("stream_options")
        include_usage = isinstance(so, dict) and bool(so.get("include_usage"))
        messages = _messages(body.get("messages"))
        knobs = self._knobs(request, body)
        params: dict[str, Any] = {}
        mt = body.get("max_completion_tokens", body.get("max_tokens"))
        if mt is not None:
            if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
                raise HTTPError(400, "'max_tokens' must be a positive integer", param="max_tokens")
            params["max_tokens"] = min(mt, self.cfg.executor.max_tokens)
        seed = body.get("seed")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise HTTPError(400, "'seed' must be an integer", param="seed")
            params["seed"] = seed
        stop = body.get("stop")
        if stop is not None:
            if not (
                isinstance(stop, str)
                or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
            ):
                raise HTTPError(400, "'stop' must be a string or a list of strings", param="stop")
            params["stop"] = stop
        actions = self.policy.actions
        if routed:
            cap = min(
                knobs.get("max_samples", self.cfg.server.max_samples), self.cfg.server.max_samples
            )
            mask = np.array([a.n <= cap for a in actions], dtype=bool)
            if not mask.any():
                raise HTTPError(400, f"no action draws at most {cap} samples", param="max_samples")
        else:
            # a concrete model name: exactly that model, one sample, as the client asked
            target = Action(model, "single", 1)
            if target not in actions:
                raise HTTPError(
                    400, f"model {model!r} has no single-sample action in the grid", param="model"
                )
            mask = np.array([a == target for a in actions], dtype=bool)
            for key in ("temperature", "top_p"):
                v = body.get(key)
                if v is not None:
                    if isinstance(v, bool) or not isinstance(v, int | float):
                        raise HTTPError(400, f"'{key}' must be a number", param=key)
                    params[key] = v
        if "deadline_s" in knobs:
            # a hard bound per action attempt, never above the configured one
            params["deadline_s"] = min(knobs["deadline_s"], self.cfg.executor.deadline_s)
        preset = knobs.get("preset")
        if preset is not None and self.cfg.server.mode == "conservative":
            raise HTTPError(
                400,
                "a per-request preset is not available in conservative mode (it would restart "
                "the conservative account)",
                param="preset",
            )
        serve_index = None
        if routed and self.cfg.server.mode == "shadow" and self.cfg.policy.baseline is not None:
            serve_index = actions.index(self.cfg.policy.baseline)
        return _ChatRequest(
            model=model,
            routed=routed,
            messages=messages,
            stream=stream,
            include_usage=include_usage,
            max_cost_usd=knobs.get("max_cost_usd", self.cfg.limits.max_cost_usd),
            max_latency_s=knobs.get("max_latency_s", self.cfg.limits.max_latency_s),
            preset=preset,
            extractor=knobs.get("extractor", self.cfg.policy.extractor),
            ground_truth=knobs.get("ground_truth"),
            mask=mask,
            serve_index=serve_index,
            params=params,
        )

    def _knobs(self, request: Request, body: Mapping[str, Any]) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        for header, key in _HEADER_KNOBS.items():
            v = request.headers.get(header)
            if v is not None:
                raw[key] = v
        extra = body.get("uniscale")
        if extra is not None:
            if not isinstance(extra, dict):
                raise HTTPError(400, "'uniscale' must be an object", param="uniscale")
            unknown = sorted(set(extra) - set(_KNOBS))
            if unknown:
                raise HTTPError(
                    400,
                    f"unknown uniscale field(s) {unknown}; expected {', '.join(_KNOBS)}",
                    param="uniscale",
                )
            raw.update(extra)
        out: dict[str, Any] = {}
        for key, v in raw.items():
            if key in ("max_cost_usd", "max_latency_s", "deadline_s"):
                try:
                    f = float(v) if not isinstance(v, bool) else math.nan
                except (TypeError, ValueError):
                    f = math.nan
                if not (math.isfinite(f) and f > 0):
                    raise HTTPError(400, f"{key} must be a finite number > 0, got {v!r}", param=key)
                out[key] = f
            elif key == "max_samples":
                try:
                    i = int(v) if not isinstance(v, bool | float) else 0
                except (TypeError, ValueError):
                    i = 0
                if i < 1:
                    raise HTTPError(
                        400, f"max_samples must be an integer >= 1, got {v!r}", param=key
                    )
                out[key] = i
            elif key == "preset":
                if v not in PRESETS:
                    raise HTTPError(
                        400, f"preset must be one of {', '.join(sorted(PRESETS))}", param=key
                    )
                out[key] = v
            elif key == "ground_truth":
                if not isinstance(v, str) or not v:
                    raise HTTPError(400, "ground_truth must be a non-empty string", param=key)
                out[key] = v
            elif key == "extractor":
                if v not in available_extractors():
                    raise HTTPError(
                        400,
                        f"extractor must be one of {', '.join(available_extractors())}",
                        param=key,
                    )
                out[key] = v
        return out
