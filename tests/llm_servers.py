"""Start and stop real llama.cpp ``llama-server`` processes for UniScale, on loopback only.

The binary and the model GGUFs come from ``scripts/llm/setup.sh``, which puts them in a cache
outside the repository (``$UNISCALE_CACHE``, default ``~/.cache/uniscale``)::

    $CACHE/llama-0.3.36-<level>/bin/llama-server
    $CACHE/models/{smollm2,qwen05,qwen15}.gguf

``<level>`` is the portable CPU feature level the binaries are built for (`cpu_level`:
``x86-64-v3`` where the CPU has AVX2/FMA/F16C/BMI2, else ``x86-64-v2``; never
``-march=native``), so a build made for another CPU, or an old native build, is never reused.

Library use (tests, CLI, benchmarks)::

    with start_servers(["smollm2", "qwen05"], ports=[8101, 8102]) as servers:
        url = servers["qwen05"].base_url        # "http://127.0.0.1:8102"

Each server is started with ``--host 127.0.0.1 -c CTX -np PARALLEL -t THREADS --alias NAME
--no-webui --no-repack`` (weight repacking is where llama.cpp 0.3.36 crashed on a Xeon with
AMX); the context manager waits for ``GET /health`` to return 200 and terminates the processes
on exit. With more than one server the default is one thread each (``-t 1``): on a
2-core machine two-thread servers that compete for cores slow down by up to 10x.

A second engine, ``engine="llama-cpp-python"``, runs ``python -m llama_cpp.server`` from the
private venv that ``scripts/llm/setup.sh llamacpp-python`` builds
(``$CACHE/llama-cpp-python-0.3.36-<level>/venv``, built with ``GGML_CPU_REPACK=OFF``). It
silently ignores ``n`` (one choice per request), which makes it the real endpoint for testing
the executor's fan-out fallback; it has no ``/health``, so readiness is ``GET /v1/models``
returning 200::

    with start_servers(["smollm2"], ports=[8111], engine="llama-cpp-python") as servers:
        ...

This module uses only the standard library and does not import the rest of the package, so it
also runs as a script (``scripts/llm/serve.sh`` wraps it) before the extension is built::

    python tests/llm_servers.py start smollm2:8101 qwen05:8102
    python tests/llm_servers.py status
    python tests/llm_servers.py stop
    python tests/llm_servers.py cpu-level     # what setup.sh builds for

A server that dies while loading raises `ServerError` naming the signal (``SIGSEGV``) and the
tail of its log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

LLAMA_CPP_PY_VERSION = "0.3.36"
HOST = "127.0.0.1"

#: Model name -> GGUF file name inside ``$CACHE/models``.
MODEL_FILES: Mapping[str, str] = {
    "smollm2": "smollm2.gguf",
    "qwen05": "qwen05.gguf",
    "qwen15": "qwen15.gguf",
}
#: Default loopback ports, one per model.
DEFAULT_PORTS: Mapping[str, int] = {"smollm2": 8101, "qwen05": 8102, "qwen15": 8103}
#: Total context (all slots together); llama-server splits it over the ``-np`` slots.
DEFAULT_CTX = 12288
DEFAULT_PARALLEL = 8
DEFAULT_HEALTH_TIMEOUT_S = 120.0

#: ``llama-server`` (llama.cpp's own server, honours ``n``) or ``llama-cpp-python``
#: (``python -m llama_cpp.server``, ignores ``n``).
Engine = Literal["llama-server", "llama-cpp-python"]
ENGINES: tuple[Engine, ...] = ("llama-server", "llama-cpp-python")


class ServerError(RuntimeError):
    """A llama-server could not be found, started, or did not become healthy."""


#: CPU flags (as in /proc/cpuinfo) that the x86-64-v3 build needs.
X86_64_V3_FLAGS = ("avx", "avx2", "fma", "f16c", "bmi2")


def cpu_level(cpuinfo: str | None = None, machine: str | None = None) -> str:
    """The portable feature level the llama.cpp builds target on this CPU.

    ``$UNISCALE_LLAMA_CPU_LEVEL`` when set; else ``x86-64-v3`` on an x86-64 CPU with every flag
    in `X86_64_V3_FLAGS`, ``x86-64-v2`` on any other x86-64 CPU, ``generic-<machine>``
    elsewhere. A level, not the host: AVX-512 and AMX are never used, so a binary runs on every
    CPU of its level. ``scripts/llm/setup.sh`` asks this function, so the build and the code
    that finds it agree. ``cpuinfo``/``machine`` are for tests.
    """
    env = os.environ.get("UNISCALE_LLAMA_CPU_LEVEL")
    if env and cpuinfo is None:
        return env
    if machine is None:
        machine = os.uname().machine
    if machine not in ("x86_64", "amd64", "AMD64"):
        return f"generic-{machine}"
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    return "x86-64-v3" if all(f in flags for f in X86_64_V3_FLAGS) else "x86-64-v2"


def describe_exit(code: int) -> str:
    """``exited with code 1`` or ``was killed by signal 11 (SIGSEGV)``."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "unknown signal"
    return f"was killed by signal {-code} ({name})"


