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
import logging
import math
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from uniscale._core import ConfigError
from uniscale.decision_log import last_decision_id
from uniscale.execute import Executor
from uniscale.policy import PRESETS
from uniscale.router import (
    ConfidenceFeedback,
    DecisionLog,
    DeferredFeedback,
    FeedbackSource,
    Router,
)

# The routes live in admin, chat, chat_parse, feedback and http (names re-exported here).
from uniscale.serve.admin import AdminRoutes
from uniscale.serve.chat import _GROUND_TRUTH as _GROUND_TRUTH
from uniscale.serve.chat import _ISSUED_MAX as _ISSUED_MAX
from uniscale.serve.chat import _MAX_CANDIDATES_IN_HEADER as _MAX_CANDIDATES_IN_HEADER
from uniscale.serve.chat import ChatRoutes
from uniscale.serve.chat import _finish_reason as _finish_reason
from uniscale.serve.chat import _is_timeout as _is_timeout
from uniscale.serve.chat import _usage as _usage
from uniscale.serve.chat_parse import _HEADER_KNOBS as _HEADER_KNOBS
from uniscale.serve.chat_parse import _KNOBS as _KNOBS
from uniscale.serve.chat_parse import _ROLES as _ROLES
from uniscale.serve.chat_parse import _UNSUPPORTED as _UNSUPPORTED
from uniscale.serve.chat_parse import _ChatRequest as _ChatRequest
from uniscale.serve.chat_parse import _messages as _messages
from uniscale.serve.config import ServeConfig, make_featurizer
from uniscale.serve.feedback import FeedbackRoutes
from uniscale.serve.hooks import ServedPolicy, StreamTap, upstream_transport
from uniscale.serve.http import HTTPError as HTTPError
from uniscale.serve.http import _env_token
from uniscale.serve.metrics import Metrics
from uniscale.serve.state import load_policy
from uniscale.serve.workers import WorkerInfo
from uniscale.space import ActionSpace

if TYPE_CHECKING:
    from uniscale.sync import RedisSync

logger = logging.getLogger(__name__)
#: how often a worker of ``[server] workers`` refreshes its gauges for the aggregated /metrics
GAUGE_REFRESH_S = 1.0


class Server(ChatRoutes, FeedbackRoutes, AdminRoutes):
    """Everything one ``uniscale serve`` process holds. ``transport`` replaces the HTTP
    transport to the upstreams (the demo plays its table through an in-process one).

    The routes live in mixins by responsibility: `ChatRoutes` (chat completions),
    `FeedbackRoutes` (``/v1/feedback``) and `AdminRoutes` (health, metrics, admin, snapshots);
    this class builds the state they share, configures the policy and runs the lifecycle."""

    def __init__(
        self,
        cfg: ServeConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        worker: WorkerInfo | None = None,
    ):
        self.cfg = cfg
        self.worker = worker
        self.metrics = Metrics()
        self.client_token = _env_token(cfg.server.client_token_env, "client bearer token")
        self.admin_token = _env_token(cfg.server.admin_token_env, "admin bearer token")
        self.featurizer = make_featurizer(cfg.policy)
        grid = cfg.actions()
        self.policy, self.policy_source = load_policy(
            cfg.state.policy_path, self._fresh_policy, cfg.models, grid, cfg.policy.dim
        )
        self._configure_policy()
        self._continue_decision_ids(worker)

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
        self._gauge_task: asyncio.Task[None] | None = None
        self._snapshot_lock = asyncio.Lock()
        self._closed = False
        self.sync: RedisSync | None = self._make_sync()
        names = [str(a) for a in self.policy.actions]
        self._action_names = names
        self._model_names = {m.name for m in cfg.models}
        logger.info("uniscale serve: policy from %s, %d actions", self.policy_source, len(names))

    def _continue_decision_ids(self, worker: WorkerInfo | None) -> None:
        """Decision ids are never issued twice: past those the decision log already holds (a
        crash loses what happened since the last snapshot, not the log), and, in a worker of
        ``[server] workers``, inside its range (an id names the worker that made it)."""
        log = self.cfg.state.decision_log
        if log is not None:
            last = last_decision_id(log, log.with_name(log.name + ".1"))
            if last is not None and last >= self.policy.next_decision_id:
                logger.warning(
                    "decision log %s holds decisions up to id %d, past the policy snapshot's; "
                    "new ids continue after them",
                    log,
                    last,
                )
                self.policy.advance_decision_ids(last + 1)
        if worker is not None:
            nxt = self.policy.advance_decision_ids(worker.first_id)
            if worker.owner(nxt) != worker.index:
                raise ConfigError(
                    f"worker {worker.index}: the policy from {self.policy_source} has issued "
                    f"decision ids up to {nxt - 1}, past this worker's range"
                )

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

    # -- lifecycle ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.cfg.state.policy_path is not None:
            self._snapshot_task = asyncio.create_task(self._snapshot_loop())
        if self.sync is not None:
            self.sync.start()
        if self.worker is not None:
            self._gauge_task = asyncio.create_task(self._gauge_loop())
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
        for task in (self._snapshot_task, self._gauge_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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

    async def _gauge_loop(self) -> None:
        """A worker's gauges, kept fresh for the scrapes the other workers answer."""
        while True:
            try:
                self.refresh_gauges()
            except Exception:  # a gauge must never take the worker down
                logger.exception("refreshing the metrics gauges failed")
            await asyncio.sleep(GAUGE_REFRESH_S)

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
