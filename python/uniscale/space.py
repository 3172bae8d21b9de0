"""The unified action space: an action is ``(model, strategy, n)``.

`ModelSpec` carries what the cost model and the executor need to know about one model behind an
OpenAI-compatible endpoint; `Action` names one point of the grid. The numeric side (action
features psi, cost prediction, pruning) lives in the Rust core; this module only holds and
validates configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from uniscale._core import Action as Action  # re-exported: uniscale.space.Action
from uniscale._core import ConfigError, ModelInfo, StrategyInfo
from uniscale.strategies import get_strategy, registered_strategies

#: The built-in strategies' names. A strategy added with `uniscale.strategies.register_strategy`
#: is accepted wherever these are (`Action` checks the registry at run time); its name is not in
#: this type (``cast`` it, or annotate with ``str``).
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
            raise ConfigError("ModelSpec.name must be a non-empty string")
        for key in (
            "price_in_per_mtok",
            "price_out_per_mtok",
            "latency_in_s_per_token",
            "latency_out_s_per_token",
            "prior_output_tokens",
        ):
            v = getattr(self, key)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"ModelSpec.{key} must be a finite number >= 0, got {v!r}")
        if not (isinstance(self.parallelism, int) and self.parallelism >= 1):
            raise ConfigError(
                f"ModelSpec.parallelism must be an int >= 1, got {self.parallelism!r}"
            )
        if not (isinstance(self.max_concurrency, int) and self.max_concurrency >= 1):
            raise ConfigError(
                f"ModelSpec.max_concurrency must be an int >= 1, got {self.max_concurrency!r}"
            )
        if self.endpoint not in ("chat", "completions"):
            raise ConfigError(
                f"ModelSpec.endpoint must be 'chat' or 'completions', got {self.endpoint!r}"
            )

    def info(self) -> ModelInfo:
        """What the Rust core keeps of this model (prices, parallelism, latency priors)."""
        return ModelInfo(
            self.name,
            price_in_per_mtok=float(self.price_in_per_mtok),
            price_out_per_mtok=float(self.price_out_per_mtok),
            parallelism=int(self.parallelism),
            bills_prompt_once=bool(self.bills_prompt_once),
            latency_in_s_per_token=float(self.latency_in_s_per_token),
            latency_out_s_per_token=float(self.latency_out_s_per_token),
            prior_output_tokens=float(self.prior_output_tokens),
        )

    @classmethod
    def from_info(cls, info: ModelInfo) -> ModelSpec:
        """A spec with ``info``'s model parameters and the default endpoint settings."""
        fields = info.to_dict()
        del fields["retired"]
        return cls(**fields)

    @property
    def request_model(self) -> str:
        """The ``model`` field sent to the endpoint."""
        return self.api_model or self.name

    def cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        """Dollars for billed token counts at this model's prices: the one billing formula of
        the Python side (the executor's per-request tally and a table's replayed runs; the
        policy's cost model prices its predictions the same way in ``rust/cost.rs``)."""
        return (
            input_tokens * self.price_in_per_mtok + output_tokens * self.price_out_per_mtok
        ) / 1e6


class ActionSpace:
    """Models plus the ``(model, strategy, n)`` actions over them.

    Build the full grid with :meth:`grid` (``single`` only with ``n == 1``, the sampling
    strategies only with ``n >= 2``), or pass an explicit action list.
    """

    __slots__ = ("_actions", "_models")

    def __init__(self, models: Sequence[ModelSpec], actions: Sequence[Action]) -> None:
        by_name: dict[str, ModelSpec] = {}
        for m in models:
            if not isinstance(m, ModelSpec):
                raise ConfigError(f"models must be ModelSpec instances, got {type(m).__name__}")
            if m.name in by_name:
                raise ConfigError(f"duplicate model name {m.name!r}")
            by_name[m.name] = m
        seen: set[Action] = set()
        for a in actions:
            if a.model not in by_name:
                raise ConfigError(f"action {a} refers to unknown model {a.model!r}")
            if a in seen:
                raise ConfigError(f"duplicate action {a}")
            seen.add(a)
        if not actions:
            raise ConfigError("the action space is empty")
        self._models = by_name
        self._actions = list(actions)

    @classmethod
    def grid(
        cls,
        models: Sequence[ModelSpec],
        strategies: Sequence[Strategy] = STRATEGIES,
        n_values: Sequence[int] = (1, 2, 4, 8),
    ) -> ActionSpace:
        """Every model x strategy x n, with ``single`` (a greedy strategy) only at n = 1 and
        the others at n >= 2."""
        actions = [
            Action(m.name, s, n)
            for m in models
            for s in strategies
            for n in n_values
            if get_strategy(s).greedy == (n == 1)
        ]
        return cls(models, actions)

    @property
    def models(self) -> dict[str, ModelSpec]:
        return dict(self._models)

    @property
    def actions(self) -> list[Action]:
        return list(self._actions)

    def __len__(self) -> int:
        return len(self._actions)

    def core_models(self) -> list[tuple[ModelInfo, list[tuple[str, int]]]]:
        """The models and their ``(strategy, n)`` actions in the form `uniscale._core` takes."""
        out = []
        for name, m in self._models.items():
            acts: list[tuple[str, int]] = [
                (a.strategy, a.n) for a in self._actions if a.model == name
            ]
            if acts:
                out.append((m.info(), acts))
        return out

    def ordered_actions(self) -> list[Action]:
        """Actions in the order the core indexes them (grouped by model, in model order)."""
        return [
            Action(name, s, n)
            for (info, acts) in self.core_models()
            for (s, n) in acts
            for name in (info.name,)
        ]

    def features(
        self, model_slots: int | None = None, strategies: Sequence[str] | None = None
    ) -> NDArray[np.float64]:
        """Semantic action features psi, one row per action in :meth:`ordered_actions` order.

        See ``rust/space.rs`` for the layout: model slot one-hot, log price, strategy one-hot,
        log2 n and its interactions with strategy and price. ``strategies`` names the strategies
        the layout has slots for (default: every registered one).
        """
        from uniscale._core import action_features

        return action_features(self.core_models(), model_slots, strategy_infos(strategies))

    def __repr__(self) -> str:
        return f"ActionSpace({len(self._models)} models, {len(self._actions)} actions)"


def strategy_infos(names: Sequence[str] | None = None) -> list[StrategyInfo]:
    """What the policy's core receives about ``names`` (default: every registered strategy, in
    registration order, which starts with the four built-ins)."""
    if names is None:
        return [s.info() for s in registered_strategies()]
    return [get_strategy(n).info() for n in names]
