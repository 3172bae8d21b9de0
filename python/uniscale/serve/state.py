"""Policy state of ``uniscale serve``: load at start, snapshot periodically and at shutdown.

``PATH`` is the snapshot; ``PATH.prev`` the one before it. A snapshot first renames ``PATH``
to ``PATH.prev`` and then saves with `Policy.save` (temp file, fsync, rename, after loading the
bytes back), so there is always a good file on disk: a crash between the two steps leaves
``PATH.prev``. At start the newest file that loads is used; a file that does not load is moved
aside to ``PATH.corrupt-<unix time>`` with an ERROR log line (never deleted, never a crash
loop), and with neither the server starts fresh.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from uniscale._core import ConfigError, StateError
from uniscale.serve.hooks import ServedPolicy
from uniscale.space import Action, ModelSpec

logger = logging.getLogger(__name__)


def previous(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def quarantine(path: Path, why: str) -> Path:
    """Move an unusable snapshot aside (never delete it) and say so loudly."""
    dest = path.with_name(f"{path.name}.corrupt-{int(time.time() * 1000)}")
    os.replace(path, dest)
    logger.error(
        "UNISCALE STATE: the policy snapshot %s cannot be used (%s); moved it to %s",
        path,
        why,
        dest,
    )
    return dest


def load_policy(
    path: Path | None,
    fresh: Callable[[], ServedPolicy],
    models: Sequence[ModelSpec],
    actions: Sequence[Action],
    dim: int,
) -> tuple[ServedPolicy, str]:
    """The policy to serve with and where it came from (``"fresh"`` or the file). A snapshot
    whose action grid or dimension differs from the configuration raises `ConfigError`: that is
    an operator's decision (move the file or fix the configuration), not corruption."""
    if path is None:
        return fresh(), "fresh"
    for p in (path, previous(path)):
        if not p.exists():
            continue
        try:
            loaded = ServedPolicy.load(p, models)
        except (StateError, OSError, ValueError) as exc:
            quarantine(p, f"{type(exc).__name__}: {exc}")
            continue
        assert isinstance(loaded, ServedPolicy)  # Policy.load builds an instance of cls
        pol = loaded
        if pol.dim != dim or sorted(map(str, pol.actions)) != sorted(map(str, actions)):
            raise ConfigError(
                f"the policy snapshot {p} was made for another configuration (dim {pol.dim}, "
                f"{pol.n_actions} actions; the configuration has dim {dim}, {len(actions)} "
                "actions); move it away to start fresh, or restore the configuration"
            )
        if p != path:
            logger.warning("UNISCALE STATE: started from the previous snapshot %s", p)
        return pol, str(p)
    return fresh(), "fresh"


def snapshot(policy: ServedPolicy, path: Path) -> None:
    """Save ``policy`` to ``path``, keeping the last good snapshot as ``path.prev``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.replace(path, previous(path))
    policy.save(path)
