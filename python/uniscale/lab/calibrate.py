"""``uniscale calibrate``: run K items through every action once, and warm-start a policy from
the result with a capped prior.

Collection. Every ``(model, strategy, n)`` action of a model is derived from that model's
recorded samples (`uniscale.outcomes`), so "every action once" is one `uniscale.lab.collect` pair
per (item, model) with ``m`` = the largest ``n`` of the action grid (default 8) plus the greedy
answer. `calibrate` does exactly that for the first ``k`` items of the item file in round-robin
kind order (so the calibration covers every kind, and a rerun asks for the same items), into
``OUT/calibration.jsonl``: the collector's append-only, fsynced, locked table. A rerun skips
every pair already ``ok`` (Ctrl-C loses at most the pairs in flight); a progress bar
(`uniscale.lab.progress`) counts the pairs still to do. `calibration_table` turns the file into an
`OutcomeTable` (every action on every calibration item).

Warm start. `warm_start(policy, table, pseudo_observations=3)` transfers, for every action of
the policy that the table prices, **one summary of the K items**: the action's mean quality,
cost, latency, output tokens and samples used, observed once (`Policy.observe`) at the mean
request (mean features ``x``, mean prompt tokens) with weight ``pseudo_observations / m``, where
``m`` is the number of the model's actions the table prices. So each *model* receives
``pseudo_observations`` pseudo-observations in total, spread over its actions. Nothing else: no
per-item outcome, no per-request interaction beyond the direction of the mean request, and no
budget spend (``observe`` does not charge the pacer). Actions the table lacks stay cold.

Why per model: the shared learner pools a model's actions (they share the model's features),
so ``pseudo_observations`` per *action* would tell it ``m`` times as much about the model (30
pseudo-observations for a model with 10 actions), and a model whose calibration went wrong as a
whole (every action at 0) was then never tried again within the packaged stream. Capped per
model, such a model is as discouraged as by ``pseudo_observations`` unlucky real outcomes.

Why the prior's strength is capped: the policy receives the same weights whatever K is -- 30
items or 3,000 give the same learner statistics ``A`` (and so the same exploration bonus
everywhere) whenever their mean request is the same; only the means observed differ. K buys a
better *estimate* of each mean, never more *confidence* in it.

Why it cannot lock the policy in more than its own data would: after the warm start the policy
is in a state it could have reached by serving ``pseudo_observations`` requests per model at the
mean request and seeing those mean outcomes; every real outcome weighs one, so after ``n`` real
outcomes of a model the calibration's share of its estimate is at most
``pseudo_observations / (pseudo_observations + n)``, and a model the calibration overrated is
chosen, measured and corrected. What a finite prior cannot do in a greedy UCB learner is force
a retry of an action it *under*rates: exploration decides that, as it does after
``pseudo_observations`` unlucky real outcomes. Measured on the packaged real table
(``docs/calibrate.md``, ``tests/test_calibrate.py``): with the best action's calibration
outcomes flipped to 0, or every action of the best model, the policy still tries it within 150
requests. Check the per-action summary `uniscale calibrate` prints before using a table.

Measurement: ``uniscale replay --table real --warm-start 30 --seeds 5`` holds out 30 items of
each seed's stream as the calibration and replays the rest cold and warm (paired).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from uniscale._core import ConfigError

# The parts live in calibrate_collect, calibrate_warm and calibrate_compare (re-exported here).
from uniscale.lab.calibrate_collect import (
    DEFAULT_K,
    DEFAULT_M,
    DEFAULT_PSEUDO_OBSERVATIONS,
    TABLE_NAME,
    CalibrationSummary,
    calibrate,
    calibration_items,
    calibration_table,
)
from uniscale.lab.calibrate_collect import F64 as F64
from uniscale.lab.calibrate_collect import PREFIXES as PREFIXES
from uniscale.lab.calibrate_compare import WarmStartComparison, compare_warm_start
from uniscale.lab.calibrate_compare import _collection_cost as _collection_cost
from uniscale.lab.calibrate_compare import _t95 as _t95
from uniscale.lab.calibrate_warm import (
    ActionStats,
    PriorObservation,
    WarmStartReport,
    action_stats,
    format_stats,
    warm_start,
)
from uniscale.lab.collect import (
    CollectConfig,
    CollectError,
)
from uniscale.lab.collect_cli import add_request_args, models_from_args
from uniscale.lab.datasets import Source
from uniscale.lab.progress import progress_bar

__all__ = [
    "DEFAULT_K",
    "DEFAULT_M",
    "DEFAULT_PSEUDO_OBSERVATIONS",
    "TABLE_NAME",
    "ActionStats",
    "CalibrationSummary",
    "PriorObservation",
    "WarmStartComparison",
    "WarmStartReport",
    "action_stats",
    "calibrate",
    "calibration_items",
    "calibration_table",
    "compare_warm_start",
    "format_stats",
    "register",
    "warm_start",
]

logger = logging.getLogger(__name__)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from uniscale.lab.cli_common import parse_prices

    for noisy in ("httpx", "httpcore"):  # one INFO line per request drowns the progress bar
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        models = models_from_args(args)
        cfg = CollectConfig(
            m=args.samples,
            temperature=args.temperature,
            seed=args.seed,
            timeout_s=args.timeout_s,
            retries=args.retries,
            concurrency=args.concurrency,
        )
        summary = calibrate(
            models,
            args.out,
            k=args.k,
            items_path=args.items,
            config=cfg,
            progress=not args.no_progress,
        )
    except CollectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    print(
        f"calibration table {summary.table}: {summary.items} items x {len(summary.models)} "
        f"models; {summary.already_done} pairs were already done, {summary.collected} "
        f"collected now, {summary.failed} failed"
        + (" (rerun to retry them)" if summary.failed else "")
    )
    try:
        table = calibration_table(
            summary.table,
            args.items,
            prices=parse_prices(args.price),
            parallelism=args.parallelism,
        )
    except CollectError as exc:
        print(f"no summary yet: {exc}", file=sys.stderr)
        return 3
    stats = action_stats(table)
    print(f"\nper-action mean over {table.n_requests} items (every model answered):")
    print(format_stats(stats))
    print(
        f"\nwarm start: uniscale replay --warm-start {summary.table} ..., or in Python "
        "uniscale.lab.calibrate.warm_start(policy, uniscale.lab.calibrate.calibration_table(PATH))"
    )
    payload = {
        "table": str(summary.table),
        "items": table.ids,
        "actions": [{**asdict(s), "action": str(s.action)} for s in stats],
    }
    (Path(args.out) / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if summary.complete else 3


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``calibrate`` to a CLI's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "calibrate",
        help="run K items through every action once (resumable) for a warm start",
        description="Collects K calibration items from every model (m samples plus a greedy "
        "answer per item, so every (model, strategy, n <= m) action is priced on every item) "
        f"into OUT/{TABLE_NAME}, then prints each action's mean quality, cost and latency. "
        "Resumable: rerunning the same command continues where it stopped (Ctrl-C loses "
        "nothing already written). Use the table with `uniscale replay --warm-start PATH` or "
        "uniscale.lab.calibrate.warm_start(policy, calibration_table(PATH)).",
    )
    p.add_argument(
        "--model",
        "--models",
        dest="model",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME=URL[,k=v]",
        help="models: NAME=BASE_URL (options endpoint=chat|completions, honours_n=true|false, "
        "api_model=X, gguf=PATH), several after one flag or the flag repeated",
    )
    p.add_argument("--config", help="JSON/TOML file with a 'models' list (same keys as --model)")
    p.add_argument("--items", default=None, help="item JSONL (default: the packaged items)")
    p.add_argument(
        "-k",
        type=int,
        default=DEFAULT_K,
        help=f"calibration items, the first K in round-robin kind order (default {DEFAULT_K})",
    )
    p.add_argument("--out", required=True, help=f"output directory (holds {TABLE_NAME})")
    p.add_argument(
        "-m",
        "--samples",
        type=int,
        default=DEFAULT_M,
        help=f"samples per item and model: the largest n of the action grid (default {DEFAULT_M})",
    )
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (0.7)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each pair derives its own")
    add_request_args(p)
    p.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="NAME=IN,OUT",
        help="USD per million input/output tokens for the summary (repeatable; default "
        "uniscale.lab.datasets.DEFAULT_PRICES, else 0)",
    )
    p.add_argument(
        "--parallelism", type=int, default=1, help="samples an endpoint runs at once (1)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_calibrate)
    return p


def add_replay_args(p: argparse.ArgumentParser) -> None:
    """``--warm-start`` and ``--pseudo-observations`` for ``uniscale replay``."""
    p.add_argument(
        "--warm-start",
        default=None,
        metavar="TABLE|K",
        help="replay UniScale cold and warm-started (paired) instead of the usual comparison: "
        "TABLE is a calibration table from `uniscale calibrate` (its items are removed from "
        "the stream); an integer K holds out the first K requests of each seed's stream as "
        "that seed's calibration",
    )
    p.add_argument(
        "--pseudo-observations",
        type=int,
        default=DEFAULT_PSEUDO_OBSERVATIONS,
        help="with --warm-start: observations per action the prior is worth (default "
        f"{DEFAULT_PSEUDO_OBSERVATIONS})",
    )


def replay_warm_start(args: argparse.Namespace, source: Source) -> int:
    """``uniscale replay --warm-start``: the cold/warm comparison, printed and written as JSON."""
    from uniscale.lab import report

    if args.pseudo_observations < 0:
        raise SystemExit("error: --pseudo-observations must be >= 0")
    calibration = None
    k = DEFAULT_K
    if args.warm_start.isdigit():
        k = int(args.warm_start)
    else:
        try:
            calibration = calibration_table(args.warm_start, args.items, specs=source.models)
        except CollectError as exc:
            raise SystemExit(f"error: --warm-start: {exc}") from None
    kw: dict[str, Any] = {"learner": args.learner, "alpha": args.alpha}
    if args.budget is not None:
        kw["budget_per_request_usd"] = args.budget
        kw["pacing_carryover"] = args.pacing_carryover
    total = args.seeds * source.n_requests * 2
    with progress_bar(total, "replay", enabled=not args.quiet) as bar:
        try:
            comp, per_seed = compare_warm_start(
                source,
                k=k,
                calibration=calibration,
                seeds=range(args.seeds),
                reward=args.reward,
                pseudo_observations=args.pseudo_observations,
                request_features=args.request_features,
                progress=bar.update,
                **kw,
            )
        except ConfigError as exc:
            raise SystemExit(f"error: --warm-start: {exc}") from None
    lines = [
        f"UniScale replay, cold vs warm start: {source.name}, {args.seeds} seed(s), reward "
        f"{args.reward!r}, {args.pseudo_observations} pseudo-observations per action",
        "",
        report.table(report.aggregate(per_seed)),
        "",
        *comp.lines(),
    ]
    out = Path(args.out)
    payload = {
        "table": source.name,
        "reward": args.reward,
        "warm_start": args.warm_start,
        "pseudo_observations": args.pseudo_observations,
        **asdict(comp),
    }
    js = report.write_json(out / "replay_warm_start.json", payload)
    lines.append(f"wrote {js}")
    sys.stderr.flush()
    print("\n".join(lines))
    return 0
