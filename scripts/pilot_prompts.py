"""Pilot of prompt formats for the real_v2 outcome table (issue: the v1 table measures truncation).

For each model and item kind it asks ``--per-kind`` items under each candidate format, greedy and
``--samples`` sampled answers (temperature 0.7), against real llama.cpp servers on 127.0.0.1,
and reports per (model, kind, format): truncation (``finish_reason == "length"``), no-answer rate
(the extractor finds nothing), accuracy (greedy and sampled), output-length quantiles of the
finished answers, and seconds per answer. The numbers decide the real_v2 prompts and limits.

    python scripts/pilot_prompts.py --models smollm2 qwen05 qwen15 --per-kind 30 \\
        --out docs/data/real_v2_pilot.json

Servers come from ``scripts/llm/setup.sh`` (the cache outside the repository); one model is
served at a time with both threads, so seconds per answer are comparable between formats. The
result is written after every (model, kind, format) cell, so an interrupted pilot keeps what it
measured (``--resume`` skips the cells already in the output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from uniscale.extract import get_extractor
from uniscale.lab import collect

# The llama-server launcher is a test fixture (tests/llm_servers.py), not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import llm_servers

TEMPERATURE = 0.7
SEED = 20261202


@dataclass(frozen=True)
class Format:
    """One candidate way of asking items of a kind."""

    name: str
    kind: str
    system: str | None
    template: str  # with {question} and, for multiple choice, {options}
    max_tokens: int
    extractor: str
    grammar: str | None = None  # llama-server GBNF constraint on the answer

    @property
    def spec(self) -> collect.PromptSpec:
        """The format as the collector's prompt spec (so both build the same messages)."""
        return collect.PromptSpec(
            self.kind,
            self.template,
            self.max_tokens,
            self.extractor,
            system=self.system,
            grammar=self.grammar,
        )


NUMERIC_LIMIT = 640  # far above what a finished answer needs, so the pilot sees full lengths

FORMATS: tuple[Format, ...] = (
    # Multiple choice
    Format(
        "v2_free_letter",
        "mmlu",
        None,
        "{question}\n\n{options}\n\nAnswer with the letter of the correct option (A, B, C or D).",
        64,
        "choice",
    ),
    Format(
        "letter_grammar",
        "mmlu",
        "You answer multiple-choice questions with a single letter.",
        "{question}\n\n{options}\n\nAnswer with the letter of the correct option (A, B, C or D).",
        2,
        "choice",
        grammar="root ::= [ABCD]",
    ),
    Format(
        "brief_then_letter",
        "mmlu",
        None,
        "{question}\n\n{options}\n\nThink in at most three short sentences, then end with "
        "'The answer is X' where X is the letter of the correct option.",
        256,
        "choice",
    ),
    # Arithmetic and GSM8K: the v2 wording and a briefer one, both with a generous limit
    Format(
        "v2_steps",
        "arithmetic",
        None,
        "{question}\n\nSolve it briefly, then end with 'The answer is' followed by the final"
        " number.",
        NUMERIC_LIMIT,
        "answer_number",
    ),
    Format(
        "brief_system",
        "arithmetic",
        "You are a careful math assistant. Keep the working short: a few lines at most. Always "
        "finish with the sentence 'The answer is N.' where N is a number.",
        "{question}",
        NUMERIC_LIMIT,
        "answer_number",
    ),
    Format(
        "v2_steps",
        "gsm8k",
        None,
        "{question}\n\nSolve step by step, then end with 'The answer is' followed by the final"
        " number.",
        NUMERIC_LIMIT,
        "answer_number",
    ),
    Format(
        "brief_system",
        "gsm8k",
        "You are a careful math assistant. Keep the working short: a few lines at most. Always "
        "finish with the sentence 'The answer is N.' where N is a number.",
        "{question}",
        NUMERIC_LIMIT,
        "answer_number",
    ),
)


def quantile(values: Sequence[int], q: float) -> int | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


async def ask(
    client: httpx.AsyncClient,
    url: str,
    model: str,
    fmt: Format,
    item: collect.Item,
    n: int,
    temperature: float,
    seed: int,
) -> tuple[list[dict[str, Any]], float]:
    body: dict[str, Any] = {
        "model": model,
        "messages": collect.build_messages(item, fmt.spec),
        "max_tokens": fmt.max_tokens,
        "temperature": temperature,
        "n": n,
        "seed": seed,
    }
    if fmt.grammar:
        body["grammar"] = fmt.grammar
    t0 = time.monotonic()
    resp = await client.post(url, json=body)
    wall = time.monotonic() - t0
    resp.raise_for_status()
    data = resp.json()
    ext = get_extractor(fmt.extractor)
    gold = collect.gold_for(item)
    out = []
    for ch in data["choices"]:
        text = ch["message"].get("content") or ""
        answer = ext(text)
        out.append(
            {
                "finish": ch.get("finish_reason"),
                "answer": answer,
                "correct": answer is not None and answer == gold,
                # llama-server reports usage summed over the n choices; per-choice length from
                # the timings would need logprobs, so re-tokenising is left out: an n=1 request
                # gives the exact count.
                "tokens": data["usage"]["completion_tokens"] if n == 1 else None,
            }
        )
    return out, wall


