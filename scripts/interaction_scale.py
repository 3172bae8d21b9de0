"""How strongly to shrink the request x action interactions: UniScale with
``Policy(interaction_scale=s)`` against the best fixed action, paired per seed, on the packaged
real table, the MMLU-Pro table and the simulator. Writes a markdown table.

    python scripts/interaction_scale.py --seeds 5 --out docs/interaction_scale.md
"""

from __future__ import annotations

import time

from _common import PRESETS, markdown_table, pm, seeds_parser, write_report

from uniscale.lab import datasets, replay
from uniscale.lab.progress import progress_bar
from uniscale.lab.replay import LearnerSpec

SCALES = (1.0, 0.3, 0.1, 0.0)


def main() -> int:
    ap = seeds_parser(__doc__, seeds=5, out="docs/interaction_scale.md")
    ap.add_argument("--requests", type=int, default=3000, help="MMLU-Pro and simulator prefix")
    args = ap.parse_args()
    sources = {
        "real_v1 (340)": datasets.collected_source(),
        f"mmlu-pro ({args.requests})": datasets.mmlu_pro_source(n_requests=args.requests),
        f"sim ({args.requests})": datasets.sim_source(args.requests),
    }
    t0 = time.time()
    rows = []
    total = len(sources) * len(PRESETS) * args.seeds
    with progress_bar(total, "interaction scale") as bar:
        for name, src in sources.items():
            for preset in PRESETS:
                diffs: dict[float, list[float]] = {s: [] for s in SCALES}
                for seed in range(args.seeds):
                    t = src.table(seed)
                    specs = [
                        LearnerSpec(f"s={s}", t.actions, {"interaction_scale": s}) for s in SCALES
                    ]
                    res = replay.compare(t, src.models, reward=preset, seed=seed, learners=specs)
                    by = {r.name: r for r in res}
                    for s in SCALES:
                        diffs[s].append(
                            float(by[f"s={s}"].reward.mean() - by["best_fixed"].reward.mean())
                        )
                    bar.update(1)
                rows.append(f"| {name} | {preset} | " + " | ".join(map(pm, diffs.values())) + " |")
    intro = (
        f"UniScale minus the best fixed action, mean reward per request, mean ± standard "
        f"error over {args.seeds} seeds (`python scripts/interaction_scale.py --seeds "
        f"{args.seeds}`, {time.time() - t0:.0f} s), by `interaction_scale`:"
    )
    header = ["table", "preset", *(f"s = {s:g}" for s in SCALES)]
    write_report(args.out, markdown_table(intro, header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
