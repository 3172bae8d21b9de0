"""``[server] workers = N``: several `uniscale serve` processes on one port, one policy through
a real Redis (`uniscale.serve.workers`)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from redis_fixture import RedisServer
from serve_fakes import MSGS, Upstream, config, read_log, running_server, serve_toml, start_serve

import uniscale
from uniscale._core import ConfigError
from uniscale.cli import main as cli_main
from uniscale.decision_log import last_decision_id
from uniscale.serve.config import ServeConfigError, SyncSettings, parse_config
from uniscale.serve.workers import WORKER_ID_BITS, WorkerInfo, worker_config, worker_paths

BASE = '[[models]]\nname = "m"\nbase_url = "http://127.0.0.1:1/v1"\n'


def test_workers_setting_is_validated() -> None:
    assert parse_config(BASE).server.workers == 1
    sync = '[sync]\nredis_url = "redis://127.0.0.1:1/0"\n'
    assert parse_config("[server]\nworkers = 4\n" + sync + BASE).server.workers == 4
    with pytest.raises(ServeConfigError, match=r"\[server\] workers: 2 workers need \[sync\]"):
        parse_config("[server]\nworkers = 2\n" + BASE)
    for bad in ("0", "65", '"two"'):
        with pytest.raises(ServeConfigError, match=r"\[server\] workers"):
            parse_config(f"[server]\nworkers = {bad}\n" + sync + BASE)


def test_workers_flag_without_sync_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "uniscale.toml"
    cfg.write_text(BASE)
    r = subprocess.run(
        [sys.executable, "-m", "uniscale.cli", "serve", "--config", str(cfg), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "2 workers need [sync] redis_url" in r.stderr
    assert "Traceback" not in r.stderr


def test_worker_info_ranges_and_paths(tmp_path: Path) -> None:
    w = WorkerInfo(1, 3, "gw")
    assert w.replica() == "gw-w1" and w.replica(2) == "gw-w2"
    assert w.first_id == 1 << WORKER_ID_BITS
    assert w.owner(0) == 0 and w.owner((1 << WORKER_ID_BITS) - 1) == 0
    assert w.owner(1 << WORKER_ID_BITS) == 1 and w.owner(3 << WORKER_ID_BITS) is None
    cfg = dataclasses.replace(
        config({"m": "http://127.0.0.1:1/v1"}, tmp=tmp_path),
        sync=SyncSettings("redis://127.0.0.1:1/0", "k", "gw"),
    )
    policy, log = worker_paths(cfg, 2)
    assert policy == tmp_path / "policy.w2.bin" and log == tmp_path / "decisions.w2.jsonl"
    wc = worker_config(cfg, WorkerInfo(2, 3, "gw"))
    assert wc.state.policy_path == policy and wc.state.decision_log == log
    assert wc.sync.replica_id == "gw-w2" and wc.server.workers == 1


def test_advance_decision_ids_never_goes_down(tmp_path: Path) -> None:
    space = uniscale.ActionSpace(
        [uniscale.ModelSpec("m", 1.0, 2.0)], [uniscale.Action("m", "single", 1)]
    )
    p = uniscale.Policy(space, 4)
    x = [0.0] * 4
    assert p.next_decision_id == 0
    assert p.select(x).id == 0
    assert p.advance_decision_ids(100) == 100
    assert p.advance_decision_ids(50) == 100  # never down: no id is issued twice
    assert p.select(x).id == 100
    p.save(tmp_path / "p.bin")
    q = uniscale.Policy.load(tmp_path / "p.bin")
    assert q.next_decision_id == 101 and q.select(x).id == 101
    for bad in (-1, 2**64, 1.5, True, "7"):
        with pytest.raises(ConfigError, match="at_least"):
            p.advance_decision_ids(bad)  # type: ignore[arg-type]


def test_a_worker_forwards_feedback_for_another_workers_decision(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """In process: worker 0 of 2 gets feedback for an id in worker 1's range, with no
    ``replica`` field: 202, queued in worker 1's Redis inbox."""
    import redis

    with Upstream() as up:
        info = WorkerInfo(0, 2, "gw")
        base = config({"small": up.base_url}, tmp=tmp_path)
        cfg = worker_config(
            dataclasses.replace(base, sync=SyncSettings(redis_server.url, "fwd", "gw")), info
        )
        with running_server(cfg, worker=info) as run:
            r = httpx.post(
                f"{run.base_url}/v1/chat/completions",
                json={"model": "uniscale", "messages": MSGS},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            own = int(r.headers["x-uniscale-decision-id"])
            assert info.owner(own) == 0 and r.headers["x-uniscale-replica"] == "gw-w0"
            theirs = (1 << WORKER_ID_BITS) + 7
            fb = httpx.post(
                f"{run.base_url}/v1/feedback", json={"decision_id": theirs, "quality": 1.0}
            )
            assert fb.status_code == 202, fb.text
            assert fb.json()["forwarded_to"] == "gw-w1"
            fb = httpx.post(f"{run.base_url}/v1/feedback", json={"decision_id": own, "quality": 1})
            assert fb.status_code == 200, fb.text
            # an id in no worker's range is this worker's to refuse
            fb = httpx.post(
                f"{run.base_url}/v1/feedback",
                json={"decision_id": 5 << WORKER_ID_BITS, "quality": 1.0},
            )
            assert fb.status_code == 404, fb.text
            status = httpx.get(f"{run.base_url}/admin/status").json()
            assert status["worker"]["replica"] == "gw-w0" and status["worker"]["count"] == 2
        inbox = redis.Redis.from_url(redis_server.url).keys("*feedback*gw-w1*")
        assert inbox, "the forwarded feedback is not in worker 1's inbox"


def test_worker_refuses_a_policy_past_its_id_range(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with Upstream() as up:
        info = WorkerInfo(0, 2, "gw")
        base = config({"small": up.base_url}, tmp=tmp_path)
        cfg = worker_config(
            dataclasses.replace(base, sync=SyncSettings(redis_server.url, "past", "gw")), info
        )
        from uniscale.serve.app import Server

        first = Server(cfg, worker=WorkerInfo(1, 2, "gw"))  # ids from 2**40 on
        assert first.cfg.state.policy_path is not None
        first.policy.save(first.cfg.state.policy_path)
        with pytest.raises(ConfigError, match="past this worker's range"):
            Server(cfg, worker=info)


# --------------------------------------------------------------------------------------------
# A real `uniscale serve` with two workers


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def _chat(base: str) -> httpx.Response:
    # a new connection per request, so the two workers share the accepts
    with httpx.Client(timeout=30) as c:
        return c.post(f"{base}/v1/chat/completions", json={"model": "uniscale", "messages": MSGS})


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_two_workers_serve_learn_and_stop_cleanly(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Upstream(answers=["The answer is 42"], delay_s=0.02) as up:
        cfg_path = tmp_path / "uniscale.toml"
        sync = (
            f"[sync]\nredis_url = '{redis_server.url}'\npolicy_key = 'workers'\n"
            "replica_id = 'gw'\ninterval_s = 0.05\n"
        )
        cfg_path.write_text(serve_toml(up.base_url, server="workers = 2\n", extra=sync))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc, base, sources = start_serve(cfg_path, env)
        try:
            assert sources == "fresh, fresh"
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: _chat(base), range(80)))
            assert all(r.status_code == 200 for r in answers), [r.text for r in answers][:3]
            made = {
                int(r.headers["x-uniscale-decision-id"]): r.headers["x-uniscale-replica"]
                for r in answers
            }
            assert len(made) == 80  # ids are unique across the workers
            for did, replica in made.items():
                assert replica == f"gw-w{did >> WORKER_ID_BITS}"  # the id names its worker
            assert set(made.values()) == {"gw-w0", "gw-w1"}, "one worker took every request"
            # feedback without "replica", to whichever worker accepts it
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                fb = list(
                    pool.map(
                        lambda d: httpx.post(
                            f"{base}/v1/feedback", json={"decision_id": d, "quality": 1.0}
                        ),
                        made,
                    )
                )
            assert {r.status_code for r in fb} <= {200, 202}, [r.text for r in fb][:3]
            # every feedback reaches the learner of the worker that made the decision: the
            # aggregated metrics count them (forwarded ones at the owner's next sync round)
            deadline = time.monotonic() + 20
            while True:
                text = httpx.get(f"{base}/metrics").text
                applied = _metric(text, 'uniscale_feedback_total{result="accepted"}') + _metric(
                    text, 'uniscale_feedback_total{result="forwarded"}'
                )
                if applied >= 80 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert applied == 80, text
            assert _metric(text, "uniscale_decisions_total") == 80
            # kill a worker: the parent restarts it, and the server keeps answering
            status = httpx.get(f"{base}/admin/status").json()
            os.kill(status["worker"]["pid"], signal.SIGKILL)
            deadline = time.monotonic() + 60
            seen: set[str] = set()
            while seen != {"gw-w0", "gw-w1"} and time.monotonic() < deadline:
                r = _chat(base)
                assert r.status_code == 200
                seen.add(r.headers["x-uniscale-replica"])
            assert seen == {"gw-w0", "gw-w1"}
        finally:
            code, out, err = _stop(proc)
        assert code == 0, err
        assert "uniscale serve: stopped" in out
        assert "restarting it" in err
        state = tmp_path / "state"
        logged: set[int] = set()
        for i in range(2):
            uniscale.Policy.load(state / f"policy.w{i}.bin")  # each worker's snapshot loads
            logged |= {
                r["decision_id"]
                for r in read_log(state / f"log.w{i}.jsonl")
                if r.get("type") == "decision"
            }
        assert set(made) <= logged  # every decision is in its worker's log
        # the workers' logs are one log to off-policy evaluation (their ids never overlap)
        logs = [str(state / f"log.w{i}.jsonl") for i in range(2)]
        uid = next(r["decision"]["action_uid"] for r in read_log(state / "log.w0.jsonl"))
        assert cli_main(["ope", "--log", *logs, "--action", str(uid)]) == 0
        assert "log.w0.jsonl, " in capsys.readouterr().out
        assert cli_main(["ope", "--log", logs[0], logs[0], "--action", str(uid)]) == 2
        assert "twice" in capsys.readouterr().err

        proc, base, sources = start_serve(cfg_path, env)
        try:
            assert sources == f"{state / 'policy.w0.bin'}, {state / 'policy.w1.bin'}"
            r = _chat(base)
            assert r.status_code == 200
            did = int(r.headers["x-uniscale-decision-id"])
            same_worker = [d for d in made if d >> WORKER_ID_BITS == did >> WORKER_ID_BITS]
            assert did > max(same_worker)  # ids continue within the worker's range
        finally:
            code, _, err = _stop(proc)
        assert code == 0, err


# --------------------------------------------------------------------------------------------
# Decision ids are never issued twice, even after a crash


def test_last_decision_id_reads_the_logs_end(tmp_path: Path) -> None:
    log = tmp_path / "d.jsonl"
    assert last_decision_id(log) is None  # no file
    log.write_bytes(
        b'{"type":"decision","decision_id":4}\n{"type":"feedback","decision_id":3}\n'
        b'{"type":"decision","decision_id":9}\n{"type":"decision","decision_id":12'  # torn
    )
    assert last_decision_id(log) == 9
    empty = tmp_path / "e.jsonl"
    empty.write_bytes(b"")
    assert last_decision_id(empty, log) == 9  # just rotated: the newest rotated file tells
    big = tmp_path / "big.jsonl"
    line = b'{"type":"decision","decision_id":%d,"pad":"' + b"x" * 500 + b'"}\n'
    big.write_bytes(b"".join(line % i for i in range(5000)))  # > 1 MiB: only the end is read
    assert last_decision_id(big) == 4999


def test_a_restart_after_a_crash_continues_past_the_logged_ids(tmp_path: Path) -> None:
    """The snapshot predates decisions the log holds (the process was killed between two
    snapshots): the restarted server's ids continue after the log's."""
    with Upstream() as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path)
        with running_server(cfg) as run:
            ids = [
                int(
                    httpx.post(
                        f"{run.base_url}/v1/chat/completions",
                        json={"model": "uniscale", "messages": MSGS},
                        timeout=30,
                    ).headers["x-uniscale-decision-id"]
                )
                for _ in range(3)
            ]
            run.server.policy.save(cfg.state.policy_path)
            for _ in range(4):  # after the snapshot: only the log knows these
                r = httpx.post(
                    f"{run.base_url}/v1/chat/completions",
                    json={"model": "uniscale", "messages": MSGS},
                    timeout=30,
                )
                ids.append(int(r.headers["x-uniscale-decision-id"]))
            snapshot = cfg.state.policy_path.read_bytes()
        assert cfg.state.policy_path is not None
        cfg.state.policy_path.write_bytes(snapshot)  # as if killed: the old snapshot
        (tmp_path / "policy.bin.prev").unlink(missing_ok=True)
        from uniscale.serve.app import Server

        restarted = Server(cfg)
        assert restarted.policy.next_decision_id == max(ids) + 1
