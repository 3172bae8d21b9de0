"""Derive UniScale's packaged MMLU-Pro routing table from TIGER-AI-Lab/MMLU-Pro's public outputs.

Usage::

    python scripts/make_mmlu_pro_table.py SNAPSHOT [--out python/uniscale/data]

``SNAPSHOT`` is a git directory of https://github.com/TIGER-AI-Lab/MMLU-Pro (a bare mirror or a
clone); the script reads ``eval_results/model_outputs_<model>_5shots.zip`` for the models in
`MODELS` straight from its ``HEAD`` with ``git show`` (no work tree needed, nothing downloaded)
and writes ``mmlu_pro_v1.json.gz`` and ``mmlu_pro_v1.meta.json``. Run it twice on the same
snapshot and the bytes are identical (sorted keys, no timestamps, gzip mtime 0); the test suite
checks that against the committed files when a snapshot is present.

What is kept per question (only what replay needs; no question text is shipped):

* ``question_id`` and ``category`` (one of MMLU-Pro's 14),
* the gold letter and, per model, the letter in the file's own ``pred`` field (the repository's
  regex extraction; ``-`` where it found none). Correct means ``pred == answer``; a missing
  prediction counts as wrong (the repository's ``compute_accuracy.py`` substitutes a random
  letter instead, so its accuracies are ~1-2 points higher for models that often give none),
* per model, output tokens ``ceil(characters / 4)`` of the generated text (``model_outputs`` or
  ``generated_text``; at least 1): the common rule of thumb for English, no tokenizer,
* input tokens ``ceil(characters / 4)`` of the question asked zero-shot: the repository's
  instruction line for the category plus ``format_example(question, options)``. The recorded
  answers were generated with a five-shot chain-of-thought prefix; it is *not* charged, since
  a router sees the user's question, not a benchmark harness (see the meta file).

Only questions every chosen model answered are kept (the intersection; the Gemini files lack a
few). Prices are in `PRICES` with a source note each; they go into the meta file, which is
where `uniscale.lab.datasets` reads them.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import io
import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

NAME = "mmlu_pro_v1"
REPOSITORY = "https://github.com/TIGER-AI-Lab/MMLU-Pro"
LETTERS = "ABCDEFGHIJ"
CHARS_PER_TOKEN = 4

#: short name -> (file stem in eval_results/, what the model is, parameters or "API")
MODELS: dict[str, tuple[str, str]] = {
    "llama-2-7b": ("Llama-2-7b-hf", "Meta Llama 2 7B base, 7B dense"),
    "mathstral-7b": ("mathstral-7B", "Mistral AI Mathstral 7B, 7B dense"),
    "llama-3.1-8b-instruct": ("Meta-Llama-3_1-8B-Instruct", "Meta Llama 3.1 8B Instruct, 8B"),
    "mixtral-8x7b-instruct": (
        "Mixtral-8x7B-Instruct-v0.1",
        "Mistral AI Mixtral 8x7B Instruct v0.1, MoE 46.7B total / 12.9B active",
    ),
    "llama-3.1-70b-instruct": (
        "Meta-Llama-3_1-70B-Instruct",
        "Meta Llama 3.1 70B Instruct, 70B dense",
    ),
    "qwen1.5-110b": ("Qwen1.5-110B", "Alibaba Qwen1.5 110B base, 111B dense"),
    "gemini-1.5-flash-002": ("gemini-1.5-flash-002", "Google Gemini 1.5 Flash-002, API"),
    "gemini-1.5-pro-002": ("gemini-1.5-pro-002", "Google Gemini 1.5 Pro-002, API"),
}

_OPEN_RULE = (
    "open-weights model: a hosted serverless price tier by parameter count, the same rate for "
    "input and output, as serverless hosts (e.g. Together AI) listed them in 2024: <= 8B "
    "$0.20, mixture-of-experts <= 56B total $0.60, <= 80B $0.90, <= 110B-class $1.80 per "
    "million tokens; a rule, not a quote for this exact model (figures recalled, not re-read "
    "from a live page at derivation time)"
)
_GEMINI = (
    "Google Gemini API list price per million tokens for prompts <= 128k tokens, after the "
    "October 2024 price change for the -002 models (paid tier)"
)
#: short name -> (USD per million input tokens, USD per million output tokens, source note)
PRICES: dict[str, tuple[float, float, str]] = {
    "llama-2-7b": (0.20, 0.20, _OPEN_RULE),
    "mathstral-7b": (0.20, 0.20, _OPEN_RULE),
    "llama-3.1-8b-instruct": (0.20, 0.20, _OPEN_RULE),
    "mixtral-8x7b-instruct": (0.60, 0.60, _OPEN_RULE),
    "llama-3.1-70b-instruct": (0.90, 0.90, _OPEN_RULE),
    "qwen1.5-110b": (1.80, 1.80, _OPEN_RULE),
    "gemini-1.5-flash-002": (0.075, 0.30, _GEMINI),
    "gemini-1.5-pro-002": (1.25, 5.00, _GEMINI),
}


def _git(snapshot: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={snapshot}", *args], check=True, capture_output=True
    ).stdout


def _entries(snapshot: Path, stem: str) -> list[dict[str, Any]]:
    path = f"eval_results/model_outputs_{stem}_5shots.zip"
    with zipfile.ZipFile(io.BytesIO(_git(snapshot, "show", f"HEAD:{path}"))) as zf:
        names = [n for n in zf.namelist() if n.endswith(".json")]
        if len(names) != 1:
            raise SystemExit(f"{path}: expected one .json inside, found {names}")
        data = json.loads(zf.read(names[0]))
    # a few files hold stray strings between the records; keep the records
    return [e for e in data if isinstance(e, dict)]


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _options(raw: Any) -> list[str]:
    # most files store a list; the Gemini files store its Python repr
    opts = ast.literal_eval(raw) if isinstance(raw, str) else raw
    return [str(o) for o in opts]


def _prompt(category: str, question: str, options: list[str]) -> str:
    """The zero-shot form of the repository's prompt (evaluate_from_api.py)."""
    head = (
        f"The following are multiple choice questions (with answers) about {category}. Think "
        'step by step and then output the answer in the format of "The answer is (X)" at the '
        "end.\n\n"
    )
    body = f"Question: {question}\nOptions: " + "".join(
        f"{LETTERS[i]}. {o}\n" for i, o in enumerate(options)
    )
    return head + body + "Answer: Let's think step by step."


