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

import codecs
import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from uniscale._core import (
    ConfigError,
    Decision,
    StateError,
)
from uniscale.engine import Engine, Realised, SubRun
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
from uniscale.featurize import Featurizer
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
    is always written). ``fsync=True`` also syncs each line to disk. Lines are strict ASCII
    JSON (`json_safe`: non-finite floats become ``null``, lone surrogates are escaped), so every
    line parses anywhere.

    Several threads and processes may append to one file: each line is written with one
    ``write`` under an exclusive ``flock`` of the file (plus a thread lock), and starts on a
    fresh line (a newline is written first when the file does not end in one, e.g. after a
    writer was killed mid-line). Opening an existing file checks that it is a decision log
    (`StateError` otherwise, and the file is left untouched) and, under the same lock, cuts off
    an incomplete last line left by a crash.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, include_features: bool = True, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.include_features = include_features
        self.fsync = fsync
        self._lock = threading.Lock()
        # Unbuffered binary append: each record is one write(2) at the end of the file.
        self._fh = self.path.open("a+b", buffering=0)
        try:
            fd = self._fh.fileno()
            with _file_lock(fd):
                _check_is_decision_log(self.path, fd)
                _repair_tail(self.path, fd)
        except BaseException:
            self._fh.close()
            raise

    def write(self, record: DecisionRecord | FeedbackRecord | Mapping[str, Any]) -> None:
        """Append one record as one line: a `DecisionRecord` or `FeedbackRecord` (its
        ``to_json()``; without the features unless ``include_features``), or any
        JSON-serialisable mapping, written as it is.

        Raises ``TypeError`` for a value JSON cannot hold, ``ValueError`` on a closed log and
        ``OSError`` when the disk refuses the write.
        """
        if isinstance(record, DecisionRecord):
            if not self.include_features and record.x is not None:
                record = replace(record, x=None)
            record = record.to_json()
        elif isinstance(record, FeedbackRecord):
            record = record.to_json()
        line = encode_record(record)
        with self._lock:
            if self._fh.closed:
                raise ValueError(f"decision log {self.path} is closed")
            fd = self._fh.fileno()
            with _file_lock(fd):
                size = os.fstat(fd).st_size
                if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a writer died mid-line: start a line of our own
                _write_all(fd, line)
                if self.fsync:
                    os.fsync(fd)

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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (inf, -inf, NaN) replaced by ``None``, tuples as
    lists and NumPy scalars and arrays as Python values: what strict JSON can hold."""
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One decision-log line: strict JSON (``allow_nan=False`` after `json_safe`), ASCII only
    (a lone surrogate in an answer becomes the escape ``\\udxxx``, still valid JSON), with the
    newline."""
    text = json.dumps(json_safe(record), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii") + b"\n"


if sys.platform == "win32":  # pragma: no cover - no flock; the thread lock still applies

    @contextlib.contextmanager
    def _file_lock(fd: int) -> Iterator[None]:
        yield

else:
    import fcntl

    @contextlib.contextmanager
    def _file_lock(fd: int) -> Iterator[None]:
        """Exclusive advisory lock on the whole file, between processes."""
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


_SNIFF_BYTES = 65536
_SNIFF_LINES = 8


def _is_log_record(obj: object) -> bool:
    return isinstance(obj, dict) and ("decision_id" in obj or ("schema" in obj and "type" in obj))


def _check_is_decision_log(path: Path, fd: int) -> None:
    """Raise `StateError` unless the file is empty or looks like a decision log: no NUL bytes,
    UTF-8, and one of its first lines a JSON object with the log's keys (``decision_id``, or
    ``schema`` and ``type``). A single incomplete first line must start with ``{``."""
    if os.fstat(fd).st_size == 0:  # empty, or a device such as /dev/null
        return
    head = os.pread(fd, _SNIFF_BYTES, 0)
    if not head.strip():
        return

    def refuse(why: str) -> StateError:
        return StateError(
            f"{path} is not a UniScale decision log ({why}); refusing to append to it "
            "(the file was not modified)"
        )

    if b"\x00" in head:
        raise refuse("it holds binary data")
    complete, _, partial = head.rpartition(b"\n")
    try:
        # Not final when the sample is cut: its last character may be split.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SNIFF_BYTES)
    except UnicodeDecodeError:
        raise refuse("it is not UTF-8 text") from None
    lines = [ln for ln in complete.split(b"\n") if ln.strip()]
    if not lines:
        if not partial.lstrip().startswith(b"{"):
            raise refuse("its first line is not a JSON object")
        return
    for raw in lines[:_SNIFF_LINES]:
        try:
            if _is_log_record(json.loads(raw)):
                return
        except (ValueError, RecursionError):
            continue
    raise refuse(
        f"none of its first {min(len(lines), _SNIFF_LINES)} lines is a JSON object with "
        "'decision_id' or 'schema' and 'type'"
    )


def _repair_tail(path: Path, fd: int) -> None:
    """Cut off an incomplete last line (no trailing newline) left by a crash. The caller holds
    the file lock, so no live writer is in the middle of a line."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    pos = size
    chunk = 65536
    cut = 0
    while pos > 0:
        start = max(0, pos - chunk)
        block = os.pread(fd, pos - start, start)
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
    os.ftruncate(fd, cut)


def read_decision_log(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Iterate the records of a decision log.

    A line that is not a JSON object (a crash mid-write, two writers' lines merged by an old
    writer) is skipped with a warning naming it, and the number skipped is logged at the end;
    the rest of the file is still read. Blank lines are ignored.
    """
    p = Path(path)
    bad = 0
    with p.open("rb") as fh:
        lineno = 0
        for raw in fh:
            lineno += 1
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                bad += 1
                what = "incomplete last" if not raw.endswith(b"\n") else "corrupt"
                logger.warning("%s:%d: skipping a %s line (%s)", p, lineno, what, exc)
                continue
            if not isinstance(rec, dict):
                bad += 1
                logger.warning(
                    "%s:%d: skipping a line that is not a JSON object (%s)",
                    p,
                    lineno,
                    type(rec).__name__,
                )
                continue
            yield rec
    if bad:
        logger.warning("%s: skipped %d unreadable line(s) of %d", p, bad, lineno)


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


class Router:
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
