"""The collector's configuration: endpoints (``NAME=URL[,k=v]`` arguments or a TOML file) and
the sampling settings of a run."""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from uniscale.lab.collect_items import (
    _GENERIC_PROMPT,
    PROMPT_VERSION,
    PROMPTS,
    CollectError,
    Item,
    prompt_for,
)
from uniscale.space import ModelSpec


@dataclass(frozen=True, slots=True)
class CollectModel:
    """One model to collect from."""

    name: str
    base_url: str
    endpoint: Literal["chat", "completions"] = "chat"
    honours_n: bool = True
    api_model: str | None = None
    gguf: str | None = None

    def spec(self, concurrency: int, m: int) -> ModelSpec:
        return ModelSpec(
            name=self.name,
            base_url=self.base_url,
            endpoint=self.endpoint,
            honours_n=self.honours_n,
            api_model=self.api_model,
            max_concurrency=max(1, concurrency),
            parallelism=m,
        )


_MODEL_KEYS = frozenset({"name", "base_url", "endpoint", "honours_n", "api_model", "gguf"})
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _model_from_mapping(d: Mapping[str, Any], where: str) -> CollectModel:
    unknown = set(d) - _MODEL_KEYS
    if unknown:
        raise CollectError(
            f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_MODEL_KEYS)}"
        )
    name, url = d.get("name"), d.get("base_url")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
        raise CollectError(f"{where}: key 'name' must be a non-empty identifier, got {name!r}")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CollectError(f"{where}: key 'base_url' must be an http(s) URL, got {url!r}")
    endpoint = d.get("endpoint", "chat")
    if endpoint not in ("chat", "completions"):
        raise CollectError(f"{where}: key 'endpoint' must be 'chat' or 'completions'")
    honours = d.get("honours_n", True)
    if isinstance(honours, str):
        if honours.lower() not in _BOOL_WORDS:
            raise CollectError(f"{where}: key 'honours_n' must be true or false")
        honours = _BOOL_WORDS[honours.lower()]
    if not isinstance(honours, bool):
        raise CollectError(f"{where}: key 'honours_n' must be true or false")
    for key in ("api_model", "gguf"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise CollectError(f"{where}: key {key!r} must be a string")
    return CollectModel(
        name=name,
        base_url=url.rstrip("/"),
        endpoint=endpoint,
        honours_n=honours,
        api_model=d.get("api_model"),
        gguf=d.get("gguf"),
    )


def parse_model_arg(arg: str) -> CollectModel:
    """``NAME=URL[,key=value...]`` (keys: endpoint, honours_n, api_model, gguf)."""
    name, sep, rest = arg.partition("=")
    if not sep or not rest:
        raise CollectError(f"--model {arg!r}: expected NAME=URL[,key=value...]")
    url, *opts = rest.split(",")
    d: dict[str, Any] = {"name": name.strip(), "base_url": url.strip()}
    for opt in opts:
        k, sep, v = opt.partition("=")
        if not sep:
            raise CollectError(f"--model {arg!r}: option {opt!r} is not key=value")
        d[k.strip()] = v.strip()
    return _model_from_mapping(d, f"--model {arg!r}")


def load_model_config(path: str | Path) -> list[CollectModel]:
    """Models from a JSON or TOML file: ``{"models": [{"name": ..., "base_url": ...}, ...]}``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        data = tomllib.loads(raw.decode()) if p.suffix == ".toml" else json.loads(raw)
    except (OSError, ValueError) as exc:
        raise CollectError(f"{p}: cannot read model config ({exc})") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list) or not models:
        raise CollectError(f"{p}: key 'models' must be a non-empty list of tables")
    out = []
    for i, d in enumerate(models):
        if not isinstance(d, dict):
            raise CollectError(f"{p}: models[{i}] is not a table")
        out.append(_model_from_mapping(d, f"{p}: models[{i}]"))
    return out


@dataclass(frozen=True, slots=True)
class CollectConfig:
    """Sampling and robustness settings of a collection run."""

    m: int = 8
    temperature: float = 0.7
    seed: int = 0
    max_tokens: Mapping[str, int] = field(default_factory=dict)  # per-kind overrides
    timeout_s: float = 900.0
    retries: int = 2
    topups: int = 2
    concurrency: int = 1
    server_wait_s: float = 120.0
    max_consecutive_failures: int = 5
    retry_failed: bool = True

    def __post_init__(self) -> None:
        if self.m < 1:
            raise CollectError(f"m must be >= 1, got {self.m}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise CollectError(f"temperature must be >= 0, got {self.temperature}")
        if self.concurrency < 1:
            raise CollectError(f"concurrency must be >= 1, got {self.concurrency}")
        if not (self.timeout_s > 0):
            raise CollectError(f"timeout_s must be > 0, got {self.timeout_s}")
        for kind, n in self.max_tokens.items():
            if n < 1:
                raise CollectError(f"max_tokens[{kind!r}] must be >= 1, got {n}")

    def max_tokens_for(self, item: Item) -> int:
        return self.max_tokens.get(item.kind, prompt_for(item).max_tokens)

    def settings(self) -> dict[str, Any]:
        """What must match between a table and a run that resumes it."""
        return {
            "m": self.m,
            "temperature": self.temperature,
            "greedy_temperature": 0.0,
            "seed": self.seed,
            "prompt_version": PROMPT_VERSION,
            "prompts": {k: asdict(v) for k, v in PROMPTS.items()} | {"*": asdict(_GENERIC_PROMPT)},
            "max_tokens_overrides": dict(self.max_tokens),
            "logprobs": True,
        }


@dataclass(frozen=True, slots=True)
class CollectSummary:
    """What a run did."""

    todo: int
    ok: int
    failed: int
    skipped_done: int
    abandoned: dict[str, int]
    wall_s: float
    per_model_ok: dict[str, int]
