"""The hand-written stub python/uniscale/_core.pyi matches what the extension really exports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy.stubtest")

ALLOWLIST = Path(__file__).with_name("stubtest_allowlist.txt")


def test_stub_matches_the_extension() -> None:
    # stubtest imports uniscale._core and compares every runtime name, signature and default with
    # the stub. Unused allowlist entries are errors too, so the allowlist cannot go stale.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "uniscale._core", "--allowlist", str(ALLOWLIST)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout
