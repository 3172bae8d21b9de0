"""What a table holds: per-model counts, answer rates and their flags, throughput."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from uniscale.lab.collect_items import Item, Record, load_items
from uniscale.lab.collect_table import latest_ok, read_records


def _counts(path: Path, item_ids: Sequence[str] | None = None) -> dict[str, Any]:
    ok: Counter[str] = Counter()
    failed_lines: Counter[str] = Counter()
    pairs_ok = latest_ok(read_records(path))
    for rec in read_records(path):
        if rec.get("status") != "ok":
            failed_lines[str(rec["model"])] += 1
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for (_, model), rec in pairs_ok.items():
        ok[model] += 1
        by_kind[model][str(rec.get("kind", ""))] += 1
    models = sorted(set(ok) | set(failed_lines))
    items_all = {i for i in {k[0] for k in pairs_ok} if all((i, m) in pairs_ok for m in sorted(ok))}
    rates = answer_rates(pairs_ok.values())
    out: dict[str, Any] = {
        "ok_pairs_per_model": {m: ok[m] for m in models},
        "ok_pairs_per_model_kind": {m: dict(by_kind[m]) for m in models},
        "failed_lines_per_model": {m: failed_lines[m] for m in models},
        "items_with_all_models": len(items_all),
        "answer_rates": rates,
        "answer_rate_flags": rate_flags(rates),
    }
    if item_ids is not None:
        out["items_total"] = len(item_ids)
        out["complete"] = all(ok[m] >= len(item_ids) for m in models) and bool(models)
    return out


#: Above this share of truncated (``finish_reason == "length"``) or answer-less samples in a
#: (model, kind), a table measures the limit or the format more than the model: flagged.
RATE_FLAG_THRESHOLD = 0.05


def answer_rates(records: Iterable[Record]) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per model and kind, over every sample and greedy answer of the given ``ok`` records:
    ``answers``, ``truncated`` (share cut off by ``max_tokens``), ``no_answer`` (share where the
    extractor found nothing, empty answers included) and ``accuracy``."""
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for rec in records:
        answers = list(rec.get("samples") or [])
        if rec.get("greedy") is not None:
            answers.append(rec["greedy"])
        t = tally[(str(rec.get("model")), str(rec.get("kind", "")))]
        for a in answers:
            t[0] += 1
            t[1] += a.get("finish_reason") == "length"
            t[2] += a.get("answer") is None
            t[3] += bool(a.get("correct"))
    out: dict[str, dict[str, dict[str, float | int]]] = defaultdict(dict)
    for (model, kind), (n, trunc, none, right) in sorted(tally.items()):
        if n:
            out[model][kind] = {
                "answers": n,
                "truncated": round(trunc / n, 4),
                "no_answer": round(none / n, 4),
                "accuracy": round(right / n, 4),
            }
    return dict(out)


def rate_flags(
    rates: Mapping[str, Mapping[str, Mapping[str, float | int]]],
    threshold: float = RATE_FLAG_THRESHOLD,
) -> list[str]:
    """One line per (model, kind) whose truncation or no-answer share exceeds ``threshold``."""
    flags = []
    for model, kinds in rates.items():
        for kind, r in kinds.items():
            bad = [
                f"{key} {float(r[key]):.1%}"
                for key in ("truncated", "no_answer")
                if float(r[key]) > threshold
            ]
            if bad:
                flags.append(f"{model}/{kind}: {', '.join(bad)} (> {threshold:.0%})")
    return flags


def _throughput(
    path: Path, items: Sequence[Item] | None, window: int = 30
) -> dict[str, dict[str, Any]]:
    """Per model: mean seconds per pair by kind, the recent rate (pairs/min over the last
    ``window`` ok lines, by their start times) and, with items, a serial time-to-finish estimate
    (remaining pairs x that model's mean seconds for their kind)."""
    table = latest_ok(read_records(path))
    by_model: dict[str, list[Record]] = defaultdict(list)
    for rec in table.values():
        by_model[str(rec["model"])].append(rec)
    out: dict[str, dict[str, Any]] = {}
    for model, recs in sorted(by_model.items()):
        walls: dict[str, list[float]] = defaultdict(list)
        for r in recs:
            walls[str(r.get("kind", ""))].append(float(r.get("wall_s") or 0.0))
        mean = {k: sum(v) / len(v) for k, v in walls.items()}
        recent = sorted(recs, key=lambda r: float(r.get("t_start") or 0.0))[-window:]
        info: dict[str, Any] = {
            "mean_s_per_pair_by_kind": {k: round(v, 1) for k, v in mean.items()}
        }
        if len(recent) >= 2:
            first = float(recent[0]["t_start"])
            last = float(recent[-1]["t_start"]) + float(recent[-1].get("wall_s") or 0.0)
            if last > first:
                info["recent_pairs_per_min"] = round(len(recent) / (last - first) * 60, 2)
        if items is not None:
            overall = sum(sum(v) for v in walls.values()) / max(1, len(recs))
            left = [it for it in items if (it.id, model) not in table]
            eta = sum(mean.get(it.kind, overall) for it in left)
            info["remaining_pairs"] = len(left)
            info["eta_h_if_alone_at_mean_speed"] = round(eta / 3600, 2)
        out[model] = info
    return out


def table_status(path: str | Path, items_path: str | Path | None = None) -> dict[str, Any]:
    """Counts of a table (ok pairs per model and kind, failed lines, complete items) and
    throughput (seconds per pair by kind, recent pairs/min, remaining-time estimate)."""
    items = load_items(items_path) if items_path is not None else None
    p = Path(path).expanduser()
    status = _counts(p, [it.id for it in items] if items is not None else None)
    status["throughput"] = _throughput(p, items)
    return status
