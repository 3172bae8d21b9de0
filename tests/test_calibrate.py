"""`uniscale.lab.calibrate`: collection against the fake OpenAI server on 127.0.0.1 (resume after an
interrupt, the CLI), the capped prior of `warm_start` (hypothesis: its strength does not grow
with K), and a deliberately wrong calibration replayed on the packaged real table."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_openai import FakeOpenAI
from hypothesis import given
from hypothesis import strategies as st

from uniscale._core import ConfigError
from uniscale.cli import main
from uniscale.lab import datasets
from uniscale.lab.calibrate import (
    DEFAULT_PSEUDO_OBSERVATIONS,
    TABLE_NAME,
    action_stats,
    calibrate,
    calibration_items,
    calibration_table,
    warm_start,
)
from uniscale.lab.collect import CollectConfig, CollectModel, load_items
from uniscale.lab.replay import LearnerSpec, Scales, reward_matrix, run_learner, schedule
from uniscale.outcomes import OutcomeTable
from uniscale.policy import Policy
from uniscale.space import Action, ActionSpace, ModelSpec

ITEMS: list[dict[str, Any]] = [
    {"id": f"a{i}", "kind": "arithmetic", "question": f"What is {i} + 2?", "answer": str(i + 2)}
    for i in range(4)
] + [
    {"id": f"q{i}", "kind": "mmlu", "question": f"Which letter {i}?",
     "choices": ["w", "x", "y", "z"], "answer": "B"}
    for i in range(3)
]  # fmt: skip


# every test: meta collection must not find a real llama-server binary or model cache
pytestmark = pytest.mark.usefixtures("no_real_llama")


@pytest.fixture
def fb(fake_server: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_server("B")


def models(*servers: tuple[str, FakeOpenAI]) -> list[CollectModel]:
    return [CollectModel(name=n, base_url=s.base_url) for n, s in servers]


def cfg() -> CollectConfig:
    return CollectConfig(m=4, timeout_s=5.0, retries=0, server_wait_s=0.3)


def records(table: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in table.read_text().splitlines()]


# --------------------------------------------------------------------------------------------
# collection


def test_calibrate_runs_k_items_through_every_model(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, fb: FakeOpenAI
) -> None:
    bar = io.StringIO()
    s = calibrate(
        models(("a", fa), ("b", fb)),
        tmp_path / "cal",
        k=5,
        items_path=items_path,
        config=cfg(),
        stream=bar,
    )
    assert (s.items, s.collected, s.already_done, s.failed) == (5, 10, 0, 0)
    assert s.table == tmp_path / "cal" / TABLE_NAME
    # Round-robin over kinds: both kinds are in the first five.
    want = [it.id for it in calibration_items(load_items(items_path), 5)]
    assert want == ["a0", "q0", "a1", "q1", "a2"]
    recs = records(s.table)
    assert sorted((r["item_id"], r["model"]) for r in recs) == sorted(
        (i, m) for i in want for m in ("a", "b")
    )
    assert all(r["status"] == "ok" and len(r["samples"]) == 4 for r in recs)
    assert "calibrate" in bar.getvalue() and "10/10" in bar.getvalue()

    table = calibration_table(s.table, items_path)
    assert sorted(table.ids) == sorted(want)
    # Every (model, strategy, n <= m) action is priced on every calibration item.
    assert len(table.actions) == 2 * (1 + 3 * 2)  # single + 3 sampled strategies x n in (2, 4)
    stats = {str(x.action): x for x in action_stats(table)}
    # Model a always says 4: right on a2 (2 + 2) only; model b always says B: right on MMLU.
    assert stats["a/single/n=1"].quality == pytest.approx(1 / 5)
    assert stats["b/self_consistency/n=4"].quality == pytest.approx(2 / 5)


def test_interrupted_calibration_resumes_to_the_same_table(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, fb: FakeOpenAI
) -> None:
    ms = models(("a", fa), ("b", fb))
    ref = calibrate(ms, tmp_path / "ref", k=6, items_path=items_path, config=cfg(), progress=False)

    seen = []

    def interrupt(rec: dict[str, Any]) -> None:
        seen.append(rec)
        if len(seen) == 5:
            raise KeyboardInterrupt  # Ctrl-C after the fifth line is on disk

    out = tmp_path / "cal"
    with pytest.raises(KeyboardInterrupt):
        calibrate(
            ms, out, k=6, items_path=items_path, config=cfg(), progress=False, on_record=interrupt
        )
    written = records(out / TABLE_NAME)
    assert 5 <= len(written) < 12  # what was written stays written
    s = calibrate(ms, out, k=6, items_path=items_path, config=cfg(), progress=False)
    assert s.already_done == len(written) and s.collected == 12 - len(written) and s.failed == 0
    pairs = [(r["item_id"], r["model"]) for r in records(out / TABLE_NAME)]
    assert len(pairs) == len(set(pairs)) == 12  # no duplicates
    # A third run has nothing left to do.
    again = calibrate(ms, out, k=6, items_path=items_path, config=cfg(), progress=False)
    assert (again.already_done, again.collected) == (12, 0)

    a = calibration_table(ref.table, items_path)
    b = calibration_table(out / TABLE_NAME, items_path)
    assert a.ids == b.ids and a.actions == b.actions
    for field in ("quality", "cost_usd", "output_tokens", "samples_used", "X", "input_tokens"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_cli_calibrate_prints_a_per_action_summary_and_resumes(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "calibrate",
        "--models",
        f"a={fa.base_url}",
        "--items",
        str(items_path),
        "-k",
        "3",
        "-m",
        "2",
        "--out",
        str(tmp_path / "cal"),
        "--timeout-s",
        "5",
        "--retries",
        "0",
        "--no-progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 items x 1 models; 0 pairs were already done, 3 collected now" in out
    assert "a/self_consistency/n=2" in out and "a/single/n=1" in out
    summary = json.loads((tmp_path / "cal" / "summary.json").read_text())
    assert len(summary["items"]) == 3 and len(summary["actions"]) == 4
    assert main(argv) == 0
    assert "3 pairs were already done, 0 collected now" in capsys.readouterr().out


def test_cli_calibrate_without_models_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calibrate", "--out", str(tmp_path / "x")]) == 2
    assert "at least one --model" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the capped prior

MODELS = [
    ModelSpec("small", price_in_per_mtok=0.1, price_out_per_mtok=0.2),
    ModelSpec("large", price_in_per_mtok=1.0, price_out_per_mtok=3.0),
]
SPACE_ACTIONS = ActionSpace.grid(MODELS, n_values=(1, 2)).ordered_actions()
DIM = 3


def synthetic(x: np.ndarray, quality: np.ndarray) -> OutcomeTable:
    t, k = quality.shape
    out = np.full((t, k), 20.0)
    return OutcomeTable(
        ids=[f"r{i}" for i in range(t)],
        kinds=["k"] * t,
        X=x,
        input_tokens=np.full(t, 100.0),
        actions=list(SPACE_ACTIONS),
        quality=quality.astype(np.float64),
        cost_usd=np.full((t, k), 1e-5),
        latency_s=np.full((t, k), 0.5),
        output_tokens=out,
        samples_used=np.ones((t, k)),
    )


def policy(learner: str = "shared") -> Policy:
    return Policy(ActionSpace(MODELS, SPACE_ACTIONS), DIM, learner=learner)  # type: ignore[arg-type]


@given(
    k1=st.integers(1, 400),
    k2=st.integers(1, 400),
    seed=st.integers(0, 2**32 - 1),
    n0=st.integers(1, 5),
    learner=st.sampled_from(["shared", "disjoint"]),
)
def test_prior_strength_does_not_grow_with_k(
    k1: int, k2: int, seed: int, n0: int, learner: str
) -> None:
    rng = np.random.default_rng(seed)
    k = len(SPACE_ACTIONS)
    x1, x2 = rng.normal(size=(k1, DIM)), rng.normal(size=(k2, DIM))
    x2 += x1.mean(axis=0) - x2.mean(axis=0)  # the same mean request, different requests
    t1 = synthetic(x1, rng.integers(0, 2, size=(k1, k)))
    t2 = synthetic(x2, rng.integers(0, 2, size=(k2, k)))
    p1, p2 = policy(learner), policy(learner)
    r1, r2 = warm_start(p1, t1, n0), warm_start(p2, t2, n0)
    assert [o.weight for o in r1.transferred] == [o.weight for o in r2.transferred]
    # each model gets n0 pseudo-observations in all, shared by its actions
    for model in {a.model for a in SPACE_ACTIONS}:
        total = sum(o.weight for o in r1.transferred if o.action.model == model)
        assert total == pytest.approx(n0)
    assert len(r1.transferred) == k and not r1.cold
    # The exploration bonus (the prior's strength) is the same everywhere, whatever K and
    # whatever the outcomes; only the means differ.
    for probe in (x1.mean(axis=0), rng.normal(size=DIM), np.zeros(DIM)):
        _, b1 = p1.core.quality_scores(probe)
        _, b2 = p2.core.quality_scores(probe)
        np.testing.assert_allclose(b1, b2, rtol=1e-7, atol=1e-12)


def test_full_statistics_would_grow_with_k() -> None:
    """The contrast that makes the cap test meaningful: observing every calibration row (the
    uncapped alternative) narrows the bonus as K grows; the capped prior does not."""
    rng = np.random.default_rng(3)
    k = len(SPACE_ACTIONS)
    x = rng.normal(size=(300, DIM))
    q = rng.integers(0, 2, size=(300, k))
    small, large = synthetic(x[:30], q[:30]), synthetic(x, q)
    probe = x.mean(axis=0)
    widths = []
    for t in (small, large):
        p = policy()
        for i in range(t.n_requests):
            warm_start(p, t.subset([i]), 1)  # one observation per row and action
        widths.append(p.core.quality_scores(probe)[1])
    assert np.all(widths[1] < 0.5 * widths[0])


def test_real_table_k30_and_k300_give_the_same_bonus() -> None:
    """On the packaged table: 30 or 300 real calibration items, the same prior width (request
    features held constant so both tables have the same mean request)."""
    src = datasets.collected_source()
    full = src.table(0).without_request_features()
    space = ActionSpace(list(src.models.values()), full.actions)
    bonus = []
    means = []
    for k in (30, 300):
        p = Policy(space, 1)
        report = warm_start(p, full.subset(range(k)))
        assert report.items == k
        per_model = {a.model: 0.0 for a in full.actions}
        for o in report.transferred:
            per_model[o.action.model] += o.weight
        assert per_model == pytest.approx(dict.fromkeys(per_model, DEFAULT_PSEUDO_OBSERVATIONS))
        m, b = p.core.quality_scores(np.zeros(1))
        means.append(m)
        bonus.append(b)
    np.testing.assert_allclose(bonus[0], bonus[1], rtol=1e-9)
    assert not np.allclose(means[0], means[1])  # the estimates do use the data


def test_warm_start_moves_estimates_toward_the_calibration() -> None:
    k = len(SPACE_ACTIONS)
    quality = np.zeros((20, k))
    best = SPACE_ACTIONS.index(Action("large", "self_consistency", 2))
    quality[:, best] = 1.0
    table = synthetic(np.ones((20, DIM)) * 0.1, quality)
    for learner in ("shared", "disjoint"):
        p = policy(learner)
        cold_cost = p.predict(100.0)["output_tokens_per_sample"]
        warm_start(p, table)
        mean, _ = p.core.quality_scores(np.full(DIM, 0.1))
        assert int(np.argmax(mean)) == p.actions.index(Action("large", "self_consistency", 2))
        # The cost model learned the calibration's 20 output tokens (priors say 256).
        warm_cost = p.predict(100.0)["output_tokens_per_sample"]
        assert np.all(np.abs(warm_cost - 20.0) < np.abs(cold_cost - 20.0))


def test_warm_start_validates_its_input() -> None:
    t = synthetic(np.zeros((3, DIM)), np.zeros((3, len(SPACE_ACTIONS))))
    with pytest.raises(ConfigError, match="pseudo_observations must be >= 0"):
        warm_start(policy(), t, -1)
    with pytest.raises(ConfigError, match="pseudo_observations must be an int"):
        warm_start(policy(), t, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="request features"):
        warm_start(Policy(ActionSpace(MODELS, SPACE_ACTIONS), DIM + 1), t)
    p = policy()
    before = p.to_bytes()
    assert warm_start(p, t, 0).transferred[0].weight == 0
    assert p.to_bytes() == before  # zero pseudo-observations: nothing learned
    # Actions the table lacks stay cold.
    part = t.subset([0, 1])
    only_small = [i for i, a in enumerate(SPACE_ACTIONS) if a.model == "small"]
    narrowed = OutcomeTable(
        ids=part.ids,
        kinds=part.kinds,
        X=part.X,
        input_tokens=part.input_tokens,
        actions=[SPACE_ACTIONS[i] for i in only_small],
        quality=part.quality[:, only_small],
        cost_usd=part.cost_usd[:, only_small],
        latency_s=part.latency_s[:, only_small],
        output_tokens=part.output_tokens[:, only_small],
        samples_used=part.samples_used[:, only_small],
    )
    r = warm_start(policy(), narrowed)
    assert {a.model for a in r.cold} == {"large"} and len(r.transferred) == len(only_small)


# --------------------------------------------------------------------------------------------
# a wrong calibration on the packaged real table

REWARD = "quality_priority"
K = 30
#: Requests within which the warm-started policy must have tried the truly best action.
BOUND = 150


def _replay_wrong(seed: int, flip: str) -> tuple[np.ndarray, int]:
    src = datasets.collected_source()
    full = src.table(seed)
    cal, stream = full.subset(range(K)), full.subset(range(K, full.n_requests))
    scales = Scales.from_table(full)
    _, w = schedule(stream, (), REWARD)
    r = reward_matrix(stream, w, scales)
    best = int(r.mean(axis=0).argmax())
    wrong = cal.subset(range(K))
    cols = [best] if flip == "action" else [
        j for j, a in enumerate(cal.actions) if a.model == cal.actions[best].model
    ]  # fmt: skip
    wrong.quality[:, cols] = 0.0  # deliberately wrong: the best outcomes read as failures
    spec = LearnerSpec("warm_wrong", stream.actions, {}, prepare=lambda p: warm_start(p, wrong))
    res = run_learner(spec, stream, src.models, r, r.max(axis=1), (), scales, REWARD)
    return res.chosen, best


@pytest.mark.parametrize("seed", range(5))
def test_wrong_calibration_of_the_best_action_does_not_lock_it_out(seed: int) -> None:
    chosen, best = _replay_wrong(seed, "action")
    tried = np.flatnonzero(chosen == best)
    assert len(tried) and tried[0] < BOUND, f"best action first tried at {tried[:1]}"
    # Whether it is adopted after that is the learner's business, not the calibration's: on
    # this 310-request table the default learner settles on a weaker action on some seeds
    # whatever the calibration (seed 0: served 275 times cold-started, 8 times after a
    # *correct* calibration, 3 after this wrong one; seed 1: 4 cold, 175 correct, 1 wrong),
    # a lock-in the decision-quality issue tracks.


@pytest.mark.parametrize("seed", range(5))
def test_wrong_calibration_of_a_whole_model_does_not_lock_it_out(seed: int) -> None:
    """Every action of the best model calibrated at 0 (a model broken during calibration):
    capped per model, the prior discourages it as much as 3 unlucky outcomes would."""
    chosen, best = _replay_wrong(seed, "model")
    tried = np.flatnonzero(chosen == best)
    assert len(tried) and tried[0] < BOUND, f"best action first tried at {tried[:1]}"


def test_t95_never_narrows_the_interval_between_tabulated_degrees_of_freedom() -> None:
    from uniscale.lab.calibrate import _t95

    values = [_t95(n) for n in range(2, 200)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # non-increasing
    assert _t95(11) == 2.228 and _t95(12) == 2.228  # df 10 and 11: 10's quantile (true 2.201)
    assert min(values) == 2.042 > 1.96  # beyond df 30, 30's quantile, never the normal's
