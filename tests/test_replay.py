"""Outcome tables, offline replay, baselines, AIQ, and the demo / CLI built on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uniscale import outcomes
from uniscale.cli import main as cli_main
from uniscale.lab import replay, report, sim
from uniscale.lab.demo import run_demo
from uniscale.outcomes import Request, Sample
from uniscale.space import Action, ActionSpace, ModelSpec

M = ModelSpec("m", price_in_per_mtok=1.0, price_out_per_mtok=2.0, parallelism=2)
FANOUT = ModelSpec("f", price_in_per_mtok=1.0, price_out_per_mtok=2.0, bills_prompt_once=False)


def s(
    answer: str | None, correct: bool, out: int = 10, score: float = 0.0, lat: float = 1.0
) -> Sample:
    return Sample(answer, correct, out, score, lat)


def request(samples: list[Sample], greedy: Sample | None = None, model: str = "m") -> Request:
    return Request(
        "r",
        np.ones(2) / np.sqrt(2),
        100,
        "7",
        {model: samples},
        {model: greedy} if greedy else {},
    )


def test_single_uses_greedy_and_costs_one_call() -> None:
    r = request([s("1", False)], greedy=s("7", True, out=20, lat=0.5))
    q, cost, lat, out, used = outcomes.action_outcome(
        Action("m", "single", 1), M, r.samples["m"], r.greedy["m"], "7", 100
    )
    assert (q, out, used, lat) == (1.0, 20.0, 1.0, 0.5)
    assert cost == pytest.approx((100 * 1.0 + 20 * 2.0) / 1e6)


def test_self_consistency_votes_and_bills_prompt_once() -> None:
    pool = [s("7", True), s("3", False), s("3", False), s("7", True, lat=3.0)]
    q, cost, _lat, out, used = outcomes.action_outcome(
        Action("m", "self_consistency", 3), M, pool, None, "7", 100
    )
    assert q == 0.0  # "3" wins 2-1 among the first three
    assert used == 3 and out == 30
    assert cost == pytest.approx((100 + 30 * 2.0) / 1e6)
    # parallelism 2: rounds of two samples, each as slow as its slowest sample
    q4, _, lat4, _, _ = outcomes.action_outcome(
        Action("m", "self_consistency", 4), M, pool, None, "7", 100
    )
    assert q4 == 1.0  # 2-2 tie: the earliest first occurrence ("7") wins
    assert lat4 == pytest.approx(1.0 + 3.0)


def test_fanout_bills_the_prompt_per_sample() -> None:
    pool = [s("7", True)] * 4
    _, cost, *_ = outcomes.action_outcome(
        Action("f", "self_consistency", 4), FANOUT, pool, None, "7", 100
    )
    assert cost == pytest.approx((4 * 100 + 40 * 2.0) / 1e6)


def test_best_of_n_takes_the_highest_score() -> None:
    pool = [s("1", False, score=0.1), s("7", True, score=0.9), s("2", False, score=0.5)]
    q, *_ = outcomes.action_outcome(Action("m", "best_of_n", 3), M, pool, None, "7", 100)
    assert q == 1.0
    q2, *_ = outcomes.action_outcome(
        Action("m", "best_of_n", 2), M, [pool[0], pool[2], pool[1]], None, "7", 100
    )
    assert q2 == 0.0


def test_adaptive_stops_early_and_counts_only_used_samples() -> None:
    pool = [s("7", True)] * 8
    q, cost, _, out, used = outcomes.action_outcome(
        Action("m", "adaptive_consistency", 8), M, pool, None, "7", 100
    )
    assert q == 1.0 and used < 8 and out == 10 * used
    assert cost == pytest.approx((100 + out * 2.0) / 1e6)


def test_too_few_recorded_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs 4 samples"):
        outcomes.action_outcome(Action("m", "self_consistency", 4), M, [s("7", True)], None, "7", 1)


@pytest.fixture(scope="module")
def small_table() -> tuple[outcomes.OutcomeTable, dict[str, ModelSpec]]:
    models = {m.spec.name: m.spec for m in sim.DEFAULT_SIM_MODELS}
    space = ActionSpace.grid(list(models.values()), n_values=(1, 2, 4))
    return outcomes.build_table(
        sim.simulate(400, 8, seed=3), space.ordered_actions(), models
    ), models


def test_build_table_is_deterministic_and_seed_reshuffles(
    small_table: tuple[outcomes.OutcomeTable, dict[str, ModelSpec]],
) -> None:
    table, models = small_table
    reqs = sim.simulate(400, 8, seed=3)
    again = outcomes.build_table(reqs, table.actions, models)
    np.testing.assert_array_equal(again.quality, table.quality)
    shuffled = outcomes.build_table(reqs, table.actions, models, seed=1)
    single = [i for i, a in enumerate(table.actions) if a.strategy == "single"]
    np.testing.assert_array_equal(shuffled.quality[:, single], table.quality[:, single])
    assert not np.array_equal(shuffled.quality, table.quality)


def test_baselines_and_oracle_bounds(
    small_table: tuple[outcomes.OutcomeTable, dict[str, ModelSpec]],
) -> None:
    table, models = small_table
    results = replay.compare(table, models, reward="cost_sensitive")
    by = {r.name: r for r in results}
    oracle = by["oracle"].reward
    for r in results:
        assert np.all(r.reward <= oracle + 1e-12), r.name
        assert len(r.chosen) == table.n_requests
    scales = replay.Scales.from_table(table)
    _avail, w = replay.schedule(table, [], "cost_sensitive")
    r_mat = replay.reward_matrix(table, w, scales)
    assert by["best_fixed"].reward.sum() == pytest.approx(r_mat.sum(axis=0).max())
    assert by["uniscale"].reward.sum() > by["random"].reward.sum()
    # best_per_kind: per kind, the best column in hindsight (brute force over the kinds)
    kinds = np.asarray(table.kinds)
    assert len(set(table.kinds)) > 1
    expected = sum(r_mat[kinds == k].sum(axis=0).max() for k in set(table.kinds))
    per_kind = by["best_per_kind"]
    assert per_kind.reward.sum() == pytest.approx(expected)
    assert per_kind.reward.sum() >= by["best_fixed"].reward.sum() - 1e-9
    for k, action in per_kind.extra["actions"].items():
        assert {str(table.actions[c]) for c in per_kind.chosen[kinds == k]} == {action}


def _xfit_reference(kinds: list[str], r: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Plain loops: each request gets its kind's best column on the other folds' requests."""
    chosen = np.zeros(len(kinds), dtype=np.int64)
    for t, kind in enumerate(kinds):
        fit = [u for u in range(len(kinds)) if fold[u] != fold[t] and kinds[u] == kind]
        if not fit:
            fit = [u for u in range(len(kinds)) if fold[u] != fold[t]]
        chosen[t] = int(np.argmax(r[fit].sum(axis=0)))
    return chosen


