"""From a collected table to replay requests (`load_requests`) and the packaged export."""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from uniscale.execute import Messages
from uniscale.lab.collect_items import (
    F64,
    CollectError,
    Item,
    Record,
    build_messages,
    gold_for,
    load_items,
)
from uniscale.lab.collect_meta import _sha256_file
from uniscale.lab.collect_status import _counts
from uniscale.lab.collect_table import (
    _record_line,
    _write_json_atomic,
    latest_ok,
    meta_path,
    read_records,
)
from uniscale.outcomes import Request
from uniscale.outcomes import Sample as OutcomeSample

# The collector logs under one name, as before the split (its run logs show %(name)s).
logger = logging.getLogger("uniscale.lab.collect")


def _fallback_features(item: Item, input_tokens: int) -> F64:
    """Used when `uniscale.featurize` is unavailable: ``[1, log tokens, one-hot kind (arithmetic,
    mmlu, gsm8k, other), digit fraction of the question]`` (7 dims)."""
    kinds = ("arithmetic", "mmlu", "gsm8k")
    onehot = [1.0 if item.kind == k else 0.0 for k in kinds]
    onehot.append(0.0 if item.kind in kinds else 1.0)
    chars = [c for c in item.question if not c.isspace()]
    digits = sum(c.isdigit() for c in chars) / max(1, len(chars))
    return np.array(
        [1.0, math.log1p(input_tokens) / math.log1p(4096), *onehot, digits], dtype=np.float64
    )


def _default_featurizer() -> Callable[[Messages], ArrayLike] | None:
    try:
        from uniscale.featurize import Featurizer
    except ImportError:
        logger.info("uniscale.featurize unavailable; using the 7-feature fallback")
        return None
    return Featurizer()


def solo_latency_fit(records: Iterable[Record]) -> dict[str, tuple[float, float]]:
    """Per model, ``(seconds, seconds per output token)`` of one request generating alone,
    fitted by least squares to the greedy requests (each is one ``n = 1`` request, so its wall
    time is a single stream's). A negative intercept (noise) refits through the origin. Models
    without a timed greedy request are absent."""
    pts: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for rec in records:
        g = rec.get("greedy")
        if g and float(g.get("latency_s") or 0.0) > 0.0:
            pts[str(rec["model"])].append(
                (float(g.get("output_tokens") or 0), float(g["latency_s"]))
            )
    out: dict[str, tuple[float, float]] = {}
    for model, p in pts.items():
        tok, lat = np.array(p).T
        if len(p) >= 2 and np.ptp(tok) > 0:
            b, a = np.polyfit(tok, lat, 1)
        else:
            a, b = 0.0, float(lat.sum() / max(tok.sum(), 1.0))
        if a < 0.0 or b < 0.0:
            a, b = 0.0, float((tok * lat).sum() / max((tok * tok).sum(), 1.0))
        out[model] = (float(a), float(b))
    return out


def _outcome_sample(d: Mapping[str, Any], latency: float | None = None) -> OutcomeSample:
    lp = d.get("mean_logprob")
    return OutcomeSample(
        answer=d.get("answer"),
        correct=bool(d.get("correct")),
        output_tokens=int(d.get("output_tokens") or 0),
        score=float(lp) if lp is not None else -math.inf,
        latency_s=float(d.get("latency_s") or 0.0) if latency is None else latency,
    )


