"""Benchmark items and the prompts that ask them: `Item`, `PromptSpec`, `PROMPTS`, and
``CollectError``, the collector's one exception."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from uniscale._core import UniScaleError
from uniscale.extract import normalize_answer

#: The packaged data (``uniscale/data``): benchmark items, outcome tables and their sidecars.
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
#: The 340 packaged benchmark items, the default ``--items``.
ITEMS = DATA_DIR / "items.jsonl"

FORMAT_VERSION = 1
PROMPT_VERSION = "v3"
F64 = NDArray[np.float64]
Record = dict[str, Any]


class CollectError(UniScaleError):
    """Bad configuration, items or table (the message names the offending key or line); a
    `uniscale.UniScaleError`, so also a ``ValueError`` as before."""


# Its public home (and the name tracebacks and pickles use) is the module it always lived in.
CollectError.__module__ = "uniscale.lab.collect"


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """How items of one kind are asked: a template with ``{question}`` (and ``{options}``)."""

    kind: str
    template: str
    max_tokens: int
    extractor: str | None  # None: the item's own extractor field
    system: str | None = None  # a system turn before the question, when set
    #: A llama.cpp GBNF grammar the answer must match (sent as the request's ``grammar``
    #: field, which llama-server honours), e.g. ``root ::= [ABCD]`` for one letter.
    grammar: str | None = None


#: The real_v2 pilot's choice (docs/real_v2.md, scripts/pilot_prompts.py): arithmetic and GSM8K
#: keep v2's wording with the limit at the pilot's 99th percentile of finished answers;
#: multiple choice is one letter forced by a grammar, because free-form letters were cut off or
#: unreadable for up to 72% of the answers of the Qwen models.
ARITHMETIC_MAX_TOKENS = 576
GSM8K_MAX_TOKENS = 640
MMLU_SYSTEM = "You answer multiple-choice questions with a single letter."
LETTER_GRAMMAR = "root ::= [ABCD]"

PROMPTS: Mapping[str, PromptSpec] = {
    "arithmetic": PromptSpec(
        "arithmetic",
        "{question}\n\nSolve it briefly, then end with 'The answer is' followed by the final"
        " number.",
        ARITHMETIC_MAX_TOKENS,
        "answer_number",
    ),
    "gsm8k": PromptSpec(
        "gsm8k",
        "{question}\n\nSolve step by step, then end with 'The answer is' followed by the final"
        " number.",
        GSM8K_MAX_TOKENS,
        "answer_number",
    ),
    "mmlu": PromptSpec(
        "mmlu",
        "{question}\n\n{options}\n\nAnswer with the letter of the correct option (A, B, C or D).",
        2,
        "choice",
        system=MMLU_SYSTEM,
        grammar=LETTER_GRAMMAR,
    ),
}
_GENERIC_PROMPT = PromptSpec("*", "{question}", 256, None)
_EXTRACTOR_ALIASES: Mapping[str, str] = {"choice_letter": "choice"}
_CHOICE_EXTRACTORS = frozenset({"choice", "choice_e"})


@dataclass(frozen=True, slots=True)
class Item:
    """One benchmark item (a line of ``uniscale/data/items.jsonl``)."""

    id: str
    kind: str
    question: str
    answer: str
    extractor: str = "last_number"
    choices: tuple[str, ...] = ()


def load_items(path: str | Path) -> list[Item]:
    """Items from a JSONL file (``id``, ``kind``, ``question``, ``answer`` required)."""
    items: list[Item] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except ValueError as exc:
                raise CollectError(f"{path}:{lineno}: invalid JSON ({exc})") from None
            for key in ("id", "kind", "question", "answer"):
                if not isinstance(d.get(key), str) or not d[key]:
                    raise CollectError(f"{path}:{lineno}: missing or non-string key {key!r}")
            if d["id"] in seen:
                raise CollectError(f"{path}:{lineno}: duplicate id {d['id']!r}")
            seen.add(d["id"])
            choices = d.get("choices", [])
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise CollectError(f"{path}:{lineno}: key 'choices' must be a list of strings")
            items.append(
                Item(
                    id=d["id"],
                    kind=d["kind"],
                    question=d["question"],
                    answer=d["answer"],
                    extractor=str(d.get("extractor") or "last_number"),
                    choices=tuple(choices),
                )
            )
    if not items:
        raise CollectError(f"{path}: no items")
    return items


def prompt_for(item: Item) -> PromptSpec:
    """The prompt spec of the item's kind (the generic one for unknown kinds)."""
    return PROMPTS.get(item.kind, _GENERIC_PROMPT)


def extractor_name(item: Item) -> str:
    """The extractor applied to this item's responses."""
    name = prompt_for(item).extractor or item.extractor
    return _EXTRACTOR_ALIASES.get(name, name)


def build_messages(item: Item, spec: PromptSpec | None = None) -> list[dict[str, str]]:
    """The chat messages sent for ``item``: the system turn of ``spec`` (default: the kind's,
    `prompt_for`), if any, and the question."""
    spec = spec or prompt_for(item)
    options = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(item.choices))
    user = {
        "role": "user",
        "content": spec.template.format(question=item.question, options=options),
    }
    return [{"role": "system", "content": spec.system}, user] if spec.system else [user]


def gold_for(item: Item) -> str:
    """The item's answer in the form the extractor produces."""
    if extractor_name(item) in _CHOICE_EXTRACTORS:
        return item.answer.strip().strip("().").upper()
    return normalize_answer(item.answer)


def order_items(items: Sequence[Item], order: Literal["interleave", "file"]) -> list[Item]:
    """``file`` order, or round-robin over kinds (so a partial table covers every kind)."""
    if order == "file":
        return list(items)
    by_kind: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_kind[it.kind].append(it)
    out: list[Item] = []
    queues = [list(v) for v in by_kind.values()]
    depth = max(len(q) for q in queues)
    for i in range(depth):
        out.extend(q[i] for q in queues if i < len(q))
    return out
