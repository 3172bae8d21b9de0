"""The execution layer's errors and records: what `uniscale.execute.Executor` returns and raises.

Every error is an `ExecutionError` (a `uniscale.UniScaleError`); every record is frozen. Messages
about upstream responses go through `redact_message`, so no record or exception holds an API key.
`uniscale.execute` re-exports every public name here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from uniscale._core import UniScaleError
from uniscale.space import Action

Messages = str | Sequence[Mapping[str, Any]]
TokenCountMethod = Literal["logprobs", "usage", "tokenize", "usage_split", "chars"]


class AsyncClosing:
    """``async with obj:`` gives ``obj`` and awaits ``obj.aclose()`` on the way out (the base
    of `uniscale.transport.Transport` and `uniscale.router.Router`)."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# --------------------------------------------------------------------------------------------
# Errors


class ExecutionError(UniScaleError):
    """Root of the executor's errors. ``model`` names the model involved, if any.

    A `uniscale.UniScaleError` like every error of the package (and so, through it, a
    ``ValueError``): ``except UniScaleError`` catches whatever UniScale raises on purpose."""

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class ExecutionConfigError(ExecutionError):
    """Unknown model, missing API-key variable, bad parameter."""


class UpstreamHTTPError(ExecutionError):
    """The endpoint answered with an HTTP error status (after any retries)."""

    def __init__(self, message: str, *, status: int, model: str | None = None) -> None:
        super().__init__(message, model=model)
        self.status = status


class NetworkError(ExecutionError):
    """Connection-level failure (refused, reset, protocol error) after any retries."""


class RequestTimeout(ExecutionError):
    """One HTTP request exceeded its ``httpx.Timeout``."""


class MalformedResponseError(ExecutionError):
    """The response is not valid JSON or lacks a required field."""


class EmptyContentError(MalformedResponseError):
    """A choice came back with empty (or whitespace-only) content."""


class DeadlineExceeded(ExecutionError):
    """An action's total deadline passed before any sample succeeded."""


class AllSamplesFailed(ExecutionError):
    """Every sample of an action (and of its fallback, if any) failed."""

    def __init__(
        self, message: str, *, failures: Sequence[Failure] = (), model: str | None = None
    ) -> None:
        super().__init__(message, model=model)
        self.failures: tuple[Failure, ...] = tuple(failures)


# --------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated sample.

    ``index`` is its position in the action's draw order (fan-out completes out of order; votes
    and replay use this order). ``input_tokens`` are the prompt tokens of the request that
    produced it (shared by the choices of an ``n > 1`` request, billed once per request).
    ``mean_logprob`` is the mean per-token log probability when the endpoint returned logprobs.
    """

    text: str
    answer: str | None
    index: int
    model: str
    input_tokens: int
    output_tokens: int
    token_count_method: TokenCountMethod
    mean_logprob: float | None
    finish_reason: str | None
    latency_s: float


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed request, choice, scorer call or action attempt (never contains secrets)."""

    model: str
    error: str
    message: str
    status: int | None = None
    stage: Literal["sample", "scorer", "action"] = "sample"

    @staticmethod
    def from_exception(
        model: str, exc: BaseException, stage: Literal["sample", "scorer", "action"] = "sample"
    ) -> Failure:
        status = exc.status if isinstance(exc, UpstreamHTTPError) else None
        return Failure(model, type(exc).__name__, redact_message(str(exc)), status, stage)


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """What `Executor.sample` drew: successes, failures and their realised cost."""

    samples: tuple[Sample, ...]
    failures: tuple[Failure, ...]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    requests: int


