"""The ``uniscale`` command line.

``uniscale demo``       replay the packaged real outcome table through UniScale and the baselines
                        (no network, no server, no API key; ``--sim`` for the simulator).
``uniscale replay``     stream an outcome table (the packaged real one, the simulator, or a
                        collected file) through UniScale and the baselines over several seeds;
                        quality-cost curve, AIQ, budget check.
``uniscale collect``    record a full-information outcome table from real endpoints.
``uniscale calibrate``  run K items through every action once, for a warm start.
``uniscale ope``        off-policy estimates of a target policy's mean reward from a decision log.
``uniscale ope-check``  the same estimators checked against replay ground truth on a table.
``uniscale plan``       operating points on the 3-D accuracy x cost x latency front.
``uniscale serve``      an OpenAI-compatible routing proxy (the ``[serve]`` extra).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the heavy modules load inside the subcommands: `--help` stays fast
    from uniscale.lab.datasets import Source
    from uniscale.outcomes import OutcomeTable

SCENARIOS = ("stationary", "model_removed", "model_added", "preset_switched")
PRESET_NAMES = ("cost_sensitive", "quality_priority", "balanced")
#: Requests of the MMLU-Pro table the default demo streams (a prefix keeps it to seconds).
MMLU_PRO_DEMO_REQUESTS = 3000

#: Cost weights of the quality-cost sweep (reward = (1, w_c, 0.1 w_c)).
COST_WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)


def _demo(args: argparse.Namespace) -> int:
    from uniscale.lab.datasets import DataError
    from uniscale.lab.demo import run_demo

    # By default both built-in real tables: the CPU table (models x test-time scaling) and a
    # prefix of the MMLU-Pro routing table (8 models, one answer each), in ./out/mmlu-pro.
    runs: list[tuple[str | None, int | None, Path]] = [(args.table, args.requests, Path(args.out))]
    if args.table is None and not args.sim:
        runs.append(
            ("mmlu-pro", args.requests or MMLU_PRO_DEMO_REQUESTS, Path(args.out) / "mmlu-pro")
        )
    headlines = []
    try:
        for i, (table, n, out) in enumerate(runs):
            if i:
                print()
            res = run_demo(
                n,
                seed=args.seed,
                seeds=args.seeds,
                out_dir=out,
                reward=args.reward,
                sim=args.sim,
                table=table,
            )
            headlines.append(res["headline"])
    except (DataError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if len(headlines) > 1:
        print("\n" + "\n".join(headlines))
    return 0


# --------------------------------------------------------------------------------------------
# replay


def _parse_prices(items: Sequence[str]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        parts = rest.split(",")
        try:
            if not sep or len(parts) != 2:
                raise ValueError
            out[name.strip()] = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise SystemExit(
                f"error: --price {item!r}: expected NAME=IN,OUT (USD per Mtok)"
            ) from None
    return out


def _source(args: argparse.Namespace, models: str | None = None) -> Source:
    """The `uniscale.lab.datasets.Source` named by ``--table`` / ``--items`` / ``--price`` /
    ``--parallelism`` / ``--requests`` (``models``: comma-separated, default by coverage); bad
    input exits with a one-line error."""
    from uniscale.lab import datasets

    if args.table == "sim":
        return datasets.sim_source(args.requests or 3000)
    if args.table == "mmlu-pro":
        try:
            return datasets.mmlu_pro_source(
                prices=_parse_prices(args.price),
                models=models.split(",") if models else None,
                n_requests=args.requests,
            )
        except datasets.DataError as exc:
            raise SystemExit(f"error: --table {args.table}: {exc}") from None
    path = datasets.REAL_TABLE if args.table == "real" else Path(args.table)
    try:
        src = datasets.collected_source(
            path,
            args.items or datasets.ITEMS,
            prices=_parse_prices(args.price),
            models=models.split(",") if models else None,
            parallelism=args.parallelism,
            n_requests=args.requests,
        )
    except datasets.DataError as exc:
        raise SystemExit(f"error: --table {args.table}: {exc}") from None
    for model, why in src.excluded.items():
        logging.getLogger(__name__).warning("left out %s: %s", model, why)
    return src


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
    if args.budget is not None and not args.budget > 0:
        raise SystemExit("error: --budget must be > 0 (USD per request)")
    if not (np.isfinite(args.pacing_carryover) and args.pacing_carryover >= 0):
        raise SystemExit("error: --pacing-carryover must be finite and >= 0")
    src = _source(args, args.models)
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


# --------------------------------------------------------------------------------------------
# ope


def _ope(args: argparse.Namespace) -> int:
    from uniscale.lab import ope, report
    from uniscale.policy import Policy

    pi: ope.TargetPolicy
    if (args.action is None) == (args.policy is None):
        raise SystemExit("error: give exactly one of --action UID and --policy FILE")
    if args.action is not None:
        pi = ope.fixed_action_target(args.action)
        name = f"fixed action uid {args.action}"
    else:
        pi = ope.PolicyTarget(Policy.load(args.policy), models=args.models or None)
        name = f"frozen policy {args.policy}"
    try:
        res = ope.evaluate(
            args.log,
            pi,
            clip=args.clip,
            level=args.level,
            ci=args.ci,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            weights=args.reward,
        )
    except (ope.OPEError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"target: {name}; log {args.log}\n{res.table()}")
    if args.json:
        report.write_json(args.json, {"target": name, **res.summary()})
    return 0


def _ope_check(args: argparse.Namespace) -> int:
    from uniscale.lab import ope, report

    src = _source(args)
    res = ope.ope_check(
        src.table(args.seed),
        src.models,
        logger_kind=args.logger,
        epsilon=args.epsilon,
        target=args.target,
        target_models=args.models or None,
        reward=args.reward,
        seed=args.seed,
        log_path=args.log_out,
        clip=args.clip,
        level=args.level,
        ci=args.ci,
        n_bootstrap=args.bootstrap,
    )
    print(res.table())
    if res.result.support_deficit > 0:
        print(
            f"note: the target put {res.result.support_deficit:.1%} of its mass on actions the "
            "logger never offered (pruned); the truth and IPS/DR count that mass as reward 0, "
            "SNIPS renormalises it away"
        )
    if args.json:
        report.write_json(args.json, res.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="uniscale",
        description="Learn, per LLM request, which model to call and how much test-time "
        "compute to spend on it.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo",
        help="replay the packaged real-LLM outcome table through UniScale and the baselines "
        "(no network)",
        description="Streams the outcome table recorded from real small LLMs that ships with "
        "UniScale, then the packaged MMLU-Pro routing table, through UniScale, routing-only, "
        "TTS-only, best-fixed, random and oracle policies for a few seeds; prints each "
        "comparison, the targets and a one-line headline (does UniScale beat the best fixed "
        "action?) and writes JSON and SVG charts (MMLU-Pro's under OUT/mmlu-pro). Needs no "
        "network, server or API key.",
    )
    d.add_argument(
        "--requests",
        type=int,
        default=None,
        help="stream length (default: every recorded item; --sim: 6000; the MMLU-Pro part of "
        f"the default demo: its first {MMLU_PRO_DEMO_REQUESTS} questions in each seed's order)",
    )
    d.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    d.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    d.add_argument(
        "--sim", action="store_true", help="stream the built-in simulator instead of real data"
    )
    d.add_argument(
        "--table",
        default=None,
        help="a collected table instead of the packaged one, or 'mmlu-pro' for the packaged "
        "MMLU-Pro routing table",
    )
    d.add_argument(
        "--out", default="uniscale-demo", help="output directory (default ./uniscale-demo)"
    )
    d.add_argument(
        "--reward",
        default="quality_priority",
        choices=["cost_sensitive", "quality_priority", "balanced"],
        help="reward preset (default quality_priority: with these small models the "
        "cost-sensitive weights make the cheapest model answering once the best action on "
        "almost every question, so there is little to choose)",
    )
    d.set_defaults(func=_demo)
    from uniscale.lab.collect import register as register_collect

    register_collect(sub)
    from uniscale.lab.calibrate import register as register_calibrate

    register_calibrate(sub)
    _add_replay(sub)
    _add_ope(sub)
    from uniscale.lab.plan_cli import register as register_plan

    register_plan(sub)
    from uniscale.serve.main import register as register_serve

    register_serve(sub)
    return p


def _add_table_args(p: argparse.ArgumentParser) -> None:
    """--table / --items / --price / --parallelism: which outcome table a command streams."""
    p.add_argument(
        "--table",
        default="real",
        help="'real' (default: the packaged table recorded from real LLMs), 'sim' (the "
        "built-in simulator, a fresh stream per seed), 'mmlu-pro' (the packaged routing table "
        "from MMLU-Pro's published outputs: 8 models, one answer each, 14 categories) or the "
        "path of a collected table (.jsonl or exported .jsonl.gz); order and samples are "
        "shuffled per seed",
    )
    p.add_argument(
        "--items", default=None, help="item file of a collected table (default: packaged items)"
    )
    p.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="NAME=IN,OUT",
        help="USD per million input/output tokens of a collected model (repeatable; default "
        "uniscale.lab.datasets.DEFAULT_PRICES for the packaged models, the list prices in "
        "mmlu_pro_v1.meta.json for mmlu-pro, else 0)",
    )
    p.add_argument(
        "--parallelism",
        type=int,
        default=1,
        help="samples an endpoint runs at once in replay (default 1, as measured on the "
        "recording CPU servers)",
    )


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
    _add_table_args(r)
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


def _add_ope_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", type=float, default=None, help="cap importance weights at this")
    p.add_argument("--level", type=float, default=0.95, help="CI level (default 0.95)")
    p.add_argument(
        "--ci", choices=["normal", "bootstrap"], default="normal", help="interval method"
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    p.add_argument("--seed", type=int, default=0, help="seed (folds, bootstrap, stream)")
    p.add_argument(
        "--models",
        nargs="*",
        default=[],
        help="restrict a policy target to these models (greedy among their actions)",
    )
    p.add_argument("--json", default=None, help="also write the result as JSON here")


def _add_ope(sub: Any) -> None:
    o = sub.add_parser(
        "ope",
        help="off-policy estimates (IPS, SNIPS, DR) of a target policy from a decision log",
        description="Estimates a target policy's mean reward per request from a Router "
        "DecisionLog (JSONL with features): IPS, self-normalised IPS and doubly robust "
        "(cross-fitted ridge reward model), each with a confidence interval, plus the "
        "effective sample size and weight diagnostics.",
    )
    o.add_argument("--log", required=True, help="decision-log JSONL path")
    o.add_argument("--action", type=int, default=None, help="target: always this action uid")
    o.add_argument(
        "--policy", default=None, help="target: a saved Policy (Policy.save), frozen, greedy"
    )
    o.add_argument(
        "--reward",
        default=None,
        choices=PRESET_NAMES,
        help="re-price logged rewards under this preset (default: the logged reward)",
    )
    _add_ope_common(o)
    o.set_defaults(func=_ope)
    c = sub.add_parser(
        "ope-check",
        help="check IPS/SNIPS/DR against ground truth on the simulated table",
        description="Logs a seeded stream (default: the packaged real table) with an exploring "
        "logger, estimates a "
        "target policy's mean reward from the log alone and prints it against the target's "
        "true mean reward on the same requests (and whether each CI holds it).",
    )
    _add_table_args(c)
    c.add_argument(
        "--requests",
        type=int,
        default=None,
        help="stream length (sim default 3000; a collected table: all of it)",
    )
    c.add_argument(
        "--logger",
        choices=["uniform", "epsilon", "softmax"],
        default="epsilon",
        help="logging policy: uniform random, or UniScale with epsilon/softmax exploration",
    )
    c.add_argument("--epsilon", type=float, default=0.2, help="epsilon of the logger (0.2)")
    c.add_argument(
        "--target",
        choices=["frozen", "best_fixed"],
        default="frozen",
        help="frozen: greedy UniScale trained on the first 30%% of the stream (evaluated on "
        "the rest); best_fixed: the best single action in hindsight",
    )
    c.add_argument("--reward", default="cost_sensitive", choices=PRESET_NAMES)
    c.add_argument("--log-out", default=None, help="also write the log as DecisionLog JSONL")
    _add_ope_common(c)
    c.set_defaults(func=_ope_check)
    f = sub.add_parser(
        "calibrate-floor",
        help="the quality-floor tolerance that yields a target share of reference calls, or "
        "the share a tolerance yields",
        description="Replays quality-floor mode on an outcome table (a few seeds per probe) "
        "and reports the share served by the reference, the cost saved and the accuracy given "
        "up; with --share, bisects the tolerance that brings the reference's share down to "
        "it (RouteLLM-style threshold calibration).",
    )
    _add_table_args(f)
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
    src = _source(args)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
