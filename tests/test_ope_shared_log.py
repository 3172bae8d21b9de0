"""Off-policy evaluation of a log that several writers share (replicas, workers, loggers): each
decision record counts once, and feedback completes the right decision even when the writers'
decision ids overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uniscale import Action, ActionSpace, ModelSpec, Policy
from uniscale.engine import Engine, Realised
from uniscale.lab import ope
from uniscale.router import DecisionLog

MODELS = [ModelSpec("a", 0.1, 0.2), ModelSpec("b", 2.0, 6.0)]
ACTIONS = [Action("a", "single", 1), Action("b", "single", 1)]


def _engine() -> Engine:
    return Engine(Policy(ActionSpace(MODELS, ACTIONS), 2, exploration="epsilon", epsilon=0.5))


def test_feedback_joins_its_own_writers_decision(tmp_path: Path) -> None:
    a, b = _engine(), _engine()
    x = np.array([1.0, 0.0])
    path = tmp_path / "shared.jsonl"
    with DecisionLog(path) as log:
        ca = a.decide(x)
        log.write(a.record(ca, Realised(None, 0.001, 1.0))[1])  # a's decision 0, deferred
        cb = b.decide(x)
        log.write(b.record(cb, Realised(None, 0.002, 2.0))[1])  # b's decision 0, deferred
        assert ca.id == cb.id == 0
        fb_b = b.feedback(0, 0.0)[1]  # b's feedback first
        log.write(fb_b)
        ca1 = a.decide(x)
        _, a1 = a.record(ca1, Realised(1.0, 0.001, 1.0))  # a's decision 1, scored
        log.write(a1)
        fb_a = a.feedback(0, 1.0)[1]  # a's feedback for its decision 0, after b's
        log.write(fb_a)
    assert fb_a.reward is not None and fb_b.reward is not None and a1.reward is not None
    assert fb_a.reward != fb_b.reward
    recs = ope.records_from_log(path)  # in the order the decisions were written: a0, b0, a1
    assert [r.reward for r in recs] == [fb_a.reward, fb_b.reward, a1.reward]
    assert [r.propensity for r in recs[:2]] == [ca.decision.propensity, cb.decision.propensity]


def test_feedback_before_its_decision_still_joins(tmp_path: Path) -> None:
    """Rotated files read newest first: the feedback comes before its decision."""
    a = _engine()
    x = np.array([1.0, 0.0])
    c = a.decide(x)
    _, dec = a.record(c, Realised(None, 0.001, 1.0))
    _, fb = a.feedback(c.id, 1.0)
    recs = ope.records_from_log([fb.to_json(), dec.to_json()])
    assert len(recs) == 1 and recs[0].reward == pytest.approx(fb.reward)
