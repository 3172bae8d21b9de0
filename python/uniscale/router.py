"""`Router`: featurize -> select -> execute -> learn, with an append-only JSONL decision log.

``await router.complete(messages, ...)`` featurizes the request (`Featurizer`, whose token
estimate feeds the cost model), asks the `Policy` for an action under the given cost and latency
limits, runs it with the `Executor`, scores the outcome with a feedback source and updates the
policy with the realised cost (generation plus any best-of-n scorer), latency, output tokens and
samples used. The feature version is checked on every ``select``: a policy built with
``feature_version=featurizer.version`` refuses a featurizer of another version (`ConfigError`).

Feedback sources (``quality(ctx) -> float | None``; ``None`` defers the update):

`GroundTruthFeedback`
    1.0 if the extracted answer equals the ground truth after `normalize_answer`, else 0.0.
    Without a ground truth it asks its ``otherwise`` source, or defers.
`ConfidenceFeedback`
    The strategy's own confidence as a label-free proxy: the vote share (self-consistency,
    adaptive), the chosen sample's score (best-of-n), and for ``single`` the geometric-mean token
    probability ``exp(mean logprob)`` when the endpoint returned logprobs, else ``single_default``
    (``None`` defers). Clipped to [0, 1].
`JudgeFeedback`
    Asks a judge model through the executor for a 0-10 grade of the chosen answer (scaled to
    [0, 1]); an unusable grade or a failed judge call defers. The judge's cost is an evaluation
    cost and is not charged to the action.
`DeferredFeedback`
    Never scores now. Call ``router.feedback(decision_id, quality)`` later: it updates the policy
    with the realised cost, latency, output tokens and samples stored at execution time.

The default is ``GroundTruthFeedback(otherwise=ConfidenceFeedback())``.

Failures. If the action (and its ``fallback``, if any) fails entirely, the decision is updated
with quality 0, the realised cost (0: the executor bills only successful responses) and the
elapsed latency, logged with the error, and the `ExecutionError` is **re-raised** (with a note
naming the decision id). When the fallback action answered instead, the chosen action is
credited with quality 0 as well (it failed; the fallback's answer says nothing about it), its
cost and latency are the whole call's, and output tokens / samples are not reported to the
cost model (they belong to another action). `ExecutionConfigError` (unknown model, bad
parameter: nothing was sent) and cancellation leave the decision unanswered; it expires from the
policy's pending store after its TTL.

Decision log (`DecisionLog`): one JSON object per line, flushed per line, for off-policy
evaluation. ``"type": "decision"`` records hold the decision dict (chosen index and
``action_uid``, propensity, candidate indices and their probabilities, pruning reasons,
predictions), ``candidate_uids`` (the stable uids of the candidates), the features ``x`` (unless
``include_features=False``) and always their SHA-256 ``x_sha256``, the feature version, the
limits, an outcome summary or the error, the feedback source, and the quality, reward and reward
components (quality, cost_usd, latency_s, weights, scales) or ``null`` when deferred.
``"type": "feedback"`` records complete a deferred decision later (join on ``decision_id``). The
prompt text is never logged. `read_decision_log` iterates the records, skipping a truncated last
line (a crash mid-write); opening a log for appending cuts such a line off first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from uniscale._core import (
    ConfigError,
    Decision,
    DuplicateUpdateError,
    ExpiredDecisionError,
    StateError,
    UnknownDecisionError,
)
from uniscale.execute import (
    ExecutionConfigError,
    ExecutionError,
    Executor,
    JudgeScorer,
    Messages,
    Outcome,
    Sample,
)
from uniscale.extract import Extractor, normalize_answer
from uniscale.featurize import Featurizer, features_digest
from uniscale.outcomes import run_usage, sub_actions
from uniscale.policy import Policy, UpdateResult
from uniscale.space import Action, ModelSpec
from uniscale.vote import majority_vote

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
    "read_decision_log",
]

logger = logging.getLogger(__name__)

LOG_SCHEMA = 1

# --------------------------------------------------------------------------------------------
# Feedback sources


@dataclass(frozen=True, slots=True)
class FeedbackContext:
    """What a feedback source may look at."""

    messages: Messages
    outcome: Outcome
    ground_truth: str | None
    executor: Executor
    decision: Decision


class FeedbackSource(Protocol):
    """Turns an outcome into a quality (higher is better, typically in [0, 1]) or ``None`` to
    defer the update to ``Router.feedback``."""

    async def quality(self, ctx: FeedbackContext) -> float | None: ...


class DeferredFeedback:
    """No quality now; the caller reports it later with ``router.feedback(decision_id, q)``."""

    async def quality(self, ctx: FeedbackContext) -> float | None:
        return None

    def __repr__(self) -> str:
        return "DeferredFeedback()"


class ConfidenceFeedback:
    """The strategy's confidence signal as a label-free quality proxy (see the module docs)."""

    __slots__ = ("single_default", "use_logprob")

    def __init__(self, *, single_default: float | None = 0.5, use_logprob: bool = True) -> None:
        if single_default is not None and not (
            math.isfinite(single_default) and 0.0 <= single_default <= 1.0
        ):
            raise ConfigError(f"single_default must be in [0, 1] or None, got {single_default!r}")
        self.single_default = single_default
        self.use_logprob = use_logprob

    async def quality(self, ctx: FeedbackContext) -> float | None:
        out = ctx.outcome
        if out.confidence is not None and math.isfinite(out.confidence):
            return min(1.0, max(0.0, out.confidence))
        if self.use_logprob:
            chosen = _chosen_sample(out)
            if chosen is not None and chosen.mean_logprob is not None:
                return min(1.0, max(0.0, math.exp(chosen.mean_logprob)))
        return self.single_default

    def __repr__(self) -> str:
        return (
            f"ConfidenceFeedback(single_default={self.single_default!r}, "
            f"use_logprob={self.use_logprob!r})"
        )


