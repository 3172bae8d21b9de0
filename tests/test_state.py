"""Persistence: bytes, files, pickle and copy round-trips, and corrupted input of every kind.

State format (rust/state.rs): magic b"UNISCALE" (0..8), version u32 LE (8..12), kind u8 (12),
payload length u64 LE (13..21), payload, CRC-32 of everything before it (last 4 bytes).
"""

from __future__ import annotations

import copy
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import Learner, MakeLearner
from numpy.typing import NDArray

import uniscale
from uniscale import StateError

HEADER = 21


def learner_type(learner: Learner) -> type[uniscale.LinUCB] | type[uniscale.SharedLinUCB]:
    return type(learner)


def stream(
    rng: np.random.Generator, n: int, k: int = 3, d: int = 2
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    return rng.integers(0, k, size=n), rng.normal(size=(n, d)), rng.normal(size=n)


def assert_same_behaviour(a: Learner, b: Learner, rng: np.random.Generator) -> None:
    assert a.to_bytes() == b.to_bytes()
    assert a.n_updates == b.n_updates and a.n_actions == b.n_actions and a.dim == b.dim
    assert (a.alpha, a.ridge, a.discount, a.prior_mean) == (
        b.alpha,
        b.ridge,
        b.discount,
        b.prior_mean,
    )
    for x in rng.normal(size=(4, a.dim)):
        # A restored learner recomputes A^-1 exactly from A, while the original may carry up to
        # REFRESH_PERIOD - 1 Sherman-Morrison steps: equal statistics, inverses equal to ~1e-13.
        for got, want in zip(a.scores(x), b.scores(x), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)


def reseal(blob: bytearray) -> bytes:
    """Recomputes the CRC-32 so that a deliberately altered payload passes the checksum and
    reaches the semantic validation behind it."""
    body = bytes(blob[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


# --- round trips ------------------------------------------------------------------------------


def test_bytes_round_trip_mid_stream(make: MakeLearner, rng: np.random.Generator) -> None:
    original = make(3, 2, alpha=0.7, ridge=2.0, discount=0.97, prior_mean=0.3)
    a, X, r = stream(rng, 300)
    original.update_many(a[:137], X[:137], r[:137])
    restored = learner_type(original).from_bytes(original.to_bytes())
    assert_same_behaviour(restored, original, rng)
    # Continue the same stream on both: the statistics stay bit-identical.
    for i in range(137, 300):
        original.update(int(a[i]), X[i], float(r[i]))
        restored.update(int(a[i]), X[i], float(r[i]))
    assert_same_behaviour(restored, original, rng)
    assert original.n_updates == 300


def test_round_trip_of_a_fresh_learner_and_after_editing_actions(
    make: MakeLearner, rng: np.random.Generator
) -> None:
    fresh = make(4, 3)
    assert learner_type(fresh).from_bytes(fresh.to_bytes()).to_bytes() == fresh.to_bytes()
    a, X, r = stream(rng, 50, k=4, d=3)
    fresh.update_many(a, X, r)
    fresh.remove_actions([1])
    restored = learner_type(fresh).from_bytes(fresh.to_bytes())
    assert restored.n_actions == 3
    assert_same_behaviour(restored, fresh, rng)


def test_long_stream_round_trip_crosses_refresh_periods(
    make: MakeLearner, rng: np.random.Generator
) -> None:
    original = make(2, 2)
    n = 3 * uniscale._core.REFRESH_PERIOD + 100
    a, X, r = stream(rng, n, k=2)
    original.update_many(a[:1500], X[:1500], r[:1500])
    restored = learner_type(original).from_bytes(original.to_bytes())
    original.update_many(a[1500:], X[1500:], r[1500:])
    restored.update_many(a[1500:], X[1500:], r[1500:])
    assert_same_behaviour(restored, original, rng)


def test_save_load_round_trip_mid_stream(
    make: MakeLearner, rng: np.random.Generator, tmp_path: Path
) -> None:
    original = make(3, 2, prior_mean=-0.2)
    a, X, r = stream(rng, 200)
    original.update_many(a[:77], X[:77], r[:77])
    path = tmp_path / "learner.uniscale"
    original.save(path)
    assert path.read_bytes() == original.to_bytes()
    restored = learner_type(original).load(str(path))  # str and PathLike both work
    original.update_many(a[77:], X[77:], r[77:])
    restored.update_many(a[77:], X[77:], r[77:])
    assert_same_behaviour(restored, original, rng)


def test_pickle_and_deepcopy_are_independent_copies(
    make: MakeLearner, rng: np.random.Generator
) -> None:
    original = make(3, 2, alpha=0.4)
    a, X, r = stream(rng, 60)
    original.update_many(a[:30], X[:30], r[:30])
    copies = [
        pickle.loads(pickle.dumps(original)),
        pickle.loads(pickle.dumps(original, protocol=pickle.HIGHEST_PROTOCOL)),
        copy.deepcopy(original),
        copy.copy(original),
    ]
    for c in copies:
        assert type(c) is type(original) and c is not original
        assert_same_behaviour(c, original, rng)
    # A copy is independent: updating the original does not move the copies.
    before = copies[0].to_bytes()
    original.update_many(a[30:], X[30:], r[30:])
    assert all(c.to_bytes() == before for c in copies)
    for c in copies:
        c.update_many(a[30:], X[30:], r[30:])
        assert c.to_bytes() == original.to_bytes()


def test_header_fields(trained: Learner) -> None:
    blob = trained.to_bytes()
    assert blob[:8] == b"UNISCALE"
    assert struct.unpack_from("<I", blob, 8)[0] == uniscale._core.STATE_FORMAT_VERSION
    assert blob[12] == (1 if isinstance(trained, uniscale.LinUCB) else 2)
    assert struct.unpack_from("<Q", blob, 13)[0] == len(blob) - HEADER - 4
    assert struct.unpack_from("<I", blob, len(blob) - 4)[0] == zlib.crc32(blob[:-4])


# --- corrupted input --------------------------------------------------------------------------


def test_every_truncation_is_a_state_error(trained: Learner) -> None:
    blob = trained.to_bytes()
    cls = learner_type(trained)
    for cut in range(len(blob)):
        with pytest.raises(StateError, match=r"truncated|shorter|announces"):
            cls.from_bytes(blob[:cut])
    with pytest.raises(StateError, match=r"truncated or padded"):
        cls.from_bytes(blob + b"\x00")


def test_random_byte_flips_are_state_errors(trained: Learner) -> None:
    blob = trained.to_bytes()
    cls = learner_type(trained)
    rng = np.random.default_rng(5)
    for _ in range(400):
        bad = bytearray(blob)
        for pos in rng.choice(len(bad), size=rng.integers(1, 4), replace=False):
            bad[pos] ^= int(rng.integers(1, 256))
        with pytest.raises(StateError):
            cls.from_bytes(bytes(bad))
    for pos in range(len(blob)):  # every single bit flip in every byte position
        bad = bytearray(blob)
        bad[pos] ^= 1 << (pos % 8)
        with pytest.raises(StateError):
            cls.from_bytes(bytes(bad))


def test_wrong_magic(trained: Learner) -> None:
    blob = trained.to_bytes()
    with pytest.raises(StateError, match=r"bad magic: not a UniScale state file"):
        learner_type(trained).from_bytes(b"NOTSCALE" + blob[8:])


@pytest.mark.parametrize("version", [0, uniscale._core.STATE_FORMAT_VERSION + 1, 0xFFFFFFFF])
def test_wrong_version(trained: Learner, version: int) -> None:
    blob = bytearray(trained.to_bytes())
    blob[8:12] = struct.pack("<I", version)
    with pytest.raises(StateError, match=rf"version {version}|checksum"):
        learner_type(trained).from_bytes(bytes(blob))
    # Even with a valid checksum, the version is refused.
    with pytest.raises(StateError, match=rf"unsupported format version {version}"):
        learner_type(trained).from_bytes(reseal(blob))


def test_learner_blobs_of_format_version_1_still_load(trained: Learner) -> None:
    """Version 2 changed only the Policy payload: a learner blob stamped version 1 reads the
    same (and is written back as the current version)."""
    blob = bytearray(trained.to_bytes())
    blob[8:12] = struct.pack("<I", 1)
    old = learner_type(trained).from_bytes(reseal(blob))
    assert old.to_bytes() == trained.to_bytes()


# Written by uniscale 0.1.0 at format version 1 (before the pacer's carry-over), with
#   space = ActionSpace.grid([ModelSpec("a", 0.1, 0.2), ModelSpec("b", 1.0, 3.0)], n_values=(1, 2))
#   Policy(space, dim=3, reward="quality_priority", budget_per_request_usd=1e-4, seed=7)
# after 40 decisions on x ~ N(0, I) (rng seed 0) updated with quality in {0, 1} and cost_usd
# uniform in [5e-5, 3e-4]; the values below are what that build reported right after saving.
POLICY_V1 = Path(__file__).parent / "data" / "policy_v1.bin"
# policy_v1.bin loaded and saved by the format-5 build (before the pooled cost model): the
# last format with the old cost-model layout
POLICY_V5 = Path(__file__).parent / "data" / "policy_v5.bin"
# Format 5's interaction prior at the end of a policy payload: multiplier (f64), auto (bool),
# the evidence statistics yy and n (f64 each) and the next re-estimation point (u64).
PRIOR = 8 + 1 + 8 + 8 + 8


def test_policy_of_format_version_1_loads_and_behaves_as_before() -> None:
    blob = POLICY_V1.read_bytes()
    assert struct.unpack_from("<I", blob, 8)[0] == 1
    policy = uniscale.Policy.from_bytes(blob)
    # no carry-over then: the pacer resumes from its multiplier with none, exactly as it was
    assert policy.pacing_lambda == 1.6687988081310394
    assert policy.pacing_credit == 0.0
    d = policy.select(np.array([0.1, -0.2, 0.3]), 500.0, now=41.0)
    assert d.index == 0
    # the cost model is migrated to the pooled layout (format 6) with the same point
    # predictions, so the predicted reward and the quality bonus are what that build reported
    assert d.cost_usd == pytest.approx(1.012e-4, rel=1e-9)
    assert d.latency_s == pytest.approx(0.5564323414693426, rel=1e-9)
    assert d.mean == pytest.approx(0.13217691116730593, rel=1e-9)
    assert d.quality_bonus * policy.reward_weights.quality == pytest.approx(
        0.11725056055325735, rel=1e-9
    )
    # cost exploration is off by default: the score is what that build reported ...
    assert d.score == pytest.approx(0.1162394280432279, rel=1e-9)
    assert (policy.action_observations == 0).all() and not policy.cost_exploration
    again = policy.to_bytes()
    # ... and switched on, the score adds the optimism on cost and latency of arms with no data
    # of their own (this old file has no per-arm statistics)
    on = uniscale.Policy.from_bytes(again)
    on.set_cost_exploration()
    assert on.select(np.array([0.1, -0.2, 0.3]), 500.0, now=41.0).score > d.score
    assert uniscale.Policy.from_bytes(on.to_bytes()).cost_exploration
    assert struct.unpack_from("<I", again, 8)[0] == uniscale._core.STATE_FORMAT_VERSION == 7
    assert uniscale.Policy.from_bytes(again).to_bytes() == again


def test_policy_of_format_version_2_loads_without_conservative_mode() -> None:
    """Format 3 appended conservative mode's account to the policy payload (one flag byte when
    the mode is off), format 4 the interaction scale (8 bytes) after it and format 5 the
    interaction prior (PRIOR bytes) after that; a format-2 blob is the same bytes without all
    three, a format-4 blob without the last. (Format 6 changed the cost model's layout, so the
    older blobs are cut from a saved format-5 file.)"""
    v5 = POLICY_V5.read_bytes()
    assert struct.unpack_from("<I", v5, 8)[0] == 5
    now = uniscale.Policy.from_bytes(v5).to_bytes()
    flag = len(v5) - 4 - PRIOR - 8 - 1
    assert v5[flag] == 0  # the "conservative mode off" flag, the scale, the prior, the CRC
    assert struct.unpack_from("<d", v5, flag + 1)[0] == 1.0
    assert struct.unpack_from("<d", v5, flag + 9)[0] == 1.0  # multiplier 1, auto off
    assert v5[flag + 17] == 0
    payload_len = struct.unpack_from("<Q", v5, 13)[0]
    v2 = bytearray(v5[:flag] + v5[-4:])
    v2[8:12] = struct.pack("<I", 2)
    v2[13:21] = struct.pack("<Q", payload_len - 9 - PRIOR)
    old = uniscale.Policy.from_bytes(reseal(v2))
    assert old.conservative_status() is None and old.interaction_scale == 1.0
    assert old.to_bytes() == now
    v4 = bytearray(v5[: flag + 9] + v5[-4:])
    v4[8:12] = struct.pack("<I", 4)
    v4[13:21] = struct.pack("<Q", payload_len - PRIOR)
    old = uniscale.Policy.from_bytes(reseal(v4))
    assert old.interaction_prior == (1.0, False)
    assert old.to_bytes() == now


def test_interaction_scale_is_saved_and_checked_on_load() -> None:
    space = uniscale.ActionSpace.grid([uniscale.ModelSpec("a", 0.1, 0.2)], n_values=(1, 2))
    blob = bytearray(uniscale.Policy(space, dim=2, interaction_scale=0.25).to_bytes())
    assert uniscale.Policy.from_bytes(bytes(blob)).interaction_scale == 0.25
    struct.pack_into("<d", blob, len(blob) - 12 - PRIOR, 1.5)
    with pytest.raises(StateError, match="interaction_scale must be in"):
        uniscale.Policy.from_bytes(reseal(blob))


def test_wrong_kind(rng: np.random.Generator) -> None:
    lin = uniscale.LinUCB(3, 2)
    shared = uniscale.SharedLinUCB(rng.normal(size=(3, 2)), 2)
    with pytest.raises(StateError, match=r"blob holds a LinUCB state, not a SharedLinUCB"):
        uniscale.SharedLinUCB.from_bytes(lin.to_bytes())
    with pytest.raises(StateError, match=r"blob holds a SharedLinUCB state, not a LinUCB"):
        uniscale.LinUCB.from_bytes(shared.to_bytes())
    blob = bytearray(lin.to_bytes())
    blob[12] = 9
    with pytest.raises(StateError, match=r"unknown kind 9"):
        uniscale.LinUCB.from_bytes(reseal(blob))


@pytest.mark.parametrize("data", [b"", b"UNISCALE", bytes(24)])
def test_empty_and_tiny_blobs(kind: str, data: bytes) -> None:
    cls = uniscale.LinUCB if kind == "linucb" else uniscale.SharedLinUCB
    with pytest.raises(StateError, match=r"shorter than the 25-byte header|bad magic"):
        cls.from_bytes(data)


def test_checksummed_but_invalid_payloads_are_state_errors() -> None:
    """A blob with a valid CRC but impossible contents (a bug or a hostile writer) is refused by
    the payload validation, not trusted."""
    learner = uniscale.LinUCB(2, 2, alpha=0.5)
    learner.update(0, [1.0, 2.0], 1.0)
    blob = bytearray(learner.to_bytes())
    # Payload: n_actions u64 @21, dim u64 @29, alpha f64 @37, ridge @45, discount @53, prior @61,
    # then per arm: n_updates u64 @69, len(A) u64 @77, A (4 f64) @85, len(b) @117, b @125.

    def patched(offset: int, fmt: str, value: float | int) -> bytes:
        b = bytearray(blob)
        struct.pack_into(fmt, b, offset, value)
        return reseal(b)

    cases = [
        (patched(21, "<Q", 1 << 40), r"n_actions = 1099511627776 exceeds the limit 65536"),
        (patched(29, "<Q", 10_000), r"dim = 10000 exceeds the limit 4096"),
        (patched(21, "<Q", 0), r"n_actions must be in 1\.\.=65536, got 0"),
        (patched(37, "<d", -1.0), r"alpha must be finite and >= 0"),
        (patched(45, "<d", 0.0), r"ridge must be finite and > 0"),
        (patched(53, "<d", 2.0), r"discount must be in \(0, 1\]"),
        (patched(61, "<d", float("nan")), r"prior_mean must be finite"),
        (patched(77, "<Q", 5), r"A has 5 values, expected 4"),
        (patched(85, "<d", float("inf")), r"A contains a non-finite value"),
        (patched(85, "<d", -5.0), r"arm matrix: numerical error: matrix is not positive definite"),
    ]
    # Trailing payload bytes, with the header length and the checksum made consistent.
    longer = bytearray(blob[:-4] + b"\x00" * 8 + b"\x00" * 4)
    struct.pack_into("<Q", longer, 13, len(longer) - HEADER - 4)
    cases.append((reseal(longer), r"8 unexpected trailing payload bytes"))
    for data, match in cases:
        with pytest.raises(StateError, match=match):
            uniscale.LinUCB.from_bytes(data)


def test_shared_payload_validation(rng: np.random.Generator) -> None:
    learner = uniscale.SharedLinUCB(rng.normal(size=(2, 1)), 1)
    blob = bytearray(learner.to_bytes())
    # Payload: K @21, dim @29, p @37, config @45..77, len(psi) @77, psi @85 (2 values).
    struct.pack_into("<d", blob, 85, float("nan"))
    with pytest.raises(StateError, match=r"action_features contains a non-finite value"):
        uniscale.SharedLinUCB.from_bytes(reseal(blob))
    blob = bytearray(learner.to_bytes())
    struct.pack_into("<Q", blob, 37, 5000)
    with pytest.raises(StateError, match=r"p = 5000 exceeds the limit 4096"):
        uniscale.SharedLinUCB.from_bytes(reseal(blob))


# --- files ------------------------------------------------------------------------------------


def test_load_corrupted_files(trained: Learner, tmp_path: Path) -> None:
    cls = learner_type(trained)
    blob = trained.to_bytes()
    path = tmp_path / "state.bin"
    for data, match in [
        (b"", r"shorter than the 25-byte header"),
        (blob[: len(blob) // 2], r"truncated"),
        (blob[:-1] + bytes([blob[-1] ^ 0xFF]), r"checksum mismatch"),
    ]:
        path.write_bytes(data)
        with pytest.raises(StateError, match=match):
            cls.load(path)


def test_load_missing_file_is_an_os_error(kind: str, tmp_path: Path) -> None:
    cls = uniscale.LinUCB if kind == "linucb" else uniscale.SharedLinUCB
    missing = tmp_path / "nope.bin"
    with pytest.raises(OSError, match=r"loading .*nope\.bin"):
        cls.load(missing)
    with pytest.raises(OSError):
        cls.load(tmp_path)  # a directory


def test_save_is_atomic_and_replaces(
    make: MakeLearner, rng: np.random.Generator, tmp_path: Path
) -> None:
    path = tmp_path / "learner.bin"
    path.write_bytes(b"old contents")
    learner = make(3, 2)
    learner.save(path)
    assert path.read_bytes() == learner.to_bytes()
    a, X, r = stream(rng, 10)
    learner.update_many(a, X, r)
    learner.save(path)  # replaces an existing state file
    assert path.read_bytes() == learner.to_bytes()
    assert sorted(os.listdir(tmp_path)) == ["learner.bin"], "temporary files were left behind"


def test_failed_save_leaves_everything_untouched(make: MakeLearner, tmp_path: Path) -> None:
    learner = make(3, 2)
    learner.update(0, [1.0, 2.0], 1.0)
    before = learner.to_bytes()
    with pytest.raises(OSError, match=r"saving .*missing"):
        learner.save(tmp_path / "missing" / "learner.bin")
    # A target that cannot be replaced (a non-empty directory): the rename fails after the
    # temporary file was written, which must then be removed.
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(OSError, match=r"saving .*occupied"):
        learner.save(target)
    assert (target / "keep.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["occupied"], "temporary files were left behind"
    assert sorted(os.listdir(target)) == ["keep.txt"]
    assert learner.to_bytes() == before


@pytest.mark.parametrize("kind", ["linucb", "shared"])
def test_checksummed_blob_with_huge_dimensions_is_rejected_before_allocating(kind: str) -> None:
    """A crafted blob with a valid CRC that announces enormous dimensions must fail fast with
    StateError (not try to allocate terabytes)."""
    cls: type[uniscale.LinUCB] | type[uniscale.SharedLinUCB]
    if kind == "linucb":
        cls = uniscale.LinUCB
        blob = bytearray(uniscale.LinUCB(2, 2).to_bytes())
        struct.pack_into("<QQ", blob, 21, 65536, 4096)  # n_actions, dim
    else:
        cls = uniscale.SharedLinUCB
        blob = bytearray(uniscale.SharedLinUCB(np.eye(2), 2).to_bytes())
        struct.pack_into("<QQQ", blob, 21, 2, 4000, 0)  # n_actions, dim, p
    body = bytes(blob[:-4])
    blob[-4:] = struct.pack("<I", zlib.crc32(body))
    with pytest.raises(StateError, match=r"remain|exceeds|invalid"):
        cls.from_bytes(bytes(blob))


@pytest.mark.parametrize("layout", [1, 2])
def test_conservative_account_of_the_first_format_3_layouts_loads(layout: int) -> None:
    """The first format-3 layout (flag byte 1) had no metric and tolerance after the account,
    layout 2 no quality-floor multiplier and counterfactual sums (layout 3); both load, as
    conservative mode on reward with multiplier 1 and decision-time counterfactuals."""
    space = uniscale.ActionSpace.grid([uniscale.ModelSpec("a", 0.1, 0.2)], n_values=(1, 2))
    policy = uniscale.Policy(space, dim=2, baseline=0)
    blob = policy.to_bytes()
    # fresh account: uid, 11 floats, 3 counters, 0 open decisions, then metric (1) + tol (8),
    # then layout 3's multiplier (8), retro flag (1), counterfactual count (8) and feature
    # sum (length 8, no values); then format 4's interaction scale (8)
    layout3 = 8 + 1 + 8 + 8
    section = 8 + 11 * 8 + 3 * 8 + 8 + 1 + 8 + layout3
    flag_at = len(blob) - 4 - PRIOR - 8 - section - 1
    assert blob[flag_at] == 3
    cut = layout3 + (9 if layout == 1 else 0)
    payload_len = struct.unpack_from("<Q", blob, 13)[0]
    old = bytearray(blob[: len(blob) - 4 - PRIOR - 8 - cut] + blob[-(12 + PRIOR) :])
    old[flag_at] = layout
    old[13:21] = struct.pack("<Q", payload_len - cut)
    loaded = uniscale.Policy.from_bytes(reseal(old))
    assert loaded.conservative_status() == policy.conservative_status()
    bad = bytearray(blob)
    bad[flag_at] = 7
    with pytest.raises(StateError, match="unknown conservative-mode layout 7"):
        uniscale.Policy.from_bytes(reseal(bad))
