"""Paired per-seed differences of two quality-floor replays (same table, seeds and options):

    uniscale replay ... --objective quality-floor --out A ; (another build) ... --out B
    python scripts/paired_floor.py A/replay_results.json B/replay_results.json

Prints cost saved and accuracy vs the reference for each, and B - A per seed with its mean and
a t interval (95%), as docs/quality_floor.md reports them.
"""

from __future__ import annotations

import json
import sys

import numpy as np

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def _load(path: str) -> dict[str, np.ndarray]:
    with open(path) as f:
        qf = json.load(f)["targets"]["quality_floor"]
    return {k: np.asarray(qf[k], dtype=float) for k in ("cost_saved", "accuracy_vs_reference")}


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    a, b = _load(sys.argv[1]), _load(sys.argv[2])
    for key in ("cost_saved", "accuracy_vs_reference"):
        if len(a[key]) != len(b[key]):
            raise SystemExit("the two replays have different numbers of seeds")
        d = b[key] - a[key]
        half = T95.get(len(d) - 1, 1.96) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
        print(
            f"{key:22} A {a[key].mean():+.4f}  B {b[key].mean():+.4f}  "
            f"B-A {d.mean():+.4f} ± {half:.4f} (95%), B ahead on {(d > 0).sum()}/{len(d)} seeds"
        )


if __name__ == "__main__":
    main()
