"""A real ``redis-server`` on 127.0.0.1 for the sync tests (not part of the package).

`redis_server` starts one on a free port with persistence off (``--save "" --appendonly no``)
and kills it at teardown. Without a ``redis-server`` binary (or redis-py) the tests skip
locally and FAIL under ``CI=true``: CI must exercise the real thing (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


def _missing(what: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required under CI=true (.ci/run installs redis-server)")
    pytest.skip(f"{what} not available")


def require_redis_py() -> None:
    """Skips (locally) or fails (CI) a test that needs redis-py but no server."""
    try:
        import redis  # noqa: F401
    except ImportError:
        _missing("redis-py (pip install 'uniscale[redis]')")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_ports(n: int) -> list[int]:
    """``n`` free ports whose cluster-bus ports (port + 10000) are free too."""
    rng = random.Random()
    out: list[int] = []
    while len(out) < n:
        p = rng.randrange(20000, 30000)
        if p not in out and _is_free(p) and _is_free(p + 10000):
            out.append(p)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """One redis-server process; `kill` and `start` (same port) simulate an outage."""

    binary: str
    port: int
    proc: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.wait_ping(10.0)
        except RuntimeError:
            self.kill()
            raise

    def wait_ping(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server")
        raise AssertionError  # unreachable: _missing skips or fails
    require_redis_py()
    server = RedisServer(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master Redis Cluster on free 127.0.0.1 ports (no replicas, persistence off);
    yields the URL of one node."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        _missing("redis-server and redis-cli")
        raise AssertionError  # unreachable
    require_redis_py()
    base = tmp_path_factory.mktemp("cluster")
    ports = cluster_ports(3)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            d = base / str(port)
            d.mkdir()
            procs.append(
                subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(d / "nodes.conf"),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(d),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            RedisServer(binary, port).wait_ping(10.0)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out = subprocess.run(
                [cli, "-p", str(ports[0]), "cluster", "info"], capture_output=True, timeout=5
            ).stdout
            if b"cluster_state:ok" in out:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