async def pilot_cell(
    base_url: str, model: str, fmt: Format, items: Sequence[collect.Item], samples: int
) -> dict[str, Any]:
    url = f"{base_url}/v1/chat/completions"
    sem = asyncio.Semaphore(4)
    greedy: list[dict[str, Any]] = []
    sampled: list[dict[str, Any]] = []
    walls: list[float] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:

        async def one(i: int, item: collect.Item) -> None:
            async with sem:
                g, w = await ask(client, url, model, fmt, item, 1, 0.0, SEED + i)
                greedy.extend(g)
                walls.append(w)
                for k in range(samples):
                    s, w = await ask(
                        client, url, model, fmt, item, 1, TEMPERATURE, SEED + 1000 * k + i
                    )
                    sampled.extend(s)
                    walls.append(w)

        t0 = time.monotonic()
        await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
        elapsed = time.monotonic() - t0
    every = greedy + sampled
    finished = [int(r["tokens"]) for r in every if r["finish"] != "length" and r["tokens"]]
    return {
        "model": model,
        "kind": fmt.kind,
        "format": fmt.name,
        "max_tokens": fmt.max_tokens,
        "grammar": fmt.grammar,
        "items": len(items),
        "answers": len(every),
        "truncated": sum(r["finish"] == "length" for r in every) / len(every),
        "no_answer": sum(r["answer"] is None for r in every) / len(every),
        "acc_greedy": sum(r["correct"] for r in greedy) / len(greedy),
        "acc_sampled": sum(r["correct"] for r in sampled) / max(1, len(sampled)),
        "tokens_finished_p50": quantile(finished, 0.5),
        "tokens_finished_p95": quantile(finished, 0.95),
        "tokens_finished_p99": quantile(finished, 0.99),
        "tokens_mean": sum(int(r["tokens"] or 0) for r in every) / len(every),
        "seconds_per_answer": elapsed / len(every),
        "wall_s": round(elapsed, 2),
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_items(all_items: Sequence[collect.Item], kind: str, k: int) -> list[collect.Item]:
    """Every ``len/k``-th item of the kind: spread over the sources, the same on every run."""
    of_kind = [it for it in all_items if it.kind == kind]
    step = max(1, len(of_kind) // k)
    return of_kind[::step][:k]


def render_markdown(cells: Sequence[dict[str, Any]]) -> str:
    head = (
        "| model | kind | format | max_tokens | items | truncated | no answer | acc greedy "
        "| acc sampled | finished tokens p50/p95/p99 | s/answer |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for c in cells:
        rows.append(
            f"| {c['model']} | {c['kind']} | {c['format']} | {c['max_tokens']} | {c['items']} "
            f"| {c['truncated']:.0%} | {c['no_answer']:.0%} | {c['acc_greedy']:.2f} "
            f"| {c['acc_sampled']:.2f} | {c['tokens_finished_p50']}/{c['tokens_finished_p95']}"
            f"/{c['tokens_finished_p99']} | {c['seconds_per_answer']:.2f} |"
        )
    return head + "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["smollm2", "qwen05", "qwen15"])
    p.add_argument("--kinds", nargs="+", default=["mmlu", "arithmetic", "gsm8k"])
    p.add_argument(
        "--formats", nargs="+", default=None, help="only these format names (default: all)"
    )
    p.add_argument("--per-kind", type=int, default=30, help="items per kind (default 30)")
    p.add_argument("--samples", type=int, default=1, help="sampled answers per item besides greedy")
    p.add_argument("--items", default=None, help="items JSONL (default: the packaged items)")
    p.add_argument("--out", required=True, help="JSON output (a .md table is written beside it)")
    p.add_argument("--resume", action="store_true", help="skip cells already in --out")
    p.add_argument(
        "--render", action="store_true", help="only rewrite the .md table from --out's JSON"
    )
    args = p.parse_args(argv)
    items_path = args.items or str(Path(collect.__file__).parent / "data" / "items.jsonl")
    all_items = collect.load_items(items_path)
    out = Path(args.out)
    if args.render:
        cells_done = json.loads(out.read_text())["cells"]
        out.with_suffix(".md").write_text(render_markdown(cells_done))
        return 0
    cells: list[dict[str, Any]] = []
    if args.resume and out.exists():
        cells = json.loads(out.read_text())["cells"]
    done = {(c["model"], c["kind"], c["format"]) for c in cells}
    out.parent.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        todo = [
            f
            for f in FORMATS
            if f.kind in args.kinds
            and (args.formats is None or f.name in args.formats)
            and (model, f.kind, f.name) not in done
        ]
        if not todo:
            continue
        with llm_servers.start_servers(
            [model], ports=[free_port()], threads=2, ctx=4 * 1024, parallel=4
        ) as servers:
            base = servers[model].base_url
            for fmt in todo:
                items = pick_items(all_items, fmt.kind, args.per_kind)
                cell = asyncio.run(pilot_cell(base, model, fmt, items, args.samples))
                cells.append(cell)
                print(render_markdown([cell]).splitlines()[-1], flush=True)
                meta = {
                    "generator": "scripts/pilot_prompts.py",
                    "per_kind": args.per_kind,
                    "samples": args.samples,
                    "temperature": TEMPERATURE,
                    "seed": SEED,
                    "cpu_level": llm_servers.cpu_level(),
                    "formats": [f.__dict__ for f in FORMATS],
                    "cells": cells,
                }
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(meta, indent=1) + "\n")
                tmp.replace(out)
                out.with_suffix(".md").write_text(render_markdown(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