@dataclass(frozen=True, slots=True)
class Scores:
    """A scorer's verdict: one score per candidate (higher is better; ``None`` = no score)."""

    scores: tuple[float | None, ...]
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    failures: tuple[Failure, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of `Executor.run`.

    ``action`` is what was finally executed (the fallback when ``fallback_used``);
    ``requested_action`` what was asked for. ``text`` is the chosen sample's full text and
    ``answer`` its extracted answer (the vote winner for voting strategies). Token totals and
    ``cost_usd`` cover every billed request of the call, including a failed primary attempt;
    ``scorer_cost_usd`` is what a judge scorer spent. ``confidence`` is the vote share
    (voting strategies), the chosen score (best_of_n) or ``None`` (single).
    """

    action: Action
    requested_action: Action
    text: str
    answer: str | None
    samples: tuple[Sample, ...]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    scorer_cost_usd: float
    latency_s: float
    requests: int
    confidence: float | None
    failures: tuple[Failure, ...]
    fallback_used: bool
    stop_reason: str | None = None

    @property
    def samples_used(self) -> int:
        """Number of successful samples of the executed action."""
        return len(self.samples)

    @property
    def total_cost_usd(self) -> float:
        """Generation plus scorer cost."""
        return self.cost_usd + self.scorer_cost_usd


# --------------------------------------------------------------------------------------------
# Redaction


REDACTED = "[REDACTED]"
# A fragment of a secret this long is redacted wherever it appears: an upstream body may echo
# part of a key ("sk-abc...xyz"), and a message cut at a boundary may hold part of one.
_MIN_SECRET_FRAGMENT = 8
_TOKEN_PATTERNS = (
    # "Authorization: Bearer <token>", "authorization=<token>", "api_key": "<token>"
    re.compile(
        r"""(?i)(\b(?:authorization|x-api-key|api[_-]?key)\b["']?\s*[:=]\s*["']?(?:bearer\s+)?)"""
        r"""(?!\[REDACTED\])[^\s"',;&}\]]+"""
    ),
    re.compile(r"""(?i)(\bbearer\s+)(?!\[REDACTED\])[^\s"',;&}\]]+"""),
    re.compile(r"(\b)sk-[A-Za-z0-9_-]{8,}"),
)


def _redact_fragments(text: str, secret: str) -> str:
    """Replace every run of ``text`` that is a substring of ``secret`` of at least
    `_MIN_SECRET_FRAGMENT` characters (longest first, left to right) by `REDACTED`."""
    k = _MIN_SECRET_FRAGMENT
    if len(secret) < k:
        return text.replace(secret, REDACTED)
    out: list[str] = []
    i = plain = 0
    n = len(text)
    while i <= n - k:
        if text[i : i + k] in secret:
            j = i + k
            while j < n and text[i : j + 1] in secret:
                j += 1
            out.append(text[plain:i])
            out.append(REDACTED)
            i = plain = j
        else:
            i += 1
    out.append(text[plain:])
    return "".join(out)


def redact_message(
    text: str, secrets: Sequence[str | None] = (), *, limit: int | None = None
) -> str:
    """``text`` with every secret (and every >= 8-character fragment of one), bearer tokens,
    ``Authorization``/``api_key`` values and ``sk-...`` keys replaced by ``[REDACTED]``, then
    cut to ``limit`` characters. Redaction comes first, so a cut never exposes part of a key."""
    if limit is not None:
        # Bound the work on a huge body; the invariant holds for any cut (a fragment split by
        # it is redacted from its own >= 8-character part, and a shorter part is no fragment).
        text = text[: 4 * limit + 1024]
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in secrets:
        if secret:
            text = _redact_fragments(text, secret)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text


def _short_repr(v: object, secrets: Sequence[str | None], limit: int = 40) -> str:
    """``repr(v)`` redacted, then cut to ``limit`` characters; safe for any JSON value (a
    10**400 integer would exceed the int-to-str digit limit)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 10**limit:
        return f"<{v.bit_length()}-bit integer>"
    try:
        text = repr(v)
    except (ValueError, RecursionError):
        return f"<{type(v).__name__}>"
    return redact_message(text, secrets, limit=limit)
