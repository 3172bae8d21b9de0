"""Properties of `uniscale.Policy` (hypothesis, profiles from conftest.py).

Checked against oracles computed from the policy's own public numbers (``policy.predict`` for the
cost model, ``policy.core.quality_scores`` for the quality posterior, the reward weights and the
cost / latency scales), on random action spaces, request limits, masks and exploration modes:

* pruning: a pruned action is never chosen; candidates and pruned actions partition the space;
  every pruning reason is true (masked / over the cost limit / over the latency limit / dominated
  by a candidate in (optimistic cost, optimistic latency, quality UCB)); no candidate with two
  or more observations is dominated by another; an action with fewer is never pruned as
  dominated;
* limits (checked against ``cost_usd_for_limit`` / ``latency_s_for_limit``: the point prediction
  once an action has data of its own, else the optimistic one): the chosen action meets both
  unless ``decision.fallback``; a fallback happens only when no allowed action meets both, and
  then picks the cheapest allowed action (point predictions);
* scores and propensities: ``decision.score`` is the documented score; the greedy choice maximises
  it over every action that meets the limits; probabilities are those of the exploration rule,
  sum to 1, and ``propensity == probabilities[position of the chosen action]``;
* empirical choice frequencies on a frozen state match the probabilities (epsilon and softmax);
* seeded reproducibility; budget pacing on a stationary stream; save / load / pickle mid-stream.
"""

from __future__ import annotations

import math
import pickle
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from reference import RefPacer

from uniscale import Action, ActionSpace, ConfigError, Decision, ModelSpec, Policy

SAMPLING = ("self_consistency", "best_of_n", "adaptive_consistency")
N_CHOICES = (2, 3, 4, 8)

# The profile's settings minus the "explain" phase: on a failure it reruns the shrunk example
# hundreds of times to annotate lines (~40 s here) and adds nothing the shrunk example does not
# show; generation and shrinking are unchanged.
NO_EXPLAIN = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
)

# --------------------------------------------------------------------------------------------
# Random scenarios
# --------------------------------------------------------------------------------------------


@st.composite
def spaces(draw: st.DrawFn) -> ActionSpace:
    """1-4 models with random prices, parallelism, billing and priors; 1-6 actions each."""
    models: list[ModelSpec] = []
    actions: list[Action] = []
    for i in range(draw(st.integers(1, 4))):
        m = ModelSpec(
            f"m{i}",
            price_in_per_mtok=draw(st.floats(0.0, 10.0)),
            price_out_per_mtok=draw(st.floats(0.0, 40.0)),
            parallelism=draw(st.integers(1, 4)),
            bills_prompt_once=draw(st.booleans()),
            latency_in_s_per_token=draw(st.floats(0.0, 0.002)),
            latency_out_s_per_token=draw(st.floats(0.0, 0.05)),
            prior_output_tokens=draw(st.floats(1.0, 1000.0)),
        )
        grid = [Action(m.name, "single", 1)] + [
            Action(m.name, s, n) for s in SAMPLING for n in N_CHOICES
        ]
        models.append(m)
        actions += draw(st.lists(st.sampled_from(grid), min_size=1, max_size=6, unique=True))
    return ActionSpace(models, actions)


@dataclass(frozen=True)
class Explore:
    kind: str
    epsilon: float = 0.05
    temperature: float = 0.1

    def kwargs(self) -> dict[str, Any]:
        return {"exploration": self.kind, "epsilon": self.epsilon, "temperature": self.temperature}


explorations = st.one_of(
    st.just(Explore("greedy")),
    st.builds(Explore, st.just("epsilon"), epsilon=st.floats(0.0, 1.0)),
    st.builds(Explore, st.just("softmax"), temperature=st.floats(0.01, 2.0)),
)


@dataclass(frozen=True)
class Scenario:
    space: ActionSpace
    learner: str
    dim: int
    explore: Explore
    reward: str
    seed: int
    n_warm: int
    cost_exploration: bool = False

    def policy(self, **kw: Any) -> Policy:
        policy = Policy(
            self.space,
            self.dim,
            learner=self.learner,  # type: ignore[arg-type]
            reward=self.reward,
            seed=self.seed,
            **self.explore.kwargs(),
            **kw,
        )
        policy.set_cost_exploration(self.cost_exploration)
        return policy


