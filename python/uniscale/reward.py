"""What `uniscale.Policy` optimises: the reward weights (and their named presets) and the
quality-floor objective."""

from __future__ import annotations

import math
from dataclasses import dataclass

from uniscale._core import REWARD_PRESETS, ConfigError
from uniscale.space import Action

__all__ = ["PRESETS", "QualityFloor", "RewardWeights", "resolve_reward"]


@dataclass(frozen=True, slots=True)
class RewardWeights:
    """``r = quality * q - cost * cost_usd / cost_scale - latency * latency_s / latency_scale``."""

    quality: float = 1.0
    cost: float = 1.0
    latency: float = 0.2

    def __post_init__(self) -> None:
        for key in ("quality", "cost", "latency"):
            v = getattr(self, key)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"RewardWeights.{key} must be a finite number >= 0, got {v!r}")


#: The presets named as in the UniScale paper (plus a middle ground); defined in Rust.
PRESETS: dict[str, RewardWeights] = {name: RewardWeights(*w) for name, w in REWARD_PRESETS.items()}


def resolve_reward(reward: str | RewardWeights | tuple[float, float, float]) -> RewardWeights:
    if isinstance(reward, RewardWeights):
        return reward
    if isinstance(reward, str):
        try:
            return PRESETS[reward]
        except KeyError:
            raise ConfigError(
                f"unknown reward preset {reward!r}; expected one of {sorted(PRESETS)}"
            ) from None
    if isinstance(reward, tuple) and len(reward) == 3:
        return RewardWeights(*(float(v) for v in reward))
    raise ConfigError(f"reward must be a preset name, RewardWeights or a 3-tuple, got {reward!r}")


@dataclass(frozen=True, slots=True)
class QualityFloor:
    """Quality-floor objective: "as good as ``reference`` (the action a team trusts today), for
    as little as possible". See `Policy.set_quality_floor`."""

    reference: Action | int
    tolerance: float = 0.01
    confidence: float = 0.95


#: `QualityFloor`'s defaults, which `Policy.set_quality_floor` shares.
_FLOOR_DEFAULTS = QualityFloor(reference=0)
