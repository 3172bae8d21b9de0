"""Plots of a `uniscale.planner.Plan`: a 3-D scatter and three 2-D projections per scenario,
feasible points, the Pareto front and each rule's pick marked.

SVG by hand (the package has no plotting dependency, see `uniscale.plot`): the 3-D view is an
oblique projection of the normalised cube (cost / C_ref, latency / T_ref, accuracy) with C_ref,
T_ref the scenario's limits (or the largest expectations when a limit is open).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from uniscale.lab.plot import chart

if TYPE_CHECKING:
    from uniscale.planner import Plan

#: Marker colours of the rules (the same in every chart).
RULE_COLORS = {
    "accuracy_max": "#d62728",
    "cube": "#ff7f0e",
    "utopia": "#9467bd",
    "knee": "#2ca02c",
    "knee_chord": "#17becf",
    "knee_paper": "#8c564b",
}
GREY, FEASIBLE, FRONT = "#c8c8c8", "#1f77b4", "#000000"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def plot_scenario(plan: Plan, name: str, out_dir: str | Path) -> list[Path]:
    """Writes ``<scenario>_3d.svg`` and the projections cost-accuracy, latency-accuracy and
    cost-latency; returns their paths."""
    s = plan.scenario(name)
    out = Path(out_dir)
    m = plan.mean
    feas, front = set(s.feasible), set(s.front)
    rest = [i for i in range(len(m)) if i not in feas]
    only_feas = [i for i in s.feasible if i not in front]
    groups: list[tuple[str, list[int], str]] = [
        ("infeasible", rest, GREY),
        ("feasible", only_feas, FEASIBLE),
        ("Pareto front", list(s.front), FRONT),
    ]
    for rule, i in s.picks.items():
        if i is not None:
            groups.append((f"{rule}: {plan.candidates[i].label}", [i], RULE_COLORS[rule]))
    paths = [
        _scatter3d(out / f"{_slug(name)}_3d.svg", m, groups, s.max_cost_usd, s.max_latency_s, name)
    ]
    colors = {label: color for label, _, color in groups}
    for xi, yi, xl, yl, tag in (
        (0, 2, "expected cost (USD)", "expected accuracy", "cost_accuracy"),
        (1, 2, "expected latency (s)", "expected accuracy", "latency_accuracy"),
        (0, 1, "expected cost (USD)", "expected latency (s)", "cost_latency"),
    ):
        series = [
            (label, [float(m[i, xi]) for i in idx], [float(m[i, yi]) for i in idx])
            for label, idx, _ in groups
            if idx
        ]
        paths.append(
            chart(
                out / f"{_slug(name)}_{tag}.svg",
                series,
                title=f"{name}: {yl} vs {xl}",
                xlabel=xl,
                ylabel=yl,
                mode="points",
                colors=colors,
                width=900,
                height=480,
            )
        )
    return paths


def _scatter3d(
    path: Path,
    m: NDArray[np.float64],
    groups: list[tuple[str, list[int], str]],
    max_cost: float,
    max_latency: float,
    title: str,
) -> Path:
    c_ref = max_cost if math.isfinite(max_cost) else float(m[:, 0].max()) or 1.0
    t_ref = max_latency if math.isfinite(max_latency) else float(m[:, 1].max()) or 1.0
    a_lo, a_hi = float(m[:, 2].min()), float(m[:, 2].max())
    a_span = a_hi - a_lo if a_hi > a_lo else 1.0
    # Cube coordinates, clipped to 1.1 so far-away infeasible points stay on the canvas.
    x = np.minimum(m[:, 0] / c_ref, 1.1)
    y = np.minimum(m[:, 1] / t_ref, 1.1)
    z = (m[:, 2] - a_lo) / a_span
    az, el = math.radians(35), math.radians(25)
    width, height, scale = 900, 560, 300.0

    def proj(px: float, py: float, pz: float) -> tuple[float, float]:
        u = px * math.cos(az) - py * math.sin(az)
        v = (px * math.sin(az) + py * math.cos(az)) * math.sin(el) + pz * math.cos(el)
        return 300 + scale * u, 430 - scale * v

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="20" y="24" font-size="15" font-weight="bold">{html.escape(title)}: expected '
        "cost x latency x accuracy</text>",
    ]
    corners = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    for p in corners:
        for q in corners:
            if p < q and sum(abs(i - j) for i, j in zip(p, q, strict=True)) == 1:
                (x0, y0), (x1, y1) = proj(*p), proj(*q)
                svg.append(
                    f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" '
                    'stroke="#999" stroke-dasharray="3,3"/>'
                )
    labels: tuple[tuple[tuple[float, float, float], str], ...] = (
        ((1.15, 0, 0), f"cost / {c_ref:.3g} USD"),
        ((0, 1.15, 0), f"latency / {t_ref:.3g} s"),
        ((0, 0, 1.08), f"accuracy {a_lo:.3g}..{a_hi:.3g}"),
    )
    for at, text in labels:
        lx, ly = proj(*at)
        svg.append(
            f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle">{html.escape(text)}</text>'
        )
    for k, (label, idx, color) in enumerate(groups):
        r = 3 if k < 3 else 7
        for i in idx:
            px, py = proj(float(x[i]), float(y[i]), float(z[i]))
            stroke = ' stroke="black"' if k >= 3 else ""
            svg.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{r}" fill="{color}" '
                f'fill-opacity="0.85"{stroke}/>'
            )
        ly = 50 + 18 * k
        svg.append(f'<rect x="620" y="{ly - 9}" width="12" height="12" fill="{color}"/>')
        svg.append(f'<text x="638" y="{ly + 1}">{html.escape(label)}</text>')
    svg.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(svg) + "\n", encoding="utf-8")
    return path
