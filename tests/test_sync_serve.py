"""``uniscale serve`` with ``[sync]``: two servers share what they learn through a real Redis."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from redis_fixture import RedisServer
from serve_fakes import MSGS, Upstream, config, running_server

from uniscale._core import sync_export
from uniscale.serve.config import ServeConfig, ServeConfigError, SyncSettings, parse_config


def test_sync_section_is_validated() -> None:
    base = '[[models]]\nname = "m"\nbase_url = "http://127.0.0.1:1/v1"\n'
    cfg = parse_config(
        '[sync]\nredis_url = "redis://127.0.0.1:6379/0"\nreplica_id = "gw-1"\n'
        "interval_s = 2.5\n" + base
    )
    assert cfg.sync.enabled and cfg.sync.replica_id == "gw-1" and cfg.sync.interval_s == 2.5
    assert not parse_config(base).sync.enabled
    with pytest.raises(ServeConfigError, match=r"\[sync\] interval_s"):
        parse_config("[sync]\ninterval_s = 0\n" + base)
    with pytest.raises(ServeConfigError, match=r"\[sync\] replica_id"):
        parse_config('[sync]\nreplica_id = "a:b"\n' + base)
    with pytest.raises(ServeConfigError, match=r"\[sync\] epoch_decay: needs epoch_s"):
        parse_config("[sync]\nepoch_decay = 0.5\n" + base)
    cfg = parse_config("[sync]\nepoch_s = 3600\nepoch_decay = 0.9\n" + base)
    assert cfg.sync.epoch_s == 3600 and cfg.sync.epoch_decay == 0.9
    with pytest.raises(ServeConfigError, match=r"\[sync\] redis_ur: unknown key"):
        parse_config('[sync]\nredis_ur = "x"\n' + base)


def test_two_servers_share_learning(redis_server: RedisServer, tmp_path: Path) -> None:
    with Upstream() as up:
        models = {"small": up.base_url, "large": up.base_url}

        def cfg(rid: str) -> ServeConfig:
            c = config(models, tmp=tmp_path / rid)
            s = SyncSettings(redis_server.url, "serve", rid, interval_s=0.05)
            return dataclasses.replace(c, sync=s)

        with running_server(cfg("a")) as a, running_server(cfg("b")) as b:
            ids = []
            for _ in range(6):
                r = httpx.post(
                    f"{a.base_url}/v1/chat/completions",
                    json={"model": "uniscale", "messages": MSGS},
                    timeout=30,
                )
                assert r.status_code == 200, r.text
                ids.append(int(r.headers["x-uniscale-decision-id"]))
            for i in ids:
                fb = httpx.post(
                    f"{a.base_url}/v1/feedback", json={"decision_id": i, "quality": 0.9}
                )
                assert fb.status_code == 200, fb.text
            # b learns what a learned, without seeing any of it
            want = sync_export(a.server.policy.core)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                got = sync_export(b.server.policy.core)
                if np.allclose(got, sync_export(a.server.policy.core), rtol=0, atol=1e-9):
                    break
                time.sleep(0.05)
            got = sync_export(b.server.policy.core)
            want = sync_export(a.server.policy.core)
            scale = max(1.0, float(np.max(np.abs(want))))
            assert float(np.max(np.abs(got - want))) <= 1e-12 * scale
            assert np.any(want != 0)
            # pending decisions stay local: feedback for a's decision at b is unknown there...
            fb = httpx.post(f"{b.base_url}/v1/feedback", json={"decision_id": ids[0], "quality": 1})
            assert fb.status_code == 404, fb.text
            # ...unless it names the replica (x-uniscale-replica): then it is forwarded
            r = httpx.post(
                f"{a.base_url}/v1/chat/completions",
                json={"model": "uniscale", "messages": MSGS},
                timeout=30,
            )
            assert r.headers["x-uniscale-replica"] == "a"
            late = int(r.headers["x-uniscale-decision-id"])
            pending = a.server.policy.n_pending
            fb = httpx.post(
                f"{b.base_url}/v1/feedback",
                json={"decision_id": late, "quality": 0.5, "replica": "a"},
            )
            assert fb.status_code == 202 and fb.json()["forwarded_to"] == "a", fb.text
            deadline = time.monotonic() + 10
            while a.server.policy.n_pending >= pending and time.monotonic() < deadline:
                time.sleep(0.02)
            assert a.server.policy.n_pending == pending - 1
            assert a.server.sync.status().forwarded_applied == 1
            assert (
                'uniscale_feedback_total{result="forwarded"} 1.0'
                in httpx.get(f"{a.base_url}/metrics").text
            )
            metrics = httpx.get(f"{b.base_url}/metrics").text
            assert "uniscale_sync_slots_merged 1.0" in metrics
            assert "uniscale_sync_breaker_open 0.0" in metrics
            status = httpx.get(f"{b.base_url}/admin/status").json()
            assert status["sync"]["replica_id"] == "b" and status["sync"]["rounds"] > 0


def test_a_sync_that_cannot_start_is_a_configuration_error(tmp_path: Path) -> None:
    from uniscale.serve.app import Server

    cfg = config({"small": "http://127.0.0.1:1/v1"}, tmp=tmp_path)
    bad = dataclasses.replace(cfg, sync=SyncSettings("redis://127.0.0.1:1/0", "k", "a:b"))
    with pytest.raises(ServeConfigError, match=r"\[sync\] .*replica_id"):
        Server(bad)
