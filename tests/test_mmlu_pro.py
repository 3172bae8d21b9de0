"""The packaged MMLU-Pro routing table: its documented counts, accuracies and prices, replay
through ``--table mmlu-pro``, corrupt files, and the derivation script's reproducibility."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniscale.cli import main as cli_main
from uniscale.lab import datasets, replay
from uniscale.lab.demo import run_demo
from uniscale.outcomes import Sample, run_usage
from uniscale.space import Action

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make_mmlu_pro_table.py"
SNAPSHOT = Path("/work/.mirror/TIGER-AI-Lab+MMLU-Pro/repo")
META = datasets.DATA_DIR / "mmlu_pro_v1.meta.json"


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    return dict(json.loads(META.read_text()))


@pytest.fixture(scope="module")
def rt() -> datasets.RoutingTable:
    return datasets.load_routing_table()


# ---- the committed files (never skipped) --------------------------------------------------------


def test_table_has_the_documented_counts_and_provenance(
    rt: datasets.RoutingTable, meta: dict[str, Any]
) -> None:
    assert rt.n_items == meta["counts"]["items"] == 11954
    assert set(rt.models) == set(meta["models"]) and len(rt.models) == 8
    assert len(rt.categories) == 14 and "math" in rt.categories
    counts = dict(zip(*np.unique(rt.kinds(), return_counts=True), strict=True))
    assert {str(k): int(v) for k, v in counts.items()} == meta["counts"]["per_category"]
    assert len(set(rt.ids)) == rt.n_items
    assert meta["license"] == "Apache-2.0"
    assert meta["source"]["repository"] == "https://github.com/TIGER-AI-Lab/MMLU-Pro"
    assert len(meta["source"]["commit"]) == 40
    assert {"gemini-1.5-flash-002", "gemini-1.5-pro-002", "llama-2-7b"} <= set(rt.models)
    assert datasets.MMLU_PRO_TABLE.stat().st_size == meta["bytes"] < 2_000_000


def test_accuracies_match_the_meta(rt: datasets.RoutingTable, meta: dict[str, Any]) -> None:
    acc = rt.accuracy()
    for m in rt.models:
        assert acc[m] == pytest.approx(meta["models"][m]["accuracy"], abs=1e-6)
    kinds = np.asarray(rt.kinds())
    for m, per_cat in meta["accuracy_per_category"].items():
        j = rt.models.index(m)
        for c, a in per_cat.items():
            assert rt.correct[kinds == c, j].mean() == pytest.approx(a, abs=1e-4)
    # the span the issue describes: from Llama-2-7B to Gemini-1.5-Pro
    assert min(acc.values()) == acc["llama-2-7b"] < 0.2
    assert max(acc.values()) == acc["gemini-1.5-pro-002"] > 0.69


def test_prices_are_positive_and_ordered_as_documented(
    rt: datasets.RoutingTable, meta: dict[str, Any]
) -> None:
    for m, (p_in, p_out) in rt.prices.items():
        assert p_in > 0 and p_out > 0
        assert meta["models"][m]["price_source"]
    src = datasets.mmlu_pro_source()
    full = src.table(0)
    mean_cost = {a.model: float(full.cost_usd[:, k].mean()) for k, a in enumerate(full.actions)}
    assert sorted(mean_cost, key=lambda m: (mean_cost[m], m)) == meta["models_by_mean_cost_usd"]
    for m, c in mean_cost.items():
        assert c == pytest.approx(meta["mean_cost_usd_per_answer"][m], rel=1e-4)
    order = meta["models_by_mean_cost_usd"]
    assert order[0] == "gemini-1.5-flash-002" and order[-1] == "gemini-1.5-pro-002"


def test_every_action_is_one_answer_and_billed_by_run_usage(rt: datasets.RoutingTable) -> None:
    src = datasets.mmlu_pro_source()
    t = src.table(3)
    assert t.actions == [Action(m, "single", 1) for m in rt.models]
    assert t.n_requests == rt.n_items and sorted(t.ids) == sorted(rt.ids)
    assert np.all(t.samples_used == 1.0) and np.all(t.latency_s == 0.0)
    assert set(t.kinds) == set(rt.categories)
    # features: bias, log length, the category one-hot (the task type is visible)
    assert t.X.shape == (rt.n_items, 2 + len(rt.categories))
    assert np.all(t.X[:, 2:].sum(axis=1) == 1.0)
    row = t.ids.index(rt.ids[5])
    for k, a in enumerate(t.actions):
        j = rt.models.index(a.model)
        s = Sample(None, False, int(rt.output_tokens[5, j]), 0.0, 0.0)
        cost = run_usage(src.models[a.model], int(rt.input_tokens[5]), [s])[0]
        assert t.cost_usd[row, k] == cost
        assert t.quality[row, k] == float(rt.correct[5, j])
        assert t.kinds[row] == rt.kinds()[5]


def test_categories_give_routing_headroom(rt: datasets.RoutingTable) -> None:
    kinds = np.asarray(rt.kinds())
    best = {
        c: rt.models[int(np.argmax(rt.correct[kinds == c].mean(axis=0)))] for c in rt.categories
    }
    assert len(set(best.values())) > 1
    flash, pro = rt.models.index("gemini-1.5-flash-002"), rt.models.index("gemini-1.5-pro-002")
    for c in ("math", "chemistry"):  # the cheaper model is the better one here
        assert rt.correct[kinds == c, flash].mean() > rt.correct[kinds == c, pro].mean() + 0.03
    for c in ("law", "engineering"):
        assert rt.correct[kinds == c, pro].mean() > rt.correct[kinds == c, flash].mean() + 0.1


def test_loading_is_fast() -> None:
    t0 = time.perf_counter()
    src = datasets.mmlu_pro_source()
    src.table(0)
    assert time.perf_counter() - t0 < 5.0  # ~0.3 s here; generous for a busy 2-core machine


# ---- replay ----------------------------------------------------------------------------------


def test_replay_compare_on_a_prefix_includes_the_per_category_router() -> None:
    src = datasets.mmlu_pro_source(n_requests=300)
    t = src.table(1)
    assert t.n_requests == 300
    res = replay.compare(t, src.models, reward="quality_priority", seed=1)
    names = [r.name for r in res]
    assert "best_per_kind_xfit" in names and "uniscale" in names and "routing_only" in names
    uni = next(r for r in res if r.name == "uniscale")
    orc = next(r for r in res if r.name == "oracle")
    assert len(uni.reward) == 300 and orc.reward.sum() >= uni.reward.sum()


def test_cli_replay_mmlu_pro(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli_main(
        [
            "replay",
            "--table",
            "mmlu-pro",
            "--requests",
            "150",
            "--seeds",
            "1",
            "--no-curve",
            "-q",
            "--models",
            "llama-2-7b,gemini-1.5-flash-002,gemini-1.5-pro-002",
            "--price",
            "llama-2-7b=0.1,0.1",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "mmlu_pro_v1.json.gz" in out and "150 of 11954 questions x 3 models" in out
    assert "best_per_kind_xfit" in out
    assert (tmp_path / "replay_results.json").exists()


def test_cli_rejects_unknown_models_and_prices(tmp_path: Path) -> None:
    base = ["replay", "--table", "mmlu-pro", "--requests", "20", "--seeds", "1", "-q"]
    with pytest.raises(SystemExit, match="unknown models"):
        cli_main([*base, "--models", "gpt-5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--price for models not in the table"):
        cli_main([*base, "--price", "gpt-5=1,1", "--out", str(tmp_path)])


def test_price_override_changes_only_that_model() -> None:
    a = datasets.mmlu_pro_source(n_requests=50)
    b = datasets.mmlu_pro_source(n_requests=50, prices={"llama-2-7b": (2.0, 2.0)})
    assert b.models["llama-2-7b"].price_in_per_mtok == 2.0
    assert b.models["gemini-1.5-pro-002"] == a.models["gemini-1.5-pro-002"]


def test_demo_loads_the_table_without_changing_its_default(tmp_path: Path) -> None:
    res = run_demo(80, seeds=1, out_dir=tmp_path, table="mmlu-pro", quiet=True)
    assert "mmlu_pro_v1.json.gz" in res["text"] and "8 actions" in res["text"]


# ---- corrupt files ---------------------------------------------------------------------------


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    table = tmp_path / "mmlu_pro_v1.json.gz"
    meta = tmp_path / "mmlu_pro_v1.meta.json"
    shutil.copy(datasets.MMLU_PRO_TABLE, table)
    shutil.copy(META, meta)
    return table, meta


def _drop_checksum(meta: Path) -> None:
    m = json.loads(meta.read_text())
    del m["sha256"]
    meta.write_text(json.dumps(m))


def test_corrupt_tables_raise_data_error(tmp_path: Path) -> None:
    table, meta = _copy(tmp_path)
    assert datasets.load_routing_table(table).n_items == 11954
    table.write_bytes(table.read_bytes()[:5000])
    with pytest.raises(datasets.DataError, match="sha256 does not match"):
        datasets.load_routing_table(table)
    _drop_checksum(meta)
    with pytest.raises(datasets.DataError, match="not a gzipped JSON routing table"):
        datasets.load_routing_table(table)
    d = json.loads(gzip.decompress(datasets.MMLU_PRO_TABLE.read_bytes()))
    d["gold"] = d["gold"][:-1]
    table.write_bytes(gzip.compress(json.dumps(d).encode()))
    with pytest.raises(datasets.DataError, match="malformed routing table: gold/answers"):
        datasets.load_routing_table(table)
    d = json.loads(gzip.decompress(datasets.MMLU_PRO_TABLE.read_bytes()))
    d["format"] = "something-else"
    table.write_bytes(gzip.compress(json.dumps(d).encode()))
    with pytest.raises(datasets.DataError, match="format is not"):
        datasets.load_routing_table(table)
    meta.write_text("{not json")
    with pytest.raises(datasets.DataError, match="not a routing-table meta file"):
        datasets.load_routing_table(table)
    meta.unlink()
    with pytest.raises(datasets.DataError, match="no such file"):
        datasets.load_routing_table(table)


@settings(max_examples=25, deadline=None)
@given(pos=st.integers(min_value=0, max_value=211_000), byte=st.integers(1, 255))
def test_any_flipped_byte_is_a_data_error(tmp_path_factory: Any, pos: int, byte: int) -> None:
    tmp = tmp_path_factory.mktemp("flip")
    table, meta = _copy(tmp)
    _drop_checksum(meta)  # past the checksum: the gzip/JSON/shape checks must still catch it
    raw = bytearray(table.read_bytes())
    raw[pos % len(raw)] ^= byte
    table.write_bytes(bytes(raw))
    try:
        rt = datasets.load_routing_table(table)
    except datasets.DataError:
        return
    assert rt.n_items >= 2  # a flip the format cannot see (gzip header field) still loads


# ---- the derivation script -------------------------------------------------------------------


@pytest.mark.skipif(not SNAPSHOT.exists(), reason="no MMLU-Pro snapshot under /work/.mirror")
def test_script_reproduces_the_committed_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), str(SNAPSHOT), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "mmlu_pro_v1.json.gz").read_bytes() == datasets.MMLU_PRO_TABLE.read_bytes()
    assert (tmp_path / "mmlu_pro_v1.meta.json").read_bytes() == META.read_bytes()


def test_script_prices_cover_its_models() -> None:
    spec = importlib.util.spec_from_file_location("make_mmlu_pro_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert set(mod.PRICES) == set(mod.MODELS)
    assert all(p_in > 0 and p_out > 0 and note for p_in, p_out, note in mod.PRICES.values())