@pytest.mark.parametrize("folds", [2, 5])
def test_best_per_kind_xfit_chooses_each_kind_out_of_sample(
    small_table: tuple[outcomes.OutcomeTable, dict[str, ModelSpec]], folds: int
) -> None:
    table, _models = small_table
    scales = replay.Scales.from_table(table)
    avail, w = replay.schedule(table, [], "balanced")
    r_mat = replay.reward_matrix(table, w, scales)
    oracle = r_mat.max(axis=1)
    run = replay.best_per_kind_xfit_run(table, r_mat, avail, oracle, folds=folds, seed=3)
    fold = replay.xfit_folds(table.n_requests, folds, 3)
    assert np.bincount(fold).max() - np.bincount(fold).min() <= 1
    # independent of the permutation replay sources order a seed's rows with
    assert not np.array_equal(fold, np.random.default_rng(3).permutation(table.n_requests) % folds)
    assert not np.array_equal(fold, replay.xfit_folds(table.n_requests, folds, 4))
    np.testing.assert_array_equal(run.chosen, _xfit_reference(table.kinds, r_mat, fold))
    # a request's own outcome never decides its action: make column 0 hugely rewarding on
    # request 0 alone; request 0's choice stays, and every request of its kind in the other
    # folds (whose choice was fitted on request 0) switches to column 0
    boosted = r_mat.copy()
    boosted[0, 0] += 1e6
    again = replay.best_per_kind_xfit_run(table, boosted, avail, oracle, folds=folds, seed=3)
    assert again.chosen[0] == run.chosen[0]
    other = (fold != fold[0]) & (np.asarray(table.kinds) == table.kinds[0])
    assert np.all(again.chosen[other] == 0)
    # hindsight per kind is an upper bound of any per-kind choice made elsewhere
    hind = replay.best_per_kind_run(table, r_mat, avail, oracle)
    assert run.reward.sum() <= hind.reward.sum() + 1e-9
    with pytest.raises(ValueError, match="folds"):
        replay.best_per_kind_xfit_run(table, r_mat, avail, oracle, folds=1)
    # restricted to one-sample actions: the same choice rule over those columns only
    single = [i for i, a in enumerate(table.actions) if a.n == 1]
    n1 = replay.best_per_kind_xfit_run(
        table, r_mat, avail, oracle, folds=folds, seed=3, columns=single, name="n1"
    )
    ref = _xfit_reference(table.kinds, r_mat[:, single], fold)
    np.testing.assert_array_equal(n1.chosen, np.asarray(single)[ref])
    assert n1.name == "n1"


