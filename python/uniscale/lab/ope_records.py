"""Off-policy evaluation inputs: logged decisions (`LoggedDecision`, `records_from_log`) and the
target policies they are judged for (`fixed_action_target`, `PolicyTarget`), with `OPEError`."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from uniscale._core import StateError, UniScaleError
from uniscale.policy import Policy, RewardWeights, resolve_reward
from uniscale.records import DecisionRecord, FeedbackRecord, parse_record
from uniscale.router import read_decision_log

logger = logging.getLogger(__name__)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: ``pi(x, candidates) -> probabilities`` (one per candidate, non-negative, summing to <= 1).
TargetPolicy = Callable[[F64 | None, Sequence[int]], ArrayLike]

ESTIMATORS = ("ips", "snips", "dr")
_RECORD_TYPES = ("decision", "feedback")


class OPEError(UniScaleError):
    """Invalid input to off-policy evaluation (missing or zero propensities, a logged action
    outside its candidates, a target returning bad probabilities, ...)."""


# Its public home (and the name tracebacks and pickles use) is uniscale.lab.ope.
OPEError.__module__ = "uniscale.lab.ope"


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """One logged decision. ``action`` and ``candidates`` are action ids (a `Policy`'s stable
    uids in a decision log); ``propensity`` is the probability with which the logger picked
    ``action``; ``probabilities`` (optional) is the logger's whole distribution over
    ``candidates``. ``x`` may be ``None`` when the log holds no features."""

    x: F64 | None
    action: int
    propensity: float
    reward: float
    candidates: tuple[int, ...]
    probabilities: tuple[float, ...] | None = None
    input_tokens: float = 0.0
    decision_id: int | None = None

    def __post_init__(self) -> None:
        where = f"record {self.decision_id}" if self.decision_id is not None else "record"
        p = self.propensity
        if p is None or not isinstance(p, int | float) or not math.isfinite(p):
            raise OPEError(f"{where}: propensity must be a finite number, got {p!r}")
        if not 0.0 < p <= 1.0 + 1e-9:
            raise OPEError(
                f"{where}: propensity must be in (0, 1], got {p!r} (a propensity of 0 means "
                "the logged action could not have been chosen: the log is inconsistent)"
            )
        r = self.reward
        if r is None or not isinstance(r, int | float) or not math.isfinite(r):
            raise OPEError(f"{where}: reward must be a finite number, got {r!r}")
        if not self.candidates:
            raise OPEError(f"{where}: empty candidate list")
        if self.action not in self.candidates:
            raise OPEError(f"{where}: logged action {self.action} is not among its candidates")
        if self.probabilities is not None and len(self.probabilities) != len(self.candidates):
            raise OPEError(
                f"{where}: {len(self.probabilities)} probabilities for "
                f"{len(self.candidates)} candidates"
            )


def _as_record(r: LoggedDecision | Mapping[str, Any], i: int) -> LoggedDecision:
    if isinstance(r, LoggedDecision):
        return r
    if not isinstance(r, Mapping):
        raise OPEError(f"record {i}: expected a LoggedDecision or a mapping, got {type(r)}")
    missing = [k for k in ("action", "propensity", "reward", "candidates") if r.get(k) is None]
    if missing:
        raise OPEError(f"record {i}: missing {missing}")
    x = r.get("x")
    probs = r.get("probabilities")
    return LoggedDecision(
        x=None if x is None else np.asarray(x, dtype=np.float64),
        action=int(r["action"]),
        propensity=float(r["propensity"]),
        reward=float(r["reward"]),
        candidates=tuple(int(c) for c in r["candidates"]),
        probabilities=None if probs is None else tuple(float(p) for p in probs),
        input_tokens=float(r.get("input_tokens") or 0.0),
        decision_id=r.get("decision_id"),
    )


def records_from_log(
    source: str | os.PathLike[str] | Iterable[DecisionRecord | FeedbackRecord | Mapping[str, Any]],
    *,
    weights: str | RewardWeights | tuple[float, float, float] | None = None,
) -> list[LoggedDecision]:
    """`LoggedDecision` records from a `DecisionLog` file (path), its parsed dicts or typed
    records (`uniscale.records.DecisionRecord`, `FeedbackRecord`), of any schema version the
    package reads (`uniscale.records.parse_record`).

    ``"feedback"`` records complete deferred decisions (joined on ``decision_id``; where
    several writers share a log and their ids overlap, a feedback completes the latest decision
    with its id still waiting for one); decisions that never got a reward are skipped (counted
    in a log message). Every decision record counts once. The action ids are the
    stable uids (``decision.action_uid``, ``candidate_uids``); logs without ``candidate_uids``
    fall back to the action indices. With ``weights`` the reward is recomputed from the logged
    components (quality, cost, latency and their scales) under those weights, so a log can be
    evaluated under another preset. Raises `OPEError` on a missing or zero propensity and on a
    record that does not parse (e.g. a newer schema).
    """
    it = read_decision_log(source) if isinstance(source, str | os.PathLike) else source
    w = None if weights is None else resolve_reward(weights)
    decisions: list[DecisionRecord] = []
    waiting: dict[int, list[int]] = {}  # decision id -> indices of its decisions without reward
    early: dict[int, FeedbackRecord] = {}  # feedback read before any decision with its id
    for n, raw in enumerate(it):
        if isinstance(raw, Mapping) and raw.get("type", "decision") not in _RECORD_TYPES:
            continue  # a record kind this reader does not use
        try:
            rec = (
                raw
                if isinstance(raw, DecisionRecord | FeedbackRecord)
                else parse_record(raw, index=n)
            )
        except StateError as exc:
            raise OPEError(f"log record {n}: {exc}") from None
        if isinstance(rec, FeedbackRecord):
            # Several writers (replicas, loggers) may share a log with overlapping ids:
            # feedback completes the latest decision with its id that still waits for one.
            stack = waiting.get(rec.decision_id)
            if stack:
                i = stack.pop()
                decisions[i] = decisions[i].completed(rec)
            else:
                early[rec.decision_id] = rec  # e.g. rotated files read newest first
        else:
            if rec.reward is None and rec.decision_id in early:
                rec = rec.completed(early.pop(rec.decision_id))
            if rec.reward is None:
                waiting.setdefault(rec.decision_id, []).append(len(decisions))
            decisions.append(rec)
    out: list[LoggedDecision] = []
    skipped = 0
    for rec in decisions:
        did = rec.decision_id
        if rec.reward is None:
            skipped += 1
            continue
        if rec.propensity is None:
            raise OPEError(f"decision {did}: the log has no propensity for the chosen action")
        uids = rec.candidate_uids
        if uids is not None and None not in uids and rec.action_uid is not None:
            cands = tuple(int(u) for u in uids)  # type: ignore[arg-type]
            action = rec.action_uid
        else:
            if rec.action_index is None:
                raise OPEError(f"decision {did}: the log names no chosen action")
            cands = rec.candidates
            action = rec.action_index
        reward = rec.reward
        if w is not None:
            if rec.reward_components is None:
                raise OPEError(f"decision {did}: no reward components to reweight")
            reward = rec.reward_components.reward(w)
        out.append(
            LoggedDecision(
                x=None if rec.x is None else np.asarray(rec.x, dtype=np.float64),
                action=action,
                propensity=rec.propensity,
                reward=reward,
                candidates=cands,
                probabilities=rec.probabilities,
                input_tokens=rec.input_tokens or 0.0,
                decision_id=did,
            )
        )
    if skipped:
        logger.info("records_from_log: skipped %d decisions without a reward", skipped)
    return out


def fixed_action_target(action: int) -> TargetPolicy:
    """Always ``action`` (probability 0 on every candidate when it is not among them)."""

    def pi(x: F64 | None, candidates: Sequence[int]) -> F64:
        return np.array([1.0 if c == action else 0.0 for c in candidates])

    return pi


class PolicyTarget:
    """A frozen, greedy copy of a `Policy` as a target: ``pi(x, candidates)`` is one-hot on the
    action the copy's ``select`` picks among ``candidates`` (restricted to ``models`` if given).

    ``action_ids[i]`` is the id of the policy's action ``i`` as used in the records (default:
    the stable uids, as in a decision log). ``input_tokens`` feeds the cost prediction when a
    record does not carry its own (`evaluate` passes the record's). Only the copy is ever
    touched: its pending decisions pile up unanswered and are evicted by its capacity limit.
    """

    __slots__ = ("_copy", "_ids", "_index", "input_tokens", "name")

    def __init__(
        self,
        policy: Policy,
        *,
        action_ids: Sequence[int] | None = None,
        models: Iterable[str] | None = None,
        input_tokens: float = 0.0,
        name: str = "frozen_policy",
    ) -> None:
        self._copy = Policy.from_bytes(policy.to_bytes(), list(policy.models.values()))
        self._copy.set_exploration("greedy")
        acts = self._copy.actions
        ids = self._copy.action_uids if action_ids is None else [int(i) for i in action_ids]
        if len(ids) != len(acts):
            raise OPEError(f"action_ids has {len(ids)} entries for {len(acts)} actions")
        allowed = None if models is None else set(models)
        self._ids = ids
        self._index = {
            aid: i for i, aid in enumerate(ids) if allowed is None or acts[i].model in allowed
        }
        self.input_tokens = float(input_tokens)
        self.name = name

    def __call__(self, x: F64 | None, candidates: Sequence[int]) -> F64:
        return self.probabilities(x, candidates, self.input_tokens)

    def probabilities(self, x: F64 | None, candidates: Sequence[int], input_tokens: float) -> F64:
        if x is None:
            raise OPEError(
                "a policy target needs the features x; write the decision log with "
                "include_features=True"
            )
        out = np.zeros(len(candidates))
        mask = np.zeros(self._copy.n_actions, dtype=bool)
        for c in candidates:
            i = self._index.get(c)
            if i is not None:
                mask[i] = True
        if not mask.any():
            return out
        d = self._copy.select(x, input_tokens, mask=mask, now=0.0)
        chosen = self._ids[d.index]
        for j, c in enumerate(candidates):
            if c == chosen:
                out[j] = 1.0
                break
        return out

    def __repr__(self) -> str:
        return f"PolicyTarget({self._copy!r})"


def _target_probs(pi: TargetPolicy, rec: LoggedDecision, i: int) -> F64:
    if isinstance(pi, PolicyTarget):
        raw: ArrayLike = pi.probabilities(rec.x, rec.candidates, rec.input_tokens)
    else:
        raw = pi(rec.x, rec.candidates)
    p = np.asarray(raw, dtype=np.float64).reshape(-1)
    if p.shape != (len(rec.candidates),):
        raise OPEError(
            f"record {i}: the target returned {p.shape[0]} probabilities for "
            f"{len(rec.candidates)} candidates"
        )
    if not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() > 1.0 + 1e-6:
        raise OPEError(
            f"record {i}: the target's probabilities must be finite, >= 0 and sum to <= 1, "
            f"got {p.tolist()}"
        )
    return p