def load_requests(
    path: str | Path,
    items_path: str | Path,
    featurizer: Callable[[Messages], ArrayLike] | None = None,
    *,
    models: Sequence[str] | None = None,
    m: int | None = None,
    complete: bool = True,
    latency: Literal["request", "scaled", "solo"] = "request",
) -> list[Request]:
    """A collected table (raw ``.jsonl`` or exported ``.jsonl.gz``) as replayable requests.

    One `Request` per item (in the item file's order) with the latest ``ok`` record of each
    model: ``samples[model]`` (the first ``m``, default all) and ``greedy[model]``; ``score`` is
    the mean token logprob (``-inf`` when the endpoint gave none). ``x`` = ``featurizer(messages)``
    on the exact chat messages that were sent; default `uniscale.Featurizer()` (``hash-v1``, 64
    dims), or, if that module is unavailable, ``[1, log tokens, one-hot kind, digit fraction]``.
    ``input_tokens`` is the largest prompt-token count over the models (tokenizers differ).
    With ``complete`` (default) only items recorded for every model in ``models`` (default:
    every model in the table) are returned, so `uniscale.outcomes.build_table` can price every
    action. ``latency="request"`` gives each sample its request's latency (what a live ``n``
    request costs); ``"scaled"`` scales it by the sample's share of the longest output in its
    request (a rough per-stream estimate); ``"solo"`` gives each sampled answer the time one
    request generating it *alone* would take, ``a + b * output_tokens`` with the model's
    `solo_latency_fit` (greedy samples keep their measured time). Use ``"solo"`` with a
    replay parallelism that matches the endpoint: on a CPU server that runs ``n`` streams no
    faster than one after another, parallelism 1.
    """
    items = {it.id: it for it in load_items(items_path)}
    order = list(items)
    table = latest_ok(read_records(Path(path).expanduser()))
    solo = solo_latency_fit(table.values()) if latency == "solo" else {}
    present = sorted({model for _, model in table})
    wanted = list(models) if models is not None else present
    feat = featurizer if featurizer is not None else _default_featurizer()
    out: list[Request] = []
    dropped = 0
    for item_id in order:
        recs = {mod: table[(item_id, mod)] for mod in wanted if (item_id, mod) in table}
        if not recs or (complete and len(recs) < len(wanted)):
            dropped += bool(recs)
            continue
        item = items[item_id]
        samples: dict[str, list[OutcomeSample]] = {}
        greedy: dict[str, OutcomeSample] = {}
        tokens = 0
        for mod, rec in recs.items():
            raw = list(rec.get("samples") or [])
            if m is not None:
                if len(raw) < m:
                    raise CollectError(f"{item_id}/{mod}: {len(raw)} samples < m={m}")
                raw = raw[:m]
            if latency == "scaled":
                longest: dict[int, int] = defaultdict(int)
                for s in raw:
                    longest[int(s.get("request", 0))] = max(
                        longest[int(s.get("request", 0))], int(s.get("output_tokens") or 0)
                    )
                samples[mod] = [
                    _outcome_sample(
                        s,
                        float(s.get("latency_s") or 0.0)
                        * max(1, int(s.get("output_tokens") or 0))
                        / max(1, longest[int(s.get("request", 0))]),
                    )
                    for s in raw
                ]
            elif latency == "solo" and mod in solo:
                a, b = solo[mod]
                samples[mod] = [
                    _outcome_sample(s, a + b * int(s.get("output_tokens") or 0)) for s in raw
                ]
            else:
                samples[mod] = [_outcome_sample(s) for s in raw]
            if rec.get("greedy") is not None:
                greedy[mod] = _outcome_sample(rec["greedy"])
            tokens = max(tokens, int(rec.get("input_tokens") or 0))
        messages = build_messages(item)
        if feat is not None:
            x = np.asarray(feat(messages), dtype=np.float64)
        else:
            x = _fallback_features(item, tokens)
        out.append(
            Request(
                id=item_id,
                x=x,
                input_tokens=tokens,
                gold=gold_for(item),
                samples=samples,
                greedy=greedy,
                kind=item.kind,
            )
        )
    if dropped:
        logger.info("load_requests: %d items lack a record for some of %s", dropped, wanted)
    return out


def _trim(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    return text[:head] + " [...] " + text[-(max_chars - head) :]


def export_table(
    src: str | Path,
    dst: str | Path,
    *,
    items_path: str | Path | None = None,
    max_text_chars: int = 400,
) -> dict[str, Any]:
    """Write the latest ``ok`` record of each pair to gzip JSONL ``dst`` (texts longer than
    ``max_text_chars`` keep their head and tail around ``" [...] "``; answers are kept) and its
    meta (``dst`` -> ``x.meta.json``) with counts per model and a ``partial`` flag. Returns the
    meta. The gzip header carries no timestamp, so equal input gives equal bytes."""
    src_p, dst_p = Path(src).expanduser(), Path(dst)
    table = latest_ok(read_records(src_p))
    ids = [it.id for it in load_items(items_path)] if items_path is not None else None
    rank = {i: k for k, i in enumerate(ids)} if ids is not None else {}
    recs = sorted(
        table.values(), key=lambda r: (str(r["model"]), rank.get(r["item_id"], 0), r["item_id"])
    )
    dst_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst_p.with_name(dst_p.name + ".tmp")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
    ):
        for rec in recs:
            r = dict(rec)
            r["samples"] = [
                {**s, "text": _trim(str(s.get("text", "")), max_text_chars)} for s in r["samples"]
            ]
            if r.get("greedy") is not None:
                r["greedy"] = {
                    **r["greedy"],
                    "text": _trim(str(r["greedy"].get("text", "")), max_text_chars),
                }
            gz.write(_record_line(r))
    os.replace(tmp, dst_p)
    src_meta_path = meta_path(src_p)
    meta: dict[str, Any] = {}
    if src_meta_path.exists():
        meta = json.loads(src_meta_path.read_text())
    counts = _counts(src_p, ids)
    meta["counts"] = counts
    meta["export"] = {
        "source": src_p.name,
        "file": dst_p.name,
        "records": len(recs),
        "bytes": dst_p.stat().st_size,
        "sha256": _sha256_file(dst_p),
        "max_text_chars": max_text_chars,
        "text_trimming": "texts longer than max_text_chars keep head and tail around ' [...] '",
        "partial": not counts.get("complete", False),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json_atomic(meta_path(dst_p), meta)
    return meta
