"""Prior sensitivity of the default policy, with and without cost exploration.

For each packaged table, every model's `ModelSpec` cost/latency priors are set to what the table
shows (``prior_output_tokens`` = the model's mean output tokens answering once,
``latency_out_s_per_token`` = its latency per output token; "x1"), or that times 0.1 or 10 for
every model, or the library defaults (256 tokens, 20 ms per token: what `uniscale replay` uses).
UniScale (default policy, ``cost_exploration`` off and on) is replayed on the same streams under
each, and its mean reward per request is compared, paired per request, with the x1 run of the
same variant. The issue's target: within a few percent of the correct-prior run.

    python scripts/prior_sensitivity.py [--seeds 5] [--tables mmlu-pro,real] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Mapping

import numpy as np

from uniscale.lab import datasets, replay
from uniscale.lab.replay import LearnerSpec
from uniscale.outcomes import OutcomeTable
from uniscale.space import ModelSpec

PRESETS = ("cost_sensitive", "balanced", "quality_priority")
PRIORS = ("x1", "x0.1", "x10", "defaults")


def fitted(table: OutcomeTable, models: Mapping[str, ModelSpec]) -> dict[str, ModelSpec]:
    """Each model's priors set to what the table shows for it answering once."""
    out: dict[str, ModelSpec] = {}
    for name, spec in models.items():
        cols = [i for i, a in enumerate(table.actions) if a.model == name and a.n == 1]
        col = cols[0]
        tokens = float(table.output_tokens[:, col].mean())
        lat = float(table.latency_s[:, col].sum())
        per_token = lat / max(float(table.output_tokens[:, col].sum()), 1.0)
        out[name] = dataclasses.replace(
            spec,
            prior_output_tokens=max(tokens, 1.0),
            latency_out_s_per_token=per_token,
            latency_in_s_per_token=0.0 if lat == 0 else spec.latency_in_s_per_token,
        )
    return out


def scaled(models: Mapping[str, ModelSpec], f: float) -> dict[str, ModelSpec]:
    return {
        n: dataclasses.replace(
            s,
            prior_output_tokens=s.prior_output_tokens * f,
            latency_out_s_per_token=s.latency_out_s_per_token * f,
            latency_in_s_per_token=s.latency_in_s_per_token * f,
        )
        for n, s in models.items()
    }


def source(name: str) -> datasets.Source:
    if name == "mmlu-pro":
        return datasets.mmlu_pro_source()
    return datasets.collected_source(datasets.REAL_TABLE, datasets.ITEMS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--tables", default="mmlu-pro,real")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)
    lines = [
        "| table | preset | cost exploration | priors | reward / request | vs x1 (paired) "
        "| vs best fixed (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    t0 = time.time()
    for tname in args.tables.split(","):
        src = source(tname)
        base = fitted(src.table(0), src.models)
        variants = {
            "x1": base,
            "x0.1": scaled(base, 0.1),
            "x10": scaled(base, 10.0),
            "defaults": dict(src.models),
        }
        for preset in PRESETS:
            for on in (False, True):
                rewards: dict[str, list[np.ndarray]] = {p: [] for p in PRIORS}
                fixed: list[np.ndarray] = []
                for seed in range(args.seeds):
                    table = src.table(seed)
                    for pname, models in variants.items():
                        spec = LearnerSpec("uniscale", table.actions, {"cost_exploration": on})
                        res = replay.compare(
                            table, models, reward=preset, seed=seed, learners=[spec]
                        )
                        run = next(r for r in res if r.name == "uniscale")
                        rewards[pname].append(run.reward)
                        if pname == "x1":
                            fixed.append(next(r for r in res if r.name == "best_fixed").reward)
                for pname in PRIORS:
                    mean = [r.mean() for r in rewards[pname]]
                    ref = rewards["x1"]
                    diff = [(a - b).mean() for a, b in zip(rewards[pname], ref, strict=True)]
                    vs_fixed = [(a - b).mean() for a, b in zip(rewards[pname], fixed, strict=True)]
                    lines.append(
                        f"| {tname} | {preset} | {'on' if on else 'off'} | {pname} | "
                        f"{np.mean(mean):+.4f} | {np.mean(diff):+.4f} ± {np.std(diff):.4f} | "
                        f"{np.mean(vs_fixed):+.4f} ± {np.std(vs_fixed):.4f} |"
                    )
                print(lines[-4:], file=sys.stderr, flush=True)
    text = "\n".join(lines)
    print(text)
    print(f"\n{args.seeds} seeds, {time.time() - t0:.0f} s", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(f"`python scripts/prior_sensitivity.py --seeds {args.seeds}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
