"""Scorers for best-of-n: they grade a run's candidates (higher is better).

`MeanLogprobScorer` uses the endpoint's token log-probabilities; `JudgeScorer` asks a judge model.
A strategy that needs a scorer (``needs_scorer``, see `uniscale.strategies`) gets the one passed
to `Executor.run` or `MeanLogprobScorer`.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from uniscale.exec_types import Failure, Messages, Sample, SampleBatch, Scores
from uniscale.space import ModelSpec

if TYPE_CHECKING:
    from uniscale.execute import Executor

__all__ = ["JudgeScorer", "MeanLogprobScorer", "Scorer", "parse_grade"]


class Scorer(Protocol):
    """Scores best-of-n candidates; higher is better, ``None`` where it cannot score."""

    async def score(
        self, executor: Executor, messages: Messages, samples: Sequence[Sample]
    ) -> Scores: ...


class MeanLogprobScorer:
    """Score = ``exp(mean token logprob)``: the geometric-mean token probability, in (0, 1]."""

    async def score(
        self, executor: Executor, messages: Messages, samples: Sequence[Sample]
    ) -> Scores:
        return Scores(
            tuple(None if s.mean_logprob is None else math.exp(s.mean_logprob) for s in samples)
        )


_JUDGE_TEMPLATE = (
    "You are grading a candidate answer to a question.\n\n"
    "Question:\n{question}\n\n"
    "Candidate answer:\n{answer}\n\n"
    "Grade the candidate from 0 (wrong) to 10 (certainly correct). "
    "Reply with the grade only, as 'Grade: N'."
)
_GRADE_PATTERNS = (
    re.compile(r"(?i:grade|score|rating)\s*(?:is|of)?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)"),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*10\b"),
    re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.])"),
)


def parse_grade(text: str) -> float | None:
    """A 0-10 grade from a judge's reply, scaled to [0, 1]; ``None`` if there is none.

    Looks for ``Grade: N`` (or score/rating), then ``N/10`` / ``N out of 10``, then the first
    bare number; values outside [0, 10] are rejected.
    """
    for pattern in _GRADE_PATTERNS:
        m = pattern.search(text)
        if m is not None:
            value = float(m.group(1))
            return value / 10.0 if 0.0 <= value <= 10.0 else None
    return None


class JudgeScorer:
    """Asks a judge model to grade each candidate 0-10 (greedy, one request per candidate).

    ``judge`` is a `ModelSpec` (registered with the executor on first use) or the name of a
    model the executor already knows. ``template`` is formatted with ``question`` (the last
    message's content) and ``answer`` (the candidate's text).
    """

    def __init__(
        self,
        judge: ModelSpec | str,
        *,
        template: str = _JUDGE_TEMPLATE,
        max_tokens: int = 16,
        temperature: float = 0.0,
    ) -> None:
        self.judge = judge
        self.template = template
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def score(
        self, executor: Executor, messages: Messages, samples: Sequence[Sample]
    ) -> Scores:
        if isinstance(self.judge, ModelSpec):
            executor.add_model(self.judge)
            name = self.judge.name
        else:
            name = self.judge
        question = _last_content(messages)

        async def grade(sample: Sample) -> SampleBatch:
            prompt = self.template.format(question=question, answer=sample.text)
            return await executor.sample(
                name,
                [{"role": "user", "content": prompt}],
                1,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                extractor=_grade_extractor,
            )

        batches = await asyncio.gather(*(grade(s) for s in samples))
        scores: list[float | None] = []
        failures: list[Failure] = []
        for b in batches:
            answer = b.samples[0].answer if b.samples else None
            scores.append(None if answer is None else float(answer))
            failures.extend(
                Failure(f.model, f.error, f.message, f.status, "scorer") for f in b.failures
            )
        return Scores(
            tuple(scores),
            sum(b.input_tokens for b in batches),
            sum(b.output_tokens for b in batches),
            sum(b.cost_usd for b in batches),
            tuple(failures),
        )


def _grade_extractor(text: str) -> str | None:
    g = parse_grade(text)
    return None if g is None else repr(g)


def _last_content(messages: Messages) -> str:
    if isinstance(messages, str):
        return messages
    for m in reversed(messages):
        content = m.get("content")
        if isinstance(content, str):
            return content
    return ""
