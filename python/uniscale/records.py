"""The decision log's one schema: `DecisionRecord` and `FeedbackRecord`, typed and versioned.

A `DecisionRecord` is what `uniscale.engine.Engine.record` returns for one request: the
decision (chosen action, propensity, candidates after pruning, predictions), the request's
features or their hash, the realised outcome, the quality and the reward with its components.
A `FeedbackRecord` completes a deferred decision later. The `Router`, the offline replay and
off-policy evaluation all produce these, and `uniscale.DecisionLog` writes them, one
``to_json()`` per line.

Versions: ``schema`` 2 is these classes. Schema 1 is what the `Router` and
``uniscale.lab.ope`` wrote before the records were typed (dict literals, some keys missing);
`parse_record` still reads it, and version 2 keeps its keys, so a reader of version 1 logs
reads version 2 logs too. A record of any other version (a newer UniScale's log) raises
`StateError` naming the version instead of being misread.

The reward formula is `reward_value`, shared by everything in Python that prices an outcome
(table replay, re-pricing a log under other weights); the policy's own update computes the same
expression in Rust (``Policy::reward`` in ``rust/policy/feedback.rs``), tested equal in
tests/test_core.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, overload

import numpy as np
from numpy.typing import NDArray

from uniscale._core import StateError
from uniscale.policy import RewardWeights
from uniscale.space import Action

__all__ = [
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMAS",
    "DecisionRecord",
    "ErrorInfo",
    "FeedbackInfo",
    "FeedbackRecord",
    "Limits",
    "RewardComponents",
    "SideObservation",
    "parse_record",
    "reward_value",
]

#: The version `DecisionRecord.to_json` and `FeedbackRecord.to_json` write.
SCHEMA_VERSION = 2
#: The versions `parse_record` reads.
SUPPORTED_SCHEMAS = (1, 2)

F64 = NDArray[np.float64]


@overload
def reward_value(
    quality: float,
    cost_usd: float,
    latency_s: float,
    weights: RewardWeights,
    cost_scale: float,
    latency_scale: float,
) -> float: ...
@overload
def reward_value(
    quality: F64,
    cost_usd: F64,
    latency_s: F64,
    weights: RewardWeights | tuple[F64, F64, F64],
    cost_scale: float,
    latency_scale: float,
) -> F64: ...
def reward_value(
    quality: Any,
    cost_usd: Any,
    latency_s: Any,
    weights: RewardWeights | tuple[Any, Any, Any],
    cost_scale: float,
    latency_scale: float,
) -> Any:
    """``w_q * quality - w_c * cost_usd / cost_scale - w_l * latency_s / latency_scale``, for
    floats or NumPy arrays (broadcast; ``weights`` may be ``(w_q, w_c, w_l)`` columns that vary
    per row), evaluated in the order the Rust policy evaluates it, so the two agree to the last
    bit."""
    wq, wc, wl = (
        (weights.quality, weights.cost, weights.latency)
        if isinstance(weights, RewardWeights)
        else weights
    )
    return wq * quality - wc * cost_usd / cost_scale - wl * latency_s / latency_scale


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An exception, as the log keeps it: its class name and message."""

    type: str
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        return cls(type(exc).__name__, str(exc))

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}

    @classmethod
    def from_json(cls, obj: Any) -> ErrorInfo | None:
        if obj is None:
            return None
        m = _mapping(obj, "error")
        return cls(str(m.get("type", "")), str(m.get("message", "")))


@dataclass(frozen=True, slots=True)
class Limits:
    """The request's limits (``None``: no limit)."""

    max_cost_usd: float | None = None
    max_latency_s: float | None = None


@dataclass(frozen=True, slots=True)
class FeedbackInfo:
    """Where the quality came from: the feedback source's class name, whether a ground truth
    was given, and whether the update was deferred (quality to come in a `FeedbackRecord`)."""

    source: str
    ground_truth_given: bool = False
    deferred: bool = False


