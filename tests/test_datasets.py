"""The packaged data (items, the real outcome table), replay sources, the real-data demo, and the
replay targets report."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from uniscale.cli import main as cli_main
from uniscale.lab import datasets, report
from uniscale.lab.collect import (
    latest_ok,
    load_items,
    load_requests,
    read_records,
    solo_latency_fit,
)
from uniscale.lab.demo import run_demo
from uniscale.lab.replay import RunResult
from uniscale.outcomes import OutcomeTable
from uniscale.space import Action

# ---- the packaged files ------------------------------------------------------------------------


def test_packaged_items_and_table_match_their_sidecars() -> None:
    items = load_items(datasets.ITEMS)
    meta = json.loads((datasets.DATA_DIR / "items.meta.json").read_text())
    assert len(items) == sum(meta["counts"].values()) >= 300
    assert {it.kind for it in items} == set(meta["counts"])
    tmeta = json.loads((datasets.DATA_DIR / "real_v1.meta.json").read_text())
    raw = datasets.REAL_TABLE.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == tmeta["export"]["sha256"]
    recs = [json.loads(x) for x in gzip.decompress(raw).decode().splitlines()]
    assert len(recs) == tmeta["export"]["records"]
    assert all(r["status"] == "ok" and len(r["samples"]) == tmeta["settings"]["m"] for r in recs)
    ids = {it.id for it in items}
    assert {r["item_id"] for r in recs} <= ids
    # every recorded model has a default price and provenance in the sidecar
    models = {r["model"] for r in recs}
    assert models <= set(datasets.DEFAULT_PRICES) and models <= set(tmeta["models"])


def test_coverage_counts_complete_records_per_model() -> None:
    cov = datasets.coverage()
    recs = latest_ok(read_records(datasets.REAL_TABLE))
    assert sum(cov.values()) == len(recs) and all(c <= 340 for c in cov.values())


# ---- solo latency ------------------------------------------------------------------------------


def _rec(item: str, model: str, tokens: list[int], greedy: tuple[int, float] | None) -> Any:
    sample = {"answer": "4", "correct": True, "mean_logprob": -0.5, "request": 0}
    return {
        "item_id": item,
        "model": model,
        "status": "ok",
        "input_tokens": 20,
        "samples": [{**sample, "output_tokens": t, "latency_s": 99.0} for t in tokens],
        "greedy": None
        if greedy is None
        else {**sample, "output_tokens": greedy[0], "latency_s": greedy[1]},
    }


def test_solo_latency_fit_recovers_a_line_and_refits_through_the_origin() -> None:
    line = [_rec(f"i{k}", "m", [1], (t, 0.5 + 0.02 * t)) for k, t in enumerate((10, 50, 90))]
    (a, b) = solo_latency_fit(line)["m"]
    assert a == pytest.approx(0.5) and b == pytest.approx(0.02)
    # a negative intercept (noise) would give short answers negative time: refit through 0
    neg = [_rec(f"i{k}", "n", [1], (t, -1.0 + 0.1 * t)) for k, t in enumerate((20, 40))]
    (a, b) = solo_latency_fit(neg)["n"]
    assert a == 0.0 and b == pytest.approx((20 * 1 + 40 * 3) / (20**2 + 40**2))
    # one greedy point, untimed greedy, no greedy
    one = solo_latency_fit([_rec("i", "o", [1], (40, 2.0)), _rec("j", "p", [1], (5, 0.0))])
    assert one == {"o": (0.0, 2.0 / 40)}
    assert solo_latency_fit([_rec("i", "q", [1], None)]) == {}


def test_load_requests_solo_latency(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(
            json.dumps({"id": f"i{k}", "kind": "arithmetic", "question": "1+3?", "answer": "4"})
            + "\n"
            for k in range(3)
        )
    )
    table = tmp_path / "t.jsonl"
    recs = [_rec(f"i{k}", "m", [10, 30], (t, 1.0 + 0.1 * t)) for k, t in enumerate((10, 20, 40))]
    table.write_text("".join(json.dumps(r) + "\n" for r in recs))
    solo = load_requests(table, items, lambda m: np.ones(2), latency="solo")
    assert [s.latency_s for s in solo[0].samples["m"]] == pytest.approx([2.0, 4.0])
    assert solo[2].greedy["m"].latency_s == pytest.approx(5.0)  # greedy keeps its measurement
    request = load_requests(table, items, lambda m: np.ones(2))
    assert [s.latency_s for s in request[0].samples["m"]] == [99.0, 99.0]


# ---- replay sources ----------------------------------------------------------------------------


@pytest.fixture
def small_table(tmp_path: Path) -> tuple[Path, Path]:
    """Four items; model 'a' on all, 'b' on three (75%), 'c' on one."""
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(
            json.dumps({"id": f"i{k}", "kind": "arithmetic", "question": f"{k}+1?", "answer": "4"})
            + "\n"
            for k in range(4)
        )
    )
    recs = [_rec(f"i{k}", "a", [5, 6, 7, 8], (5, 0.5)) for k in range(4)]
    recs += [_rec(f"i{k}", "b", [9, 9, 9, 9], (9, 0.9)) for k in range(3)]
    recs += [_rec("i0", "c", [3, 3, 3, 3], (3, 0.3))]
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return table, items


def test_collected_source_chooses_models_by_coverage(small_table: tuple[Path, Path]) -> None:
    table, items = small_table
    src = datasets.collected_source(table, items, prices={"a": (1.0, 2.0)})
    assert list(src.models) == ["a"] and set(src.excluded) == {"b", "c"}
    assert "3/4" in src.excluded["b"] and src.n_requests == 4
    src = datasets.collected_source(table, items, min_coverage=0.7, prices={})
    assert list(src.models) == ["a", "b"] and src.n_requests == 3
    assert all(s.parallelism == 1 for s in src.models.values())
    t0, t0b, t1 = src.table(0), src.table(0), src.table(1)
    assert t0.ids == t0b.ids and sorted(t0.ids) == sorted(t1.ids) == ["i0", "i1", "i2"]
    assert {a.n for a in t0.actions} == {1, 2, 4}  # n capped at the 4 recorded samples
    # parallelism 1: an n-sample action takes n solo answers' time, one after another
    col = t0.actions.index(Action("a", "self_consistency", 4))
    assert t0.latency_s[:, col] == pytest.approx(4 * 0.1 * 6.5)  # 0.1 s/token, mean 6.5 tokens
    src2 = datasets.collected_source(table, items, models=["b"], parallelism=4, n_requests=2)
    assert src2.n_requests == 2 and src2.table(0).n_requests == 2
    assert src2.models["b"].parallelism == 4 and set(src2.excluded) == {"a", "c"}


def test_collected_source_errors(small_table: tuple[Path, Path], tmp_path: Path) -> None:
    table, items = small_table
    with pytest.raises(datasets.DataError, match="no such file"):
        datasets.collected_source(tmp_path / "nope.jsonl", items)
    with pytest.raises(datasets.DataError, match="no such file"):
        datasets.collected_source(table, tmp_path / "nope.jsonl")
    with pytest.raises(datasets.DataError, match="unknown models"):
        datasets.collected_source(table, items, models=["zz"])
    with pytest.raises(datasets.DataError, match="parallelism"):
        datasets.collected_source(table, items, parallelism=0)
    with pytest.raises(datasets.DataError, match="no model is recorded"):
        datasets.collected_source(table, items, min_coverage=1.1)
    with pytest.raises(datasets.DataError, match="need >= 2"):
        datasets.collected_source(table, items, models=["c"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(datasets.DataError, match="no complete records"):
        datasets.collected_source(empty, items)


# ---- the targets report ------------------------------------------------------------------------


def _run(name: str, q: list[float], c: list[float]) -> RunResult:
    n = len(q)
    return RunResult(
        name,
        np.zeros(n, dtype=np.int64),
        np.array(q) - np.array(c),
        np.array(q),
        np.array(c),
        np.zeros(n),
        np.ones(n),
    )


def test_targets_by_hand() -> None:
    actions = [
        Action("s", "single", 1),
        Action("s", "self_consistency", 4),
        Action("l", "single", 1),
    ]
    table = OutcomeTable(
        ids=["r0", "r1"],
        kinds=["k", "k"],
        X=np.ones((2, 2)),
        input_tokens=np.ones(2),
        actions=actions,
        quality=np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]),
        cost_usd=np.array([[0.1, 0.4, 1.0], [0.1, 0.4, 1.0]]),
        latency_s=np.zeros((2, 3)),
        output_tokens=np.zeros((2, 3)),
        samples_used=np.ones((2, 3)),
    )
    uni = _run("uniscale", [1.0, 1.0], [0.1, 1.0])  # accuracy 1.0 at $0.55
    routing = _run("routing_only", [0.0, 1.0], [0.1, 1.0])  # reward -0.05 vs UniScale's 0.45
    best = _run("best_fixed", [1.0, 0.0], [0.4, 0.4])  # reward 0.1
    lines, payload = report.targets([[uni, routing, best]], [table], {"s": 1.0, "l": 10.0})
    assert payload["reward_vs_routing_only"]["diff_per_request"] == pytest.approx([0.5])
    assert payload["reward_vs_routing_only"]["wins"] == 1
    assert payload["reward_vs_best_fixed"]["diff_per_request"] == pytest.approx([0.35])
    assert "reward_vs_tts_only" not in payload
    # fixed actions costing <= $0.55: s/single (0.0) and s/sc4 (0.5): gap +0.5
    acc = payload["accuracy_vs_best_action_at_cost"]
    assert (
        acc["diff"] == [0.5]
        and acc["held"] == 1
        and "self_consistency" in acc["actions"][0]["action"]
    )
    big = payload["vs_largest_model_n1"]
    assert big["model"] == "l" and big["accuracy"] == [1.0] and big["held"] == 1
    assert len(lines) == 4 and "1/1 seeds" in lines[-1]


# ---- the demo and the CLI on the packaged table ------------------------------------------------


def test_demo_replays_the_packaged_real_table(tmp_path: Path) -> None:
    out = run_demo(out_dir=tmp_path, seeds=2, quiet=True)
    js = json.loads((tmp_path / "demo_results.json").read_text())
    assert js["source"].startswith("real_v1.jsonl.gz") and js["seeds"] == [0, 1]
    assert {r["policy"] for r in js["summary"]} >= {"uniscale", "oracle", "routing_only"}
    # every item recorded for the chosen models is streamed
    assert js["summary"][0]["requests"][0] == datasets.collected_source().n_requests >= 2
    assert "reward_vs_best_fixed" in js["targets"] and "vs_largest_model_n1" in js["targets"]
    assert "reward vs routing_only" in out["text"]
    for svg in ("quality_vs_cost.svg", "cumulative_regret.svg"):
        assert (tmp_path / svg).read_text().startswith("<svg")


def test_cli_demo_shows_both_real_tables_with_plain_headlines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(["demo", "--seeds", "2", "--requests", "120", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert rc == 0
    heads = [line for line in text.splitlines() if line.startswith("HEADLINE")]
    # one per table at the top of its section, and both again at the end
    assert len(heads) == 4 and heads[:2] == heads[2:]
    assert any("real_v1.jsonl.gz" in h for h in heads) and any("mmlu_pro_v1" in h for h in heads)
    assert all(("BEATS" in h) != ("NOT beat" in h or "not on every seed" in h) for h in heads)
    for out in (tmp_path, tmp_path / "mmlu-pro"):
        js = json.loads((out / "demo_results.json").read_text())
        assert js["headline"] in heads and js["summary"][0]["requests"][0] == 120


@pytest.mark.parametrize(
    ("diffs", "wins", "verdict"),
    [
        ([0.01, 0.02], 2, "BEATS"),
        ([-0.01, 0.005], 1, "does NOT beat"),
        ([0.03, -0.01], 1, "ahead on average but not on every seed"),
        ([0.0, 0.0], 0, "does NOT beat"),
    ],
)
def test_headline_says_plainly_whether_uniscale_beats_the_best_fixed_action(
    diffs: list[float], wins: int, verdict: str
) -> None:
    from uniscale.lab.report import headline

    h = headline({"reward_vs_best_fixed": {"diff_per_request": diffs, "wins": wins}}, "t", "r")
    assert verdict in h and f"ahead on {wins}/{len(diffs)} seeds" in h
    assert "no best-fixed baseline" in headline({}, "t", "r")


def test_cli_replay_and_ope_check_on_the_packaged_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(["replay", "--seeds", "1", "--no-curve", "-q", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert rc == 0 and "real_v1.jsonl.gz" in text
    js = json.loads((tmp_path / "replay_results.json").read_text())
    assert js["aggregate"][0]["requests"][0] >= 300
    # the targets, paired, with the out-of-sample headroom that explains them
    assert "reward vs best_fixed" in text and "headroom:" in text
    policies = {row["policy"] for row in js["aggregate"]}
    assert {"best_per_kind_xfit", "best_per_kind_xfit_n1"} <= policies
    assert len(js["targets"]["headroom_per_kind_xfit_vs_best_fixed"]["diff_per_request"]) == 1
    with pytest.raises(SystemExit, match="unknown models"):
        cli_main(["replay", "--models", "gpt-9", "-q", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="not in the table"):
        cli_main(["replay", "--price", "gpt-9=1,2", "-q", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="parallelism"):
        cli_main(["replay", "--parallelism", "0", "-q", "--out", str(tmp_path)])
    rc = cli_main(["ope-check", "--logger", "uniform", "--target", "best_fixed"])
    assert rc == 0 and "true mean reward" in capsys.readouterr().out


def test_cli_replay_learner_and_alpha(tmp_path: Path) -> None:
    runs = {}
    for name, extra in {
        "default": [],
        "disjoint": ["--learner", "disjoint", "--alpha", "1.5"],
        "no_features": ["--no-request-features"],
    }.items():
        out = tmp_path / name
        args = ["replay", "--table", "sim", "--requests", "300", "--seeds", "1", "-q"]
        assert cli_main([*args, "--no-curve", "--out", str(out), *extra]) == 0
        js = json.loads((out / "replay_results.json").read_text())
        runs[name] = next(r for r in js["aggregate"] if r["policy"] == "uniscale")
        oracle = next(r for r in js["aggregate"] if r["policy"] == "oracle")
        runs[name + "_oracle"] = oracle
        runs[name + "_features"] = js["request_features"]
    # the learner settings reach the learners (not the oracle): different choices, same oracle
    for other in ("disjoint", "no_features"):
        assert runs["default"]["reward_total"] != runs[other]["reward_total"]
        assert runs["default_oracle"]["reward_total"] == runs[other + "_oracle"]["reward_total"]
    assert runs["default_features"] and not runs["no_features_features"]
    with pytest.raises(SystemExit, match="alpha"):
        cli_main(["replay", "--table", "sim", "--alpha", "nan", "-q", "--out", str(tmp_path)])


def test_cli_replay_pacing_carryover(tmp_path: Path) -> None:
    spent = {}
    for carry in ("0", "100"):
        out = tmp_path / carry
        args = ["replay", "--table", "sim", "--requests", "300", "--seeds", "1", "-q"]
        # without side observations: on one 300-request seed their different trajectories
        # can swap the two spends, and this test is about what the pacer does with the setting
        extra = ["--budget", "1e-4", "--pacing-carryover", carry, "--no-curve"]
        extra.append("--no-side-observations")
        assert cli_main([*args, *extra, "--out", str(out)]) == 0
        spent[carry] = json.loads((out / "replay_results.json").read_text())["budget"]["spent_mean"]
    # the setting reaches the pacer: everything else is seeded and equal, so a different
    # spend can only come from it. (Which way it moves depends on whether the learner under- or
    # overspends early on this stream; the pacer's carry-over itself is tested in
    # tests/test_policy.py.)
    assert spent["0"] != spent["100"]
    with pytest.raises(SystemExit, match="pacing-carryover"):
        cli_main(["replay", "--table", "sim", "--pacing-carryover", "-1", "-q"])
