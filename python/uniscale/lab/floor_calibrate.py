"""Calibrating a quality floor on an outcome table, in the spirit of RouteLLM's threshold
calibration: the tolerance that yields a target share of requests served by the reference,
and, the other way round, the share (and cost saved, accuracy given up) a tolerance yields.

Each probe replays the policy in quality-floor mode (`Policy.set_quality_floor`) on the table
for a few seeds (`uniscale.lab.replay.compare`) and averages over them; the share served by
the reference falls as the tolerance grows, so the tolerance for a share is found by
bisection. The answer is an estimate for traffic like the table's: the floor itself still
holds at run time whatever tolerance is chosen.

    uniscale calibrate-floor --table mmlu-pro --requests 3000 --share 0.7
    uniscale calibrate-floor --table mmlu-pro --requests 3000 --tolerance 0.02
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from uniscale._core import ConfigError
from uniscale.lab import replay
from uniscale.lab.datasets import Source
from uniscale.policy import QualityFloor
from uniscale.space import Action


@dataclass(frozen=True, slots=True)
class FloorPoint:
    """One tolerance's replay, averaged over seeds."""

    tolerance: float
    served_by_reference: float
    cost_saved: float
    accuracy_vs_reference: float
    held: int
    seeds: int


def floor_point(
    src: Source,
    tolerance: float,
    *,
    seeds: int = 3,
    reference: Action | None = None,
    progress: Callable[[int], object] | None = None,
) -> FloorPoint:
    """Replays quality-floor mode at ``tolerance`` on ``seeds`` streams of ``src``."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"tolerance must be finite and >= 0, got {tolerance}")
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    share, saved, acc, held = [], [], [], 0
    for seed in range(seeds):
        t = src.table(seed)
        ref = reference or replay.default_reference(t.actions, src.models)
        if ref not in t.actions:
            raise ConfigError(f"reference {ref} is not an action of the table")
        res = replay.compare(
            t, src.models, seed=seed, learners=[], quality_floor=QualityFloor(ref, tolerance)
        )
        by = {r.name: r for r in res}
        f, b = by["uniscale_floor"], by["reference"]
        a, c = replay.floor_vs_reference(f, b)
        share.append(float(f.extra["served_by_reference"]))
        saved.append(c)
        acc.append(a)
        held += bool(f.extra["floor_held"])
        if progress is not None:
            progress(1)
    return FloorPoint(
        tolerance,
        float(np.mean(share)),
        float(np.mean(saved)),
        float(np.mean(acc)),
        held,
        seeds,
    )


def tolerance_for_share(
    src: Source,
    share: float,
    *,
    seeds: int = 3,
    reference: Action | None = None,
    max_tolerance: float = 0.2,
    steps: int = 6,
    progress: Callable[[int], object] | None = None,
) -> tuple[FloorPoint, list[FloorPoint]]:
    """The smallest probed tolerance whose replays serve at most ``share`` of the requests
    with the reference (bisection on [0, ``max_tolerance``] in ``steps`` halvings), and every
    point probed. When even ``max_tolerance`` keeps the share above the target, that point is
    returned (its share says by how much the target is missed); when tolerance 0 already
    meets it, that one."""
    if not (math.isfinite(share) and 0.0 <= share <= 1.0):
        raise ConfigError(f"share must be in [0, 1], got {share}")
    if not (math.isfinite(max_tolerance) and max_tolerance > 0):
        raise ConfigError(f"max_tolerance must be finite and > 0, got {max_tolerance}")
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")

    def probe(tol: float) -> FloorPoint:
        return floor_point(src, tol, seeds=seeds, reference=reference, progress=progress)

    lo, hi = probe(0.0), probe(max_tolerance)
    probed = [lo, hi]
    if lo.served_by_reference <= share:
        return lo, probed
    if hi.served_by_reference > share:
        return hi, probed
    for _ in range(steps):  # invariant: lo above the target, hi at or below it
        mid = probe(0.5 * (lo.tolerance + hi.tolerance))
        probed.append(mid)
        if mid.served_by_reference <= share:
            hi = mid
        else:
            lo = mid
    return hi, sorted(probed, key=lambda p: p.tolerance)


def format_points(points: list[FloorPoint], chosen: FloorPoint | None = None) -> str:
    """The probed points as a table (the chosen one marked)."""
    lines = [
        f"{'tolerance':>9}  {'served by reference':>19}  {'cost saved':>10}  "
        f"{'accuracy vs reference':>21}  floor held"
    ]
    for p in points:
        mark = "  <-" if chosen is not None and p == chosen else ""
        lines.append(
            f"{p.tolerance:9.4f}  {p.served_by_reference:19.1%}  {p.cost_saved:10.1%}  "
            f"{p.accuracy_vs_reference:+21.4f}  {p.held}/{p.seeds}{mark}"
        )
    return "\n".join(lines)
