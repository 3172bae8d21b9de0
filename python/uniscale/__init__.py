"""UniScale: learn, per LLM request, which model to call and how much test-time compute to spend.

The learners and all numeric policy work live in the compiled extension ``uniscale._core``;
this package re-exports them with the Python-side configuration, execution and tooling.
"""

from uniscale._core import (
    BUILD_PROFILE,
    AllMaskedError,
    ConfigError,
    Decision,
    DTypeError,
    DuplicateUpdateError,
    ExpiredDecisionError,
    LinUCB,
    NonFiniteError,
    NumericalError,
    PolicyCore,
    ShapeError,
    SharedLinUCB,
    StateError,
    UniScaleError,
    UnknownActionError,
    UnknownDecisionError,
    __version__,
)
from uniscale.policy import PRESETS, Policy, RewardWeights, UpdateResult
from uniscale.space import STRATEGIES, Action, ActionSpace, ModelSpec, Strategy

__all__ = [
    "BUILD_PROFILE",
    "PRESETS",
    "STRATEGIES",
    "Action",
    "ActionSpace",
    "AllMaskedError",
    "ConfigError",
    "Decision",
    "DTypeError",
    "DuplicateUpdateError",
    "ExpiredDecisionError",
    "LinUCB",
    "ModelSpec",
    "NonFiniteError",
    "NumericalError",
    "Policy",
    "PolicyCore",
    "RewardWeights",
    "ShapeError",
    "SharedLinUCB",
    "StateError",
    "Strategy",
    "UniScaleError",
    "UnknownActionError",
    "UnknownDecisionError",
    "UpdateResult",
    "__version__",
]
