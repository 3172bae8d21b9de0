"""UniScale: learn, per LLM request, which model to call and how much test-time compute to spend.

The learners and all numeric policy work live in the compiled extension ``uniscale._core``;
this package re-exports them with the Python-side configuration, execution and tooling.
"""

from uniscale._core import (
    BUILD_PROFILE,
    AllMaskedError,
    ConfigError,
    DTypeError,
    DuplicateUpdateError,
    ExpiredDecisionError,
    LinUCB,
    NonFiniteError,
    NumericalError,
    ShapeError,
    SharedLinUCB,
    StateError,
    UniScaleError,
    UnknownActionError,
    UnknownDecisionError,
    __version__,
)
from uniscale.space import STRATEGIES, Action, ModelSpec, Strategy

__all__ = [
    "BUILD_PROFILE",
    "STRATEGIES",
    "Action",
    "AllMaskedError",
    "ConfigError",
    "DTypeError",
    "DuplicateUpdateError",
    "ExpiredDecisionError",
    "LinUCB",
    "ModelSpec",
    "NonFiniteError",
    "NumericalError",
    "ShapeError",
    "SharedLinUCB",
    "StateError",
    "Strategy",
    "UniScaleError",
    "UnknownActionError",
    "UnknownDecisionError",
    "__version__",
]
