"""Many replicas, one policy: share what each replica learns through Redis.

Each replica owns one Redis key, its *slot* ``{policy_key}:slot:{replica_id}``, holding the
cumulative evidence it contributed (the additive statistics of everything it learned, minus the
prior) as one binary float64 blob. Every ``interval_s`` a background thread pushes its slot,
reads the others' and rebuilds the policy's statistics as ``prior + own + sum(others)``. The
request path never touches Redis: ``select``/``update`` keep running on the local policy, the
rebuild (O(D^3)) runs without the policy's lock, and the lock is taken only to copy the
statistics out and swap the rebuilt ones in. See docs/sync.md for the design, the precision
argument, what merges and what stays local, and the failure behaviour.

Requires the ``[redis]`` extra (redis-py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uniscale._core import (
    PolicyCore,
    StateError,
    UniScaleError,
    sync_apply,
    sync_count_mask,
    sync_decode,
    sync_encode,
    sync_export,
    sync_fingerprint,
    sync_updates,
)

# The errors, key layout, status record and helpers live in sync_common (re-exported here).
from uniscale.sync_common import BreakerState as BreakerState
from uniscale.sync_common import (
    IncompatibleReplicaError,
    SyncError,
    SyncStatus,
    base_key,
    inbox_key,
    replicas_key,
    slot_key,
)
from uniscale.sync_common import Vector as Vector
from uniscale.sync_common import _atomic_write as _atomic_write
from uniscale.sync_common import _connect as _connect
from uniscale.sync_common import _core_of as _core_of

if TYPE_CHECKING:
    from uniscale.policy import Policy

__all__ = [
    "IncompatibleReplicaError",
    "RedisSync",
    "SyncError",
    "SyncStatus",
    "base_key",
    "inbox_key",
    "replicas_key",
    "slot_key",
]

log = logging.getLogger(__name__)


class RedisSync:
    """Shares a policy's learning with the other replicas of ``policy_key`` through Redis.

    ``start()`` runs a daemon thread that calls `sync_once` every ``interval_s`` (and, with
    ``every_updates``, as soon as that many local learner updates have arrived); ``stop()``
    ends it after one last push. `sync_once` can also be called directly (tests, a scheduler
    of your own). If Redis is unreachable the policy keeps learning locally and nothing is
    lost: the slot is cumulative, so the next successful push carries everything learned
    meanwhile. After ``failure_threshold`` consecutive failures the breaker opens and rounds
    are skipped for an exponentially growing backoff (``backoff_initial_s`` doubling up to
    ``backoff_max_s``); the first round after it is a half-open probe.

    A replica whose slot is already in Redis (a restart with the same ``replica_id``) takes
    it over: the policy's statistics at construction are replaced by the slot plus the
    others' slots at the first successful round (local learning since construction is kept).
    With ``state_path``, the slot is also written to that local file after every successful
    round, and read back when Redis has no slot (Redis lost its data): a replica restarting
    from a snapshot that holds merged statistics then does not count the others' learning as
    its own. Without either, whatever the policy held at construction becomes its
    contribution.
    """

    def __init__(
        self,
        policy: Policy | PolicyCore,
        url: str,
        policy_key: str,
        replica_id: str,
        interval_s: float = 1.0,
        *,
        every_updates: int | None = None,
        epoch_s: float | None = None,
        epoch_decay: float = 1.0,
        clock: Callable[[], float] | None = None,
        on_feedback: Callable[[int, float], object] | None = None,
        timeout_s: float = 0.5,
        failure_threshold: int = 3,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        state_path: str | Path | None = None,
        cluster: bool = False,
        client: Any = None,
    ) -> None:
        for name, v in (
            ("interval_s", interval_s),
            ("timeout_s", timeout_s),
            ("backoff_initial_s", backoff_initial_s),
            ("backoff_max_s", backoff_max_s),
        ):
            if not (np.isfinite(v) and v > 0):
                raise SyncError(f"{name} must be > 0, got {v!r}")
        if epoch_s is not None and not (np.isfinite(epoch_s) and epoch_s > 0):
            raise SyncError(f"epoch_s must be > 0, got {epoch_s!r}")
        if not (0.0 < epoch_decay <= 1.0):
            raise SyncError(f"epoch_decay must be in (0, 1], got {epoch_decay!r}")
        if epoch_decay < 1.0 and epoch_s is None:
            raise SyncError("epoch_decay < 1 needs epoch_s (the length of an epoch)")
        if every_updates is not None and every_updates < 1:
            raise SyncError(f"every_updates must be >= 1, got {every_updates!r}")
        if failure_threshold < 1:
            raise SyncError(f"failure_threshold must be >= 1, got {failure_threshold!r}")
        if not policy_key or not replica_id or ":" in replica_id or "{" in replica_id:
            raise SyncError(
                "policy_key and replica_id must be non-empty, and replica_id must not contain "
                f"':' or '{{' (got {policy_key!r}, {replica_id!r})"
            )
        self._core = _core_of(policy)
        self.policy_key = policy_key
        self.replica_id = replica_id
        self.interval_s = float(interval_s)
        self.every_updates = every_updates
        self.epoch_s = epoch_s
        self.epoch_decay = float(epoch_decay)
        self._clock = clock
        self._on_feedback = on_feedback or (
            lambda did, q: self._core.update(did, q, None, None, None, None, None)
        )
        self.failure_threshold = failure_threshold
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.state_path = None if state_path is None else Path(state_path)
        self._redis = client if client is not None else _connect(url, timeout_s, cluster)
        self._fp = sync_fingerprint(self._core)  # raises nothing; mergeability checked below
        # The evidence the policy holds now; ConfigError here if it cannot be merged at all.
        self._at0: Vector = sync_export(self._core)
        self._initialised = False
        self._own: Vector = np.zeros_like(self._at0)
        self._at: Vector = self._at0.copy()
        self._remote: Vector = np.zeros_like(self._at0)
        self._counts = np.asarray(sync_count_mask(self._core), dtype=bool)
        self._epoch: int | None = None if epoch_s is not None else 0
        self._round_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # status
        self._last_sync_s: float | None = None
        self._last_round_s: float | None = None
        self._rounds = 0
        self._failures = 0
        self._consecutive = 0
        self._next_try = 0.0
        self._slots_merged = 0
        self._incompatible: tuple[str, ...] = ()
        self._corrupt = 0
        self._locked_rebuilds = 0
        self._recovered = False
        self._forwarded_applied = 0
        self._forwarded_rejected = 0
        self._last_error: str | None = None

    # ----------------------------------------------------------------------------- status
    @property
    def fingerprint(self) -> int:
        return self._fp

    @property
    def own_key(self) -> str:
        return slot_key(self.policy_key, self.replica_id)

    def breaker(self) -> BreakerState:
        if self._consecutive < self.failure_threshold:
            return "closed"
        return "open" if time.monotonic() < self._next_try else "half_open"

    def status(self) -> SyncStatus:
        return SyncStatus(
            replica_id=self.replica_id,
            last_sync_s=self._last_sync_s,
            last_round_s=self._last_round_s,
            rounds=self._rounds,
            failures=self._failures,
            consecutive_failures=self._consecutive,
            breaker=self.breaker(),
            slots_merged=self._slots_merged,
            incompatible=self._incompatible,
            corrupt=self._corrupt,
            locked_rebuilds=self._locked_rebuilds,
            recovered=self._recovered,
            forwarded_applied=self._forwarded_applied,
            forwarded_rejected=self._forwarded_rejected,
            last_error=self._last_error,
        )

    def own_evidence(self) -> Vector:
        """This replica's cumulative contribution as of the last round (a copy)."""
        return self._own.copy()

    # ------------------------------------------------------------------------------ rounds
    def _initialise(self) -> None:
        """At the first contact with Redis: take over this replica's slot if it exists (in
        Redis, else in ``state_path``). An unreadable copy is skipped loudly (a file is moved
        aside); a copy of another fingerprint is refused."""
        found: tuple[str, Vector, int] | None = None
        blob = self._redis.get(self.own_key)
        if blob is not None:
            found = self._own_copy(bytes(blob), f"slot {self.own_key!r} in Redis")
        if found is None and self.state_path is not None and self.state_path.exists():
            found = self._own_copy(self.state_path.read_bytes(), f"file {str(self.state_path)!r}")
            if found is None:
                dest = self.state_path.with_name(
                    f"{self.state_path.name}.corrupt-{int(time.time() * 1000)}"
                )
                os.replace(self.state_path, dest)
                log.error("sync: moved the unreadable %s to %s", self.state_path, dest)
        if found is None:
            self._own = self._at0.copy()
            self._remote = np.zeros_like(self._at0)
        else:
            where, v, epoch = found
            self._own = v
            if self.epoch_s is not None:
                self._epoch = epoch
            # the statistics held at construction are replaced by the slot (+ the others')
            self._remote = self._at0 - v
            self._recovered = True
            log.info("replica %s recovered its own evidence from its %s", self.replica_id, where)
        self._at = self._at0
        self._initialised = True

    def _own_copy(self, blob: bytes, where: str) -> tuple[str, Vector, int] | None:
        try:
            fp, v, epoch = sync_decode(blob)
        except StateError as e:
            log.error("sync: replica %s: its own %s is unreadable (%s)", self.replica_id, where, e)
            return None
        if fp != self._fp or v.shape != self._at0.shape:
            raise IncompatibleReplicaError(
                f"replica {self.replica_id!r}: its own {where} was written by a policy "
                "with another action space or configuration; refusing to take it over "
                "(use another replica_id or policy_key, or delete it)"
            )
        return where, v, epoch

    # ------------------------------------------------------------------------------ epochs
    def _epoch_now(self) -> int:
        if self.epoch_s is None:
            return 0
        if self._clock is not None:
            t = self._clock()
        else:
            sec, usec = self._redis.time()  # Redis's clock: one clock for every replica
            t = float(sec) + float(usec) / 1e6
        return int(t // self.epoch_s)

    def _decayed(self, v: Vector, epochs: int) -> Vector:
        """``v`` moved ``epochs`` epochs forward: every entry but the counts times
        ``epoch_decay ** epochs``."""
        if epochs <= 0 or self.epoch_decay == 1.0:
            return v
        return np.where(self._counts, v, v * self.epoch_decay**epochs)

    def sync_once(self) -> SyncStatus:
        """One round: push this replica's slot, pull the others', rebuild and swap.

        Raises what Redis raises (nothing is lost: the slot is cumulative), and
        `IncompatibleReplicaError` after merging the compatible slots when some are not.
        """
        with self._round_lock:
            t0 = time.perf_counter()
            if self._fp != sync_fingerprint(self._core):
                raise IncompatibleReplicaError(
                    f"replica {self.replica_id!r}: the local policy's action space or "
                    "configuration changed since sync started; its evidence no longer has the "
                    "shared layout (restart every replica with a new policy_key)"
                )
            if not self._initialised:
                self._initialise()
            # feedback forwarded here first, so that this round's push carries it
            self._drain_inbox()
            cur = sync_export(self._core)
            self._own = self._own + (cur - self._at)
            self._at = cur
            r = self._redis
            # Epoch discounting: at the first round of a new epoch everything this replica
            # holds decays; committed only once the policy has decayed too (below).
            epoch = self._epoch_now()
            held = epoch if self._epoch is None else self._epoch
            epoch = max(epoch, held)
            own = self._decayed(self._own, epoch - held)
            own_blob = sync_encode(self._fp, own, epoch)
            pipe = r.pipeline(transaction=False)
            pipe.set(self.own_key, own_blob)
            pipe.sadd(replicas_key(self.policy_key), self.replica_id)
            pipe.smembers(replicas_key(self.policy_key))
            members = pipe.execute()[2]
            if self.state_path is not None:
                _atomic_write(self.state_path, own_blob)
            ids = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
            ids = [i for i in ids if i != self.replica_id]
            # one MGET, atomic: a compaction moves slots into the base between two commands,
            # never inside one, so this sees each slot exactly once
            keys = [base_key(self.policy_key)] + [slot_key(self.policy_key, i) for i in ids]
            blobs = r.mget(keys)
            merged, corrupt = 0, 0
            incompatible: list[str] = []
            slots: list[tuple[Vector, int]] = []
            for rid, blob in zip(["(base)", *ids], blobs, strict=True):
                if blob is None:
                    continue
                try:
                    fp, v, e = sync_decode(bytes(blob))
                except StateError as err:
                    corrupt += 1
                    log.error("sync: slot of replica %s is unreadable, skipped: %s", rid, err)
                    continue
                if fp != self._fp or v.shape != cur.shape:
                    incompatible.append(rid)
                    continue
                slots.append((v, e))
                merged += rid != "(base)"
            if self.epoch_s is not None and slots:
                # another replica already saw a later epoch: follow it
                later = max(e for _, e in slots)
                if later > epoch:
                    own = self._decayed(own, later - epoch)
                    epoch = later
            others = np.zeros_like(cur)
            for v, e in slots:
                others += self._decayed(v, epoch - e)
            # the policy's statistics decay with everything it holds (own and the others')
            remote = self._decayed(self._remote, epoch - held)
            add = others - remote + (self._decayed(cur, epoch - held) - cur)
            if np.any(add != 0.0):
                res = None
                for attempt in range(3):
                    res = sync_apply(self._core, add, force=attempt == 2)
                    if res is not None:
                        if attempt == 2:
                            self._locked_rebuilds += 1
                        break
                if res is None:  # pragma: no cover - force=True always swaps or raises
                    raise SyncError("merge did not complete")
                before, after = res
                self._own = own + (before - self._at)
                self._at = after
                self._remote = others
            else:
                self._own = own
            self._epoch = epoch
            self._slots_merged = merged
            self._corrupt = corrupt
            if incompatible and tuple(incompatible) != self._incompatible:
                log.error(
                    "sync: replicas %s of %r have another action space or configuration "
                    "(fingerprint); their learning is NOT merged",
                    incompatible,
                    self.policy_key,
                )
            self._incompatible = tuple(incompatible)
            self._rounds += 1
            self._last_sync_s = time.time()
            self._last_round_s = time.perf_counter() - t0
            if incompatible:
                raise IncompatibleReplicaError(
                    f"replica {self.replica_id!r} refused to merge the slots of "
                    f"{incompatible} (another action space, featurizer or learner "
                    "configuration); it keeps serving with the compatible ones"
                )
            return self.status()

    # ----------------------------------------------------------------------------- feedback
    def forward_feedback(self, replica_id: str, decision_id: int, quality: float) -> None:
        """Sends feedback for a decision another replica made (pending decisions stay with
        the replica that made them) to that replica's inbox; it applies it at its next round
        (`on_feedback`, by default the policy's ``update``). Raises what Redis raises: the
        caller decides whether to retry (a request path should not wait on it)."""
        if isinstance(decision_id, bool) or not isinstance(decision_id, int) or decision_id < 0:
            raise SyncError(f"decision_id must be an integer >= 0, got {decision_id!r}")
        if not math.isfinite(quality):
            raise SyncError(f"quality must be finite, got {quality!r}")
        if not replica_id or ":" in replica_id or "{" in replica_id:
            raise SyncError(f"bad replica_id {replica_id!r}")
        record = {"decision_id": decision_id, "quality": float(quality), "from": self.replica_id}
        self._redis.rpush(inbox_key(self.policy_key, replica_id), json.dumps(record))

    def _drain_inbox(self) -> None:
        """Applies the feedback forwarded to this replica (LPOP with a count: atomic, so two
        rounds never apply one record twice)."""
        key = inbox_key(self.policy_key, self.replica_id)
        while True:
            batch = self._redis.lpop(key, 256)
            if not batch:
                return
            for raw in batch:
                try:
                    rec = json.loads(raw)
                    did, q = rec["decision_id"], rec["quality"]
                    if isinstance(did, bool) or not isinstance(did, int):
                        raise TypeError(f"decision_id {did!r}")
                    self._on_feedback(did, float(q))
                except (UniScaleError, ValueError, KeyError, TypeError) as e:
                    self._forwarded_rejected += 1
                    log.warning("sync: forwarded feedback %r refused: %s", raw, e)
                else:
                    self._forwarded_applied += 1

    def compact(self, replica_ids: list[str]) -> int:
        """Folds the slots of replicas that are gone for good into the base key, in one Redis
        transaction (WATCH / MULTI, retried if a slot changes meanwhile), and forgets their ids:
        what they learned keeps counting, from one key. Returns how many slots were folded.

        Only for replicas that will not come back under the same id: a replica that restarts
        after its slot was compacted finds no slot and starts as a new contributor (its local
        copy, if any, would then count its old learning twice). Not available on Redis
        Cluster (no WATCH across the cluster client)."""
        if self.replica_id in replica_ids:
            raise SyncError(f"replica {self.replica_id!r} cannot compact its own slot")
        ids = sorted(set(replica_ids))
        if not ids:
            return 0
        import redis

        bkey = base_key(self.policy_key)
        skeys = [slot_key(self.policy_key, i) for i in ids]
        with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(bkey, *skeys)
                    blobs = pipe.mget([bkey, *skeys])
                    found: list[tuple[Vector, int]] = []
                    folded = 0
                    for i, blob in enumerate(blobs):
                        if blob is None:
                            continue
                        fp, v, e = sync_decode(bytes(blob))
                        if fp != self._fp or v.shape != self._at0.shape:
                            raise IncompatibleReplicaError(
                                f"{(['(base)', *ids])[i]!r} has another fingerprint; "
                                "nothing compacted"
                            )
                        found.append((v, e))
                        folded += i > 0
                    epoch = max((e for _, e in found), default=0)
                    total = np.zeros_like(self._at0)
                    for v, e in found:
                        total += self._decayed(v, epoch - e)
                    pipe.multi()
                    pipe.set(bkey, sync_encode(self._fp, total, epoch))
                    pipe.delete(*skeys)
                    pipe.srem(replicas_key(self.policy_key), *ids)
                    pipe.execute()
                    return folded
                except redis.WatchError:
                    continue

    def _record_failure(self, e: BaseException) -> None:
        self._failures += 1
        self._consecutive += 1
        self._last_error = f"{type(e).__name__}: {e}"
        if self._consecutive >= self.failure_threshold:
            k = self._consecutive - self.failure_threshold
            backoff = min(self.backoff_initial_s * 2.0 ** min(k, 60), self.backoff_max_s)
            self._next_try = time.monotonic() + backoff
            if self._consecutive == self.failure_threshold:
                log.warning(
                    "sync: Redis unreachable (%s); breaker open, learning continues locally",
                    self._last_error,
                )

    def step(self, force: bool = False) -> bool:
        """One round unless the breaker is open (``force``: even then); failures are recorded,
        never raised (the thread's body). Returns whether a round succeeded."""
        if self.breaker() == "open" and not force:
            return False
        try:
            self.sync_once()
        except IncompatibleReplicaError as e:
            # not a Redis failure: the compatible slots were merged
            self._last_error = str(e)
            self._consecutive = 0
            return True
        except Exception as e:  # Redis down, timeouts, a corrupt merge: keep serving
            self._record_failure(e)
            return False
        if self._consecutive >= self.failure_threshold:
            log.info("sync: Redis reachable again; breaker closed")
        self._consecutive = 0
        self._last_error = None
        return True

    # ---------------------------------------------------------------------------- lifecycle
    def start(self) -> RedisSync:
        if self._thread is not None:
            raise SyncError("RedisSync already started")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"uniscale-sync-{self.replica_id}", daemon=True
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        if self.every_updates is None:
            while not self._stop.is_set():
                self.step()
                self._stop.wait(self.interval_s)
            return
        # a round every interval_s, or sooner once every_updates local updates have arrived
        # (polled: the update count is O(K) under the lock)
        tick = min(self.interval_s, 0.01)
        while not self._stop.is_set():
            # counted from the start of the round: updates during it count toward the next
            start, seen = time.monotonic(), sync_updates(self._core)
            self.step()
            while not self._stop.wait(tick):
                if time.monotonic() - start >= self.interval_s:
                    break
                if sync_updates(self._core) - seen >= self.every_updates:
                    break

    def stop(self, final_push: bool = True, timeout_s: float = 5.0) -> None:
        """Ends the thread; with ``final_push`` one last round (tried even with the breaker
        open) pushes what was learned since the previous one. If Redis is down then, the slot
        keeps what was last pushed: save the policy locally too if that learning matters."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if final_push:
            self.step(force=True)

    def close(self) -> None:
        self.stop(final_push=False)
        close = getattr(self._redis, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> RedisSync:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