scenarios = st.builds(
    Scenario,
    space=spaces(),
    learner=st.sampled_from(["shared", "disjoint"]),
    dim=st.integers(1, 5),
    explore=explorations,
    reward=st.sampled_from(["quality_priority", "cost_sensitive", "balanced"]),
    seed=st.integers(0, 2**63),
    n_warm=st.integers(0, 30),
    cost_exploration=st.booleans(),
)


def warm_up(policy: Policy, rng: np.random.Generator, n: int) -> None:
    """n select + update rounds, each forced onto a random action (mask), with random quality,
    output tokens, samples used and latency: the learner and the cost model leave their priors."""
    k = policy.n_actions
    for t in range(n):
        mask = np.zeros(k, dtype=bool)
        mask[rng.integers(k)] = True
        d = policy.select(
            rng.normal(size=policy.dim), float(rng.integers(0, 4000)), mask=mask, now=float(t)
        )
        used = float(rng.integers(1, d.n + 1))
        policy.update(
            d.id,
            quality=float(rng.random()),
            output_tokens=float(rng.integers(1, 800)) * used,
            samples_used=used,
            latency_s=float(rng.uniform(0.1, 30.0)),
            now=float(t),
        )


@st.composite
def queries(draw: st.DrawFn, dim: int, k: int) -> dict[str, Any]:
    """One request: features, size, limits (none / a quantile / exactly one action's value),
    mask (none or random with at least one allowed action)."""
    limit = st.one_of(
        st.none(),
        st.tuples(st.just("quantile"), st.floats(0.0, 1.0), st.floats(0.5, 1.5)),
        st.tuples(st.just("exact"), st.integers(0, k - 1)),
    )
    mask = st.one_of(
        st.none(),
        st.lists(st.booleans(), min_size=k, max_size=k).filter(any),
    )
    return {
        "x": draw(st.lists(st.floats(-2.0, 2.0), min_size=dim, max_size=dim)),
        "input_tokens": draw(st.floats(0.0, 5000.0)),
        "cost": draw(limit),
        "latency": draw(limit),
        "mask": draw(mask),
    }


def resolve_limit(spec: Any, values: np.ndarray) -> float | None:
    if spec is None:
        return None
    if spec[0] == "exact":
        return float(values[spec[1]])
    return float(np.quantile(values, spec[1]) * spec[2])


# --------------------------------------------------------------------------------------------
# Oracles
# --------------------------------------------------------------------------------------------