def test_compare_reports_the_out_of_sample_rows(
    small_table: tuple[outcomes.OutcomeTable, dict[str, ModelSpec]],
) -> None:
    table, models = small_table
    by = {r.name: r for r in replay.compare(table, models, reward="balanced", seed=2)}
    n1 = {i for i, a in enumerate(table.actions) if a.n == 1}
    assert set(by["best_per_kind_xfit_n1"].chosen.tolist()) <= n1
    lines, payload = report.targets([list(by.values())], [table], {})
    assert any(line.startswith("headroom:") for line in lines)
    gap = payload["tts_value_per_kind_xfit_vs_n1"]["diff_per_request"][0]
    assert gap == pytest.approx(
        by["best_per_kind_xfit"].reward.mean() - by["best_per_kind_xfit_n1"].reward.mean()
    )


@pytest.mark.parametrize("side_observations", [False, True])
def test_retired_model_is_never_chosen_after_the_event(
    small_table: tuple[outcomes.OutcomeTable, dict[str, ModelSpec]], side_observations: bool
) -> None:
    # with side observations too: their loop must not disturb the event schedule
    table, models = small_table
    ev = [
        replay.Event(200, "retire_model", "medium"),
        replay.Event(300, "set_reward", "quality_priority"),
    ]
    results = replay.compare(table, models, events=ev, side_observations=side_observations)
    medium = {i for i, a in enumerate(table.actions) if a.model == "medium"}
    for r in results:
        assert not medium & set(r.chosen[200:].tolist()), r.name
    avail, w = replay.schedule(table, ev, "cost_sensitive")
    assert not avail[250, sorted(medium)].any() and avail[100, sorted(medium)].all()
    assert w[299, 1] == 1.0 and w[300, 1] == 0.1


def test_added_model_only_after_the_event(
    small_table: tuple[outcomes.OutcomeTable, dict[str, ModelSpec]],
) -> None:
    table, models = small_table
    ev = [replay.Event(150, "add_model", "large")]
    results = replay.compare(table, models, events=ev, initial_models=["small", "medium"])
    large = {i for i, a in enumerate(table.actions) if a.model == "large"}
    for r in results:
        assert not large & set(r.chosen[:150].tolist()), r.name


