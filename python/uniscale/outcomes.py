"""Full-information outcome tables: what every action would have produced on every request.

A table is built from *recorded samples*: for each (request, model), an ordered list of
independent samples (extracted answer, correctness, output tokens, a score such as the mean
token log-probability, wall latency) plus optionally one greedy sample. Every
``(model, strategy, n <= m)`` action is then replayed offline exactly as the executor would run
it live:

* ``single``: the greedy sample (or the first sample when there is no greedy one);
* ``self_consistency``: majority vote over the first n samples (earliest-first tie rule);
* ``best_of_n``: the highest-scoring of the first n samples;
* ``adaptive_consistency``: samples drawn in order in rounds (2, 4, 6, ...) until the stopping
  rule fires; cost and latency count only the samples used;
* any registered strategy: its own `uniscale.strategies.Strategy.replay`.

Cost is token counts times the model's prices (prompt billed once when the model bills it once,
else once per sample). Latency: samples run in rounds of ``parallelism``; a round takes as long
as its slowest sample. Shuffling the sample order per seed gives independent replays of the same
recorded data. The simulator (`uniscale.lab.sim`) and the real collected table
(`uniscale.lab.collect`) both produce samples in this form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from uniscale.space import Action, ModelSpec
from uniscale.strategies import Replay, get_strategy

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Sample:
    """One recorded completion."""

    answer: str | None
    correct: bool
    output_tokens: int
    score: float
    latency_s: float


@dataclass(frozen=True, slots=True)
class Request:
    """One recorded request: its features and, per model, its samples."""

    id: str
    x: F64
    input_tokens: int
    gold: str
    samples: Mapping[str, Sequence[Sample]]
    greedy: Mapping[str, Sample]
    kind: str = ""


@dataclass(frozen=True, slots=True)
class OutcomeTable:
    """Outcomes of every action on every request, shape (T, K) for the per-action arrays."""

    ids: list[str]
    kinds: list[str]
    X: F64
    input_tokens: F64
    actions: list[Action]
    quality: F64
    cost_usd: F64
    latency_s: F64
    output_tokens: F64
    samples_used: F64
    #: (T, K) label-free quality signal of each run (`action_agreement`), or None when the
    #: table has no samples to compute it from (routing tables)
    agreement: F64 | None = None

    @property
    def n_requests(self) -> int:
        return len(self.ids)

    def feedback(self, t: int, col: int) -> dict[str, float]:
        """What action ``col`` produced on request ``t``, as `Policy.update` keyword arguments."""
        return {
            "quality": float(self.quality[t, col]),
            "cost_usd": float(self.cost_usd[t, col]),
            "latency_s": float(self.latency_s[t, col]),
            "output_tokens": float(self.output_tokens[t, col]),
            "samples_used": float(self.samples_used[t, col]),
        }

    def action_index(self, action: Action) -> int:
        return self.actions.index(action)

    def without_request_features(self) -> OutcomeTable:
        """The same table with every request's features replaced by one constant 0: a learner
        replayed on it can tell actions apart (psi) but not requests, an ablation that shows
        what the request features are worth on a stream of this length."""
        return replace(self, X=np.zeros((self.n_requests, 1)))

    def subset(self, rows: Sequence[int] | NDArray[np.int64]) -> OutcomeTable:
        r = np.asarray(rows, dtype=np.int64)
        return OutcomeTable(
            ids=[self.ids[i] for i in r],
            kinds=[self.kinds[i] for i in r],
            X=self.X[r],
            input_tokens=self.input_tokens[r],
            actions=self.actions,
            quality=self.quality[r],
            cost_usd=self.cost_usd[r],
            latency_s=self.latency_s[r],
            output_tokens=self.output_tokens[r],
            samples_used=self.samples_used[r],
            agreement=None if self.agreement is None else self.agreement[r],
        )

    def with_agreement_reward(self, weight: float) -> OutcomeTable:
        """The table a learner learns from when the vote's agreement is a reward term:
        quality ``(1 - weight) * quality + weight * agreement`` (``weight`` 1: label-free).
        `ValueError` when the table has no agreement or ``weight`` is outside [0, 1]."""
        if not (0.0 <= weight <= 1.0):
            raise ValueError(f"agreement weight must be in [0, 1], got {weight!r}")
        if self.agreement is None:
            raise ValueError("this table has no agreement (no recorded samples to vote over)")
        return replace(self, quality=(1.0 - weight) * self.quality + weight * self.agreement)


def round_latency(lat: Sequence[float], parallelism: int) -> float:
    """Wall time of samples run ``parallelism`` at a time, in draw order: each round lasts as
    long as its slowest sample."""
    total = 0.0
    for start in range(0, len(lat), parallelism):
        total += max(lat[start : start + parallelism])
    return total


def _replayed(
    action: Action, samples: Sequence[Sample], greedy: Sample | None
) -> tuple[list[Sample], Replay, list[Sample]]:
    """The recorded samples ``action`` draws, its strategy's replay of them, the ones used."""
    n = action.n
    strategy = get_strategy(action.strategy)
    if strategy.greedy:
        pool = [greedy if greedy is not None else samples[0]]
    else:
        if len(samples) < n:
            raise ValueError(f"{action} needs {n} samples but only {len(samples)} were recorded")
        pool = list(samples[:n])
    r = strategy.replay([s.answer for s in pool], [s.score for s in pool], n)
    if r is None:
        raise ValueError(f"{action} cannot be replayed from recorded samples")
    return pool, r, pool[: r.used]


