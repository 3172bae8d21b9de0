"""How much a quality floor could save on each built-in real table, in hindsight.

For each table and tolerance: the cheapest fixed action within ``tolerance`` of the reference
(the default reference, the priciest model answering once), and the best *per task type*
assignment under the stream constraint "mean quality >= reference's - tolerance", found by a
Lagrangian sweep over per-type (cost - lambda * quality) choices. Both are in-sample (they
see the whole table), so they bound what a learner could save; docs/quality_floor.md compares
the policy with them.

    python scripts/floor_headroom.py [--tolerances 0,0.01,0.03]
"""

from __future__ import annotations

import argparse

import numpy as np

from uniscale.lab.datasets import table_source
from uniscale.lab.replay import default_reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tolerances", default="0,0.01,0.03")
    ap.add_argument("--tables", default="mmlu-pro,real")
    args = ap.parse_args()
    tols = [float(v) for v in args.tolerances.split(",")]
    print(
        f"{'table':10} {'tol':>5} {'fixed saves':>12} {'per-type saves':>15} {'its accuracy':>13}"
    )
    for name in args.tables.split(","):
        t, specs, _ = table_source(name)
        ri = t.actions.index(default_reference(t.actions, specs))
        q, c = t.quality, t.cost_usd
        kinds = np.array(t.kinds)
        types = np.unique(kinds)
        qk = np.array([q[kinds == k].sum(0) for k in types])
        ck = np.array([c[kinds == k].sum(0) for k in types])
        ref_q, ref_c, n = q[:, ri].sum(), c[:, ri].sum(), len(q)
        rows = np.arange(len(types))
        for tol in tols:
            target = ref_q - tol * n
            ok = [a for a in range(q.shape[1]) if q[:, a].sum() >= target]
            fixed = min(c[:, a].sum() for a in ok)
            best = (ref_c, ref_q)
            for lam in np.geomspace(1e-9, 1e3, 6000):
                pick = np.argmin(ck - lam * qk, axis=1)
                qq, cc = qk[rows, pick].sum(), ck[rows, pick].sum()
                if qq >= target and cc < best[0]:
                    best = (cc, qq)
            print(
                f"{name:10} {tol:5.2f} {1 - fixed / ref_c:12.1%} {1 - best[0] / ref_c:15.1%} "
                f"{best[1] / n:13.3f}"
            )


if __name__ == "__main__":
    main()
