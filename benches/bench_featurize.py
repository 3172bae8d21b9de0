#!/usr/bin/env python3
"""Latency of `uniscale.Featurizer` (hash-v1, Rust kernel) per request, from Python.

For prompts of about 20, 500 and 4000 estimated tokens (deterministic synthetic text: prose with
numbers, a formula and a code block), times single ``featurizer(messages)`` calls, each bracketed
by ``time.perf_counter_ns()``, and prints median / p99 / mean in microseconds. Next to it, the
same measurement for a compact pure-Python feature hasher defined below (word unigrams/bigrams
and character 3-grams through ``zlib.crc32`` into a NumPy vector, the same work without the Rust
kernel); the ratio is Python / uniscale, measured interleaved in this run. Also reports the
per-request cost of ``featurize_many`` on a batch of 256.

Target: median < 100 us for the ~500-token prompt (dim 64). Refuses to time a debug build
(exit 2). Exit 1 if the target is missed (not in ``--smoke`` mode).

    python benches/bench_featurize.py            # ~10 s
    python benches/bench_featurize.py --smoke    # CI: < 2 s, verdict shown as "smoke"
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import release_build_or_exit_code

TARGET_MEDIAN_US = 100.0

_WORDS = (
    "the model answer question compute value system request token cost latency number "
    "function return list string error result because therefore consider each step first "
    "then total price order between which where when how many more less equal sum product"
).split()


def make_prompt(n_words: int, seed: int) -> list[dict[str, str]]:
    """A deterministic chat request of roughly ``n_words`` words."""
    rng = random.Random(seed)
    parts: list[str] = []
    for i in range(n_words):
        w = rng.choice(_WORDS)
        if i % 17 == 5:
            w = str(rng.randint(2, 9999))
        parts.append(w)
        if i % 23 == 22:
            parts.append("?\n" if rng.random() < 0.3 else ".\n")
    body = " ".join(parts)
    if n_words >= 200:
        body += "\nGiven $x^2 + 3x = 10$, find x.\n```python\ndef f(x):\n    return x * 2\n```\n"
    return [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": body},
    ]


class PyHasher:
    """Pure-Python reference doing comparable work: dense counts, unigram/bigram and char
    3-gram hashing (crc32) into a (dim,) vector, L2-normalised."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n_hash = dim - 12

    def __call__(self, messages: list[dict[str, str]]) -> np.ndarray[Any, Any]:
        x = np.zeros(self.dim)
        h = self.n_hash
        buckets = [0.0] * h
        last = messages[-1]["content"]
        for m in messages:
            words = m["content"].lower().split()
            prev = None
            for w in words:
                c = zlib.crc32(w.encode())
                buckets[c % h] += 1.0 if c & 1 else -1.0
                if prev is not None:
                    c2 = zlib.crc32((prev + " " + w).encode())
                    buckets[c2 % h] += 0.5 if c2 & 1 else -0.5
                prev = w
        t = " " + " ".join(last.lower().split()) + " "
        for i in range(len(t) - 2):
            c = zlib.crc32(t[i : i + 3].encode())
            buckets[c % h] += 1.0 if c & 1 else -1.0
        x[12:] = buckets
        x[0] = 1.0
        x[1] = sum(len(m["content"]) for m in messages) / 4
        x[6] = sum(ch.isdigit() for ch in last) / max(1, len(last))
        x[8] = last.count("?")
        x[9] = last.count("```")
        n = np.linalg.norm(x)
        return x / n if n > 0 else x


def time_calls(fn: Callable[[], object], n: int) -> list[float]:
    """Microseconds per call, one perf_counter_ns bracket per call."""
    for _ in range(min(50, n)):
        fn()
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1e3)
    return out


def summary(us: list[float]) -> tuple[float, float, float]:
    s = sorted(us)
    p99 = s[min(len(s) - 1, int(0.99 * len(s)))]
    return statistics.median(s), p99, statistics.fmean(s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="few calls; CI sanity run")
    ap.add_argument("--calls", type=int, default=3000, help="timed calls per case and slice")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved slices per case")
    ap.add_argument("--dim", type=int, default=64, help="featurizer dimension (default 64)")
    args = ap.parse_args(argv)

    refused = release_build_or_exit_code()
    if refused is not None:
        return refused
    import uniscale

    calls = 100 if args.smoke else args.calls
    repeats = 1 if args.smoke else args.repeats

    f = uniscale.Featurizer(args.dim)
    ref = PyHasher(args.dim)
    print(
        f"uniscale {uniscale.__version__} ({uniscale.BUILD_PROFILE}), featurizer {f.version}, "
        f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, "
        f"loadavg {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(f"{calls} timed calls x {repeats} interleaved slices per case; times in microseconds\n")
    header = (
        f"{'prompt':>16} {'chars':>6} | {'uniscale p50':>12} {'p99':>8} {'mean':>8} | "
        f"{'python p50':>10} {'p99':>8} | {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    verdict_p50 = None
    for n_words in (12, 300, 3000):
        msgs = make_prompt(n_words, seed=n_words)
        tokens = f.estimate_tokens(msgs)
        chars = sum(len(m["content"]) for m in msgs)
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(repeats):
            ours += time_calls(lambda m=msgs: f(m), calls)  # type: ignore[misc]
            theirs += time_calls(lambda m=msgs: ref(m), max(50, calls // 10))  # type: ignore[misc]
        p50, p99, mean = summary(ours)
        rp50, rp99, _ = summary(theirs)
        label = f"~{tokens} tokens"
        print(
            f"{label:>16} {chars:>6} | {p50:>12.1f} {p99:>8.1f} {mean:>8.1f} | "
            f"{rp50:>10.1f} {rp99:>8.1f} | {rp50 / p50:>5.0f}x"
        )
        if n_words == 300:
            verdict_p50 = (tokens, p50, p99)

    batch = [make_prompt(300, seed=s) for s in range(256)]
    per_req: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(2 if args.smoke else 10):
            f.featurize_many(batch)
        per_req.append((time.perf_counter_ns() - t0) / 1e3 / (256 * (2 if args.smoke else 10)))
    print(f"\nfeaturize_many, batch of 256 ~500-token prompts: {min(per_req):.1f} us per request")

    assert verdict_p50 is not None
    tokens, p50, p99 = verdict_p50
    ok = p50 < TARGET_MEDIAN_US
    tag = "smoke" if args.smoke else ("PASS" if ok else "FAIL")
    print(
        f"\nTarget: ~500-token prompt ({tokens} estimated tokens) median < "
        f"{TARGET_MEDIAN_US:.0f} us: {p50:.1f} us (p99 {p99:.1f} us) -> {tag}"
    )
    return 0 if ok or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
