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
from uniscale.execute import (
    AdaptiveConfig,
    AllSamplesFailed,
    DeadlineExceeded,
    ExecutionError,
    Executor,
    Failure,
    JudgeScorer,
    MeanLogprobScorer,
    Outcome,
    Sample,
    Scorer,
)
from uniscale.extract import get_extractor, normalize_answer
from uniscale.policy import PRESETS, Policy, RewardWeights, UpdateResult
from uniscale.space import STRATEGIES, Action, ActionSpace, ModelSpec, Strategy
from uniscale.vote import VoteResult, majority_vote

__all__ = [
    "BUILD_PROFILE",
    "PRESETS",
    "STRATEGIES",
    "Action",
    "ActionSpace",
    "AdaptiveConfig",
    "AllMaskedError",
    "AllSamplesFailed",
    "ConfigError",
    "DTypeError",
    "DeadlineExceeded",
    "Decision",
    "DuplicateUpdateError",
    "ExecutionError",
    "Executor",
    "ExpiredDecisionError",
    "Failure",
    "JudgeScorer",
    "LinUCB",
    "MeanLogprobScorer",
    "ModelSpec",
    "NonFiniteError",
    "NumericalError",
    "Outcome",
    "Policy",
    "PolicyCore",
    "RewardWeights",
    "Sample",
    "Scorer",
    "ShapeError",
    "SharedLinUCB",
    "StateError",
    "Strategy",
    "UniScaleError",
    "UnknownActionError",
    "UnknownDecisionError",
    "UpdateResult",
    "VoteResult",
    "__version__",
    "get_extractor",
    "majority_vote",
    "normalize_answer",
]
