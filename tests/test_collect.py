"""`uniscale.lab.collect` against the fake OpenAI server on 127.0.0.1: records, resume, repair of a
truncated line, a server dying mid-run, replay (`load_requests` -> `build_table`) and export."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fake_openai import FakeConfig, FakeOpenAI, run

from uniscale.lab.collect import (
    ARITHMETIC_MAX_TOKENS,
    GSM8K_MAX_TOKENS,
    LETTER_GRAMMAR,
    MMLU_SYSTEM,
    CollectConfig,
    CollectError,
    CollectModel,
    Item,
    PromptSpec,
    _TableWriter,
    answer_rates,
    build_messages,
    collect,
    collect_main,
    export_table,
    gold_for,
    load_items,
    load_model_config,
    load_requests,
    meta_path,
    parse_model_arg,
    rate_flags,
    read_records,
    repair_jsonl,
    table_status,
)
from uniscale.outcomes import build_table
from uniscale.space import Action, ModelSpec

ITEMS: list[dict[str, Any]] = [
    {"id": "a1", "kind": "arithmetic", "question": "What is 2 + 2?", "answer": "4",
     "extractor": "last_number"},
    {"id": "q1", "kind": "mmlu", "question": "Which letter?", "choices": ["w", "x", "y", "z"],
     "answer": "B", "extractor": "choice_letter"},
    {"id": "g1", "kind": "gsm8k", "question": "How many?", "answer": "1,000",
     "extractor": "last_number"},
]  # fmt: skip


# every test: meta collection must not find a real llama-server binary or model cache
pytestmark = pytest.mark.usefixtures("no_real_llama")


@pytest.fixture
def fb(fake_server: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    return fake_server("I pick (B)", "The answer is 1000.")


def cm(name: str, server: FakeOpenAI) -> CollectModel:
    return CollectModel(name=name, base_url=server.base_url)


def cfg(**kw: Any) -> CollectConfig:
    kw.setdefault("m", 4)
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("retries", 0)
    kw.setdefault("server_wait_s", 0.3)
    return CollectConfig(**kw)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def do_collect(items_path: Path, models: list[CollectModel], out: Path, **kw: Any) -> Any:
    c = kw.pop("config", None) or cfg()
    items = kw.pop("items", None) or load_items(items_path)
    return run(collect(items, models, out, c, items_path=items_path, progress=False, **kw))


def test_small_run_writes_expected_records(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, fb: FakeOpenAI
) -> None:
    out = tmp_path / "t" / "table.jsonl"
    summary = do_collect(items_path, [cm("a", fa), cm("b", fb)], out)
    assert (summary.ok, summary.failed, summary.todo) == (6, 0, 6)
    recs = lines(out)
    assert len(recs) == 6 and {r["status"] for r in recs} == {"ok"}
    by = {(r["item_id"], r["model"]): r for r in recs}
    assert set(by) == {(i["id"], m) for i in ITEMS for m in ("a", "b")}

    a1 = by[("a1", "a")]
    assert a1["gold"] == "4" and a1["extractor"] == "answer_number"
    assert a1["max_tokens"] == ARITHMETIC_MAX_TOKENS
    assert len(a1["samples"]) == 4 and a1["input_tokens"] == fa.config.prompt_tokens
    for s in [*a1["samples"], a1["greedy"]]:
        assert s["answer"] == "4" and s["correct"] is True
        assert s["output_tokens"] == 4 and s["tokens_by"] == "logprobs"
        assert s["mean_logprob"] == pytest.approx(-0.25) and s["finish_reason"] == "stop"
    assert [r["role"] for r in a1["requests"]] == ["samples", "greedy"]
    assert a1["requests"][0]["n"] == 4 and a1["requests"][0]["received"] == 4
    # Every sample of the n-request carries that request's latency.
    assert {s["latency_s"] for s in a1["samples"]} == {a1["requests"][0]["latency_s"]}

    # One n=m request and one greedy request per pair, with the documented settings.
    reqs = fa.generation_requests()
    assert len(reqs) == 6
    sampled = [r.body for r in reqs if r.body["n"] == 4]
    greedy = [r.body for r in reqs if r.body["n"] == 1]
    assert len(sampled) == len(greedy) == 3
    assert {b["temperature"] for b in sampled} == {0.7} and {b["temperature"] for b in greedy} == {
        0.0
    }
    assert sorted(b["max_tokens"] for b in sampled) == sorted(
        [2, ARITHMETIC_MAX_TOKENS, GSM8K_MAX_TOKENS]
    )
    assert all(b["logprobs"] is True and "seed" in b for b in sampled)
    mmlu = next(b for b in sampled if b["max_tokens"] == 2)
    assert mmlu["messages"][0] == {"role": "system", "content": MMLU_SYSTEM}
    mmlu_prompt = mmlu["messages"][1]["content"]
    assert "B. x" in mmlu_prompt and "letter of the correct option" in mmlu_prompt
    assert mmlu["grammar"] == LETTER_GRAMMAR
    assert all("grammar" not in b for b in sampled if b is not mmlu)

    assert by[("q1", "a")]["samples"][0]["answer"] is None  # "The answer is 4." is no letter
    assert by[("q1", "b")]["gold"] == "B"
    assert by[("g1", "b")]["gold"] == "1000"
    b_answers = {s["answer"] for r in recs if r["model"] == "b" for s in r["samples"]}
    assert b_answers <= {"B", "1000", None}

    meta = json.loads(meta_path(out).read_text())
    assert meta_path(out).name == "table.meta.json"
    assert meta["settings"]["m"] == 4 and meta["settings"]["prompt_version"] == "v3"
    assert set(meta["models"]) == {"a", "b"} and meta["models"]["a"]["base_url"] == fa.base_url
    assert len(meta["items"]["sha256"]) == 64 and meta["items"]["count"] == 3
    assert meta["counts"]["ok_pairs_per_model"] == {"a": 3, "b": 3}
    assert meta["counts"]["complete"] is True


def test_resume_skips_done_pairs(tmp_path: Path, items_path: Path, fa: FakeOpenAI) -> None:
    out = tmp_path / "t.jsonl"
    items = load_items(items_path)
    do_collect(items_path, [cm("a", fa)], out, items=items[:2])
    assert len(fa.generation_requests()) == 4
    summary = do_collect(items_path, [cm("a", fa)], out)
    assert (summary.skipped_done, summary.todo, summary.ok) == (2, 1, 1)
    assert len(fa.generation_requests()) == 6  # only g1 was asked for
    assert [r["item_id"] for r in lines(out)] == ["a1", "q1", "g1"]
    # A third run has nothing to do.
    assert do_collect(items_path, [cm("a", fa)], out).todo == 0
    assert len(fa.generation_requests()) == 6


def test_truncated_last_line_is_repaired(tmp_path: Path, items_path: Path, fa: FakeOpenAI) -> None:
    out = tmp_path / "t.jsonl"
    items = load_items(items_path)
    do_collect(items_path, [cm("a", fa)], out, items=items[:2])
    good = out.read_bytes()
    partial = b'{"v":1,"item_id":"g1","model":"a","status":"ok","samp'
    out.write_bytes(good + partial)  # a crash in the middle of writing g1's line
    summary = do_collect(items_path, [cm("a", fa)], out)
    assert summary.todo == 1 and summary.ok == 1  # the truncated g1 line did not count
    text = out.read_text()
    assert text.startswith(good.decode()) and text.endswith("\n")
    assert [r["item_id"] for r in lines(out)] == ["a1", "q1", "g1"]

    # repair_jsonl on its own: drops exactly the partial line, keeps a clean file intact.
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'{"a": 1}\n{"b"')
    assert repair_jsonl(p) == 4 and p.read_bytes() == b'{"a": 1}\n'
    assert repair_jsonl(p) == 0
    p.write_bytes(b"no newline at all")
    assert repair_jsonl(p) == len(b"no newline at all") and p.read_bytes() == b""


def test_corrupt_middle_line_is_skipped(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"item_id": "x", "model": "a", "status": "ok"}\nGARBAGE\n[1]\n')
    assert [r["item_id"] for r in read_records(p)] == ["x"]


def test_server_dying_mid_run_leaves_resumable_file(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, fb: FakeOpenAI
) -> None:
    out = tmp_path / "t.jsonl"

    def kill_b(rec: dict[str, Any]) -> None:
        if rec["model"] == "b" and rec["status"] == "ok":
            # The server of model b dies after its first pair: the listener closes, and the
            # handler thread still holding the client's keep-alive connection answers 503.
            fb.config.fail_times, fb.config.fail_status = 10**6, 503
            fb.stop()

    summary = do_collect(items_path, [cm("a", fa), cm("b", fb)], out, on_record=kill_b)
    assert summary.per_model_ok == {"a": 3, "b": 1}
    assert summary.abandoned == {"b": 2} and summary.failed == 2
    recs = lines(out)  # every line parses
    failed = [r for r in recs if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["model"] == "b"
    assert failed[0]["failures"][0]["error"] in ("NetworkError", "UpstreamHTTPError")
    assert table_status(out, items_path)["ok_pairs_per_model"] == {"a": 3, "b": 1}

    # The server comes back (on another port); the next run does exactly the missing pairs.
    with FakeOpenAI(FakeConfig(answers=["The answer is 1000."])) as fb2:
        summary = do_collect(items_path, [cm("a", fa), cm("b", fb2)], out)
        assert (summary.todo, summary.ok, summary.failed) == (2, 2, 0)
        assert len(fb2.generation_requests()) == 4
    status = table_status(out, items_path)
    assert status["ok_pairs_per_model"] == {"a": 3, "b": 3} and status["complete"] is True


def test_failed_pair_is_retried_at_end_of_run(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI
) -> None:
    out = tmp_path / "t.jsonl"
    fa.config.fail_times = 1  # the first request gets a 500 (no retries configured)
    summary = do_collect(items_path, [cm("a", fa)], out)
    assert (summary.ok, summary.failed) == (3, 0)
    recs = lines(out)
    assert [r["status"] for r in recs] == ["failed", "ok", "ok", "ok"]
    assert recs[0]["failures"][0]["status"] == 500 and recs[0]["item_id"] == recs[-1]["item_id"]


def test_empty_choice_is_a_wrong_sample(tmp_path: Path, items_path: Path, fa: FakeOpenAI) -> None:
    out = tmp_path / "t.jsonl"
    fa.config.empty_times = 1
    items = load_items(items_path)[:1]
    do_collect(items_path, [cm("a", fa)], out, items=items)
    (rec,) = lines(out)
    assert rec["status"] == "ok" and len(rec["samples"]) == 4
    empty = [s for s in rec["samples"] if s["finish_reason"] == "empty"]
    assert len(empty) == 1 and empty[0]["answer"] is None and empty[0]["correct"] is False
    assert rec["requests"][0]["empty"] == 1


def test_load_requests_round_trips_into_build_table(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, fb: FakeOpenAI
) -> None:
    out = tmp_path / "t.jsonl"
    do_collect(items_path, [cm("a", fa), cm("b", fb)], out)
    reqs = load_requests(out, items_path)
    assert [r.id for r in reqs] == ["a1", "q1", "g1"]
    assert [r.gold for r in reqs] == ["4", "B", "1000"]
    assert [r.kind for r in reqs] == ["arithmetic", "mmlu", "gsm8k"]
    for r in reqs:
        assert r.x.shape == (64,) and r.x.dtype == np.float64 and np.isfinite(r.x).all()
        assert set(r.samples) == {"a", "b"} and set(r.greedy) == {"a", "b"}
        assert all(len(s) == 4 for s in r.samples.values())
        assert r.input_tokens == fa.config.prompt_tokens
    assert reqs[0].samples["a"][0].score == pytest.approx(-0.25)
    assert reqs[0].samples["a"][0].correct and not reqs[2].samples["a"][0].correct

    actions = [
        Action("a", "single", 1),
        Action("a", "self_consistency", 4),
        Action("b", "best_of_n", 2),
        Action("b", "adaptive_consistency", 4),
    ]
    models = {"a": ModelSpec("a", price_out_per_mtok=1.0), "b": ModelSpec("b", parallelism=4)}
    table = build_table(reqs, actions, models)
    assert table.quality.shape == (3, 4) and table.ids == ["a1", "q1", "g1"]
    assert table.quality[0, 0] == 1.0 and table.quality[0, 1] == 1.0  # a says 4 to "2 + 2"
    assert table.quality[1, 0] == 0.0 and table.quality[2, 1] == 0.0
    assert table.cost_usd[0, 1] == pytest.approx(16 / 1e6)  # 4 samples x 4 tokens x $1/Mtok
    assert np.all(table.samples_used[:, 1] == 4)

    # m truncates, a custom featurizer is used, and a model subset works.
    small = load_requests(out, items_path, lambda msgs: np.ones(3), models=["a"], m=2)
    assert all(len(r.samples["a"]) == 2 and r.x.tolist() == [1.0, 1.0, 1.0] for r in small)
    with pytest.raises(CollectError, match="samples < m=5"):
        load_requests(out, items_path, m=5)


def test_load_requests_drops_incomplete_items(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, fb: FakeOpenAI
) -> None:
    out = tmp_path / "t.jsonl"
    items = load_items(items_path)
    do_collect(items_path, [cm("a", fa)], out)
    do_collect(items_path, [cm("b", fb)], out, items=items[:1])
    assert [r.id for r in load_requests(out, items_path)] == ["a1"]
    assert len(load_requests(out, items_path, complete=False)) == 3


def test_export_is_small_and_replays_the_same(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI
) -> None:
    out = tmp_path / "t.jsonl"
    fa.config.answers = ["word " * 300 + "The answer is 4."]
    fa.config.fail_times = 1  # leaves a failed line that the export must not carry
    do_collect(items_path, [cm("a", fa)], out)
    dst = tmp_path / "outcomes" / "real_v1.jsonl.gz"
    meta = export_table(out, dst, items_path=items_path, max_text_chars=100)
    assert meta["export"]["records"] == 3 and meta["export"]["partial"] is False
    assert meta["counts"]["ok_pairs_per_model"] == {"a": 3}
    assert meta_path(dst) == tmp_path / "outcomes" / "real_v1.meta.json"
    assert json.loads(meta_path(dst).read_text())["export"]["file"] == "real_v1.jsonl.gz"
    recs = [json.loads(x) for x in gzip.decompress(dst.read_bytes()).decode().splitlines()]
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs)
    s0 = recs[0]["samples"][0]
    assert len(s0["text"]) <= 100 + len(" [...] ") and s0["text"].endswith("The answer is 4.")
    assert s0["answer"] == "4"
    # Deterministic bytes, and replay from the export equals replay from the raw table.
    first = dst.read_bytes()
    export_table(out, dst, items_path=items_path, max_text_chars=100)
    assert dst.read_bytes() == first
    acts = [Action("a", "single", 1), Action("a", "best_of_n", 3)]
    spec = {"a": ModelSpec("a", price_out_per_mtok=2.0)}
    t_raw = build_table(load_requests(out, items_path), acts, spec)
    t_exp = build_table(load_requests(dst, items_path), acts, spec)
    np.testing.assert_array_equal(t_raw.quality, t_exp.quality)
    np.testing.assert_array_equal(t_raw.cost_usd, t_exp.cost_usd)
    np.testing.assert_array_equal(t_raw.X, t_exp.X)


def test_settings_mismatch_and_lock(tmp_path: Path, items_path: Path, fa: FakeOpenAI) -> None:
    out = tmp_path / "t.jsonl"
    items = load_items(items_path)[:1]
    do_collect(items_path, [cm("a", fa)], out, items=items)
    with pytest.raises(CollectError, match=r"different settings \(m\)"):
        do_collect(items_path, [cm("a", fa)], out, items=items, config=cfg(m=2))
    writer = _TableWriter(out)
    try:
        with pytest.raises(CollectError, match="locked by another collector"):
            do_collect(items_path, [cm("a", fa)], out, items=items)
    finally:
        writer.close()


def test_model_config_parsing(tmp_path: Path) -> None:
    m = parse_model_arg("smollm2=http://127.0.0.1:8101/v1/,endpoint=completions,honours_n=false")
    assert m == CollectModel(
        "smollm2", "http://127.0.0.1:8101/v1", endpoint="completions", honours_n=False
    )
    with pytest.raises(CollectError, match="NAME=URL"):
        parse_model_arg("smollm2")
    with pytest.raises(CollectError, match="'honours_n'"):
        parse_model_arg("x=http://127.0.0.1:1/v1,honours_n=maybe")
    with pytest.raises(CollectError, match=r"unknown key\(s\) \['bogus'\]"):
        parse_model_arg("x=http://127.0.0.1:1/v1,bogus=1")
    with pytest.raises(CollectError, match="'base_url'"):
        parse_model_arg("x=ftp://host")
    toml = tmp_path / "models.toml"
    toml.write_text('[[models]]\nname = "q"\nbase_url = "http://127.0.0.1:8102/v1"\n')
    assert load_model_config(toml) == [CollectModel("q", "http://127.0.0.1:8102/v1")]
    js = tmp_path / "models.json"
    js.write_text(json.dumps({"models": [{"name": "q", "base_url": "http://h/v1", "n": 1}]}))
    with pytest.raises(CollectError, match=r"models\[0\]: unknown key"):
        load_model_config(js)


def test_items_and_prompts(tmp_path: Path, items_path: Path) -> None:
    items = load_items(items_path)
    assert [gold_for(i) for i in items] == ["4", "B", "1000"]
    other = Item("o1", "trivia", "Capital of France?", "Paris", extractor="text")
    assert build_messages(other) == [{"role": "user", "content": "Capital of France?"}]
    assert gold_for(other) == "paris"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "kind": "k", "question": "q"}\n')
    with pytest.raises(CollectError, match=r"bad\.jsonl:1: missing or non-string key 'answer'"):
        load_items(bad)


def test_cli_run_status_export(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.jsonl"
    argv = ["run", "--items", str(items_path), "--out", str(out), "--model", f"a={fa.base_url}"]
    argv += ["-m", "2", "--no-progress", "--timeout-s", "5", "--max-tokens", "gsm8k=50"]
    assert collect_main(argv) == 0
    assert {r["max_tokens"] for r in lines(out)} == {ARITHMETIC_MAX_TOKENS, 2, 50}
    assert collect_main(["status", str(out), "--items", str(items_path)]) == 0
    assert json.loads(capsys.readouterr().out)["ok_pairs_per_model"] == {"a": 3}
    dst = tmp_path / "e.jsonl.gz"
    assert collect_main(["export", str(out), str(dst), "--items", str(items_path)]) == 0
    assert dst.exists()
    assert collect_main(["run", "--items", str(items_path), "--out", str(out)]) == 2
    assert "at least one --model" in capsys.readouterr().err


def test_register_hook_for_the_uniscale_cli(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from uniscale.lab.collect import register

    parser = argparse.ArgumentParser(prog="uniscale")
    register(parser.add_subparsers(dest="cmd", required=True))
    out = tmp_path / "r.jsonl"
    args = parser.parse_args(
        ["collect", "run", "--items", str(items_path), "--out", str(out), "--model",
         f"a={fa.base_url}", "-m", "2", "--no-progress", "--limit", "1"]
    )  # fmt: skip
    assert args.func(args) == 0 and len(lines(out)) == 1
    args = parser.parse_args(["collect", "status", str(out)])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["ok_pairs_per_model"] == {"a": 1}


# ---- review findings D7 and D13 ----------------------------------------------------------------


def test_lone_surrogate_answer_is_recorded_and_resume_gets_past_it(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI
) -> None:
    # D7: the fake sends "\ud800" JSON-escaped; the table could not encode it as UTF-8 and
    # the whole run aborted, on every resume.
    fa.config.answers = ["The answer is 4. \ud800"]
    out = tmp_path / "t.jsonl"
    summary = do_collect(items_path, [cm("a", fa)], out)
    assert (summary.ok, summary.failed, summary.todo) == (3, 0, 3)
    recs = lines(out)
    assert [r["status"] for r in recs] == ["ok", "ok", "ok"]
    assert recs[0]["samples"][0]["text"] == "The answer is 4. \ud800"
    assert recs[0]["samples"][0]["correct"] is True
    assert b"\\ud800" in out.read_bytes()
    again = do_collect(items_path, [cm("a", fa)], out)
    assert (again.todo, again.skipped_done) == (0, 3)
    meta = export_table(out, tmp_path / "e.jsonl.gz")
    assert meta["export"]["records"] == 3
    exported = [json.loads(x) for x in gzip.open(tmp_path / "e.jsonl.gz", "rt")]
    assert exported[0]["samples"][0]["text"].endswith("\ud800")


def test_unwritable_record_fails_only_its_pair(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uniscale.lab.collect as collect_mod

    real = collect_mod.collect_pair

    async def broken(ex: Any, item: Item, model: str, c: CollectConfig) -> dict[str, Any]:
        rec = await real(ex, item, model, c)
        if item.id == "q1":
            rec["samples"][0]["answer"] = object()  # not JSON
        return rec

    monkeypatch.setattr(collect_mod, "collect_pair", broken)
    out = tmp_path / "t.jsonl"
    summary = do_collect(items_path, [cm("a", fa)], out)
    assert (summary.ok, summary.failed) == (2, 1)
    failed = [r for r in lines(out) if r["status"] == "failed"]
    assert {r["item_id"] for r in failed} == {"q1"}
    (f,) = failed[0]["failures"]
    assert f["error"] == "TypeError" and "not JSON serializable" in f["message"]
    monkeypatch.setattr(collect_mod, "collect_pair", real)
    again = do_collect(items_path, [cm("a", fa)], out)  # resume retries just that pair
    assert (again.todo, again.ok) == (1, 1)


KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"


def _no_key_fragment(text: str) -> None:
    frags = [KEY[i : i + 8] for i in range(len(KEY) - 7)]
    assert not [f for f in frags if f in text], text


def test_upstream_401_echoing_a_key_never_reaches_the_table(
    tmp_path: Path, items_path: Path
) -> None:
    # D13: collect writes failure messages into its table; they were cut before redaction.
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/health"):
            return httpx.Response(200, json={"status": "ok"})
        body = "x" * 150 + f"Incorrect API key provided: {KEY}. Authorization: Bearer {KEY}"
        return httpx.Response(401, text=body)

    out = tmp_path / "t.jsonl"
    model = CollectModel(name="a", base_url="http://upstream.test/v1")
    summary = do_collect(items_path, [model], out, transport=httpx.MockTransport(handler))
    assert summary.ok == 0
    recs = lines(out)
    messages = [f["message"] for r in recs for f in r["failures"]]
    assert messages and all("HTTP 401" in m for m in messages)
    for m in messages:
        _no_key_fragment(m)
    _no_key_fragment(out.read_text())


def test_unexpected_pair_error_is_redacted_before_truncation(
    tmp_path: Path, items_path: Path, fa: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uniscale.lab.collect as collect_mod

    async def boom(ex: Any, item: Item, model: str, c: CollectConfig) -> dict[str, Any]:
        raise RuntimeError("y" * 260 + f" Authorization: Bearer {KEY}")

    monkeypatch.setattr(collect_mod, "collect_pair", boom)
    out = tmp_path / "t.jsonl"
    do_collect(items_path, [cm("a", fa)], out, items=load_items(items_path)[:1])
    (rec, *_) = lines(out)
    (f,) = rec["failures"]
    assert f["error"] == "RuntimeError" and f["message"].startswith("y" * 260)
    _no_key_fragment(f["message"])


# --------------------------------------------------------------------------------------------
# Truncation and no-answer rates: the check that keeps a table from measuring its limits


def _rec(model: str, kind: str, answers: list[tuple[str, str | None, bool]]) -> dict[str, Any]:
    samples = [{"finish_reason": f, "answer": a, "correct": c} for f, a, c in answers]
    return {"model": model, "kind": kind, "samples": samples[:-1], "greedy": samples[-1]}


def test_answer_rates_count_samples_and_greedy_and_flag_above_five_percent() -> None:
    recs = [
        _rec("m", "mmlu", [("stop", "A", True), ("length", None, False), ("stop", "B", False)]),
        _rec("m", "mmlu", [("stop", "C", True)] * 3),
        _rec("m", "gsm8k", [("stop", "4", True)] * 40),
        _rec("m", "gsm8k", [("stop", None, False)] * 2),
    ]
    rates = answer_rates(recs)
    assert rates["m"]["mmlu"] == {
        "answers": 6,
        "truncated": round(1 / 6, 4),
        "no_answer": round(1 / 6, 4),
        "accuracy": round(4 / 6, 4),
    }
    assert rates["m"]["gsm8k"]["no_answer"] == round(2 / 42, 4)  # 4.8%: not flagged
    assert rates["m"]["gsm8k"]["truncated"] == 0.0
    flags = rate_flags(rates)
    assert flags == ["m/mmlu: truncated 16.7%, no_answer 16.7% (> 5%)"]
    assert rate_flags(rates, threshold=0.01) == [  # kinds in sorted order
        "m/gsm8k: no_answer 4.8% (> 1%)",
        "m/mmlu: truncated 16.7%, no_answer 16.7% (> 1%)",
    ]


def test_status_and_export_report_the_rates_and_warn(
    tmp_path: Path, items_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Answers the mmlu extractor cannot read and that hit the limit: flagged by status/export.
    cut = FakeConfig(answers=["The answer is 4."], finish_reason="length")
    with FakeOpenAI(cut) as server:
        out = tmp_path / "t.jsonl"
        do_collect(items_path, [cm("a", server)], out)
    status = table_status(out, items_path)
    assert status["answer_rates"]["a"]["mmlu"]["no_answer"] == 1.0
    assert status["answer_rates"]["a"]["mmlu"]["truncated"] == 1.0
    assert any(
        f.startswith("a/mmlu: truncated 100.0%, no_answer 100.0%")
        for f in status["answer_rate_flags"]
    )
    assert collect_main(["status", str(out), "--items", str(items_path)]) == 0
    assert "warning: a/mmlu: truncated 100.0%" in capsys.readouterr().err
    dst = tmp_path / "x.jsonl.gz"
    assert collect_main(["export", str(out), str(dst), "--items", str(items_path)]) == 0
    assert "warning: a/mmlu" in capsys.readouterr().err
    assert json.loads(meta_path(dst).read_text())["counts"]["answer_rate_flags"]


def test_system_turn_and_grammar_reach_the_server(
    tmp_path: Path, items_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uniscale.lab import collect as collect_mod

    spec = PromptSpec(
        "mmlu",
        "{question}\n{options}\nLetter?",
        2,
        "choice",
        system="Answer with one letter.",
        grammar="root ::= [ABCD]",
    )
    monkeypatch.setitem(collect_mod.PROMPTS, "mmlu", spec)  # type: ignore[arg-type]
    with FakeOpenAI(FakeConfig(answers=["B"])) as server:
        do_collect(items_path, [cm("a", server)], tmp_path / "t.jsonl")
        bodies = [r.body for r in server.generation_requests()]
    mmlu = [b for b in bodies if b["max_tokens"] == 2]
    assert len(mmlu) == 2  # samples + greedy
    for b in mmlu:
        assert b["grammar"] == "root ::= [ABCD]"
        assert b["messages"][0] == {"role": "system", "content": "Answer with one letter."}
        assert b["messages"][1]["role"] == "user" and "Letter?" in b["messages"][1]["content"]
    others = [b for b in bodies if b["max_tokens"] != 2]
    assert others and all("grammar" not in b for b in others)
    assert all(b["messages"][0]["role"] == "user" for b in others)
    item = next(i for i in load_items(items_path) if i.kind == "mmlu")
    assert build_messages(item)[0]["role"] == "system"
