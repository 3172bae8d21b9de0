"""`Router`: featurize -> select -> execute -> learn, with an append-only JSONL decision log.

``await router.complete(messages, ...)`` featurizes the request, asks the `Policy` for an
action under the given cost and latency limits, runs it with the `Executor`, scores the outcome
with a feedback source (`GroundTruthFeedback`, `ConfidenceFeedback`, `JudgeFeedback`,
`DeferredFeedback`) and updates the policy with the realised cost, latency, output tokens and
samples used. `DecisionLog` writes one strict-ASCII JSON line per decision (and per deferred
feedback) for off-policy evaluation; `read_decision_log` reads it back.

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
from uniscale.outcomes import SIDE_OBSERVATION_WEIGHT, run_usage, sub_actions
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
    "encode_record",
    "json_safe",
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

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (a JSON-serialisable mapping) as one line.

        Raises ``TypeError`` for a value JSON cannot hold, ``ValueError`` on a closed log and
        ``OSError`` when the disk refuses the write.
        """
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
        self._log_failures = 0
        self._learning_skipped = 0

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
            upd = self._learn(decision.id, 0.0, realised, record)
            record.update(
                outcome=None,
                error={"type": type(exc).__name__, "message": str(exc)},
                **self._reward_fields(0.0, upd),
            )
            self._write(record)
            if upd is not None:
                exc.add_note(f"uniscale: decision {decision.id} was recorded with quality 0")
            else:
                exc.add_note(
                    f"uniscale: decision {decision.id} was logged; its learning was skipped "
                    f"({record['learning_skipped']['type']})"
                )
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
            upd = self._learn(decision.id, float(quality), realised, record)
            if (
                upd is not None
                and self.side_observations
                and ground_truth is not None
                and isinstance(source, GroundTruthFeedback)
                and not outcome.fallback_used
            ):
                try:
                    record["side_observations"] = self._observe_sub_runs(x, outcome, ground_truth)
                except Exception as exc:  # the answer stands; only the extra learning is lost
                    logger.exception("decision %d: side observations failed", decision.id)
                    record["side_observations_error"] = _error_field(exc)
        record.update(self._reward_fields(quality, upd))
        self._write(record)
        return RouterResult(decision.to_dict(), outcome, upd, quality, "learning_skipped" in record)

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
        with self._lock:
            return self._learning_skipped

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

    def _learn(
        self, decision_id: int, quality: float, r: _Realised, record: dict[str, Any]
    ) -> UpdateResult | None:
        """`_update` after an execution: a decision the policy no longer holds (expired,
        evicted, already updated) or an update it rejects skips the learning, noted in
        ``record`` and counted, instead of raising after the answer was produced."""
        err: Exception
        try:
            return self._update(decision_id, quality, r)
        except (UnknownDecisionError, ExpiredDecisionError, DuplicateUpdateError) as exc:
            logger.warning("decision %d: learning skipped (%s)", decision_id, exc)
            err = exc
        except Exception as exc:
            logger.exception("decision %d: the policy update failed; learning skipped", decision_id)
            err = exc
        with self._lock:
            self._learning_skipped += 1
        record["learning_skipped"] = _error_field(err)
        return None

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
                weight=SIDE_OBSERVATION_WEIGHT,
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
                record.get("type"),
                record.get("decision_id"),
            )

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


def _error_field(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


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
