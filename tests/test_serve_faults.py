"""``uniscale serve`` under upstream faults: timeouts, 500s, garbage JSON, a connection cut
mid-response. The proxy answers within its deadline with the fallback action or a clean
502/504, logs the decision, keeps its state, and never shows an upstream key."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from serve_fakes import MSGS, Upstream, config, post, read_log, running_server


@pytest.mark.parametrize("upstream_http", ["aiohttp", "httpx"])
@pytest.mark.parametrize(
    ("mode", "status", "kind"),
    [
        ("500", 502, "UpstreamHTTPError"),
        ("garbage", 502, "MalformedResponseError"),
        ("disconnect", 502, "NetworkError"),
        ("hang", 504, "RequestTimeout"),
    ],
)
def test_fault_gives_a_clean_error_and_a_logged_decision(
    tmp_path: Path, mode: str, status: int, kind: str, upstream_http: str
) -> None:
    """Both connection layers under httpx map every fault to the same error."""
    with Upstream(mode=mode, hang_s=3.0) as up:
        cfg = config(
            {"small": up.base_url},
            tmp=tmp_path,
            server=f'upstream_http = "{upstream_http}"',
            executor="timeout_s = 0.5\ndeadline_s = 1.0\nretries = 0",
        )
        with running_server(cfg) as run:
            t0 = time.monotonic()
            r = post(run.base_url, "small")
            elapsed = time.monotonic() - t0
            assert r.status_code == status, r.text
            err = r.json()["error"]
            assert err["type"] in ("upstream_error", "upstream_timeout")
            did = int(r.headers["x-uniscale-decision-id"])
            # the state is intact: the next request is served normally
            up.mode = "ok"
            ok = post(run.base_url, "small")
            assert ok.status_code == 200, ok.text
            metrics = httpx.get(f"{run.base_url}/metrics").text
    assert elapsed < 4.0  # the 1 s deadline plus overhead (loaded CI machines)
    recs = [r for r in read_log(tmp_path / "decisions.jsonl") if r["type"] == "decision"]
    assert [r["decision_id"] for r in recs] == [did, did + 1]
    assert recs[0]["error"] is not None and recs[0]["quality"] == 0.0
    assert recs[0]["reward"] is not None  # learned as a failure
    assert recs[1]["error"] is None
    assert f'uniscale_upstream_errors_total{{kind="{kind}"}} 1.0' in metrics
    assert f'uniscale_requests_total{{route="chat",status="{status}"}} 1.0' in metrics


def test_fallback_answers_when_the_chosen_model_fails(tmp_path: Path) -> None:
    with Upstream(mode="500") as bad, Upstream(answers=["fallback says 42"]) as good:
        cfg = config(
            {"bad": bad.base_url, "good": good.base_url},
            tmp=tmp_path,
            executor='timeout_s = 2\ndeadline_s = 4\nretries = 1\nfallback = "good/single/1"',
        )
        with running_server(cfg) as run:
            r = post(run.base_url, "bad")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "fallback says 42"
    assert r.headers["x-uniscale-fallback"] == "1"
    assert r.headers["x-uniscale-action"] == "bad/single/n=1"
    assert r.headers["x-uniscale-served-action"] == "good/single/n=1"
    assert len(bad.received) == 2  # one retry, then the fallback
    (rec,) = read_log(tmp_path / "decisions.jsonl")
    assert rec["outcome"]["fallback_used"] is True and rec["quality"] == 0.0


def test_upstream_keys_never_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-0123456789abcdefSECRET"
    monkeypatch.setenv("T_UPSTREAM_KEY", secret)
    with Upstream(mode="500") as up:
        cfg = config(
            {"small": up.base_url},
            tmp=tmp_path,
            extra_models='api_key_env = "T_UPSTREAM_KEY"',
        )
        with running_server(cfg) as run:
            r = post(run.base_url, "small")
            r2 = post(run.base_url, "small", stream=True)
            metrics = httpx.get(f"{run.base_url}/metrics").text
    assert up.received and r.status_code == 502
    assert "upstream broke" in r.text  # the upstream's message is relayed, redacted
    for text in (
        r.text,
        str(r.headers),
        r2.text,
        metrics,
        (tmp_path / "decisions.jsonl").read_text(),
    ):
        assert secret not in text
        assert secret[:12] not in text


def test_concurrency_cap_bounds_upstream_load(tmp_path: Path) -> None:
    import concurrent.futures

    with Upstream(answers=["ok 1"], delay_s=0.2) as up:
        cfg = config({"small": up.base_url}, server="max_inflight = 2")
        in_flight: list[int] = []
        with running_server(cfg) as run:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                futs = [pool.submit(post, run.base_url, "small") for _ in range(8)]
                for _ in range(10):
                    time.sleep(0.05)
                    in_flight.append(int(run.call(_inflight(run.server))))
                codes = [f.result().status_code for f in futs]
    assert codes == [200] * 8
    assert max(in_flight) <= 2


async def _inflight(server: object) -> float:
    return float(server.metrics.inflight._value.get())  # type: ignore[attr-defined]


@pytest.mark.parametrize("stream", [False, True])
def test_client_that_gives_up_still_gets_its_decision_logged(tmp_path: Path, stream: bool) -> None:
    with Upstream(answers=["slow answer 1"], delay_s=0.6) as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path)
        with running_server(cfg) as run:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(
                    f"{run.base_url}/v1/chat/completions",
                    json={"model": "small", "messages": MSGS, "stream": stream},
                    timeout=0.2,
                )
            deadline = time.monotonic() + 5
            log = tmp_path / "decisions.jsonl"
            while time.monotonic() < deadline and not (log.exists() and log.read_text()):
                time.sleep(0.05)
            ok = post(run.base_url, "small")  # the server carries on
    assert ok.status_code == 200
    recs = [r for r in read_log(tmp_path / "decisions.jsonl") if r["type"] == "decision"]
    assert len(recs) == 2 and recs[0]["error"] is None
    assert recs[0]["outcome"]["answer"] == "1"


def test_deadline_knob_bounds_a_slow_upstream(tmp_path: Path) -> None:
    with Upstream(mode="hang", hang_s=3.0) as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path)  # timeout 5 s, deadline 10 s
        with running_server(cfg) as run:
            t0 = time.monotonic()
            r = post(run.base_url, "small", uniscale={"deadline_s": 0.4})
            elapsed = time.monotonic() - t0
    assert r.status_code == 504, r.text
    assert elapsed < 2.5
    (rec,) = read_log(tmp_path / "decisions.jsonl")
    assert rec["error"]["type"] in ("DeadlineExceeded", "AllSamplesFailed")


def test_upstream_http_setting_picks_the_connection_layer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from httpx_aiohttp import AiohttpTransport

    from uniscale._core import ConfigError
    from uniscale.serve.hooks import ShardedTransport, upstream_transport

    assert isinstance(upstream_transport("aiohttp", 8), AiohttpTransport)
    assert isinstance(upstream_transport("auto", 8), AiohttpTransport)
    assert isinstance(upstream_transport("httpx", 8), ShardedTransport)
    with pytest.raises(ConfigError, match="upstream_http"):
        upstream_transport("curl", 8)
    # without the package: auto falls back to httpx, an explicit aiohttp says what to install
    monkeypatch.setitem(sys.modules, "httpx_aiohttp", None)
    assert isinstance(upstream_transport("auto", 8), ShardedTransport)
    with pytest.raises(ConfigError, match=r"uniscale\[serve\]"):
        upstream_transport("aiohttp", 8)


def test_upstream_http_bad_value_names_the_key() -> None:
    from uniscale.serve.config import ServeConfigError

    with pytest.raises(ServeConfigError, match="upstream_http"):
        config({"small": "http://127.0.0.1:9/v1"}, server='upstream_http = "curl"')
