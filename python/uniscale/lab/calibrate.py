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
import asyncio
import json
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import numpy as np
from numpy.typing import NDArray

from uniscale._core import ConfigError
from uniscale.lab.collect import (
    CollectConfig,
    CollectError,
    CollectModel,
    Item,
    Record,
    collect,
    latest_ok,
    load_items,
    load_model_config,
    load_requests,
    order_items,
    parse_model_arg,
    read_records,
)
from uniscale.lab.datasets import DEFAULT_PRICES, ITEMS, Source
from uniscale.lab.progress import progress_bar
from uniscale.outcomes import OutcomeTable, build_table
from uniscale.policy import Policy
from uniscale.space import Action, ActionSpace, ModelSpec

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

F64 = NDArray[np.float64]

#: Calibration items by default: enough for a mean per action, cheap to collect.
DEFAULT_K = 30
#: Samples per (item, model): the largest n of the default action grid (1, 2, 4, 8).
DEFAULT_M = 8
#: Observations per action the warm-start prior is worth, whatever K is.
DEFAULT_PSEUDO_OBSERVATIONS = 1
#: The calibration table's file name inside ``--out``.
TABLE_NAME = "calibration.jsonl"
#: Prefix lengths the warm-vs-cold comparison reports (where a prior matters most).
PREFIXES = (50, 100)


# --------------------------------------------------------------------------------------------
# Collection


def calibration_items(items: Sequence[Item], k: int) -> list[Item]:
    """The first ``k`` items in round-robin kind order: every kind is represented, and the same
    file and ``k`` always give the same items (so a rerun resumes rather than starts over)."""
    if k < 1:
        raise CollectError(f"k must be >= 1, got {k}")
    return order_items(items, "interleave")[:k]


@dataclass(frozen=True, slots=True)
class CalibrationSummary:
    """What a `calibrate` run did."""

    table: Path
    items: int
    models: list[str]
    already_done: int
    collected: int
    failed: int
    wall_s: float

    @property
    def complete(self) -> bool:
        return self.failed == 0


