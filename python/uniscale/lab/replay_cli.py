"""``uniscale replay`` and ``uniscale calibrate-floor``: stream an outcome table through
UniScale and the baselines (`uniscale.lab.replay`), and calibrate the quality floor's tolerance
(`uniscale.lab.floor_calibrate`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniscale.lab.cli_common import PRESET_NAMES, add_table_args, source

if TYPE_CHECKING:
    from uniscale.outcomes import OutcomeTable

SCENARIOS = ("stationary", "model_removed", "model_added", "preset_switched")
#: Cost weights of the quality-cost sweep (reward = (1, w_c, 0.1 w_c)).
COST_WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)


def register(sub: Any) -> None:
    """Adds ``replay`` to the ``uniscale`` subcommands."""
    _add_replay(sub)


def register_calibrate_floor(sub: Any) -> None:
    """Adds ``calibrate-floor`` to the ``uniscale`` subcommands."""
    _add_calibrate_floor(sub)


def _scenario(
    name: str, table: OutcomeTable, reward: str
) -> tuple[list[Any], list[str] | None, str]:
    """Events, initial models and a description for a named scenario (at mid-stream)."""
    from uniscale.lab.replay import Event

    t = table.n_requests // 2
    per_model: dict[str, list[float]] = {}
    for i, a in enumerate(table.actions):
        per_model.setdefault(a.model, []).append(float(table.quality[:, i].mean()))
    best = max(per_model, key=lambda k: max(per_model[k]))
    if name == "model_removed":
        return [Event(t, "retire_model", best)], None, f"{best!r} retired at request {t}"
    if name == "model_added":
        rest = [m for m in per_model if m != best]
        return [Event(t, "add_model", best)], rest, f"{best!r} added at request {t}"
    if name == "preset_switched":
        other = "quality_priority" if reward != "quality_priority" else "cost_sensitive"
        return [Event(t, "set_reward", other)], None, f"preset -> {other!r} at request {t}"
    return [], None, "stationary"


def _aiq_between(points: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """AIQ of ``points`` on the cost range [lo, hi]: the mean over the range of the best quality
    reachable at or below each cost (0 below the cheapest point), RouterBench's convention on a
    range shared with another curve so that the two numbers compare."""
    from uniscale.lab.replay import aiq

    below = [q for c, q in points if c <= lo]
    inside = [(c, q) for c, q in points if lo < c <= hi]
    start = [(lo, max(below))] if below else [(lo, 0.0)]
    return aiq([*start, *inside, (hi, -np.inf)]) if hi > lo else aiq(start)


def _replay(args: argparse.Namespace) -> int:
    from uniscale.lab import replay, report
    from uniscale.lab.plot import chart
    from uniscale.lab.progress import progress_bar
    from uniscale.lab.replay import LearnerSpec, Scales, default_reference
    from uniscale.policy import QualityFloor

    if args.requests is not None and args.requests < 2:
        raise SystemExit("error: --requests must be >= 2")
    if args.seeds < 1:
        raise SystemExit("error: --seeds must be >= 1")
    if not 0.0 <= args.agreement_weight <= 1.0:
        raise SystemExit("error: --agreement-weight must be in [0, 1]")
    if args.agreement_weight > 0 and args.table in ("sim", "mmlu-pro"):
        raise SystemExit(
            f"error: --agreement-weight needs recorded samples to vote over; --table "
            f"{args.table} has none"
        )
    if args.budget is not None and not args.budget > 0:
        raise SystemExit("error: --budget must be > 0 (USD per request)")
    if not (np.isfinite(args.pacing_carryover) and args.pacing_carryover >= 0):
        raise SystemExit("error: --pacing-carryover must be finite and >= 0")
    src = source(args, args.models)
    if args.warm_start is not None:
        from uniscale.lab.calibrate import replay_warm_start

        return replay_warm_start(args, src)
    out = Path(args.out)
    if not (np.isfinite(args.alpha) and args.alpha >= 0):
        raise SystemExit("error: --alpha must be finite and >= 0")
    learner_kw: dict[str, Any] = {"learner": args.learner, "alpha": args.alpha}
    if args.cost_exploration:
        learner_kw["cost_exploration"] = True
    kw: dict[str, Any] = dict(learner_kw)
    if args.budget is not None:
        kw["budget_per_request_usd"] = args.budget
        kw["pacing_carryover"] = args.pacing_carryover
    weights = COST_WEIGHTS if args.curve else ()
    per_seed: list[list[replay.RunResult]] = []
    tables: list[OutcomeTable] = []
    curve: dict[float, list[tuple[float, float]]] = {w: [] for w in weights}
    fixed_points: list[list[tuple[float, float]]] = []

    def table_for(seed: int) -> OutcomeTable:
        t = src.table(seed)
        return t if args.request_features else t.without_request_features()

    first = table_for(0)
    events, initial, described = _scenario(args.scenario, first, args.reward)
    if args.baseline is not None:
        if not (np.isfinite(args.conservative_delta) and 0 <= args.conservative_delta < 1):
            raise SystemExit("error: --conservative-delta must be in [0, 1)")
        try:
            kw["baseline"] = replay.parse_action(args.baseline, first.actions)
        except ValueError as e:
            raise SystemExit(f"error: --baseline: {e}") from None
        kw["conservative_delta"] = args.conservative_delta
    if args.objective == "quality-floor":
        if not (np.isfinite(args.tolerance) and args.tolerance >= 0):
            raise SystemExit("error: --tolerance must be finite and >= 0")
        try:
            ref = (
                replay.parse_action(args.reference, first.actions)
                if args.reference is not None
                else default_reference(first.actions, src.models)
            )
        except ValueError as e:
            raise SystemExit(f"error: --reference: {e}") from None
        kw["quality_floor"] = QualityFloor(ref, args.tolerance)
    total = args.seeds * first.n_requests * (3 + len(weights))
    with progress_bar(total, "replay", enabled=not args.quiet) as bar:
        for seed in range(args.seeds):
            table = first if seed == 0 else table_for(seed)
            events, initial, _ = _scenario(args.scenario, table, args.reward)
            results = replay.compare(
                table,
                src.models,
                reward=args.reward,
                events=events,
                initial_models=initial,
                seed=seed,
                progress=bar.update,
                side_observations=args.side_observations,
                agreement_weight=args.agreement_weight,
                **kw,
            )
            per_seed.append(results)
            tables.append(table)
            if seed == 0:
                report.write_charts(results, out, prefix="replay_")
            scales = Scales.from_table(table)
            fixed_points.append(
                [
                    (float(table.cost_usd[:, k].mean()), float(table.quality[:, k].mean()))
                    for k in range(len(table.actions))
                ]
            )
            for w in weights:
                rw = (1.0, w, 0.1 * w)
                _, wts = replay.schedule(table, (), rw)
                r = replay.reward_matrix(table, wts, scales)
                run = replay.run_learner(
                    LearnerSpec("uniscale", table.actions, learner_kw),
                    table,
                    src.models,
                    r,
                    r.max(axis=1),
                    (),
                    scales,
                    rw,
                    progress=bar.update,
                    side_observations=args.side_observations,
                    agreement_weight=args.agreement_weight,
                )
                curve[w].append((float(run.cost_usd.mean()), float(run.quality.mean())))
    rows = report.aggregate(per_seed)
    lines = [
        f"UniScale replay: {src.name}, {args.seeds} seed(s), {len(first.actions)} actions, "
        f"reward {args.reward!r}, scenario {described}"
        + ("" if args.request_features else "; learners see no request features (ablation)"),
        "",
        report.table(rows),
    ]
    target_lines, target_payload = report.targets(per_seed, tables, report.model_prices(src.models))
    lines += ["", "targets (differences are paired: same stream, per request):", *target_lines]
    payload: dict[str, Any] = {
        "table": src.name,
        "seeds": args.seeds,
        "reward": args.reward,
        "scenario": args.scenario,
        "scenario_detail": described,
        "request_features": args.request_features,
        "aggregate": rows,
        "targets": target_payload,
        "per_seed": [[r.summary() for r in res] for res in per_seed],
    }
    if args.budget is not None:
        spend = np.array(
            [next(r for r in res if r.name == "uniscale").cost_usd.mean() for res in per_seed]
        )
        lines += [
            "",
            f"budget: target ${args.budget:.3e}/request; UniScale spent "
            f"${spend.mean():.3e}/request ({100 * spend.mean() / args.budget:.0f}% of target"
            f"{f', std {spend.std():.1e}' if len(spend) > 1 else ''})",
        ]
        payload["budget"] = {
            "target_usd_per_request": args.budget,
            "spent_usd_per_request": spend.tolist(),
            "spent_mean": float(spend.mean()),
            "ratio": float(spend.mean() / args.budget),
        }
    if weights:
        pts = [
            (
                w,
                float(np.mean([c for c, _ in curve[w]])),
                float(np.mean([q for _, q in curve[w]])),
            )
            for w in weights
        ]
        fixed = [
            (float(np.mean(c)), float(np.mean(q)))
            for c, q in (zip(*col, strict=True) for col in zip(*fixed_points, strict=True))
        ]
        uni = [(c, q) for _, c, q in pts]
        uni_aiq = replay.aiq(uni)
        lo, hi = min(c for c, _ in uni), max(c for c, _ in uni)
        fixed_aiq = _aiq_between(fixed, lo, hi)
        lines += ["", "quality-cost curve (UniScale, reward = (1, w_c, 0.1 w_c)):"]
        lines += [f"  w_c={w:<5g} $/request {c:.3e}  accuracy {q:.3f}" for w, c, q in pts]
        lines.append(
            f"AIQ (RouterBench) over UniScale's cost range [{lo:.2e}, {hi:.2e}] $/request: "
            f"UniScale {uni_aiq:.3f}, frontier of fixed actions {fixed_aiq:.3f}"
        )
        frontier = sorted(fixed)
        best = -np.inf
        fx, fy = [], []
        for c, q in frontier:
            best = max(best, q)
            fx.append(c)
            fy.append(best)
        curve_path = chart(
            out / "replay_quality_cost_curve.svg",
            [
                (
                    "UniScale (w_c sweep)",
                    [c for _, c, _ in sorted(pts, key=lambda p: p[1])],
                    [q for _, _, q in sorted(pts, key=lambda p: p[1])],
                ),
                ("fixed-action frontier", fx, fy),
            ],
            title="Accuracy vs cost as the cost weight varies",
            xlabel="dollars per request",
            ylabel="accuracy",
        )
        payload["curve"] = [{"w_c": w, "cost_usd_per_request": c, "accuracy": q} for w, c, q in pts]
        payload["aiq"] = {
            "cost_range_usd_per_request": [lo, hi],
            "uniscale": uni_aiq,
            "fixed_actions": fixed_aiq,
        }
        lines.append(f"wrote {curve_path}")
    js = report.write_json(out / "replay_results.json", payload)
    lines.append(f"wrote {js} and charts under {out}")
    sys.stderr.flush()
    print("\n".join(lines))
    return 0


def _add_replay(sub: Any) -> None:
    r = sub.add_parser(
        "replay",
        help="replay an outcome table through UniScale and the baselines over several seeds",
        description="Streams an outcome table (simulated, or collected with `uniscale "
        "collect`) through UniScale, routing-only, TTS-only, best-fixed, random and oracle for "
        "several seeds; prints mean ± std over seeds, the quality-cost curve as the cost "
        "weight varies with its RouterBench AIQ, and (with --budget) spend vs target; writes "
        "JSON and SVG charts.",
    )
    add_table_args(r)
    r.add_argument(
        "--models",
        default=None,
        help="comma-separated models to replay (default: those recorded on >= 90%% of items)",
    )
    r.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per stream (sim default 3000; PATH default all)",
    )
    r.add_argument("--seeds", type=int, default=3, help="number of seeds 0..K-1 (default 3)")
    r.add_argument(
        "--learner",
        choices=["shared", "disjoint"],
        default="shared",
        help="the learners' quality model (default shared: one model over request x action "
        "features)",
    )
    r.add_argument(
        "--alpha", type=float, default=0.3, help="LinUCB exploration width (default 0.3)"
    )
    r.add_argument(
        "--side-observations",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="every learner also learns the sub-actions a sampled run contains (the first 2 "
        "of 8 samples are a self-consistency-2 run; Policy.observe with weight 0.5, "
        "uniscale.outcomes.SIDE_OBSERVATION_WEIGHT); off by default: it helps on the real "
        "table but makes the simulator benchmark worse (docs/side_observations.md)",
    )
    r.add_argument(
        "--agreement-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="the learners learn from (1 - W) x correctness + W x the run's agreement (the "
        "vote share of its answer; one sample: its token probability), a dense label-free "
        "reward term; results are scored on correctness (default 0; 1: label-free; collected "
        "tables only; docs/results.md)",
    )
    r.add_argument(
        "--cost-exploration",
        action="store_true",
        help="the learners treat cost and latency as uncertain (Policy(cost_exploration=True): "
        "pooled across models, optimistic for arms with little data); off by default "
        "(docs/cost_uncertainty.md)",
    )
    r.add_argument(
        "--no-request-features",
        dest="request_features",
        action="store_false",
        help="ablation: the learners see every request as the same (features replaced by a "
        "constant), so they learn which actions are good, not for which requests",
    )
    r.add_argument("--reward", default="cost_sensitive", choices=PRESET_NAMES, help="reward preset")
    r.add_argument(
        "--baseline",
        default=None,
        metavar="MODEL[/STRATEGY/N]",
        help="the action a team serves today: also replay it alone and UniScale in "
        "conservative mode around it (Policy.set_baseline), and report whether the promise "
        "'never more than DELTA x the baseline's cumulative reward below it' held at every "
        "request",
    )
    r.add_argument(
        "--conservative-delta",
        type=float,
        default=0.05,
        metavar="DELTA",
        help="with --baseline: the share of the baseline's cumulative reward conservative mode "
        "may give up while exploring (default 0.05)",
    )
    r.add_argument(
        "--objective",
        choices=["reward", "quality-floor"],
        default="reward",
        help="'quality-floor' also replays UniScale in quality-floor mode (as good as "
        "--reference, for as little as possible; Policy.set_quality_floor) and the reference "
        "alone, and reports accuracy vs the reference, cost saved, the share served by the "
        "reference and whether the floor held",
    )
    r.add_argument(
        "--reference",
        default=None,
        metavar="MODEL[/STRATEGY/N]",
        help="with --objective quality-floor: the action whose quality to keep (default: the "
        "priciest model answering once)",
    )
    r.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="with --objective quality-floor: quality per request the floor may give up "
        "(default 0.01)",
    )
    r.add_argument(
        "--scenario",
        default="stationary",
        choices=SCENARIOS,
        help="mid-stream event: the most accurate model retired (model_removed) or added "
        "(model_added), or the preset switched (preset_switched); default stationary",
    )
    r.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="USD_PER_REQUEST",
        help="run the learners with this long-run spend target and report spend vs target",
    )
    r.add_argument(
        "--pacing-carryover",
        type=float,
        default=100.0,
        metavar="REQUESTS",
        help="with --budget: requests' worth of unspent budget kept as credit (default 100; 0 "
        "forgets what was not spent)",
    )
    r.add_argument(
        "--no-curve",
        dest="curve",
        action="store_false",
        help=f"skip the quality-cost sweep (w_c in {list(COST_WEIGHTS)}; run without --budget)",
    )
    from uniscale.lab.calibrate import add_replay_args

    add_replay_args(r)
    r.add_argument("--out", default="uniscale-replay", help="output directory")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_replay)


def _add_calibrate_floor(sub: Any) -> None:
    f = sub.add_parser(
        "calibrate-floor",
        help="the quality-floor tolerance that yields a target share of reference calls, or "
        "the share a tolerance yields",
        description="Replays quality-floor mode on an outcome table (a few seeds per probe) "
        "and reports the share served by the reference, the cost saved and the accuracy given "
        "up; with --share, bisects the tolerance that brings the reference's share down to "
        "it (RouteLLM-style threshold calibration).",
    )
    add_table_args(f)
    f.add_argument("--requests", type=int, default=None, help="stream length (default: all)")
    f.add_argument("--seeds", type=int, default=3, help="seeds per probe (default 3)")
    f.add_argument("--reference", default=None, metavar="MODEL[/STRATEGY/N]")
    f.add_argument("--share", type=float, default=None, help="target share of reference calls")
    f.add_argument("--tolerance", type=float, default=None, help="report this tolerance")
    f.add_argument("--max-tolerance", type=float, default=0.2, help="bisection bracket (0.2)")
    f.add_argument("--steps", type=int, default=6, help="bisection halvings (6)")
    f.set_defaults(func=_calibrate_floor)


def _calibrate_floor(args: argparse.Namespace) -> int:
    from uniscale._core import ConfigError
    from uniscale.lab import floor_calibrate as fc
    from uniscale.lab import replay
    from uniscale.lab.progress import progress_bar

    if (args.share is None) == (args.tolerance is None):
        raise SystemExit("error: give exactly one of --share and --tolerance")
    src = source(args)
    ref = None
    if args.reference is not None:
        try:
            ref = replay.parse_action(args.reference, src.table(0).actions)
        except ValueError as e:
            raise SystemExit(f"error: --reference: {e}") from None
    probes = 1 if args.tolerance is not None else 2 + args.steps
    try:
        with progress_bar(probes * args.seeds, desc="calibrate-floor") as bar:
            if args.tolerance is not None:
                point = fc.floor_point(
                    src, args.tolerance, seeds=args.seeds, reference=ref, progress=bar.update
                )
                points = [point]
            else:
                point, points = fc.tolerance_for_share(
                    src,
                    args.share,
                    seeds=args.seeds,
                    reference=ref,
                    max_tolerance=args.max_tolerance,
                    steps=args.steps,
                    progress=bar.update,
                )
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    print(src.name)
    print(fc.format_points(points, point if args.share is not None else None))
    if args.share is not None:
        met = point.served_by_reference <= args.share
        print(
            f"tolerance {point.tolerance:.4f} serves {point.served_by_reference:.1%} of requests "
            f"with the reference (target {args.share:.1%}"
            + ("" if met else f"; not reached below --max-tolerance {args.max_tolerance}")
            + ")"
        )
    return 0
