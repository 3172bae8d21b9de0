"""Prometheus metrics of ``uniscale serve`` (``GET /metrics``), in their own registry so that
several servers in one process (tests) never collide. Labels never hold secrets: actions,
model names, error type names and HTTP status codes only.

Under ``[server] workers = N`` (`uniscale.serve.workers`) prometheus_client runs in its
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by the parent) and every worker's
``/metrics`` renders all workers: counters and histograms summed, the gauges that count things
(in flight, pending, log failures) summed over live workers, the others one series per live
worker (label ``pid``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from uniscale.serve.workers import METRICS_DIR_ENV

if TYPE_CHECKING:
    from uniscale.sync import SyncStatus

_COST_BUCKETS = (1e-7, 1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 1.0)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LAG_BUCKETS = (0.1, 1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

# [sync] (docs/sync.md): name, help and value of each gauge set from RedisSync.status() at
# each scrape
_SYNC_GAUGES: tuple[tuple[str, str, Callable[[SyncStatus], float]], ...] = (
    (
        "uniscale_sync_last_success_timestamp_seconds",
        "Unix time of the last successful sync round (0: none yet)",
        lambda st: st.last_sync_s or 0.0,
    ),
    (
        "uniscale_sync_last_round_seconds",
        "Duration of the last successful sync round (push, pull, rebuild, swap)",
        lambda st: st.last_round_s or 0.0,
    ),
    ("uniscale_sync_rounds", "Successful sync rounds since start", lambda st: st.rounds),
    (
        "uniscale_sync_failures",
        "Failed sync rounds since start (Redis errors)",
        lambda st: st.failures,
    ),
    (
        "uniscale_sync_breaker_open",
        "1 while the Redis circuit breaker is open or half-open (learning continues locally)",
        lambda st: 0.0 if st.breaker == "closed" else 1.0,
    ),
    (
        "uniscale_sync_slots_merged",
        "Other replicas merged in the last round",
        lambda st: st.slots_merged,
    ),
    (
        "uniscale_sync_incompatible_replicas",
        "Replicas refused in the last round (another action space or configuration)",
        lambda st: len(st.incompatible),
    ),
    (
        "uniscale_sync_corrupt_slots",
        "Unreadable slots skipped in the last round",
        lambda st: st.corrupt,
    ),
    (
        "uniscale_sync_locked_rebuilds",
        "Merges rebuilt under the policy lock (local learning raced the rebuild)",
        lambda st: st.locked_rebuilds,
    ),
)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "uniscale_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.decisions = Counter(
            "uniscale_decisions",
            "Decisions by chosen action and role (served, shadow, passthrough)",
            ["action", "role"],
            registry=r,
        )
        self.pruned = Counter(
            "uniscale_pruned_actions",
            "Actions pruned per decision, by reason",
            ["reason"],
            registry=r,
        )
        self.cost = Histogram(
            "uniscale_realised_cost_usd",
            "Realised cost per request",
            ["model"],
            buckets=_COST_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "uniscale_realised_latency_seconds",
            "Realised upstream latency per request",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "uniscale_upstream_errors", "Upstream failures by error kind", ["kind"], registry=r
        )
        self.fallbacks = Counter(
            "uniscale_fallbacks", "Requests answered by the fallback action", registry=r
        )
        self.feedback = Counter(
            "uniscale_feedback", "POST /v1/feedback by result", ["result"], registry=r
        )
        self.feedback_lag = Histogram(
            "uniscale_feedback_lag_seconds",
            "Time from decision to accepted feedback",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.learner_updates = Counter(
            "uniscale_learner_updates", "Policy updates that reached the learner", registry=r
        )
        self.snapshots = Counter(
            "uniscale_snapshots", "Policy snapshots by result", ["result"], registry=r
        )
        self.inflight = Gauge(
            "uniscale_inflight",
            "Routed requests executing now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pending = Gauge(
            "uniscale_pending_decisions",
            "Decisions waiting for feedback",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pacing_lambda = Gauge(
            "uniscale_pacing_lambda",
            "Budget pacing multiplier on cost",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.pacing_credit = Gauge(
            "uniscale_pacing_credit",
            "Unspent budget kept as credit (requests' worth)",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.log_rotations = Counter(
            "uniscale_decision_log_rotations", "Decision log rotations by size", registry=r
        )
        self.log_failures = Gauge(
            "uniscale_decision_log_failures",
            "Records the decision log could not take",
            registry=r,
            multiprocess_mode="livesum",
        )

        self._sync = [
            (Gauge(name, doc, registry=r, multiprocess_mode="liveall"), value)
            for name, doc, value in _SYNC_GAUGES
        ]

    def set_sync(self, st: SyncStatus) -> None:
        for gauge, value in self._sync:
            gauge.set(value(st))

    def render(self) -> bytes:
        path = os.environ.get(METRICS_DIR_ENV)
        if not path:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        everyone = CollectorRegistry()
        MultiProcessCollector(everyone, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(everyone)