@dataclass
class Oracle:
    """Everything a decision is a function of, read back through the public API."""

    cost: np.ndarray
    latency: np.ndarray
    cost_low: np.ndarray
    latency_low: np.ndarray
    cost_limit: np.ndarray
    latency_limit: np.ndarray
    explored: np.ndarray
    ucb: np.ndarray
    score: np.ndarray

    @classmethod
    def of(cls, policy: Policy, x: np.ndarray, input_tokens: float, lam: float) -> Oracle:
        pred = policy.predict(input_tokens)
        mean, bonus = policy.core.quality_scores(x)
        w = policy.reward_weights
        cs, ls = policy.core.cost_scale, policy.core.latency_scale
        score = (
            w.quality * (mean + bonus)
            - (w.cost + lam) * pred["cost_usd_low"] / cs
            - w.latency * pred["latency_s_low"] / ls
        )
        return cls(
            pred["cost_usd"], pred["latency_s"], pred["cost_usd_low"], pred["latency_s_low"],
            pred["cost_usd_for_limit"], pred["latency_s_for_limit"],
            (policy.action_observations >= 2) | (not policy.cost_exploration), mean + bonus, score,
        )  # fmt: skip

    def dominates(self, j: int, i: int) -> bool:
        c, lat, u = self.cost_low, self.latency_low, self.ucb
        return bool(
            c[j] <= c[i]
            and lat[j] <= lat[i]
            and u[j] >= u[i]
            and (c[j] < c[i] or lat[j] < lat[i] or u[j] > u[i])
        )


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def check_decision(
    policy: Policy,
    d: Decision,
    x: np.ndarray,
    input_tokens: float,
    max_cost: float | None,
    max_lat: float | None,
    mask: list[bool] | None,
    explore: Explore,
) -> None:
    k = policy.n_actions
    o = Oracle.of(policy, x, input_tokens, d.pacing_lambda)
    allowed = np.ones(k, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    meets = allowed.copy()
    if max_cost is not None:
        meets &= o.cost_limit <= max_cost
    if max_lat is not None:
        meets &= o.latency_limit <= max_lat
    cand = [int(c) for c in d.candidates]
    probs = np.asarray(d.probabilities)
    pruned = d.pruned

    assert d.index in cand and allowed[d.index]

    # every pruning reason is true
    for i, why in pruned.items():
        if why == "masked":
            assert not allowed[i]
        elif why == "cost":
            assert allowed[i] and max_cost is not None and o.cost_limit[i] > max_cost
        elif why == "latency":
            assert allowed[i] and max_lat is not None and o.latency_limit[i] > max_lat
            assert max_cost is None or o.cost_limit[i] <= max_cost
        else:
            assert why.startswith("dominated:"), why
            j = int(why.split(":")[1])
            assert meets[i] and j in cand and o.dominates(j, i), (i, j)
            assert o.explored[i], f"unexplored action {i} pruned as dominated"
    for i in range(k):
        if not allowed[i]:
            assert pruned.get(i) == "masked"

    # limits and fallback
    if d.fallback:
        assert not meets.any(), "fallback although an allowed action meets the limits"
        idx = np.flatnonzero(allowed)
        cheapest = min(idx, key=lambda i: (o.cost[i], o.latency[i], i))
        assert d.index == cheapest
        assert cand == [d.index] and d.propensity == 1.0 and not d.explored
    else:
        assert meets[d.index]
        if max_cost is not None:
            assert o.cost_limit[d.index] <= max_cost
        if max_lat is not None:
            assert o.latency_limit[d.index] <= max_lat
        # the candidates are the actions meeting the limits that are non-dominated or
        # unexplored
        assert all(meets[c] for c in cand)
        for a in cand:
            for b in cand:
                assert not (o.explored[b] and o.dominates(a, b)), (a, b)

    # the decision's prediction is the cost model's
    assert d.cost_usd == o.cost[d.index] and d.latency_s == o.latency[d.index]
    assert close(d.score, float(o.score[d.index]))

    # propensities
    assert len(probs) == len(cand)
    assert (probs >= 0).all() and abs(probs.sum() - 1.0) < 1e-9
    assert d.propensity == probs[cand.index(d.index)]
    if not d.fallback:
        check_probabilities(d, o, cand, probs, meets, explore)

    # a pruned action is never chosen; candidates and pruned partition the action space
    # (checked last so that every other property is exercised on fallback decisions too)
    assert d.index not in pruned, (d, pruned)
    assert not set(cand) & set(pruned), (cand, pruned)
    assert set(cand) | set(pruned) == set(range(k))


def check_probabilities(
    d: Decision,
    o: Oracle,
    cand: list[int],
    probs: np.ndarray,
    meets: np.ndarray,
    explore: Explore,
) -> None:
    best_score = float(o.score[meets].max())
    cand_scores = o.score[cand]
    if explore.kind == "greedy":
        assert d.propensity == 1.0 and not d.explored
        np.testing.assert_array_equal(probs, np.eye(len(cand))[cand.index(d.index)])
        # dominated actions never score higher, so the argmax over candidates is the argmax
        # over every action that meets the limits
        assert close(float(o.score[d.index]), best_score)
    elif explore.kind == "epsilon":
        nc = len(cand)
        eps = explore.epsilon
        top = int(np.argmax(probs))
        want = np.full(nc, eps / nc)
        want[top] += 1.0 - eps
        np.testing.assert_allclose(probs, want, rtol=1e-12, atol=1e-15)
        if eps < 1.0:  # at eps = 1 every candidate has 1 / nc and the best is not visible
            assert close(float(cand_scores[top]), best_score)
            assert d.explored == (cand[top] != d.index)
    else:
        t = explore.temperature
        e = np.exp((cand_scores - cand_scores.max()) / t)
        np.testing.assert_allclose(probs, e / e.sum(), rtol=1e-6, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Pruning, limits, fallback, propensities
# --------------------------------------------------------------------------------------------


@NO_EXPLAIN
@given(sc=scenarios, data=st.data())
def test_select_invariants(sc: Scenario, data: st.DataObject) -> None:
    policy = sc.policy()
    warm_up(policy, np.random.default_rng(sc.seed % 2**32), sc.n_warm)
    for t in range(4):
        q = data.draw(queries(sc.dim, policy.n_actions), label=f"query {t}")
        x = np.asarray(q["x"])
        pred = policy.predict(q["input_tokens"])
        max_cost = resolve_limit(q["cost"], pred["cost_usd"])
        max_lat = resolve_limit(q["latency"], pred["latency_s"])
        d = policy.select(x, q["input_tokens"], max_cost, max_lat, mask=q["mask"], now=1000.0 + t)
        check_decision(policy, d, x, q["input_tokens"], max_cost, max_lat, q["mask"], sc.explore)


def test_fallback_does_not_list_the_chosen_action_as_pruned() -> None:
    """Minimal repro of the fallback case of the partition property above."""
    space = ActionSpace.grid(
        [ModelSpec("a", 1, 4), ModelSpec("b", 5, 20)], strategies=("single",), n_values=(1,)
    )
    d = Policy(space, 2).select(np.zeros(2), 500, max_cost_usd=1e-9, now=0.0)
    assert d.fallback and d.index == 0
    assert d.index not in d.pruned, f"chosen action {d.index} reported as pruned: {d.pruned}"


# --------------------------------------------------------------------------------------------
# Empirical choice frequencies on a frozen state
# --------------------------------------------------------------------------------------------

# Quality grows with price; costs and latencies grow with n: a Pareto front of several actions.
LADDER = [
    ModelSpec("cheap", 0.2, 0.8, parallelism=4),
    ModelSpec("mid", 1.0, 4.0, parallelism=2),
    ModelSpec("big", 5.0, 20.0, parallelism=1),
]
TRUE_QUALITY = {"cheap": 0.45, "mid": 0.65, "big": 0.85}


def ladder_policy(learner: str, **kw: Any) -> Policy:
    space = ActionSpace.grid(LADDER, n_values=(1, 2, 4))
    return Policy(space, 4, learner=learner, reward="balanced", **kw)  # type: ignore[arg-type]


def train_ladder(policy: Policy, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = policy.n_actions
    for t in range(n):
        mask = np.zeros(k, dtype=bool)
        mask[t % k] = True
        d = policy.select(rng.normal(size=4), 500.0, mask=mask, now=float(t))
        q = TRUE_QUALITY[d.model] + 0.03 * math.log2(d.n) + 0.05 * float(rng.normal())
        policy.update(d.id, q, output_tokens=256.0 * d.n, now=float(t))


DRAWS = 4000


@pytest.mark.parametrize("learner", ["disjoint", "shared"])
@pytest.mark.parametrize(
    "explore", [Explore("epsilon", epsilon=0.3), Explore("softmax", temperature=0.3)]
)
def test_choice_frequencies_match_probabilities(learner: str, explore: Explore) -> None:
    policy = ladder_policy(learner, seed=7, capacity=DRAWS + 10, **explore.kwargs())
    train_ladder(policy, 150, seed=1)
    x = np.random.default_rng(2).normal(size=4)
    first = policy.select(x, 500.0, now=1e4)
    cand = [int(c) for c in first.candidates]
    probs = np.asarray(first.probabilities)
    assert len(cand) >= 3, "setup: expected several candidates"
    assert (probs > 0.02).sum() >= 3, f"setup: degenerate probabilities {probs}"
    counts: Counter[int] = Counter()
    for _ in range(DRAWS):
        # no update between the selects: the state the probabilities come from is frozen
        d = policy.select(x, 500.0, now=1e4)
        np.testing.assert_array_equal(d.candidates, first.candidates)
        np.testing.assert_array_equal(d.probabilities, first.probabilities)
        assert d.propensity == probs[cand.index(d.index)]
        counts[d.index] += 1
    assert set(counts) <= set(cand)
    for c, p in zip(cand, probs, strict=True):
        # 4.5 binomial standard deviations per cell (plus one count for tiny p): with the fixed
        # seeds this is deterministic, and a wrong sampler (e.g. off-by-one bucket, propensity of
        # another candidate) misses by tens of sigmas
        tol = 4.5 * math.sqrt(DRAWS * p * (1 - p)) + 1
        assert abs(counts[c] - DRAWS * p) <= tol, (c, counts[c], DRAWS * p, tol)


# --------------------------------------------------------------------------------------------
# Seeded reproducibility
# --------------------------------------------------------------------------------------------


def stream_choices(policy: Policy, seed: int, n: int) -> list[tuple[int, float, bool]]:
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        d = policy.select(rng.normal(size=4), float(rng.integers(100, 2000)), now=float(t))
        out.append((d.index, d.propensity, d.explored))
        q = TRUE_QUALITY[d.model] + 0.05 * float(rng.normal())
        policy.update(d.id, q, output_tokens=200.0 * d.n, now=float(t))
    return out


@NO_EXPLAIN
@given(
    learner=st.sampled_from(["disjoint", "shared"]),
    kind=st.sampled_from(["epsilon", "softmax"]),
    seeds=st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=2, unique=True),
    stream_seed=st.integers(0, 2**32 - 1),
)
def test_seeded_reproducibility(
    learner: str, kind: str, seeds: list[int], stream_seed: int
) -> None:
    explore = Explore(kind, epsilon=0.5, temperature=0.5)
    a = ladder_policy(learner, seed=seeds[0], **explore.kwargs())
    b = ladder_policy(learner, seed=seeds[0], **explore.kwargs())
    c = ladder_policy(learner, seed=seeds[1], **explore.kwargs())
    ca, cb, cc = (stream_choices(p, stream_seed, 150) for p in (a, b, c))
    assert ca == cb
    assert a.to_bytes() == b.to_bytes()
    # P(150 identical draws from two independent generators) is astronomically small here:
    # every step has >= 2 candidates with probability >= 0.5 / n_candidates each
    assert ca != cc


# --------------------------------------------------------------------------------------------
# Budget pacing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("learner", ["disjoint", "shared"])
def test_pacing_converges_on_a_stationary_stream(learner: str) -> None:
    """Quality grows with price, so the unbudgeted policy (quality_priority) spends freely; with
    a per-request budget of half that spend (between the cheapest and the most expensive
    action's cost) the realised average lands within 5% of the target."""
    n = 6000
    space = ActionSpace.grid(LADDER, n_values=(1, 3))
    costs = Policy(space, 4).predict(500.0)["cost_usd"]

    def run(budget: float | None) -> float:
        policy = Policy(
            space,
            4,
            learner=learner,  # type: ignore[arg-type]
            reward="quality_priority",
            budget_per_request_usd=budget,
        )
        rng = np.random.default_rng(11)
        spent = 0.0
        for t in range(n):
            d = policy.select(rng.normal(size=4), 500.0, now=float(t))
            q = TRUE_QUALITY[d.model] + 0.02 * math.log2(d.n) + 0.05 * float(rng.normal())
            r = policy.update(d.id, q, output_tokens=256.0 * d.n, now=float(t))
            spent += r.cost_usd
        assert policy.core.total_cost_usd == pytest.approx(spent, rel=1e-9)
        return spent / n

    free = run(None)
    target = free / 2
    assert costs.min() < target < costs.max(), "setup: the target must be attainable"
    paced = run(target)
    assert abs(paced - target) <= 0.05 * target, (paced, target, free)
    assert paced < free


def _paced_policy(target: float, step: float, carryover: float) -> Policy:
    space = ActionSpace([LADDER[0]], [Action("cheap", "single", 1)])
    return Policy(
        space,
        2,
        budget_per_request_usd=target,
        pacing_step=step,
        pacing_carryover=carryover,
    )


@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=60),
    step=st.floats(0.01, 0.5),
    carryover=st.sampled_from([0.0, 0.5, 3.0, 100.0]),
)
def test_pacer_matches_the_reference(costs: list[float], step: float, carryover: float) -> None:
    """Multiplier and credit after every realised cost equal the plain-Python pacer's."""
    target = 1.0
    policy = _paced_policy(target, step, carryover)
    ref = RefPacer(target, step, carryover)
    for t, c in enumerate(costs):
        d = policy.select(np.zeros(2), 10.0, now=float(t))
        policy.update(d.id, 0.5, cost_usd=c, now=float(t))
        ref.observe(c)
        assert policy.pacing_lambda == pytest.approx(ref.lam, rel=1e-12, abs=1e-12)
        assert policy.pacing_credit == pytest.approx(ref.credit, rel=1e-12, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(costs=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=80), step=st.floats(0.01, 0.5))