@dataclass(frozen=True, slots=True)
class RewardComponents:
    """What a reward was computed from: the realised cost and latency (as the policy took
    them), the weights and the scales. `reward` re-prices them under other weights."""

    quality: float
    cost_usd: float
    latency_s: float
    weights: RewardWeights
    cost_scale: float
    latency_scale: float
    learner_updated: bool | None = None

    def reward(self, weights: RewardWeights | None = None) -> float:
        """The reward under ``weights`` (default: the logged ones)."""
        w = self.weights if weights is None else weights
        return float(
            reward_value(
                self.quality, self.cost_usd, self.latency_s, w, self.cost_scale, self.latency_scale
            )
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "quality": self.quality,
            "cost_usd": self.cost_usd,
            "latency_s": self.latency_s,
            "weights": {
                "quality": self.weights.quality,
                "cost": self.weights.cost,
                "latency": self.weights.latency,
            },
            "cost_scale": self.cost_scale,
            "latency_scale": self.latency_scale,
        }
        if self.learner_updated is not None:
            out["learner_updated"] = self.learner_updated
        return out

    @classmethod
    def from_json(cls, obj: Any) -> RewardComponents | None:
        if not obj:
            return None
        m = _mapping(obj, "reward_components")
        w = _mapping(m.get("weights") or {}, "reward_components.weights")
        try:
            return cls(
                quality=float(m["quality"]),
                cost_usd=float(m["cost_usd"]),
                latency_s=float(m["latency_s"]),
                weights=RewardWeights(
                    float(w.get("quality", 1.0)),
                    float(w.get("cost", 1.0)),
                    float(w.get("latency", 0.2)),
                ),
                cost_scale=float(m["cost_scale"]),
                latency_scale=float(m["latency_scale"]),
                learner_updated=_opt_bool(m.get("learner_updated")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"reward_components is incomplete or invalid ({exc!r})") from None


@dataclass(frozen=True, slots=True)
class SideObservation:
    """A sub-run the policy learned from inside the executed run (see `uniscale.engine`)."""

    action: str
    quality: float
    samples_used: float


#: Keys of ``Decision.to_dict()`` that `DecisionRecord` holds as typed fields; the rest
#: (scores, prediction, pruning reasons, flags) stay in ``details``.
_TYPED_DECISION_KEYS = frozenset(
    {"id", "index", "action_uid", "model", "strategy", "n", "propensity", "candidates"}
    | {"probabilities", "input_tokens"}
)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision and what became of it: the one decision-log record (schema 2).

    Ids: ``action_index`` and ``candidates`` index the policy's action list at decision time;
    ``action_uid`` and ``candidate_uids`` are stable action ids (a `Policy`'s uids, or an
    outcome table's columns in logs of a table replay), which off-policy evaluation uses.
    ``details`` holds the rest of ``Decision.to_dict()`` (scores, predictions, pruning reasons,
    exploration flags). Quality and reward are ``None`` while feedback is deferred (a
    `FeedbackRecord` completes it) and the reward also when learning was skipped
    (``learning_skipped``). Fields a schema 1 log did not have are ``None``.
    """

    schema: ClassVar[int] = SCHEMA_VERSION

    decision_id: int
    time_s: float | None = None
    action: Action | None = None
    action_index: int | None = None
    action_uid: int | None = None
    propensity: float | None = None
    candidates: tuple[int, ...] = ()
    probabilities: tuple[float, ...] | None = None
    candidate_uids: tuple[int | None, ...] | None = None
    input_tokens: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    feature_version: str | None = None
    x_sha256: str | None = None
    x: tuple[float, ...] | None = None
    limits: Limits | None = None
    feedback: FeedbackInfo | None = None
    outcome: Mapping[str, Any] | None = None
    error: ErrorInfo | None = None
    quality: float | None = None
    reward: float | None = None
    reward_components: RewardComponents | None = None
    learning_skipped: ErrorInfo | None = None
    side_observations: tuple[SideObservation, ...] | None = None
    side_observations_error: ErrorInfo | None = None

    @property
    def predicted_cost_usd(self) -> float | None:
        return _prediction(self.details, "cost_usd")

    @property
    def predicted_latency_s(self) -> float | None:
        return _prediction(self.details, "latency_s")

    @property
    def realised_cost_usd(self) -> float | None:
        """The cost the policy learned from (``None`` until it learned)."""
        return None if self.reward_components is None else self.reward_components.cost_usd

    @property
    def realised_latency_s(self) -> float | None:
        return None if self.reward_components is None else self.reward_components.latency_s

    def relabel(self, ids: Sequence[int]) -> DecisionRecord:
        """The record with stable action ids ``ids[i]`` for the policy's action ``i`` (e.g. an
        outcome table's columns)."""
        idx = self.action_index
        return replace(
            self,
            action_uid=None if idx is None else int(ids[idx]),
            candidate_uids=tuple(int(ids[i]) for i in self.candidates),
        )

    def completed(self, fb: FeedbackRecord) -> DecisionRecord:
        """The record with a deferred feedback's quality and reward filled in."""
        return replace(
            self, quality=fb.quality, reward=fb.reward, reward_components=fb.reward_components
        )

    def to_json(self) -> dict[str, Any]:
        """The record as one JSON object (schema 2; see the module docs)."""
        d: dict[str, Any] = {"id": self.decision_id}
        if self.action_index is not None:
            d["index"] = self.action_index
        if self.action_uid is not None:
            d["action_uid"] = self.action_uid
        if self.action is not None:
            d.update(model=self.action.model, strategy=self.action.strategy, n=self.action.n)
        d.update(self.details)
        if self.input_tokens is not None:
            d["input_tokens"] = self.input_tokens
        if self.propensity is not None:
            d["propensity"] = self.propensity
        d["candidates"] = list(self.candidates)
        if self.probabilities is not None:
            d["probabilities"] = list(self.probabilities)
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "type": "decision",
            "time_s": self.time_s,
            "decision_id": self.decision_id,
        }
        if self.request_id is not None:
            out["request_id"] = self.request_id
        out["feature_version"] = self.feature_version
        out["x_sha256"] = self.x_sha256
        out["input_tokens_est"] = self.input_tokens
        lim = self.limits or Limits()
        out["limits"] = {"max_cost_usd": lim.max_cost_usd, "max_latency_s": lim.max_latency_s}
        out["decision"] = d
        if self.x is not None:
            out["x"] = list(self.x)
        if self.candidate_uids is not None:
            out["candidate_uids"] = list(self.candidate_uids)
        if self.feedback is not None:
            fb = self.feedback
            out["feedback"] = {
                "source": fb.source,
                "ground_truth_given": fb.ground_truth_given,
                "deferred": fb.deferred,
            }
        out["outcome"] = None if self.outcome is None else dict(self.outcome)
        out["error"] = None if self.error is None else self.error.to_json()
        out.update(_reward_json(self.quality, self.reward, self.reward_components))
        if self.learning_skipped is not None:
            out["learning_skipped"] = self.learning_skipped.to_json()
        if self.side_observations is not None:
            out["side_observations"] = [
                {"action": s.action, "quality": s.quality, "samples_used": s.samples_used}
                for s in self.side_observations
            ]
        if self.side_observations_error is not None:
            out["side_observations_error"] = self.side_observations_error.to_json()
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, index: int | None = None) -> DecisionRecord:
        """Read a decision record of any supported schema; ``index`` (its position in the log)
        is the id of a record that names none. Raises `StateError` for another version, a
        record of another type or one without a ``decision`` object."""
        _check_version(obj, "decision")
        raw = obj.get("decision")
        if not isinstance(raw, Mapping):
            raise StateError(
                f"log record {obj.get('decision_id', index)}: a decision record without a "
                "'decision' field"
            )
        did = obj.get("decision_id", raw.get("id", index))
        if did is None:
            raise StateError("log record: a decision record without a decision id")
        try:
            action = None
            if raw.get("model") is not None and raw.get("strategy") is not None:
                action = Action(str(raw["model"]), raw["strategy"], int(raw.get("n", 1)))
            lim = obj.get("limits")
            fb = obj.get("feedback")
            x = obj.get("x")
            probs = raw.get("probabilities")
            uids = obj.get("candidate_uids")
            side = obj.get("side_observations")
            tokens = raw.get("input_tokens", obj.get("input_tokens_est"))
            return cls(
                decision_id=int(did),
                time_s=_opt_float(obj.get("time_s")),
                action=action,
                action_index=_opt_int(raw.get("index")),
                action_uid=_opt_int(raw.get("action_uid")),
                propensity=_opt_float(raw.get("propensity")),
                candidates=tuple(int(c) for c in raw.get("candidates") or ()),
                probabilities=None if probs is None else tuple(float(p) for p in probs),
                candidate_uids=None if uids is None else tuple(_opt_int(u) for u in uids),
                input_tokens=_opt_float(tokens),
                details={k: v for k, v in raw.items() if k not in _TYPED_DECISION_KEYS},
                request_id=None if obj.get("request_id") is None else str(obj["request_id"]),
                feature_version=obj.get("feature_version"),
                x_sha256=obj.get("x_sha256"),
                x=None if x is None else tuple(float(v) for v in x),
                limits=None
                if lim is None
                else Limits(
                    _opt_float(lim.get("max_cost_usd")), _opt_float(lim.get("max_latency_s"))
                ),
                feedback=None
                if fb is None
                else FeedbackInfo(
                    str(fb.get("source", "")),
                    bool(fb.get("ground_truth_given", False)),
                    bool(fb.get("deferred", False)),
                ),
                outcome=obj.get("outcome"),
                error=ErrorInfo.from_json(obj.get("error")),
                quality=_opt_float(obj.get("quality")),
                reward=_opt_float(obj.get("reward")),
                reward_components=RewardComponents.from_json(obj.get("reward_components")),
                learning_skipped=ErrorInfo.from_json(obj.get("learning_skipped")),
                side_observations=None
                if side is None
                else tuple(
                    SideObservation(str(s["action"]), float(s["quality"]), float(s["samples_used"]))
                    for s in side
                ),
                side_observations_error=ErrorInfo.from_json(obj.get("side_observations_error")),
            )
        except StateError as exc:
            raise StateError(f"decision record {did}: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"decision record {did}: invalid field ({exc!r})") from None


@dataclass(frozen=True, slots=True)
class FeedbackRecord:
    """A deferred decision completed later (``Router.feedback``): its quality and reward."""

    schema: ClassVar[int] = SCHEMA_VERSION

    decision_id: int
    time_s: float | None
    quality: float | None
    reward: float | None
    reward_components: RewardComponents | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "type": "feedback",
            "time_s": self.time_s,
            "decision_id": self.decision_id,
        }
        out.update(_reward_json(self.quality, self.reward, self.reward_components))
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FeedbackRecord:
        _check_version(obj, "feedback")
        did = obj.get("decision_id")
        try:
            return cls(
                decision_id=int(did),  # type: ignore[arg-type]
                time_s=_opt_float(obj.get("time_s")),
                quality=_opt_float(obj.get("quality")),
                reward=_opt_float(obj.get("reward")),
                reward_components=RewardComponents.from_json(obj.get("reward_components")),
            )
        except StateError as exc:
            raise StateError(f"feedback record {did}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"feedback record {did}: invalid field ({exc!r})") from None


def parse_record(
    obj: Mapping[str, Any], *, index: int | None = None
) -> DecisionRecord | FeedbackRecord:
    """A decision-log line (parsed JSON) as a typed record; ``type`` defaults to
    ``"decision"``, ``schema`` to 1. Raises `StateError` for an unknown type or version."""
    kind = obj.get("type", "decision")
    if kind == "feedback":
        return FeedbackRecord.from_json(obj)
    if kind == "decision":
        return DecisionRecord.from_json(obj, index=index)
    raise StateError(f"log record {index}: unknown record type {kind!r}")


# --------------------------------------------------------------------------------------------


def _check_version(obj: Mapping[str, Any], kind: str) -> None:
    v = obj.get("schema", 1)
    if isinstance(v, bool) or v not in SUPPORTED_SCHEMAS:
        newer = isinstance(v, int) and not isinstance(v, bool) and v > SCHEMA_VERSION
        why = (
            "written by a newer UniScale; upgrade uniscale to read it"
            if newer
            else "not a version this UniScale knows"
        )
        raise StateError(
            f"{kind} record {obj.get('decision_id')}: decision-log schema {v!r} is {why} "
            f"(this version reads schemas {', '.join(map(str, SUPPORTED_SCHEMAS))})"
        )
    if obj.get("type", "decision") != kind:
        raise StateError(f"expected a {kind!r} record, got type {obj.get('type')!r}")


def _reward_json(
    quality: float | None, reward: float | None, comp: RewardComponents | None
) -> dict[str, Any]:
    return {
        "quality": quality,
        "reward": reward,
        "reward_components": None if comp is None else comp.to_json(),
    }


def _prediction(details: Mapping[str, Any], key: str) -> float | None:
    p = details.get("prediction")
    return _opt_float(p.get(key)) if isinstance(p, Mapping) else None


def _mapping(obj: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise StateError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _opt_bool(v: Any) -> bool | None:
    return None if v is None else bool(v)