class GroundTruthFeedback:
    """1.0 when ``normalize_answer(outcome.answer) == normalize_answer(ground_truth)``, else 0.0
    (also when no answer could be extracted). Without a ground truth: ``otherwise`` decides, or
    the update is deferred."""

    __slots__ = ("otherwise",)

    def __init__(self, otherwise: FeedbackSource | None = None) -> None:
        self.otherwise = otherwise

    async def quality(self, ctx: FeedbackContext) -> float | None:
        if ctx.ground_truth is None:
            return None if self.otherwise is None else await self.otherwise.quality(ctx)
        answer = ctx.outcome.answer
        if answer is None:
            return 0.0
        return 1.0 if normalize_answer(answer) == normalize_answer(ctx.ground_truth) else 0.0

    def __repr__(self) -> str:
        return f"GroundTruthFeedback(otherwise={self.otherwise!r})"


class JudgeFeedback:
    """A judge model grades the chosen answer 0-10 (`uniscale.execute.JudgeScorer`); the grade
    / 10 is the quality. A judge failure or an unparseable grade defers the update."""

    __slots__ = ("_scorer",)

    def __init__(
        self, judge: ModelSpec | str, *, template: str | None = None, max_tokens: int = 16
    ) -> None:
        if template is None:
            self._scorer = JudgeScorer(judge, max_tokens=max_tokens)
        else:
            self._scorer = JudgeScorer(judge, template=template, max_tokens=max_tokens)

    async def quality(self, ctx: FeedbackContext) -> float | None:
        chosen = _chosen_sample(ctx.outcome) or _synthetic_sample(ctx.outcome)
        try:
            scores = await self._scorer.score(ctx.executor, ctx.messages, [chosen])
        except ExecutionError as exc:
            logger.warning("judge feedback failed (%s); deferring the update", exc)
            return None
        grade = scores.scores[0] if scores.scores else None
        if grade is None or not math.isfinite(grade):
            return None
        return min(1.0, max(0.0, grade))

    def __repr__(self) -> str:
        return f"JudgeFeedback({self._scorer.judge!r})"


def _chosen_sample(out: Outcome) -> Sample | None:
    for s in out.samples:
        if s.text == out.text:
            return s
    return None


def _synthetic_sample(out: Outcome) -> Sample:
    return Sample(
        text=out.text,
        answer=out.answer,
        index=0,
        model=out.action.model,
        input_tokens=0,
        output_tokens=0,
        token_count_method="chars",
        mean_logprob=None,
        finish_reason=None,
        latency_s=0.0,
    )