def calibrate(
    models: Sequence[CollectModel],
    out_dir: str | Path,
    *,
    k: int = DEFAULT_K,
    items_path: str | Path | None = None,
    config: CollectConfig | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> CalibrationSummary:
    """Collect (or resume) ``k`` calibration items x every model into ``out_dir/calibration.jsonl``
    with ``config`` (default ``m = 8`` samples and a greedy answer per pair); see the module
    docstring. ``on_record`` is called after each line is written (tests interrupt with it)."""
    cfg = config or CollectConfig(m=DEFAULT_M)
    ipath = Path(items_path) if items_path is not None else ITEMS
    chosen = calibration_items(load_items(ipath), k)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    table = out / TABLE_NAME
    ids = {it.id for it in chosen}
    names = {m.name for m in models}
    done = sum(1 for i, m in latest_ok(read_records(table)) if i in ids and m in names)
    todo = len(chosen) * len(models) - done
    label = f"calibrate ({done} done before)" if done else "calibrate"
    with progress_bar(todo, label, stream=stream, enabled=progress) as bar:

        def record(rec: Record) -> None:
            if rec.get("status") == "ok":
                bar.update(1)
            if on_record is not None:
                on_record(rec)

        summary = asyncio.run(
            collect(
                chosen,
                models,
                table,
                cfg,
                items_path=ipath,
                progress=False,
                on_record=record,
                transport=transport,
            )
        )
    return CalibrationSummary(
        table=table,
        items=len(chosen),
        models=[m.name for m in models],
        already_done=summary.skipped_done,
        collected=summary.ok,
        failed=summary.failed,
        wall_s=summary.wall_s,
    )


def calibration_table(
    path: str | Path,
    items_path: str | Path | None = None,
    *,
    specs: Mapping[str, ModelSpec] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    parallelism: int = 1,
    n_values: Sequence[int] = (1, 2, 4, 8, 16, 32),
) -> OutcomeTable:
    """Every action's outcome on every calibration item of a table written by `calibrate` (or
    any collected table): the items recorded for every model, samples in recorded order,
    latency as replay prices it (``latency="solo"``). ``specs`` prices the models (what a
    replay source uses); otherwise ``prices`` (USD per million input, output tokens) over
    `uniscale.lab.datasets.DEFAULT_PRICES`, 0 for an unknown model. ``n`` values are capped at the
    samples recorded."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CollectError(f"calibration table {str(p)!r}: no such file")
    present = sorted({m for _, m in latest_ok(read_records(p))})
    wanted = [m for m in present if specs is None or m in specs]
    if not wanted:
        raise CollectError(f"{p}: no complete records for the models asked for")
    requests = load_requests(p, items_path or ITEMS, models=wanted, latency="solo")
    if not requests:
        raise CollectError(f"{p}: no item is recorded for every one of {wanted}")
    table_prices = {**DEFAULT_PRICES, **(prices or {})}
    use: dict[str, ModelSpec] = {}
    for m in wanted:
        if specs is not None:
            use[m] = specs[m]
        else:
            pin, pout = table_prices.get(m, (0.0, 0.0))
            use[m] = ModelSpec(
                m, price_in_per_mtok=pin, price_out_per_mtok=pout, parallelism=parallelism
            )
    recorded = min(len(s) for r in requests for s in r.samples.values())
    grid = tuple(v for v in n_values if v <= recorded) or (1,)
    actions = ActionSpace.grid(list(use.values()), n_values=grid).ordered_actions()
    return build_table(requests, actions, use)


# --------------------------------------------------------------------------------------------
# Per-action summary


@dataclass(frozen=True, slots=True)
class ActionStats:
    """One action's mean outcome over the calibration items."""

    action: Action
    items: int
    quality: float
    cost_usd: float
    latency_s: float
    output_tokens: float
    samples_used: float


def action_stats(table: OutcomeTable) -> list[ActionStats]:
    """Mean outcome of every action of ``table`` over its items, in the table's action order."""
    if table.n_requests < 1:
        raise ConfigError("the calibration table has no items")
    return [
        ActionStats(
            action=a,
            items=table.n_requests,
            quality=float(table.quality[:, j].mean()),
            cost_usd=float(table.cost_usd[:, j].mean()),
            latency_s=float(table.latency_s[:, j].mean()),
            output_tokens=float(table.output_tokens[:, j].mean()),
            samples_used=float(table.samples_used[:, j].mean()),
        )
        for j, a in enumerate(table.actions)
    ]


def format_stats(stats: Sequence[ActionStats]) -> str:
    """A fixed-width table: one line per action, best quality first within each model."""
    head = f"{'action':<36} {'items':>5} {'quality':>7} {'$/request':>10} {'latency s':>9} "
    head += f"{'out tok':>8} {'samples':>7}"
    lines = [head, "-" * len(head)]
    for s in stats:
        lines.append(
            f"{s.action!s:<36} {s.items:>5} {s.quality:>7.3f} {s.cost_usd:>10.3e} "
            f"{s.latency_s:>9.2f} {s.output_tokens:>8.1f} {s.samples_used:>7.2f}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Warm start


@dataclass(frozen=True, slots=True)
class PriorObservation:
    """What `warm_start` observed for one action, and with which weight (pseudo-observations:
    the model's ``pseudo_observations`` shared by its actions)."""

    action: Action
    weight: float
    quality: float
    cost_usd: float
    latency_s: float
    output_tokens: float
    samples_used: float


@dataclass(frozen=True, slots=True)
class WarmStartReport:
    """What a warm start transferred: per action its mean outcome and the number of
    pseudo-observations (the same for every action, whatever ``items`` is), at the mean
    request ``x`` / ``input_tokens``; ``cold`` are the policy's actions the table lacks."""

    items: int
    pseudo_observations: int
    x: F64
    input_tokens: float
    transferred: list[PriorObservation]
    cold: list[Action]


def warm_start(
    policy: Policy,
    table: OutcomeTable,
    pseudo_observations: int = DEFAULT_PSEUDO_OBSERVATIONS,
) -> WarmStartReport:
    """Give ``policy`` a prior from a calibration ``table``: for every action of the policy the
    table prices, its mean outcome over the table's items, observed `Policy.observe`
    ``pseudo_observations`` times at the mean request. The prior's strength does not grow
    with the number of items (module docstring: what is transferred, and why it cannot lock
    the policy in more than that many real outcomes would). ``pseudo_observations = 0`` is a
    no-op. Raises `ConfigError` for a negative count, an empty table or a feature dimension
    that is not the policy's."""
    if isinstance(pseudo_observations, bool) or not isinstance(pseudo_observations, int):
        raise ConfigError(f"pseudo_observations must be an int, got {pseudo_observations!r}")
    if pseudo_observations < 0:
        raise ConfigError(f"pseudo_observations must be >= 0, got {pseudo_observations}")
    if table.n_requests < 1:
        raise ConfigError("the calibration table has no items")
    if table.X.shape[1] != policy.dim:
        raise ConfigError(
            f"the calibration table has {table.X.shape[1]} request features but the policy "
            f"has dim={policy.dim}; featurize the calibration items as the policy's requests"
        )
    x = np.ascontiguousarray(table.X.mean(axis=0), dtype=np.float64)
    input_tokens = float(table.input_tokens.mean())
    by_action = {s.action: s for s in action_stats(table)}
    plan = [by_action[a] for a in policy.actions if a in by_action]
    cold = [a for a in policy.actions if a not in by_action]
    per_model: dict[str, int] = {}
    for s in plan:
        per_model[s.action.model] = per_model.get(s.action.model, 0) + 1
    if pseudo_observations > 0:
        for s in plan:
            policy.observe(
                x,
                s.action,
                s.quality,
                input_tokens,
                cost_usd=s.cost_usd,
                latency_s=s.latency_s,
                output_tokens=s.output_tokens,
                samples_used=s.samples_used,
                weight=pseudo_observations / per_model[s.action.model],
            )
    return WarmStartReport(
        items=table.n_requests,
        pseudo_observations=pseudo_observations,
        x=x,
        input_tokens=input_tokens,
        transferred=[
            PriorObservation(
                action=s.action,
                weight=(
                    pseudo_observations / per_model[s.action.model] if pseudo_observations else 0.0
                ),
                quality=s.quality,
                cost_usd=s.cost_usd,
                latency_s=s.latency_s,
                output_tokens=s.output_tokens,
                samples_used=s.samples_used,
            )
            for s in plan
        ],
        cold=cold,
    )


# --------------------------------------------------------------------------------------------
# Warm vs cold on a replay source


@dataclass(frozen=True, slots=True)
class WarmStartComparison:
    """Paired per-seed differences, warm minus cold, of mean reward per request: over the
    whole stream and over its first ``PREFIXES`` requests; plus each run's summary rows."""

    seeds: list[int]
    calibration_items: int
    stream_requests: list[int]
    diff: list[float]
    diff_prefix: dict[int, list[float]]
    calibration_cost_usd: list[float]
    per_seed: list[list[dict[str, Any]]]

    def lines(self) -> list[str]:
        out = [
            f"warm start ({self.calibration_items} calibration items held out of each stream) "
            "minus cold start, mean reward per request, paired by seed:"
        ]
        rows = [("whole stream", self.diff)] + [
            (f"first {p} requests", d) for p, d in self.diff_prefix.items()
        ]
        for name, d in rows:
            a = np.asarray(d)
            half = _t95(len(a)) * a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else math.nan
            out.append(
                f"  {name:<18} {a.mean():+.4f} (95% CI {a.mean() - half:+.4f} .. "
                f"{a.mean() + half:+.4f}); warm ahead on {int((a > 0).sum())}/{len(a)} seeds; "
                f"per seed {', '.join(f'{v:+.4f}' for v in a)}"
            )
        out.append(
            "  calibration cost (every model, m samples + greedy, on the held-out items): "
            f"${np.mean(self.calibration_cost_usd):.3e} per seed"
        )
        return out


def _t95(n: int) -> float:
    """Two-sided 95% Student-t quantile for ``n`` paired differences (n - 1 degrees of freedom)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
    table |= {9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
    # between tabulated degrees of freedom take the next smaller one (a wider interval, never a
    # narrower one); beyond 30, 30's quantile (2.042, above the normal's 1.96)
    df = max(n - 1, 1)
    return table[max(k for k in table if k <= df)]


def _collection_cost(table: OutcomeTable) -> float:
    """Dollars the calibration collection costs: per model, its largest sampled action (all m
    samples) plus its greedy answer, on every item."""
    total = 0.0
    for model in dict.fromkeys(a.model for a in table.actions):
        cols = [j for j, a in enumerate(table.actions) if a.model == model]
        big = max(cols, key=lambda j: (table.actions[j].n, table.actions[j].strategy != "single"))
        single = [j for j in cols if table.actions[j].strategy == "single"]
        total += float(table.cost_usd[:, big].sum())
        total += float(table.cost_usd[:, single[0]].sum()) if single else 0.0
    return total


def compare_warm_start(
    source: Source,
    *,
    k: int = DEFAULT_K,
    calibration: OutcomeTable | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    reward: str = "cost_sensitive",
    pseudo_observations: int = DEFAULT_PSEUDO_OBSERVATIONS,
    request_features: bool = True,
    progress: Callable[[int], object] | None = None,
    **policy_kwargs: Any,
) -> tuple[WarmStartComparison, list[list[Any]]]:
    """Cold vs warm-started UniScale on the same streams of ``source``. With ``calibration`` =
    None, each seed's first ``k`` requests are its calibration and the rest its stream (the
    calibration is out of sample, and a different draw per seed); otherwise ``calibration`` is
    used for every seed and its items are removed from each stream. Returns the comparison and
    each seed's `uniscale.lab.replay.compare` results (baselines, ``uniscale``, ``uniscale_warm``).
    """
    from uniscale.lab.replay import LearnerSpec, Scales, compare

    diffs: list[float] = []
    prefix: dict[int, list[float]] = {p: [] for p in PREFIXES}
    cal_cost: list[float] = []
    lengths: list[int] = []
    per_seed_rows: list[list[dict[str, Any]]] = []
    per_seed: list[list[Any]] = []
    n_cal = 0
    for seed in seeds:
        full = source.table(seed)
        scales = Scales.from_table(full)
        if calibration is None:
            if not 1 <= k < full.n_requests - 1:
                raise ConfigError(f"k must be in [1, {full.n_requests - 2}], got {k}")
            cal, stream = full.subset(range(k)), full.subset(range(k, full.n_requests))
        else:
            held = set(calibration.ids)
            cal = calibration
            stream = full.subset([i for i, rid in enumerate(full.ids) if rid not in held])
            if stream.n_requests < 2:
                raise ConfigError("the calibration table holds (almost) every item of the stream")
        if not request_features:
            cal, stream = cal.without_request_features(), stream.without_request_features()
        n_cal = cal.n_requests
        cal_cost.append(_collection_cost(cal))

        def prepare(policy: Policy, cal: OutcomeTable = cal) -> WarmStartReport:
            return warm_start(policy, cal, pseudo_observations)

        learners = [
            LearnerSpec("uniscale", stream.actions, policy_kwargs),
            LearnerSpec("uniscale_warm", stream.actions, policy_kwargs, prepare=prepare),
        ]
        results = compare(
            stream,
            source.models,
            reward=reward,
            learners=learners,
            seed=seed,
            scales=scales,
            progress=progress,
        )
        cold = next(r for r in results if r.name == "uniscale")
        warm = next(r for r in results if r.name == "uniscale_warm")
        diffs.append(float(warm.reward.mean() - cold.reward.mean()))
        for p in PREFIXES:
            prefix[p].append(float(warm.reward[:p].mean() - cold.reward[:p].mean()))
        lengths.append(stream.n_requests)
        per_seed.append(results)
        per_seed_rows.append([r.summary() for r in results])
    comp = WarmStartComparison(
        seeds=list(seeds),
        calibration_items=n_cal,
        stream_requests=lengths,
        diff=diffs,
        diff_prefix=prefix,
        calibration_cost_usd=cal_cost,
        per_seed=per_seed_rows,
    )
    return comp, per_seed


# --------------------------------------------------------------------------------------------
# CLI


def _models(args: argparse.Namespace) -> list[CollectModel]:
    models: list[CollectModel] = []
    if args.config:
        models.extend(load_model_config(args.config))
    models.extend(parse_model_arg(a) for a in args.model)
    if not models:
        raise CollectError("give at least one --model NAME=URL or --config FILE")
    return models


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from uniscale.lab.cli_common import parse_prices

    for noisy in ("httpx", "httpcore"):  # one INFO line per request drowns the progress bar
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        models = _models(args)
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
    p.add_argument("--concurrency", type=int, default=1, help="pairs in flight per model (1)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="per HTTP request (900)")
    p.add_argument("--retries", type=int, default=2, help="retries per request on 5xx/network")
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
