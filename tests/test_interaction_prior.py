"""The shared learner's interaction prior (`Policy(interaction_prior=m | "auto")`,
``rust/evidence.rs``), against a NumPy oracle: a ridge regression with a stronger ridge on the
request x action coefficients, and the marginal likelihood that chooses it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniscale import ActionSpace, ConfigError, ModelSpec, Policy

GRID = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)
DIM = 3
PRIOR_MEAN = 0.5


def make(**kw: object) -> Policy:
    space = ActionSpace.grid(
        [ModelSpec("small", 0.1, 0.2), ModelSpec("large", 1.0, 3.0)], n_values=(1, 2)
    )
    return Policy(space, DIM, **kw)  # type: ignore[arg-type]


def stream(n: int, interaction: float, seed: int) -> list[tuple[np.ndarray, int, float]]:
    """Request features, action index and a quality in [0, 1] whose dependence on the request
    changes with the action by ``interaction``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.uniform(-1, 1, DIM)
        a = int(rng.integers(0, 4))
        sign = 1.0 if a < 2 else -1.0
        q = float(np.clip(0.5 + 0.1 * x[0] + interaction * sign * x[1] + rng.normal(0, 0.3), 0, 1))
        out.append((x, a, q))
    return out


def design(policy: Policy, data: list[tuple[np.ndarray, int, float]]) -> tuple[np.ndarray, ...]:
    psi = policy._core.action_features()
    p = psi.shape[1]
    phi = np.stack([np.kron(np.r_[1.0, x], np.r_[1.0, psi[a]]) for x, a, _ in data])
    y = np.array([q for _, _, q in data]) - PRIOR_MEAN
    interaction = np.zeros((DIM + 1, p + 1), dtype=bool)
    interaction[1:, 1:] = True
    return phi, y, interaction.ravel(), psi


def oracle_theta(phi: np.ndarray, y: np.ndarray, mask: np.ndarray, m: float) -> np.ndarray:
    lam = np.where(mask, m, 1.0)
    return np.linalg.solve(phi.T @ phi + np.diag(lam), phi.T @ y)


def oracle_evidence(phi: np.ndarray, y: np.ndarray, mask: np.ndarray, m: float) -> float:
    lam = np.where(mask, m, 1.0)
    a = phi.T @ phi + np.diag(lam)
    b = phi.T @ y
    rss = y @ y - b @ np.linalg.solve(a, b)
    n = len(y)
    _, logdet = np.linalg.slogdet(a)
    return float(-0.5 * n * np.log(rss / n) - 0.5 * logdet + 0.5 * np.log(lam).sum())


def means(policy: Policy, x: np.ndarray) -> np.ndarray:
    return np.asarray(policy._core.quality_scores(x)[0])


@pytest.mark.parametrize("m", [1.0, 16.0, 1000.0])
def test_fixed_prior_is_ridge_with_a_stronger_penalty_on_interactions(m: float) -> None:
    policy = make(interaction_prior=m)
    data = stream(60, 0.3, seed=1)
    for x, a, q in data:
        policy.observe(x, a, q)
    phi, y, mask, psi = design(policy, data)
    theta = oracle_theta(phi, y, mask, m)
    probe = np.array([0.3, -0.7, 0.2])
    want = PRIOR_MEAN + np.array(
        [np.kron(np.r_[1.0, probe], np.r_[1.0, row]) @ theta for row in psi]
    )
    np.testing.assert_allclose(means(policy, probe), want, rtol=1e-9, atol=1e-12)
    assert policy.interaction_prior == (m, False)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([0.0, 0.05, 0.4]))
def test_auto_chooses_the_evidence_maximiser_at_32_updates(seed: int, interaction: float) -> None:
    policy = make(interaction_prior="auto")
    data = stream(40, interaction, seed)
    for t, (x, a, q) in enumerate(data):
        policy.observe(x, a, q)
        if t == 30:
            assert policy.interaction_prior == (1.0, True)  # not re-estimated before 32
    phi, y, mask, psi = design(policy, data)
    evidence = [oracle_evidence(phi[:32], y[:32], mask, m) for m in GRID]
    best = GRID[int(np.argmax(evidence))]
    # a near-tie may fall either way in floating point
    if sorted(evidence)[-1] - sorted(evidence)[-2] > 1e-6:
        assert policy.interaction_prior == (best, True)
    m = policy.interaction_prior[0]
    probe = np.array([-0.2, 0.5, 0.9])
    theta = oracle_theta(phi, y, mask, m)
    want = PRIOR_MEAN + np.array(
        [np.kron(np.r_[1.0, probe], np.r_[1.0, row]) @ theta for row in psi]
    )
    np.testing.assert_allclose(means(policy, probe), want, rtol=1e-8, atol=1e-10)


def test_auto_shrinks_absent_interactions_and_keeps_strong_ones() -> None:
    none = make(interaction_prior="auto")
    strong = make(interaction_prior="auto")
    for (x, a, q), (x2, a2, q2) in zip(stream(600, 0.0, 3), stream(600, 0.45, 3), strict=True):
        none.observe(x, a, q)
        strong.observe(x2, a2, q2)
    assert none.interaction_prior[0] >= 64.0
    assert strong.interaction_prior[0] <= 4.0


def test_prior_and_its_statistics_survive_save_and_load() -> None:
    policy = make(interaction_prior="auto", seed=3)
    for x, a, q in stream(200, 0.0, 5):
        policy.observe(x, a, q)
    blob = policy.to_bytes()
    loaded = Policy.from_bytes(blob)
    assert loaded.interaction_prior == policy.interaction_prior
    assert loaded.interaction_prior[0] > 1.0
    probe = np.array([0.1, 0.2, -0.3])
    # loading recomputes A^-1 exactly; in memory it was kept by rank-one steps
    np.testing.assert_allclose(means(loaded, probe), means(policy, probe), rtol=1e-12)
    # the schedule continues where it was: the same next re-estimation on both
    for x, a, q in stream(400, 0.5, 6):
        policy.observe(x, a, q)
        loaded.observe(x, a, q)
    assert loaded.to_bytes() == policy.to_bytes()


def test_select_and_update_feed_the_evidence_like_observe() -> None:
    policy = make(interaction_prior="auto", reward="quality_priority")
    rng = np.random.default_rng(0)
    for t in range(200):
        x = rng.uniform(-1, 1, DIM)
        d = policy.select(x, 100.0, now=float(t))
        policy.update(d.id, quality=float(rng.uniform() < 0.5), now=float(t))
    assert policy.interaction_prior[1] is True
    assert policy.interaction_prior[0] in GRID


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"interaction_prior": 0.5}, r"interaction_prior must be in \[1"),
        ({"interaction_prior": float("nan")}, r"interaction_prior must be in \[1"),
        ({"interaction_prior": "sometimes"}, r"a number >= 1 or 'auto'"),
        ({"interaction_prior": "auto", "learner": "disjoint"}, r"shared learner only"),
        ({"interaction_prior": 4.0, "learner": "disjoint"}, r"shared learner only"),
        ({"interaction_prior": "auto", "discount": 0.99}, r"needs discount = 1"),
    ],
)
def test_bad_configuration_is_a_config_error(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make(**kw)
