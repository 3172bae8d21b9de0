"""Terminal tables, JSON results and SVG charts for replay comparisons."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uniscale.lab.plot import PALETTE, chart
from uniscale.lab.replay import RunResult, floor_vs_reference
from uniscale.outcomes import OutcomeTable
from uniscale.space import ModelSpec

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("policy", "policy", "{}"),
    ("reward_total", "reward", "{:,.1f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("cost_usd_per_request", "$/request", "{:.3e}"),
    ("latency_s_mean", "latency s", "{:.2f}"),
    ("regret_total", "regret", "{:,.1f}"),
)


def table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]] = COLUMNS
) -> str:
    """Fixed-width text table; values may be numbers or (mean, std) pairs."""

    def cell(v: Any, fmt: str) -> str:
        if isinstance(v, tuple) and len(v) == 2:
            return f"{fmt.format(v[0])} ± {fmt.format(v[1])}"
        if isinstance(v, float) and not math.isfinite(v):
            return "-"
        return fmt.format(v) if v is not None else "-"

    header = [title for _, title, _ in columns]
    body = [[cell(r.get(key), fmt) for key, _, fmt in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(b, widths, strict=True))
            )
        )
    return "\n".join(lines)


def aggregate(per_seed: Sequence[Sequence[RunResult]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of every numeric summary field, per policy (the
    TTS-only learner's model may differ by seed; its rows are grouped under ``tts_only``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    order: list[str] = []
    for results in per_seed:
        for r in results:
            key = "tts_only" if r.name.startswith("tts_only") else r.name
            if key not in groups:
                order.append(key)
            groups.setdefault(key, []).append(r.summary())
    out = []
    for key in order:
        rows = groups[key]
        agg: dict[str, Any] = {"policy": key, "seeds": len(rows)}
        for field, value in rows[0].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                vals = np.array([float(r[field]) for r in rows])
                agg[field] = (float(vals.mean()), float(vals.std(ddof=0)))
        names = sorted({str(r["policy"]) for r in rows})
        agg["variants"] = names
        out.append(agg)
    return out


def _spread(v: Sequence[float] | np.ndarray, fmt: str) -> str:
    a = np.asarray(v, dtype=np.float64)
    return f"{fmt.format(a.mean())} ± {fmt.format(a.std())}" if len(a) > 1 else fmt.format(a[0])


def headline(payload: Mapping[str, Any], source: str, reward: str) -> str:
    """One plain sentence: does UniScale beat the best fixed action on this table?

    From the paired per-request reward differences of `targets` (``reward_vs_best_fixed``):
    "beats" only when it is ahead on every seed, "does not beat" when the mean difference is not
    positive, and otherwise "is ahead on average but not on every seed"."""
    rec = payload.get("reward_vs_best_fixed")
    if not rec or not rec["diff_per_request"]:
        return f"HEADLINE ({source}, {reward}): no best-fixed baseline to compare with"
    diffs = np.asarray(rec["diff_per_request"], dtype=np.float64)
    wins, n = int(rec["wins"]), len(diffs)
    if wins == n and diffs.mean() > 0:
        verdict = "BEATS"
    elif diffs.mean() <= 0:
        verdict = "does NOT beat"
    else:
        verdict = "is ahead on average but not on every seed against"
    return (
        f"HEADLINE ({source}, {reward}): UniScale {verdict} the best fixed action: "
        f"{_spread(diffs, '{:+.4f}')} reward per request (paired), ahead on {wins}/{n} seeds"
    )


def model_prices(models: Mapping[str, ModelSpec]) -> dict[str, float]:
    """Input plus output price per model: what `targets` ranks models by to find the largest."""
    return {m: s.price_in_per_mtok + s.price_out_per_mtok for m, s in models.items()}


def targets(
    per_seed: Sequence[Sequence[RunResult]],
    tables: Sequence[OutcomeTable],
    prices: Mapping[str, float],
) -> tuple[list[str], dict[str, Any]]:
    """The replay targets, per seed and with their spread, as report lines and a JSON payload.

    * reward: UniScale's mean reward per request minus each baseline's (routing-only, TTS-only,
      best fixed action in hindsight), and on how many seeds it is ahead;
    * headroom: what routing on the task type gains over the best fixed action when each type's
      action is chosen out of sample (``best_per_kind_xfit``), the most a learner can expect,
      and how much of that test-time scaling adds (against ``best_per_kind_xfit_n1``);
    * accuracy at cost: UniScale's accuracy minus that of the most accurate fixed
      ``(model, strategy, n)`` action whose mean cost is no higher than UniScale's;
    * cost at accuracy: the largest model (highest ``prices`` value) answering once: its
      accuracy and cost against UniScale's.
    ``per_seed[i]`` are the results of `uniscale.lab.replay.compare` on ``tables[i]``.
    """
    lines: list[str] = []
    payload: dict[str, Any] = {}
    unis = [next(r for r in res if r.name == "uniscale") for res in per_seed]
    n = len(unis)
    for base in ("routing_only", "tts_only", "best_fixed"):
        diffs = []
        for res, u in zip(per_seed, unis, strict=True):
            b = next((r for r in res if r.name.startswith(base)), None)
            if b is not None:
                diffs.append(float(u.reward.mean() - b.reward.mean()))
        if not diffs:
            continue
        wins = sum(d > 0 for d in diffs)
        payload[f"reward_vs_{base}"] = {"diff_per_request": diffs, "wins": wins}
        lines.append(
            f"reward vs {base:<12} {_spread(diffs, '{:+.4f}')} per request; "
            f"UniScale ahead on {wins}/{len(diffs)} seeds"
        )
    cons = [next((r for r in res if r.name == "uniscale_conservative"), None) for res in per_seed]
    if cons and all(c is not None for c in cons):
        lines.extend(_conservative_lines(per_seed, [c for c in cons if c is not None], payload))
    floors = [next((r for r in res if r.name == "uniscale_floor"), None) for res in per_seed]
    if floors and all(f is not None for f in floors):
        lines.extend(_floor_lines(per_seed, [f for f in floors if f is not None], payload))
    for a_name, b_name, key, text in (
        (
            "best_per_kind_xfit",
            "best_fixed",
            "headroom_per_kind_xfit_vs_best_fixed",
            "headroom: the best action per task type, chosen out of sample, vs best_fixed:",
        ),
        (
            "best_per_kind_xfit",
            "best_per_kind_xfit_n1",
            "tts_value_per_kind_xfit_vs_n1",
            "the same router with test-time scaling vs one sample per model:",
        ),
    ):
        gap = [
            float(a.reward.mean() - b.reward.mean())
            for res in per_seed
            for a in res
            if a.name == a_name
            for b in res
            if b.name == b_name
        ]
        if gap:
            payload[key] = {"diff_per_request": gap}
            lines.append(f"{text} {_spread(gap, '{:+.4f}')} per request")
    acc_gap, acc_rows = [], []
    for table, u in zip(tables, unis, strict=True):
        cost = table.cost_usd.mean(axis=0)
        acc = table.quality.mean(axis=0)
        ok = np.flatnonzero(cost <= u.cost_usd.mean() * (1 + 1e-12))
        if len(ok) == 0:
            continue
        k = int(ok[np.argmax(acc[ok])])
        acc_gap.append(float(u.quality.mean() - acc[k]))
        acc_rows.append({"action": str(table.actions[k]), "accuracy": float(acc[k])})
    if acc_gap:
        held = sum(g >= 0 for g in acc_gap)
        payload["accuracy_vs_best_action_at_cost"] = {
            "diff": acc_gap,
            "held": held,
            "actions": acc_rows,
        }
        lines.append(
            f"accuracy vs the most accurate fixed action costing no more: "
            f"{_spread(acc_gap, '{:+.3f}')}; at least as high on {held}/{len(acc_gap)} seeds"
        )
    if prices:
        largest = max(prices, key=lambda m: prices[m])
        rows = []
        for table, u in zip(tables, unis, strict=True):
            col = next(
                (i for i, a in enumerate(table.actions) if a.model == largest and a.n == 1), None
            )
            if col is None:
                continue
            rows.append(
                (
                    float(table.quality[:, col].mean()),
                    float(table.cost_usd[:, col].mean()),
                    float(u.quality.mean()),
                    float(u.cost_usd.mean()),
                )
            )
        if rows:
            a = np.array(rows)
            held = int(np.sum((a[:, 2] >= a[:, 0]) & (a[:, 3] < a[:, 1])))
            payload["vs_largest_model_n1"] = {
                "model": largest,
                "accuracy": a[:, 0].tolist(),
                "cost_usd_per_request": a[:, 1].tolist(),
                "uniscale_accuracy": a[:, 2].tolist(),
                "uniscale_cost_usd_per_request": a[:, 3].tolist(),
                "held": held,
            }
            lines.append(
                f"vs {largest} answering once: accuracy {_spread(a[:, 0], '{:.3f}')} at "
                f"${a[:, 1].mean():.2e}/request; UniScale {_spread(a[:, 2], '{:.3f}')} at "
                f"${a[:, 3].mean():.2e}/request (as accurate and cheaper on {held}/{n} seeds)"
            )
    return lines, payload


def _conservative_lines(
    per_seed: Sequence[Sequence[RunResult]], runs: Sequence[RunResult], payload: dict[str, Any]
) -> list[str]:
    """Conservative mode against its baseline: paired reward difference, on how many seeds the
    promise held at every request, and how many requests left the baseline."""
    bases = [next(r for r in res if r.name == "baseline") for res in per_seed]
    diffs = [float(c.reward.mean() - b.reward.mean()) for c, b in zip(runs, bases, strict=True)]
    held = sum(bool(c.extra["promise_held"]) for c in runs)
    explored = [int(c.extra.get("non_baseline", 0)) for c in runs]
    delta, base_name = runs[0].extra["delta"], runs[0].extra["baseline"]
    payload["conservative"] = {
        "baseline": base_name,
        "delta": delta,
        "diff_per_request_vs_baseline": diffs,
        "promise_held": held,
        "min_margin": [float(c.extra["promise_min_margin"]) for c in runs],
        "non_baseline_requests": explored,
    }
    return [
        f"conservative mode around {base_name} (delta {delta:g}): reward vs the baseline "
        f"{_spread(diffs, '{:+.4f}')} per request; promise held at every request on "
        f"{held}/{len(runs)} seeds; {np.mean(explored):.0f} of {len(runs[0].reward)} requests "
        "not served by the baseline (mean)"
    ]


def _floor_lines(
    per_seed: Sequence[Sequence[RunResult]], runs: Sequence[RunResult], payload: dict[str, Any]
) -> list[str]:
    """Quality-floor mode against its reference: accuracy, cost saved, share served by the
    reference and on how many seeds the floor held at every request."""
    refs = [next(r for r in res if r.name == "reference") for res in per_seed]
    pairs = [floor_vs_reference(f, b) for f, b in zip(runs, refs, strict=True)]
    acc = [a for a, _ in pairs]
    saved = [c for _, c in pairs]
    share = [float(f.extra["served_by_reference"]) for f in runs]
    held = sum(bool(f.extra["floor_held"]) for f in runs)
    ref_name, tol = runs[0].extra["reference"], runs[0].extra["tolerance"]
    payload["quality_floor"] = {
        "reference": ref_name,
        "tolerance": tol,
        "accuracy_vs_reference": acc,
        "cost_saved": saved,
        "served_by_reference": share,
        "floor_held": held,
        "min_margin": [float(f.extra["floor_min_margin"]) for f in runs],
    }
    return [
        f"quality floor (reference {ref_name}, tolerance {tol:g}): accuracy vs the reference "
        f"{_spread(acc, '{:+.4f}')}; cost saved {_spread([100 * v for v in saved], '{:.1f}')}%; "
        f"served by the reference {_spread([100 * v for v in share], '{:.0f}')}%; floor held "
        f"at every request on {held}/{len(runs)} seeds"
    ]


def write_charts(results: Sequence[RunResult], out_dir: str | Path, prefix: str = "") -> list[Path]:
    """Accuracy-vs-cost points and cumulative regret curves for one stream. The random policy
    is left out of both (it is off the scale of everything else); colours follow the policy
    order, so the two charts agree."""
    out = Path(out_dir)
    colors = {r.name: PALETTE[i % len(PALETTE)] for i, r in enumerate(results)}
    shown = [r for r in results if r.name != "random"]
    paths = [
        chart(
            out / f"{prefix}quality_vs_cost.svg",
            [(r.name, [float(r.cost_usd.mean())], [float(r.quality.mean())]) for r in shown],
            title="Accuracy vs cost per request (random policy omitted)",
            xlabel="dollars per request",
            ylabel="accuracy",
            mode="points",
            colors=colors,
        ),
        chart(
            out / f"{prefix}cumulative_regret.svg",
            [
                (r.name, list(range(1, len(r.reward) + 1)), r.cumulative_regret().tolist())
                for r in shown
                if r.name != "oracle"
            ],
            title="Cumulative regret against the per-request oracle (random omitted)",
            xlabel="requests",
            ylabel="cumulative regret",
            colors=colors,
        ),
    ]
    return paths


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return p


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