def test_carryover_accounts_for_every_dollar(costs: list[float], step: float) -> None:
    """With a carry-over no stream can exhaust, nothing is forgotten: the average spend is
    exactly ``target * (1 + debt / T)``, where debt is ``lambda / step`` when over budget and
    minus the credit when under it (rust/pacing.rs)."""
    target = 1.0
    policy = _paced_policy(target, step, carryover=1e6)
    for t, c in enumerate(costs):
        d = policy.select(np.zeros(2), 10.0, now=float(t))
        policy.update(d.id, 0.5, cost_usd=c, now=float(t))
    debt = policy.pacing_lambda / step if policy.pacing_lambda > 0 else -policy.pacing_credit
    avg = sum(costs) / len(costs)
    assert avg == pytest.approx(target * (1 + debt / len(costs)), rel=1e-9, abs=1e-9)


def test_carryover_zero_forgets_unspent_budget_and_spends_less() -> None:
    """Without carry-over a cheap stretch while the multiplier is 0 is forgotten: after 20
    requests under the target and 20 over it, the multiplier has climbed as if the cheap half
    never happened; with carry-over the two halves cancel. Bad carry-over values are refused."""
    costs = [0.2] * 20 + [1.8] * 20
    lams = {}
    for carry in (0.0, 100.0):
        policy = _paced_policy(1.0, 0.1, carry)
        for t, c in enumerate(costs):
            d = policy.select(np.zeros(2), 10.0, now=float(t))
            policy.update(d.id, 0.5, cost_usd=c, now=float(t))
        lams[carry] = policy.pacing_lambda
    assert lams[100.0] == pytest.approx(0.0, abs=1e-9)
    assert lams[0.0] == pytest.approx(0.1 * 20 * 0.8)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ConfigError, match="carry-over"):
            _paced_policy(1.0, 0.1, bad)
        with pytest.raises(ConfigError, match="carry-over"):
            _paced_policy(1.0, 0.1, 1.0).set_budget(per_request_usd=1.0, pacing_carryover=bad)


