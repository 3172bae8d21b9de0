"""``POST /v1/chat/completions`` of ``uniscale serve``: route through the Router, record the
decision's metrics and log, answer as JSON or as a server-sent event stream."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from uniscale._core import Decision, UniScaleError
from uniscale.execute import (
    AllSamplesFailed,
    DeadlineExceeded,
    ExecutionConfigError,
    ExecutionError,
    Outcome,
    RequestTimeout,
)
from uniscale.router import DecisionLog, GroundTruthFeedback, RouterResult
from uniscale.serve.chat_parse import ChatParsing, _ChatRequest
from uniscale.serve.hooks import CURRENT, RequestSlot
from uniscale.serve.http import HTTPError

logger = logging.getLogger(__name__)


#: the feedback source of a request that brings its own ground truth (evaluation traffic)
_GROUND_TRUTH = GroundTruthFeedback()
#: Decisions remembered for the feedback-lag metric (oldest dropped first).
_ISSUED_MAX = 100_000
_MAX_CANDIDATES_IN_HEADER = 32


class ChatRoutes(ChatParsing):
    """The chat route, its decision bookkeeping and its responses."""

    async def chat_completions(self, request: Request) -> Response:
        try:
            self._auth(request, admin=False)
            body = await self._json_body(request)
            req = self._parse_chat(request, body)
        except HTTPError as exc:
            self._count("chat", exc.status)
            return exc.response()
        if not self.ready:
            self._count("chat", 503)
            return HTTPError(503, "the server is shutting down", "server_error").response()
        slot = RequestSlot(preset=req.preset, serve_index=req.serve_index, stream=req.stream)
        task = asyncio.create_task(self._route(slot, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if req.stream:
            return await self._stream_response(slot, task, req)
        try:
            result = await asyncio.shield(task)
        except Exception as exc:
            err = self._failure(exc, slot)
            self._count("chat", err.status)
            return err.response()
        self._count("chat", 200)
        return JSONResponse(self._completion_body(result, req), headers=self._headers(slot, result))

    async def _route(self, slot: RequestSlot, req: _ChatRequest) -> RouterResult:
        CURRENT.set(slot)
        try:
            async with self._sem:
                self.metrics.inflight.inc()
                try:
                    result = await self.router.complete(
                        req.messages,
                        max_cost_usd=req.max_cost_usd,
                        max_latency_s=req.max_latency_s,
                        extractor=req.extractor,
                        mask=req.mask,
                        ground_truth=req.ground_truth,
                        feedback=None if req.ground_truth is None else _GROUND_TRUTH,
                        **req.params,
                    )
                finally:
                    self.metrics.inflight.dec()
        except BaseException as exc:
            self._record_decision(slot, req, None, exc)
            raise
        finally:
            slot.decided.set()
            slot.deltas.put_nowait(None)
        self._record_decision(slot, req, result, None)
        return result

    def _record_decision(
        self,
        slot: RequestSlot,
        req: _ChatRequest,
        result: RouterResult | None,
        exc: BaseException | None,
    ) -> None:
        m = self.metrics
        d = slot.decision
        if d is not None:
            role = "served" if req.routed else "passthrough"
            m.decisions.labels(str(d.action), role).inc()
            for reason in d.pruned.values():
                m.pruned.labels(reason.split(":", 1)[0]).inc()
            if len(self._issued) >= _ISSUED_MAX:
                self._issued.popitem(last=False)
            self._issued[d.id] = time.time()
        if slot.shadow is not None and d is not None:
            m.decisions.labels(str(slot.shadow.action), "shadow").inc()
            self._log_shadow(d, slot.shadow)
        self._maybe_rotate_log()
        if result is not None:
            o = result.outcome
            m.cost.labels(o.action.model).observe(o.total_cost_usd)
            m.latency.labels(o.action.model).observe(o.latency_s)
            for f in o.failures:
                m.upstream_errors.labels(f.error).inc()
            if o.fallback_used:
                m.fallbacks.inc()
            if result.update is not None and result.update.learner_updated:
                m.learner_updates.inc()
        elif isinstance(exc, ExecutionError):
            failures = getattr(exc, "failures", ())
            if failures:
                for f in failures:
                    m.upstream_errors.labels(f.error).inc()
            else:
                m.upstream_errors.labels(type(exc).__name__).inc()

    def _maybe_rotate_log(self) -> None:
        """Rotate the decision log by size: ``PATH`` -> ``PATH.1`` -> ``PATH.2`` ... (the
        oldest beyond ``decision_log_keep`` removed), then a fresh ``PATH``. Runs between
        requests on the event loop, so no record is split across files; the Router writes
        through its public ``log`` attribute, which is swapped here."""
        st = self.cfg.state
        log = self.log
        if log is None or st.decision_log_max_bytes is None:
            return
        try:
            if log.path.stat().st_size < st.decision_log_max_bytes:
                return
            path = log.path
            new_log: DecisionLog | None = None
            for i in range(st.decision_log_keep, 0, -1):
                src = path.with_name(f"{path.name}.{i - 1}") if i > 1 else path
                if src.exists():
                    os.replace(src, path.with_name(f"{path.name}.{i}"))
            new_log = DecisionLog(path, include_features=st.include_features)
        except OSError:
            logger.exception("decision log: rotating %s failed; writing on", log.path)
            return
        self.log = new_log
        self.router.log = new_log
        log.close()
        self.metrics.log_rotations.inc()

    def _log_shadow(self, served: Decision, shadow: Decision) -> None:
        if self.log is None:
            return
        uids = self.policy.action_uids
        sd = shadow.to_dict()
        record = {
            "schema": 1,
            "type": "shadow",
            "time_s": time.time(),
            "decision_id": served.id,
            "shadow": sd,
            "candidate_uids": [uids[i] if 0 <= i < len(uids) else None for i in sd["candidates"]],
        }
        try:
            self.log.write(record)
        except Exception:
            logger.exception("decision log: could not write the shadow record of %d", served.id)

    def _failure(self, exc: BaseException, slot: RequestSlot) -> HTTPError:
        headers = self._headers(slot, None)
        if isinstance(exc, ExecutionConfigError):
            return HTTPError(
                502, f"upstream configuration: {exc}", "upstream_error", headers=headers
            )
        if isinstance(exc, ExecutionError):
            why = str(exc)
            failures = getattr(exc, "failures", ())
            if failures:  # Failure messages are redacted by the executor (no keys)
                why += ": " + "; ".join(f"{f.model}: {f.error}: {f.message}" for f in failures[:3])
            if _is_timeout(exc):
                return HTTPError(
                    504, f"upstream timed out: {why}", "upstream_timeout", headers=headers
                )
            return HTTPError(502, f"upstream failed: {why}", "upstream_error", headers=headers)
        if isinstance(exc, UniScaleError):
            return HTTPError(400, str(exc), headers=headers)
        logger.error("internal error while routing a request", exc_info=exc)
        return HTTPError(
            500, "internal error (see the server log)", "server_error", headers=headers
        )

    def _headers(self, slot: RequestSlot, result: RouterResult | None) -> dict[str, str]:
        d = slot.decision
        h: dict[str, str] = {"x-uniscale-mode": self.cfg.server.mode}
        if self.sync is not None:
            # where feedback for this decision belongs ("replica" in POST /v1/feedback)
            h["x-uniscale-replica"] = self.sync.replica_id
        if d is None:
            return h
        names = self._action_names
        cands = [names[int(i)] for i in d.candidates if 0 <= int(i) < len(names)]
        shown = cands[:_MAX_CANDIDATES_IN_HEADER]
        h.update(
            {
                "x-uniscale-decision-id": str(d.id),
                "x-uniscale-action": str(d.action),
                "x-uniscale-propensity": f"{d.propensity:.6g}",
                "x-uniscale-predicted-cost-usd": f"{d.cost_usd:.6g}",
                "x-uniscale-predicted-latency-s": f"{d.latency_s:.6g}",
                "x-uniscale-candidates": ",".join(shown)
                + (",..." if len(cands) > len(shown) else ""),
                "x-uniscale-candidate-count": str(len(cands)),
                "x-uniscale-explored": "1" if d.explored else "0",
                "x-uniscale-conservative": "1" if d.conservative else "0",
            }
        )
        if slot.shadow is not None:
            h["x-uniscale-shadow-action"] = str(slot.shadow.action)
            h["x-uniscale-shadow-propensity"] = f"{slot.shadow.propensity:.6g}"
        if result is not None:
            o = result.outcome
            h["x-uniscale-served-action"] = str(o.action)
            h["x-uniscale-cost-usd"] = f"{o.total_cost_usd:.6g}"
            h["x-uniscale-latency-s"] = f"{o.latency_s:.6g}"
            h["x-uniscale-samples"] = str(o.samples_used)
            h["x-uniscale-fallback"] = "1" if o.fallback_used else "0"
        return h

    def _completion_body(self, result: RouterResult, req: _ChatRequest) -> dict[str, Any]:
        o = result.outcome
        return {
            "id": f"chatcmpl-uniscale-{result.decision_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": o.action.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": o.text},
                    "finish_reason": _finish_reason(o),
                    "logprobs": None,
                }
            ],
            "usage": _usage(o),
            "system_fingerprint": None,
        }

    async def _stream_response(
        self, slot: RequestSlot, task: asyncio.Task[RouterResult], req: _ChatRequest
    ) -> Response:
        decided = asyncio.ensure_future(slot.decided.wait())
        await asyncio.wait({decided, task}, return_when=asyncio.FIRST_COMPLETED)
        decided.cancel()
        if slot.decision is None:
            # failed before any decision: a plain error response
            try:
                await asyncio.shield(task)
            except Exception as exc:
                err = self._failure(exc, slot)
                self._count("chat", err.status)
                return err.response()
        d = slot.decision
        assert d is not None
        cid = f"chatcmpl-uniscale-{d.id}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, model: str = d.model) -> bytes:
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                piece = await slot.deltas.get()
                if piece is None:
                    break
                yield chunk({"content": piece})
            try:
                result = await asyncio.shield(task)
            except Exception as exc:
                err = self._failure(exc, slot)
                self._count("chat", err.status)
                body = {"error": {"message": err.message, "type": err.kind, "code": err.status}}
                yield b"data: " + json.dumps(body).encode() + b"\n\n"
                return
            o = result.outcome
            sent = "".join(slot.streamed)
            if o.text.startswith(sent):
                rest = o.text[len(sent) :]
                if rest:
                    yield chunk({"content": rest}, model=o.action.model)
            else:
                # the stream broke and a retry or the fallback answered differently
                self._count("chat", 502)
                msg = (
                    "the upstream stream broke after part of the answer was sent; the retry's "
                    "answer differs, so it is not appended"
                )
                body = {"error": {"message": msg, "type": "upstream_error", "code": 502}}
                yield b"data: " + json.dumps(body).encode() + b"\n\n"
                return
            yield chunk({}, _finish_reason(o), model=o.action.model)
            if req.include_usage:
                obj = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": o.action.model,
                    "choices": [],
                    "usage": _usage(o),
                }
                yield b"data: " + json.dumps(obj).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            self._count("chat", 200)

        headers = self._headers(slot, None)
        headers["cache-control"] = "no-cache"
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _is_timeout(exc: ExecutionError) -> bool:
    if isinstance(exc, DeadlineExceeded | RequestTimeout):
        return True
    if isinstance(exc, AllSamplesFailed) and exc.failures:
        return all(f.error in ("RequestTimeout", "DeadlineExceeded") for f in exc.failures)
    return False


def _finish_reason(o: Outcome) -> str:
    for s in o.samples:
        if s.text == o.text and s.finish_reason in ("stop", "length"):
            return s.finish_reason
    return "stop"


def _usage(o: Outcome) -> dict[str, int]:
    return {
        "prompt_tokens": o.input_tokens,
        "completion_tokens": o.output_tokens,
        "total_tokens": o.input_tokens + o.output_tokens,
    }
