"""``uniscale serve``: configuration, the OpenAI API with the real ``openai`` client, feedback,
streaming, the demo upstream. Servers run on 127.0.0.1 with ephemeral ports and stop at the end
of each test (tests/serve_fakes.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
openai = pytest.importorskip("openai")

from serve_fakes import Upstream, config, read_log, running_server, serving  # noqa: E402

from uniscale.serve.config import (  # noqa: E402
    ServeConfigError,
    example_config,
    load_config,
    parse_config,
)

# --------------------------------------------------------------------------------------------
# Configuration


def test_example_config_is_valid() -> None:
    cfg = parse_config(example_config(), "example.toml")
    assert [m.name for m in cfg.models] == ["small", "large"]
    assert len(cfg.actions()) == 8  # 2 models x (single + self_consistency 2, 4, 8)
    assert cfg.models[1].api_key_env == "LARGE_API_KEY"


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("port = 8000", "prot = 8000", r"example.toml:4: \[server\] prot: unknown key"),
        ("port = 8000", 'port = "8000"', r"example.toml:4: \[server\] port: expected an integer"),
        ("parallelism = 4", "paralelism = 4", r":\d+: \[models\[1\]\] paralelism: unknown key"),
        ('reward = "cost_sensitive"', 'reward = "cheap"', r"\[policy\] reward: expected one of"),
        ("[limits]", "[limit]", r"example.toml:\d+: \[limit\]: unknown section"),
        ('mode = "normal"', 'mode = "shadow"', r"\[server\] mode: mode 'shadow' needs"),
        ("[server]", "[server", r"not valid TOML: .*line 2"),
    ],
)
def test_config_errors_name_the_key_and_line(old: str, new: str, match: str) -> None:
    text = example_config().replace(old, new, 1)
    assert text != example_config()
    with pytest.raises(ServeConfigError, match=match):
        parse_config(text, "example.toml")


def test_config_line_numbers_are_exact(tmp_path: Path) -> None:
    text = (
        example_config()
        .replace("max_concurrency", "x")
        .replace('api_model = "large-2026-01"', 'api_model = "large-2026-01"\nbogus = 1')
    )
    p = tmp_path / "u.toml"
    p.write_text(text)
    line = text.splitlines().index("bogus = 1") + 1
    with pytest.raises(ServeConfigError, match=rf"u.toml:{line}: \[models\[1\]\] bogus"):
        load_config(p)


def test_config_rejects_actions_outside_the_grid() -> None:
    text = example_config().replace("# baseline", "baseline = 'large/self_consistency/3'\n#")
    with pytest.raises(ServeConfigError, match=r"\[policy\] baseline: large/self_consistency/n=3"):
        parse_config(text, "x.toml")


def test_cli_check_and_missing_extra(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from uniscale import cli
    from uniscale.serve import main as serve_main

    p = tmp_path / "u.toml"
    p.write_text(example_config())
    assert cli.main(["serve", "--config", str(p), "--check"]) == 0
    assert "OK: 2 models, 8 actions" in capsys.readouterr().out
    p.write_text(example_config().replace("port = 8000", "prot = 1"))
    assert cli.main(["serve", "--config", str(p), "--check"]) == 2
    assert "u.toml:4: [server] prot: unknown key" in capsys.readouterr().err

    assert serve_main.missing_dependencies() == []
    # a fresh interpreter in which the [serve] extra's modules cannot be imported
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn', 'prometheus_client'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from uniscale import cli\n"
        "sys.exit(cli.main(['serve', '--demo']))\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "pip install 'uniscale[serve]'" in out.stderr
    assert "missing: starlette, uvicorn, prometheus_client" in out.stderr
    assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------------------------
# The OpenAI API with the official client


def _client(run: object, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{run.base_url}/v1",  # type: ignore[attr-defined]
        api_key=kw.pop("api_key", "unused"),  # type: ignore[arg-type]
        max_retries=0,
        timeout=30,
        **kw,  # type: ignore[arg-type]
    )


def test_openai_client_routed_completion(tmp_path: Path) -> None:
    with serving(
        answers=["The answer is 42", "It is 42", "maybe 41"],
        tmp=tmp_path,
        policy='strategies = ["self_consistency"]\nn_values = [3]\nextractor = "last_number"',
    ) as (up, run):
        client = _client(run)
        raw = client.chat.completions.with_raw_response.create(
            model="uniscale", messages=[{"role": "user", "content": "6 x 7?"}]
        )
        resp = raw.parse()
        h = raw.headers
        models = [m.id for m in client.models.list()]
    assert models == ["uniscale", "small", "large"]
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.content in ("The answer is 42", "It is 42")
    assert resp.choices[0].finish_reason == "stop"
    # usage is summed over the 3 samples (one request with n = 3)
    words = sum(len(t.split()) for t in ["The answer is 42", "It is 42", "maybe 41"])
    assert resp.usage is not None
    assert resp.usage.completion_tokens == words
    assert resp.usage.prompt_tokens == up.prompt_tokens
    assert resp.usage.total_tokens == words + up.prompt_tokens
    assert h["x-uniscale-action"].endswith("/self_consistency/n=3")
    assert h["x-uniscale-samples"] == "3"
    assert 0 < float(h["x-uniscale-propensity"]) <= 1
    assert float(h["x-uniscale-predicted-cost-usd"]) > 0
    assert float(h["x-uniscale-cost-usd"]) > 0
    assert float(h["x-uniscale-latency-s"]) >= 0
    assert int(h["x-uniscale-candidate-count"]) == len(h["x-uniscale-candidates"].split(","))
    did = int(h["x-uniscale-decision-id"])
    recs = read_log(tmp_path / "decisions.jsonl")
    assert [r["decision_id"] for r in recs if r["type"] == "decision"] == [did]
    assert recs[0]["feedback"]["deferred"] is True
    assert "6 x 7" not in (tmp_path / "decisions.jsonl").read_text()  # prompts never logged


def test_concrete_model_passes_through_and_is_logged(tmp_path: Path) -> None:
    with serving(tmp=tmp_path) as (up, run):
        raw = _client(run).chat.completions.with_raw_response.create(
            model="large",
            messages=[{"role": "user", "content": "hi"}],
            temperature=0.3,
            max_tokens=20,
        )
    assert raw.parse().model == "large"
    assert raw.headers["x-uniscale-action"] == "large/single/n=1"
    assert raw.headers["x-uniscale-propensity"] == "1"
    assert up.received[-1]["model"] == "large"
    assert up.received[-1]["temperature"] == 0.3
    assert up.received[-1]["max_tokens"] == 20
    (rec,) = read_log(tmp_path / "decisions.jsonl")
    assert rec["decision"]["model"] == "large"


def test_request_errors_are_openai_errors(tmp_path: Path) -> None:
    with Upstream() as up:
        cfg = config({"small": up.base_url}, server="max_body_bytes = 2048")
        with running_server(cfg) as run:
            client = _client(run)
            msgs = [{"role": "user", "content": "hi"}]
            with pytest.raises(openai.NotFoundError, match="model 'nope' does not exist"):
                client.chat.completions.create(model="nope", messages=msgs)  # type: ignore[arg-type]
            with pytest.raises(openai.BadRequestError, match="only n = 1"):
                client.chat.completions.create(model="uniscale", messages=msgs, n=2)  # type: ignore[arg-type]
            with pytest.raises(openai.BadRequestError, match="unknown uniscale field"):
                client.chat.completions.create(
                    model="uniscale",
                    messages=msgs,  # type: ignore[arg-type]
                    extra_body={"uniscale": {"max_cots_usd": 1}},
                )
            with pytest.raises(openai.BadRequestError, match="preset must be one of"):
                client.chat.completions.create(
                    model="uniscale",
                    messages=msgs,  # type: ignore[arg-type]
                    extra_headers={"X-UniScale-Preset": "cheapest"},
                )
            big = [{"role": "user", "content": "x" * 5000}]
            with pytest.raises(openai.APIStatusError, match="over the limit of 2048") as ei:
                client.chat.completions.create(model="uniscale", messages=big)  # type: ignore[arg-type]
            assert ei.value.status_code == 413
            r = httpx.post(f"{run.base_url}/v1/chat/completions", content=b"{not json")
            assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert up.received == []  # nothing reached the upstream


def test_knobs_from_body_and_headers(tmp_path: Path) -> None:
    with serving(tmp=tmp_path) as (_, run):
        client = _client(run)
        msgs = [{"role": "user", "content": "hi"}]
        raw = client.chat.completions.with_raw_response.create(
            model="uniscale",
            messages=msgs,  # type: ignore[arg-type]
            extra_body={"uniscale": {"max_samples": 1, "preset": "quality_priority"}},
        )
        assert raw.headers["x-uniscale-action"].endswith("/single/n=1")
        raw = client.chat.completions.with_raw_response.create(
            model="uniscale",
            messages=msgs,  # type: ignore[arg-type]
            extra_headers={"X-UniScale-Max-Cost-USD": "1e-12", "X-UniScale-Max-Samples": "2"},
        )
        assert raw.headers["x-uniscale-action"]
        # the preset swap was for one selection only
        assert run.server.policy.reward_weights.cost == 1.0
    recs = [r for r in read_log(tmp_path / "decisions.jsonl") if r["type"] == "decision"]
    assert recs[1]["limits"]["max_cost_usd"] == 1e-12
    assert recs[1]["decision"]["fallback"] is True  # nothing meets a 1e-12 dollar limit


def test_auth_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_CLIENT", "client-secret-1")
    monkeypatch.setenv("T_ADMIN", "admin-secret-2")
    with Upstream() as up:
        cfg = config(
            {"small": up.base_url},
            server='client_token_env = "T_CLIENT"\nadmin_token_env = "T_ADMIN"',
        )
        with running_server(cfg) as run:
            msgs = [{"role": "user", "content": "hi"}]
            with pytest.raises(openai.AuthenticationError):
                _client(run, api_key="wrong").chat.completions.create(
                    model="uniscale",
                    messages=msgs,  # type: ignore[arg-type]
                )
            raw = _client(run, api_key="client-secret-1").chat.completions.with_raw_response.create(
                model="uniscale",
                messages=msgs,  # type: ignore[arg-type]
            )
            did = int(raw.headers["x-uniscale-decision-id"])
            url = f"{run.base_url}/v1/feedback"
            body = {"decision_id": did, "quality": 1.0}
            client_auth = {"Authorization": "Bearer client-secret-1"}
            assert httpx.post(url, json=body, headers=client_auth).status_code == 401
            admin = {"Authorization": "Bearer admin-secret-2"}
            assert httpx.post(url, json=body, headers=admin).status_code == 200
            assert httpx.get(f"{run.base_url}/metrics").status_code == 401
            assert httpx.get(f"{run.base_url}/metrics", headers=admin).status_code == 200
            assert httpx.get(f"{run.base_url}/healthz").status_code == 200


def test_missing_token_env_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from uniscale._core import ConfigError
    from uniscale.serve.app import Server

    monkeypatch.delenv("T_NOPE", raising=False)
    cfg = config({"small": "http://127.0.0.1:9/v1"}, server='client_token_env = "T_NOPE"')
    with pytest.raises(ConfigError, match="'T_NOPE'"):
        Server(cfg)


# --------------------------------------------------------------------------------------------
# Feedback


def test_feedback_accepts_once_and_rejects_clearly(tmp_path: Path) -> None:
    with Upstream() as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path, policy="ttl_s = 2.0")
        with running_server(cfg) as run:
            client = _client(run)
            msgs = [{"role": "user", "content": "hi"}]
            ids = [
                int(
                    client.chat.completions.with_raw_response.create(
                        model="uniscale",
                        messages=msgs,  # type: ignore[arg-type]
                    ).headers["x-uniscale-decision-id"]
                )
                for _ in range(2)
            ]
            t_made = time.monotonic()  # both decisions exist by now
            url = f"{run.base_url}/v1/feedback"
            ok = httpx.post(url, json={"decision_id": ids[0], "quality": 0.75})
            assert ok.status_code == 200 and ok.json()["learner_updated"] is True
            dup = httpx.post(url, json={"decision_id": ids[0], "quality": 0.75})
            assert dup.status_code == 409 and dup.json()["error"]["code"] == "duplicate_feedback"
            unknown = httpx.post(url, json={"decision_id": 12345, "quality": 1})
            assert unknown.status_code == 404
            assert unknown.json()["error"]["code"] == "unknown_decision"
            for bad in ({"decision_id": "x", "quality": 1}, {"decision_id": 1}, {"q": 1}):
                assert httpx.post(url, json=bad).status_code == 400
            time.sleep(max(0.0, t_made + 2.3 - time.monotonic()))
            expired = httpx.post(url, json={"decision_id": ids[1], "quality": 1})
            assert expired.status_code == 410, expired.text
            assert expired.json()["error"]["code"] == "expired_decision"
            metrics = httpx.get(f"{run.base_url}/metrics").text
    assert 'uniscale_feedback_total{result="accepted"} 1.0' in metrics
    assert 'uniscale_feedback_total{result="duplicate_feedback"} 1.0' in metrics
    assert "uniscale_feedback_lag_seconds_count 1.0" in metrics
    assert "uniscale_learner_updates_total 1.0" in metrics
    fb = [r for r in read_log(tmp_path / "decisions.jsonl") if r["type"] == "feedback"]
    assert [(r["decision_id"], r["quality"]) for r in fb] == [(ids[0], 0.75)]


# --------------------------------------------------------------------------------------------
# Streaming


def _stream(run: object, model: str, content: str, **kw: Any) -> list[Any]:
    """All chunks of a streamed chat completion of the one user message ``content``."""
    return list(
        _client(run).chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], stream=True, **kw
        )
    )


def _pieces(chunks: list[Any]) -> list[str]:
    """The non-empty content deltas of ``chunks``, in order."""
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def test_stream_single_sample_is_really_streamed(tmp_path: Path) -> None:
    text = "one two three four five six"
    with Upstream(answers=[text]) as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path)
        with running_server(cfg) as run:
            chunks = _stream(run, "small", "count", stream_options={"include_usage": True})
    pieces = _pieces(chunks)
    assert len(pieces) == 6 and "".join(pieces) == text  # one chunk per upstream delta
    assert up.received[-1]["stream"] is True
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    (rec,) = read_log(tmp_path / "decisions.jsonl")
    assert rec["outcome"]["output_tokens"] == 6  # counted from the streamed logprobs


def test_stream_multi_sample_sends_one_final_chunk(tmp_path: Path) -> None:
    with Upstream(answers=["it is 4", "it is 4", "it is 5"]) as up:
        cfg = config(
            {"small": up.base_url},
            policy='strategies = ["self_consistency"]\nn_values = [3]\nextractor = "last_number"',
        )
        with running_server(cfg) as run:
            chunks = _stream(run, "uniscale", "2+2")
    pieces = _pieces(chunks)
    assert pieces == ["it is 4"]
    assert "stream" not in up.received[-1]


def test_stream_broken_mid_answer_ends_with_an_error(tmp_path: Path) -> None:
    with Upstream(answers=["alpha beta gamma delta"], mode="stream_disconnect") as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path)
        with running_server(cfg) as run:
            stream = _client(run).chat.completions.create(
                model="small", messages=[{"role": "user", "content": "x"}], stream=True
            )
            got: list[str] = []
            with pytest.raises(openai.APIError, match="upstream"):
                for c in stream:
                    if c.choices and c.choices[0].delta.content:
                        got.append(c.choices[0].delta.content)
    assert "".join(got) == "alpha beta "
    (rec,) = read_log(tmp_path / "decisions.jsonl")
    assert rec["error"]["type"] in ("AllSamplesFailed", "NetworkError")
    assert rec["quality"] == 0.0


# --------------------------------------------------------------------------------------------
# The demo upstream


def test_demo_plays_back_the_packaged_table(tmp_path: Path) -> None:
    from uniscale.serve.demo_upstream import DemoTable, demo_app, demo_config

    table = DemoTable()
    item = table.items[0]
    cfg = demo_config(port=0, state_dir=tmp_path)
    transport = httpx.ASGITransport(app=demo_app(table))
    with running_server(cfg, transport=transport) as run:
        raw = _client(run).chat.completions.with_raw_response.create(
            model="qwen15", messages=[{"role": "user", "content": item.question}]
        )
        resp = raw.parse()
        routed = _client(run).chat.completions.create(
            model="uniscale", messages=[{"role": "user", "content": item.question}]
        )
    greedy = table.entries[("qwen15", item.id)].greedy
    assert resp.choices[0].message.content == greedy.text
    assert resp.usage is not None and resp.usage.completion_tokens == greedy.output_tokens
    assert routed.choices[0].message.content
    assert routed.model in ("smollm2", "qwen05", "qwen15")
    recs = read_log(tmp_path / "decisions.jsonl")
    assert len(recs) == 2 and json.dumps(recs)  # strict JSON


def test_layout_serve_is_separate_from_the_runtime() -> None:
    """``import uniscale`` never loads the server (tests/test_layout.py pins the exact list);
    inside ``uniscale.serve`` only the demo upstream reads the lab (its packaged table), and
    the configuration loads without the [serve] extra's modules."""
    import ast
    import subprocess
    import sys

    import uniscale

    pkg = Path(uniscale.__file__).resolve().parent / "serve"
    offenders = []
    for path in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n.startswith("uniscale.lab") for n in names) and path.name != "demo_upstream.py":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
    code = (
        "import sys, uniscale.serve.config, uniscale.serve.main\n"
        "print(sorted(m for m in ('starlette', 'uvicorn', 'prometheus_client', 'uniscale.lab') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_demo_process_answers_and_a_taken_port_is_a_clean_error(tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "uniscale.cli", "serve", "--demo", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        m = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", proc.stdout.readline())
        assert m is not None
        r = httpx.post(
            f"{m.group(1)}/v1/chat/completions",
            json={
                "model": "uniscale",
                "messages": [{"role": "user", "content": "Solve for x: 8x + 4x = 12"}],
            },
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        taken = subprocess.run([*cmd[:-1], m.group(2)], capture_output=True, text=True, timeout=60)
        assert taken.returncode == 1
        assert "cannot listen on 127.0.0.1:" in taken.stderr and "Traceback" not in taken.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert (tmp_path / "policy.bin").exists() and (tmp_path / "decisions.jsonl").exists()


def test_admin_status_and_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_ADMIN", "admin-secret-3")
    admin = {"Authorization": "Bearer admin-secret-3"}
    with serving(
        tmp=tmp_path,
        server='admin_token_env = "T_ADMIN"\nmode = "conservative"',
        policy='baseline = "large/single/1"',
    ) as (_, run):
        _client(run).chat.completions.create(
            model="uniscale", messages=[{"role": "user", "content": "hi"}]
        )
        assert httpx.get(f"{run.base_url}/admin/status").status_code == 401
        st = httpx.get(f"{run.base_url}/admin/status", headers=admin).json()
        assert not (tmp_path / "policy.bin").exists()
        snap = httpx.post(f"{run.base_url}/admin/snapshot", headers=admin)
        assert snap.status_code == 200 and (tmp_path / "policy.bin").exists()
    assert st["policy_source"] == "fresh" and st["mode"] == "conservative"
    assert st["pending_decisions"] == 1 and st["deferred"] == 1
    assert st["conservative"]["decisions"] == 1
    assert st["reward_weights"] == {"quality": 1.0, "cost": 1.0, "latency": 0.2}
    assert len(st["actions"]) == 8


def _example_keys() -> list[tuple[int, str]]:
    """(line number, key) of every active key line of the example configuration."""
    import re

    out = []
    for i, line in enumerate(example_config().splitlines(), 1):
        m = re.match(r"^([a-z_]+) = ", line)
        if m:
            out.append((i, m.group(1)))
    return out


@given(
    pick=st.integers(min_value=0, max_value=10_000),
    suffix=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=4),
)
def test_any_misspelled_key_is_named_with_its_line(pick: int, suffix: str) -> None:
    keys = _example_keys()
    line, key = keys[pick % len(keys)]
    lines = example_config().splitlines()
    bad = key + suffix
    from uniscale.serve.config import MODEL_SCHEMA, SCHEMA

    assume(bad not in MODEL_SCHEMA and all(bad not in sec for sec in SCHEMA.values()))
    lines[line - 1] = lines[line - 1].replace(key, bad, 1)
    with pytest.raises(ServeConfigError) as ei:
        parse_config("\n".join(lines) + "\n", "u.toml")
    assert ei.value.args[0].startswith(f"u.toml:{line}: [")
    assert f"] {bad}: unknown key" in ei.value.args[0]


