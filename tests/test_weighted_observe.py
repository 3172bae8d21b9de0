"""`Policy.observe(..., weight=w)`: an integer weight equals observing that many times (the
oracle), fractional weights interpolate, bad weights change nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniscale import ConfigError, Policy
from uniscale.space import ActionSpace, ModelSpec

SPACE = ActionSpace.grid(
    [ModelSpec("a", 0.1, 0.2, prior_output_tokens=20), ModelSpec("b", 1.0, 3.0)], n_values=(1, 2)
)
DIM = 3


@settings(max_examples=40, deadline=None)
@given(
    learner=st.sampled_from(["shared", "disjoint"]),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
    quality=st.floats(0.0, 1.0),
)
def test_integer_weight_equals_repeated_observations(
    learner: str, k: int, seed: int, quality: float
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=DIM)
    action = int(rng.integers(0, len(SPACE.actions)))
    once = Policy(SPACE, DIM, learner=learner)  # type: ignore[arg-type]
    many = Policy(SPACE, DIM, learner=learner)  # type: ignore[arg-type]
    once.observe(x, action, quality, 100.0, weight=float(k))
    for _ in range(k):
        many.observe(x, action, quality, 100.0)
    for probe in (x, rng.normal(size=DIM), np.zeros(DIM)):
        m1, b1 = once.core.quality_scores(probe)
        m2, b2 = many.core.quality_scores(probe)
        np.testing.assert_allclose(m1, m2, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=1e-9, atol=1e-12)


def test_fractional_weight_moves_less_than_one_observation() -> None:
    x = np.ones(DIM)
    fresh = Policy(SPACE, DIM)
    m0, b0 = fresh.core.quality_scores(x)
    out = []
    for w in (0.25, 1.0):
        p = Policy(SPACE, DIM)
        p.observe(x, 0, 0.0, 100.0, weight=w)
        out.append(p.core.quality_scores(x))
    (mq, bq), (m1, b1) = out
    assert m1[0] < mq[0] < m0[0]  # pulled towards 0, less by a quarter observation
    assert b1[0] < bq[0] < b0[0]  # and less confident


@pytest.mark.parametrize("weight", [0.0, -1.0, float("nan"), float("inf"), 1e7])
def test_bad_weight_is_refused_before_anything_changes(weight: float) -> None:
    p = Policy(SPACE, DIM)
    before = p.to_bytes()
    with pytest.raises(ConfigError, match="weight"):
        p.observe(np.ones(DIM), 0, 1.0, 100.0, weight=weight)
    assert p.to_bytes() == before


# ---- interaction_scale ----------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    learner=st.sampled_from(["shared", "disjoint"]),
    scale=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_interaction_scale_equals_scaling_the_features(
    learner: str, scale: float, seed: int
) -> None:
    """The oracle: a policy with interaction_scale s behaves exactly like an unscaled one fed
    s * x, through select, update and observe."""
    rng = np.random.default_rng(seed)
    scaled = Policy(SPACE, DIM, learner=learner, interaction_scale=scale)  # type: ignore[arg-type]
    plain = Policy(SPACE, DIM, learner=learner, interaction_scale=1.0)  # type: ignore[arg-type]
    for t in range(30):
        x = rng.normal(size=DIM)
        d1 = scaled.select(x, 100.0, now=float(t))
        d2 = plain.select(scale * x, 100.0, now=float(t))
        assert d1.index == d2.index
        q = float(rng.random())
        scaled.update(d1.id, q, now=float(t))
        plain.update(d2.id, q, now=float(t))
        k = int(rng.integers(0, len(SPACE.actions)))
        scaled.observe(x, k, q, 100.0, weight=0.5)
        plain.observe(scale * x, k, q, 100.0, weight=0.5)
    probe = rng.normal(size=DIM)
    m1, b1 = scaled.core.quality_scores(probe)
    m2, b2 = plain.core.quality_scores(scale * probe)
    np.testing.assert_allclose(m1, m2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b1, b2, rtol=1e-12, atol=1e-14)


def test_interaction_scale_zero_is_context_free() -> None:
    p = Policy(SPACE, DIM, interaction_scale=0.0)
    rng = np.random.default_rng(0)
    for t in range(20):
        d = p.select(rng.normal(size=DIM), 100.0, now=float(t))
        p.update(d.id, float(rng.random()), now=float(t))
    a = p.core.quality_scores(rng.normal(size=DIM))
    b = p.core.quality_scores(rng.normal(size=DIM) * 100)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("scale", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_interaction_scale(scale: float) -> None:
    with pytest.raises(ConfigError, match="interaction_scale"):
        Policy(SPACE, DIM, interaction_scale=scale)
