"""The paper's rule choices next to ours on the built-in example (issue #15): the nine simulated
models and three scenarios of ``uniscale/data/plan_paper.toml``.

* paper: what the reference code (masonjung/inference-scaling-moo) does, one model at a time
  (its plots take one model from a dropdown) with its latency model ``(k / P) * mean call
  time`` and its knee (curvature from the cross product of two coordinates); for each rule the
  table shows the pick of the model that rule ranks best across the nine per-model runs;
* ours: all nine models planned jointly (the Pareto filter works across models), latency as
  ``ceil(k / P)`` rounds each as slow as its slowest call, the 3-D curvature knee and the
  chord variant.

    python scripts/plan_paper_compare.py --out docs/plan_rules.md
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from _common import write_report

from uniscale import planner


def _score(rule: str, m: np.ndarray, s: planner.ScenarioResult) -> float:
    """How the rule ranks a point (higher is better), to choose among per-model picks."""
    c, t, a = m
    cr = s.max_cost_usd if math.isfinite(s.max_cost_usd) else 1.0
    tr = s.max_latency_s if math.isfinite(s.max_latency_s) else 1.0
    if rule == "accuracy_max":
        return float(a)
    if rule == "cube":
        return float(max(0.0, 1 - c / cr) * max(0.0, 1 - t / tr) * a)
    return -float(math.sqrt((c / cr) ** 2 + (t / tr) ** 2 + (1 - a) ** 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/plan_rules.md")
    args = ap.parse_args()
    cfg = planner.load_config(planner.PAPER_CONFIG)
    ours = planner.plan(cfg.candidates, cfg.scenarios, trials=args.trials, seed=args.seed)
    models = list(dict.fromkeys(c.model for c in cfg.candidates))
    per_model = {
        m: planner.plan(
            [c for c in cfg.candidates if c.model == m],
            cfg.scenarios,
            trials=args.trials,
            seed=args.seed,
            latency="paper_mean",
        )
        for m in models
    }

    def fmt(p: planner.Plan, i: int | None) -> str:
        if i is None:
            return "-"
        c, m = p.candidates[i], p.mean[i]
        return f"{c.model} k={c.k} (${m[0]:.3f}, {m[1]:.1f} s, {m[2]:.4f})"

    lines = [
        f"Paper vs ours on the built-in example ({args.trials} trials, seed {args.seed}; "
        "`python scripts/plan_paper_compare.py`). Each cell: model, k, (E[cost], E[latency], "
        "E[accuracy]). 'paper' runs the reference code's rules one model at a time with its "
        "latency model and shows, per rule, the best of the nine per-model picks (accuracy for "
        "accuracy-max, the cube volume for cube, the utopia distance for utopia; for the knees, "
        "the knee of the model its utopia rule picks); its knee is `knee_paper`. "
        "'ours' plans the nine models jointly with round latency.",
        "",
        "| scenario | rule | paper (per model, (k/P)·mean latency) | ours (joint, rounds) |",
        "|---|---|---|---|",
    ]
    pairs = (
        ("accuracy_max", "accuracy_max"),
        ("cube", "cube"),
        ("utopia", "utopia"),
        ("knee (paper: 2-D curvature; ours: 3-D)", "knee"),
        ("knee, chord distance", "knee_chord"),
    )
    for s in ours.scenarios:
        name = s.scenario.name
        utopia_model: str | None = None
        best_u = -math.inf
        for m, p in per_model.items():
            ps = p.scenario(name)
            i = ps.picks["utopia"]
            if i is not None and _score("utopia", p.mean[i], ps) > best_u:
                best_u, utopia_model = _score("utopia", p.mean[i], ps), m
        for label, rule in pairs:
            cell = "-"
            if "knee" in rule:
                # no cross-model criterion for a knee: the knee of the model the paper's
                # utopia rule picks
                if utopia_model is not None:
                    p = per_model[utopia_model]
                    paper_rule = "knee_paper" if rule == "knee" else rule
                    cell = fmt(p, p.scenario(name).picks[paper_rule])
            else:
                best: tuple[float, str] | None = None
                for p in per_model.values():
                    ps = p.scenario(name)
                    i = ps.picks.get(rule)
                    if i is not None and (best is None or _score(rule, p.mean[i], ps) > best[0]):
                        best = (_score(rule, p.mean[i], ps), fmt(p, i))
                cell = best[1] if best else "-"
            lines.append(f"| {name} | {label} | {cell} | {fmt(ours, s.picks[rule])} |")
    text = "\n".join(lines) + "\n"
    write_report(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
