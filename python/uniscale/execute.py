"""Execution layer: carry out an `Action` against OpenAI-compatible endpoints.

``Executor.run(action, messages)`` draws the samples the action's strategy calls for
(``single``, ``self_consistency``, ``best_of_n`` with a `Scorer`, ``adaptive_consistency``),
picks the answer, and returns an `Outcome` with every sample, token counts, realised cost,
latency and any failures. Errors are `ExecutionError` subclasses (a `uniscale.UniScaleError`).

The strategies, the transport (one ``httpx.AsyncClient`` per base URL, fan-out when an endpoint
ignores ``n``), per-sample token counting, billing, timeouts, retries, deadlines and key
redaction are described in docs/architecture.md, section "Execution".
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, TypeGuard

import httpx

from uniscale._core import UniScaleError
from uniscale.extract import Extractor, get_extractor
from uniscale.space import Action, ModelSpec
from uniscale.vote import AdaptiveResult, StopRule, majority_vote, replay_adaptive, should_stop

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

Messages = str | Sequence[Mapping[str, Any]]
TokenCountMethod = Literal["logprobs", "usage", "tokenize", "usage_split", "chars"]
_RESERVED_PARAMS = frozenset({"model", "messages", "prompt", "n"})


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
class AdaptiveConfig:
    """Round sizes and stopping rule for ``adaptive_consistency`` (see `uniscale.vote`)."""

    first: int = 2
    step: int = 2
    rule: StopRule = "both"
    threshold: float = 0.95
    prior: tuple[float, float] = (1.0, 1.0)
    min_samples: int = 2

    def __post_init__(self) -> None:
        if self.first < 1 or self.step < 1:
            raise ValueError("AdaptiveConfig.first and .step must be >= 1")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"AdaptiveConfig.threshold must be in (0, 1], got {self.threshold}")

    def replay(self, answers: Sequence[str | None], budget: int) -> AdaptiveResult:
        """What a live run with this configuration and ``budget`` samples decides over
        pre-drawn ``answers`` (in draw order): the same rounds and stopping rule."""
        return replay_adaptive(
            answers,
            budget,
            first=self.first,
            step=self.step,
            rule=self.rule,
            threshold=self.threshold,
            prior=self.prior,
            min_samples=min(self.min_samples, budget),
        )


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
# Scorers


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


# --------------------------------------------------------------------------------------------
# Helpers


def _last_content(messages: Messages) -> str:
    if isinstance(messages, str):
        return messages
    for m in reversed(messages):
        content = m.get("content")
        if isinstance(content, str):
            return content
    return ""


def _prompt_text(messages: Messages) -> str:
    """Completions-endpoint prompt: the string itself, or message contents joined by blank lines."""
    if isinstance(messages, str):
        return messages
    return "\n\n".join(str(m.get("content", "")) for m in messages)


def _chat_messages(messages: Messages) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [dict(m) for m in messages]


def _estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


# No endpoint reports a billion tokens for one request; a larger count is a broken server, and
# an unbounded JSON integer (10**400) would overflow the float cost arithmetic.
_MAX_TOKEN_COUNT = 10**9


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_TOKEN_COUNT


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


def _retry_after_s(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _logprob_entries(choice: Mapping[str, Any]) -> list[float] | None:
    """Per-token logprobs of a choice: chat ``{"content": [{"logprob": x}, ...]}`` or legacy
    completions ``{"token_logprobs": [...]}``; ``None`` when absent or unusable."""
    lp = choice.get("logprobs")
    if not isinstance(lp, Mapping):
        return None
    content = lp.get("content")
    if isinstance(content, list):
        entries = [e.get("logprob") if isinstance(e, Mapping) else None for e in content]
    else:
        legacy = lp.get("token_logprobs")
        if not isinstance(legacy, list):
            return None
        entries = legacy
    out: list[float] = []
    for v in entries:
        if not isinstance(v, int | float) or isinstance(v, bool):
            return None
        try:
            f = float(v)
        except OverflowError:  # an integer beyond float range
            return None
        # inf/NaN (JSON 1e400, or a broken server) would poison the mean and the log.
        if not math.isfinite(f):
            return None
        out.append(f)
    return out


@dataclass(slots=True)
class _Tally:
    """Mutable accounting for one call (internal)."""

    samples: list[Sample] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    requests: int = 0

    def bill(self, spec: ModelSpec, prompt_tokens: int, samples: Sequence[Sample]) -> None:
        out = sum(s.output_tokens for s in samples)
        self.requests += 1
        self.input_tokens += prompt_tokens
        self.output_tokens += out
        self.cost_usd += spec.cost_usd(prompt_tokens, out)
        self.samples.extend(samples)


@dataclass(frozen=True, slots=True)
class _Sampling:
    temperature: float
    max_tokens: int
    seed: int | None
    extractor: Extractor
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Decision:
    text: str
    answer: str | None
    confidence: float | None
    stop_reason: str | None = None


# --------------------------------------------------------------------------------------------
# Executor


class Executor:
    """Runs actions against the configured models. Use as ``async with Executor(...) as ex:``.

    ``timeout_s`` bounds each HTTP request (read/write/pool; ``connect_timeout_s`` the connect),
    ``deadline_s`` each action attempt. ``transport`` is passed to every ``httpx.AsyncClient``
    (tests inject ``httpx.MockTransport``). ``sample_temperature`` is the default temperature of
    multi-sample strategies (``single`` defaults to greedy).
    """

    def __init__(
        self,
        models: Sequence[ModelSpec],
        *,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        deadline_s: float = 600.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 10.0,
        retry_timeouts: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        request_logprobs: bool = True,
        sample_temperature: float = 0.7,
        max_tokens: int = 512,
        adaptive: AdaptiveConfig | None = None,
    ) -> None:
        for key, v in (
            ("timeout_s", timeout_s),
            ("connect_timeout_s", connect_timeout_s),
            ("deadline_s", deadline_s),
        ):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"Executor {key} must be a finite number > 0, got {v!r}")
        for key, v in (
            ("backoff_s", backoff_s),
            ("max_backoff_s", max_backoff_s),
            ("max_retry_after_s", max_retry_after_s),
        ):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"Executor {key} must be a finite number >= 0, got {v!r}")
        if retries < 0:
            raise ValueError(f"Executor retries must be >= 0, got {retries!r}")
        if max_tokens < 1:
            raise ValueError(f"Executor max_tokens must be >= 1, got {max_tokens!r}")
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.deadline_s = deadline_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.retry_timeouts = retry_timeouts
        self.request_logprobs = request_logprobs
        self.sample_temperature = sample_temperature
        self.max_tokens = max_tokens
        self.adaptive = adaptive or AdaptiveConfig()
        self._transport = transport
        self._models: dict[str, ModelSpec] = {}
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._ignores_n: set[str] = set()
        self._no_tokenize: set[str] = set()
        self._closed = False
        for spec in models:
            if spec.name in self._models:
                raise ValueError(f"duplicate model name {spec.name!r}")
            self.add_model(spec)

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every HTTP client. Idempotent."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.aclose()

    # -- configuration --------------------------------------------------------------------------

    @property
    def models(self) -> Mapping[str, ModelSpec]:
        """The known models by name (read-only view)."""
        return dict(self._models)

    def add_model(self, spec: ModelSpec) -> None:
        """Register a model (no-op if an equal spec is already registered)."""
        existing = self._models.get(spec.name)
        if existing is not None:
            if existing != spec:
                raise ExecutionConfigError(
                    f"a different ModelSpec named {spec.name!r} is already registered",
                    model=spec.name,
                )
            return
        self._models[spec.name] = spec
        self._sems[spec.name] = asyncio.Semaphore(spec.max_concurrency)

    def ignores_n(self, model: str) -> bool:
        """True once ``model`` was seen returning fewer choices than the ``n`` it was asked for."""
        return model in self._ignores_n

    def _spec(self, model: str) -> ModelSpec:
        try:
            return self._models[model]
        except KeyError:
            raise ExecutionConfigError(
                f"unknown model {model!r}; known: {', '.join(sorted(self._models))}", model=model
            ) from None

    def _client(self, base: str) -> httpx.AsyncClient:
        if self._closed:
            raise ExecutionConfigError("Executor is closed")
        client = self._clients.get(base)
        if client is None:
            client = httpx.AsyncClient(timeout=self._timeout, transport=self._transport)
            self._clients[base] = client
        return client

    def _api_key(self, spec: ModelSpec) -> str | None:
        if spec.api_key_env is None:
            return None
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise ExecutionConfigError(
                f"environment variable {spec.api_key_env!r} (API key for model {spec.name!r}) "
                "is not set",
                model=spec.name,
            )
        return key

    def _secrets(self, spec: ModelSpec) -> list[str]:
        """What to redact from messages about ``spec``'s responses (never raises)."""
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        return [key] if key else []

    # -- HTTP -----------------------------------------------------------------------------------

    async def _post(
        self, spec: ModelSpec, url: str, payload: Mapping[str, Any], *, retries: int
    ) -> Any:
        """POST JSON with retries; returns the decoded JSON body."""
        key = self._api_key(spec)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = self._client(spec.base_url.rstrip("/"))
        sem = self._sems[spec.name]
        attempt = 0
        while True:
            error: ExecutionError
            retry_after: float | None = None
            try:
                async with sem:
                    resp = await client.post(url, json=payload, headers=headers)
            except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
                error = RequestTimeout(
                    f"request to {url} for model {spec.name!r} timed out ({type(exc).__name__})",
                    model=spec.name,
                )
                if not self.retry_timeouts or attempt >= retries:
                    raise error from None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                error = NetworkError(
                    f"request to {url} for model {spec.name!r} failed: {type(exc).__name__}: "
                    f"{redact_message(str(exc), [key], limit=300)}",
                    model=spec.name,
                )
                if attempt >= retries:
                    raise error from None
            except httpx.HTTPError as exc:
                raise NetworkError(
                    f"request to {url} for model {spec.name!r} failed: {type(exc).__name__}: "
                    f"{redact_message(str(exc), [key], limit=300)}",
                    model=spec.name,
                ) from None
            else:
                if resp.status_code < 400:
                    try:
                        return json.loads(resp.content)
                    except (ValueError, RecursionError) as exc:
                        # RecursionError: a deeply nested body; ValueError includes bad UTF-8
                        # and integers longer than Python converts.
                        raise MalformedResponseError(
                            f"model {spec.name!r} returned invalid JSON from {url} "
                            f"({len(resp.content)} bytes; {type(exc).__name__})",
                            model=spec.name,
                        ) from None
                body = redact_message(resp.text, [key], limit=200)
                error = UpstreamHTTPError(
                    f"model {spec.name!r}: HTTP {resp.status_code} from {url}: {body}",
                    status=resp.status_code,
                    model=spec.name,
                )
                retryable = resp.status_code == 429 or resp.status_code >= 500
                if not retryable or attempt >= retries:
                    raise error
                retry_after = _retry_after_s(resp)
            delay = min(self.backoff_s * 2**attempt, self.max_backoff_s)
            if retry_after is not None:
                delay = min(retry_after, self.max_retry_after_s)
            logger.info(
                "retrying model %s after %s (attempt %d/%d, sleeping %.2fs)",
                spec.name,
                type(error).__name__,
                attempt + 1,
                retries,
                delay,
            )
            attempt += 1
            await asyncio.sleep(delay)

    async def _tokenize(self, spec: ModelSpec, text: str) -> int | None:
        """Token count from llama-server's ``/tokenize``; ``None`` if unavailable."""
        base = re.sub(r"/v1/?$", "", spec.base_url.rstrip("/"))
        if base in self._no_tokenize:
            return None
        try:
            body = await self._post(spec, f"{base}/tokenize", {"content": text}, retries=0)
        except ExecutionError as exc:
            logger.info("tokenize unavailable at %s (%s); not asking again", base, exc)
            self._no_tokenize.add(base)
            return None
        tokens = body.get("tokens") if isinstance(body, Mapping) else None
        if not isinstance(tokens, list):
            self._no_tokenize.add(base)
            return None
        return len(tokens)

    # -- one request --------------------------------------------------------------------------

    async def _request(
        self,
        spec: ModelSpec,
        messages: Messages,
        n: int,
        first_index: int,
        sampling: _Sampling,
        tally: _Tally,
    ) -> int:
        """Send one request for ``n`` choices; record samples/failures; return choices received.

        Raises `ExecutionError` when the request as a whole fails (nothing is billed then).
        """
        base = spec.base_url.rstrip("/")
        payload: dict[str, Any] = {
            "model": spec.request_model,
            "n": n,
            "temperature": sampling.temperature,
            "max_tokens": sampling.max_tokens,
        }
        if spec.endpoint == "chat":
            url = f"{base}/chat/completions"
            payload["messages"] = _chat_messages(messages)
            if self.request_logprobs:
                payload["logprobs"] = True
        else:
            url = f"{base}/completions"
            payload["prompt"] = _prompt_text(messages)
            if self.request_logprobs:
                payload["logprobs"] = 1
        if sampling.seed is not None:
            payload["seed"] = sampling.seed + first_index
        payload.update(sampling.params)
        t0 = time.monotonic()
        body = await self._post(spec, url, payload, retries=self.retries)
        latency = time.monotonic() - t0
        try:
            return await self._take_body(
                spec, messages, n, first_index, sampling, tally, body, latency
            )
        except ExecutionError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError, KeyError, IndexError) as exc:
            # Whatever shape a broken upstream body has, it is this request's failure (so
            # the fallback runs and the decision is logged), never a bare Python error.
            raise MalformedResponseError(
                f"model {spec.name!r}: unusable response body ({type(exc).__name__}: "
                f"{redact_message(str(exc), self._secrets(spec), limit=120)})",
                model=spec.name,
            ) from None

    async def _take_body(
        self,
        spec: ModelSpec,
        messages: Messages,
        n: int,
        first_index: int,
        sampling: _Sampling,
        tally: _Tally,
        body: Any,
        latency: float,
    ) -> int:
        """Parse and validate a decoded response body; bill and record its samples."""
        if not isinstance(body, Mapping) or not isinstance(body.get("choices"), list):
            raise MalformedResponseError(
                f"model {spec.name!r}: response has no 'choices' list", model=spec.name
            )
        choices: list[Any] = list(body["choices"])
        if not choices:
            raise MalformedResponseError(
                f"model {spec.name!r}: response has an empty 'choices' list", model=spec.name
            )
        if len(choices) > n:
            logger.warning(
                "model %s returned %d choices for n=%d; keeping the first %d",
                spec.name,
                len(choices),
                n,
                n,
            )
        if all(isinstance(c, Mapping) and _is_int(c.get("index")) for c in choices):
            choices.sort(key=lambda c: c["index"])
        choices = choices[:n]
        usage = body.get("usage")
        usage = usage if isinstance(usage, Mapping) else {}
        for key in ("prompt_tokens", "completion_tokens"):
            v = usage.get(key)
            if v is not None and not _is_int(v):
                shown = _short_repr(v, self._secrets(spec))
                raise MalformedResponseError(
                    f"model {spec.name!r}: usage.{key} is not a token count in "
                    f"[0, {_MAX_TOKEN_COUNT}] ({type(v).__name__} {shown})",
                    model=spec.name,
                )
        reported = usage.get("prompt_tokens")
        prompt_tokens = (
            int(reported) if _is_int(reported) else _estimate_tokens(_prompt_text(messages))
        )
        completion_tokens = usage.get("completion_tokens")

        # Parse each choice: (text, finish_reason, logprobs) or a failure.
        parsed: list[tuple[int, str, str | None, list[float] | None]] = []
        for j, choice in enumerate(choices):
            try:
                text, finish = self._choice_text(spec, choice)
            except MalformedResponseError as exc:
                tally.failures.append(Failure.from_exception(spec.name, exc))
                continue
            parsed.append((first_index + j, text, finish, _logprob_entries(choice)))

        counts = await self._count_tokens(
            spec, [(text, lps) for _, text, _, lps in parsed], len(choices), completion_tokens
        )
        samples = [
            Sample(
                text=text,
                answer=sampling.extractor(text),
                index=idx,
                model=spec.name,
                input_tokens=prompt_tokens,
                output_tokens=count,
                token_count_method=method,
                mean_logprob=(sum(lps) / len(lps)) if lps else None,
                finish_reason=finish,
                latency_s=latency,
            )
            for (idx, text, finish, lps), (count, method) in zip(parsed, counts, strict=True)
        ]
        tally.bill(spec, prompt_tokens, samples)
        return len(choices)

    @staticmethod
    def _choice_text(spec: ModelSpec, choice: Any) -> tuple[str, str | None]:
        if not isinstance(choice, Mapping):
            raise MalformedResponseError(
                f"model {spec.name!r}: a choice is not an object", model=spec.name
            )
        if spec.endpoint == "chat":
            message = choice.get("message")
            if not isinstance(message, Mapping) or "content" not in message:
                raise MalformedResponseError(
                    f"model {spec.name!r}: choice has no message.content", model=spec.name
                )
            text = message.get("content")
        else:
            if "text" not in choice:
                raise MalformedResponseError(
                    f"model {spec.name!r}: choice has no 'text'", model=spec.name
                )
            text = choice.get("text")
        if text is not None and not isinstance(text, str):
            raise MalformedResponseError(
                f"model {spec.name!r}: choice content is not a string", model=spec.name
            )
        if not text or not text.strip():
            raise EmptyContentError(f"model {spec.name!r}: empty content", model=spec.name)
        finish = choice.get("finish_reason")
        return text, finish if isinstance(finish, str) else None

    async def _count_tokens(
        self,
        spec: ModelSpec,
        parsed: Sequence[tuple[str, list[float] | None]],
        n_choices: int,
        completion_tokens: Any,
    ) -> list[tuple[int, TokenCountMethod]]:
        """Output tokens per parsed choice, by the rule in the module docstring."""
        out: list[tuple[int, TokenCountMethod] | None] = [None] * len(parsed)
        pending: list[int] = []
        for j, (_, lps) in enumerate(parsed):
            if lps:
                out[j] = (len(lps), "logprobs")
            elif n_choices == 1 and _is_int(completion_tokens):
                out[j] = (int(completion_tokens), "usage")
            else:
                pending.append(j)
        if pending:
            counts = await asyncio.gather(*(self._tokenize(spec, parsed[j][0]) for j in pending))
            still: list[int] = []
            for j, c in zip(pending, counts, strict=True):
                if c is None:
                    still.append(j)
                else:
                    out[j] = (c, "tokenize")
            if still:
                est = {j: _estimate_tokens(parsed[j][0]) for j in still}
                total_est = sum(est.values())
                sum_like = (
                    n_choices > 1
                    and len(still) == n_choices
                    and _is_int(completion_tokens)
                    and total_est > 0
                    and completion_tokens**2 >= max(est.values()) * total_est
                )
                for j in still:
                    if sum_like:
                        share = round(completion_tokens * est[j] / total_est)
                        out[j] = (share, "usage_split")
                    else:
                        out[j] = (est[j], "chars")
        return [o for o in out if o is not None]

    # -- drawing samples ------------------------------------------------------------------------

    async def _draw(
        self,
        spec: ModelSpec,
        messages: Messages,
        n: int,
        first_index: int,
        sampling: _Sampling,
        tally: _Tally,
    ) -> None:
        """Draw ``n`` samples indexed from ``first_index``; successes and failures go to tally."""
        done = 0
        if n > 1 and spec.honours_n and spec.name not in self._ignores_n:
            try:
                done = await self._request(spec, messages, n, first_index, sampling, tally)
            except ExecutionError as exc:
                tally.failures.append(Failure.from_exception(spec.name, exc))
                return
            if done < n:
                logger.warning(
                    "model %s returned %d of %d requested choices; fanning out the rest and "
                    "sending single-sample requests from now on",
                    spec.name,
                    done,
                    n,
                )
                self._ignores_n.add(spec.name)

        async def one(index: int) -> None:
            try:
                await self._request(spec, messages, 1, index, sampling, tally)
            except ExecutionError as exc:
                tally.failures.append(Failure.from_exception(spec.name, exc))

        await asyncio.gather(*(one(first_index + i) for i in range(done, n)))

    async def sample(
        self,
        model: str,
        messages: Messages,
        n: int = 1,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        extractor: str | Extractor = "last_number",
        deadline_s: float | None = None,
        **params: Any,
    ) -> SampleBatch:
        """Draw ``n`` samples from ``model`` without choosing among them (data collection).

        Failures are returned, not raised (except `ExecutionConfigError` for an unknown model); with
        ``deadline_s`` the samples finished by then are returned and a `DeadlineExceeded`
        failure is recorded.
        """
        spec = self._spec(model)
        if n < 1:
            raise ExecutionConfigError(f"n must be >= 1, got {n}", model=model)
        sampling = self._sampling(
            "single" if n == 1 else "self_consistency",
            temperature,
            max_tokens,
            seed,
            extractor,
            params,
        )
        tally = _Tally()
        try:
            async with asyncio.timeout(deadline_s):
                await self._draw(spec, messages, n, 0, sampling, tally)
        except TimeoutError:
            tally.failures.append(
                Failure.from_exception(
                    model, DeadlineExceeded(f"deadline of {deadline_s}s passed", model=model)
                )
            )
        return SampleBatch(
            tuple(sorted(tally.samples, key=lambda s: s.index)),
            tuple(tally.failures),
            tally.input_tokens,
            tally.output_tokens,
            tally.cost_usd,
            tally.requests,
        )

    def _sampling(
        self,
        strategy: str,
        temperature: float | None,
        max_tokens: int | None,
        seed: int | None,
        extractor: str | Extractor,
        params: Mapping[str, Any],
    ) -> _Sampling:
        bad = _RESERVED_PARAMS.intersection(params)
        if bad:
            raise ExecutionConfigError(f"parameters {sorted(bad)} are set by the executor")
        if temperature is None:
            temperature = 0.0 if strategy == "single" else self.sample_temperature
        try:
            fn = get_extractor(extractor)
        except KeyError as exc:
            raise ExecutionConfigError(str(exc.args[0])) from None
        return _Sampling(
            temperature=temperature,
            max_tokens=self.max_tokens if max_tokens is None else max_tokens,
            seed=seed,
            extractor=fn,
            params=dict(params),
        )

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
        self._sampling(action.strategy, temperature, max_tokens, seed, extractor, params)
        deadline = self.deadline_s if deadline_s is None else deadline_s
        t0 = time.monotonic()
        tally = _Tally()
        scorer_tally = _Tally()
        used = action
        try:
            decision = await self._attempt(
                action,
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
        except ExecutionError as exc:
            if fallback is None:
                raise
            logger.warning("action %s failed (%s); running fallback %s", action, exc, fallback)
            tally.failures.append(Failure.from_exception(action.model, exc, "action"))
            tally.samples.clear()
            used = fallback
            try:
                decision = await self._attempt(
                    fallback,
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
        sampling = self._sampling(action.strategy, temperature, max_tokens, seed, extractor, params)
        # Samples of this attempt only (tally.samples may hold nothing else: the caller clears
        # a failed primary's, which has none anyway).
        stop_reason: str | None = None
        timer = asyncio.timeout(deadline_s)
        try:
            async with timer:
                if action.strategy == "adaptive_consistency":
                    stop_reason = await self._draw_adaptive(
                        spec, messages, action.n, sampling, tally
                    )
                else:
                    await self._draw(spec, messages, action.n, 0, sampling, tally)
                if not tally.samples:
                    raise AllSamplesFailed(
                        f"all {action.n} samples of {action} failed",
                        failures=tally.failures,
                        model=spec.name,
                    )
                return await self._decide(
                    action, messages, sampling, scorer, tally, scorer_tally, stop_reason
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
            return self._decide_by_vote(action, tally.samples, "deadline")

    async def _draw_adaptive(
        self, spec: ModelSpec, messages: Messages, n: int, sampling: _Sampling, tally: _Tally
    ) -> str:
        cfg = self.adaptive
        attempted = 0
        while True:
            k = min(cfg.first if attempted == 0 else cfg.step, n - attempted)
            before = len(tally.samples)
            await self._draw(spec, messages, k, attempted, sampling, tally)
            attempted += k
            if len(tally.samples) == before:
                return "round_failed"  # the endpoint is failing; do not keep hammering it
            answers = [s.answer for s in sorted(tally.samples, key=lambda s: s.index)]
            decision = should_stop(
                answers,
                len(answers) + (n - attempted),
                rule=cfg.rule,
                threshold=cfg.threshold,
                prior=cfg.prior,
                min_samples=min(cfg.min_samples, n),
            )
            if decision.stop:
                assert decision.reason is not None
                return decision.reason

    def _decide_by_vote(
        self, action: Action, samples: Sequence[Sample], stop_reason: str | None
    ) -> _Decision:
        ordered = sorted(samples, key=lambda s: s.index)
        vote = majority_vote([s.answer for s in ordered])
        chosen = ordered[vote.index] if vote.index is not None else ordered[0]
        confidence = None if action.strategy == "single" else vote.share
        return _Decision(chosen.text, chosen.answer, confidence, stop_reason)

    async def _decide(
        self,
        action: Action,
        messages: Messages,
        sampling: _Sampling,
        scorer: Scorer | None,
        tally: _Tally,
        scorer_tally: _Tally,
        stop_reason: str | None,
    ) -> _Decision:
        ordered = sorted(tally.samples, key=lambda s: s.index)
        if action.strategy == "single":
            s = ordered[0]
            return _Decision(s.text, s.answer, None, None)
        if action.strategy != "best_of_n":
            return self._decide_by_vote(action, ordered, stop_reason)
        scorer = scorer or MeanLogprobScorer()
        try:
            result = await scorer.score(self, messages, ordered)
        except ExecutionError as exc:
            scorer_tally.failures.append(Failure.from_exception(action.model, exc, "scorer"))
            return self._decide_by_vote(action, ordered, "scorer_failed")
        scorer_tally.input_tokens += result.input_tokens
        scorer_tally.output_tokens += result.output_tokens
        scorer_tally.cost_usd += result.cost_usd
        scorer_tally.failures.extend(result.failures)
        if len(result.scores) != len(ordered):
            raise ExecutionConfigError(
                f"scorer returned {len(result.scores)} scores for {len(ordered)} samples"
            )
        best: int | None = None
        best_score = -math.inf
        for i, sc in enumerate(result.scores):
            # Strict ">" keeps the earliest sample on ties.
            if sc is not None and math.isfinite(sc) and (best is None or sc > best_score):
                best, best_score = i, sc
        if best is None:
            scorer_tally.failures.append(
                Failure(action.model, "NoScores", "no score; used the vote", None, "scorer")
            )
            return self._decide_by_vote(action, ordered, "no_scores")
        chosen = ordered[best]
        return _Decision(chosen.text, chosen.answer, best_score, None)
