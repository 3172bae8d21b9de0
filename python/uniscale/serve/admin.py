"""Operator routes of ``uniscale serve``: health, readiness, the model list, Prometheus
metrics, ``/admin/status`` and policy snapshots (on demand and periodic)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from uniscale.router import json_safe
from uniscale.serve.http import HTTPError, ServerBase
from uniscale.serve.metrics import CONTENT_TYPE_LATEST
from uniscale.serve.state import snapshot

logger = logging.getLogger(__name__)


class AdminRoutes(ServerBase):
    """Snapshots and the health, metrics and admin routes."""

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
        if (refusal := self._refusal(request, admin=True)) is not None:
            return refusal
        self.refresh_gauges()
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def refresh_gauges(self) -> None:
        """Set the gauges read off the policy, the router and the sync (at each scrape, and
        every second in a worker of ``[server] workers``, whose gauges the other workers'
        scrapes render)."""
        m = self.metrics
        m.pending.set(self.policy.n_pending)
        m.pacing_lambda.set(self.policy.pacing_lambda)
        m.pacing_credit.set(self.policy.pacing_credit)
        m.log_failures.set(self.router.log_failures)
        if self.sync is not None:
            m.set_sync(self.sync.status())

    async def admin_status(self, request: Request) -> Response:
        """The policy's and the server's state, for operators (admin token)."""
        if (refusal := self._refusal(request, admin=True)) is not None:
            return refusal
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
            "worker": None
            if self.worker is None
            else {
                "index": self.worker.index,
                "count": self.worker.count,
                "replica": self.worker.replica(),
                "pid": os.getpid(),
            },
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
