"""Feedback sources for `uniscale.Router`: how an executed request's quality is judged.

`GroundTruthFeedback` (compare with a known answer), `ConfidenceFeedback` (the vote share or
the answer's token probability, label-free), `JudgeFeedback` (a grading model) and
`DeferredFeedback` (quality arrives later through ``Router.feedback``). Re-exported by
`uniscale.router`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

from uniscale._core import (
    ConfigError,
    Decision,
)
from uniscale.execute import (
    ExecutionError,
    Executor,
    JudgeScorer,
    Messages,
    Outcome,
    Sample,
)
from uniscale.extract import normalize_answer
from uniscale.space import ModelSpec

# logs under the router's name, where its records came from before the split
logger = logging.getLogger("uniscale.router")


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
