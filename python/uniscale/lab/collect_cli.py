"""``uniscale collect`` / ``python -m uniscale.lab.collect``: the ``run``, ``status`` and
``export`` subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from uniscale.lab.collect_config import (
    CollectConfig,
    CollectModel,
    load_model_config,
    parse_model_arg,
)
from uniscale.lab.collect_export import export_table
from uniscale.lab.collect_items import ITEMS, CollectError
from uniscale.lab.collect_status import table_status

# The collector logs under one name, as before the split (its run logs show %(name)s).
logger = logging.getLogger("uniscale.lab.collect")


def add_request_args(p: argparse.ArgumentParser) -> None:
    """``--concurrency``, ``--timeout-s`` and ``--retries`` (shared with ``uniscale calibrate``)."""
    p.add_argument("--concurrency", type=int, default=1, help="pairs in flight per model (1)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per HTTP request (900)")
    p.add_argument("--retries", type=int, default=2, help="retries per request on 5xx/network")


def models_from_args(args: argparse.Namespace) -> list[CollectModel]:
    """The endpoints of ``--config FILE`` then of every ``--model NAME=URL[,k=v]``."""
    models: list[CollectModel] = []
    if args.config:
        models.extend(load_model_config(args.config))
    models.extend(parse_model_arg(a) for a in args.model)
    if not models:
        raise CollectError("give at least one --model NAME=URL or --config FILE")
    return models


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
    add_request_args(p)
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
    models = models_from_args(args)
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
    # imported here: uniscale.lab.collect re-exports this module's names
    from uniscale.lab.collect import run_collect

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
