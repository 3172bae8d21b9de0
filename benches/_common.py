"""Shared by the benchmark scripts (run as ``python benches/<name>.py``)."""

from __future__ import annotations

import sys


def release_build_or_exit_code() -> int | None:
    """None if the installed extension is a release build, else prints why and returns the exit
    status (2) a benchmark must stop with: timing a debug build measures nothing useful."""
    import uniscale

    if uniscale.BUILD_PROFILE == "release":
        return None
    print(
        f"refusing to benchmark: uniscale is a {uniscale.BUILD_PROFILE!r} build "
        f"({uniscale.__file__}); install a release build (pip install .) and rerun",
        file=sys.stderr,
    )
    return 2
