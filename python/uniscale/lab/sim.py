"""A seeded simulator of LLM traffic, in the style of the UniScale paper's evaluation.

Requests come from a few task types (short factual questions, multiple choice, multi-step
math, a very hard tail), as in a real gateway's mix. A request's features are its type's
direction plus a within-type difficulty direction plus noise, so the signal a featurizer would
see is present but imperfect. Each model has a per-type base accuracy; a request's per-sample
accuracy is ``sigmoid(logit(base) - 3 * (difficulty - 0.5))``. Wrong samples pick one of four
wrong answers with skewed frequencies (so a vote can converge on a wrong answer); output length
depends on the type and the model; latency is ``rounds x (t_in x in + t_out x out)`` with noise.

The structure routing and test-time scaling must learn: cheap models suffice for easy types,
votes help mid-accuracy cases (diminishing returns in n), small models have capability ceilings
no number of votes can lift, and on the hard tail nothing works, so the cheapest action wins.
The simulator emits `Request` records, so outcome tables, replay and baselines run exactly the
code path used for real collected data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from uniscale.outcomes import Request, Sample
from uniscale.space import ModelSpec


@dataclass(frozen=True, slots=True)
class SimModel:
    spec: ModelSpec
    skill: float
    verbosity: float
    t_in_s: float
    t_out_s: float


DEFAULT_SIM_MODELS: tuple[SimModel, ...] = (
    SimModel(
        ModelSpec(
            "small",
            0.05,
            0.10,
            parallelism=8,
            latency_out_s_per_token=0.004,
            latency_in_s_per_token=0.0002,
            prior_output_tokens=150,
        ),
        skill=1.0,
        verbosity=110.0,
        t_in_s=0.0002,
        t_out_s=0.004,
    ),
    SimModel(
        ModelSpec(
            "medium",
            0.30,
            0.60,
            parallelism=8,
            latency_out_s_per_token=0.010,
            latency_in_s_per_token=0.0004,
            prior_output_tokens=180,
        ),
        skill=2.4,
        verbosity=150.0,
        t_in_s=0.0004,
        t_out_s=0.010,
    ),
    SimModel(
        ModelSpec(
            "large",
            2.00,
            6.00,
            parallelism=4,
            latency_out_s_per_token=0.025,
            latency_in_s_per_token=0.0008,
            prior_output_tokens=220,
        ),
        skill=3.8,
        verbosity=190.0,
        t_in_s=0.0008,
        t_out_s=0.025,
    ),
)

WRONG_SHARES = np.array([0.4, 0.3, 0.2, 0.1])


@dataclass(frozen=True, slots=True)
class TaskType:
    name: str
    weight: float
    #: Per-model base accuracy of one sample (same order as the models).
    base_accuracy: tuple[float, ...]
    output_tokens: float
    input_tokens: float


DEFAULT_TASK_TYPES: tuple[TaskType, ...] = (
    TaskType("factual", 0.30, (0.80, 0.90, 0.95), 40.0, 120.0),
    TaskType("multiple_choice", 0.25, (0.35, 0.60, 0.85), 30.0, 300.0),
    TaskType("math", 0.30, (0.15, 0.45, 0.65), 220.0, 200.0),
    TaskType("hard", 0.15, (0.02, 0.05, 0.12), 300.0, 400.0),
)


def simulate(
    n_requests: int = 3000,
    dim: int = 16,
    *,
    samples_per_model: int = 8,
    models: Sequence[SimModel] = DEFAULT_SIM_MODELS,
    task_types: Sequence[TaskType] = DEFAULT_TASK_TYPES,
    seed: int = 0,
) -> list[Request]:
    """Draws a stream of requests with recorded samples for every model."""
    if n_requests < 1 or dim < 2 or samples_per_model < 1:
        raise ValueError("n_requests >= 1, dim >= 2 and samples_per_model >= 1 are required")
    for tt in task_types:
        if len(tt.base_accuracy) != len(models):
            raise ValueError(f"task type {tt.name!r} needs one base accuracy per model")
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(len(task_types) + 1, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    weights = np.array([tt.weight for tt in task_types])
    weights /= weights.sum()
    out: list[Request] = []
    for t in range(n_requests):
        k = int(rng.choice(len(task_types), p=weights))
        tt = task_types[k]
        difficulty = float(rng.beta(2.0, 2.0))
        x = directions[k] + 1.2 * (difficulty - 0.5) * directions[-1]
        x = x + 0.35 * rng.normal(size=dim) / np.sqrt(dim)
        x /= np.linalg.norm(x)
        input_tokens = int(tt.input_tokens * (0.5 + difficulty) + rng.integers(0, 40))
        samples: dict[str, list[Sample]] = {}
        greedy: dict[str, Sample] = {}
        for m, base in zip(models, tt.base_accuracy, strict=True):
            logit = np.log(base / (1 - base)) - 3.0 * (difficulty - 0.5)
            p = float(1.0 / (1.0 + np.exp(-logit)))
            length = tt.output_tokens * m.verbosity / 150.0 * (0.7 + 0.6 * difficulty)
            samples[m.spec.name] = [
                _draw(rng, m, p, length, input_tokens, 0.25) for _ in range(samples_per_model)
            ]
            greedy[m.spec.name] = _draw(rng, m, min(1.0, p * 1.05), length, input_tokens, 0.1)
        out.append(Request(f"sim-{t}", x, input_tokens, "gold", samples, greedy, kind=tt.name))
    return out


def _draw(
    rng: np.random.Generator,
    m: SimModel,
    p: float,
    length: float,
    input_tokens: int,
    length_noise: float,
) -> Sample:
    correct = bool(rng.random() < p)
    answer = "gold" if correct else f"w{rng.choice(4, p=WRONG_SHARES)}"
    out_tok = max(1, int(length * np.exp(length_noise * rng.normal())))
    score = (0.8 if correct else 0.0) + rng.normal()
    lat = (m.t_in_s * input_tokens + m.t_out_s * out_tok) * np.exp(0.1 * rng.normal())
    return Sample(answer, correct, out_tok, float(score), float(lat))