def test_model_concurrency_defaults_for_a_proxy() -> None:
    from uniscale.serve.config import DEFAULT_MODEL_CONCURRENCY

    cfg = parse_config(example_config(), "x.toml")
    assert [m.max_concurrency for m in cfg.models] == [DEFAULT_MODEL_CONCURRENCY] * 2
    text = example_config().replace("parallelism = 4", "parallelism = 4\nmax_concurrency = 2")
    assert parse_config(text, "x.toml").models[1].max_concurrency == 2


def test_ground_truth_knob_scores_the_request_at_once(tmp_path: Path) -> None:
    with Upstream(answers=["The answer is 42"]) as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path, policy='extractor = "last_number"')
        with running_server(cfg) as run:
            client = _client(run)
            msgs = [{"role": "user", "content": "6 x 7?"}]
            right = client.chat.completions.with_raw_response.create(
                model="small",
                messages=msgs,  # type: ignore[arg-type]
                extra_body={"uniscale": {"ground_truth": "42"}},
            )
            client.chat.completions.create(
                model="small",
                messages=msgs,  # type: ignore[arg-type]
                extra_headers={"X-UniScale-Ground-Truth": "41"},
            )
            client.chat.completions.create(model="small", messages=msgs)  # type: ignore[arg-type]
            did = int(right.headers["x-uniscale-decision-id"])
            dup = httpx.post(f"{run.base_url}/v1/feedback", json={"decision_id": did, "quality": 1})
    assert dup.status_code == 409  # already learned from its ground truth
    recs = [r for r in read_log(tmp_path / "decisions.jsonl") if r["type"] == "decision"]
    assert [r["quality"] for r in recs] == [1.0, 0.0, None]
    assert [r["feedback"]["deferred"] for r in recs] == [False, False, True]


def test_stream_broken_then_retried_completes_the_answer(tmp_path: Path) -> None:
    with Upstream(answers=["alpha beta gamma delta"], script=["stream_disconnect"]) as up:
        cfg = config(
            {"small": up.base_url},
            tmp=tmp_path,
            executor="timeout_s = 5\ndeadline_s = 10\nretries = 1\nbackoff_s = 0",
        )
        with running_server(cfg) as run:
            chunks = _stream(run, "small", "x")
    pieces = _pieces(chunks)
    # the first two words were streamed before the cut; the retry's answer (the same greedy
    # text) supplies the rest, so the client sees the whole answer once
    assert pieces[:2] == ["alpha ", "beta "]
    assert "".join(pieces) == "alpha beta gamma delta"
    assert len(up.received) == 2 and "stream" not in up.received[1]
    (rec,) = read_log(tmp_path / "decisions.jsonl")
    assert rec["error"] is None
