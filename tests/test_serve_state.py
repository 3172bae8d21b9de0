"""``uniscale serve`` state: snapshots (periodic, at shutdown, reloaded at start), corrupt
snapshots moved aside, SIGTERM under load then restart, shadow and conservative modes."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from serve_fakes import (
    MSGS,
    Upstream,
    config,
    post,
    read_log,
    running_server,
    serve_toml,
    serving,
    start_serve,
)

import uniscale
from uniscale._core import ConfigError


def test_snapshot_at_shutdown_and_reload(tmp_path: Path) -> None:
    with Upstream() as up:
        cfg = config({"small": up.base_url, "large": up.base_url}, tmp=tmp_path)
        with running_server(cfg) as run:
            assert run.server.policy_source == "fresh"
            ids = [int(post(run.base_url).headers["x-uniscale-decision-id"]) for _ in range(3)]
            fb = httpx.post(
                f"{run.base_url}/v1/feedback", json={"decision_id": ids[0], "quality": 1.0}
            )
            assert fb.status_code == 200
        state = tmp_path / "policy.bin"
        saved = uniscale.Policy.load(state)
        assert saved.n_pending == 2  # the two decisions still waiting for feedback
        with running_server(cfg) as run:
            assert run.server.policy_source == str(state)
            assert httpx.get(f"{run.base_url}/readyz").json()["policy"] == str(state)
            # feedback for a decision made before the restart still lands
            fb = httpx.post(
                f"{run.base_url}/v1/feedback", json={"decision_id": ids[1], "quality": 0.0}
            )
            assert fb.status_code == 200, fb.text
            dup = httpx.post(
                f"{run.base_url}/v1/feedback", json={"decision_id": ids[0], "quality": 1.0}
            )
            assert dup.status_code in (404, 409)
            new = int(post(run.base_url).headers["x-uniscale-decision-id"])
    assert new > max(ids)  # decision ids continue, never reused
    assert (tmp_path / "policy.bin.prev").exists()


def test_periodic_snapshot(tmp_path: Path) -> None:
    import dataclasses

    with Upstream() as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path)
        cfg = dataclasses.replace(
            cfg, state=dataclasses.replace(cfg.state, snapshot_interval_s=0.2)
        )
        with running_server(cfg) as run:
            post(run.base_url)
            deadline = time.monotonic() + 5
            while not (tmp_path / "policy.bin").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert (tmp_path / "policy.bin").exists()
            metrics = httpx.get(f"{run.base_url}/metrics").text
    assert re.search(r'uniscale_snapshots_total\{result="ok"\} [1-9]', metrics)


def test_corrupt_snapshot_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "policy.bin"
    state.write_bytes(b"definitely not a policy")
    with Upstream() as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path)
        with caplog.at_level(logging.ERROR), running_server(cfg) as run:
            assert run.server.policy_source == "fresh"
            assert post(run.base_url).status_code == 200
    aside = list(tmp_path.glob("policy.bin.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"definitely not a policy"
    assert "UNISCALE STATE" in caplog.text and "moved it to" in caplog.text
    uniscale.Policy.load(state)  # the shutdown snapshot is good


def test_starts_from_the_previous_snapshot(tmp_path: Path) -> None:
    with Upstream() as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path)
        with running_server(cfg) as run:
            post(run.base_url)
        state = tmp_path / "policy.bin"
        os.replace(state, tmp_path / "policy.bin.prev")
        state.write_bytes(state.with_name("policy.bin.prev").read_bytes()[:-7])  # truncated
        with running_server(cfg) as run:
            assert run.server.policy_source == str(tmp_path / "policy.bin.prev")


def test_snapshot_of_another_configuration_is_refused(tmp_path: Path) -> None:
    from uniscale.serve.app import Server

    with Upstream() as up:
        with running_server(config({"small": up.base_url}, tmp=tmp_path)):
            pass
        other = config({"small": up.base_url, "large": up.base_url}, tmp=tmp_path)
        with pytest.raises(ConfigError, match="made for another configuration"):
            Server(other)


def test_shadow_mode_serves_the_baseline_and_logs_the_policy_choice(tmp_path: Path) -> None:
    with serving(
        tmp=tmp_path,
        server='mode = "shadow"',
        policy='baseline = "large/single/1"\nexploration = "softmax"',
    ) as (up, run):
        rs = [post(run.base_url) for _ in range(5)]
    for r in rs:
        assert r.status_code == 200
        assert r.headers["x-uniscale-action"] == "large/single/n=1"
        assert r.headers["x-uniscale-mode"] == "shadow"
        assert r.headers["x-uniscale-shadow-action"]
        assert 0 < float(r.headers["x-uniscale-shadow-propensity"]) <= 1
    recs = read_log(tmp_path / "decisions.jsonl")
    served = {r["decision_id"] for r in recs if r["type"] == "decision"}
    shadows = [r for r in recs if r["type"] == "shadow"]
    assert {r["decision_id"] for r in shadows} == served
    for s in shadows:
        assert s["shadow"]["propensity"] > 0 and len(s["candidate_uids"]) >= 1
    assert all(b["model"] == "large" for b in up.received)


def test_conservative_mode_starts_on_the_baseline(tmp_path: Path) -> None:
    with serving(
        tmp=tmp_path,
        server='mode = "conservative"',
        policy='baseline = "large/single/1"\nfeedback = "confidence"',
    ) as (_, run):
        r = post(run.base_url)
        assert r.headers["x-uniscale-action"] == "large/single/n=1"
        assert r.headers["x-uniscale-conservative"] in ("0", "1")
        bad = post(run.base_url, uniscale={"preset": "balanced"})
        assert bad.status_code == 400 and "conservative" in bad.text
        status = run.server.policy.conservative_status()
    assert status is not None and status["decisions"] >= 1


# --------------------------------------------------------------------------------------------
# SIGTERM under load, then restart (a real `uniscale serve` process)


def test_sigterm_under_load_then_restart(tmp_path: Path) -> None:
    with Upstream(answers=["The answer is 42"], delay_s=0.05) as up:
        cfg_path = tmp_path / "uniscale.toml"
        cfg_path.write_text(serve_toml(up.base_url))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc, base, source = start_serve(cfg_path, env)
        assert source == "fresh"
        accepted: list[int] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post(
                            f"{base}/v1/chat/completions",
                            json={"model": "uniscale", "messages": MSGS},
                        )
                    except httpx.HTTPError:
                        return  # the server stopped accepting
                    if r.status_code == 200:
                        with lock:
                            accepted.append(int(r.headers["x-uniscale-decision-id"]))
                    elif r.status_code == 503:
                        return

        try:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futs = [pool.submit(client) for _ in range(8)]
                deadline = time.monotonic() + 20
                while len(accepted) < 20 and time.monotonic() < deadline:
                    time.sleep(0.05)
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=40)
                stop.set()
                for f in futs:
                    f.result(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        assert proc.stdout is not None and "uniscale serve: stopped" in proc.stdout.read()
        assert len(accepted) >= 20
        state = tmp_path / "state" / "policy.bin"
        uniscale.Policy.load(state)  # the shutdown snapshot loads
        logged = {
            r["decision_id"]
            for r in read_log(tmp_path / "state" / "log.jsonl")
            if r["type"] == "decision"
        }
        assert set(accepted) <= logged  # every accepted request's decision is in the log

        proc, base, source = start_serve(cfg_path, env)
        try:
            assert source == str(state)
            r = httpx.post(
                f"{base}/v1/chat/completions",
                json={"model": "uniscale", "messages": MSGS},
                timeout=30,
            )
            assert r.status_code == 200
            assert int(r.headers["x-uniscale-decision-id"]) > max(accepted)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_decision_log_rotates_by_size(tmp_path: Path) -> None:
    import dataclasses

    with Upstream() as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path)
        st = dataclasses.replace(cfg.state, decision_log_max_bytes=4096, decision_log_keep=2)
        with running_server(dataclasses.replace(cfg, state=st)) as run:
            ids = [int(post(run.base_url).headers["x-uniscale-decision-id"]) for _ in range(12)]
            metrics = httpx.get(f"{run.base_url}/metrics").text
    log = tmp_path / "decisions.jsonl"
    files = [log, log.with_name("decisions.jsonl.1"), log.with_name("decisions.jsonl.2")]
    assert all(f.exists() for f in files)
    assert not log.with_name("decisions.jsonl.3").exists()  # only `keep` rotated files
    logged = [r["decision_id"] for f in files for r in read_log(f) if r["type"] == "decision"]
    assert len(logged) == len(set(logged))  # no record twice, none split
    assert set(logged) <= set(ids)
    assert max(logged) == ids[-1]
    assert re.search(r"uniscale_decision_log_rotations_total [1-9]", metrics)


def test_uniscale_ope_reads_the_served_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uniscale import cli

    with serving(
        answers=["The answer is 42", "It is 41"],
        tmp=tmp_path,
        policy='exploration = "epsilon"\nepsilon = 0.5\nn_values = [1, 2]',
    ) as (_, run):
        for i in range(40):
            r = post(run.base_url, messages=[{"role": "user", "content": f"q {i}?"}])
            did = int(r.headers["x-uniscale-decision-id"])
            fb = httpx.post(
                f"{run.base_url}/v1/feedback", json={"decision_id": did, "quality": i % 2}
            )
            assert fb.status_code == 200
    code = cli.main(
        [
            "ope",
            "--log",
            str(tmp_path / "decisions.jsonl"),
            "--policy",
            str(tmp_path / "policy.bin"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "n=40 " in out and "ESS=" in out


def test_restart_keeps_pacing_and_the_conservative_account(tmp_path: Path) -> None:
    with Upstream() as up:
        cfg = config(
            {"small": up.base_url, "large": up.base_url},
            tmp=tmp_path,
            server='mode = "conservative"',
            policy='baseline = "large/single/1"\nfeedback = "confidence"\n'
            "budget_per_request_usd = 0.01",
        )
        with running_server(cfg) as run:
            for _ in range(4):
                assert post(run.base_url).status_code == 200
            credit = run.server.policy.pacing_credit
            decisions = run.server.policy.conservative_status()["decisions"]
        assert credit > 0 and decisions == 4
        with running_server(cfg) as run:
            assert run.server.policy_source == str(tmp_path / "policy.bin")
            assert run.server.policy.pacing_credit == pytest.approx(credit)
            assert run.server.policy.conservative_status()["decisions"] == decisions
