"""The HTTP side of execution: one ``httpx.AsyncClient`` per base URL, bounded concurrency per
model, retries with backoff, ``/tokenize`` counts, fan-out when an endpoint ignores ``n``.

`Transport` draws samples; it knows nothing about strategies. `uniscale.execute.Executor` adds
them on top (`uniscale.strategies`). Timeouts, retries and key redaction are described in
docs/architecture.md, section "Execution".
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
from typing import Any, TypedDict

import httpx

from uniscale.exec_types import (
    AsyncClosing,
    DeadlineExceeded,
    ExecutionConfigError,
    ExecutionError,
    Failure,
    MalformedResponseError,
    Messages,
    NetworkError,
    RequestTimeout,
    SampleBatch,
    UpstreamHTTPError,
    redact_message,
)
from uniscale.extract import Extractor, get_extractor
from uniscale.responses import (
    ResponseParser,
    _Call,
    _chat_messages,
    _prompt_text,
    _Sampling,
    _Tally,
)
from uniscale.space import ModelSpec

# The execution layer logs under one name (as before the split into modules).
logger = logging.getLogger("uniscale.execute")

_RESERVED_PARAMS = frozenset({"model", "messages", "prompt", "n"})


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


class TransportSettings(TypedDict, total=False):
    """`Transport`'s keyword settings (defaults in its signature), for subclasses that forward
    them (`uniscale.execute.Executor`)."""

    timeout_s: float
    connect_timeout_s: float
    deadline_s: float
    retries: int
    backoff_s: float
    max_backoff_s: float
    max_retry_after_s: float
    retry_timeouts: bool
    transport: httpx.AsyncBaseTransport | None
    request_logprobs: bool
    sample_temperature: float
    max_tokens: int


class Transport(ResponseParser, AsyncClosing):
    """Draws samples from the configured models (the base of `uniscale.execute.Executor`).

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

    async def _request(self, call: _Call, n: int, first_index: int) -> int:
        """Send one request for ``n`` choices; record samples/failures; return choices received.

        Raises `ExecutionError` when the request as a whole fails (nothing is billed then).
        """
        spec, messages, sampling = call.spec, call.messages, call.sampling
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
            return await self._take_body(call, n, first_index, body, latency)
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

    # -- drawing samples ------------------------------------------------------------------------

    async def _draw(self, call: _Call, n: int, first_index: int) -> None:
        """Draw ``n`` samples indexed from ``first_index``; successes and failures go to the
        call's tally."""
        spec, tally = call.spec, call.tally
        done = 0
        if n > 1 and spec.honours_n and spec.name not in self._ignores_n:
            try:
                done = await self._request(call, n, first_index)
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
                await self._request(call, 1, index)
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
            n == 1,
            temperature,
            max_tokens,
            seed,
            extractor,
            params,
        )
        tally = _Tally()
        try:
            async with asyncio.timeout(deadline_s):
                await self._draw(_Call(spec, messages, sampling, tally), n, 0)
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
        greedy: bool,
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
            temperature = 0.0 if greedy else self.sample_temperature
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
