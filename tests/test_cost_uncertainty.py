"""No arm is frozen out by a wrong cost or latency prior (the decision-quality issue, cause 1).

On an 11-model table with 1-2-token answers the default policy served the cheapest model on
every request: the other models' costs came from `ModelSpec` priors (256 output tokens,
20 ms/token), a model that looks expensive is never tried, so its prior is never corrected.

Here a small deterministic simulator has five models whose true output length, speed and
accuracy make a mid-priced model the best arm under `cost_sensitive` and `balanced`. The policy
is given priors (output tokens and both per-token latencies) that are wrong by x10 or x0.1,
for every model or for the best model alone, and, as a reference, the true ones. Over a few
hundred requests and several seeds it must try every model, serve the best arm most of the
time in the last third, and earn a total reward within a few percent of what it earns with
the correct priors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest

from uniscale import Action, ActionSpace, ModelSpec, Policy

N_REQUESTS = 300
SEEDS = (0, 1, 2, 3)
DIM = 2
LEARNER = "disjoint"


@dataclass(frozen=True)
class Truth:
    spec: ModelSpec  # prices, and the true per-token latencies / output length as "priors"
    overhead_s: float
    accuracy: float


# Prices rise ~3-4x per tier, output tokens dominate the cost (short prompts); accuracy
# saturates at m2, so m2 is the best arm once cost counts.
MODELS = [
    Truth(ModelSpec("m0", 0.05, 0.2, latency_in_s_per_token=2e-5, latency_out_s_per_token=0.004,
                    prior_output_tokens=40.0), 0.05, 0.30),
    Truth(ModelSpec("m1", 0.2, 0.8, latency_in_s_per_token=4e-5, latency_out_s_per_token=0.006,
                    prior_output_tokens=60.0), 0.05, 0.55),
    Truth(ModelSpec("m2", 0.5, 2.0, latency_in_s_per_token=8e-5, latency_out_s_per_token=0.010,
                    prior_output_tokens=80.0), 0.05, 0.80),
    Truth(ModelSpec("m3", 2.0, 8.0, latency_in_s_per_token=1.5e-4, latency_out_s_per_token=0.020,
                    prior_output_tokens=100.0), 0.05, 0.74),
    Truth(ModelSpec("m4", 6.0, 24.0, latency_in_s_per_token=3e-4, latency_out_s_per_token=0.030,
                    prior_output_tokens=120.0), 0.05, 0.80),
]  # fmt: skip
PRESETS = {"cost_sensitive": (1.0, 1.0, 0.2), "balanced": (1.0, 0.4, 0.1)}
MEAN_INPUT = 150.0


def true_cost(t: Truth, input_tokens: float, out: float) -> float:
    return (input_tokens * t.spec.price_in_per_mtok + out * t.spec.price_out_per_mtok) / 1e6


def true_latency(t: Truth, input_tokens: float, out: float) -> float:
    s = t.spec
    return t.overhead_s + input_tokens * s.latency_in_s_per_token + out * s.latency_out_s_per_token


# The reward's scales are fixed (twice one answer of the priciest / slowest model, true
# values), so every run is scored on the same scale whatever its priors, and no model is
# hopeless on its price alone: each could be the best arm until it has been tried.
COST_SCALE = 2 * max(true_cost(t, MEAN_INPUT, t.spec.prior_output_tokens) for t in MODELS)
LATENCY_SCALE = 2 * max(true_latency(t, MEAN_INPUT, t.spec.prior_output_tokens) for t in MODELS)


def expected_reward(t: Truth, preset: str) -> float:
    wq, wc, wl = PRESETS[preset]
    out = t.spec.prior_output_tokens
    return (
        wq * t.accuracy
        - wc * true_cost(t, MEAN_INPUT, out) / COST_SCALE
        - wl * true_latency(t, MEAN_INPUT, out) / LATENCY_SCALE
    )


def best_model(preset: str) -> str:
    return max(MODELS, key=lambda t: expected_reward(t, preset)).spec.name


def wrong_priors(factor: float, only: str | None = None) -> list[ModelSpec]:
    """Every model's output-token and latency priors times `factor` (or only model `only`'s)."""
    return [
        replace(
            t.spec,
            prior_output_tokens=t.spec.prior_output_tokens * factor,
            latency_in_s_per_token=t.spec.latency_in_s_per_token * factor,
            latency_out_s_per_token=t.spec.latency_out_s_per_token * factor,
        )
        if only in (None, t.spec.name)
        else t.spec
        for t in MODELS
    ]


@dataclass
class Run:
    models: list[str]
    rewards: np.ndarray


def run(specs: list[ModelSpec], preset: str, seed: int, cost_exploration: bool = True) -> Run:
    """The stream is a function of the seed only (same requests and outcomes whatever the
    priors): each request draws its size, every model's output length, and a uniform that
    decides correctness."""
    truth = {t.spec.name: t for t in MODELS}
    space = ActionSpace(specs, [Action(s.name, "single", 1) for s in specs])
    policy = Policy(space, DIM, learner=LEARNER, reward=preset, cost_scale=COST_SCALE,
                    latency_scale=LATENCY_SCALE, seed=seed)  # fmt: skip
    policy.set_cost_exploration(cost_exploration)
    rng = np.random.default_rng(seed)
    chosen, rewards = [], np.empty(N_REQUESTS)
    for t in range(N_REQUESTS):
        input_tokens = float(rng.uniform(100, 200))
        noise = rng.lognormal(0.0, 0.2, size=len(MODELS))
        u = float(rng.uniform())
        x = np.array([1.0, float(rng.normal())])
        d = policy.select(x, input_tokens, now=float(t))
        m = truth[d.model]
        k = [tr.spec.name for tr in MODELS].index(d.model)
        out = m.spec.prior_output_tokens * float(noise[k])
        r = policy.update(
            d.id,
            quality=float(u < m.accuracy),
            output_tokens=out,
            latency_s=true_latency(m, input_tokens, out),
            cost_usd=true_cost(m, input_tokens, out),
            now=float(t),
        )
        chosen.append(d.model)
        rewards[t] = r.reward
    return Run(chosen, rewards)


def test_the_simulator_makes_a_mid_priced_model_best() -> None:
    for preset in PRESETS:
        best = best_model(preset)
        assert best not in ("m0", "m4"), (preset, best)
        ranked = sorted((expected_reward(t, preset) for t in MODELS), reverse=True)
        assert ranked[0] - ranked[1] > 0.08, (preset, ranked)  # learnable in a few hundred


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("factor", [10.0, 0.1])
@pytest.mark.parametrize("which", ["every model", "the best model only"])
def test_priors_wrong_by_a_factor_of_ten_freeze_no_arm(
    preset: str, factor: float, which: str
) -> None:
    """`every model`: a common error (the issue's case: one default for all models), which the
    shared correction absorbs after the first observation. `the best model only`: an error no
    other model's data can reveal; only optimism about the unobserved model gets it tried."""
    best = best_model(preset)
    specs = wrong_priors(factor, None if which == "every model" else best)
    correct_total, wrong_total, best_share = 0.0, 0.0, []
    for seed in SEEDS:
        wrong = run(specs, preset, seed)
        right = run([t.spec for t in MODELS], preset, seed)
        assert set(wrong.models) == {t.spec.name for t in MODELS}, (
            f"seed {seed}: models never tried with priors x{factor} ({which}): "
            f"{sorted({t.spec.name for t in MODELS} - set(wrong.models))}"
        )
        last = wrong.models[2 * N_REQUESTS // 3 :]
        best_share.append(last.count(best) / len(last))
        wrong_total += float(wrong.rewards.sum())
        correct_total += float(right.rewards.sum())
    # the best arm most of the time in the last third: on average, and the most served arm
    # on 3 of 4 seeds (a greedy learner on Bernoulli quality may settle on the runner-up on
    # one seed whatever the priors; it does so with the correct priors too)
    assert float(np.mean(best_share)) > 0.6, (best, best_share)
    assert sum(share > 0.5 for share in best_share) >= 3, (best, best_share)
    # prior sensitivity: the same streams with the true priors earn about the same
    assert abs(wrong_total - correct_total) <= 0.05 * abs(correct_total), (
        wrong_total,
        correct_total,
    )


def test_without_cost_exploration_a_prior_ten_times_too_high_freezes_models_out() -> None:
    """The issue's failure, kept as the reason for the option: with cost exploration off (the
    default) and every prior x10, some model is never tried on some seed, and the reward falls
    well short of the run with the true priors."""
    preset = "cost_sensitive"
    specs = wrong_priors(10.0, None)
    never_tried, wrong_total, correct_total = 0, 0.0, 0.0
    for seed in SEEDS:
        wrong = run(specs, preset, seed, cost_exploration=False)
        never_tried += len({t.spec.name for t in MODELS} - set(wrong.models))
        wrong_total += float(wrong.rewards.sum())
        correct_total += float(run([t.spec for t in MODELS], preset, seed, False).rewards.sum())
    assert never_tried > 0
    assert wrong_total < 0.9 * correct_total, (wrong_total, correct_total)


def test_dominance_never_prunes_an_unexplored_arm() -> None:
    """Two models with the same priors and quality prior: the pricier, slower one is
    dominated in (cost, latency, quality UCB) from the first request, yet it stays a candidate
    until it has been observed twice; after that (with poor outcomes) it may be pruned."""
    cheap = ModelSpec("cheap", 0.1, 0.4, latency_out_s_per_token=0.01)
    dear = ModelSpec("dear", 5.0, 20.0, latency_out_s_per_token=0.03)
    space = ActionSpace([cheap, dear], [Action("cheap", "single", 1), Action("dear", "single", 1)])
    policy = Policy(space, DIM, learner="disjoint", exploration="epsilon", epsilon=0.1)
    policy.set_cost_exploration()
    x = np.array([1.0, 0.0])
    d = policy.select(x, 400.0, now=0.0)
    assert sorted(int(c) for c in d.candidates) == [0, 1] and not d.pruned
    pred = policy.predict(400.0)
    assert pred["cost_usd_low"][1] > pred["cost_usd_low"][0]  # dominated, were it explored
    policy.update(d.id, 0.9, output_tokens=100.0, latency_s=1.0, now=0.0)
    mask = np.array([False, True])
    for t in range(2):
        assert policy.action_observations[1] == t
        d = policy.select(x, 400.0, now=1.0 + t)
        assert 1 in [int(c) for c in d.candidates] and 1 not in d.pruned
        f = policy.select(x, 400.0, mask=mask, now=1.0 + t)
        policy.update(f.id, 0.0, output_tokens=100.0, latency_s=3.0, now=1.0 + t)
        policy.update(d.id, 0.9, output_tokens=100.0, latency_s=1.0, now=1.0 + t)
    assert policy.action_observations[1] == 2
    d = policy.select(x, 400.0, now=10.0)
    assert d.pruned.get(1, "").startswith("dominated"), d.pruned


def test_hard_limits_use_the_optimistic_estimate_until_an_arm_has_data() -> None:
    """A limit below an untried arm's prior-based prediction but above its optimistic one
    does not exclude it; once it has output lengths and latencies of its own, its point
    prediction is what the limit is checked against."""
    m = ModelSpec("m", 1.0, 10.0, prior_output_tokens=1000.0)
    policy = Policy(ActionSpace.grid([m], strategies=("single",), n_values=(1,)), DIM)
    pred = policy.predict(100.0)
    assert pred["cost_usd_low"][0] == pred["cost_usd"][0]  # off by default: no optimism
    policy.set_cost_exploration()
    pred = policy.predict(100.0)
    assert pred["cost_usd_low"][0] < pred["cost_usd"][0]
    limit = math.sqrt(pred["cost_usd_low"][0] * pred["cost_usd"][0])
    d = policy.select(np.ones(DIM), 100.0, max_cost_usd=limit, now=0.0)
    assert not d.fallback and d.cost_usd > limit  # admitted on the optimistic estimate
    policy.update(d.id, 1.0, output_tokens=1000.0, latency_s=20.0, now=0.0)
    assert policy.predict(100.0)["cost_usd_for_limit"][0] == policy.predict(100.0)["cost_usd"][0]
    d = policy.select(np.ones(DIM), 100.0, max_cost_usd=limit, now=1.0)
    assert d.fallback  # its own data say it breaks the limit
