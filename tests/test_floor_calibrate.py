"""`uniscale calibrate-floor` / `uniscale.lab.floor_calibrate`: the tolerance for a target share
of reference calls and the share a tolerance yields, on the packaged real table."""

from __future__ import annotations

import pytest

from uniscale import ConfigError
from uniscale.cli import main
from uniscale.lab import datasets
from uniscale.lab.floor_calibrate import floor_point, format_points, tolerance_for_share


@pytest.fixture(scope="module")
def src() -> datasets.Source:
    return datasets.collected_source(datasets.REAL_TABLE, n_requests=200)


def test_tolerance_zero_serves_the_reference_and_more_tolerance_less(
    src: datasets.Source,
) -> None:
    none = floor_point(src, 0.0, seeds=1)
    some = floor_point(src, 0.2, seeds=1)
    assert none.served_by_reference >= 0.9 and none.cost_saved <= 0.05
    assert some.served_by_reference < none.served_by_reference
    assert some.cost_saved > none.cost_saved
    assert none.held == 1 and none.seeds == 1


def test_bisection_brackets_the_target(src: datasets.Source) -> None:
    lo, hi = floor_point(src, 0.0, seeds=1), floor_point(src, 0.2, seeds=1)
    target = 0.5 * (lo.served_by_reference + hi.served_by_reference)
    point, probed = tolerance_for_share(src, target, seeds=1, steps=3)
    assert point.served_by_reference <= target
    assert len(probed) == 5 and probed == sorted(probed, key=lambda p: p.tolerance)
    # every probed tolerance below the answer kept the share above the target
    assert all(p.served_by_reference > target for p in probed if p.tolerance < point.tolerance)
    assert "<-" in format_points(probed, point)


def test_unreachable_and_trivial_targets(src: datasets.Source) -> None:
    point, probed = tolerance_for_share(src, 1.0, seeds=1, steps=3)
    assert point.tolerance == 0.0 and len(probed) == 2
    point, _ = tolerance_for_share(src, 0.0, seeds=1, max_tolerance=0.001, steps=3)
    assert point.tolerance == 0.001 and point.served_by_reference > 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"share": 1.5}, "share"),
        ({"share": float("nan")}, "share"),
        ({"share": 0.5, "max_tolerance": 0.0}, "max_tolerance"),
        ({"share": 0.5, "steps": -1}, "steps"),
    ],
)
def test_bad_settings(src: datasets.Source, kwargs: dict[str, float], match: str) -> None:
    share = kwargs.pop("share")
    with pytest.raises(ConfigError, match=match):
        tolerance_for_share(src, share, seeds=1, **kwargs)  # type: ignore[arg-type]


def test_bad_tolerance_and_seeds(src: datasets.Source) -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        floor_point(src, -0.1)
    with pytest.raises(ConfigError, match="seeds"):
        floor_point(src, 0.1, seeds=0)


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["calibrate-floor", "--table", "real", "--requests", "120", "--seeds", "1"]
    assert main([*base, "--tolerance", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "served by reference" in out and "0.0500" in out
    assert main([*base, "--share", "0.95", "--steps", "2"]) == 0
    assert "target 95.0%" in capsys.readouterr().out
    for bad in ([], ["--share", "0.5", "--tolerance", "0.1"]):
        with pytest.raises(SystemExit, match="exactly one"):
            main([*base, *bad])
    with pytest.raises(SystemExit, match="--reference"):
        main([*base, "--tolerance", "0.1", "--reference", "nope"])
