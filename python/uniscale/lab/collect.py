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

import asyncio
import hashlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

from uniscale.execute import EmptyContentError, Executor, Failure, SampleBatch, redact_message
from uniscale.execute import Sample as ExecSample
from uniscale.extract import get_extractor

# The collector's parts live in collect_*.py; their names stay importable from here.
from uniscale.lab.collect_cli import _build_parser as _build_parser
from uniscale.lab.collect_cli import _dispatch as _dispatch
from uniscale.lab.collect_cli import collect_main, register
from uniscale.lab.collect_config import _BOOL_WORDS as _BOOL_WORDS
from uniscale.lab.collect_config import _MODEL_KEYS as _MODEL_KEYS
from uniscale.lab.collect_config import (
    CollectConfig,
    CollectModel,
    CollectSummary,
    load_model_config,
    parse_model_arg,
)
from uniscale.lab.collect_config import _model_from_mapping as _model_from_mapping
from uniscale.lab.collect_export import _default_featurizer as _default_featurizer
from uniscale.lab.collect_export import _fallback_features as _fallback_features
from uniscale.lab.collect_export import _outcome_sample as _outcome_sample
from uniscale.lab.collect_export import _trim as _trim
from uniscale.lab.collect_export import export_table, load_requests
from uniscale.lab.collect_export import solo_latency_fit as solo_latency_fit
from uniscale.lab.collect_items import _CHOICE_EXTRACTORS as _CHOICE_EXTRACTORS
from uniscale.lab.collect_items import _EXTRACTOR_ALIASES as _EXTRACTOR_ALIASES
from uniscale.lab.collect_items import _GENERIC_PROMPT as _GENERIC_PROMPT
from uniscale.lab.collect_items import (
    ARITHMETIC_MAX_TOKENS,
    FORMAT_VERSION,
    GSM8K_MAX_TOKENS,
    LETTER_GRAMMAR,
    MMLU_SYSTEM,
    PROMPT_VERSION,
    PROMPTS,
    CollectError,
    Item,
    PromptSpec,
    build_messages,
    gold_for,
    load_items,
    prompt_for,
)
from uniscale.lab.collect_items import DATA_DIR as DATA_DIR
from uniscale.lab.collect_items import F64 as F64
from uniscale.lab.collect_items import ITEMS as ITEMS
from uniscale.lab.collect_items import Record as Record
from uniscale.lab.collect_items import extractor_name as extractor_name
from uniscale.lab.collect_items import order_items as order_items
from uniscale.lab.collect_meta import KNOWN_GGUFS as KNOWN_GGUFS
from uniscale.lab.collect_meta import _cache_dir as _cache_dir
from uniscale.lab.collect_meta import _gguf_info as _gguf_info
from uniscale.lab.collect_meta import _host_meta as _host_meta
from uniscale.lab.collect_meta import _llama_server_binary as _llama_server_binary
from uniscale.lab.collect_meta import _model_meta as _model_meta
from uniscale.lab.collect_meta import _prepare_meta as _prepare_meta
from uniscale.lab.collect_meta import _server_cmdline as _server_cmdline
from uniscale.lab.collect_meta import _server_props as _server_props
from uniscale.lab.collect_meta import _sha256_file as _sha256_file
from uniscale.lab.collect_meta import llama_server_version as llama_server_version
from uniscale.lab.collect_monitor import _BUSY as _BUSY
from uniscale.lab.collect_monitor import _fmt_s as _fmt_s
from uniscale.lab.collect_monitor import _health as _health
from uniscale.lab.collect_monitor import _Progress as _Progress
from uniscale.lab.collect_monitor import _root_url as _root_url
from uniscale.lab.collect_monitor import _server_up as _server_up
from uniscale.lab.collect_status import RATE_FLAG_THRESHOLD, answer_rates, rate_flags, table_status
from uniscale.lab.collect_status import _counts as _counts
from uniscale.lab.collect_status import _throughput as _throughput
from uniscale.lab.collect_table import _open_text as _open_text
from uniscale.lab.collect_table import _record_line as _record_line
from uniscale.lab.collect_table import _TableWriter as _TableWriter
from uniscale.lab.collect_table import _write_json_atomic as _write_json_atomic
from uniscale.lab.collect_table import latest_ok as latest_ok
from uniscale.lab.collect_table import meta_path, read_records, repair_jsonl

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


if __name__ == "__main__":
    sys.exit(collect_main())
