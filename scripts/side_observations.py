"""Side observations on the packaged real table: UniScale with none, and with sub-runs observed
at several weights, paired per seed against none (mean reward per request, mean ± standard
error over seeds). Writes a markdown table.

    python scripts/side_observations.py --seeds 30 --out docs/side_observations.md
"""

from __future__ import annotations

import time

import numpy as np
from _common import PRESETS, markdown_table, pm, seeds_parser, write_report

from uniscale.lab import datasets, replay
from uniscale.lab.progress import progress_bar
from uniscale.lab.replay import LearnerSpec

CONFIGS: dict[str, tuple[bool, float]] = {
    "none": (False, 1.0),
    "weight 1": (True, 1.0),
    "weight 0.5": (True, 0.5),
    "weight 0.25": (True, 0.25),
}


def main() -> int:
    ap = seeds_parser(__doc__, seeds=30, out="docs/side_observations.md")
    args = ap.parse_args()
    src = datasets.collected_source()
    t0 = time.time()
    rows = []
    with progress_bar(len(PRESETS) * len(CONFIGS) * args.seeds, "side observations") as bar:
        for preset in PRESETS:
            vs_best: dict[str, list[float]] = {k: [] for k in CONFIGS}
            for name, (side, w) in CONFIGS.items():
                for seed in range(args.seeds):
                    t = src.table(seed)
                    res = replay.compare(
                        t,
                        src.models,
                        reward=preset,
                        seed=seed,
                        learners=[LearnerSpec("uniscale", t.actions, {})],
                        side_observations=side,
                        side_weight=w,
                    )
                    by = {r.name: r for r in res}
                    vs_best[name].append(
                        float(by["uniscale"].reward.mean() - by["best_fixed"].reward.mean())
                    )
                    bar.update(1)
            none = np.array(vs_best["none"])
            for name, v in vs_best.items():
                rows.append(f"| {preset} | {name} | {pm(v)} | {pm(np.array(v) - none)} |")
    intro = (
        f"Side observations on the packaged real table, {args.seeds} seeds "
        f"(`python scripts/side_observations.py --seeds {args.seeds}`, "
        f"{time.time() - t0:.0f} s); mean reward per request, mean ± standard error."
    )
    header = ("preset", "side observations", "UniScale vs best fixed", "vs none (paired)")
    write_report(args.out, markdown_table(intro, header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
