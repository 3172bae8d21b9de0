"""Small, dependency-free SVG charts for reports (quality-vs-cost front, cumulative regret).

SVG is written by hand so that ``uniscale demo`` needs nothing beyond NumPy; any browser or
image viewer shows the files.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#17becf",
)

Series = tuple[str, Sequence[float], Sequence[float]]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + 1e-12 * abs(hi):
        out.append(v)
        v += step
    return out


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3g}"


def chart(
    path: str | Path,
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    mode: str = "lines",
    width: int = 720,
    height: int = 440,
    colors: dict[str, str] | None = None,
) -> Path:
    """Writes an SVG with one line (``mode="lines"``) or one point group (``"points"``) per
    series; returns the path. ``colors`` pins a colour per series name (so several charts of
    the same policies agree); others take the palette in order."""
    left, right, top, bottom = 70, 190, 40, 55
    xs = [x for _, sx, _ in series for x in sx if math.isfinite(x)]
    ys = [y for _, _, sy in series for y in sy if math.isfinite(y)]
    if not xs or not ys:
        raise ValueError("nothing to plot")
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad_x, pad_y = 0.04 * (x1 - x0), 0.06 * (y1 - y0)
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">{html.escape(title)}</text>',
    ]
    for t in _ticks(x0, x1):
        out.append(
            f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + ph}" stroke="#eee"/>'
        )
        out.append(
            f'<text x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt(t)}</text>'
        )
    for t in _ticks(y0, y1):
        out.append(
            f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + pw}" y2="{py(t):.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 12}" text-anchor="middle">'
        f"{html.escape(xlabel)}</text>"
    )
    out.append(
        f'<text transform="translate(16,{top + ph / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(ylabel)}</text>'
    )
    for i, (name, sx, sy) in enumerate(series):
        color = (colors or {}).get(name, PALETTE[i % len(PALETTE)])
        pts = [
            (px(x), py(y))
            for x, y in zip(sx, sy, strict=False)
            if math.isfinite(x) and math.isfinite(y)
        ]
        if mode == "lines" and len(pts) > 1:
            step = max(1, len(pts) // 600)
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in [*pts[::step], pts[-1]])
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        else:
            for x, y in pts:
                out.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}" fill-opacity="0.85"/>'
                )
        ly = top + 14 + 18 * i
        out.append(
            f'<rect x="{left + pw + 14}" y="{ly - 9}" width="12" height="12" fill="{color}"/>'
        )
        out.append(f'<text x="{left + pw + 32}" y="{ly + 1}">{html.escape(name)}</text>')
    out.append("</svg>")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(out) + "\n", encoding="utf-8")
    return p