def action_outcome(
    action: Action,
    model: ModelSpec,
    samples: Sequence[Sample],
    greedy: Sample | None,
    gold: str,
    input_tokens: int,
) -> tuple[float, float, float, float, float]:
    """(quality, cost_usd, latency_s, output_tokens, samples_used) of one action on one request."""
    return _outcome(model, *_replayed(action, samples, greedy), gold, input_tokens)


def _outcome(
    model: ModelSpec,
    pool: list[Sample],
    r: Replay,
    used: list[Sample],
    gold: str,
    input_tokens: int,
) -> tuple[float, float, float, float, float]:
    if r.by_answer:
        answer = pool[r.index].answer
        correct = answer is not None and answer == gold
    else:
        correct = pool[r.index].correct
    cost, latency, out = run_usage(model, input_tokens, used)
    return (1.0 if correct else 0.0, cost, latency, out, float(len(used)))


#: the agreement of a one-sample run whose answer carries no token log-probability
NO_SIGNAL_AGREEMENT = 0.5


def action_agreement(action: Action, samples: Sequence[Sample], greedy: Sample | None) -> float:
    """A label-free quality signal of one run, in [0, 1]: over several samples, the share of
    the samples used that give the chosen answer (0 when it has none), the vote's agreement
    (`ConfidenceFeedback`'s signal in the Router); for one sample, the answer's mean token
    probability ``exp(score)``, or `NO_SIGNAL_AGREEMENT` when none was recorded."""
    return _agreement(*_replayed(action, samples, greedy))


def _agreement(pool: list[Sample], r: Replay, used: list[Sample]) -> float:
    if len(used) == 1:
        score = used[0].score
        return min(1.0, math.exp(score)) if math.isfinite(score) else NO_SIGNAL_AGREEMENT
    answer = pool[r.index].answer
    if answer is None:
        return 0.0
    return sum(s.answer == answer for s in used) / len(used)


class _Used(Protocol):
    """What `run_usage` reads of a sample (recorded here, or live from `uniscale.execute`)."""

    @property
    def output_tokens(self) -> int: ...
    @property
    def latency_s(self) -> float: ...


