"""`ope_check`: the off-policy estimators of `uniscale.lab.ope` checked against replay ground
truth on a full-information `OutcomeTable` (a logger streams the table through the
`uniscale.engine.Engine`, a target is evaluated from the log alone and compared with its true
mean reward on the same requests). See docs/replay.md, section "Off-policy evaluation"."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from uniscale.engine import Engine
from uniscale.lab.ope import (
    I64,
    LoggedDecision,
    OPEError,
    OPEResult,
    PolicyTarget,
    RewardModel,
    RidgeRewardModel,
    TargetPolicy,
    _target_probs,
    evaluate,
    fixed_action_target,
)
from uniscale.lab.replay import Scales, TableExecutor, best_fixed_run, reward_matrix, schedule
from uniscale.outcomes import OutcomeTable
from uniscale.policy import Policy, RewardWeights, resolve_reward
from uniscale.records import DecisionRecord, RewardComponents
from uniscale.router import DecisionLog
from uniscale.space import ActionSpace, ModelSpec

__all__ = ["CheckResult", "ope_check"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """`ope_check`'s answer: the OPE result, the target's true mean reward on the same
    requests, and whether each interval holds it."""

    result: OPEResult
    truth: float
    covered: dict[str, bool]
    logger: str
    target: str
    n_requests: int
    log_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "logger": self.logger,
            "target": self.target,
            "n_requests": self.n_requests,
            "truth": self.truth,
            "covered": self.covered,
            "log_path": self.log_path,
            **self.extra,
            **self.result.summary(),
        }

    def table(self) -> str:
        return (
            f"logger {self.logger}, target {self.target}, {self.n_requests} requests; "
            f"true mean reward {self.truth:.4f} (logged {self.result.logged_mean_reward:.4f})\n"
            + self.result.table(self.truth)
        )


LoggerKind = Literal["uniform", "epsilon", "softmax"]


def _log_stream(
    table: OutcomeTable,
    rows: I64,
    models: Mapping[str, ModelSpec] | None,
    scales: Scales,
    reward: RewardWeights,
    kind: LoggerKind,
    epsilon: float,
    temperature: float,
    seed: int,
) -> list[DecisionRecord]:
    """The decision log (action ids = table columns) of a logger streaming ``rows`` of the
    table: UniScale learning online through the `uniscale.engine.Engine`, answered by a
    `TableExecutor`, or (``"uniform"``) a uniformly random choice over every action."""
    if kind == "uniform":
        return _uniform_stream(table, rows, scales, reward, seed)
    if models is None:
        raise OPEError(f"a {kind!r} logger needs the ModelSpecs (models=...)")
    options = {"exploration": kind, "epsilon": epsilon, "temperature": temperature}
    return _learn_stream(table, rows, models, scales, reward, seed, **options)[1]


def _learn_stream(
    table: OutcomeTable,
    rows: I64,
    models: Mapping[str, ModelSpec],
    scales: Scales,
    reward: RewardWeights,
    seed: int,
    **policy_kwargs: Any,
) -> tuple[Policy, list[DecisionRecord]]:
    """A fresh UniScale policy over every action of the table, learning online from ``rows``
    through the `Engine` (answered by a `TableExecutor`), and its decision records with the
    table's columns as action ids."""
    names = list(dict.fromkeys(a.model for a in table.actions))
    pol = Policy(
        ActionSpace([models[m] for m in names], table.actions),
        dim=table.X.shape[1],
        reward=reward,
        cost_scale=scales.cost_scale,
        latency_scale=scales.latency_scale,
        seed=seed,
        **policy_kwargs,
    )
    col_of = {a: i for i, a in enumerate(table.actions)}
    ids = [col_of[a] for a in pol.actions]
    engine = Engine(pol, keep_features=True, strict=True)
    answer = TableExecutor(table)
    out: list[DecisionRecord] = []
    for step, t in enumerate(rows):
        choice = engine.decide(
            table.X[t],
            input_tokens=float(table.input_tokens[t]),
            now=float(step),
            request_id=table.ids[t],
        )
        c = ids[choice.decision.index]
        _, rec = engine.record(choice, answer.run(int(t), c), now=float(step))
        out.append(rec.relabel(ids))
    return pol, out


def _uniform_stream(
    table: OutcomeTable, rows: I64, scales: Scales, reward: RewardWeights, seed: int
) -> list[DecisionRecord]:
    """Every action with probability 1 / K, nothing learned: the records say so."""
    k = len(table.actions)
    rng = np.random.default_rng(seed)
    every = tuple(range(k))
    out: list[DecisionRecord] = []
    for step, t in enumerate(rows):
        c = int(rng.integers(0, k))
        fb = table.feedback(int(t), c)
        comp = RewardComponents(
            fb["quality"],
            fb["cost_usd"],
            fb["latency_s"],
            reward,
            scales.cost_scale,
            scales.latency_scale,
        )
        out.append(
            DecisionRecord(
                decision_id=step,
                action=table.actions[c],
                action_index=c,
                action_uid=c,
                propensity=1.0 / k,
                candidates=every,
                probabilities=(1.0 / k,) * k,
                candidate_uids=every,
                input_tokens=float(table.input_tokens[t]),
                request_id=table.ids[t],
                x=tuple(table.X[t].tolist()),
                quality=fb["quality"],
                reward=comp.reward(),
                reward_components=comp,
            )
        )
    return out


