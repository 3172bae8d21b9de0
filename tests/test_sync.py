"""Multi-replica learning through a real Redis (uniscale.sync, issue #18).

Tolerance of "equal to one process": the merged statistics are the same float64 sums taken in
another order, so every entry of the evidence vector agrees within ``1e-12 * max(1, max|v|)``
(the normwise bound of reordering a sum), and counts agree exactly.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis_fixture import RedisServer
from sync_worker import DIM, MODELS, feed, make_policy, replica, stream

import uniscale
from uniscale import ConfigError, ModelSpec, StateError, UniScaleError
from uniscale._core import sync_decode, sync_encode, sync_export, sync_fingerprint
from uniscale.sync import (
    IncompatibleReplicaError,
    RedisSync,
    SyncError,
    base_key,
    replicas_key,
    slot_key,
)

TOL = 1e-12


def assert_same_evidence(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    scale = max(1.0, float(np.max(np.abs(want))))
    err = float(np.max(np.abs(got - want)))
    assert err <= TOL * scale, f"max error {err:.3e} at scale {scale:.3e}"


def single_process(n_rows: int) -> np.ndarray:
    p = make_policy()
    for row in stream(n_rows):
        feed(p, row)
    return sync_export(p.core)


def n_updates(policy_evidence: np.ndarray, policy: Any) -> float:
    """The shared learner's update count: the last entry of its block (layout: upper(A), b,
    count)."""
    d = (DIM + 1) * (policy.core.action_features().shape[1] + 1)
    return float(policy_evidence[d * (d + 1) // 2 + d])


def test_four_replica_processes_converge_to_one_policy(redis_server: RedisServer) -> None:
    n_rows, n_rep = 400, 4
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n_rep)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=replica, args=(redis_server.url, "conv", r, n_rep, n_rows, barrier, out))
        for r in range(n_rep)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    want = single_process(n_rows)
    assert np.any(want != 0)
    for rid, vec, merged, _locked in sorted(results):
        assert merged == n_rep - 1, rid
        assert_same_evidence(np.asarray(vec), want)


def test_sharded_stream_without_sync_differs() -> None:
    """The comparison above can fail: one shard alone is far from the whole stream."""
    p = make_policy()
    for i, row in enumerate(stream(400)):
        if i % 4 == 0:
            feed(p, row)
    with pytest.raises(AssertionError):
        assert_same_evidence(sync_export(p.core), single_process(400))


class SlowClient:
    """A redis client whose every call first sleeps (a slow or hung Redis)."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self._inner, self._delay = inner, delay_s
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def slow(*a: Any, **kw: Any) -> Any:
            self.calls += 1
            time.sleep(self._delay)
            r = attr(*a, **kw)
            return SlowClient(r, self._delay) if name == "pipeline" else r

        return slow


def timed_requests(policy: Any, rows: list[Any]) -> float:
    """Feeds rows through select + observe; returns the slowest call in seconds."""
    worst = 0.0
    for row in rows:
        t0 = time.perf_counter()
        policy.select(row[0], 500.0)
        feed(policy, row)
        worst = max(worst, time.perf_counter() - t0)
    return worst