def cache_dir() -> Path:
    """``$UNISCALE_CACHE`` or ``~/.cache/uniscale``."""
    env = os.environ.get("UNISCALE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "uniscale"


def llama_server_binary(cache: Path | None = None) -> Path:
    """The llama-server binary: ``$UNISCALE_LLAMA_SERVER`` or the one setup.sh built."""
    env = os.environ.get("UNISCALE_LLAMA_SERVER")
    if env:
        return Path(env)
    level = cpu_level()
    return (cache or cache_dir()) / f"llama-{LLAMA_CPP_PY_VERSION}-{level}" / "bin" / "llama-server"


def llamacpp_python_interpreter(cache: Path | None = None) -> Path:
    """Python of the llama-cpp-python[server] venv: ``$UNISCALE_LLAMACPP_PYTHON`` or the one
    ``setup.sh llamacpp-python`` built."""
    env = os.environ.get("UNISCALE_LLAMACPP_PYTHON")
    if env:
        return Path(env)
    level = cpu_level()
    venv = (cache or cache_dir()) / f"llama-cpp-python-{LLAMA_CPP_PY_VERSION}-{level}" / "venv"
    return venv / "bin" / "python"


def engine_executable(engine: Engine = "llama-server", cache: Path | None = None) -> Path:
    """The program that runs ``engine``: the llama-server binary or the venv's python."""
    if engine == "llama-server":
        return llama_server_binary(cache)
    if engine == "llama-cpp-python":
        return llamacpp_python_interpreter(cache)
    raise ServerError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")


def model_path(name: str, cache: Path | None = None) -> Path:
    """Path of a known model's GGUF (``name`` in `MODEL_FILES`) or of an explicit ``.gguf``."""
    if name.endswith(".gguf"):
        return Path(name)
    try:
        fname = MODEL_FILES[name]
    except KeyError:
        known = ", ".join(MODEL_FILES)
        raise ServerError(
            f"unknown model {name!r} (known: {known}, or a path to a .gguf)"
        ) from None
    return (cache or cache_dir()) / "models" / fname


def model_alias(name: str) -> str:
    """The ``--alias`` (and so the OpenAI ``model`` name) of a model given by name or path."""
    return Path(name).stem if name.endswith(".gguf") else name


def servers_available(
    models: Sequence[str], cache: Path | None = None, *, engine: Engine = "llama-server"
) -> bool:
    """True when the engine's executable and all the models' GGUFs exist (for skipping
    real-LLM tests). For ``llama-cpp-python`` this means the venv's python exists; whether it
    can import ``llama_cpp.server`` shows only when the server starts."""
    if not engine_executable(engine, cache).is_file():
        return False
    return all(model_path(m, cache).is_file() for m in models)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How to run one llama-server."""

    name: str
    model: Path
    port: int
    threads: int = 1
    ctx: int = DEFAULT_CTX
    parallel: int = DEFAULT_PARALLEL
    extra_args: tuple[str, ...] = ()
    engine: Engine = "llama-server"
    #: llama-server's run-time weight repacking (``--no-repack`` unless True). Off by default:
    #: it crashed llama.cpp 0.3.36 at load on a Xeon with AMX. llama-cpp-python's server has
    #: no such switch; setup.sh builds it without repacking instead.
    repack: bool = False

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def health_path(self) -> str:
        """Readiness probe: ``/health`` (llama-server) or ``/v1/models`` (llama-cpp-python)."""
        return "/health" if self.engine == "llama-server" else "/v1/models"

    def argv(self, binary: Path) -> list[str]:
        """Command line; ``binary`` is the llama-server binary or, for llama-cpp-python, the
        venv's python. llama-cpp-python serves one request at a time, so ``parallel`` does not
        apply to it."""
        if self.engine == "llama-cpp-python":
            return [
                str(binary), "-m", "llama_cpp.server",
                "--model", str(self.model),
                "--host", HOST,
                "--port", str(self.port),
                "--n_ctx", str(self.ctx),
                "--n_threads", str(self.threads),
                "--n_threads_batch", str(self.threads),
                "--model_alias", self.name,
                *self.extra_args,
            ]  # fmt: skip
        return [
            str(binary),
            "-m", str(self.model),
            "--host", HOST,
            "--port", str(self.port),
            "-c", str(self.ctx),
            "-np", str(self.parallel),
            "-t", str(self.threads),
            "--alias", self.name,
            "--no-webui",
            *(() if self.repack else ("--no-repack",)),
            *self.extra_args,
        ]  # fmt: skip


@dataclass(slots=True)
class RunningServer:
    """A started llama-server process."""

    config: ServerConfig
    process: subprocess.Popen[bytes]
    log_path: Path | None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (append ``/v1`` for an OpenAI client)."""
        return self.config.base_url

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def health_status(base_url: str, timeout: float = 2.0, path: str = "/health") -> int | None:
    """HTTP status of ``GET base_url + path``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"{base_url}{path}", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:  # 503 while the model loads
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return None


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def launch(
    config: ServerConfig,
    *,
    binary: Path | None = None,
    log_path: Path | None = None,
    detach: bool = False,
) -> RunningServer:
    """Start one llama-server without waiting for it; see `wait_healthy`.

    ``detach`` puts it in its own session so that it outlives this process (CLI use).
    """
    exe = binary or engine_executable(config.engine)
    if not exe.is_file():
        hint = "scripts/llm/setup.sh" + (
            " llamacpp-python" if config.engine == "llama-cpp-python" else ""
        )
        raise ServerError(f"{config.engine} not found at {exe}: run {hint}")
    if not config.model.is_file():
        raise ServerError(f"model file {config.model} missing: run scripts/llm/setup.sh")
    if port_in_use(config.port):
        raise ServerError(f"port {config.port} on {HOST} is already in use")
    log: IO[bytes] | None = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "wb")  # closed in stop()
    try:
        proc = subprocess.Popen(
            config.argv(exe),
            stdin=subprocess.DEVNULL,
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
    except BaseException:
        if log is not None:
            log.close()
        raise
    return RunningServer(config=config, process=proc, log_path=log_path, _log=log)


def wait_healthy(server: RunningServer, timeout: float = DEFAULT_HEALTH_TIMEOUT_S) -> float:
    """Poll the config's `ServerConfig.health_path` until 200; return the seconds it took.
    Raises `ServerError` on exit of the process or timeout."""
    t0 = time.monotonic()
    while True:
        code = server.process.poll()
        if code is not None:
            raise ServerError(
                f"{server.config.engine} {server.name} {describe_exit(code)} while loading "
                f"(cpu level {cpu_level()}); last lines of its log:\n{server.log_tail()}"
            )
        if health_status(server.base_url, path=server.config.health_path) == 200:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise ServerError(
                f"{server.config.engine} {server.name} not healthy after {timeout:.0f} s\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.25)


def stop(server: RunningServer, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; close the log."""
    proc = server.process
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    if server._log is not None:
        server._log.close()
        server._log = None


def make_configs(
    models: Sequence[str],
    ports: Sequence[int] | None = None,
    threads: int | None = None,
    *,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    cache: Path | None = None,
    extra_args: Sequence[str] = (),
    engine: Engine = "llama-server",
) -> list[ServerConfig]:
    """Configs for ``models`` (names from `MODEL_FILES` or ``.gguf`` paths) on ``engine``.

    ``ports`` defaults to `DEFAULT_PORTS` (or 8101, 8102, ... for paths); ``threads`` to 2 for
    a single server and 1 each when several run side by side.
    """
    if not models:
        raise ServerError("no models given")
    aliases = [model_alias(m) for m in models]
    if len(set(aliases)) != len(aliases):
        raise ServerError(f"duplicate models: {list(models)}")
    if ports is None:
        ports = [DEFAULT_PORTS.get(a, 8101 + i) for i, a in enumerate(aliases)]
    if len(ports) != len(models):
        raise ServerError(f"{len(models)} models but {len(ports)} ports")
    if len(set(ports)) != len(ports):
        raise ServerError(f"duplicate ports: {list(ports)}")
    nthreads = threads if threads is not None else (2 if len(models) == 1 else 1)
    if nthreads < 1 or parallel < 1 or ctx < 1:
        raise ServerError("threads, parallel and ctx must be >= 1")
    if engine not in ENGINES:
        raise ServerError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    return [
        ServerConfig(
            name=alias,
            model=model_path(m, cache),
            port=int(p),
            threads=nthreads,
            ctx=ctx,
            parallel=parallel,
            extra_args=tuple(extra_args),
            engine=engine,
        )
        for m, alias, p in zip(models, aliases, ports, strict=True)
    ]


@contextlib.contextmanager
def start_servers(
    models: Sequence[str],
    ports: Sequence[int] | None = None,
    threads: int | None = None,
    *,
    ctx: int = DEFAULT_CTX,
    parallel: int = DEFAULT_PARALLEL,
    timeout: float = DEFAULT_HEALTH_TIMEOUT_S,
    cache: Path | None = None,
    log_dir: Path | None = None,
    extra_args: Sequence[str] = (),
    engine: Engine = "llama-server",
) -> Iterator[dict[str, RunningServer]]:
    """Start one server per model on 127.0.0.1 (``engine``: llama-server, or llama-cpp-python's
    ``python -m llama_cpp.server``), wait until all are ready, yield ``{alias: RunningServer}``,
    and terminate them all on exit (also on errors)."""
    configs = make_configs(
        models,
        ports,
        threads,
        ctx=ctx,
        parallel=parallel,
        cache=cache,
        extra_args=extra_args,
        engine=engine,
    )
    binary = engine_executable(engine, cache)
    running: dict[str, RunningServer] = {}
    try:
        for cfg in configs:
            log_path = log_dir / f"{cfg.name}.log" if log_dir is not None else None
            running[cfg.name] = launch(cfg, binary=binary, log_path=log_path)
        deadline = time.monotonic() + timeout
        for srv in running.values():
            wait_healthy(srv, timeout=max(0.0, deadline - time.monotonic()))
        yield running
    finally:
        for srv in running.values():
            stop(srv)


# --------------------------------------------------------------------------- CLI (pid files)


def run_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "run"


def _pid_alive_llama(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return b"llama-server" in cmdline


def _read_pidfile(path: Path) -> tuple[int, int] | None:
    """(pid, port) from a pid file written by `cli_start`."""
    try:
        parts = path.read_text().split()
        return int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        return None


def cli_start(specs: Sequence[str], threads: int | None, ctx: int, timeout: float) -> int:
    names = [s.split(":", 1)[0] for s in specs]
    ports: list[int] | None = None
    if any(":" in s for s in specs):
        ports = [
            int(s.split(":", 1)[1]) if ":" in s else DEFAULT_PORTS.get(model_alias(n), 8101 + i)
            for i, (s, n) in enumerate(zip(specs, names, strict=True))
        ]
    configs = make_configs(names, ports, threads, ctx=ctx)
    rdir = run_dir()
    rdir.mkdir(parents=True, exist_ok=True)
    started: list[RunningServer] = []
    try:
        for cfg in configs:
            pidfile = rdir / f"{cfg.name}.pid"
            old = _read_pidfile(pidfile)
            if old is not None and _pid_alive_llama(old[0]):
                raise ServerError(
                    f"{cfg.name} already running (pid {old[0]}, port {old[1]}); stop it first"
                )
            srv = launch(cfg, log_path=rdir / f"{cfg.name}.log", detach=True)
            pidfile.write_text(f"{srv.pid} {cfg.port}\n")
            started.append(srv)
            print(f"started {cfg.name}: pid {srv.pid}, {cfg.base_url}, log {srv.log_path}")
        deadline = time.monotonic() + timeout
        for srv in started:
            took = wait_healthy(srv, timeout=max(0.0, deadline - time.monotonic()))
            print(f"{srv.name} healthy at {srv.base_url} ({took:.1f} s)")
    except ServerError as e:
        for srv in started:
            stop(srv)
            (rdir / f"{srv.name}.pid").unlink(missing_ok=True)
        print(f"error: {e}", file=sys.stderr)
        return 1
    for srv in started:  # the servers keep running; only our log handles close
        if srv._log is not None:
            srv._log.close()
    return 0


def cli_stop(names: Sequence[str], timeout: float = 10.0) -> int:
    rdir = run_dir()
    pidfiles = [rdir / f"{n}.pid" for n in names] if names else sorted(rdir.glob("*.pid"))
    for pidfile in pidfiles:
        name = pidfile.stem
        info = _read_pidfile(pidfile)
        if info is None:
            print(f"{name}: no pid file")
            continue
        pid = info[0]
        if _pid_alive_llama(pid):
            os.kill(pid, signal.SIGTERM)
            t0 = time.monotonic()
            while _pid_alive_llama(pid) and time.monotonic() - t0 < timeout:
                time.sleep(0.1)
            if _pid_alive_llama(pid):
                os.kill(pid, signal.SIGKILL)
            print(f"{name}: stopped pid {pid}")
        else:
            print(f"{name}: pid {pid} not running (stale pid file)")
        pidfile.unlink(missing_ok=True)
    return 0


def cli_status() -> int:
    rdir = run_dir()
    pidfiles = sorted(rdir.glob("*.pid")) if rdir.is_dir() else []
    if not pidfiles:
        print("no servers started by this tool")
    for pidfile in pidfiles:
        info = _read_pidfile(pidfile)
        if info is None:
            continue
        pid, port = info
        alive = _pid_alive_llama(pid)
        health = health_status(f"http://{HOST}:{port}") if alive else None
        state = "running" if alive else "dead"
        print(f"{pidfile.stem}: pid {pid} {state}, http://{HOST}:{port}, /health -> {health}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="serve.sh", description="Start/stop llama-server processes on 127.0.0.1."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser(
        "start",
        help="start servers: MODEL[:PORT] ... (models: smollm2 qwen05 qwen15 or a .gguf path)",
    )
    ps.add_argument("models", nargs="+", metavar="MODEL[:PORT]")
    ps.add_argument(
        "-t",
        "--threads",
        type=int,
        default=None,
        help="threads per server (default: 2 for one server, 1 each for several)",
    )
    ps.add_argument("-c", "--ctx", type=int, default=DEFAULT_CTX, help="total context (-c)")
    ps.add_argument("--timeout", type=float, default=DEFAULT_HEALTH_TIMEOUT_S)
    pt = sub.add_parser("stop", help="stop servers (default: all started by this tool)")
    pt.add_argument("models", nargs="*")
    sub.add_parser("status", help="list servers started by this tool")
    sub.add_parser("cpu-level", help="print the portable CPU level the builds target")
    args = p.parse_args(argv)
    if args.cmd == "cpu-level":
        print(cpu_level())
        return 0
    if args.cmd == "start":
        return cli_start(args.models, args.threads, args.ctx, args.timeout)
    if args.cmd == "stop":
        return cli_stop(args.models)
    return cli_status()


if __name__ == "__main__":
    sys.exit(main())