def run_usage(
    model: ModelSpec, input_tokens: int, used: Sequence[_Used]
) -> tuple[float, float, float]:
    """(cost_usd, latency_s, output_tokens) of one run that used ``used`` samples in draw order:
    the prompt billed once (or per sample for fan-out endpoints), every output token, and
    ``ceil(k / parallelism)`` rounds of generation."""
    k = len(used)
    out = float(sum(s.output_tokens for s in used))
    billed_in = input_tokens if (model.bills_prompt_once or k == 1) else input_tokens * k
    cost = model.cost_usd(billed_in, out)
    latency = round_latency([s.latency_s for s in used], model.parallelism)
    return cost, latency, out


#: Weight of one side observation (a sub-run observed inside a larger run) in the quality
#: learner. Sub-runs of one run share its question and its first samples, so they are strongly
#: correlated with the run itself; counted fully they make the learner over-confident. Measured
#: on the packaged real table, 30 seeds, paired against no side observations (per-request reward,
#: mean +- standard error; ``python scripts/side_observations.py --seeds 30``, written to
#: ``docs/side_observations.md``): weight 0.5 gained +0.0036 +- 0.0024 (cost_sensitive),
#: +0.0054 +- 0.0028 (balanced), +0.0053 +- 0.0084 (quality_priority); weight 1 gained +0.0016,
#: +0.0077, +0.0001; weight 0.25 -0.0001, +0.0028, -0.0088. 0.5 is ahead on every preset.
#: Side observations are opt-in (replay ``--side-observations``, ``Router(side_observations=
#: True)``): on the simulator benchmark they lift TTS-only more than UniScale.
SIDE_OBSERVATION_WEIGHT = 0.5


def sub_actions(executed: Action, samples_used: float, actions: Sequence[Action]) -> list[int]:
    """Indices into ``actions`` of the runs contained in ``executed`` (its strategy's
    `Strategy.sub_runs`): for the built-ins, the same model, a sampled strategy (not ``single``,
    which is one greedy answer) and ``n`` no larger than the samples ``executed`` actually drew,
    other than ``executed`` itself. Their outcomes follow from a prefix of the executed run's
    samples (self-consistency n' votes over the first n' samples, best-of-n' scores them,
    adaptive n' draws them in order), so a policy can learn from all of them for the price of
    one run (`Policy.observe`)."""
    return get_strategy(executed.strategy).sub_runs(executed, samples_used, actions)


def build_table(
    requests: Sequence[Request],
    actions: Sequence[Action],
    models: Mapping[str, ModelSpec],
    *,
    seed: int | None = None,
) -> OutcomeTable:
    """Replays every action on every request. With ``seed``, each (request, model) sample list
    is shuffled first (an independent draw of the same recorded data)."""
    if not requests:
        raise ValueError("no requests")
    rng = np.random.default_rng(seed) if seed is not None else None
    t, k = len(requests), len(actions)
    arrays = np.zeros((5, t, k))
    agreement = np.zeros((t, k))
    for i, req in enumerate(requests):
        # first-appearance order, not a set: the shared rng must draw in the same order in
        # every process (set order of strings changes with PYTHONHASHSEED)
        for name in dict.fromkeys(a.model for a in actions):
            s = list(req.samples.get(name, ()))
            if rng is not None and len(s) > 1:
                s = [s[j] for j in rng.permutation(len(s))]
            g = req.greedy.get(name)
            for j, a in enumerate(actions):
                if a.model == name:
                    # one replay of the recorded samples serves both the outcome and the
                    # agreement
                    run = _replayed(a, s, g)
                    arrays[:, i, j] = _outcome(models[name], *run, req.gold, req.input_tokens)
                    agreement[i, j] = _agreement(*run)
    x = np.stack([np.asarray(r.x, dtype=np.float64) for r in requests])
    return OutcomeTable(
        ids=[r.id for r in requests],
        kinds=[r.kind for r in requests],
        X=x,
        input_tokens=np.array([r.input_tokens for r in requests], dtype=np.float64),
        actions=list(actions),
        quality=arrays[0],
        cost_usd=arrays[1],
        latency_s=arrays[2],
        output_tokens=arrays[3],
        samples_used=arrays[4],
        agreement=agreement,
    )