def ope_check(
    table: OutcomeTable,
    models: Mapping[str, ModelSpec] | None = None,
    *,
    n_requests: int | None = None,
    logger_kind: LoggerKind = "epsilon",
    epsilon: float = 0.2,
    temperature: float = 0.1,
    target: Literal["best_fixed", "frozen"] | TargetPolicy = "best_fixed",
    target_models: Iterable[str] | None = None,
    train_fraction: float = 0.3,
    reward: str | RewardWeights | tuple[float, float, float] = "cost_sensitive",
    seed: int = 0,
    log_path: str | os.PathLike[str] | None = None,
    clip: float | None = None,
    level: float = 0.95,
    ci: Literal["normal", "bootstrap"] = "normal",
    n_bootstrap: int = 1000,
    reward_model: Callable[[], RewardModel] = RidgeRewardModel,
) -> CheckResult:
    """Log a seeded stream from ``table`` with an exploring logger, estimate a target's mean
    reward from the log alone, and compare with its true mean reward on the same requests.

    The stream is a seeded permutation of the table's rows (the first ``n_requests``). Loggers:
    ``"uniform"`` (uniformly random over every action), ``"epsilon"`` / ``"softmax"`` (UniScale
    learning online with that exploration; needs ``models``). Targets (action ids are table
    columns): ``"best_fixed"`` (the action with the best mean reward over the whole table, known
    only in hindsight), ``"frozen"`` (a greedy UniScale policy trained on the first
    ``train_fraction`` of the stream, then frozen, optionally restricted to ``target_models``;
    it is evaluated on the rest), or any `TargetPolicy` over table columns. The truth is
    ``mean_t sum_a pi(a | x_t, C_t) r[t, a]`` with ``C_t`` the logged candidates: the value
    the estimators target (for a uniform logger ``C_t`` is every action). With ``log_path`` the
    log is also written as a `DecisionLog` JSONL file and evaluated from that file.
    """
    w = resolve_reward(reward)
    scales = Scales.from_table(table)
    _, wts = schedule(table, (), w)
    r = reward_matrix(table, wts, scales)
    n_all = table.n_requests
    n = n_all if n_requests is None else min(int(n_requests), n_all)
    rows = np.random.default_rng(seed).permutation(n_all)[:n].astype(np.int64)

    pi: TargetPolicy
    extra: dict[str, Any] = {}
    if target == "best_fixed":
        avail = np.ones_like(r, dtype=bool)
        best = best_fixed_run(table, r, avail, r.max(axis=1))
        col = int(best.chosen[0])
        pi = fixed_action_target(col)
        name = f"best_fixed[{table.actions[col]}]"
    elif target == "frozen":
        if models is None:
            raise OPEError("target='frozen' needs the ModelSpecs (models=...)")
        n_train = max(1, round(train_fraction * n))
        if n - n_train < 2:
            raise OPEError(f"{n} requests leave too few to evaluate after {n_train} for training")
        frozen = _learn_stream(table, rows[:n_train], models, scales, w, seed)[0]
        col_of = {a: i for i, a in enumerate(table.actions)}
        ids = [col_of[a] for a in frozen.actions]
        pi = PolicyTarget(frozen, action_ids=ids, models=target_models)
        rows = rows[n_train:]
        restrict = "" if target_models is None else f" on {sorted(set(target_models))}"
        name = f"frozen UniScale{restrict} (trained on {n_train} requests)"
        extra["n_train"] = n_train
    elif callable(target):
        pi = target
        name = getattr(target, "__name__", "custom")
    else:
        raise OPEError(f"unknown target {target!r}")

    recs = _log_stream(table, rows, models, scales, w, logger_kind, epsilon, temperature, seed + 1)
    source: Any = recs
    if log_path is not None:
        with DecisionLog(log_path) as log:
            for rec in recs:
                log.write(rec)
        source = log_path
    result = evaluate(
        source,
        pi,
        clip=clip,
        level=level,
        ci=ci,
        n_bootstrap=n_bootstrap,
        seed=seed,
        reward_model=reward_model,
    )
    truth_terms = []
    for rec, t in zip(recs, rows, strict=True):
        cands = [int(c) for c in rec.candidate_uids or ()]  # type: ignore[arg-type]
        lr = LoggedDecision(
            x=table.X[t],
            action=cands[0],
            propensity=1.0,
            reward=0.0,
            candidates=tuple(cands),
            input_tokens=float(table.input_tokens[t]),
        )
        truth_terms.append(float(_target_probs(pi, lr, int(t)) @ r[t, cands]))
    truth = float(np.mean(truth_terms))
    covered = {k: e.covers(truth) for k, e in result.estimates.items()}
    label = logger_kind if logger_kind == "uniform" else f"UniScale {logger_kind}"
    if logger_kind == "epsilon":
        label += f" (epsilon={epsilon:g})"
    elif logger_kind == "softmax":
        label += f" (temperature={temperature:g})"
    return CheckResult(
        result=result,
        truth=truth,
        covered=covered,
        logger=label,
        target=name,
        n_requests=len(rows),
        log_path=None if log_path is None else str(Path(log_path)),
        extra=extra,
    )
