"""Conservative mode's promise measured over many seeds on the built-in real tables.

For every (table, baseline, preset) cell: how many seeds kept "cumulative reward never more than
delta x |baseline's cumulative reward| below the baseline's" at every request, the paired
difference to the baseline (mean reward per request) and to the best fixed action in
hindsight, and how many requests left the baseline. Writes a markdown table.

    python scripts/conservative_grid.py --seeds 50 --out docs/conservative_grid.md
"""

from __future__ import annotations

import time

import numpy as np
from _common import PRESETS, markdown_table, pm, seeds_parser, write_report

from uniscale.lab import datasets, replay
from uniscale.lab.progress import progress_bar

CELLS = {
    "real": (None, ["qwen15", "qwen05", "qwen15/self_consistency/4"]),
    "mmlu-pro": (3000, ["gemini-1.5-pro-002", "llama-3.1-70b-instruct", "llama-3.1-8b-instruct"]),
}


def main() -> int:
    ap = seeds_parser(__doc__, seeds=50, out="docs/conservative_grid.md")
    ap.add_argument("--delta", type=float, default=0.05)
    args = ap.parse_args()
    rows = []
    n_cells = sum(len(b) for _, b in CELLS.values()) * len(PRESETS)
    t0 = time.time()
    with progress_bar(n_cells * args.seeds, "conservative grid") as bar:
        for table, (n, baselines) in CELLS.items():
            src = (
                datasets.collected_source(n_requests=n)
                if table == "real"
                else datasets.mmlu_pro_source(n_requests=n)
            )
            for base in baselines:
                for preset in PRESETS:
                    held, d_base, d_best, left, length = 0, [], [], [], 0
                    for seed in range(args.seeds):
                        t = src.table(seed)
                        by = replay.compare_conservative(
                            t,
                            src.models,
                            base,
                            reward=preset,
                            seed=seed,
                            conservative_delta=args.delta,
                        )
                        c = by["uniscale_conservative"]
                        held += bool(c.extra["promise_held"])
                        d_base.append(c.reward.mean() - by["baseline"].reward.mean())
                        d_best.append(c.reward.mean() - by["best_fixed"].reward.mean())
                        left.append(c.extra["non_baseline"])
                        length = t.n_requests
                        bar.update(1)
                    rows.append(
                        f"| {table} ({length}) | {base} | {preset} | {held}/{args.seeds} | "
                        f"{pm(d_base, se=False)} | {pm(d_best, se=False)} | {np.mean(left):.0f} |"
                    )
    intro = (
        f"Conservative mode, delta = {args.delta}, {args.seeds} seeds per cell "
        f"(`python scripts/conservative_grid.py --seeds {args.seeds}`, "
        f"{time.time() - t0:.0f} s). Differences are paired (same stream), mean reward per "
        "request, mean ± std over seeds."
    )
    header = (
        "table (requests)",
        "baseline",
        "preset",
        "promise held",
        "vs baseline (per request)",
        "vs best fixed",
        "requests off the baseline",
    )
    write_report(args.out, markdown_table(intro, header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
