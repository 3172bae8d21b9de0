"""What one replica process of tests/test_sync.py runs (importable by multiprocessing's
spawn start method; not a test module), and the small three-model world it learns, which
tests/test_policy.py uses too."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from uniscale import Action, ActionSpace, ModelSpec, Policy

DIM = 4
MODELS = [
    ModelSpec("cheap", 0.2, 0.8, parallelism=4),
    ModelSpec("mid", 1.0, 4.0, parallelism=2),
    ModelSpec("big", 5.0, 20.0, parallelism=1),
]
TRUE_QUALITY = {"cheap": 0.45, "mid": 0.65, "big": 0.85}


def space(models: list[ModelSpec] | None = None) -> ActionSpace:
    """Every model of ``models`` (default `MODELS`) with every strategy at n in (1, 2, 4)."""
    return ActionSpace.grid(models or MODELS, n_values=(1, 2, 4))


def make_policy(models: list[ModelSpec] | None = None, **kw: Any) -> Policy:
    return Policy(space(models), DIM, **kw)


def noisy_quality(model: str, n: int, rng: np.random.Generator) -> float:
    """The quality of an answer of ``model`` with ``n`` samples: by model, a little more per
    log2(n), light noise."""
    return TRUE_QUALITY[model] + 0.03 * math.log2(n) + 0.05 * float(rng.normal())


Row = tuple[np.ndarray, int, float, float, float, float]


def stream(n: int, seed: int = 7) -> list[Row]:
    """(x, action index, quality, input tokens, output tokens, latency) rows."""
    rng = np.random.default_rng(seed)
    actions: list[Action] = make_policy().actions
    rows: list[Row] = []
    for _ in range(n):
        a = int(rng.integers(len(actions)))
        act = actions[a]
        q = noisy_quality(act.model, act.n, rng)
        rows.append(
            (
                rng.normal(size=DIM),
                a,
                q,
                float(rng.uniform(50, 3000)),
                float(rng.uniform(20, 900)) * act.n,
                float(rng.uniform(0.2, 9.0)),
            )
        )
    return rows


def feed(policy: Policy, row: Row) -> None:
    x, a, q, tin, tout, lat = row
    policy.observe(x, a, q, input_tokens=tin, output_tokens=tout, latency_s=lat)


def replica(
    url: str, key: str, rid: int, n_replicas: int, n_rows: int, barrier: Any, out: Any
) -> None:
    """Feeds shard ``rid`` of the stream while the sync thread runs, pushes, waits for the
    others, pulls once more and reports its evidence vector."""
    from uniscale._core import sync_export
    from uniscale.sync import RedisSync

    policy = make_policy()
    sync = RedisSync(policy, url, key, f"r{rid}", interval_s=0.02)
    sync.start()
    for i, row in enumerate(stream(n_rows)):
        if i % n_replicas == rid:
            feed(policy, row)
    sync.stop(final_push=True)
    barrier.wait(60)
    sync.sync_once()
    st = sync.status()
    out.put((rid, sync_export(policy.core).tolist(), st.slots_merged, st.locked_rebuilds))
    sync.close()
