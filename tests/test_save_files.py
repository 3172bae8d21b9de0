"""Saving to files (review of 2026-12-02): temp files of killed writers (D8), file modes and
symbolic links (D17), and what `save`, `to_bytes` and pickle hand out (D1).

The refusal to write bytes that do not load back is tested on the write path itself in Rust
(`state::tests::save_refuses_bytes_that_do_not_load_back`): no sequence of public operations is
known to produce such bytes, which is the point of the check.
"""

from __future__ import annotations

import os
import pickle
import random
import stat
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import uniscale
from uniscale import ActionSpace, ModelSpec, Policy

KILL_SCRIPT = """
import sys
import uniscale

learner = uniscale.LinUCB(1500, 40)  # a 19 MB state: saving it takes a while
print("ready", flush=True)
while True:
    learner.save(sys.argv[1])
"""


def temp_files(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n)


def policy() -> Policy:
    p = Policy(ActionSpace.grid([ModelSpec("a", 1.0, 2.0), ModelSpec("b", 3.0, 9.0)]), 3)
    d = p.select(np.ones(3), 100.0, now=0.0)
    p.update(d.id, 0.7, now=1.0)
    p.select(np.ones(3), 100.0, now=2.0)  # one pending decision
    return p


@pytest.mark.skipif(sys.platform == "win32", reason="kill -9 and /proc")
def test_saves_killed_mid_write_leave_no_temp_files_after_the_next_save(tmp_path: Path) -> None:
    """D8: kill -9 a process that saves in a loop, repeatedly. Each kill mid-save leaves a
    full-size temp file (the old code left them forever); the next save removes them."""
    path = tmp_path / "state.bin"
    rng = random.Random(0)
    leftovers = 0
    for _ in range(25):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(path)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.kill()  # SIGKILL: no cleanup handler runs
        proc.wait()
        # the next child's first save removes what earlier children left
        leftovers = max(leftovers, len(temp_files(tmp_path)))
        if leftovers and rng.random() < 0.3:
            break
    if not leftovers:
        pytest.skip("no kill landed mid-write on this machine (the Rust test covers the rule)")
    if path.exists():
        uniscale.LinUCB.load(path)  # whatever survived is a complete state
    uniscale.LinUCB(2, 2).save(path)
    assert temp_files(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self/ns/pid").exists(), reason="needs /proc")
def test_temp_file_of_a_dead_writer_is_removed_by_the_next_save(tmp_path: Path) -> None:
    """D8, deterministic: a temp file named as a dead process of this host would name it."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    tag = f"{zlib.crc32((boot + os.readlink('/proc/self/ns/pid')).encode()):08x}"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".policy.bin.tmp-{dead.pid}-{tag}-1"
    stale.write_bytes(b"\0" * 4096)
    p = policy()
    p.save(tmp_path / "policy.bin")
    assert sorted(os.listdir(tmp_path)) == ["policy.bin"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and symlinks")
def test_save_keeps_the_mode_and_writes_through_a_symlink(tmp_path: Path) -> None:
    """D17: a 0600 state file stays 0600, and a symlinked state file stays a symlink."""
    p = policy()
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    real.chmod(0o600)
    p.save(real)
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    link = tmp_path / "current.bin"
    link.symlink_to("real.bin")
    learner = uniscale.SharedLinUCB(np.eye(2), 2)
    for obj, load in [(p, Policy.load), (learner, uniscale.SharedLinUCB.load)]:
        obj.save(link)
        assert link.is_symlink() and os.readlink(link) == "real.bin"
        assert stat.S_IMODE(real.stat().st_mode) == 0o600
        assert load(link).to_bytes() == obj.to_bytes() == real.read_bytes()
    assert temp_files(tmp_path) == []


def test_to_bytes_pickle_and_save_hand_out_the_same_verified_bytes(tmp_path: Path) -> None:
    """D1: every route out of a policy or learner yields bytes that `from_bytes` accepts."""
    p = policy()
    blob = p.to_bytes()
    assert Policy.from_bytes(blob).to_bytes() == blob
    assert pickle.loads(pickle.dumps(p)).to_bytes() == blob
    assert pickle.loads(pickle.dumps(p.core)).to_bytes() == blob
    p.save(tmp_path / "p.bin")
    assert (tmp_path / "p.bin").read_bytes() == blob
    learner = uniscale.LinUCB(3, 2)
    learner.update(1, [1.0, 2.0], 0.5)
    assert pickle.loads(pickle.dumps(learner)).to_bytes() == learner.to_bytes()


@pytest.mark.parametrize("kind", ["linucb", "shared"])
def test_a_state_that_would_not_load_is_never_written(kind: str, tmp_path: Path) -> None:
    """D1, from Python: an update with features in the 1e150s gives A = I + x x', singular in
    floating point. Before the learners' scale-robust factorisation (branch hard-learners) the
    update was accepted and the loader's Cholesky refused the state, and `save` replaced the
    last good file with it: the user lost everything learned. Whichever way the learner
    handles it now (refuse the update, accept a state that loads, or accept one that does not),
    `save` never leaves a file that does not load, and never drops the last good one for it."""
    learner: uniscale.LinUCB | uniscale.SharedLinUCB = (
        uniscale.LinUCB(2, 2) if kind == "linucb" else uniscale.SharedLinUCB(np.eye(2), 2)
    )
    learner.update(1, [0.5, -0.5], 1.0)
    path = tmp_path / "learner.bin"
    learner.save(path)
    good = path.read_bytes()
    try:
        learner.update(0, [1e150, 1e150], 0.0)
    except uniscale.UniScaleError:
        pass
    try:
        learner.save(path)
    except uniscale.StateError as e:
        assert "does not load back" in str(e) and "left untouched" in str(e)
        assert path.read_bytes() == good
        with pytest.raises(uniscale.StateError, match=r"does not load back"):
            learner.to_bytes()
        with pytest.raises(uniscale.StateError, match=r"does not load back"):
            pickle.dumps(learner)
    else:
        assert path.read_bytes() == learner.to_bytes()
    assert temp_files(tmp_path) == []
    type(learner).load(path)
