"""What `uniscale.sync` is built from: its errors, the Redis key layout of a policy's replicas,
the status record, and the Redis connection and the atomic local slot file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from uniscale._core import PolicyCore, UniScaleError

if TYPE_CHECKING:
    from uniscale.policy import Policy


Vector = npt.NDArray[np.float64]
BreakerState = Literal["closed", "open", "half_open"]


class SyncError(UniScaleError):
    """Base class of multi-replica synchronisation errors."""


class IncompatibleReplicaError(SyncError):
    """A slot was written by a replica whose action space, featurizer or learner configuration
    differs (another fingerprint): it is not merged; this replica keeps serving."""


# Their public home (and the name tracebacks and pickles use) is uniscale.sync.
SyncError.__module__ = IncompatibleReplicaError.__module__ = "uniscale.sync"


def slot_key(policy_key: str, replica_id: str) -> str:
    """The Redis key of one replica's slot. The hash tag ``{policy_key}`` keeps every key of
    one policy in one Redis Cluster slot, so the multi-key MGET never fails with CROSSSLOT."""
    return f"{{{policy_key}}}:slot:{replica_id}"


def base_key(policy_key: str) -> str:
    """The Redis key of the compacted base: the summed slots of replicas that are gone for
    good (`RedisSync.compact`)."""
    return f"{{{policy_key}}}:base"


def inbox_key(policy_key: str, replica_id: str) -> str:
    """The Redis list of feedback forwarded to one replica (`RedisSync.forward_feedback`)."""
    return f"{{{policy_key}}}:feedback:{replica_id}"


def replicas_key(policy_key: str) -> str:
    """The Redis set of the replica ids that have a slot (same hash tag as the slots)."""
    return f"{{{policy_key}}}:replicas"


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """A snapshot of a `RedisSync`'s state, for metrics and health checks."""

    replica_id: str
    #: Unix time of the last successful round (None: none yet).
    last_sync_s: float | None
    #: Duration of the last successful round (push, pull, rebuild, swap).
    last_round_s: float | None
    rounds: int
    failures: int
    consecutive_failures: int
    breaker: BreakerState
    #: Other replicas' slots merged in the last successful round.
    slots_merged: int
    #: Replica ids whose slots were refused in the last round (another fingerprint).
    incompatible: tuple[str, ...]
    #: Unreadable (corrupt, truncated) slots skipped in the last round.
    corrupt: int
    #: Rebuilds that had to hold the policy's lock (local learning raced the rebuild).
    locked_rebuilds: int
    #: Whether this replica's own slot was found in Redis (restart) and taken over.
    recovered: bool
    #: Feedback other replicas forwarded here: applied, and refused by the policy (unknown,
    #: expired or duplicate decision ids; malformed records).
    forwarded_applied: int
    forwarded_rejected: int
    last_error: str | None


def _core_of(policy: Policy | PolicyCore) -> PolicyCore:
    if isinstance(policy, PolicyCore):
        return policy
    core = getattr(policy, "core", None)
    if not isinstance(core, PolicyCore):
        raise TypeError(f"expected a uniscale.Policy or PolicyCore, got {type(policy).__name__}")
    return core


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename: the file is always a whole blob."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _connect(url: str, timeout_s: float, cluster: bool) -> Any:
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.cluster import RedisCluster
        from redis.retry import Retry
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise SyncError("uniscale.sync needs redis-py: pip install 'uniscale[redis]'") from e
    # No client-side retries: the breaker below decides when to try again, and a retry loop
    # inside redis-py would hide outages from the metrics.
    if cluster:
        return RedisCluster.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )
