"""``uniscale demo``: the built-in default job, with no network, server or API key.

It streams a simulated gateway workload (``uniscale.sim``: four task types, three models of
different price and skill, every (model, strategy, n) outcome pre-drawn) through UniScale and
the baselines, prints the comparison and a learning curve, and writes a JSON result file and
SVG charts. The real-data demo (replaying outcomes recorded from real LLMs) replaces this once
the collected table lands.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from uniscale import outcomes, replay, report, sim
from uniscale.progress import Progress
from uniscale.space import ActionSpace


def run_demo(
    n_requests: int = 6000,
    *,
    seed: int = 0,
    out_dir: str | Path = "uniscale-demo",
    reward: str = "cost_sensitive",
    quiet: bool = False,
) -> dict[str, Any]:
    t0 = time.monotonic()
    models = {m.spec.name: m.spec for m in sim.DEFAULT_SIM_MODELS}
    space = ActionSpace.grid(list(models.values()), n_values=(1, 2, 4, 8))
    requests = sim.simulate(n_requests, 16, seed=seed)
    table = outcomes.build_table(requests, space.ordered_actions(), models)
    with Progress(3 * n_requests, "demo: streaming requests", enabled=not quiet) as bar:
        results = replay.compare(table, models, reward=reward, seed=seed, progress=bar)
    sys.stderr.flush()
    rows = [r.summary() for r in results]
    lines = [
        f"UniScale demo: {n_requests} simulated requests, {len(models)} models, "
        f"{len(space)} actions (model x strategy x n), reward preset {reward!r}, seed {seed}",
        "",
        report.table(rows),
        "",
    ]
    uni = next(r for r in results if r.name == "uniscale")
    windows = np.array_split(np.arange(n_requests), 6)
    curve = [float(uni.oracle_reward[w].mean() - uni.reward[w].mean()) for w in windows]
    lines.append(
        "UniScale's mean regret per request by sixth of the stream (falls as it learns): "
        + "  ".join(f"{c:.3f}" for c in curve)
    )
    best = max(
        (r for r in results if r.name not in ("oracle", "uniscale")), key=lambda r: r.reward.sum()
    )
    gain = 100 * (uni.reward.sum() / best.reward.sum() - 1)
    lines.append(
        f"UniScale reward {uni.reward.sum():,.1f} vs best non-oracle baseline "
        f"{best.name} {best.reward.sum():,.1f} ({gain:+.1f}%)"
    )
    out = Path(out_dir)
    charts = report.write_charts(results, out)
    js = report.write_json(out / "demo_results.json", {"summary": rows, "regret_by_sixth": curve})
    lines.append(f"wrote {js} and {', '.join(str(c) for c in charts)}")
    lines.append(f"({time.monotonic() - t0:.1f} s)")
    text = "\n".join(lines)
    if not quiet:
        print(text)
    return {"summary": rows, "text": text, "regret_by_sixth": curve}
