"""Simulated benchmark of the UniScale policy, in the style of the paper's evaluation.

A seeded stream of requests (``uniscale.sim``: four task types; three models of different
price, skill and speed; per-sample correctness, token usage and latency depending on the
request and the model; diminishing returns in n; capability ceilings) is pre-drawn for every
(model, strategy, n) action, then streamed through:

* ``uniscale``      the policy over the full model x strategy x n space (30 actions);
* ``routing_only``  the same learner restricted to one sample per model;
* ``tts_only``      the same learner restricted to the best single model in hindsight;
* ``best_fixed``    the best single action in hindsight;
* ``random`` and ``oracle`` (the best action per request, for regret).

Scenarios: stationary; the mid-price model retired at T/2, or added at T/2 (it is the
workhorse under the cost-sensitive preset, so both changes matter); the reward preset switched
from cost_sensitive to quality_priority at T/2. Every scenario runs over several seeds and the
table shows mean ± standard deviation. The verdict line checks the issue's target: the unified
policy beats both restricted learners and the best fixed action on reward (mean over seeds).
Each seed is one stream all policies share, so the comparison is paired: per baseline the
line gives the mean of UniScale's per-seed reward minus the baseline's, a 95% bootstrap
interval of that mean over seeds, and the seeds UniScale wins. An interval that contains 0 is
a difference the seeds cannot tell from noise; the verdict says so instead of calling it a win
or a loss. Twenty seeds by default: the learners' seed-to-seed spread (a learner that settles
on a weak action early loses hundreds of reward on that seed) is too large for five.

    python benches/bench_policy_sim.py                 # 10,000 requests x 20 seeds (~3 min)
    python benches/bench_policy_sim.py --smoke         # CI: tiny, no verdict
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import release_build_or_exit_code

import uniscale
from uniscale import outcomes, replay, report, sim
from uniscale.progress import Progress
from uniscale.space import ActionSpace

SCENARIOS: dict[str, Any] = {
    "stationary": lambda t: ([], None),
    "model_removed": lambda t: ([replay.Event(t // 2, "retire_model", "medium")], None),
    "model_added": lambda t: (
        [replay.Event(t // 2, "add_model", "medium")],
        ["small", "large"],
    ),
    "preset_switched": lambda t: ([replay.Event(t // 2, "set_reward", "quality_priority")], None),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (no verdict)")
    ap.add_argument("--json", type=Path, help="write results here")
    ap.add_argument(
        "--policy",
        default="{}",
        metavar="JSON",
        help="Policy keyword arguments for the three learners, e.g. '{\"alpha\": 0.1}'",
    )
    args = ap.parse_args(argv)
    try:
        policy_kwargs = json.loads(args.policy)
    except json.JSONDecodeError as e:
        ap.error(f"--policy: bad JSON ({e})")
    if not isinstance(policy_kwargs, dict):
        ap.error("--policy: a JSON object of Policy keyword arguments")
    refused = release_build_or_exit_code()
    if refused is not None:
        return refused
    t_n, seeds = (1500, 1) if args.smoke else (args.requests, args.seeds)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    models = {m.spec.name: m.spec for m in sim.DEFAULT_SIM_MODELS}
    space = ActionSpace.grid(list(models.values()), n_values=(1, 2, 4, 8))
    print(
        f"bench_policy_sim: uniscale {uniscale.__version__}; {t_n} requests x {seeds} seeds; "
        f"{len(models)} models, {len(space)} actions; reward cost_sensitive"
        + (f"; Policy{policy_kwargs}" if policy_kwargs else "")
    )
    t0 = time.monotonic()
    tables = []
    for seed in range(seeds):
        tables.append(
            outcomes.build_table(sim.simulate(t_n, 16, seed=seed), space.ordered_actions(), models)
        )
    out: dict[str, Any] = {"requests": t_n, "seeds": seeds, "scenarios": {}}
    verdicts = []
    with Progress(len(names) * seeds * 3 * t_n, "bench", log_every_s=30) as bar:
        for name in names:
            per_seed = []
            for seed, table in enumerate(tables):
                events, initial = SCENARIOS[name](t_n)
                per_seed.append(
                    replay.compare(
                        table,
                        models,
                        reward="cost_sensitive",
                        events=events,
                        initial_models=initial,
                        seed=seed,
                        progress=bar,
                        **policy_kwargs,
                    )
                )
            rows = report.aggregate(per_seed)
            paired = {
                other: paired_difference(
                    [_total(res, "uniscale") - _total(res, other) for res in per_seed]
                )
                for other in ("routing_only", "tts_only", "best_fixed")
            }
            mean = {r["policy"]: r["reward_total"][0] for r in rows}
            verdicts.append((name, paired, mean))
            out["scenarios"][name] = {"rows": rows, "paired": paired}
            print(f"\n== {name} ==", file=sys.stdout)
            print(report.table(rows))
    print()
    print(
        "uniscale reward vs each baseline: relative margin of the means, paired difference "
        "(mean and 95% bootstrap interval over seeds), seeds won"
    )
    for name, paired, mean in verdicts:
        ok = all(p["mean"] > 0 for p in paired.values())
        clear = all(p["low"] > 0 for p in paired.values())
        tag = "smoke" if args.smoke else ("PASS" if ok else "FAIL")
        note = ""
        if ok and not clear and not args.smoke:
            note = "  (on the mean; not every interval excludes 0)"
        print(f"[{tag:>5}] {name}:{note}")
        for o, p in paired.items():
            print(
                f"          vs {o:<13} {100 * (mean['uniscale'] / mean[o] - 1):+6.1f}%  "
                f"diff {p['mean']:+8.1f} [{p['low']:+8.1f}, {p['high']:+8.1f}]  "
                f"{p['wins']}/{seeds} seeds"
            )
    print(f"\n(total {time.monotonic() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=list) + "\n")
    return 0


def paired_difference(diffs: list[float], *, resamples: int = 10_000) -> dict[str, Any]:
    """Mean of per-seed differences with a 95% percentile-bootstrap interval (seeded)."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        m = float(d.mean())
        return {"mean": m, "low": m, "high": m, "wins": int((d > 0).sum()), "per_seed": d.tolist()}
    rng = np.random.default_rng(0)
    boot = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return {
        "mean": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "wins": int((d > 0).sum()),
        "per_seed": d.tolist(),
    }


def _total(results: list[replay.RunResult], name: str) -> float:
    for r in results:
        if r.name == name or (name == "tts_only" and r.name.startswith("tts_only")):
            return float(r.reward.sum())
    raise KeyError(name)


if __name__ == "__main__":
    raise SystemExit(main())
