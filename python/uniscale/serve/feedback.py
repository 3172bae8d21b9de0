"""``POST /v1/feedback`` of ``uniscale serve``: validate, apply to the router, or forward to
the replica that made the decision."""

from __future__ import annotations

import asyncio
import math
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from uniscale._core import (
    DuplicateUpdateError,
    ExpiredDecisionError,
    UniScaleError,
    UnknownDecisionError,
)
from uniscale.serve.http import HTTPError, ServerBase


class FeedbackRoutes(ServerBase):
    """Feedback from clients and from other replicas (via the Redis sync)."""

    def _forwarded_feedback(self, decision_id: int, quality: float) -> None:
        """Feedback another replica received for one of this replica's decisions (applied by
        the sync thread at its next round; errors are counted there)."""
        upd = self.router.feedback(decision_id, quality)
        self.metrics.feedback.labels("forwarded").inc()
        if upd.learner_updated:
            self.metrics.learner_updates.inc()

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
            elif self.worker is not None:
                # the id names the worker that made the decision (`uniscale.serve.workers`)
                owner = self.worker.owner(did)
                if owner is not None and owner != self.worker.index:
                    return await self._forward_feedback(
                        self.worker.replica(owner), did, float(quality)
                    )
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