def test_side_observations_feed_exactly_the_contained_sub_actions(
    small_table: tuple[outcomes.OutcomeTable, dict[str, ModelSpec]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table, models = small_table
    table = table.subset(range(150))
    seen: list[tuple[int, float]] = []
    real_observe = replay.Policy.observe

    def spy(self: replay.Policy, x: object, action: int, quality: float, **kw: float) -> object:
        seen.append((action, quality))
        return real_observe(self, x, action, quality, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(replay.Policy, "observe", spy)
    spec = replay.LearnerSpec("uniscale", table.actions)
    scales = replay.Scales.from_table(table)
    _avail, w = replay.schedule(table, [], "quality_priority")
    r = replay.reward_matrix(table, w, scales)

    def stream() -> replay.RunResult:
        return replay.run_learner(
            spec,
            table,
            models,
            r,
            r.max(axis=1),
            [],
            scales,
            "quality_priority",
            side_observations=True,
        )

    run = stream()
    # the policy's action order is the table's here, so indices map one to one
    expected: list[tuple[int, float]] = []
    for t, c in enumerate(run.chosen):
        used = float(table.samples_used[t, c])
        for j in outcomes.sub_actions(table.actions[int(c)], used, table.actions):
            expected.append((j, float(table.quality[t, j])))
    assert seen == expected and len(seen) > 0
    again = stream()
    np.testing.assert_array_equal(again.chosen, run.chosen)


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 1)), min_size=1, max_size=30))
def test_aiq_is_an_average_quality_on_the_frontier(points: list[tuple[float, float]]) -> None:
    v = replay.aiq(points)
    qs = [q for _, q in points]
    assert min(qs) - 1e-12 <= v <= max(qs) + 1e-12


def test_aiq_step_frontier() -> None:
    # quality 0.5 from cost 0 to 1, then 1.0 up to cost 2: average 0.75
    assert replay.aiq([(0.0, 0.5), (1.0, 1.0), (2.0, 0.2)]) == pytest.approx(0.75)


def test_report_table_and_aggregate(
    small_table: tuple[outcomes.OutcomeTable, dict[str, ModelSpec]],
) -> None:
    table, models = small_table
    rows = report.aggregate([replay.compare(table, models), replay.compare(table, models, seed=1)])
    text = report.table(rows)
    assert "uniscale" in text and "±" in text
    assert {r["policy"] for r in rows} >= {"oracle", "uniscale", "tts_only", "best_fixed"}


def test_demo_writes_results_and_charts(tmp_path: object) -> None:
    out = run_demo(600, out_dir=str(tmp_path), quiet=True, sim=True, seeds=1)
    files = {p.name for p in __import__("pathlib").Path(str(tmp_path)).iterdir()}
    assert {"demo_results.json", "quality_vs_cost.svg", "cumulative_regret.svg"} <= files
    data = json.loads((__import__("pathlib").Path(str(tmp_path)) / "demo_results.json").read_text())
    assert {r["policy"] for r in data["summary"]} >= {"uniscale", "oracle", "random"}
    assert out["text"].count("\n") > 5


def test_cli_demo(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--sim", "--requests", "300", "--out", str(tmp_path)]) == 0
    assert "uniscale" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["demo", "--reward", "nonsense"])


def test_seeded_build_table_does_not_depend_on_string_hashing(tmp_path: object) -> None:
    """The same seed gives the same table in every process: the sample shuffles must not follow
    the iteration order of a set of model names (which PYTHONHASHSEED changes)."""
    import subprocess
    import sys

    code = (
        "import hashlib, numpy as np\n"
        "from uniscale.lab import datasets\n"
        "t = datasets.collected_source(models=['qwen05', 'smollm2']).table(3)\n"
        "print(hashlib.sha256(np.ascontiguousarray(t.quality).tobytes()"
        " + np.ascontiguousarray(t.latency_s).tobytes()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2", "3", "4"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_without_request_features_changes_only_the_features(
    small_table: tuple[outcomes.OutcomeTable, dict[str, ModelSpec]],
) -> None:
    table, models = small_table
    blind = table.without_request_features()
    assert blind.X.shape == (table.n_requests, 1) and not blind.X.any()
    for f in ("quality", "cost_usd", "latency_s", "output_tokens", "samples_used"):
        np.testing.assert_array_equal(getattr(blind, f), getattr(table, f))
    assert blind.ids == table.ids and blind.actions == table.actions
    # a learner that cannot tell requests apart makes different choices on the same stream
    spec = [replay.LearnerSpec("uniscale", table.actions)]
    seeing = replay.compare(table, models, learners=spec)[-1]
    blind_run = replay.compare(blind, models, learners=spec)[-1]
    assert not np.array_equal(seeing.chosen, blind_run.chosen)
