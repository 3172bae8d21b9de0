"""The unified action space: an action is ``(model, strategy, n)``.

`ModelSpec` carries what the cost model and the executor need to know about one model behind an
OpenAI-compatible endpoint; `Action` names one point of the grid. The numeric side (action
features psi, cost prediction, pruning) lives in the Rust core; this module only holds and
validates configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Strategy = Literal["single", "self_consistency", "best_of_n", "adaptive_consistency"]
STRATEGIES: tuple[Strategy, ...] = (
    "single",
    "self_consistency",
    "best_of_n",
    "adaptive_consistency",
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model behind an OpenAI-compatible endpoint.

    Prices are US dollars per million tokens. ``parallelism`` is how many samples the endpoint
    decodes at once (llama.cpp's ``-np``); ``bills_prompt_once`` is true when n samples are
    requested with the ``n`` parameter of one request (the prompt is processed and billed once)
    and false for fan-out (n separate requests). ``latency_in_s_per_token`` /
    ``latency_out_s_per_token`` are optional priors for the online latency model.
    """

    name: str
    price_in_per_mtok: float = 0.0
    price_out_per_mtok: float = 0.0
    parallelism: int = 1
    bills_prompt_once: bool = True
    latency_in_s_per_token: float = 0.0005
    latency_out_s_per_token: float = 0.02
    prior_output_tokens: float = 256.0
    # Endpoint (used by the executor; ignored by the policy).
    base_url: str = "http://127.0.0.1:8000/v1"
    api_model: str | None = None
    api_key_env: str | None = None
    endpoint: Literal["chat", "completions"] = "chat"
    honours_n: bool = True
    max_concurrency: int = 4
    extra: dict[str, object] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("ModelSpec.name must be a non-empty string")
        for key in (
            "price_in_per_mtok",
            "price_out_per_mtok",
            "latency_in_s_per_token",
            "latency_out_s_per_token",
            "prior_output_tokens",
        ):
            v = getattr(self, key)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"ModelSpec.{key} must be a finite number >= 0, got {v!r}")
        if not (isinstance(self.parallelism, int) and self.parallelism >= 1):
            raise ValueError(f"ModelSpec.parallelism must be an int >= 1, got {self.parallelism!r}")
        if not (isinstance(self.max_concurrency, int) and self.max_concurrency >= 1):
            raise ValueError(
                f"ModelSpec.max_concurrency must be an int >= 1, got {self.max_concurrency!r}"
            )
        if self.endpoint not in ("chat", "completions"):
            raise ValueError(
                f"ModelSpec.endpoint must be 'chat' or 'completions', got {self.endpoint!r}"
            )

    @property
    def request_model(self) -> str:
        """The ``model`` field sent to the endpoint."""
        return self.api_model or self.name


@dataclass(frozen=True, slots=True)
class Action:
    """One point of the action space."""

    model: str
    strategy: Strategy
    n: int

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {STRATEGIES}")
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"Action.n must be an int >= 1, got {self.n!r}")
        if self.strategy == "single" and self.n != 1:
            raise ValueError("strategy 'single' requires n == 1")

    def __str__(self) -> str:
        return f"{self.model}/{self.strategy}/n={self.n}"
