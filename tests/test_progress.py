"""`uniscale.lab.progress`: tqdm on a terminal, whole (optionally timestamped) lines in logs,
nothing when disabled; and collect's status line with per-model counts."""

from __future__ import annotations

import io
import re

from uniscale.lab.collect import _Progress
from uniscale.lab.progress import progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_mode_writes_whole_lines_with_count_and_eta() -> None:
    out = io.StringIO()
    with progress_bar(4, "replay", stream=out, log_every_s=3600) as bar:
        for _ in range(4):
            bar.update(1)
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("replay:") and "0/4" in lines[0]
    assert "4/4" in lines[-1] and "100%" in lines[-1]
    assert len(lines) <= 3  # the interval holds: the first line, the last, nothing between


def test_terminal_mode_redraws_in_place() -> None:
    out = _Tty()
    with progress_bar(3, "demo", stream=out) as bar:
        bar.update(3)
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and "3/3" in text


def test_disabled_bar_prints_nothing() -> None:
    out = io.StringIO()
    with progress_bar(3, "x", stream=out, enabled=False) as bar:
        bar.update(3)
    assert out.getvalue() == ""


def test_collect_status_line_has_per_model_counts_and_timestamps() -> None:
    out = io.StringIO()
    prog = _Progress({"a": 2, "b": 1}, True, out, every_s=3600)
    prog.update("a", True)
    prog.update("b", False, force=True)  # a failure is shown at once
    prog.update("a", True)
    prog.close()
    lines = out.getvalue().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d collect:", ln) for ln in lines)
    assert "b 0/1" in lines[1] and "1 failed" in lines[1]
    last = lines[-1]
    assert "2/3" in last and "a 2/2" in last and "b 0/1" in last and "slowest model ETA" in last
