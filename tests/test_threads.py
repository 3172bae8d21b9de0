"""Concurrency: 8 threads hammer one learner (the core releases the GIL inside every call).

Checked: no exception (no "Already borrowed", no panic), no deadlock (every future finishes
within a timeout), no lost update (n_updates is the exact total), and the final statistics equal
those of a single-threaded learner fed the same multiset of updates. With discount = 1,
A = ridge I + sum x x' and b = sum (r - m) x do not depend on the order, so the results agree up
to floating-point reassociation (1e-8 relative is ample).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import Learner
from reference import linucb_from_state, shared_from_state

import uniscale

N_THREADS = 8
ROUNDS = 1000
BATCH_EVERY, BATCH = 10, 6
TIMEOUT_S = 60.0

Log = tuple[list[int], list[np.ndarray], list[float]]


def make(kind: str) -> Learner:
    if kind == "linucb":
        return uniscale.LinUCB(8, 12, alpha=0.5, prior_mean=0.1)
    psi = np.random.default_rng(0).normal(size=(8, 4))
    return uniscale.SharedLinUCB(psi, 8, alpha=0.5, prior_mean=0.1)


def hammer(learner: Learner, seed: int, start: threading.Barrier) -> Log:
    """select / scores / update / select_many / update_many in a loop; returns what it applied."""
    rng = np.random.default_rng(seed)
    k, d = learner.n_actions, learner.dim
    actions: list[int] = []
    xs: list[np.ndarray] = []
    rewards: list[float] = []
    start.wait(timeout=TIMEOUT_S)
    for i in range(ROUNDS):
        x = rng.normal(size=d)
        a = learner.select(x, rng.random(k) < 0.8 if i % 2 else None)
        mean, bonus = learner.scores(x)
        assert mean.shape == bonus.shape == (k,) and np.isfinite(mean).all()
        r = float(rng.normal())
        learner.update(a, x, r)
        actions.append(a)
        xs.append(x)
        rewards.append(r)
        if i % BATCH_EVERY == 0:
            X = rng.normal(size=(BATCH, d))
            chosen = learner.select_many(X)
            R = rng.normal(size=BATCH)
            learner.update_many(chosen, X, R)
            actions.extend(chosen.tolist())
            xs.extend(X)
            rewards.extend(R.tolist())
    return actions, xs, rewards


def snapshot_reader(learner: Learner, start: threading.Barrier, stop: threading.Event) -> int:
    """Takes state snapshots while the writers run: every snapshot must be a complete, loadable
    state (the lock makes to_bytes atomic), and n_updates never goes backwards."""
    cls = type(learner)
    start.wait(timeout=TIMEOUT_S)
    last, n = 0, 0
    while not stop.is_set():
        restored = cls.from_bytes(learner.to_bytes())
        assert restored.n_updates >= last
        last = restored.n_updates
        assert learner.n_updates >= last
        n += 1
    return n


@pytest.mark.parametrize("kind", ["linucb", "shared"])
def test_concurrent_hammering_loses_nothing(kind: str) -> None:
    learner = make(kind)
    start = threading.Barrier(N_THREADS + 1)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=N_THREADS + 1) as pool:
        reader = pool.submit(snapshot_reader, learner, start, stop)
        workers = [pool.submit(hammer, learner, seed, start) for seed in range(N_THREADS)]
        try:
            logs = [w.result(timeout=TIMEOUT_S) for w in workers]
        finally:
            stop.set()
        snapshots = reader.result(timeout=TIMEOUT_S)
    assert snapshots >= 1

    actions = np.concatenate([np.asarray(log[0], dtype=np.int64) for log in logs])
    X = np.concatenate([np.stack(log[1]) for log in logs])
    rewards = np.concatenate([np.asarray(log[2]) for log in logs])
    per_thread = ROUNDS + BATCH * len(range(0, ROUNDS, BATCH_EVERY))
    assert len(actions) == N_THREADS * per_thread
    assert learner.n_updates == len(actions), "an update was lost"

    sequential = make(kind)
    sequential.update_many(actions, X, rewards)
    assert sequential.n_updates == learner.n_updates
    np.testing.assert_allclose(learner.theta(), sequential.theta(), rtol=1e-8, atol=1e-12)
    parse = linucb_from_state if kind == "linucb" else shared_from_state
    concurrent_stats, sequential_stats = parse(learner.to_bytes()), parse(sequential.to_bytes())
    # Entries that cancel to near zero only agree relative to the matrix's scale.
    for got, want in (
        (concurrent_stats.A, sequential_stats.A),
        (concurrent_stats.b, sequential_stats.b),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    for x in np.random.default_rng(99).normal(size=(3, learner.dim)):
        for got, want in zip(learner.scores(x), sequential.scores(x), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)


def test_concurrent_action_edits_do_not_deadlock() -> None:
    """Writers that take the lock with the GIL held (add/remove actions, getters, pickling)
    interleaved with writers that take it without the GIL (update_many) must not deadlock."""
    learner = uniscale.SharedLinUCB(np.random.default_rng(1).normal(size=(4, 2)), 4)
    start = threading.Barrier(4)

    def updater(seed: int) -> int:
        rng = np.random.default_rng(seed)
        start.wait(timeout=TIMEOUT_S)
        for _ in range(200):
            k = learner.n_actions
            learner.update_many(rng.integers(0, 3, size=4), rng.normal(size=(4, 4)), np.ones(4))
            assert learner.select(rng.normal(size=4)) < max(k, learner.n_actions)
        return 1

    def editor() -> int:
        start.wait(timeout=TIMEOUT_S)
        for i in range(200):
            new = learner.add_actions(np.full((1, 2), float(i)))
            learner.remove_actions(new)  # never removes 0..2, which the updaters use
            assert learner.joint_dim == 15 and learner.n_action_features == 2
        return 1

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(updater, s) for s in range(3)] + [pool.submit(editor)]
        assert sum(f.result(timeout=TIMEOUT_S) for f in futures) == 4
    assert learner.n_actions == 4
    assert learner.n_updates == 3 * 200 * 4
