"""Calibration collection: the first K items in round-robin kind order through every model
(`calibrate`), and the resulting `OutcomeTable` (`calibration_table`). See
`uniscale.lab.calibrate` for the design."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx
import numpy as np
from numpy.typing import NDArray

from uniscale.lab.collect import (
    CollectConfig,
    CollectError,
    CollectModel,
    Item,
    Record,
    collect,
    latest_ok,
    load_items,
    load_requests,
    order_items,
    read_records,
)
from uniscale.lab.datasets import DEFAULT_PRICES, ITEMS
from uniscale.lab.progress import progress_bar
from uniscale.outcomes import OutcomeTable, build_table
from uniscale.space import ActionSpace, ModelSpec

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
