"""What routing on the request's type can gain under *bandit* feedback, on each real table.

The out-of-sample per-type router (`best_per_kind_xfit`) learns from every action's outcome on
80% of the table; a bandit sees one action's outcome per request. This script measures simple,
well-specified learners that see exactly what a bandit sees, against the best fixed action
(hindsight), mean reward per request over the full stream, paired over seeds:

* ``etc_global(m)`` / ``etc_kind(m)``: explore uniformly for the first ``m`` requests, then
  commit to the best action overall / per type (per-type means shrunk towards the action's
  overall mean with 20 pseudo-observations);
* ``ts_kind``: Thompson sampling on per-(type, action) Gaussian posteriors whose prior is the
  action's pooled mean (a two-level model: the same structure the default policy's
  bias x action + type x action interaction model has, without its other features);
* ``ts_global``: the same without the type.

    python scripts/bandit_headroom.py [--tables mmlu-pro,real] [--seeds 5]

If even these learners capture little of the per-type router's gain, the shortfall is the price
of bandit feedback on a stream of this length, not a defect of one learner.
"""

from __future__ import annotations

import argparse

import numpy as np
from numpy.typing import NDArray

from uniscale.lab.datasets import table_source
from uniscale.lab.replay import Scales, best_per_kind_xfit_run, reward_matrix, schedule

F64 = NDArray[np.float64]
PRIOR_OBS = 20.0


def etc(
    r: F64, kind_ix: NDArray[np.int64], m: int, per_kind: bool, rng: np.random.Generator
) -> F64:
    t_n, k = r.shape
    m = min(m, t_n)
    explore = rng.integers(0, k, m)
    got = r[np.arange(m), explore]
    tot = np.bincount(explore, got, k)
    cnt = np.bincount(explore, minlength=k).astype(float)
    overall = tot / np.maximum(cnt, 1)
    out = np.empty(t_n)
    out[:m] = got
    if not per_kind:
        out[m:] = r[m:, int(np.argmax(np.where(cnt > 0, overall, -np.inf)))]
        return out
    n_k = int(kind_ix.max()) + 1
    best = np.zeros(n_k, dtype=np.int64)
    for g in range(n_k):
        sel = kind_ix[:m] == g
        kt = np.bincount(explore[sel], got[sel], k)
        kc = np.bincount(explore[sel], minlength=k).astype(float)
        est = (kt + PRIOR_OBS * overall) / (kc + PRIOR_OBS)
        best[g] = int(np.argmax(np.where(cnt > 0, est, -np.inf)))
    out[m:] = r[np.arange(m, t_n), best[kind_ix[m:]]]
    return out


def thompson(r: F64, kind_ix: NDArray[np.int64], per_kind: bool, rng: np.random.Generator) -> F64:
    """Gaussian Thompson sampling; noise variance from the rewards seen so far."""
    t_n, k = r.shape
    n_k = int(kind_ix.max()) + 1 if per_kind else 1
    g_tot, g_cnt = np.zeros(k), np.zeros(k)
    k_tot, k_cnt = np.zeros((n_k, k)), np.zeros((n_k, k))
    s1 = s2 = 0.0
    out = np.empty(t_n)
    for t in range(t_n):
        g = int(kind_ix[t]) if per_kind else 0
        var = max((s2 - s1 * s1 / t) / t, 1e-4) if t > 1 else 0.25
        g_mean = np.where(g_cnt > 0, g_tot / np.maximum(g_cnt, 1), 0.5)
        mean = (k_tot[g] + PRIOR_OBS * g_mean) / (k_cnt[g] + PRIOR_OBS)
        # posterior of the pooled mean adds its own uncertainty
        sd = np.sqrt(var / (k_cnt[g] + PRIOR_OBS) + var / (g_cnt + 1.0))
        a = int(np.argmax(mean + sd * rng.standard_normal(k)))
        y = float(r[t, a])
        out[t] = y
        s1 += y
        s2 += y * y
        g_tot[a] += y
        g_cnt[a] += 1
        k_tot[g, a] += y
        k_cnt[g, a] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", default="mmlu-pro,real")
    ap.add_argument("--presets", default="cost_sensitive,balanced,quality_priority")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--etc", default="100,300,1000,3000")
    args = ap.parse_args()
    ms = [int(v) for v in args.etc.split(",")]
    for name in args.tables.split(","):
        for preset in args.presets.split(","):
            rows: dict[str, list[float]] = {}
            for seed in range(args.seeds):
                table, _, _ = table_source(name, seed)
                avail, weights = schedule(table, [], preset)
                r = reward_matrix(table, weights, Scales.from_table(table))
                kinds = list(dict.fromkeys(table.kinds))
                kind_ix = np.array([kinds.index(k) for k in table.kinds], dtype=np.int64)
                fixed = r[:, int(np.argmax(r.sum(0)))]
                oracle = r.max(1)
                xfit = best_per_kind_xfit_run(table, r, avail, oracle, seed=seed).reward
                rng = np.random.default_rng(seed)
                runs: dict[str, F64] = {"router_xfit (full info)": xfit}
                for m in ms:
                    runs[f"etc_global({m})"] = etc(r, kind_ix, m, False, rng)
                    runs[f"etc_kind({m})"] = etc(r, kind_ix, m, True, rng)
                runs["ts_global"] = thompson(r, kind_ix, False, rng)
                runs["ts_kind"] = thompson(r, kind_ix, True, rng)
                for key, run in runs.items():
                    rows.setdefault(key, []).append(float((run - fixed).mean()))
            print(
                f"\n{name} / {preset}: mean reward per request minus best fixed, {args.seeds} seeds"
            )
            for key, diffs in rows.items():
                d = np.array(diffs)
                ci = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
                print(
                    f"  {key:26} {d.mean():+.4f} ± {ci:.4f}  (ahead {int((d > 0).sum())}/{len(d)})"
                )


if __name__ == "__main__":
    main()
