"""The ``uniscale`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from uniscale.demo import run_demo

    run_demo(args.requests, seed=args.seed, out_dir=args.out, reward=args.reward)
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
        help="replay a built-in workload through UniScale and the baselines (no network)",
        description="Streams a simulated workload through UniScale, routing-only, TTS-only, "
        "best-fixed, random and oracle policies; prints the comparison and writes JSON and SVG "
        "charts. Needs no network, server or API key.",
    )
    d.add_argument("--requests", type=int, default=6000, help="stream length (default 6000)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument(
        "--out", default="uniscale-demo", help="output directory (default ./uniscale-demo)"
    )
    d.add_argument(
        "--reward",
        default="cost_sensitive",
        choices=["cost_sensitive", "quality_priority", "balanced"],
        help="reward preset (default cost_sensitive)",
    )
    d.set_defaults(func=_demo)
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
