"""`Engine`: the one synchronous per-request core, decide -> (execute elsewhere) -> record.

The `Router` (live, with an async executor), the offline replay (``uniscale.lab.replay``,
answers from an outcome table) and off-policy evaluation's logging stream
(``uniscale.lab.ope``) all drive a `Policy` through this class, so the three agree on what is
learned from an outcome and on what is logged:

* ``engine.decide(x, input_tokens=..., max_cost_usd=..., ...)`` asks the policy for an action
  and returns a `Choice` (the policy's `Decision` with the request context the record needs);
* the caller runs the action and describes what happened as a `Realised` (quality, or ``None``
  to defer it; realised cost, latency, output tokens and samples used; optionally the sub-runs
  the run contains, an error, an outcome summary);
* ``engine.record(choice, realised)`` updates the policy (the reward and realised cost come
  back from the Rust update, `UpdateResult`), learns the sub-runs as side observations, keeps
  a deferred decision's realised values for ``engine.feedback(decision_id, quality)``, and
  returns the update with the typed `DecisionRecord` to log.

Failures of the update itself (a decision the policy no longer holds: expired, evicted,
already updated; a value it rejects) do not raise after the action ran: the record notes them
(``learning_skipped``) and `learning_skipped` counts them; ``strict=True`` raises instead (what
an offline replay wants).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from uniscale._core import (
    ConfigError,
    Decision,
    DuplicateUpdateError,
    ExpiredDecisionError,
    UnknownDecisionError,
)
from uniscale.featurize import features_digest
from uniscale.outcomes import SIDE_OBSERVATION_WEIGHT, sub_actions
from uniscale.policy import Policy, UpdateResult
from uniscale.records import (
    DecisionRecord,
    ErrorInfo,
    FeedbackInfo,
    FeedbackRecord,
    Limits,
    RewardComponents,
    SideObservation,
)
from uniscale.space import Action

__all__ = ["Choice", "Engine", "Realised", "SubRun", "SubRuns"]

logger = logging.getLogger(__name__)

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class Choice:
    """What `Engine.decide` chose for one request, with the context `Engine.record` needs."""

    decision: Decision
    x: F64
    input_tokens: float
    limits: Limits
    time_s: float
    request_id: str | None = None

    @property
    def id(self) -> int:
        return int(self.decision.id)

    @property
    def action(self) -> Action:
        return self.decision.action


@dataclass(frozen=True, slots=True)
class SubRun:
    """The outcome of a smaller run contained in the executed one (a prefix of its samples):
    what `Policy.observe` learns from, as a side observation."""

    quality: float
    cost_usd: float
    latency_s: float
    output_tokens: float
    samples_used: float
    input_tokens: float


class SubRuns(Protocol):
    """The sub-runs of one executed run: ``drawn`` samples were drawn in order, and
    ``result(action)`` is what ``action`` (same model, ``n <= drawn``) would have produced on
    a prefix of them, or ``None`` when that cannot be told (e.g. best-of-n without the
    scorer's verdict on the prefix)."""

    @property
    def drawn(self) -> float: ...

    def result(self, action: Action) -> SubRun | None: ...


@dataclass(frozen=True, slots=True)
class Realised:
    """What running a `Choice` produced. ``quality`` ``None`` defers the update to
    `Engine.feedback`. ``output_tokens`` and ``samples_used`` ``None`` keep them out of the cost
    model (a failed run, or one answered by a fallback action). ``sub_runs`` feeds side
    observations (when the engine has them on); ``summary`` (the executor's outcome),
    ``error`` and ``feedback`` go to the record as they are."""

    quality: float | None
    cost_usd: float
    latency_s: float
    output_tokens: float | None = None
    samples_used: float | None = None
    sub_runs: SubRuns | None = None
    summary: Mapping[str, Any] | None = None
    error: ErrorInfo | None = None
    feedback: FeedbackInfo | None = None


@dataclass(frozen=True, slots=True)
class _Pending:
    cost_usd: float
    latency_s: float
    output_tokens: float | None
    samples_used: float | None


class Engine:
    """A `Policy` behind the decide -> record loop (see the module docs).

    ``feature_version`` (a featurizer's) is checked against the policy's on every decision
    (``None``: not checked). ``keep_features`` puts the feature vector into each record (its
    SHA-256 is always there). ``side_observations`` learns the sub-runs a `Realised` carries,
    each with weight ``side_weight``. ``max_deferred`` bounds the realised values kept for
    deferred feedback (the oldest are dropped; their decisions expire in the policy too).
    ``strict`` raises a failed update instead of noting it in the record. Thread-safe.
    """

    __slots__ = (
        "_deferred",
        "_learning_skipped",
        "_lock",
        "feature_version",
        "keep_features",
        "max_deferred",
        "policy",
        "side_observations",
        "side_weight",
        "strict",
    )

    def __init__(
        self,
        policy: Policy,
        *,
        feature_version: str | None = None,
        keep_features: bool = False,
        side_observations: bool = False,
        side_weight: float = SIDE_OBSERVATION_WEIGHT,
        max_deferred: int = 65536,
        strict: bool = False,
    ) -> None:
        if not isinstance(policy, Policy):
            raise ConfigError(f"policy must be a uniscale.Policy, got {type(policy).__name__}")
        if max_deferred < 1:
            raise ConfigError(f"max_deferred must be >= 1, got {max_deferred}")
        if feature_version is not None:
            policy._check_feature_version(feature_version)
        self.policy = policy
        self.feature_version = feature_version
        self.keep_features = keep_features
        self.side_observations = side_observations
        self.side_weight = side_weight
        self.max_deferred = max_deferred
        self.strict = strict
        self._deferred: OrderedDict[int, _Pending] = OrderedDict()
        self._lock = threading.Lock()
        self._learning_skipped = 0

    # -- the loop ------------------------------------------------------------------------------

    def decide(
        self,
        x: ArrayLike,
        *,
        input_tokens: float = 0.0,
        max_cost_usd: float | None = None,
        max_latency_s: float | None = None,
        mask: ArrayLike | None = None,
        now: float | None = None,
        request_id: str | None = None,
    ) -> Choice:
        """Choose an action for features ``x`` under the limits (`Policy.select`)."""
        decision = self.policy.select(  # validates x (shape, dtype, finiteness) first
            x,
            float(input_tokens),
            max_cost_usd,
            max_latency_s,
            mask=mask,
            now=now,
            feature_version=self.feature_version,
        )
        return Choice(
            decision,
            np.asarray(x, dtype=np.float64),
            float(input_tokens),
            Limits(max_cost_usd, max_latency_s),
            time.time() if now is None else float(now),
            request_id,
        )

    def record(
        self, choice: Choice, realised: Realised, *, now: float | None = None
    ) -> tuple[UpdateResult | None, DecisionRecord]:
        """Learn from what ``choice`` produced and return the update (``None`` when deferred
        or skipped) with the decision's record."""
        did = choice.id
        upd: UpdateResult | None = None
        skipped: ErrorInfo | None = None
        side: tuple[SideObservation, ...] | None = None
        side_error: ErrorInfo | None = None
        pending = _Pending(
            realised.cost_usd, realised.latency_s, realised.output_tokens, realised.samples_used
        )
        if realised.quality is None:
            self._defer(did, pending)
        else:
            upd, skipped = self._learn(did, float(realised.quality), pending, now)
            if upd is not None and self.side_observations and realised.sub_runs is not None:
                try:
                    side = self._observe_sub_runs(choice, realised.sub_runs)
                except Exception as exc:  # the answer stands; only the extra learning is lost
                    if self.strict:
                        raise
                    logger.exception("decision %d: side observations failed", did)
                    side_error = ErrorInfo.of(exc)
        fb = realised.feedback
        if fb is not None and realised.quality is None:
            fb = replace(fb, deferred=True)
        rec = self._decision_record(
            choice,
            feedback=fb,
            outcome=realised.summary,
            error=realised.error,
            quality=realised.quality,
            reward=None if upd is None else upd.reward,
            reward_components=self._components(realised.quality, upd),
            learning_skipped=skipped,
            side_observations=side,
            side_observations_error=side_error,
        )
        return upd, rec

    def feedback(
        self, decision_id: int, quality: float, *, now: float | None = None
    ) -> tuple[UpdateResult, FeedbackRecord]:
        """Complete a deferred decision with its quality, using the realised values stored
        when it ran. For a decision the engine holds nothing for, the policy decides: it
        raises `UnknownDecisionError`, `ExpiredDecisionError` or `DuplicateUpdateError` (or,
        for a decision still pending in the policy, updates it with predicted cost and
        latency)."""
        with self._lock:
            pending = self._deferred.get(decision_id)
        try:
            if pending is None:
                upd = self.policy.update(decision_id, quality, now=now)
            else:
                upd = self._update(decision_id, quality, pending, now)
        except (UnknownDecisionError, ExpiredDecisionError, DuplicateUpdateError):
            self._forget(decision_id)  # nothing left to complete
            raise
        # (another error, e.g. a non-finite quality, keeps the values for a corrected retry)
        self._forget(decision_id)
        rec = FeedbackRecord(
            decision_id=decision_id,
            time_s=time.time() if now is None else float(now),
            quality=quality,
            reward=upd.reward,
            reward_components=self._components(quality, upd),
        )
        return upd, rec

    # -- state ---------------------------------------------------------------------------------

    @property
    def n_deferred(self) -> int:
        """Decisions waiting for `feedback`."""
        with self._lock:
            return len(self._deferred)

    def deferred_ids(self) -> list[int]:
        """Ids of the decisions waiting for `feedback`, oldest first."""
        with self._lock:
            return list(self._deferred)

    @property
    def learning_skipped(self) -> int:
        """Decisions whose update the policy refused (see the module docs)."""
        with self._lock:
            return self._learning_skipped

    # -- internals -----------------------------------------------------------------------------

    def _learn(
        self, did: int, quality: float, p: _Pending, now: float | None
    ) -> tuple[UpdateResult | None, ErrorInfo | None]:
        err: Exception
        try:
            return self._update(did, quality, p, now), None
        except (UnknownDecisionError, ExpiredDecisionError, DuplicateUpdateError) as exc:
            if self.strict:
                raise
            logger.warning("decision %d: learning skipped (%s)", did, exc)
            err = exc
        except Exception as exc:
            if self.strict:
                raise
            logger.exception("decision %d: the policy update failed; learning skipped", did)
            err = exc
        with self._lock:
            self._learning_skipped += 1
        return None, ErrorInfo.of(err)

    def _update(self, did: int, quality: float, p: _Pending, now: float | None) -> UpdateResult:
        return self.policy.update(
            did,
            quality,
            cost_usd=p.cost_usd,
            latency_s=p.latency_s,
            output_tokens=p.output_tokens,
            samples_used=p.samples_used,
            now=now,
        )

    def _observe_sub_runs(self, choice: Choice, runs: SubRuns) -> tuple[SideObservation, ...]:
        """Feeds the policy the sub-runs of the executed action (`sub_actions`, in action
        order) that ``runs`` can tell, each with weight ``side_weight``."""
        actions = self.policy.actions
        executed = choice.action
        done: list[SideObservation] = []
        for j in sub_actions(executed, runs.drawn, actions):
            a = actions[j]
            r = runs.result(a)
            if r is None:
                continue
            self.policy.observe(
                choice.x,
                j,
                r.quality,
                input_tokens=r.input_tokens,
                cost_usd=r.cost_usd,
                latency_s=r.latency_s,
                output_tokens=r.output_tokens,
                samples_used=r.samples_used,
                weight=self.side_weight,
            )
            done.append(SideObservation(str(a), r.quality, r.samples_used))
        return tuple(done)

    def _forget(self, did: int) -> None:
        with self._lock:
            self._deferred.pop(did, None)

    def _defer(self, did: int, p: _Pending) -> None:
        with self._lock:
            self._deferred[did] = p
            while len(self._deferred) > self.max_deferred:
                old, _ = self._deferred.popitem(last=False)
                logger.warning("dropping deferred decision %d (max_deferred reached)", old)

    def _components(
        self, quality: float | None, upd: UpdateResult | None
    ) -> RewardComponents | None:
        if upd is None or quality is None:
            return None
        return RewardComponents(
            quality=float(quality),
            cost_usd=upd.cost_usd,
            latency_s=upd.latency_s,
            weights=self.policy.reward_weights,
            cost_scale=self.policy.cost_scale,
            latency_scale=self.policy.latency_scale,
            learner_updated=upd.learner_updated,
        )

    def _decision_record(self, choice: Choice, **outcome: Any) -> DecisionRecord:
        d = choice.decision.to_dict()
        cands = tuple(int(i) for i in d.pop("candidates"))
        uids = self.policy.action_uids
        return DecisionRecord(
            decision_id=int(d.pop("id")),
            time_s=choice.time_s,
            action=Action(d.pop("model"), d.pop("strategy"), int(d.pop("n"))),
            action_index=int(d.pop("index")),
            action_uid=int(d.pop("action_uid")),
            propensity=float(d.pop("propensity")),
            candidates=cands,
            probabilities=tuple(float(p) for p in d.pop("probabilities")),
            candidate_uids=tuple(uids[i] if 0 <= i < len(uids) else None for i in cands),
            input_tokens=float(d.pop("input_tokens")),
            details=d,
            request_id=choice.request_id,
            feature_version=self.feature_version,
            x_sha256=features_digest(choice.x),
            x=tuple(choice.x.tolist()) if self.keep_features else None,
            limits=choice.limits,
            **outcome,
        )

    def __repr__(self) -> str:
        return (
            f"Engine({self.policy!r}, side_observations={self.side_observations}, "
            f"strict={self.strict})"
        )
