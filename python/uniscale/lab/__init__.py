"""The research tools around the runtime: outcome collection from real endpoints, datasets and
the simulator, offline replay, off-policy evaluation, reports and charts, the demo, calibration.

Installed with ``pip install uniscale[lab]``. Imports go one way: the lab imports the runtime
(`uniscale`), the runtime never imports the lab. See docs/architecture.md.
"""

from uniscale.lab.ope import (
    CheckResult,
    Estimate,
    LoggedDecision,
    OPEError,
    OPEResult,
    PolicyTarget,
    RidgeRewardModel,
    evaluate,
    fixed_action_target,
    ope_check,
    records_from_log,
)

__all__ = [
    "CheckResult",
    "Estimate",
    "LoggedDecision",
    "OPEError",
    "OPEResult",
    "PolicyTarget",
    "RidgeRewardModel",
    "evaluate",
    "fixed_action_target",
    "ope_check",
    "records_from_log",
]
