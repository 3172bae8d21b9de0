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

#: Requests of the MMLU-Pro table the default demo streams (a prefix keeps it to seconds).
MMLU_PRO_DEMO_REQUESTS = 3000


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
    # the lab's subcommands: each module imports the heavy ones only when it runs
    from uniscale.lab import ope_cli, replay_cli

    replay_cli.register(sub)
    ope_cli.register(sub)
    replay_cli.register_calibrate_floor(sub)
    from uniscale.lab.plan_cli import register as register_plan

    register_plan(sub)
    from uniscale.serve.main import register as register_serve

    register_serve(sub)
    return p


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