def test_set_budget_keeps_the_multiplier_and_caps_the_credit() -> None:
    """A new step or target leaves the current multiplier as it is (only later moves change);
    a smaller carry-over trims the credit; clearing the budget resets both."""

    def spend(policy: Policy, costs: list[float]) -> None:
        for c in costs:
            d = policy.select(np.zeros(2), 10.0, now=0.0)
            policy.update(d.id, 0.5, cost_usd=c, now=0.0)

    policy = _paced_policy(1.0, 0.1, 100.0)
    spend(policy, [2.0] * 5)  # 5 requests each 100% over: lambda = 0.1 * 5
    assert policy.pacing_lambda == pytest.approx(0.5)
    policy.set_budget(per_request_usd=1.0, pacing_step=0.25, pacing_carryover=100.0)
    assert policy.pacing_lambda == pytest.approx(0.5)
    spend(policy, [2.0])  # one more: + 0.25 * 1
    assert policy.pacing_lambda == pytest.approx(0.75)
    spend(policy, [0.0] * 13)  # 13 under: debt 3 - 13 = -10 -> credit 10
    assert policy.pacing_lambda == 0.0 and policy.pacing_credit == pytest.approx(10.0)
    policy.set_budget(per_request_usd=1.0, pacing_step=0.25, pacing_carryover=4.0)
    assert policy.pacing_credit == pytest.approx(4.0)
    policy.set_budget()
    assert policy.pacing_lambda == 0.0 and policy.pacing_credit == 0.0


