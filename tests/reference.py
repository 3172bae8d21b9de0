"""NumPy reference implementation of the two LinUCB learners: the oracle the Rust core is tested
against.

Deliberately naive: the statistics ``A`` and ``b`` are accumulated exactly as the formulas read,
every score is computed with a direct ``np.linalg.solve`` (no Sherman-Morrison, no cached
inverse), and the shared learner forms each joint feature vector ``phi`` explicitly instead of
exploiting the Kronecker structure. Speed is irrelevant here; obviousness is the point.

Formulas (``g`` = discount, ``m`` = prior_mean), per updated model:

    A <- g A + x x' + (1 - g) ridge I        (A starts at ridge I)
    b <- g b + (r - m) x                     (b starts at 0)
    mean  = m + theta . x,  theta = A^-1 b
    bonus = alpha * sqrt(x' A^-1 x)
    select = argmax(mean + bonus) over allowed actions, ties -> lowest index

The helpers at the bottom read the ``A`` and ``b`` a Rust learner stores out of its state blob
(format documented in ``rust/state.rs``), so a test can compare the Rust scores with a direct
solve on the Rust's *own* accumulated statistics.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

HEADER_LEN = 21  # magic (8) + version (4) + kind (1) + payload length (8)
KIND_LINUCB = 1
KIND_SHARED = 2


def masked_argmax(total: F64, mask: NDArray[np.bool_] | None = None) -> int:
    """Index of the largest allowed score; ties go to the lowest index (np.argmax's rule)."""
    if mask is None:
        return int(np.argmax(total))
    allowed = np.flatnonzero(mask)
    if allowed.size == 0:
        raise ValueError("every action is masked out")
    return int(allowed[np.argmax(total[allowed])])


def _solve_scores(a: F64, b: F64, x: F64, alpha: float, prior_mean: float) -> tuple[float, float]:
    theta = np.linalg.solve(a, b)
    var = float(x @ np.linalg.solve(a, x))
    return prior_mean + float(theta @ x), alpha * float(np.sqrt(max(var, 0.0)))


class _RefUCB:
    """What both reference learners share: the hyperparameters, `update_many`'s fallback to a
    loop of `update` under discounting, and selection by the upper confidence bound."""

    def __init__(
        self,
        dim: int,
        alpha: float = 1.0,
        ridge: float = 1.0,
        discount: float = 1.0,
        prior_mean: float = 0.0,
    ) -> None:
        self.dim = dim
        self.alpha, self.ridge, self.discount, self.prior_mean = alpha, ridge, discount, prior_mean

    def update(self, action: int, x: F64, reward: float) -> None:
        raise NotImplementedError

    def _update_batch(self, actions: NDArray[np.int64], X: F64, rewards: F64) -> None:
        """`update_many` without discounting (where a batch form exists)."""
        raise NotImplementedError

    def scores(self, x: F64) -> tuple[F64, F64]:
        raise NotImplementedError

    def update_many(self, actions: NDArray[np.int64], X: F64, rewards: F64) -> None:
        """Same as a loop of `update`; vectorised when there is no discount."""
        if self.discount != 1.0:
            for a, x, r in zip(actions, X, rewards, strict=True):
                self.update(int(a), x, float(r))
            return
        self._update_batch(actions, X, rewards)

    def select(self, x: F64, mask: NDArray[np.bool_] | None = None) -> int:
        mean, bonus = self.scores(x)
        return masked_argmax(mean + bonus, mask)


class RefLinUCB(_RefUCB):
    """Disjoint LinUCB: one ridge model (A_a, b_a) per action."""

    def __init__(self, n_actions: int, dim: int, **hyper: float) -> None:
        super().__init__(dim, **hyper)
        self.A = np.stack([self.ridge * np.eye(dim) for _ in range(n_actions)])
        self.b = np.zeros((n_actions, dim))
        # Updates per arm: removing an action removes its evidence, and its count with it.
        self.counts = np.zeros(n_actions, dtype=np.int64)

    @property
    def n_updates(self) -> int:
        return int(self.counts.sum())

    @property
    def n_actions(self) -> int:
        return int(self.A.shape[0])

    def update(self, action: int, x: F64, reward: float) -> None:
        g = self.discount
        x = np.asarray(x, dtype=np.float64)
        self.A[action] = (
            g * self.A[action] + np.outer(x, x) + (1.0 - g) * self.ridge * np.eye(self.dim)
        )
        self.b[action] = g * self.b[action] + (reward - self.prior_mean) * x
        self.counts[action] += 1

    def _update_batch(self, actions: NDArray[np.int64], X: F64, rewards: F64) -> None:
        """X_a' X_a per arm."""
        for a in np.unique(actions):
            rows = actions == a
            self.A[a] += X[rows].T @ X[rows]
            self.b[a] += (rewards[rows] - self.prior_mean) @ X[rows]
            self.counts[a] += int(rows.sum())

    def theta(self) -> F64:
        return np.stack([np.linalg.solve(a, b) for a, b in zip(self.A, self.b, strict=True)])

    def scores(self, x: F64) -> tuple[F64, F64]:
        x = np.asarray(x, dtype=np.float64)
        pairs = [
            _solve_scores(a, b, x, self.alpha, self.prior_mean)
            for a, b in zip(self.A, self.b, strict=True)
        ]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


class RefSharedLinUCB(_RefUCB):
    """Shared LinUCB: one ridge model over phi(x, a) = kron([1, x], [1, psi_a])."""

    def __init__(self, action_features: F64, dim: int, **hyper: float) -> None:
        super().__init__(dim, **hyper)
        self.psi = np.array(action_features, dtype=np.float64, ndmin=2)
        self.joint_dim = (dim + 1) * (self.psi.shape[1] + 1)
        self.A = self.ridge * np.eye(self.joint_dim)
        self.b = np.zeros(self.joint_dim)
        self.n_updates = 0

    @property
    def n_actions(self) -> int:
        return int(self.psi.shape[0])

    def phi(self, x: F64, action: int) -> F64:
        return np.kron(np.r_[1.0, x], np.r_[1.0, self.psi[action]]).astype(np.float64)

    def update(self, action: int, x: F64, reward: float) -> None:
        g = self.discount
        f = self.phi(np.asarray(x, dtype=np.float64), action)
        self.A = g * self.A + np.outer(f, f) + (1.0 - g) * self.ridge * np.eye(self.joint_dim)
        self.b = g * self.b + (reward - self.prior_mean) * f
        self.n_updates += 1

    def _update_batch(self, actions: NDArray[np.int64], X: F64, rewards: F64) -> None:
        # Row t is kron(u_t, v_{a_t}): the outer product u_t v_t', flattened row-major.
        U = np.c_[np.ones(len(actions)), np.asarray(X).reshape(len(actions), self.dim)]
        V = np.c_[np.ones(len(actions)), self.psi[actions]]
        phis = (U[:, :, None] * V[:, None, :]).reshape(len(actions), self.joint_dim)
        self.A += phis.T @ phis
        self.b += (rewards - self.prior_mean) @ phis
        self.n_updates += len(actions)

    def theta(self) -> F64:
        return np.asarray(np.linalg.solve(self.A, self.b), dtype=np.float64)

    def scores(self, x: F64) -> tuple[F64, F64]:
        x = np.asarray(x, dtype=np.float64)
        pairs = [
            _solve_scores(self.A, self.b, self.phi(x, a), self.alpha, self.prior_mean)
            for a in range(self.n_actions)
        ]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


# --- reading the statistics back out of a Rust state blob --------------------------------------


@dataclass
class _Cursor:
    buf: bytes
    pos: int = HEADER_LEN

    def u64(self) -> int:
        (v,) = struct.unpack_from("<Q", self.buf, self.pos)
        self.pos += 8
        return int(v)

    def f64(self) -> float:
        (v,) = struct.unpack_from("<d", self.buf, self.pos)
        self.pos += 8
        return float(v)

    def f64s(self) -> F64:
        n = self.u64()
        out = np.frombuffer(self.buf, dtype="<f8", count=n, offset=self.pos).astype(np.float64)
        self.pos += 8 * n
        return out


def _open(blob: bytes, kind: int) -> _Cursor:
    assert blob[:8] == b"UNISCALE" and blob[12] == kind
    return _Cursor(blob)


def linucb_from_state(blob: bytes) -> RefLinUCB:
    """A reference learner holding exactly the A and b stored in a LinUCB state blob."""
    c = _open(blob, KIND_LINUCB)
    k, d = c.u64(), c.u64()
    alpha, ridge, discount, prior_mean = c.f64(), c.f64(), c.f64(), c.f64()
    ref = RefLinUCB(k, d, alpha=alpha, ridge=ridge, discount=discount, prior_mean=prior_mean)
    for a in range(k):
        ref.counts[a] = c.u64()
        ref.A[a] = c.f64s().reshape(d, d)
        ref.b[a] = c.f64s()
    return ref


def shared_from_state(blob: bytes) -> RefSharedLinUCB:
    """A reference learner holding exactly the A and b stored in a SharedLinUCB state blob."""
    c = _open(blob, KIND_SHARED)
    k, d, p = c.u64(), c.u64(), c.u64()
    alpha, ridge, discount, prior_mean = c.f64(), c.f64(), c.f64(), c.f64()
    psi = c.f64s().reshape(k, p)
    ref = RefSharedLinUCB(
        psi, d, alpha=alpha, ridge=ridge, discount=discount, prior_mean=prior_mean
    )
    ref.n_updates = c.u64()
    ref.A = c.f64s().reshape(ref.joint_dim, ref.joint_dim)
    ref.b = c.f64s()
    return ref


class RefPacer:
    """The budget pacer of ``rust/pacing.rs`` for a per-request target, in plain Python:
    ``debt`` is the running relative overspend floored at ``-carryover`` (capped so that
    lambda cannot wind up past its maximum), and ``lambda = clamp(step * debt, 0, 1e4)``."""

    LAMBDA_MAX = 1e4

    def __init__(self, target: float, step: float, carryover: float) -> None:
        self.target, self.step, self.carryover = target, step, carryover
        self.debt = 0.0
        self.lam = 0.0

    def observe(self, cost: float) -> None:
        self.debt = min(
            max(self.debt + (cost - self.target) / self.target, -self.carryover),
            self.LAMBDA_MAX / self.step,
        )
        self.lam = min(max(self.step * self.debt, 0.0), self.LAMBDA_MAX)

    @property
    def credit(self) -> float:
        return max(-self.debt, 0.0)
