"""What several lab subcommands share: the ``--table`` family of arguments and the outcome
stream they name (`source`), ``--price`` parsing, the preset names."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from uniscale._core import REWARD_PRESETS

if TYPE_CHECKING:
    from uniscale.lab.datasets import Source

#: The reward presets, for ``choices=`` (defined in Rust).
PRESET_NAMES = tuple(REWARD_PRESETS)


def parse_prices(items: Sequence[str]) -> dict[str, tuple[float, float]]:
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


def source(args: argparse.Namespace, models: str | None = None) -> Source:
    """The `uniscale.lab.datasets.Source` named by ``--table`` / ``--items`` / ``--price`` /
    ``--parallelism`` / ``--requests`` (``models``: comma-separated, default by coverage); bad
    input exits with a one-line error."""
    from uniscale.lab import datasets

    features: str = getattr(args, "features", "default")
    if args.table == "sim":
        if features != "default":
            raise SystemExit("error: --features: the simulator has its own features")
        return datasets.sim_source(args.requests or 3000)
    if features == "embed+category" and args.table != "mmlu-pro":
        raise SystemExit("error: --features embed+category: only for --table mmlu-pro")
    if args.table == "mmlu-pro":
        try:
            return datasets.mmlu_pro_source(
                prices=parse_prices(args.price),
                models=models.split(",") if models else None,
                n_requests=args.requests,
                features="category"
                if features == "default"
                else ("embed" if features == "embed" else "embed+category"),
            )
        except datasets.DataError as exc:
            raise SystemExit(f"error: --table {args.table}: {exc}") from None
    path = datasets.REAL_TABLE if args.table == "real" else Path(args.table)
    try:
        src = datasets.collected_source(
            path,
            args.items or datasets.ITEMS,
            prices=parse_prices(args.price),
            models=models.split(",") if models else None,
            parallelism=args.parallelism,
            n_requests=args.requests,
            features="hash" if features == "default" else "embed",
        )
    except datasets.DataError as exc:
        raise SystemExit(f"error: --table {args.table}: {exc}") from None
    for model, why in src.excluded.items():
        logging.getLogger(__name__).warning("left out %s: %s", model, why)
    return src


def add_table_args(p: argparse.ArgumentParser) -> None:
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
    p.add_argument(
        "--features",
        default="default",
        choices=["default", "embed", "embed+category"],
        help="request features the learners see: default (collected tables: 64 hashed "
        "features; mmlu-pro: the category, one-hot), embed (a 16-dimensional static sentence "
        "embedding of the prompt, uniscale.embed; needs the tokenizers package), "
        "embed+category (mmlu-pro only: both)",
    )
