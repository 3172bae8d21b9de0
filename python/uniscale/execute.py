"""Execution layer: carry out an `Action` against OpenAI-compatible endpoints.

``Executor.run(action, messages)`` draws the samples the action's strategy calls for and lets
the strategy pick the answer (`uniscale.strategies`: ``single``, ``self_consistency``,
``best_of_n`` with a `Scorer`, ``adaptive_consistency``, and any registered one), and returns an
`Outcome` with every sample, token counts, realised cost, latency and any failures. Errors are
`ExecutionError` subclasses (a `uniscale.UniScaleError`).

The layer is split by concern: `uniscale.transport` (HTTP, retries, fan-out, deadlines),
`uniscale.responses` (response bodies, per-sample token counting, billing),
`uniscale.exec_types` (errors, records, key redaction), `uniscale.scorers` and
`uniscale.strategies`; this module orchestrates a run and re-exports their public names. They
are described in docs/architecture.md, section "Execution".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uniscale.exec_types import (
    REDACTED,
    AllSamplesFailed,
    DeadlineExceeded,
    EmptyContentError,
    ExecutionConfigError,
    ExecutionError,
    Failure,
    MalformedResponseError,
    Messages,
    NetworkError,
    Outcome,
    RequestTimeout,
    Sample,
    SampleBatch,
    Scores,
    TokenCountMethod,
    UpstreamHTTPError,
    redact_message,
)
from uniscale.extract import Extractor
from uniscale.responses import _Call, _Tally
from uniscale.scorers import JudgeScorer, MeanLogprobScorer, Scorer, parse_grade
from uniscale.space import Action, ModelSpec
from uniscale.strategies import AdaptiveConfig, AdaptiveConsistency, Strategy, get_strategy
from uniscale.transport import Transport, TransportSettings

if TYPE_CHECKING:
    from typing import Unpack

__all__ = [
    "REDACTED",
    "AdaptiveConfig",
    "AllSamplesFailed",
    "DeadlineExceeded",
    "EmptyContentError",
    "ExecutionConfigError",
    "ExecutionError",
    "Executor",
    "Failure",
    "JudgeScorer",
    "MalformedResponseError",
    "MeanLogprobScorer",
    "Messages",
    "NetworkError",
    "Outcome",
    "RequestTimeout",
    "Sample",
    "SampleBatch",
    "Scorer",
    "Scores",
    "TokenCountMethod",
    "UpstreamHTTPError",
    "parse_grade",
    "redact_message",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Decision:
    text: str
    answer: str | None
    confidence: float | None
    stop_reason: str | None = None


class _LiveDraws:
    """One attempt's samples as a strategy's draw schedule sees them (`strategies.Draws`)."""

    __slots__ = ("_call", "_executor")

    def __init__(self, executor: Executor, call: _Call) -> None:
        self._executor = executor
        self._call = call

    async def draw(self, k: int, first_index: int) -> None:
        await self._executor._draw(self._call, k, first_index)

    def answers(self) -> list[str | None]:
        return [s.answer for s in sorted(self._call.tally.samples, key=lambda s: s.index)]


class Executor(Transport):
    """Runs actions against the configured models. Use as ``async with Executor(...) as ex:``.

    ``timeout_s`` bounds each HTTP request (read/write/pool; ``connect_timeout_s`` the connect),
    ``deadline_s`` each action attempt. ``transport`` is passed to every ``httpx.AsyncClient``
    (tests inject ``httpx.MockTransport``). ``sample_temperature`` is the default temperature of
    multi-sample strategies (``single`` defaults to greedy). ``adaptive`` configures this
    executor's ``adaptive_consistency`` (round sizes, stopping rule).
    """

    def __init__(
        self,
        models: Sequence[ModelSpec],
        *,
        adaptive: AdaptiveConfig | None = None,
        **settings: Unpack[TransportSettings],
    ) -> None:
        super().__init__(models, **settings)
        self.adaptive = adaptive or AdaptiveConfig()

    def strategy(self, name: str) -> Strategy:
        """The strategy this executor runs for ``name``: the registered one, with this
        executor's ``adaptive`` configuration for the built-in adaptive consistency."""
        s = get_strategy(name)
        if type(s) is AdaptiveConsistency and s.config != self.adaptive:
            return AdaptiveConsistency(self.adaptive)
        return s

    # -- actions --------------------------------------------------------------------------------

    async def run(
        self,
        action: Action,
        messages: Messages,
        *,
        extractor: str | Extractor = "last_number",
        scorer: Scorer | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        fallback: Action | None = None,
        deadline_s: float | None = None,
        **params: Any,
    ) -> Outcome:
        """Execute ``action`` on ``messages`` (a prompt string or chat messages).

        ``temperature`` defaults to 0 for ``single`` and ``sample_temperature`` otherwise;
        ``deadline_s`` (default: the executor's) bounds each action attempt; extra ``params``
        go into the request body. Raises `AllSamplesFailed`/`DeadlineExceeded` (or the
        fallback's error, as `AllSamplesFailed` listing every failure) when nothing succeeds.
        """
        # Configuration errors surface here, before any request, and never trigger the fallback.
        self._spec(action.model)
        if fallback is not None:
            self._spec(fallback.model)
        greedy = self.strategy(action.strategy).greedy
        self._sampling(greedy, temperature, max_tokens, seed, extractor, params)
        deadline = self.deadline_s if deadline_s is None else deadline_s
        t0 = time.monotonic()
        tally = _Tally()
        scorer_tally = _Tally()
        used = action

        async def attempt(a: Action) -> _Decision:
            return await self._attempt(
                a,
                messages,
                extractor,
                scorer,
                temperature,
                max_tokens,
                seed,
                params,
                deadline,
                tally,
                scorer_tally,
            )

        try:
            decision = await attempt(action)
        except ExecutionError as exc:
            if fallback is None:
                raise
            logger.warning("action %s failed (%s); running fallback %s", action, exc, fallback)
            tally.failures.append(Failure.from_exception(action.model, exc, "action"))
            tally.samples.clear()
            used = fallback
            try:
                decision = await attempt(fallback)
            except ExecutionError as exc2:
                tally.failures.append(Failure.from_exception(fallback.model, exc2, "action"))
                raise AllSamplesFailed(
                    f"action {action} and fallback {fallback} both failed",
                    failures=tally.failures,
                    model=fallback.model,
                ) from exc2
        return Outcome(
            action=used,
            requested_action=action,
            text=decision.text,
            answer=decision.answer,
            samples=tuple(sorted(tally.samples, key=lambda s: s.index)),
            input_tokens=tally.input_tokens,
            output_tokens=tally.output_tokens,
            cost_usd=tally.cost_usd,
            scorer_cost_usd=scorer_tally.cost_usd,
            latency_s=time.monotonic() - t0,
            requests=tally.requests,
            confidence=decision.confidence,
            failures=tuple(tally.failures + scorer_tally.failures),
            fallback_used=used is not action,
            stop_reason=decision.stop_reason,
        )

    async def _attempt(
        self,
        action: Action,
        messages: Messages,
        extractor: str | Extractor,
        scorer: Scorer | None,
        temperature: float | None,
        max_tokens: int | None,
        seed: int | None,
        params: Mapping[str, Any],
        deadline_s: float,
        tally: _Tally,
        scorer_tally: _Tally,
    ) -> _Decision:
        spec = self._spec(action.model)
        strategy = self.strategy(action.strategy)
        sampling = self._sampling(strategy.greedy, temperature, max_tokens, seed, extractor, params)
        # Samples of this attempt only (tally.samples may hold nothing else: the caller clears
        # a failed primary's, which has none anyway).
        timer = asyncio.timeout(deadline_s)
        try:
            async with timer:
                draws = _LiveDraws(self, _Call(spec, messages, sampling, tally))
                stop_reason = await strategy.draw(draws, action.n)
                if not tally.samples:
                    raise AllSamplesFailed(
                        f"all {action.n} samples of {action} failed",
                        failures=tally.failures,
                        model=spec.name,
                    )
                return await self._decide(
                    action, strategy, messages, scorer, tally, scorer_tally, stop_reason
                )
        except TimeoutError:
            if not timer.expired():
                raise
            exc = DeadlineExceeded(
                f"action {action} exceeded its deadline of {deadline_s}s", model=spec.name
            )
            tally.failures.append(Failure.from_exception(spec.name, exc, "action"))
            if not tally.samples:
                raise exc from None
            logger.warning("%s; deciding on the %d samples drawn", exc, len(tally.samples))
            return _by_vote(strategy, tally.samples, "deadline")

    async def _decide(
        self,
        action: Action,
        strategy: Strategy,
        messages: Messages,
        scorer: Scorer | None,
        tally: _Tally,
        scorer_tally: _Tally,
        stop_reason: str | None,
    ) -> _Decision:
        ordered = sorted(tally.samples, key=lambda s: s.index)
        answers = [s.answer for s in ordered]
        if not strategy.needs_scorer:
            pick = strategy.decide(answers, None)
            if pick is None:
                return _by_vote(strategy, ordered, stop_reason)
            chosen = ordered[pick.index]
            return _Decision(chosen.text, chosen.answer, pick.confidence, stop_reason)
        scorer = scorer or MeanLogprobScorer()
        try:
            result = await scorer.score(self, messages, ordered)
        except ExecutionError as exc:
            scorer_tally.failures.append(Failure.from_exception(action.model, exc, "scorer"))
            return _by_vote(strategy, ordered, "scorer_failed")
        scorer_tally.input_tokens += result.input_tokens
        scorer_tally.output_tokens += result.output_tokens
        scorer_tally.cost_usd += result.cost_usd
        scorer_tally.failures.extend(result.failures)
        if len(result.scores) != len(ordered):
            raise ExecutionConfigError(
                f"scorer returned {len(result.scores)} scores for {len(ordered)} samples"
            )
        pick = strategy.decide(answers, result.scores)
        if pick is None:
            scorer_tally.failures.append(
                Failure(action.model, "NoScores", "no score; used the vote", None, "scorer")
            )
            return _by_vote(strategy, ordered, "no_scores")
        chosen = ordered[pick.index]
        return _Decision(chosen.text, chosen.answer, pick.confidence, None)


def _by_vote(strategy: Strategy, samples: Sequence[Sample], stop_reason: str | None) -> _Decision:
    """The majority-vote decision every strategy falls back to (no scores, a deadline)."""
    ordered = sorted(samples, key=lambda s: s.index)
    pick = strategy.vote([s.answer for s in ordered])
    chosen = ordered[pick.index]
    return _Decision(chosen.text, chosen.answer, pick.confidence, stop_reason)
