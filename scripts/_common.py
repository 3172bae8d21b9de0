"""Shared by the analysis scripts (run as ``python scripts/<name>.py``, which puts this folder
on ``sys.path``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: the reward presets, from the most cost-minded to the most quality-minded
PRESETS = ("cost_sensitive", "balanced", "quality_priority")


def seeds_parser(doc: str, *, seeds: int, out: str) -> argparse.ArgumentParser:
    """The command line of a script that replays ``--seeds`` seeds and writes a markdown file
    (``--out``); its description is the first line of the script's docstring ``doc``."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=seeds)
    ap.add_argument("--out", default=out)
    return ap


def pm(values: Sequence[float] | np.ndarray, *, se: bool = True) -> str:
    """``mean ± spread`` of ``values``: the standard error (``se``), else the standard
    deviation (both with ``ddof=0``)."""
    v = np.asarray(values, dtype=float)
    spread = v.std() / np.sqrt(len(v)) if se else v.std()
    return f"{v.mean():+.4f} ± {spread:.4f}"


def markdown_table(intro: str, header: Sequence[str], rows: Sequence[str]) -> str:
    """A paragraph ``intro``, then a markdown table of ``header`` and the ready-made ``rows``."""
    return "\n".join(
        [
            intro,
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *rows,
            "",
        ]
    )


def write_report(out: str | Path, text: str) -> None:
    """Write ``text`` to ``out`` (UTF-8, making its folder) and print it."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(text)
