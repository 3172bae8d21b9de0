"""Plan candidates from measurements: bootstrap accuracy of an outcome table's actions and
per-call token, price and latency models (`candidates_from_table`), or a live policy's beliefs
(`candidates_from_policy`). Loaded on first use of its names from `uniscale.planner`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from uniscale._core import ConfigError
from uniscale.planner import F64, CallModel, Candidate

if TYPE_CHECKING:
    from uniscale.outcomes import OutcomeTable
    from uniscale.policy import Policy
    from uniscale.space import ModelSpec


def bootstrap_means(values: F64, replicates: int, seed: int, chunk: int = 64) -> F64:
    """(K, B) bootstrap replicates of the column means of ``values`` (T, K): the same resampled
    rows for every column (paired), drawn as multinomial counts so memory is O(chunk x T)."""
    t = values.shape[0]
    rng = np.random.default_rng([seed, 0x706C616E])  # "plan"
    out = np.empty((values.shape[1], replicates))
    done = 0
    while done < replicates:
        b = min(chunk, replicates - done)
        counts = rng.multinomial(t, np.full(t, 1.0 / t), size=b).astype(np.float64)
        out[:, done : done + b] = (counts @ values).T / t
        done += b
    return out


def clipped_normal_mean(mu: float, sd: float, floor: float = 1.0) -> float:
    """E[max(X, floor)] for X ~ N(mu, sd^2)."""
    if sd <= 0:
        return max(mu, floor)
    a = (floor - mu) / sd
    cdf = 0.5 * (1.0 + math.erf(a / math.sqrt(2.0)))
    return floor * cdf + mu * (1.0 - cdf) + sd * math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)


def matched_normal(mean: float, sd: float) -> tuple[float, float]:
    """(mu, sd) of a normal whose clipping at one token has expectation ``mean``: token counts
    with a spread near their mean (short answers next to long ones) would otherwise come out
    of the clip up to ~20% longer on average than measured."""
    if sd <= 0 or mean <= 1:
        return max(mean, 1.0), max(sd, 0.0)
    lo, hi = mean - 10 * sd - 1, mean
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if clipped_normal_mean(mid, sd) < mean:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi), sd


def _per_model_calls(
    table: OutcomeTable, models: Mapping[str, ModelSpec]
) -> dict[tuple[str, bool], CallModel]:
    """Per (model, sampled?): token distributions and per-token latencies from the table.

    Input tokens: mean and sd over requests. Output tokens of a greedy call (``single``):
    mean and sd over requests of the one-sample action. Sampled calls (every other strategy)
    are as long as the recorded samples: their mean is output tokens per sample used over the
    model's sampled actions, with the greedy coefficient of variation (the table keeps only
    per-run totals of samples). Both as normals moment-matched to the clip at one token
    (`matched_normal`). Per-token latencies: non-negative least squares of the one-sample
    latency on (input, output) tokens (zero when the table recorded no latency, as for
    MMLU-Pro)."""
    calls: dict[tuple[str, bool], CallModel] = {}
    lin = np.asarray(table.input_tokens, dtype=np.float64)
    in_tokens = matched_normal(float(lin.mean()), float(lin.std()))
    for name in dict.fromkeys(a.model for a in table.actions):
        cols = [i for i, a in enumerate(table.actions) if a.model == name]
        col = min(cols, key=lambda i: (table.actions[i].n, table.actions[i].strategy != "single"))
        used = np.maximum(table.samples_used[:, col], 1.0)
        lout = table.output_tokens[:, col] / used
        lat = table.latency_s[:, col] / np.ceil(used / max(models[name].parallelism, 1))
        t_in = t_out = 0.0
        if np.any(lat > 0):
            design = np.column_stack([lin, lout])
            coef, *_ = np.linalg.lstsq(design, lat, rcond=None)
            t_in, t_out = (float(max(c, 0.0)) for c in coef)
            if coef.min() < 0:  # one coefficient negative: refit the other alone
                j = int(np.argmax(coef))
                x = design[:, j]
                v = max(float(x @ lat) / max(float(x @ x), 1e-300), 0.0)
                t_in, t_out = (v, 0.0) if j == 0 else (0.0, v)
        spec = models[name]
        greedy_mean, greedy_sd = float(lout.mean()), float(lout.std())
        sampled = [i for i in cols if table.actions[i].strategy != "single"]
        sampled_mean = (
            float(table.output_tokens[:, sampled].sum() / table.samples_used[:, sampled].sum())
            if sampled
            else greedy_mean
        )
        cv = greedy_sd / greedy_mean if greedy_mean > 0 else 0.0
        for is_sampled, mean_out in ((False, greedy_mean), (True, sampled_mean)):
            calls[(name, is_sampled)] = CallModel(
                spec.price_in_per_mtok,
                spec.price_out_per_mtok,
                t_in,
                t_out,
                in_tokens,
                matched_normal(mean_out, cv * mean_out),
            )
    return calls


def _whole_calls(samples: float) -> tuple[int, float]:
    """Whole calls for the simulation of ``samples`` expected samples, and the share of the
    price each is charged so that the expected cost stays that of ``samples`` (an adaptive
    action expected to use 3.4 samples runs 4 calls at 0.85 of the price)."""
    k = max(1, math.ceil(samples - 1e-9))
    return k, min(samples / k, 1.0)


def _call_prices(
    price_in: float, price_out: float, calls: int, share: float, bills_prompt_once: bool
) -> tuple[float, float]:
    """(input, output) price per call of a run of ``calls`` calls charged ``share`` each; a
    model that bills the prompt once for the run is charged ``1 / calls`` of the input price
    per call (the same expectation)."""
    if bills_prompt_once and calls > 1:
        return price_in / calls, price_out * share
    return price_in * share, price_out * share


def candidates_from_table(
    table: OutcomeTable,
    models: Mapping[str, ModelSpec],
    *,
    strategies: Sequence[str] = (),
    bootstrap: int = 500,
    seed: int = 0,
) -> list[Candidate]:
    """One candidate per action of ``table`` (restricted to ``strategies`` when given):
    accuracy measured (mean quality over the requests, paired bootstrap replicates), cost and
    latency simulated from per-call models estimated from the table (`_per_model_calls`).

    A model that bills the prompt once for n samples is charged ``1/k`` of the input price per
    call (the same expectation). An ``adaptive_consistency`` action is planned at the samples
    it was measured to use: its mean samples used rounded up to whole calls, each priced at
    ``mean / calls`` of the model's price, so the expected cost is the measured one (latency
    counts the rounded-up calls, a slight overestimate)."""
    if bootstrap < 1:
        raise ConfigError(f"bootstrap must be >= 1, got {bootstrap}")
    cols = [i for i, a in enumerate(table.actions) if not strategies or a.strategy in strategies]
    if not cols:
        raise ConfigError(f"no action of the table has a strategy in {list(strategies)}")
    calls = _per_model_calls(table, models)
    q = np.asarray(table.quality[:, cols], dtype=np.float64)
    reps = bootstrap_means(q, bootstrap, seed)
    est = q.mean(axis=0)
    out = []
    for j, i in enumerate(cols):
        a = table.actions[i]
        spec = models[a.model]
        call = calls[(a.model, a.strategy != "single")]
        n_calls, share = a.n, 1.0
        if a.strategy == "adaptive_consistency":
            used = float(np.mean(table.samples_used[:, i]))
            if math.isfinite(used) and used > 0:
                n_calls, share = _whole_calls(min(used, a.n))
        price_in, price_out = _call_prices(
            call.price_in_per_mtok, call.price_out_per_mtok, n_calls, share, spec.bills_prompt_once
        )
        call = replace(call, price_in_per_mtok=price_in, price_out_per_mtok=price_out)
        out.append(
            Candidate.of_action(
                a,
                call,
                spec.parallelism,
                float(est[j]),
                reps[j],
                None if n_calls == a.n else n_calls,
            )
        )
    return out


def candidates_from_policy(
    policy: Policy,
    x: NDArray[np.float64] | Sequence[float],
    input_tokens: float,
    *,
    alpha: float = 0.3,
    quality_sd: float = 0.5,
    input_tokens_sd: float = 0.0,
    output_cv: float = 0.5,
    replicates: int = 200,
) -> list[Candidate]:
    """One candidate per action of a live `Policy`, for a request with features ``x`` and
    ``input_tokens`` prompt tokens: what the policy currently believes.

    Accuracy: the learner's quality mean for ``x`` (clipped to [0, 1]), with "replicates"
    at the deterministic normal quantiles of its posterior spread, ``quality_sd * bonus /
    alpha`` (the bonus is ``alpha * sqrt(x' A^-1 x)``; pass the policy's ``alpha``;
    ``quality_sd = 0.5`` is the noise scale of a quality in [0, 1], as in
    `Policy.set_baseline`). Cost and latency: the cost model's `Policy.predict` at this prompt
    size -- output tokens per sample (spread ``output_cv`` times the mean), the expected
    samples used rounded up to whole calls with prices scaled so that the expected cost is the
    prediction's (adaptive actions are planned at what they were seen to use), the model's
    parallelism, and a per-token latency that reproduces the predicted seconds. The Monte
    Carlo's means then match the cost model's predictions (latency a little above, from
    waiting for the slowest call of a round)."""
    from statistics import NormalDist

    if not (alpha > 0 and quality_sd >= 0 and output_cv >= 0 and replicates >= 1):
        raise ConfigError("alpha must be > 0, quality_sd and output_cv >= 0, replicates >= 1")
    if len(np.asarray(x)) != policy.dim:
        raise ConfigError(f"x has {len(np.asarray(x))} features, the policy {policy.dim}")
    pred = policy.predict(float(input_tokens))
    mean, bonus = policy.quality_scores(np.asarray(x, dtype=np.float64))
    z = np.array([NormalDist().inv_cdf((j + 0.5) / replicates) for j in range(replicates)])
    out = []
    for i, a in enumerate(policy.actions):
        spec = policy.models[a.model]
        samples = max(float(pred["samples"][i]), 1.0)
        k, share = _whole_calls(samples)
        per_sample = max(float(pred["output_tokens_per_sample"][i]), 0.0)
        rounds = math.ceil(k / spec.parallelism)
        per_round_s = max(float(pred["latency_s"][i]), 0.0) / rounds
        t_in, t_out = 0.0, 0.0
        if per_sample > 0:
            t_out = per_round_s / per_sample
        elif input_tokens > 0:
            t_in = per_round_s / input_tokens
        call = CallModel(
            *_call_prices(
                spec.price_in_per_mtok, spec.price_out_per_mtok, k, share, spec.bills_prompt_once
            ),
            t_in,
            t_out,
            matched_normal(float(input_tokens), input_tokens_sd),
            matched_normal(per_sample, output_cv * per_sample),
        )
        q = float(np.clip(mean[i], 0.0, 1.0))
        spread = quality_sd * float(bonus[i]) / alpha
        reps = np.clip(mean[i] + spread * z, 0.0, 1.0)
        out.append(Candidate.of_action(a, call, spec.parallelism, q, reps, k))
    return out