def derive(snapshot: Path) -> tuple[bytes, dict[str, Any]]:
    commit = _git(snapshot, "rev-parse", "HEAD").decode().strip()
    per_model: dict[str, dict[int, dict[str, Any]]] = {}
    for name, (stem, _) in MODELS.items():
        per_model[name] = {int(e["question_id"]): e for e in _entries(snapshot, stem)}
    answered = sorted(set.intersection(*(set(v) for v in per_model.values())))
    ref = per_model[next(iter(MODELS))]

    def key(e: dict[str, Any]) -> tuple[str, str, str, list[str]]:
        return (str(e["answer"]), str(e["category"]), str(e["question"]), _options(e["options"]))

    # the files were written against different releases of the data set, which corrected a
    # few questions (gold letter, options or wording): a letter means the same thing across
    # models only where every file holds the same question, so the others are dropped
    common = [q for q in answered if all(key(r[q]) == key(ref[q]) for r in per_model.values())]
    categories = sorted({ref[q]["category"] for q in common})
    cat_index = {c: i for i, c in enumerate(categories)}
    answers: dict[str, str] = {}
    out_tokens: dict[str, list[int]] = {}
    for name, recs in per_model.items():
        preds = []
        for q in common:
            p = recs[q].get("pred")
            preds.append(p if isinstance(p, str) and p in LETTERS else "-")
        answers[name] = "".join(preds)
        out_tokens[name] = [
            _tokens(str(recs[q].get("model_outputs", recs[q].get("generated_text")) or ""))
            for q in common
        ]
    gold = "".join(str(ref[q]["answer"]) for q in common)
    table = {
        "format": "uniscale-routing-table-v1",
        "models": list(MODELS),
        "categories": categories,
        "ids": [str(q) for q in common],
        "category": [cat_index[ref[q]["category"]] for q in common],
        "gold": gold,
        "input_tokens": [
            _tokens(_prompt(ref[q]["category"], ref[q]["question"], _options(ref[q]["options"])))
            for q in common
        ],
        "answers": answers,
        "output_tokens": out_tokens,
    }
    raw = json.dumps(table, sort_keys=True, separators=(",", ":")).encode()
    blob = gzip.compress(raw, compresslevel=9, mtime=0)
    n = len(common)
    accuracy = {
        m: round(sum(a == g for a, g in zip(answers[m], gold, strict=True)) / n, 6) for m in MODELS
    }
    per_category = {
        m: {
            c: round(
                sum(
                    answers[m][i] == gold[i]
                    for i in range(n)
                    if table["category"][i] == cat_index[c]
                )
                / sum(1 for k in table["category"] if k == cat_index[c]),
                4,
            )
            for c in categories
        }
        for m in MODELS
    }
    mean_cost = {
        m: sum(
            i * PRICES[m][0] + o * PRICES[m][1]
            for i, o in zip(table["input_tokens"], out_tokens[m], strict=True)
        )
        / n
        / 1e6
        for m in MODELS
    }
    meta: dict[str, Any] = {
        "name": NAME,
        "file": f"{NAME}.json.gz",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "source": {
            "repository": REPOSITORY,
            "commit": commit,
            "files": {
                m: f"eval_results/model_outputs_{s}_5shots.zip" for m, (s, _) in MODELS.items()
            },
            "paper": "Wang et al., MMLU-Pro: A More Robust and Challenging Multi-Task Language "
            "Understanding Benchmark, NeurIPS 2024 Datasets and Benchmarks (arXiv:2406.01574)",
        },
        "license": "Apache-2.0",
        "attribution": "Derived from the per-model evaluation outputs published by TIGER-AI-Lab "
        "in the MMLU-Pro repository (Apache License 2.0). Changes: only question ids, "
        "categories, gold letters, each model's extracted letter and token estimates are kept; "
        "question text, options and generated text are dropped.",
        "derivation": {
            "script": "scripts/make_mmlu_pro_table.py",
            "items": "questions answered by every chosen model (intersection of their files), "
            "less those whose gold letter, category, wording or options differ between the "
            "files (written against different releases of the data set), sorted by "
            "question_id",
            "correct": "the record's own 'pred' letter (the repository's regex extraction) "
            "equals 'answer'; no extracted letter counts as wrong ('-' in answers), unlike "
            "compute_accuracy.py, which substitutes a random letter",
            "output_tokens": f"ceil(characters / {CHARS_PER_TOKEN}) of the generated text "
            "('model_outputs' or 'generated_text'), at least 1; a character heuristic, no "
            "tokenizer",
            "input_tokens": f"ceil(characters / {CHARS_PER_TOKEN}) of the question asked "
            "zero-shot: the repository's instruction line for the category, the question, its "
            "lettered options and 'Answer: Let's think step by step.' The answers were "
            "generated with a five-shot chain-of-thought prefix (several thousand characters), "
            "which is not charged: a router sees the user's question, not a benchmark harness",
            "latency": "not recorded by the source; replay charges 0 s, so the reward trades "
            "quality against cost only",
            "samples": "one answer per (question, model): a routing table (single/1 actions "
            "only), not a test-time-scaling table",
        },
        "counts": {
            "items": n,
            "models": len(MODELS),
            "per_category": {
                c: sum(1 for k in table["category"] if k == cat_index[c]) for c in categories
            },
            "per_model_file": {m: len(per_model[m]) for m in MODELS},
            "answered_by_all": len(answered),
            "dropped_inconsistent": len(answered) - n,
        },
        "models": {
            m: {
                "source_name": MODELS[m][0],
                "description": MODELS[m][1],
                "accuracy": accuracy[m],
                "no_answer_share": round(answers[m].count("-") / n, 6),
                "mean_output_tokens": round(sum(out_tokens[m]) / n, 2),
                "price_in_per_mtok": PRICES[m][0],
                "price_out_per_mtok": PRICES[m][1],
                "price_source": PRICES[m][2],
            }
            for m in MODELS
        },
        "accuracy_per_category": per_category,
        # what one answer costs on average at the prices above (prompt + output tokens), cheap
        # to dear: the order replay's cost side sees
        "models_by_mean_cost_usd": sorted(MODELS, key=lambda m: (mean_cost[m], m)),
        "mean_cost_usd_per_answer": {m: round(mean_cost[m], 10) for m in MODELS},
        "mean_input_tokens": round(sum(table["input_tokens"]) / n, 2),
    }
    return blob, meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("snapshot", type=Path, help="git directory of TIGER-AI-Lab/MMLU-Pro")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "python" / "uniscale" / "data",
        help="output directory (default: the package's data directory)",
    )
    args = p.parse_args(argv)
    blob, meta = derive(args.snapshot)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json.gz").write_bytes(blob)
    (args.out / f"{NAME}.meta.json").write_text(
        json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    print(
        f"wrote {args.out / (NAME + '.json.gz')} ({len(blob)} bytes, "
        f"{meta['counts']['items']} items x {len(MODELS)} models)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
