"""UniScale: learn, per LLM request, which model to call and how much test-time compute to spend."""

from uniscale.space import STRATEGIES, Action, ModelSpec, Strategy

__all__ = ["STRATEGIES", "Action", "ModelSpec", "Strategy"]