# --------------------------------------------------------------------------------------------
# Save / load / pickle mid-stream
# --------------------------------------------------------------------------------------------


class Approx:
    """A float compared to 1e-9 relative: a restored learner recomputes A^-1 from A exactly,
    while the original carries Sherman-Morrison updates, so scores may differ in the last bits
    (the statistics A and b, and so ``to_bytes``, stay identical)."""

    def __init__(self, v: float) -> None:
        self.v = float(v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Approx) and math.isclose(
            self.v, other.v, rel_tol=1e-9, abs_tol=1e-12
        )

    def __repr__(self) -> str:
        return f"~{self.v!r}"


def summary(d: Decision) -> tuple[Any, ...]:
    """The discrete outcome exactly, the floats to 1e-9."""
    return (
        d.id,
        d.index,
        d.explored,
        d.fallback,
        tuple(int(c) for c in d.candidates),
        Approx(d.propensity),
        Approx(d.score),
        tuple(Approx(v) for v in d.probabilities),
    )


@dataclass
class Driver:
    """Feeds one policy a deterministic stream; pending decisions are answered out of order."""

    policy: Policy
    pending: list[tuple[int, int]]  # (decision id, n)

    def run(self, seed: int, t0: int, steps: int, answer_p: float) -> list[tuple[Any, ...]]:
        rng = np.random.default_rng(seed)
        p = self.policy
        out: list[tuple[Any, ...]] = []
        for t in range(t0, t0 + steps):
            x = rng.normal(size=p.dim)
            tokens = float(rng.integers(50, 3000))
            pred = p.predict(tokens)["cost_usd"]
            limit = float(np.quantile(pred, rng.random())) if rng.random() < 0.3 else None
            d = p.select(x, tokens, max_cost_usd=limit, now=float(t))
            out.append(summary(d))
            self.pending.append((d.id, d.n))
            # answer a random older decision (never the newest before the last step)
            if len(self.pending) > 1 and rng.random() < answer_p:
                did, n = self.pending.pop(int(rng.integers(len(self.pending) - 1)))
                out.append(self.answer(rng, did, n, t))
        return out

    def answer(self, rng: np.random.Generator, did: int, n: int, t: int) -> tuple[Any, ...]:
        used = float(rng.integers(1, n + 1))
        r = self.policy.update(
            did,
            float(rng.random()),
            output_tokens=float(rng.integers(1, 600)) * used,
            samples_used=used,
            latency_s=float(rng.uniform(0.5, 20)),
            now=float(t),
        )
        return ("update", did, r)

    def flush(self, seed: int, t: int) -> list[tuple[Any, ...]]:
        rng = np.random.default_rng(seed)
        out = [self.answer(rng, did, n, t) for did, n in reversed(self.pending)]
        self.pending.clear()
        return out


