"""Pareto front and operating-point rules (the planner's math) against a NumPy definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uniscale import ConfigError, NonFiniteError, ShapeError, operating_point, pareto_front


def point_sets(values: st.SearchStrategy[float]) -> st.SearchStrategy[tuple[list[float], ...]]:
    """1..25 points of (accuracy, cost, latency), with many exact ties mixed in."""
    column = st.sampled_from([0.0, 1.0, 2.5, 3.0, 7.0]) | values
    return st.integers(1, 25).flatmap(
        lambda n: st.tuples(*(st.lists(column, min_size=n, max_size=n) for _ in range(3)))
    )


points = point_sets(st.floats(0, 10, allow_nan=False, allow_infinity=False))


def naive_front(a: np.ndarray, c: np.ndarray, lat: np.ndarray) -> list[int]:
    out = []
    for i in range(len(a)):
        dominated = (
            (a >= a[i]) & (c <= c[i]) & (lat <= lat[i]) & ((a > a[i]) | (c < c[i]) | (lat < lat[i]))
        )
        if not dominated.any():
            out.append(i)
    return out


@given(points)
def test_front_matches_the_definition(p: tuple[list[float], list[float], list[float]]) -> None:
    a, c, lat = (np.array(v) for v in p)
    assert pareto_front(a, c, lat).tolist() == naive_front(a, c, lat)


@given(points)
def test_rules_pick_front_points_with_their_defining_property(
    p: tuple[list[float], list[float], list[float]],
) -> None:
    a, c, lat = (np.array(v) for v in p)
    front = set(pareto_front(a, c, lat).tolist())
    best = operating_point(a, c, lat, "accuracy_max")
    assert best in front and a[best] == a.max()
    for rule in ("knee", "utopia"):
        assert operating_point(a, c, lat, rule) in front  # type: ignore[arg-type]
    lo_a, hi_c, hi_l = float(np.median(a)), float(np.median(c)), float(np.median(lat))
    cube = operating_point(a, c, lat, "cube", min_accuracy=lo_a, max_cost=hi_c, max_latency=hi_l)
    inside = [i for i in range(len(a)) if a[i] >= lo_a and c[i] <= hi_c and lat[i] <= hi_l]
    if not inside:
        assert cube is None
    else:
        assert cube is not None and cube in inside and a[cube] == max(a[i] for i in inside)


# Powers of two scale exactly in floating point, so the normalised objectives (and therefore
# the choices, ties included) must not change at all -- as long as nothing underflows: 5e-324
# (the smallest subnormal) times 0.5 is 0.0, which is different data, not a change of units.
scales = st.integers(-12, 12).map(lambda k: 2.0**k)
normal_points = point_sets(st.just(0.0) | st.floats(1e-280, 10))


@given(normal_points, scales, scales)
def test_knee_and_utopia_do_not_depend_on_units(
    p: tuple[list[float], list[float], list[float]], sc: float, sl: float
) -> None:
    a, c, lat = (np.array(v) for v in p)
    for rule in ("knee", "utopia"):
        assert operating_point(a, c, lat, rule) == operating_point(a, c * sc, lat * sl, rule)  # type: ignore[arg-type]


def test_knee_of_a_bent_front() -> None:
    # cost-accuracy curve with a clear elbow at index 2; latency follows cost
    a = np.array([0.30, 0.60, 0.80, 0.83, 0.85])
    c = np.array([1.0, 2.0, 3.0, 6.0, 10.0])
    assert operating_point(a, c, c, "knee") == 2
    assert operating_point(a, c, c, "accuracy_max") == 4
    assert operating_point(a, c, c, "cube", max_cost=5.0) == 2


def test_bad_input() -> None:
    with pytest.raises(ShapeError):
        pareto_front([1.0, 2.0], [1.0], [1.0, 2.0])
    with pytest.raises(NonFiniteError):
        pareto_front([np.nan], [1.0], [1.0])
    with pytest.raises(ConfigError, match="unknown rule"):
        operating_point([1.0], [1.0], [1.0], "best")  # type: ignore[arg-type]
    assert operating_point([], [], [], "knee") is None
