"""Reading an OpenAI-compatible response body into samples: choices, output-token counts and
billing (the counting rule is described in docs/architecture.md, section "Execution").

`ResponseParser` is the part of `uniscale.transport.Transport` that turns a decoded body into
`Sample` records; it asks the transport for ``/tokenize`` counts and for the secrets to redact.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from uniscale.exec_types import (
    EmptyContentError,
    Failure,
    MalformedResponseError,
    Messages,
    Sample,
    TokenCountMethod,
    _short_repr,
)
from uniscale.extract import Extractor
from uniscale.space import ModelSpec

logger = logging.getLogger("uniscale.execute")


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
class _Call:
    """What every request of one call shares: the model, the prompt, the sampling settings and
    the tally its samples and failures go to."""

    spec: ModelSpec
    messages: Messages
    sampling: _Sampling
    tally: _Tally


class ResponseParser:
    """Parses response bodies (a base of `uniscale.transport.Transport`)."""

    async def _tokenize(self, spec: ModelSpec, text: str) -> int | None:
        """Token count of ``text`` by ``spec``'s tokenizer; ``None`` if unavailable."""
        raise NotImplementedError

    def _secrets(self, spec: ModelSpec) -> list[str]:
        """What to redact from messages about ``spec``'s responses."""
        raise NotImplementedError

    async def _take_body(
        self, call: _Call, n: int, first_index: int, body: Any, latency: float
    ) -> int:
        """Parse and validate a decoded response body; bill and record its samples."""
        spec, tally = call.spec, call.tally
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
            int(reported) if _is_int(reported) else _estimate_tokens(_prompt_text(call.messages))
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
                answer=call.sampling.extractor(text),
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
        """Output tokens per parsed choice, by the rule in docs/architecture.md ("Execution")."""
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