def restore(policy: Policy, how: str) -> Policy:
    if how == "bytes":
        return Policy.from_bytes(policy.to_bytes())
    if how == "pickle":
        return pickle.loads(pickle.dumps(policy))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.uniscale"
        policy.save(path)
        return Policy.load(path)


@NO_EXPLAIN
@given(
    learner=st.sampled_from(["disjoint", "shared"]),
    explore=explorations,
    seed=st.integers(0, 2**63),
    stream_seed=st.integers(0, 2**32 - 1),
    before=st.integers(1, 40),
    after=st.integers(1, 40),
    answer_p=st.floats(0.0, 1.0),
    how=st.sampled_from(["bytes", "file", "pickle"]),
)
def test_save_load_round_trip_mid_stream(
    learner: str,
    explore: Explore,
    seed: int,
    stream_seed: int,
    before: int,
    after: int,
    answer_p: float,
    how: str,
) -> None:
    space = ActionSpace.grid(LADDER, n_values=(1, 2, 4))
    original = Policy(
        space,
        3,
        learner=learner,
        seed=seed,  # type: ignore[arg-type]
        **explore.kwargs(),
    )
    a = Driver(original, [])
    a.run(stream_seed, 0, before, answer_p)
    assert original.n_pending >= 1  # the newest decision is never answered before the save

    b = Driver(restore(original, how), list(a.pending))
    assert b.policy.to_bytes() == original.to_bytes()
    assert b.policy.n_pending == original.n_pending == len(a.pending)
    assert b.policy.actions == original.actions
    assert b.policy.reward_weights == original.reward_weights

    # both copies continue identically, including feedback for decisions made before the save
    assert a.run(stream_seed + 1, before, after, answer_p) == b.run(
        stream_seed + 1, before, after, answer_p
    )
    assert a.flush(stream_seed + 2, before + after) == b.flush(stream_seed + 2, before + after)
    assert original.n_pending == b.policy.n_pending == 0
    assert a.policy.to_bytes() == b.policy.to_bytes()
