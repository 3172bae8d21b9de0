"""`Router`: featurize -> decide -> execute -> record, with an append-only JSONL decision log.

``await router.complete(messages, ...)`` featurizes the request, asks its `Engine`
(`uniscale.engine`, the per-request core shared with replay and off-policy evaluation) for an
action under the given cost and latency limits, runs it with the `Executor`, scores the outcome
with a feedback source (`GroundTruthFeedback`, `ConfidenceFeedback`, `JudgeFeedback`,
`DeferredFeedback`) and records it through the engine, which updates the policy with the
realised cost, latency, output tokens and samples used and returns the typed
`uniscale.records.DecisionRecord`. `DecisionLog` writes one strict-ASCII JSON line per decision
(and per deferred feedback) for off-policy evaluation; `read_decision_log` reads it back.

The feedback sources, what happens on failures, and the decision log's records and locking are
described in docs/architecture.md, section "Router and decision log".
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from numpy.typing import ArrayLike

from uniscale._core import ConfigError

# the decision log and the feedback sources live in their own modules (re-exported here)
from uniscale.decision_log import (
    DecisionLog,
    encode_record,
    json_safe,
    read_decision_log,
)
from uniscale.engine import Engine, Realised, SubRun
from uniscale.exec_types import AsyncClosing
from uniscale.execute import (
    ExecutionConfigError,
    ExecutionError,
    Executor,
    Messages,
    Outcome,
    Sample,
)
from uniscale.extract import Extractor, normalize_answer
from uniscale.featurize import Featurizer
from uniscale.feedback_sources import (
    ConfidenceFeedback,
    DeferredFeedback,
    FeedbackContext,
    FeedbackSource,
    GroundTruthFeedback,
    JudgeFeedback,
)
from uniscale.outcomes import run_usage
from uniscale.policy import Policy, UpdateResult
from uniscale.records import SCHEMA_VERSION, DecisionRecord, ErrorInfo, FeedbackInfo, FeedbackRecord
from uniscale.space import Action, ModelSpec

__all__ = [
    "ConfidenceFeedback",
    "DecisionLog",
    "DeferredFeedback",
    "FeedbackContext",
    "FeedbackSource",
    "GroundTruthFeedback",
    "JudgeFeedback",
    "Router",
    "RouterResult",
    "encode_record",
    "json_safe",
    "read_decision_log",
]

logger = logging.getLogger(__name__)

#: The decision-log schema version written (`uniscale.records.SCHEMA_VERSION`).
LOG_SCHEMA = SCHEMA_VERSION

# --------------------------------------------------------------------------------------------
# Router


@dataclass(frozen=True, slots=True)
class RouterResult:
    """One routed request: the decision (``Decision.to_dict()``), the executor's outcome, the
    policy update (``None`` if deferred) and the quality it was given (``None`` if deferred)."""

    decision: dict[str, Any]
    outcome: Outcome
    update: UpdateResult | None
    quality: float | None
    learning_skipped: bool = False

    @property
    def decision_id(self) -> int:
        return int(self.decision["id"])

    @property
    def deferred(self) -> bool:
        """No update yet: the quality is to come through `Router.feedback` (not the case when
        the learning was skipped: ``learning_skipped``)."""
        return self.update is None and not self.learning_skipped

    @property
    def answer(self) -> str | None:
        return self.outcome.answer

    @property
    def text(self) -> str:
        return self.outcome.text


class Router(AsyncClosing):
    """Featurizer + Policy + Executor, learning from every request it serves.

    ``featurizer`` defaults to ``Featurizer(policy.dim)`` (hashing). Its ``dim`` must equal the
    policy's, and when the policy was built with a ``feature_version`` it must equal
    ``featurizer.version`` (checked here and on every ``select``). Every model of the policy
    must be known to the executor. ``fallback`` is an action the executor runs if the chosen one
    fails. ``log`` is a `DecisionLog` or a path (opened with default settings; the router then
    closes it in `aclose`). ``max_deferred`` bounds the realised values kept for deferred
    feedback (the oldest are dropped; their decisions expire in the policy too).

    ``side_observations``: when a voting run (self-consistency or adaptive
    consistency) is scored against a ground truth, the policy also learns (`Policy.observe`,
    with weight `uniscale.outcomes.SIDE_OBSERVATION_WEIGHT`, because a sub-run is correlated
    with the run it is part of) the smaller voting runs of the same model that its samples
    contain, in draw order: the first 2 of 8 samples are a
    self-consistency n = 2 run, whose correctness, tokens, cost and latency follow from them.
    Best-of-n sub-runs are left out (they would need the scorer's verdict on every prefix), and so
    is every other feedback source (its quality would not mean the same for a sub-run). The
    observed sub-runs are listed in the decision log record (``side_observations``).
    """

    def __init__(
        self,
        policy: Policy,
        executor: Executor,
        featurizer: Featurizer | None = None,
        *,
        feedback: FeedbackSource | None = None,
        log: DecisionLog | str | os.PathLike[str] | None = None,
        fallback: Action | None = None,
        max_deferred: int = 65536,
        side_observations: bool = False,
    ) -> None:
        if not isinstance(policy, Policy):
            raise ConfigError(f"policy must be a uniscale.Policy, got {type(policy).__name__}")
        if featurizer is None:
            featurizer = Featurizer(policy.dim)
        if featurizer.dim != policy.dim:
            raise ConfigError(
                f"featurizer dim {featurizer.dim} does not match the policy's dim {policy.dim}"
            )
        policy._check_feature_version(featurizer.version)
        missing = sorted(set(policy.models) - set(executor.models))
        if missing:
            raise ConfigError(f"the executor does not know the policy's models {missing}")
        self.policy = policy
        self.executor = executor
        self.featurizer = featurizer
        self.feedback_source: FeedbackSource = feedback or GroundTruthFeedback(
            otherwise=ConfidenceFeedback()
        )
        self.fallback = fallback
        #: The per-request core this router drives (`uniscale.engine.Engine`). Built before
        #: the log is opened: a bad setting must not leave a file behind.
        self.engine = Engine(
            policy,
            feature_version=featurizer.version,
            side_observations=side_observations,
            max_deferred=max_deferred,
        )
        self._owns_log = log is not None and not isinstance(log, DecisionLog)
        self._log: DecisionLog | None = None
        self.log = log if isinstance(log, DecisionLog) or log is None else DecisionLog(log)
        self._lock = threading.Lock()
        self._log_failures = 0

    @property
    def log(self) -> DecisionLog | None:
        """The decision log written to (``None``: none). May be swapped while serving (e.g. to
        rotate files); the records then follow the new log's ``include_features``."""
        return self._log

    @log.setter
    def log(self, log: DecisionLog | None) -> None:
        self._log = log
        self.engine.keep_features = log is not None and log.include_features

    @property
    def side_observations(self) -> bool:
        """Whether voting sub-runs are learned as side observations (see the class docs)."""
        return self.engine.side_observations

    @side_observations.setter
    def side_observations(self, on: bool) -> None:
        self.engine.side_observations = bool(on)

    @property
    def max_deferred(self) -> int:
        return self.engine.max_deferred

    # -- the request path -------------------------------------------------------------------

    async def complete(
        self,
        messages: Messages,
        *,
        max_cost_usd: float | None = None,
        max_latency_s: float | None = None,
        ground_truth: str | None = None,
        extractor: str | Extractor = "last_number",
        mask: ArrayLike | None = None,
        feedback: FeedbackSource | None = None,
        **params: Any,
    ) -> RouterResult:
        """Route one request: featurize, decide, execute, score, record (learn and log).

        ``params`` go to `Executor.run` (``temperature``, ``max_tokens``, ``seed``, ``scorer``,
        ``deadline_s`` and extra request-body fields). ``feedback`` overrides the router's
        source for this call. Raises the executor's error after recording quality 0 when the
        action fails entirely (see the module docs).
        """
        x, tokens = self.featurizer.featurize_with_tokens(messages)
        choice = self.engine.decide(
            x,
            input_tokens=float(tokens),
            max_cost_usd=max_cost_usd,
            max_latency_s=max_latency_s,
            mask=mask,
        )
        source = feedback or self.feedback_source
        info = FeedbackInfo(type(source).__name__, ground_truth is not None)
        t0 = time.monotonic()
        try:
            outcome = await self.executor.run(
                choice.action, messages, extractor=extractor, fallback=self.fallback, **params
            )
        except ExecutionConfigError:
            raise  # nothing was sent; the decision stays unanswered and expires
        except ExecutionError as exc:
            failed = Realised(
                0.0, 0.0, time.monotonic() - t0, error=ErrorInfo.of(exc), feedback=info
            )
            upd, rec = self.engine.record(choice, failed)
            self._write(rec)
            if upd is not None:
                exc.add_note(f"uniscale: decision {choice.id} was recorded with quality 0")
            else:
                skipped = rec.learning_skipped.type if rec.learning_skipped else "?"
                exc.add_note(
                    f"uniscale: decision {choice.id} was logged; its learning was skipped "
                    f"({skipped})"
                )
            raise

        summary = _outcome_summary(outcome)
        cost = outcome.total_cost_usd
        if outcome.fallback_used:
            # another action answered: its tokens would mislead the chosen one's cost model
            done = Realised(0.0, cost, outcome.latency_s, summary=summary, feedback=info)
        else:
            done = Realised(
                None,
                cost,
                outcome.latency_s,
                float(outcome.output_tokens),
                float(outcome.samples_used),
                summary=summary,
                feedback=info,
            )
            ctx = FeedbackContext(messages, outcome, ground_truth, self.executor, choice.decision)
            try:
                quality = await source.quality(ctx)
                if quality is not None and not (
                    isinstance(quality, int | float) and math.isfinite(quality)
                ):
                    raise ConfigError(
                        f"feedback source {type(source).__name__} returned quality "
                        f"{quality!r}; expected a finite number or None"
                    )
            except BaseException:
                # Deferred, so that router.feedback can still complete it with these values.
                self._write(self.engine.record(choice, done)[1])
                raise
            subs = None
            if ground_truth is not None and isinstance(source, GroundTruthFeedback):
                subs = _VotingSubRuns(outcome, ground_truth, self.policy, self.executor)
            done = replace(done, quality=None if quality is None else float(quality), sub_runs=subs)
        upd, rec = self.engine.record(choice, done)
        self._write(rec)
        return RouterResult(
            choice.decision.to_dict(),
            outcome,
            upd,
            done.quality,
            rec.learning_skipped is not None,
        )

    def feedback(self, decision_id: int, quality: float) -> UpdateResult:
        """Complete a deferred decision with its quality, using the realised cost, latency,
        output tokens and samples stored when it ran; the update is logged as a ``"feedback"``
        record. For a decision the router holds nothing for, the policy decides: it raises
        `UnknownDecisionError`, `ExpiredDecisionError` or `DuplicateUpdateError` as appropriate
        (or, for a decision still pending in the policy, updates it with predicted cost and
        latency)."""
        upd, rec = self.engine.feedback(decision_id, quality)
        self._write(rec)
        return upd

    @property
    def n_deferred(self) -> int:
        """Decisions waiting for `feedback`."""
        return self.engine.n_deferred

    @property
    def log_failures(self) -> int:
        """Records the decision log could not take (full disk, closed log, unencodable value):
        counted and reported through `logging`, never raised to the caller of `complete`."""
        with self._lock:
            return self._log_failures

    @property
    def learning_skipped(self) -> int:
        """Executed decisions the policy could not learn from (expired from its pending store,
        e.g. more concurrent requests than its ``capacity``); their answers were returned and
        their records logged with ``"learning_skipped"``."""
        return self.engine.learning_skipped

    async def aclose(self) -> None:
        """Close the decision log if the router opened it (not the executor: it is shared)."""
        if self._owns_log and self.log is not None:
            self.log.close()

    # -- internals -----------------------------------------------------------------------------

    def _write(self, record: DecisionRecord | FeedbackRecord) -> None:
        """Log ``record``; a failure (full disk, closed log, a value JSON cannot hold) is
        counted in `log_failures` and reported through `logging`, never raised: the request it
        belongs to was already executed and learned from."""
        if self.log is None:
            return
        try:
            self.log.write(record)
        except Exception:
            with self._lock:
                self._log_failures += 1
            logger.exception(
                "decision log %s: could not write the %s record of decision %s",
                self.log.path,
                "feedback" if isinstance(record, FeedbackRecord) else "decision",
                record.decision_id,
            )

    def __repr__(self) -> str:
        return (
            f"Router({self.policy!r}, featurizer={self.featurizer.version!r}, "
            f"feedback={self.feedback_source!r})"
        )


def _outcome_summary(o: Outcome) -> dict[str, Any]:
    return {
        "model": o.action.model,
        "strategy": o.action.strategy,
        "n": o.action.n,
        "fallback_used": o.fallback_used,
        "answer": o.answer,
        "confidence": o.confidence,
        "cost_usd": o.cost_usd,
        "scorer_cost_usd": o.scorer_cost_usd,
        "latency_s": o.latency_s,
        "input_tokens": o.input_tokens,
        "output_tokens": o.output_tokens,
        "samples_used": o.samples_used,
        "requests": o.requests,
        "failures": [{"model": f.model, "error": f.error, "stage": f.stage} for f in o.failures],
        "stop_reason": o.stop_reason,
    }


class _VotingSubRuns:
    """The sub-runs of a live run scored against a ground truth (see `Router`): the first
    ``n'`` of its samples, in draw order, decided as the sub-run's strategy would
    (`Strategy.replay`: self-consistency and adaptive consistency vote), billed by `run_usage`.
    Best-of-n sub-runs are not told (a strategy that ``needs_scorer`` would need the scorer's
    verdict on the prefix). Nothing is computed before the engine asks, inside its
    guard: a failure here costs the side observations only, never the answer."""

    __slots__ = ("_answers", "_executor", "_gold", "_outcome", "_policy", "_samples", "_spec")

    def __init__(self, outcome: Outcome, ground_truth: str, policy: Policy, executor: Executor):
        self._outcome = outcome
        self._gold = ground_truth
        self._policy = policy
        self._executor = executor
        self._samples: list[Sample] | None = None
        self._answers: list[str | None] = []
        self._spec: ModelSpec | None = None

    @property
    def drawn(self) -> float:
        return float(len(self._outcome.samples))

    def result(self, action: Action) -> SubRun | None:
        strategy = self._executor.strategy(action.strategy)
        if strategy.greedy or strategy.needs_scorer:
            return None
        if self._samples is None or self._spec is None:
            self._spec = self._policy.models[self._outcome.action.model]
            self._samples = sorted(self._outcome.samples, key=lambda smp: smp.index)
            self._answers = [
                None if s.answer is None else normalize_answer(s.answer) for s in self._samples
            ]
            self._gold = normalize_answer(self._gold)
        r = strategy.replay(self._answers[: action.n], None, action.n)
        if r is None:
            return None
        answer, used = self._answers[r.index], r.used
        prompt = self._samples[0].input_tokens
        cost, latency, out_tokens = run_usage(self._spec, prompt, self._samples[:used])
        quality = 1.0 if answer is not None and answer == self._gold else 0.0
        return SubRun(quality, cost, latency, out_tokens, float(used), float(prompt))
