"""The planner (issue #15): Monte Carlo against the NumPy reference and closed forms, the rules'
defining properties, determinism, scale invariance, errors, the config and the CLI."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_reference import closed_form_cost_latency, simulate_point
from plan_reference import plan_choice as ref_plan_choice

from uniscale import ConfigError, NonFiniteError, ShapeError, plan
from uniscale._core import plan_rules, simulate_plan
from uniscale.planner import (
    PAPER_CONFIG,
    CallModel,
    Candidate,
    Plan,
    Scenario,
    bootstrap_means,
    candidates_from_table,
    load_config,
    parse_config,
    plan_actions,
)

PAPER_CALL = np.array([1.25e-6, 1e-5, 5e-4, 5e-3, 1024.0, 64.0, 2048.0, 128.0])


def zero_or(lo: float, hi: float) -> st.SearchStrategy[float]:
    """0, or a float in [lo, hi]: no subnormal scales, whose squares underflow and make a
    standard deviation (the tests' yardstick) read 0."""
    return st.just(0.0) | st.floats(lo, hi)


# Per-call models: prices and latencies from zero to the paper's range; token counts small to
# keep draws cheap, with spreads up to twice the mean so that clipping at 1 token matters.
calls = st.tuples(
    zero_or(1e-9, 2e-5),
    zero_or(1e-9, 2e-5),
    zero_or(1e-6, 1e-2),
    zero_or(1e-6, 1e-2),
    zero_or(1e-3, 300),
    zero_or(1e-3, 2),
    zero_or(1e-3, 300),
    zero_or(1e-3, 2),
).map(lambda t: np.array([t[0], t[1], t[2], t[3], t[4], t[4] * t[5], t[6], t[6] * t[7]]))


def tolerance(draws: np.ndarray, trials: int) -> float:
    """Five standard errors of a difference of two independent means of ``trials`` draws."""
    return 5.0 * float(draws.std()) * math.sqrt(2.0 / trials) + 1e-12 * float(abs(draws).max())


@given(
    call=calls,
    k=st.integers(1, 12),
    par=st.integers(1, 5),
    acc=st.tuples(st.floats(-0.5, 1.5), zero_or(1e-4, 0.5)),
    latency=st.sampled_from(["rounds", "paper_mean"]),
    seed=st.integers(0, 2**32),
)
def test_monte_carlo_matches_the_numpy_reference(
    call: np.ndarray,
    k: int,
    par: int,
    acc: tuple[float, float],
    latency: str,
    seed: int,
) -> None:
    trials = 3000
    est = simulate_plan(
        call[None, :],
        [k],
        [par],
        [acc[0]],
        accuracy_sd=[acc[1]],
        trials=trials,
        seed=seed,
        latency=latency,  # type: ignore[arg-type]
    )
    ref = simulate_point(call, k, par, acc[0], acc[1], trials, np.random.default_rng(seed), latency)
    band = 5 * math.sqrt(2 * 0.025 * 0.975 / trials)
    for j, draws in enumerate(ref):
        # accuracies lie in [0, 1]: a handful of rare draws (an event of probability 1e-4)
        # can move a mean by a few / trials without showing in the other sample's spread
        rare = 3.0 / trials if j == 2 else 0.0
        assert abs(est.mean[0, j] - draws.mean()) <= tolerance(draws, trials) + rare
        # the percentile ends, distribution-free: the reference's empirical CDF at the Rust
        # 2.5% / 97.5% points is within five binomial standard errors of 2.5% / 97.5%
        for got, q in ((est.lo[0, j], 0.025), (est.hi[0, j], 0.975)):
            below = float(np.mean(draws < got - 1e-12 * abs(got)))
            at_or_below = float(np.mean(draws <= got + 1e-12 * abs(got)))
            assert below <= q + band and at_or_below >= q - band, (j, got, q, below)


@given(call=calls, k=st.integers(1, 40), seed=st.integers(0, 2**32))
def test_means_agree_with_closed_forms_within_their_intervals(
    call: np.ndarray, k: int, seed: int
) -> None:
    trials = 2000
    # P = 1: latency is a sum too; E[C] has a closed form for any P
    est = simulate_plan(call[None, :], [k], [1], [0.5], accuracy_sd=[0.1], trials=trials, seed=seed)
    ec, et = closed_form_cost_latency(call, k)
    # the spread of the draws, from the NumPy reference (the Rust core reports percentiles,
    # which say nothing about the spread of a distribution with an atom at one token)
    ref = simulate_point(call, k, 1, 0.5, 0.1, trials, np.random.default_rng(seed))
    for j, exact in ((0, ec), (1, et)):
        # the closed form lies in the Monte Carlo mean's confidence interval (five standard
        # errors wide on each side); 1e-4 relative for a mean 3.5 sd below the clip at one
        # token, whose rare exceedances both samples may miss entirely (excess ~6e-5 sd)
        se = float(ref[j].std()) / math.sqrt(trials)
        assert abs(est.mean[0, j] - exact) <= 5 * se + 1e-4 * abs(exact), (j, exact, se)


def test_paper_model_gpt5_numbers() -> None:
    """GPT-5 of the paper at k = 4, P = 4: one round; E[C] = 4 x $0.02176."""
    est = simulate_plan(PAPER_CALL[None, :], [4], [4], [0.94], accuracy_sd=[0.02], trials=20000)
    assert est.mean[0, 0] == pytest.approx(4 * (1.25e-6 * 1024 + 1e-5 * 2048), rel=2e-3)
    # one round: the slowest of four calls of mean 10.75 s (sd ~0.64 s) is ~1.03 sd above
    assert 10.75 + 0.5 < est.mean[0, 1] < 10.75 + 1.0
    assert 0.94 < est.mean[0, 2] < 1.0


@st.composite
def candidate_sets(draw: st.DrawFn) -> list[Candidate]:
    n = draw(st.integers(1, 14))
    out = []
    for i in range(n):
        c = draw(calls)
        call = CallModel(c[0] * 1e6, c[1] * 1e6, c[2], c[3], (c[4], c[5]), (c[6], c[7]))
        measured = draw(st.booleans())
        k = draw(st.integers(1, 8))
        par = draw(st.integers(1, 4))
        if measured:
            reps = np.array(draw(st.lists(st.floats(0, 1), min_size=1, max_size=20)))
            out.append(
                Candidate(f"m{i}", "s", k, call, par, float(reps.mean()), accuracy_replicates=reps)
            )
        else:
            acc = draw(st.floats(0, 1))
            sd = draw(st.floats(0, 0.3))
            out.append(Candidate(f"m{i}", "best_of_k", k, call, par, acc, accuracy_sd=sd))
    return out


scenarios = st.builds(
    Scenario,
    name=st.just("s"),
    max_cost_share=st.none() | st.floats(0.05, 1.5),
    max_latency_share=st.none() | st.floats(0.05, 1.5),
    min_accuracy=st.floats(0, 1),
)


def _check_plan(p: Plan) -> None:
    check = p.pessimistic if p.risk == "quantile" else p.mean
    for s in p.scenarios:
        feas = set(s.feasible)
        for i in s.feasible:
            assert check[i, 0] <= s.max_cost_usd
            assert check[i, 1] <= s.max_latency_s
            assert check[i, 2] >= s.min_accuracy
        for i in set(range(len(p.candidates))) - feas:
            assert (
                check[i, 0] > s.max_cost_usd
                or check[i, 1] > s.max_latency_s
                or check[i, 2] < s.min_accuracy
            )
        m = p.mean
        for i in s.front:
            assert i in feas
            for j in s.feasible:
                dominates = (
                    m[j, 2] >= m[i, 2]
                    and m[j, 0] <= m[i, 0]
                    and m[j, 1] <= m[i, 1]
                    and (m[j, 2] > m[i, 2] or m[j, 0] < m[i, 0] or m[j, 1] < m[i, 1])
                )
                assert not dominates, (i, j)
        for rule, pick in s.picks.items():
            if not feas:
                assert pick is None
            elif rule in ("accuracy_max", "cube"):
                assert pick in feas
            elif pick is not None:
                assert pick in s.front
            elif rule == "utopia":
                raise AssertionError("utopia picks whenever something is feasible")
            else:
                assert len(s.front) < 3


@settings(max_examples=40)
@given(
    cands=candidate_sets(),
    sc=st.lists(scenarios, min_size=1, max_size=3),
    risk=st.sampled_from(["mean", "quantile"]),
)
def test_every_reported_point_is_feasible_and_no_front_point_dominated(
    cands: list[Candidate], sc: list[Scenario], risk: str
) -> None:
    sc = [dataclasses.replace(s, name=f"s{i}") for i, s in enumerate(sc)]
    p = plan(cands, sc, trials=50, seed=1, risk=risk)  # type: ignore[arg-type]
    _check_plan(p)


@settings(max_examples=40)
@given(
    cands=candidate_sets(),
    sc=scenarios,
    scale=st.floats(1e-3, 1e3),
    lat_scale=st.floats(1e-3, 1e3),
)
def test_scaling_all_costs_changes_no_rule_choice(
    cands: list[Candidate], sc: Scenario, scale: float, lat_scale: float
) -> None:
    """Costs (prices and an absolute C_max) times a constant, latencies likewise: every rule
    picks the same candidate (same seed, so the same token draws)."""
    base = plan(cands, [sc], trials=40, seed=3)
    c_max = float(base.mean[:, 0].max()) * (sc.max_cost_share or 2.0) or 1.0
    sc_abs = dataclasses.replace(sc, max_cost_share=None, max_cost_usd=c_max)
    scaled_cands = [
        dataclasses.replace(
            c,
            call=dataclasses.replace(
                c.call,
                price_in_per_mtok=c.call.price_in_per_mtok * scale,
                price_out_per_mtok=c.call.price_out_per_mtok * scale,
                latency_in_s_per_token=c.call.latency_in_s_per_token * lat_scale,
                latency_out_s_per_token=c.call.latency_out_s_per_token * lat_scale,
            ),
        )
        for c in cands
    ]
    sc_scaled = dataclasses.replace(sc_abs, max_cost_usd=c_max * scale)
    a = plan(cands, [sc_abs], trials=40, seed=3).scenarios[0]
    b = plan(scaled_cands, [sc_scaled], trials=40, seed=3).scenarios[0]
    assert a.picks == b.picks
    assert a.front == b.front


def test_deterministic_for_a_seed_and_independent_of_threads_and_batching() -> None:
    cfg = load_config(PAPER_CONFIG)
    cands = cfg.candidates[::7]
    one = plan(cands, cfg.scenarios, trials=100, seed=5, threads=1)
    two = plan(cands, cfg.scenarios, trials=100, seed=5, threads=2, batch_calls=500)
    again = plan(cands, cfg.scenarios, trials=100, seed=5)
    for x in (two, again):
        for arr in ("mean", "lo", "hi", "pessimistic"):
            assert np.array_equal(getattr(one, arr), getattr(x, arr))
        assert [s.picks for s in one.scenarios] == [s.picks for s in x.scenarios]
    other = plan(cands, cfg.scenarios, trials=100, seed=6)
    assert not np.array_equal(one.mean, other.mean)


@settings(max_examples=60)
@given(
    st.integers(1, 20).flatmap(
        lambda n: st.tuples(*(st.lists(st.floats(0, 1), min_size=n, max_size=n) for _ in range(3)))
    ),
    st.sampled_from([0.3, 0.7, math.inf]),
    st.sampled_from([0.3, 0.7, math.inf]),
    st.sampled_from([0.0, 0.4]),
)
def test_rules_match_the_reference(
    pts: tuple[list[float], list[float], list[float]],
    max_cost: float,
    max_latency: float,
    min_acc: float,
) -> None:
    a, c, lat = (np.array(v) for v in pts)
    got = plan_rules(a, c, lat, max_cost=max_cost, max_latency=max_latency, min_accuracy=min_acc)
    feas, fr, picks = ref_plan_choice(a, c, lat, max_cost, max_latency, min_acc)
    assert got.feasible.tolist() == feas
    assert got.front.tolist() == sorted(fr)
    assert got.picks == picks


def test_knee_rules_on_a_bent_front() -> None:
    """A front that bends at one point: every knee finds it; the reference code's knee ignores
    accuracy in its cross product, so a bend in accuracy alone is invisible to it."""
    cost = np.arange(1.0, 7.0) / 8  # dyadic: the differences below are exact
    lat = cost.copy()  # on a straight line in (cost, latency)
    acc = np.array([0.2, 0.5, 0.8, 0.82, 0.84, 0.86])  # bends at index 2
    got = plan_rules(acc, cost, lat, max_cost=1.0, max_latency=1.0).picks
    assert got["knee"] == 2 and got["knee_chord"] == 2
    # (cost, latency) is a straight line: every 2-D cross product is exactly 0, so every
    # interior point has curvature 0 and the reference code's rule returns the first one
    assert got["knee_paper"] == 1


def test_errors_are_typed_and_name_the_problem() -> None:
    ok = PAPER_CALL[None, :]
    with pytest.raises(NonFiniteError, match="output_tokens_sd"):
        bad = ok.copy()
        bad[0, 7] = np.nan
        simulate_plan(bad, [1], [1], [0.5], accuracy_sd=[0.1])
    with pytest.raises(ConfigError, match="k"):
        simulate_plan(ok, [0], [1], [0.5], accuracy_sd=[0.1])
    with pytest.raises(ConfigError, match=">= 0"):
        bad = ok.copy()
        bad[0, 0] = -1
        simulate_plan(bad, [1], [1], [0.5], accuracy_sd=[0.1])
    with pytest.raises(ShapeError, match="8"):
        simulate_plan(ok[:, :7], [1], [1], [0.5], accuracy_sd=[0.1])
    with pytest.raises(ShapeError):
        simulate_plan(ok, [1, 2], [1], [0.5], accuracy_sd=[0.1])
    with pytest.raises(ConfigError, match="exactly one"):
        simulate_plan(ok, [1], [1], [0.5])
    with pytest.raises(ConfigError, match="trials"):
        simulate_plan(ok, [1], [1], [0.5], accuracy_sd=[0.1], trials=0)
    with pytest.raises(ConfigError, match="simulated calls"):
        simulate_plan(ok, [65536], [1], [0.5], accuracy_sd=[0.1], trials=10_000_000)
    with pytest.raises(NonFiniteError):
        simulate_plan(ok, [1], [1], [0.5], accuracy_replicates=[[0.1, np.inf]])
    with pytest.raises(ConfigError, match="max_cost"):
        plan_rules([0.5], [1.0], [1.0], max_cost=0.0)
    with pytest.raises(NonFiniteError):
        plan_rules([np.nan], [1.0], [1.0])
    est = simulate_plan(np.zeros((0, 8)), np.zeros(0, dtype=np.int64), [], [], accuracy_sd=[])
    assert len(est) == 0 and est.mean.shape == (0, 3)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    base = {"scenario": [{"name": "s"}], "model": []}
    with pytest.raises(ConfigError, match=r"unknown key.*'bogus'"):
        parse_config({**base, "plan": {"bogus": 1}})
    with pytest.raises(ConfigError, match="price_in_per_mtok"):
        parse_config({**base, "model": [{"name": "m", "accuracy": [0.5, 0.1]}]})
    with pytest.raises(ConfigError, match="max_cost_usd must be > 0"):
        parse_config({"scenario": [{"name": "s", "max_cost_usd": -1}]})
    with pytest.raises(ConfigError, match="at least one"):
        parse_config({"scenario": []})
    p = tmp_path / "bad.toml"
    p.write_text("[plan\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_paper_config_loads_nine_models_and_three_scenarios() -> None:
    cfg = load_config(PAPER_CONFIG)
    assert len({c.model for c in cfg.candidates}) == 9
    assert {c.k for c in cfg.candidates} == set(range(4, 129, 4))
    assert [s.name for s in cfg.scenarios] == [
        "cost-constrained",
        "latency-constrained",
        "accuracy-critical",
    ]
    p = plan(cfg.candidates, cfg.scenarios, trials=60)
    _check_plan(p)
    for s in p.scenarios:
        # across nine models the front is a strict subset of the feasible set
        assert 0 < len(s.front) < len(s.feasible)


def test_bootstrap_is_paired_and_centred() -> None:
    rng = np.random.default_rng(0)
    q = (rng.random((400, 3)) < [0.2, 0.5, 0.8]).astype(float)
    q[:, 2] = q[:, 1]  # identical columns get identical replicates (same resampled rows)
    reps = bootstrap_means(q, 300, seed=1)
    assert reps.shape == (3, 300)
    assert np.array_equal(reps[1], reps[2])
    assert np.allclose(reps.mean(axis=1), q.mean(axis=0), atol=0.01)
    se = np.sqrt(q.mean(0) * (1 - q.mean(0)) / 400)
    assert np.allclose(reps.std(axis=1), se, rtol=0.2)


def test_measured_candidates_from_the_real_table() -> None:
    from uniscale.lab.datasets import table_source

    table, models, _ = table_source("real")
    cands = candidates_from_table(table, models, bootstrap=100)
    assert len(cands) == len(table.actions)
    for c, a, col in zip(cands, table.actions, table.quality.T, strict=True):
        assert (c.model, c.strategy, c.k) == (a.model, a.strategy, a.n)
        assert c.accuracy == pytest.approx(col.mean())
    p = plan(cands, [Scenario("all")], trials=2000)
    # the Monte Carlo cost and latency of each action are within 10% of the table's measured
    # means (per-call spreads near the mean: ~2% standard error at 2000 trials); adaptive
    # actions are planned at the samples they were measured to use (calls rounded up, priced
    # down to the measured mean), so their cost matches too and their latency may only be
    # higher (a rounded-up call more)
    measured_lat = table.latency_s.mean(axis=0)
    for c, m, sim in zip(cands, measured_lat, p.mean[:, 1], strict=True):
        if c.strategy != "adaptive_consistency":
            assert sim == pytest.approx(m, rel=0.1), c.label
        else:
            assert sim >= 0.9 * m, c.label
    measured = table.cost_usd.mean(axis=0)
    for c, m, sim in zip(cands, measured, p.mean[:, 0], strict=True):
        assert sim == pytest.approx(m, rel=0.1), c.label
    adaptive = [c for c in cands if c.strategy == "adaptive_consistency" and c.k > 1]
    # early stops were measured: some adaptive action is planned below its cap's price
    assert any(c.call.price_out_per_mtok < models[c.model].price_out_per_mtok for c in adaptive)
    actions = plan_actions(p, "all")
    assert actions and all(a in table.actions for a in actions)


def test_cli_prints_each_scenario_and_writes_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uniscale.cli import main

    assert main(["plan", "--trials", "40", "--out", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    for name in ("cost-constrained", "latency-constrained", "accuracy-critical"):
        assert f"scenario {name}" in out
        assert (tmp_path / f"{name}_3d.svg").read_text().startswith("<svg")
    assert "picks: accuracy_max=" in out
    assert (tmp_path / "plan.json").exists()
    with pytest.raises(SystemExit, match="error"):
        main(["plan", "--config", str(tmp_path / "missing.toml"), "-q"])


def test_cli_plans_from_a_saved_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from uniscale import ActionSpace, Featurizer, ModelSpec, Policy
    from uniscale.cli import main

    space = ActionSpace.grid(
        [ModelSpec("small", 0.1, 0.2), ModelSpec("large", 1.0, 3.0)], n_values=(1, 2, 4)
    )
    f = Featurizer(64)
    policy = Policy(space, 64, feature_version=f.version)
    rng = np.random.default_rng(0)
    for t in range(40):
        d = policy.select(f.featurize(f"question {t}"), 50.0, now=float(t))
        policy.update(d.id, quality=float(rng.uniform() < 0.6), output_tokens=40.0, now=float(t))
    state = tmp_path / "policy.bin"
    policy.save(state)
    args = ["plan", "--policy", str(state), "--trials", "40", "--no-plots", "-q"]
    assert main([*args, "--prompt", "What is 17 * 23?", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert f"policy {state} for a" in out and "small/single/1" in out
    assert json.loads((tmp_path / "o" / "plan.json").read_text())
    with pytest.raises(SystemExit, match="go together"):
        main(args)
    with pytest.raises(SystemExit, match="alternatives"):
        main([*args, "--prompt", "x", "--table", "real"])
    other = Policy(space, 64, feature_version="my-embeddings-v1")
    other.save(tmp_path / "other.bin")
    with pytest.raises(SystemExit, match="my-embeddings-v1"):
        main(["plan", "--policy", str(tmp_path / "other.bin"), "--prompt", "x", "-q"])


def test_policy_from_plan_restricts_or_seeds_the_action_space() -> None:
    from uniscale import ActionSpace, Policy
    from uniscale.lab.datasets import table_source

    table, models, _ = table_source("real")
    p = plan(candidates_from_table(table, models, bootstrap=50), [Scenario("open")], trials=100)
    front = plan_actions(p, "open")
    pol = Policy.from_plan(p, "open", models, dim=table.X.shape[1])
    assert pol.actions == front and len(front) < len(table.actions)
    picks = Policy.from_plan(p, "open", list(models.values()), dim=4, keep="picks").actions
    assert set(picks) <= set(front) or set(picks) <= set(table.actions)
    assert len(picks) <= len(front)
    # prior: every action kept, each planned one observed once at its planned accuracy
    prior = Policy.from_plan(
        p, "open", models, dim=4, mode="prior", actions=table.actions, prior_weight=2.0
    )
    assert prior.actions == table.actions
    fresh = Policy(ActionSpace(list(models.values()), table.actions), 4)
    mean_prior, _ = prior.core.quality_scores(np.zeros(4))
    mean_fresh, _ = fresh.core.quality_scores(np.zeros(4))
    assert np.ptp(mean_fresh) == pytest.approx(0.0, abs=1e-12)  # no information yet
    # seeded: the learner's quality means follow the planned accuracies
    assert np.corrcoef(mean_prior, p.mean[:, 2])[0, 1] > 0.8
    with pytest.raises(ConfigError, match="actions="):
        Policy.from_plan(p, "open", models, dim=4, mode="prior")
    with pytest.raises(ConfigError, match="ModelSpec"):
        Policy.from_plan(p, "open", {}, dim=4)
    empty = plan(p.candidates[:3], [Scenario("none", min_accuracy=1.1)], trials=20)
    with pytest.raises(ConfigError, match="nothing feasible"):
        Policy.from_plan(empty, "none", models, dim=4)


def test_candidates_from_a_live_policy_follow_its_cost_model_and_learner() -> None:
    from uniscale import ActionSpace, Policy
    from uniscale.lab.datasets import table_source
    from uniscale.planner import candidates_from_policy

    table, models, _ = table_source("real")
    pol = Policy(ActionSpace(list(models.values()), table.actions), table.X.shape[1])
    x, tokens = table.X[0], float(table.input_tokens[0])

    def width(cands: list[Candidate]) -> float:
        return float(np.mean([np.ptp(np.asarray(c.accuracy_replicates)) for c in cands]))

    before = candidates_from_policy(pol, x, tokens)
    for t in range(40):
        for col in range(len(table.actions)):
            pol.observe(
                table.X[t], col, input_tokens=float(table.input_tokens[t]), **table.feedback(t, col)
            )
    cands = candidates_from_policy(pol, x, tokens)
    assert [(c.model, c.strategy, c.k) for c in cands] == [
        (a.model, a.strategy, a.n) for a in table.actions
    ]
    mean, _ = pol.core.quality_scores(x)
    assert [c.accuracy for c in cands] == pytest.approx(np.clip(mean, 0, 1).tolist())
    assert width(cands) < width(before)  # evidence narrows the accuracy intervals
    p = plan(cands, [Scenario("open")], trials=2000)
    pred = pol.predict(tokens)
    assert p.mean[:, 0] == pytest.approx(pred["cost_usd"], rel=0.1)
    # latency: at least the predicted rounds (waiting for the slowest call of a round)
    assert np.all(p.mean[:, 1] >= 0.9 * pred["latency_s"])
    with pytest.raises(ConfigError, match="features"):
        candidates_from_policy(pol, x[:2], tokens)
