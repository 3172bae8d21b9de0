"""The ``uniscale serve`` application: an OpenAI-compatible routing proxy on Starlette.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /v1/feedback``,
``GET /metrics``, ``GET /healthz``, ``GET /readyz``. Every routed request goes through
``Router.complete`` (the one per-request loop: featurize, select, execute, learn, log); the
server adds HTTP, auth, limits, streaming, shadow mode, metrics and the policy's persistence.
See docs/serve.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import os
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from uniscale._core import (
    ConfigError,
    Decision,
    DuplicateUpdateError,
    ExpiredDecisionError,
    UniScaleError,
    UnknownDecisionError,
)
from uniscale.execute import (
    AllSamplesFailed,
    DeadlineExceeded,
    ExecutionConfigError,
    ExecutionError,
    Executor,
    Outcome,
    RequestTimeout,
)
from uniscale.extract import available_extractors
from uniscale.policy import PRESETS
from uniscale.router import (
    ConfidenceFeedback,
    DecisionLog,
    DeferredFeedback,
    FeedbackSource,
    GroundTruthFeedback,
    Router,
    RouterResult,
    json_safe,
)
from uniscale.serve.config import ServeConfig, make_featurizer
from uniscale.serve.hooks import CURRENT, RequestSlot, ServedPolicy, StreamTap, upstream_transport
from uniscale.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from uniscale.serve.state import load_policy, snapshot
from uniscale.space import Action, ActionSpace

if TYPE_CHECKING:
    from uniscale.sync import RedisSync

logger = logging.getLogger(__name__)

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
#: the feedback source of a request that brings its own ground truth (evaluation traffic)
_GROUND_TRUTH = GroundTruthFeedback()
#: Decisions remembered for the feedback-lag metric (oldest dropped first).
_ISSUED_MAX = 100_000
_MAX_CANDIDATES_IN_HEADER = 32


class HTTPError(Exception):
    """An OpenAI-style error response."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _env_token(name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name!r} ({what}) is not set or empty")
    return value