def test_redis_killed_mid_stream_loses_no_update(redis_server: RedisServer) -> None:
    rows = stream(600)
    pa, pb = make_policy(), make_policy()
    kw: dict[str, Any] = dict(
        interval_s=0.02, timeout_s=0.2, failure_threshold=2, backoff_max_s=0.5
    )
    sa = RedisSync(pa, redis_server.url, "outage", "a", **kw).start()
    sb = RedisSync(pb, redis_server.url, "outage", "b", **kw).start()
    try:
        for i, row in enumerate(rows[:200]):
            feed(pa if i % 2 == 0 else pb, row)
        time.sleep(0.2)
        redis_server.kill()
        worst = 0.0
        for i in range(200, 400):
            p = pa if i % 2 == 0 else pb
            worst = max(worst, timed_requests(p, [rows[i]]))
        deadline = time.monotonic() + 10
        while sa.status().breaker == "closed" and time.monotonic() < deadline:
            time.sleep(0.02)
        st = sa.status()
        assert st.breaker in ("open", "half_open") and st.failures >= 2, st
        assert st.last_error is not None
        # no request waited longer than Redis's 0.2 s timeout (a loaded machine can pause a
        # thread for tens of ms; that requests never wait for a slow Redis at all is what
        # test_slow_redis_never_blocks_a_request shows)
        assert worst < 0.15, worst
        # learning continued locally while Redis was down
        for i in range(400, 500):
            feed(pa if i % 2 == 0 else pb, rows[i])
        redis_server.start()  # empty: persistence is off, every slot is gone
        t_back = time.time()
        for i in range(500, 600):
            feed(pa if i % 2 == 0 else pb, rows[i])
        # both replicas come back on their own (half-open probe, breaker closes)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            (s.status().last_sync_s or 0) > t_back and s.status().breaker == "closed"
            for s in (sa, sb)
        ):
            time.sleep(0.02)
        assert sa.status().breaker == sb.status().breaker == "closed"
    finally:
        sa.stop()
        sb.stop()
    # both stopped after a final push; one more pull each sees the other's final slot
    sa.sync_once()
    sb.sync_once()
    want = single_process(600)
    for p, s in ((pa, sa), (pb, sb)):
        got = sync_export(p.core)
        assert_same_evidence(got, want)
        assert n_updates(got, p) == n_updates(want, p) == 600
        assert s.status().breaker == "closed"
    sa.close()
    sb.close()


def test_slow_redis_never_blocks_a_request(redis_server: RedisServer) -> None:
    import redis

    p = make_policy()
    client = SlowClient(redis.Redis.from_url(redis_server.url), 0.3)
    s = RedisSync(p, redis_server.url, "slow", "a", interval_s=0.01, client=client).start()
    try:
        time.sleep(0.1)  # a round is in flight, stuck in the slow client
        calls = client.calls
        worst = timed_requests(p, stream(200))
        assert client.calls >= calls >= 1  # the sync thread was inside Redis meanwhile
    finally:
        s.stop(final_push=False)
    assert worst < 0.15, worst


