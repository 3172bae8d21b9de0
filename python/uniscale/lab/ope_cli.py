"""``uniscale ope`` and ``uniscale ope-check``: off-policy estimates from a decision log, and
the same estimators checked against replay ground truth (`uniscale.lab.ope`)."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import Any

from uniscale.lab.cli_common import PRESET_NAMES, add_table_args, source


def register(sub: Any) -> None:
    """Adds ``ope`` and ``ope-check`` to the ``uniscale`` subcommands."""
    _add_ope(sub)


def _ope(args: argparse.Namespace) -> int:
    from uniscale.lab import ope, report
    from uniscale.policy import Policy
    from uniscale.router import read_decision_log

    pi: ope.TargetPolicy
    if (args.action is None) == (args.policy is None):
        raise SystemExit("error: give exactly one of --action UID and --policy FILE")
    if args.action is not None:
        pi = ope.fixed_action_target(args.action)
        name = f"fixed action uid {args.action}"
    else:
        pi = ope.PolicyTarget(Policy.load(args.policy), models=args.models or None)
        name = f"frozen policy {args.policy}"
    logs: list[str] = args.log
    seen: dict[str, str] = {}
    for p in logs:
        key = os.path.realpath(p)
        if key in seen:
            print(f"error: --log names {seen[key]} twice", file=sys.stderr)
            return 2
        seen[key] = p
    records: Any = (
        logs[0]
        if len(logs) == 1
        else itertools.chain.from_iterable(read_decision_log(p) for p in logs)
    )
    try:
        res = ope.evaluate(
            records,
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
    print(f"target: {name}; log {', '.join(logs)}\n{res.table()}")
    if args.json:
        report.write_json(args.json, {"target": name, **res.summary()})
    return 0


def _ope_check(args: argparse.Namespace) -> int:
    from uniscale.lab import ope, report

    src = source(args)
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
    o.add_argument(
        "--log",
        required=True,
        nargs="+",
        help="decision-log JSONL path(s), read as one log: e.g. the per-worker logs of "
        "uniscale serve --workers, or a log and its rotated files",
    )
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
    add_table_args(c)
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
