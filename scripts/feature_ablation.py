"""Ablation of the request features the default policy sees, on each built-in real table.

For each table, preset and feature set: the default `Policy` streamed through the table
(`uniscale.lab.replay.run_learner`, the same loop as ``uniscale replay``), mean reward per
request minus the best fixed action in hindsight, paired per seed, full stream and the first
300 requests. Feature sets:

* MMLU-Pro: ``category`` (the default: bias, log length, category one-hot), ``embed`` (bias,
  log length, the 16-dimensional static embedding of the question, `uniscale.embed`: what a
  learner sees in production, where no request carries a label), ``embed+category``, and
  ``none`` (every request the same);
* collected tables (real_v1): ``hash`` (the default: 64 hashed features), ``embed`` and
  ``none``.

    python scripts/feature_ablation.py [--tables mmlu-pro,real] [--seeds 5]
"""

from __future__ import annotations

import argparse

import numpy as np

from uniscale.lab import datasets
from uniscale.lab.replay import LearnerSpec, Scales, reward_matrix, run_learner, schedule

SETS = {
    "mmlu-pro": ("category", "embed", "embed+category", "none"),
    "real": ("hash", "embed", "none"),
}


def _source(table: str, features: str) -> datasets.Source:
    if table == "mmlu-pro":
        kind = "category" if features == "none" else features
        return datasets.mmlu_pro_source(features=kind)  # type: ignore[arg-type]
    kind = "hash" if features == "none" else features
    return datasets.collected_source(features=kind)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", default="mmlu-pro,real")
    ap.add_argument("--presets", default="cost_sensitive,balanced,quality_priority")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--prefix", type=int, default=300)
    args = ap.parse_args()
    for name in args.tables.split(","):
        print(f"\n{name}: mean reward per request minus the best fixed action, {args.seeds} seeds")
        print(f"{'preset':18} {'features':16} {'full stream':>22} {f'first {args.prefix}':>22}")
        for preset in args.presets.split(","):
            for features in SETS[name]:
                src = _source(name, features)
                full, pre = [], []
                for seed in range(args.seeds):
                    table = src.table(seed)
                    if features == "none":
                        table = table.without_request_features()
                    _avail, weights = schedule(table, [], preset)
                    scales = Scales.from_table(table)
                    r = reward_matrix(table, weights, scales)
                    spec = LearnerSpec("uniscale", table.actions, {})
                    res = run_learner(spec, table, src.models, r, r.max(1), [], scales, preset)
                    d = res.reward - r[:, int(np.argmax(r.sum(0)))]
                    full.append(float(d.mean()))
                    rp = r[: args.prefix]
                    pre.append(
                        float((res.reward[: args.prefix] - rp[:, int(np.argmax(rp.sum(0)))]).mean())
                    )
                cells = []
                for xs in (full, pre):
                    a = np.array(xs)
                    ci = 1.96 * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else 0.0
                    cells.append(f"{a.mean():+.4f} ± {ci:.4f} ({int((a > 0).sum())}/{len(a)})")
                print(f"{preset:18} {features:16} {cells[0]:>22} {cells[1]:>22}", flush=True)


if __name__ == "__main__":
    main()