def test_incompatible_replicas_refuse_loudly_and_keep_serving(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    pa = make_policy()
    other = make_policy([*MODELS, ModelSpec("huge", 20.0, 60.0)])
    assert sync_fingerprint(pa.core) != sync_fingerprint(other.core)
    rows = stream(100)
    for row in rows[:50]:
        feed(pa, row)
    for row in rows[50:]:
        feed(other, row)
    sa = RedisSync(pa, redis_server.url, "mixed", "a")
    sb = RedisSync(other, redis_server.url, "mixed", "b")
    before = sync_export(pa.core)
    sa.sync_once()
    with caplog.at_level(logging.ERROR, logger="uniscale.sync"):
        with pytest.raises(
            IncompatibleReplicaError, match=r"refused to merge the slots of \['a'\]"
        ):
            sb.sync_once()
        with pytest.raises(IncompatibleReplicaError, match=r"\['b'\]"):
            sa.sync_once()
    assert "NOT merged" in caplog.text
    assert issubclass(IncompatibleReplicaError, SyncError)
    assert issubclass(SyncError, UniScaleError)
    # nothing of the other replica leaked in, and both keep serving
    np.testing.assert_array_equal(sync_export(pa.core), before)
    assert sa.status().incompatible == ("b",)
    assert sa.status().slots_merged == 0
    pa.select(np.ones(DIM), 300.0)
    other.select(np.ones(DIM), 300.0)
    # the background loop records it without tripping the breaker
    assert sa.step() is True
    assert sa.status().breaker == "closed"
    assert "refused" in (sa.status().last_error or "")


def test_restarted_replica_recovers_its_slot(redis_server: RedisServer) -> None:
    rows = stream(300)
    p1 = make_policy()
    s1 = RedisSync(p1, redis_server.url, "restart", "a")
    for row in rows[:150]:
        feed(p1, row)
    s1.sync_once()
    s1.close()
    # the process restarts with a fresh policy and the same replica id
    p2 = make_policy()
    s2 = RedisSync(p2, redis_server.url, "restart", "a")
    s2.sync_once()
    assert s2.status().recovered
    assert_same_evidence(sync_export(p2.core), sync_export(p1.core))
    # and goes on: its slot is cumulative over both lives
    for row in rows[150:]:
        feed(p2, row)
    s2.sync_once()
    fresh = make_policy()
    s3 = RedisSync(fresh, redis_server.url, "restart", "observer")
    s3.sync_once()
    assert_same_evidence(sync_export(fresh.core), single_process(300))


def test_own_slot_of_another_layout_is_not_taken_over(redis_server: RedisServer) -> None:
    import redis

    other = make_policy([*MODELS, ModelSpec("huge", 20.0, 60.0)])
    blob = sync_encode(sync_fingerprint(other.core), sync_export(other.core))
    redis.Redis.from_url(redis_server.url).set(slot_key("own", "a"), blob)
    s = RedisSync(make_policy(), redis_server.url, "own", "a")
    with pytest.raises(IncompatibleReplicaError, match="its own slot"):
        s.sync_once()


def test_corrupt_slot_is_skipped_and_changes_nothing(redis_server: RedisServer) -> None:
    import redis

    r = redis.Redis.from_url(redis_server.url)
    p = make_policy()
    for row in stream(50):
        feed(p, row)
    s = RedisSync(p, redis_server.url, "corrupt", "a")
    s.sync_once()
    before = sync_export(p.core)
    good = sync_encode(sync_fingerprint(p.core), before)
    r.sadd(replicas_key("corrupt"), "b", "c")
    r.set(slot_key("corrupt", "b"), good[: len(good) // 2])  # truncated
    flipped = bytearray(good)
    flipped[100] ^= 0x10
    r.set(slot_key("corrupt", "c"), bytes(flipped))
    st = s.sync_once()
    assert st.corrupt == 2 and st.slots_merged == 0
    np.testing.assert_array_equal(sync_export(p.core), before)
    with pytest.raises(StateError, match="sync blob"):
        sync_decode(good[:10])


def test_local_learning_racing_the_rebuild_is_kept(redis_server: RedisServer) -> None:
    """Threads learn on two replicas while their rounds rebuild and swap: no update is lost."""
    rows = stream(1200)
    pa, pb = make_policy(), make_policy()
    sa = RedisSync(pa, redis_server.url, "race", "a", interval_s=0.001).start()
    sb = RedisSync(pb, redis_server.url, "race", "b", interval_s=0.001).start()

    def learn(p: Any, part: list[Any]) -> None:
        for row in part:
            feed(p, row)
            time.sleep(0.0002)

    threads = [
        threading.Thread(target=learn, args=(pa if i < 2 else pb, rows[i::4])) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sa.stop()
    sb.stop()
    sa.sync_once()
    want = single_process(1200)
    assert_same_evidence(sync_export(pa.core), want)
    # and what the slots carry is exactly each replica's share: a fresh replica sees it all
    fresh = make_policy()
    RedisSync(fresh, redis_server.url, "race", "observer").sync_once()
    assert_same_evidence(sync_export(fresh.core), want)
    assert sa.status().rounds > 10


def test_discounted_policy_is_not_mergeable(redis_server: RedisServer) -> None:
    p = make_policy(discount=0.99)
    with pytest.raises(ConfigError, match=r"discount 0\.99 < 1 cannot be merged"):
        RedisSync(p, redis_server.url, "disc", "a")


def test_bad_arguments() -> None:
    p = make_policy()
    with pytest.raises(SyncError, match="replica_id"):
        RedisSync(p, "redis://127.0.0.1:1", "k", "a:b")
    with pytest.raises(SyncError, match="interval_s"):
        RedisSync(p, "redis://127.0.0.1:1", "k", "a", interval_s=0)


def test_keys_share_one_hash_tag() -> None:
    keys = [slot_key("pol", "a"), slot_key("pol", "b"), replicas_key("pol")]
    assert all(k.startswith("{pol}:") for k in keys)


def test_unreachable_redis_opens_the_breaker_and_learning_goes_on() -> None:
    from redis_fixture import free_port, require_redis_py

    require_redis_py()
    p = make_policy()
    s = RedisSync(
        p,
        f"redis://127.0.0.1:{free_port()}",
        "down",
        "a",
        failure_threshold=2,
        timeout_s=0.1,
        backoff_initial_s=60.0,
    )
    assert s.step() is False and s.status().breaker == "closed"
    assert s.step() is False and s.status().breaker == "open"
    assert s.step() is False  # skipped while open: no third connection attempt
    assert s.status().failures == 2
    for row in stream(20):
        feed(p, row)
    assert n_updates(sync_export(p.core), p) == 20


def test_restart_from_a_snapshot_after_redis_lost_its_data(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The snapshot holds the others' learning too; the local copy of the slot (state_path)
    keeps the restarted replica from counting it as its own once Redis has forgotten."""
    rows = stream(400)
    pa, pb = make_policy(), make_policy()
    side = tmp_path / "a.sync"
    sa = RedisSync(pa, redis_server.url, "lost", "a", state_path=side)
    sb = RedisSync(pb, redis_server.url, "lost", "b")
    for i, row in enumerate(rows[:200]):
        feed(pa if i % 2 == 0 else pb, row)
    sa.sync_once()
    sb.sync_once()
    sa.sync_once()
    pa.save(tmp_path / "a.bin")  # the snapshot: a's and b's learning
    assert side.exists()
    redis_server.kill()
    redis_server.start()  # persistence off: every slot is gone

    def restarted(state_path: Path | None) -> np.ndarray:
        p = uniscale.Policy.load(tmp_path / "a.bin")
        s = RedisSync(p, redis_server.url, "lost", "a", state_path=state_path)
        for i, row in enumerate(rows[200:]):
            if i % 2 == 0:
                feed(p, row)
        s.sync_once()
        sb.sync_once()
        s.sync_once()
        return sync_export(p.core)

    for i, row in enumerate(rows[200:]):
        if i % 2 == 1:
            feed(pb, row)
    assert_same_evidence(restarted(side), single_process(400))
    assert_same_evidence(sync_export(pb.core), single_process(400))
    # the control: without the local copy the snapshot's b-learning is counted twice
    redis_server.kill()
    redis_server.start()
    sb.sync_once()
    with pytest.raises(AssertionError):
        assert_same_evidence(restarted(None), single_process(400))


def test_corrupt_local_copy_is_moved_aside(redis_server: RedisServer, tmp_path: Path) -> None:
    side = tmp_path / "a.sync"
    side.write_bytes(b"not a blob")
    s = RedisSync(make_policy(), redis_server.url, "side", "a", state_path=side)
    s.sync_once()
    assert list(tmp_path.glob("a.sync.corrupt-*"))
    assert not s.status().recovered
    _, v, _ = sync_decode(side.read_bytes())  # rewritten by the round
    assert v.shape == sync_export(make_policy().core).shape


def test_redis_cluster_keeps_a_policys_keys_in_one_slot(redis_cluster: str) -> None:
    """On a real 3-node cluster the round's pipeline and MGET work (one hash tag); keys
    without it would fail with CROSSSLOT."""
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException, ResponseError

    rows = stream(300)
    pols = [make_policy() for _ in range(3)]
    syncs = [
        RedisSync(p, redis_cluster, "clustered", f"r{i}", cluster=True) for i, p in enumerate(pols)
    ]
    for i, row in enumerate(rows):
        feed(pols[i % 3], row)
    for s in syncs + syncs:
        s.sync_once()
    want = single_process(300)
    for p, s in zip(pols, syncs, strict=True):
        assert s.status().slots_merged == 2
        assert_same_evidence(sync_export(p.core), want)
    r = RedisCluster.from_url(redis_cluster)
    keys = [f"untagged:{i}" for i in range(8)]
    assert len({r.keyslot(k) for k in keys}) > 1
    with pytest.raises((RedisClusterException, ResponseError)):
        r.mget(keys)


def test_corrupt_own_slot_does_not_stop_the_replica(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    r = redis.Redis.from_url(redis_server.url)
    r.set(slot_key("ownbad", "a"), b"USSYNC\0\0garbage")
    p = make_policy()
    for row in stream(30):
        feed(p, row)
    s = RedisSync(p, redis_server.url, "ownbad", "a")
    with caplog.at_level(logging.ERROR, logger="uniscale.sync"):
        s.sync_once()
    assert "unreadable" in caplog.text and not s.status().recovered
    _, v, _ = sync_decode(r.get(slot_key("ownbad", "a")))  # replaced by a valid slot
    assert_same_evidence(v, sync_export(p.core))


def test_every_updates_triggers_a_round_before_the_interval(redis_server: RedisServer) -> None:
    p = make_policy()
    s = RedisSync(p, redis_server.url, "nupd", "a", interval_s=60.0, every_updates=50).start()
    try:
        deadline = time.monotonic() + 10
        while s.status().rounds < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        for row in stream(40):
            feed(p, row)
        time.sleep(0.3)
        assert s.status().rounds == 1  # 40 < 50 updates and far from 60 s: no round yet
        for row in stream(20, seed=8):
            feed(p, row)
        while s.status().rounds < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.status().rounds == 2
    finally:
        s.stop(final_push=False)
    fresh = make_policy()
    RedisSync(fresh, redis_server.url, "nupd", "observer").sync_once()
    assert n_updates(sync_export(fresh.core), fresh) == 60
    with pytest.raises(SyncError, match="every_updates"):
        RedisSync(p, redis_server.url, "nupd", "b", every_updates=0)


def test_compaction_folds_departed_replicas_into_the_base(redis_server: RedisServer) -> None:
    import redis

    r = redis.Redis.from_url(redis_server.url)
    rows = stream(600)
    pols = [make_policy() for _ in range(3)]
    syncs = [RedisSync(p, redis_server.url, "compact", f"r{i}") for i, p in enumerate(pols)]
    for i, row in enumerate(rows[:300]):
        feed(pols[i % 3], row)
    for s in syncs:
        s.sync_once()
    syncs[2].close()  # r2 is gone for good
    with pytest.raises(SyncError, match="its own slot"):
        syncs[0].compact(["r0"])
    assert syncs[0].compact(["r2"]) == 1
    assert r.get(slot_key("compact", "r2")) is None
    assert r.smembers(replicas_key("compact")) == {b"r0", b"r1"}
    _, base, _ = sync_decode(r.get(base_key("compact")))
    assert_same_evidence(base, syncs[2].own_evidence())
    # the others go on; what r2 learned keeps counting, from the base
    for i, row in enumerate(rows[300:]):
        feed(pols[i % 2], row)
    for s in syncs[:2] + syncs[:2]:
        s.sync_once()
    want = single_process(600)
    for p in pols[:2]:
        assert_same_evidence(sync_export(p.core), want)
    fresh = make_policy()
    RedisSync(fresh, redis_server.url, "compact", "observer").sync_once()
    assert_same_evidence(sync_export(fresh.core), want)
    # compacting again adds to the base
    assert syncs[0].compact(["observer"]) == 1
    fresh2 = make_policy()
    RedisSync(fresh2, redis_server.url, "compact", "observer2").sync_once()
    assert_same_evidence(sync_export(fresh2.core), want)


def decay(p: Any, factor: float) -> None:
    """What an epoch boundary does to one policy: every entry but the counts times factor."""
    from uniscale._core import sync_apply, sync_count_mask

    v = sync_export(p.core)
    mask = np.asarray(sync_count_mask(p.core))
    assert sync_apply(p.core, np.where(mask, 0.0, (factor - 1.0) * v), force=True) is not None


def test_epoch_discount_merges_like_one_discounted_process(redis_server: RedisServer) -> None:
    """Discounting across replicas: at each epoch boundary (one clock for all) every slot's
    statistics decay by epoch_decay; merged replicas equal one process decayed the same way."""
    rows = stream(300)
    now = [0.0]
    kw: dict[str, Any] = dict(epoch_s=10.0, epoch_decay=0.5, clock=lambda: now[0])
    pa, pb = make_policy(), make_policy()
    sa = RedisSync(pa, redis_server.url, "epochs", "a", **kw)
    sb = RedisSync(pb, redis_server.url, "epochs", "b", **kw)
    ref = make_policy()
    for epoch, part in enumerate((rows[:100], rows[100:200], rows[200:])):
        if epoch:
            now[0] = 10.0 * epoch + 1.0
            for s in (sa, sb):  # the first round of the new epoch decays everything held
                s.sync_once()
            decay(ref, 0.5)
        for i, row in enumerate(part):
            feed(pa if i % 2 == 0 else pb, row)
            feed(ref, row)
        for s in (sa, sb, sa):
            s.sync_once()
    want = sync_export(ref.core)
    for p in (pa, pb):
        assert_same_evidence(sync_export(p.core), want)
    # the counts never decay; the statistics did (not the undecayed sum)
    assert n_updates(want, ref) == 300
    assert not np.allclose(want, single_process(300))
    # a replica that joins later merges the slots at their epochs
    now[0] = 25.0
    fresh = make_policy()
    RedisSync(fresh, redis_server.url, "epochs", "late", **kw).sync_once()
    assert_same_evidence(sync_export(fresh.core), want)
    # a slot one epoch behind is scaled up to the reader's epoch
    now[0] = 31.0
    sa.sync_once()  # a moves to epoch 3, b's slot is still at epoch 2
    decay(ref, 0.5)
    assert_same_evidence(sync_export(pa.core), sync_export(ref.core))


def test_epoch_settings_are_checked(redis_server: RedisServer) -> None:
    p = make_policy()
    with pytest.raises(SyncError, match="needs epoch_s"):
        RedisSync(p, redis_server.url, "e", "a", epoch_decay=0.5)
    with pytest.raises(SyncError, match="epoch_decay"):
        RedisSync(p, redis_server.url, "e", "a", epoch_s=1.0, epoch_decay=1.5)
    # the default clock is Redis's
    s = RedisSync(p, redis_server.url, "e", "a", epoch_s=3600.0, epoch_decay=0.9)
    s.sync_once()
    _, _, epoch = sync_decode(__import__("redis").Redis.from_url(redis_server.url).get(s.own_key))
    assert epoch == int(time.time() // 3600.0)


def test_model_added_while_syncing_is_refused_loudly(redis_server: RedisServer) -> None:
    """Add/remove changes the evidence layout: the replica stops merging (loudly) and keeps
    serving; every replica restarts under a new policy_key to change the action space."""
    p = make_policy()
    s = RedisSync(p, redis_server.url, "grow", "a")
    s.sync_once()
    p.add_model(ModelSpec("huge", 20.0, 60.0))
    with pytest.raises(IncompatibleReplicaError, match="changed since sync started"):
        s.sync_once()
    assert s.step() is True and "changed" in (s.status().last_error or "")
    p.select(np.ones(DIM), 300.0)


def test_another_blob_format_version_is_refused() -> None:
    p = make_policy()
    blob = bytearray(sync_encode(sync_fingerprint(p.core), sync_export(p.core)))
    blob[8:12] = (99).to_bytes(4, "little")
    with pytest.raises(StateError, match="format version 99"):
        sync_decode(bytes(blob))


def test_feedback_forwarded_to_the_replica_that_decided(redis_server: RedisServer) -> None:
    pa, pb = make_policy(), make_policy()
    sa = RedisSync(pa, redis_server.url, "fwd", "a")
    sb = RedisSync(pb, redis_server.url, "fwd", "b")
    d = pa.select(np.ones(DIM), 300.0)
    with pytest.raises(uniscale.UnknownDecisionError):
        pb.update(d.id, 0.9)  # pending decisions stay where they were made
    sb.forward_feedback("a", d.id, 0.9)
    sb.forward_feedback("a", d.id, 0.9)  # a duplicate: refused at a, counted
    sb.forward_feedback("a", 10_000, 0.5)  # never issued: refused at a, counted
    st = sa.sync_once()
    assert (st.forwarded_applied, st.forwarded_rejected) == (1, 2)
    assert pa.n_pending == 0
    assert n_updates(sync_export(pa.core), pa) == 1
    sb.sync_once()  # and the learning reaches b through the slots
    assert n_updates(sync_export(pb.core), pb) == 1
    with pytest.raises(SyncError, match="finite"):
        sb.forward_feedback("a", d.id, float("nan"))