# --------------------------------------------------------------------------------------------
# Decision log


class DecisionLog:
    """Append-only JSON-lines decision log, one object per line, flushed per line.

    ``include_features`` writes the feature vector ``x`` into each decision record (its SHA-256
    is always written). ``fsync=True`` also syncs each line to disk. Opening an existing file
    whose last line is incomplete (a crash mid-write) cuts that line off first, so appended
    records start on a line of their own. Thread-safe.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, include_features: bool = True, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.include_features = include_features
        self.fsync = fsync
        self._lock = threading.Lock()
        _repair_tail(self.path)
        self._fh = self.path.open("a", encoding="utf-8", newline="\n")

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (a JSON-serialisable mapping) as one line."""
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            if self._fh.closed:
                raise ValueError(f"decision log {self.path} is closed")
            self._fh.write(line + "\n")
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DecisionLog({str(self.path)!r}, include_features={self.include_features})"


def _repair_tail(path: Path) -> None:
    """Cut off an incomplete last line (no trailing newline) left by a crash."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        pos = size
        chunk = 65536
        cut = 0
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            block = fh.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        logger.warning(
            "decision log %s ends with an incomplete line (%d bytes); cutting it off",
            path,
            size - cut,
        )
        fh.truncate(cut)


def read_decision_log(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Iterate the records of a decision log.

    An incomplete last line (no trailing newline and not valid JSON: a crash mid-write) is
    skipped with a warning; a corrupt line anywhere else raises `StateError` naming the line.
    Blank lines are ignored.
    """
    p = Path(path)
    with p.open("rb") as fh:
        lineno = 0
        for raw in fh:
            lineno += 1
            if not raw.strip():
                continue
            complete = raw.endswith(b"\n")
            try:
                rec = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                if not complete:
                    logger.warning("skipping the truncated last line %d of %s", lineno, p)
                    return
                raise StateError(f"{p}:{lineno}: corrupt decision-log line ({exc})") from None
            if not isinstance(rec, dict):
                raise StateError(f"{p}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield rec


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

    @property
    def decision_id(self) -> int:
        return int(self.decision["id"])

    @property
    def deferred(self) -> bool:
        return self.update is None

    @property
    def answer(self) -> str | None:
        return self.outcome.answer

    @property
    def text(self) -> str:
        return self.outcome.text


@dataclass(frozen=True, slots=True)
class _Realised:
    cost_usd: float
    latency_s: float
    output_tokens: float | None
    samples_used: float | None


class Router:
    """Featurizer + Policy + Executor, learning from every request it serves.

    ``featurizer`` defaults to ``Featurizer(policy.dim)`` (hashing). Its ``dim`` must equal the
    policy's, and when the policy was built with a ``feature_version`` it must equal
    ``featurizer.version`` (checked here and on every ``select``). Every model of the policy
    must be known to the executor. ``fallback`` is an action the executor runs if the chosen one
    fails. ``log`` is a `DecisionLog` or a path (opened with default settings; the router then
    closes it in `aclose`). ``max_deferred`` bounds the realised values kept for deferred
    feedback (the oldest are dropped; their decisions expire in the policy too).

    ``side_observations``: when a voting run (self-consistency or adaptive consistency) is scored
    against a ground truth, the policy also learns (`Policy.observe`) the smaller voting runs of
    the same model that its samples contain, in draw order: the first 2 of 8 samples are a
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
        if max_deferred < 1:
            raise ConfigError(f"max_deferred must be >= 1, got {max_deferred}")
        self.policy = policy
        self.executor = executor
        self.featurizer = featurizer
        self.feedback_source: FeedbackSource = feedback or GroundTruthFeedback(
            otherwise=ConfidenceFeedback()
        )
        self.fallback = fallback
        self.max_deferred = max_deferred
        self.side_observations = side_observations
        self._owns_log = log is not None and not isinstance(log, DecisionLog)
        self.log: DecisionLog | None = (
            log if isinstance(log, DecisionLog) or log is None else DecisionLog(log)
        )
        self._deferred: OrderedDict[int, _Realised] = OrderedDict()
        self._lock = threading.Lock()

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
        """Route one request: select, execute, score, learn, log.

        ``params`` go to `Executor.run` (``temperature``, ``max_tokens``, ``seed``, ``scorer``,
        ``deadline_s`` and extra request-body fields). ``feedback`` overrides the router's
        source for this call. Raises the executor's error after recording quality 0 when the
        action fails entirely (see the module docs).
        """
        x, tokens = self.featurizer.featurize_with_tokens(messages)
        decision = self.policy.select(
            x,
            float(tokens),
            max_cost_usd,
            max_latency_s,
            mask=mask,
            feature_version=self.featurizer.version,
        )
        record = self._decision_record(decision, x, tokens, max_cost_usd, max_latency_s)
        source = feedback or self.feedback_source
        record["feedback"] = {
            "source": type(source).__name__,
            "ground_truth_given": ground_truth is not None,
            "deferred": False,
        }
        upd: UpdateResult | None
        t0 = time.monotonic()
        try:
            outcome = await self.executor.run(
                decision.action, messages, extractor=extractor, fallback=self.fallback, **params
            )
        except ExecutionConfigError:
            raise  # nothing was sent; the decision stays unanswered and expires
        except ExecutionError as exc:
            latency = time.monotonic() - t0
            realised = _Realised(0.0, latency, None, None)
            upd = self._update(decision.id, 0.0, realised)
            record.update(
                outcome=None,
                error={"type": type(exc).__name__, "message": str(exc)},
                **self._reward_fields(0.0, upd),
            )
            self._write(record)
            exc.add_note(f"uniscale: decision {decision.id} was recorded with quality 0")
            raise

        record["outcome"] = _outcome_summary(outcome)
        record["error"] = None
        cost = outcome.total_cost_usd
        if outcome.fallback_used:
            realised = _Realised(cost, outcome.latency_s, None, None)
        else:
            realised = _Realised(
                cost,
                outcome.latency_s,
                float(outcome.output_tokens),
                float(outcome.samples_used),
            )
        quality: float | None
        if outcome.fallback_used:
            quality = 0.0
        else:
            ctx = FeedbackContext(messages, outcome, ground_truth, self.executor, decision)
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
                # Keep the realised values so that router.feedback can still complete it.
                self._defer(decision.id, realised)
                record["feedback"]["deferred"] = True
                record.update(self._reward_fields(None, None))
                self._write(record)
                raise
        upd = None
        if quality is None:
            self._defer(decision.id, realised)
            record["feedback"]["deferred"] = True
        else:
            upd = self._update(decision.id, float(quality), realised)
            if (
                self.side_observations
                and ground_truth is not None
                and isinstance(source, GroundTruthFeedback)
                and not outcome.fallback_used
            ):
                record["side_observations"] = self._observe_sub_runs(x, outcome, ground_truth)
        record.update(self._reward_fields(quality, upd))
        self._write(record)
        return RouterResult(decision.to_dict(), outcome, upd, quality)

    def feedback(self, decision_id: int, quality: float) -> UpdateResult:
        """Complete a deferred decision with its quality, using the realised cost, latency,
        output tokens and samples stored when it ran; the update is logged as a ``"feedback"``
        record. For a decision the router holds nothing for, the policy decides: it raises
        `UnknownDecisionError`, `ExpiredDecisionError` or `DuplicateUpdateError` as appropriate
        (or, for a decision still pending in the policy, updates it with predicted cost and
        latency)."""
        with self._lock:
            realised = self._deferred.get(decision_id)
        try:
            if realised is None:
                upd = self.policy.update(decision_id, quality)
            else:
                upd = self._update(decision_id, quality, realised)
        except (UnknownDecisionError, ExpiredDecisionError, DuplicateUpdateError):
            with self._lock:
                self._deferred.pop(decision_id, None)
            raise
        with self._lock:
            self._deferred.pop(decision_id, None)
        rec: dict[str, Any] = {
            "schema": LOG_SCHEMA,
            "type": "feedback",
            "time_s": time.time(),
            "decision_id": decision_id,
        }
        rec.update(self._reward_fields(quality, upd))
        self._write(rec)
        return upd

    @property
    def n_deferred(self) -> int:
        """Decisions waiting for `feedback`."""
        with self._lock:
            return len(self._deferred)

    async def aclose(self) -> None:
        """Close the decision log if the router opened it (not the executor: it is shared)."""
        if self._owns_log and self.log is not None:
            self.log.close()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- internals -----------------------------------------------------------------------------

    def _update(self, decision_id: int, quality: float, r: _Realised) -> UpdateResult:
        return self.policy.update(
            decision_id,
            quality,
            cost_usd=r.cost_usd,
            latency_s=r.latency_s,
            output_tokens=r.output_tokens,
            samples_used=r.samples_used,
        )

    def _observe_sub_runs(
        self, x: NDArray[np.float64], outcome: Outcome, ground_truth: str
    ) -> list[dict[str, Any]]:
        """Feeds the policy the voting sub-runs ``outcome``'s samples contain (see the class
        docs) and returns what was observed, for the decision log."""
        done: list[dict[str, Any]] = []
        actions = self.policy.actions
        spec = self.policy.models[outcome.action.model]
        samples = sorted(outcome.samples, key=lambda smp: smp.index)
        answers = [None if smp.answer is None else normalize_answer(smp.answer) for smp in samples]
        gold = normalize_answer(ground_truth)
        for j in sub_actions(outcome.action, len(samples), actions):
            a = actions[j]
            if a.strategy == "self_consistency":
                vote, used = majority_vote(answers[: a.n]), a.n
            elif a.strategy == "adaptive_consistency":
                r = self.executor.adaptive.replay(answers[: a.n], a.n)
                vote, used = r.vote, r.used
            else:
                continue  # best_of_n: needs the scorer's verdict on this prefix
            prompt = samples[0].input_tokens
            cost, latency, out_tokens = run_usage(spec, prompt, samples[:used])
            quality = 1.0 if vote.answer is not None and vote.answer == gold else 0.0
            self.policy.observe(
                x,
                j,
                quality,
                input_tokens=float(prompt),
                cost_usd=cost,
                latency_s=latency,
                output_tokens=out_tokens,
                samples_used=float(used),
            )
            done.append({"action": str(a), "quality": quality, "samples_used": used})
        return done

    def _defer(self, decision_id: int, r: _Realised) -> None:
        with self._lock:
            self._deferred[decision_id] = r
            while len(self._deferred) > self.max_deferred:
                old, _ = self._deferred.popitem(last=False)
                logger.warning("dropping deferred decision %d (max_deferred reached)", old)

    def _write(self, record: Mapping[str, Any]) -> None:
        if self.log is not None:
            self.log.write(record)

    def _decision_record(
        self,
        decision: Decision,
        x: NDArray[np.float64],
        tokens: int,
        max_cost_usd: float | None,
        max_latency_s: float | None,
    ) -> dict[str, Any]:
        d = decision.to_dict()
        rec: dict[str, Any] = {
            "schema": LOG_SCHEMA,
            "type": "decision",
            "time_s": time.time(),
            "decision_id": decision.id,
            "feature_version": self.featurizer.version,
            "x_sha256": features_digest(x),
            "input_tokens_est": tokens,
            "limits": {"max_cost_usd": max_cost_usd, "max_latency_s": max_latency_s},
            "decision": d,
        }
        if self.log is not None:
            if self.log.include_features:
                rec["x"] = x.tolist()
            uids = [a[3] for a in self.policy.core.actions()]
            rec["candidate_uids"] = [
                uids[i] if 0 <= i < len(uids) else None for i in d["candidates"]
            ]
        return rec

    def _reward_fields(self, quality: float | None, upd: UpdateResult | None) -> dict[str, Any]:
        if upd is None:
            return {"quality": quality, "reward": None, "reward_components": None}
        w = self.policy.reward_weights
        return {
            "quality": quality,
            "reward": upd.reward,
            "reward_components": {
                "quality": quality,
                "cost_usd": upd.cost_usd,
                "latency_s": upd.latency_s,
                "weights": {"quality": w.quality, "cost": w.cost, "latency": w.latency},
                "cost_scale": self.policy.core.cost_scale,
                "latency_scale": self.policy.core.latency_scale,
                "learner_updated": upd.learner_updated,
            },
        }

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