class Server:
    """Everything one ``uniscale serve`` process holds. ``transport`` replaces the HTTP
    transport to the upstreams (the demo plays its table through an in-process one)."""

    def __init__(self, cfg: ServeConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.cfg = cfg
        self.metrics = Metrics()
        self.client_token = _env_token(cfg.server.client_token_env, "client bearer token")
        self.admin_token = _env_token(cfg.server.admin_token_env, "admin bearer token")
        self.featurizer = make_featurizer(cfg.policy)
        grid = cfg.actions()
        self.policy, self.policy_source = load_policy(
            cfg.state.policy_path, self._fresh_policy, cfg.models, grid, cfg.policy.dim
        )
        self._configure_policy()
        inner = transport or upstream_transport(
            cfg.server.upstream_http, 4 * cfg.server.max_inflight + 16
        )
        ex = cfg.executor
        self.executor = Executor(
            list(cfg.models),
            timeout_s=ex.timeout_s,
            connect_timeout_s=ex.connect_timeout_s,
            deadline_s=ex.deadline_s,
            retries=ex.retries,
            backoff_s=ex.backoff_s,
            max_tokens=ex.max_tokens,
            transport=StreamTap(inner),
        )
        self.log: DecisionLog | None = None
        if cfg.state.decision_log is not None:
            cfg.state.decision_log.parent.mkdir(parents=True, exist_ok=True)
            self.log = DecisionLog(
                cfg.state.decision_log, include_features=cfg.state.include_features
            )
        feedback: FeedbackSource = (
            DeferredFeedback() if cfg.policy.feedback == "deferred" else ConfidenceFeedback()
        )
        self.router = Router(
            self.policy,
            self.executor,
            self.featurizer,
            feedback=feedback,
            log=self.log,
            fallback=ex.fallback,
        )
        self.ready = False
        self._sem = asyncio.Semaphore(cfg.server.max_inflight)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._issued: OrderedDict[int, float] = OrderedDict()
        self._snapshot_task: asyncio.Task[None] | None = None
        self._snapshot_lock = asyncio.Lock()
        self._closed = False
        self.sync: RedisSync | None = self._make_sync()
        names = [str(a) for a in self.policy.actions]
        self._action_names = names
        self._model_names = {m.name for m in cfg.models}
        logger.info("uniscale serve: policy from %s, %d actions", self.policy_source, len(names))

    # -- policy ---------------------------------------------------------------------------------

    def _fresh_policy(self) -> ServedPolicy:
        p = self.cfg.policy
        space = ActionSpace(list(self.cfg.models), self.cfg.actions())
        return ServedPolicy(
            space,
            p.dim,
            alpha=p.alpha,
            reward=p.reward,
            exploration=p.exploration,
            epsilon=p.epsilon,
            seed=p.seed,
            ttl_s=p.ttl_s,
            capacity=p.capacity,
            feature_version=self.featurizer.version,
        )

    def _configure_policy(self) -> None:
        """Apply the configuration's run-time settings to a fresh or reloaded policy, without
        restarting what the snapshot carries (the conservative account) when unchanged."""
        p, pol = self.cfg.policy, self.policy
        if pol.reward_weights != PRESETS[p.reward]:
            pol.set_reward(p.reward)
        pol.set_exploration(p.exploration, epsilon=p.epsilon)
        # keeps the pacing multiplier and credit the snapshot carries
        pol.set_budget(per_request_usd=p.budget_per_request_usd)
        status = pol.conservative_status()
        want = None
        if self.cfg.server.mode == "conservative" and p.baseline is not None:
            want = pol.actions.index(p.baseline)
        have = None if status is None else status.get("baseline")
        if want != have or (
            want is not None
            and status is not None
            and not math.isclose(float(status.get("delta", -1.0)), p.conservative_delta)
        ):
            if want is None:
                pol.set_baseline(None)
            else:
                pol.set_baseline(want, delta=p.conservative_delta)

    def _make_sync(self) -> RedisSync | None:
        """The ``[sync]`` section's Redis sync (not started: `lifespan` starts it)."""
        sc = self.cfg.sync
        if sc.redis_url is None:
            return None
        from uniscale.serve.config import ServeConfigError
        from uniscale.sync import RedisSync, SyncError

        path = self.cfg.state.policy_path
        try:
            return RedisSync(
                self.policy,
                sc.redis_url,
                sc.policy_key,
                sc.replica_id or socket.gethostname(),
                interval_s=sc.interval_s,
                every_updates=sc.every_updates,
                epoch_s=sc.epoch_s,
                epoch_decay=sc.epoch_decay,
                timeout_s=sc.timeout_s,
                failure_threshold=sc.failure_threshold,
                backoff_max_s=sc.backoff_max_s,
                cluster=sc.cluster,
                on_feedback=self._forwarded_feedback,
                # beside the snapshot: a restart after Redis lost its data must not count the
                # others' learning that the snapshot holds as this replica's own
                state_path=None if path is None else path.with_name(path.name + ".sync"),
            )
        except SyncError as exc:  # e.g. redis-py missing: a configuration problem (exit 2)
            raise ServeConfigError(f"{self.cfg.source}: [sync] {exc}") from None

    def _forwarded_feedback(self, decision_id: int, quality: float) -> None:
        """Feedback another replica received for one of this replica's decisions (applied by
        the sync thread at its next round; errors are counted there)."""
        upd = self.router.feedback(decision_id, quality)
        self.metrics.feedback.labels("forwarded").inc()
        if upd.learner_updated:
            self.metrics.learner_updates.inc()

    async def save_snapshot(self) -> bool:
        path = self.cfg.state.policy_path
        if path is None:
            return False
        async with self._snapshot_lock:
            try:
                await asyncio.to_thread(snapshot, self.policy, path)
            except Exception:
                self.metrics.snapshots.labels("error").inc()
                logger.exception("UNISCALE STATE: saving the policy snapshot %s failed", path)
                return False
        self.metrics.snapshots.labels("ok").inc()
        return True

    async def _snapshot_loop(self) -> None:
        interval = self.cfg.state.snapshot_interval_s
        while True:
            await asyncio.sleep(interval)
            await self.save_snapshot()

    # -- lifecycle ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.cfg.state.policy_path is not None:
            self._snapshot_task = asyncio.create_task(self._snapshot_loop())
        if self.sync is not None:
            self.sync.start()
        self.ready = True
        try:
            yield
        finally:
            await self.close()

    async def close(self) -> None:
        """Finish in-flight work (bounded by ``graceful_shutdown_s``), snapshot the policy,
        close the decision log and the upstream clients. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.ready = False
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshot_task
        if self._tasks:
            _, pending = await asyncio.wait(
                list(self._tasks), timeout=self.cfg.server.graceful_shutdown_s
            )
            for t in pending:
                t.cancel()
        if self.sync is not None:
            # a last push of what was learned since the previous round, off the event loop
            await asyncio.to_thread(self.sync.stop)
            await asyncio.to_thread(self.sync.close)
        await self.save_snapshot()
        if self.log is not None:
            self.log.close()
        await self.executor.aclose()

    def app(self) -> Starlette:
        routes = [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/feedback", self.feedback, methods=["POST"]),
            Route("/metrics", self.render_metrics, methods=["GET"]),
            Route("/admin/status", self.admin_status, methods=["GET"]),
            Route("/admin/snapshot", self.admin_snapshot, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]
        app = Starlette(routes=routes, lifespan=self.lifespan)
        app.state.uniscale = self
        return app

    # -- helpers --------------------------------------------------------------------------------

    def _auth(self, request: Request, admin: bool) -> None:
        token = (self.admin_token or self.client_token) if admin else self.client_token
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            what = "an admin" if admin and self.admin_token else "a valid"
            raise HTTPError(
                401,
                f"this route needs {what} bearer token (Authorization: Bearer ...)",
                "authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def _json_body(self, request: Request) -> dict[str, Any]:
        limit = self.cfg.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body over the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request body over the limit of {limit} bytes")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, RecursionError):
            raise HTTPError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "the request body must be a JSON object")
        return body

    def _count(self, route: str, status: int) -> None:
        self.metrics.requests.labels(route, str(status)).inc()

    # -- routes ---------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "policy": self.policy_source})

    async def list_models(self, request: Request) -> Response:
        try:
            self._auth(request, admin=False)
        except HTTPError as exc:
            self._count("models", exc.status)
            return exc.response()
        ids = [*self.cfg.server.route_names, *(m.name for m in self.cfg.models)]
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "uniscale"} for i in ids]
        self._count("models", 200)
        return JSONResponse({"object": "list", "data": data})

    async def render_metrics(self, request: Request) -> Response:
        try:
            self._auth(request, admin=True)
        except HTTPError as exc:
            return exc.response()
        m = self.metrics
        m.pending.set(self.policy.n_pending)
        m.pacing_lambda.set(self.policy.pacing_lambda)
        m.pacing_credit.set(self.policy.pacing_credit)
        m.log_failures.set(self.router.log_failures)
        if self.sync is not None:
            m.set_sync(self.sync.status())
        return Response(m.render(), media_type=CONTENT_TYPE_LATEST)

    async def admin_status(self, request: Request) -> Response:
        """The policy's and the server's state, for operators (admin token)."""
        try:
            self._auth(request, admin=True)
        except HTTPError as exc:
            return exc.response()
        pol = self.policy
        w = pol.reward_weights
        body = {
            "policy_source": self.policy_source,
            "mode": self.cfg.server.mode,
            "actions": self._action_names,
            "reward_weights": {"quality": w.quality, "cost": w.cost, "latency": w.latency},
            "pending_decisions": pol.n_pending,
            "pacing_lambda": pol.pacing_lambda,
            "pacing_credit": pol.pacing_credit,
            "conservative": pol.conservative_status(),
            "deferred": self.router.n_deferred,
            "learning_skipped": self.router.learning_skipped,
            "log_failures": self.router.log_failures,
            "sync": None if self.sync is None else dataclasses.asdict(self.sync.status()),
            "decision_log": None if self.log is None else str(self.log.path),
            "policy_path": None
            if self.cfg.state.policy_path is None
            else str(self.cfg.state.policy_path),
        }
        return JSONResponse(json_safe(body))

    async def admin_snapshot(self, request: Request) -> Response:
        """Snapshot the policy now (admin token); 409 without a ``[state] policy_path``."""
        try:
            self._auth(request, admin=True)
            if self.cfg.state.policy_path is None:
                raise HTTPError(409, "no [state] policy_path is configured", code="no_state_path")
        except HTTPError as exc:
            return exc.response()
        if not await self.save_snapshot():
            return HTTPError(
                500, "the snapshot failed (see the server log)", "server_error"
            ).response()
        return JSONResponse({"saved": str(self.cfg.state.policy_path)})

    async def feedback(self, request: Request) -> Response:
        try:
            self._auth(request, admin=True)
            body = await self._json_body(request)
            fields = {"decision_id", "quality"} | ({"replica"} if self.sync is not None else set())
            unknown = sorted(set(body) - fields)
            if unknown:
                raise HTTPError(
                    400, f"unknown field(s) {unknown}; expected {', '.join(sorted(fields))}"
                )
            did, quality = body.get("decision_id"), body.get("quality")
            if isinstance(did, bool) or not isinstance(did, int) or did < 0:
                raise HTTPError(
                    400, "decision_id must be a non-negative integer", param="decision_id"
                )
            if isinstance(quality, bool) or not isinstance(quality, int | float):
                raise HTTPError(400, "quality must be a number", param="quality")
            if not math.isfinite(quality):
                raise HTTPError(400, "quality must be finite", param="quality")
            replica = body.get("replica")
            if replica is not None and self.sync is not None:
                if not isinstance(replica, str):
                    raise HTTPError(400, "replica must be a string", param="replica")
                if replica != self.sync.replica_id:
                    return await self._forward_feedback(replica, did, float(quality))
            try:
                upd = self.router.feedback(did, float(quality))
            except UnknownDecisionError:
                raise HTTPError(
                    404, f"unknown decision {did}", code="unknown_decision", param="decision_id"
                ) from None
            except ExpiredDecisionError:
                raise HTTPError(
                    410,
                    f"decision {did} expired (older than the policy's ttl_s, or evicted)",
                    code="expired_decision",
                    param="decision_id",
                ) from None
            except DuplicateUpdateError:
                raise HTTPError(
                    409,
                    f"decision {did} already has its feedback",
                    code="duplicate_feedback",
                    param="decision_id",
                ) from None
            except UniScaleError as exc:
                raise HTTPError(400, str(exc), param="quality") from None
        except HTTPError as exc:
            self.metrics.feedback.labels(exc.code or str(exc.status)).inc()
            self._count("feedback", exc.status)
            return exc.response()
        issued = self._issued.pop(did, None)
        if issued is not None:
            self.metrics.feedback_lag.observe(max(0.0, time.time() - issued))
        self.metrics.feedback.labels("accepted").inc()
        if upd.learner_updated:
            self.metrics.learner_updates.inc()
        self._count("feedback", 200)
        return JSONResponse(
            {"decision_id": did, "reward": upd.reward, "learner_updated": upd.learner_updated}
        )

    async def _forward_feedback(self, replica: str, did: int, quality: float) -> Response:
        """Feedback for a decision of another replica (``x-uniscale-replica`` of its response):
        queued in that replica's Redis inbox, applied at its next sync round. 202 when queued;
        503 when Redis cannot take it (the client retries)."""
        assert self.sync is not None
        try:
            await asyncio.to_thread(self.sync.forward_feedback, replica, did, quality)
        except UniScaleError as exc:
            self._count("feedback", 400)
            return HTTPError(400, str(exc), param="replica").response()
        except Exception as exc:  # Redis unreachable or slow
            self.metrics.feedback.labels("forward_failed").inc()
            self._count("feedback", 503)
            return HTTPError(
                503,
                f"cannot forward to replica {replica!r}: {type(exc).__name__}",
                code="sync_unavailable",
            ).response()
        self.metrics.feedback.labels("forwarded_out").inc()
        self._count("feedback", 202)
        return JSONResponse({"decision_id": did, "forwarded_to": replica}, status_code=202)

    # -- chat completions -----------------------------------------------------------------------

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
