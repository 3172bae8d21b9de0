"""UniScale: learn, per LLM request, which model to call and how much test-time compute to spend.

The learners and all numeric policy work live in the compiled extension ``uniscale._core``;
this package re-exports them with the runtime a gateway needs (action space, policy,
featurizer, executor, the per-request engine, router, decision log and its records).
``import uniscale`` loads nothing else: the research tools (collection, datasets, simulator,
replay, off-policy evaluation, reports, demo, calibration) are in `uniscale.lab`, installed
with the ``[lab]`` extra. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from uniscale._core import (
    BUILD_PROFILE,
    AllMaskedError,
    ConfigError,
    Decision,
    DTypeError,
    DuplicateUpdateError,
    ExpiredDecisionError,
    LinUCB,
    ModelInfo,
    NonFiniteError,
    NumericalError,
    PolicyConfig,
    PolicyCore,
    Prediction,
    ShapeError,
    SharedLinUCB,
    StateError,
    UniScaleError,
    UnknownActionError,
    UnknownDecisionError,
    __version__,
    operating_point,
    pareto_front,
)
from uniscale.engine import Choice, Engine, Realised, SubRun
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
from uniscale.featurize import (
    CallableFeaturizer,
    Featurizer,
    FeaturizerBackend,
    HashingFeaturizer,
    SentenceEmbeddingFeaturizer,
    estimate_tokens,
)
from uniscale.planner import Plan, plan
from uniscale.policy import PRESETS, Policy, QualityFloor, RewardWeights, UpdateResult
from uniscale.records import DecisionRecord, FeedbackRecord, parse_record
from uniscale.router import (
    ConfidenceFeedback,
    DecisionLog,
    DeferredFeedback,
    FeedbackContext,
    FeedbackSource,
    GroundTruthFeedback,
    JudgeFeedback,
    Router,
    RouterResult,
    read_decision_log,
)
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
    "CallableFeaturizer",
    "Choice",
    "ConfidenceFeedback",
    "ConfigError",
    "DTypeError",
    "DeadlineExceeded",
    "Decision",
    "DecisionLog",
    "DecisionRecord",
    "DeferredFeedback",
    "DuplicateUpdateError",
    "Engine",
    "ExecutionError",
    "Executor",
    "ExpiredDecisionError",
    "Failure",
    "Featurizer",
    "FeaturizerBackend",
    "FeedbackContext",
    "FeedbackRecord",
    "FeedbackSource",
    "GroundTruthFeedback",
    "HashingFeaturizer",
    "JudgeFeedback",
    "JudgeScorer",
    "LinUCB",
    "MeanLogprobScorer",
    "ModelInfo",
    "ModelSpec",
    "NonFiniteError",
    "NumericalError",
    "Outcome",
    "Plan",
    "Policy",
    "PolicyConfig",
    "PolicyCore",
    "Prediction",
    "QualityFloor",
    "Realised",
    "RewardWeights",
    "Router",
    "RouterResult",
    "Sample",
    "Scorer",
    "SentenceEmbeddingFeaturizer",
    "ShapeError",
    "SharedLinUCB",
    "StateError",
    "Strategy",
    "SubRun",
    "UniScaleError",
    "UnknownActionError",
    "UnknownDecisionError",
    "UpdateResult",
    "VoteResult",
    "__version__",
    "estimate_tokens",
    "get_extractor",
    "majority_vote",
    "normalize_answer",
    "operating_point",
    "pareto_front",
    "parse_record",
    "plan",
    "read_decision_log",
]

#: Names that moved to `uniscale.lab` (its ``__all__``) and modules that moved there:
#: ``uniscale.<name>`` still works and imports lazily, so code written before the split keeps
#: running while ``import uniscale`` stays lean.
_LAB_MODULES = frozenset(
    {
        "calibrate",
        "collect",
        "datasets",
        "demo",
        "ope",
        "plot",
        "progress",
        "replay",
        "report",
        "sim",
    }
)


def __getattr__(name: str) -> Any:
    if name in _LAB_MODULES:
        return importlib.import_module(f"uniscale.lab.{name}")
    if not name.startswith("_"):
        try:
            lab = importlib.import_module("uniscale.lab")
        except ImportError:  # the [lab] extra is missing: still "no such attribute"
            lab = None
        if lab is not None and name in lab.__all__:
            return getattr(lab, name)
    raise AttributeError(f"module 'uniscale' has no attribute {name!r}")
