"""How many samples adaptive consistency saves on real collected data, and at what accuracy.

Replays the recorded samples of ``uniscale/data/real_v1.jsonl.gz`` (real llama.cpp models on
real benchmark items; see its meta file) for every model and n: self-consistency over the first
n samples vs adaptive consistency drawing the same samples in rounds (2, 4, ...) until the
leader cannot be overtaken or the Beta rule is confident. Several shuffles of the recorded
sample order (seeds) give the spread.

    python benches/adaptive_savings.py [--table PATH] [--items PATH] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from uniscale import outcomes
from uniscale.lab import datasets
from uniscale.lab.collect import load_requests
from uniscale.space import Action, ModelSpec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--table", default=str(datasets.REAL_TABLE), help="default: packaged table")
    ap.add_argument("--items", default=str(datasets.ITEMS), help="default: the packaged items")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n", default="4,8", help="comma-separated budgets n (default 4,8)")
    args = ap.parse_args(argv)
    meta_file = Path(args.table).with_name(Path(args.table).name.split(".")[0] + ".meta.json")
    requests = load_requests(args.table, args.items, complete=False)
    if not requests:
        print("no complete records in the table yet")
        return 1
    model_names = sorted({m for r in requests for m in r.samples})
    ns = [int(v) for v in args.n.split(",")]
    print(f"{len(requests)} items from {args.table} (models: {', '.join(model_names)})")
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("partial"):
            print(f"note: {meta_file} says this export is partial")
    header = ("model", "n", "SC accuracy", "adaptive acc", "samples used", "saved")
    print("\n{:<10} {:>3} {:>12} {:>13} {:>13} {:>7}".format(*header))
    for name in model_names:
        reqs = [r for r in requests if len(r.samples.get(name, ())) >= max(ns)]
        if not reqs:
            continue
        spec = {name: ModelSpec(name)}
        for n in ns:
            acts = [Action(name, "self_consistency", n), Action(name, "adaptive_consistency", n)]
            sc_acc, ad_acc, used = [], [], []
            for seed in range(args.seeds):
                t = outcomes.build_table(reqs, acts, spec, seed=seed)
                sc_acc.append(t.quality[:, 0].mean())
                ad_acc.append(t.quality[:, 1].mean())
                used.append(t.samples_used[:, 1].mean())
            u = float(np.mean(used))
            saved = 100 * (1 - u / n)
            print(
                f"{name:<10} {n:>3} {np.mean(sc_acc):>8.3f}±{np.std(sc_acc):.3f}"
                f" {np.mean(ad_acc):>9.3f}±{np.std(ad_acc):.3f} {u:>9.2f}/{n:<3} {saved:>6.1f}%"
                f"   ({len(reqs)} items)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
