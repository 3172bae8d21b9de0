"""``uniscale plan``: the 3-D accuracy x cost x latency operating-point planner (see
`uniscale.planner` and ``docs/plan.md``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="plan operating points on the 3-D accuracy x cost x latency front",
        description="Monte Carlo estimates of the expected cost, latency and accuracy of every "
        "(model, strategy, k) candidate, the feasible set and Pareto front of each scenario, "
        "and the picks of the paper's selection rules (arXiv 2510.18905): accuracy-max, cube, "
        "utopia-closest, the 3-D curvature knee, the chord-distance knee and the reference "
        "code's knee. Without --config: the paper's nine simulated models and three scenarios "
        "(uniscale/data/plan_paper.toml), or with --table the packaged table scenarios "
        "(uniscale/data/plan_tables.toml). Prints a table per scenario and writes SVG plots "
        "and JSON to --out.",
    )
    p.add_argument(
        "--config",
        default=None,
        help="plan TOML: [plan] settings, [[model]] candidates (ignored with --table) and "
        "[[scenario]] limits; default the built-in example",
    )
    p.add_argument(
        "--table",
        default=None,
        help="plan over a measured outcome table instead of simulated models: 'real' (the "
        "packaged CPU table), 'mmlu-pro' (the packaged routing table) or the path of a "
        "collected table; accuracy is measured per (model, strategy, k) with bootstrap "
        "intervals",
    )
    p.add_argument(
        "--policy",
        default=None,
        metavar="STATE",
        help="plan from a saved policy's current beliefs instead (its cost model's predictions "
        "and its quality estimates with their uncertainty) for the request given by --prompt; "
        "scenarios as for --table (limits relative to the largest expected cost and latency)",
    )
    p.add_argument(
        "--prompt",
        default=None,
        help="with --policy: the request to plan for (featurized by the hashing featurizer at "
        "the policy's dimension)",
    )
    p.add_argument("--trials", type=int, default=None, help="Monte Carlo trials per candidate")
    p.add_argument("--seed", type=int, default=None, help="random seed (default from config)")
    p.add_argument(
        "--risk",
        choices=["mean", "quantile"],
        default=None,
        help="feasibility on expectations (mean) or on pessimistic quantiles (risk-averse)",
    )
    p.add_argument(
        "--quantile",
        type=float,
        default=None,
        help="with --risk quantile: the quantile of cost and latency (and 1 - it of accuracy) "
        "that must meet the limits (default 0.9)",
    )
    p.add_argument(
        "--latency",
        choices=["rounds", "paper_mean"],
        default=None,
        help="latency of k calls: ceil(k/P) rounds each as slow as its slowest call (rounds, "
        "default) or the reference code's (k/P) x mean call time (paper_mean)",
    )
    p.add_argument(
        "--rows",
        choices=["front", "feasible"],
        default="front",
        help="rows of the printed tables (default: the Pareto front)",
    )
    p.add_argument("--out", default="uniscale-plan", help="output directory for SVG and JSON")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the SVG plots")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uniscale import planner
    from uniscale._core import UniScaleError
    from uniscale.lab import datasets
    from uniscale.lab.progress import progress_bar

    if args.policy and args.table:
        raise SystemExit("error: --policy and --table are alternatives; give one")
    if bool(args.policy) != bool(args.prompt):
        raise SystemExit("error: --policy and --prompt go together")
    try:
        default = planner.TABLE_CONFIG if args.table or args.policy else planner.PAPER_CONFIG
        cfg = planner.load_config(args.config or default)
        overrides = {
            k: v
            for k, v in (
                ("trials", args.trials),
                ("seed", args.seed),
                ("risk", args.risk),
                ("quantile", args.quantile),
                ("latency", args.latency),
            )
            if v is not None
        }
        cfg = dataclasses.replace(cfg, **overrides)
        source = "simulated models of " + str(args.config or default)
        candidates = list(cfg.candidates)
        if args.table:
            table, models, source = datasets.table_source(args.table, seed=cfg.seed)
            candidates = planner.candidates_from_table(
                table,
                models,
                strategies=cfg.strategies,
                bootstrap=cfg.bootstrap,
                seed=cfg.seed,
            )
        if args.policy:
            candidates, source = _policy_candidates(args.policy, args.prompt)
        with progress_bar(len(candidates), "monte carlo", enabled=not args.quiet) as bar:

            def tick(k: int) -> None:
                bar.update(k)

            result = planner.plan(
                candidates,
                cfg.scenarios,
                trials=cfg.trials,
                seed=cfg.seed,
                level=cfg.level,
                quantile=cfg.quantile,
                risk=cfg.risk,
                latency=cfg.latency,
                progress=tick,
                source=source,
            )
    except (UniScaleError, OSError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    out = Path(args.out)
    print(
        f"{source}: {len(candidates)} candidates, {result.trials} trials each, seed "
        f"{result.seed}, latency model {result.latency!r}"
    )
    for s in result.scenarios:
        print()
        if s.scenario.description:
            print(f"# {s.scenario.description}")
        print(result.table(s.scenario.name, rows=args.rows))
        if args.plots and s.feasible:
            from uniscale.lab.plan_plot import plot_scenario

            paths = plot_scenario(result, s.scenario.name, out)
            print(f"plots: {', '.join(str(p) for p in paths)}")
    path = planner.write_json(result, out / "plan.json")
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


def _policy_candidates(state: str, prompt: str) -> tuple[list[Any], str]:
    """Candidates from a saved policy for one prompt, and the run's description."""
    from uniscale import planner
    from uniscale.featurize import Featurizer
    from uniscale.policy import Policy

    policy = Policy.load(state)
    featurizer = Featurizer(policy.dim)
    wanted = policy.feature_version
    if wanted and wanted != featurizer.version:
        raise SystemExit(
            f"error: {state} was trained on {wanted!r} features; `uniscale plan --policy` "
            f"featurizes with {featurizer.version!r} (plan from Python with "
            "uniscale.planner.candidates_from_policy and your featurizer)"
        )
    x, tokens = featurizer.featurize_with_tokens(prompt)
    alpha = policy.alpha
    candidates = planner.candidates_from_policy(policy, x, float(tokens), alpha=alpha)
    return list(candidates), f"policy {state} for a {tokens}-token prompt"
