"""Ablation of `Policy` settings: each variant's mean reward per request minus the best fixed
action's, paired per seed (same stream), on the packaged real table, the MMLU-Pro table (a
prefix) and the simulator, under the three reward presets. Writes a markdown table.

    python scripts/policy_ablation.py --seeds 5 \\
        --variant default='{}' --variant greedy='{"alpha": 0}' --out docs/ablation.md

A variant is NAME=JSON, the JSON object's keys being `Policy` keyword arguments.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from uniscale import datasets, replay
from uniscale.progress import Progress
from uniscale.replay import LearnerSpec

PRESETS = ("cost_sensitive", "balanced", "quality_priority")


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    name, sep, body = spec.partition("=")
    if not sep or not name:
        raise SystemExit(f"--variant {spec!r}: expected NAME=JSON")
    try:
        kwargs = json.loads(body)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--variant {name}: bad JSON ({e})") from None
    if not isinstance(kwargs, dict):
        raise SystemExit(f"--variant {name}: JSON must be an object of Policy keyword arguments")
    return name, kwargs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=3000, help="MMLU-Pro and simulator prefix")
    ap.add_argument("--tables", default="real,mmlu-pro,sim", help="comma-separated subset")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON")
    ap.add_argument("--out", default=None, help="markdown file (default: print only)")
    args = ap.parse_args()
    variants = dict(parse_variant(v) for v in args.variant) or {"default": {}}
    wanted = args.tables.split(",")
    sources = {}
    if "real" in wanted:
        src = datasets.collected_source()
        sources[f"real_v1 ({src.n_requests})"] = src
    if "mmlu-pro" in wanted:
        sources[f"mmlu-pro ({args.requests})"] = datasets.mmlu_pro_source(n_requests=args.requests)
    if "sim" in wanted:
        sources[f"sim ({args.requests})"] = datasets.sim_source(args.requests)
    presets = args.presets.split(",")
    t0 = time.time()
    rows = []
    with Progress(len(sources) * len(presets) * args.seeds, "ablation") as bar:
        for name, src in sources.items():
            for preset in presets:
                diffs: dict[str, list[float]] = {v: [] for v in variants}
                for seed in range(args.seeds):
                    t = src.table(seed)
                    specs = [LearnerSpec(v, t.actions, kw) for v, kw in variants.items()]
                    res = replay.compare(t, src.models, reward=preset, seed=seed, learners=specs)
                    by = {r.name: r for r in res}
                    for v in variants:
                        diffs[v].append(float(by[v].reward.mean() - by["best_fixed"].reward.mean()))
                    bar(1)
                cells = [
                    f"{np.mean(d):+.4f} ± {np.std(d) / np.sqrt(len(d)):.4f}" for d in diffs.values()
                ]
                rows.append(f"| {name} | {preset} | " + " | ".join(cells) + " |")
    legend = [f"- `{v}`: `{json.dumps(kw)}`" for v, kw in variants.items()]
    cmd = " ".join(f"--variant {v}='{json.dumps(kw)}'" for v, kw in variants.items())
    text = "\n".join(
        [
            "UniScale minus the best fixed action, mean reward per request, mean ± standard "
            f"error over {args.seeds} seeds (`python scripts/policy_ablation.py --seeds "
            f"{args.seeds} --tables {args.tables} {cmd}`, {time.time() - t0:.0f} s):",
            "",
            *legend,
            "",
            "| table | preset | " + " | ".join(variants) + " |",
            "|---|---|" + "---|" * len(variants),
            *rows,
            "",
        ]
    )
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
