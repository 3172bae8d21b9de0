"""``uniscale demo``: the built-in default job, with no network, server or API key.

It replays the outcome table recorded from real small LLMs that ships with the package
(`uniscale.lab.datasets.REAL_TABLE`: real benchmark items, every model's recorded samples) through
UniScale and the baselines for a few seeds -- each seed streams the items in its own order --
prints the comparison with its seed-to-seed spread and the targets (reward against each
baseline, accuracy at equal cost, cost against the largest model answering once), and writes a
JSON result file and SVG charts. ``--sim`` streams the built-in simulator instead
(`uniscale.lab.sim`: four task types, three models, every outcome pre-drawn), which is larger and
faster to learn from, but made up. ``table="mmlu-pro"`` streams the packaged MMLU-Pro routing
table (`uniscale.lab.datasets.mmlu_pro_source`). Every run also replays quality-floor mode against
the priciest model answering once (`Policy.set_quality_floor`, tolerance `FLOOR_TOLERANCE`)
and prints one line of it: accuracy vs that model, cost saved, whether the floor held.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from uniscale.lab import datasets, replay, report
from uniscale.lab.progress import progress_bar
from uniscale.policy import QualityFloor

#: The demo's quality-floor line: keep the priciest model's accuracy within this per request.
FLOOR_TOLERANCE = 0.01


def run_demo(
    n_requests: int | None = None,
    *,
    seed: int = 0,
    seeds: int = 3,
    out_dir: str | Path = "uniscale-demo",
    reward: str = "quality_priority",
    sim: bool = False,
    table: str | Path | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Replay ``table`` (default: the packaged real table; ``sim``: the simulator) for seeds
    ``seed .. seed + seeds - 1`` and return the summary rows, target payload and report text."""
    t0 = time.monotonic()
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if sim:
        src = datasets.sim_source(n_requests or 6000)
    elif table == "mmlu-pro":
        src = datasets.mmlu_pro_source(n_requests=n_requests)
    else:
        src = datasets.collected_source(table or datasets.REAL_TABLE, n_requests=n_requests)
    tables = [src.table(s) for s in range(seed, seed + seeds)]
    per_seed: list[list[replay.RunResult]] = []
    # UniScale, routing-only, TTS-only, and quality-floor mode against the priciest model
    total = sum(t.n_requests for t in tables) * 4
    with progress_bar(total, "demo: streaming requests", enabled=not quiet) as bar:
        for s, t in zip(range(seed, seed + seeds), tables, strict=True):
            floor = QualityFloor(replay.default_reference(t.actions, src.models), FLOOR_TOLERANCE)
            per_seed.append(
                replay.compare(
                    t, src.models, reward=reward, seed=s, progress=bar.update, quality_floor=floor
                )
            )
    sys.stderr.flush()
    rows = report.aggregate(per_seed)
    lines = [
        f"UniScale demo: {src.name}; {len(tables[0].actions)} actions (model x strategy x n), "
        f"reward preset {reward!r}, seeds {seed}..{seed + seeds - 1} (mean ± std over seeds)",
    ]
    lines += [f"  left out: {m} ({why})" for m, why in src.excluded.items()]
    lines += ["", report.table(rows), ""]
    uni = [next(r for r in res if r.name == "uniscale") for res in per_seed]
    windows = [np.array_split(np.arange(len(u.reward)), 4) for u in uni]
    curve = [
        float(
            np.mean(
                [
                    (u.oracle_reward[w[i]] - u.reward[w[i]]).mean()
                    for u, w in zip(uni, windows, strict=True)
                ]
            )
        )
        for i in range(4)
    ]
    lines.append(
        "UniScale's mean regret per request by quarter of the stream (falls as it learns): "
        + "  ".join(f"{c:.3f}" for c in curve)
    )
    target_lines, target_payload = report.targets(per_seed, tables, report.model_prices(src.models))
    lines += [*target_lines]
    head = report.headline(target_payload, src.name.split(" ")[0], reward)
    lines.insert(1, head)
    out = Path(out_dir)
    charts = report.write_charts(per_seed[0], out)
    js = report.write_json(
        out / "demo_results.json",
        {
            "source": src.name,
            "excluded_models": src.excluded,
            "reward": reward,
            "seeds": list(range(seed, seed + seeds)),
            "summary": rows,
            "per_seed": [[r.summary() for r in res] for res in per_seed],
            "regret_by_quarter": curve,
            "targets": target_payload,
            "headline": head,
        },
    )
    lines.append(f"wrote {js} and {', '.join(str(c) for c in charts)} (charts: seed {seed})")
    lines.append(f"({time.monotonic() - t0:.1f} s)")
    text = "\n".join(lines)
    if not quiet:
        print(text)
    return {
        "summary": rows,
        "text": text,
        "regret_by_quarter": curve,
        "targets": target_payload,
        "headline": head,
    }
