"""The request featurizer: hash-v1 layout, determinism, validation and its pluggable backends."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import uniscale
from uniscale._core import FeatureHasher
from uniscale.featurize import (
    DENSE_FEATURES,
    CallableFeaturizer,
    Featurizer,
    HashingFeaturizer,
    SentenceEmbeddingFeaturizer,
    estimate_tokens,
    features_digest,
)

REQUESTS: list[Any] = [
    "What is 2 + 2?",
    "",
    [{"role": "user", "content": "Solve \\frac{x}{2} = 3 for x. Show steps?"}],
    [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "Write a Python function:\n```py\ndef f(x):\n```"},
        {"role": "assistant", "content": "Sure, here it is."},
        {"role": "user", "content": "Now in Rust, please — with tests."},
    ],
    [{"role": "user", "content": "日本語の質問です\uff1f 価格は 1200 円 \u00d7 3"}],
]


def fnv_checksum(x: np.ndarray) -> int:
    """FNV-1a over the little-endian bytes of the float64 values (as in rust/featurize/tests.rs)."""
    h = 0xCBF29CE484222325
    for b in np.ascontiguousarray(x, dtype="<f8").tobytes():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))


# ---- layout, version, golden values --------------------------------------------------------


def test_golden_vector_matches_the_rust_unit_test() -> None:
    # Same input and pinned values as `golden_vector` in rust/featurize/tests.rs: the bindings pass
    # the text through unchanged and the scheme has not drifted.
    x = Featurizer(64)([{"role": "user", "content": "What is 2 + 2?"}])
    assert [f"{v:.12f}" for v in x[:4]] == [
        "0.550856412454",
        "0.128532901405",
        "0.114761519112",
        "0.550856412454",
    ]
    assert fnv_checksum(x) == 0xC8B18631B3B3CF00


def test_version_and_layout() -> None:
    assert Featurizer().version == "hash-v1-d64"
    assert Featurizer(128, char_ngram=4, seed=7).version == "hash-v1-d128-n4-s7"
    h = HashingFeaturizer(32)
    assert DENSE_FEATURES[:4] == ("bias", "log_tokens", "log_last_tokens", "last_share")
    assert len(DENSE_FEATURES) == FeatureHasher.n_dense == 12
    assert h.layout[:12] == list(DENSE_FEATURES)
    assert h.layout[12:] == [f"hash[{i}]" for i in range(20)] and len(h.layout) == 32


def dense(x: np.ndarray) -> dict[str, float]:
    """The dense block before the final normalisation (the bias is 1 there)."""
    return dict(zip(DENSE_FEATURES, (x[:12] / x[0]).tolist(), strict=True))


def plog(v: int, cap: int) -> float:
    def l2(n: int) -> float:
        m = n + 1
        e = m.bit_length() - 1
        return e + (m - (1 << e)) / (1 << e)

    return min(1.0, l2(v) / l2(cap))


def test_dense_signals_follow_the_documented_layout() -> None:
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "Is 12 + 30 = 42?\nReally?? ```x```"},
    ]
    d = dense(Featurizer(64)(msgs))
    assert d["bias"] == pytest.approx(1.0)
    assert d["has_system"] == pytest.approx(1.0)
    assert d["log_turns"] == pytest.approx(plog(4, 64))
    assert d["log_questions"] == pytest.approx(plog(3, 8))
    assert d["log_code_fences"] == pytest.approx(plog(2, 8))
    assert d["log_newlines"] == pytest.approx(plog(1, 128))
    assert d["log_math"] == pytest.approx(plog(2, 64))  # '+' and '='
    last = msgs[-1]["content"]
    non_ws = sum(not c.isspace() for c in last)
    assert d["digit_frac"] == pytest.approx(6 / non_ws)
    assert d["last_share"] == pytest.approx(len(last) / sum(len(m["content"]) for m in msgs))
    assert d["non_ascii_frac"] == 0.0
    tokens = estimate_tokens(msgs)
    assert d["log_tokens"] == pytest.approx(plog(tokens, 32768))
    no_system = dense(Featurizer(64)(msgs[1:]))
    assert no_system["has_system"] == 0.0


def test_token_estimate_formula() -> None:
    # 9 chars -> ceil(9/4) = 3; 2 words -> ceil(8/3) = 3; chat lists add 3 per message.
    assert estimate_tokens("abcd efgh") == 3
    assert estimate_tokens([{"role": "user", "content": "abcd efgh"}]) == 6
    # Symbol-heavy text: 7 one-char tokens -> ceil(28/3) = 10 > ceil(7/4).
    assert estimate_tokens("+-*/=<>") == 10
    assert Featurizer(16).estimate_tokens("abcd efgh") == 3
    x, t = Featurizer(64).featurize_with_tokens(REQUESTS[3])
    assert t == estimate_tokens(REQUESTS[3])
    np.testing.assert_array_equal(x, Featurizer(64)(REQUESTS[3]))


def test_every_vector_has_unit_norm_and_the_dtype() -> None:
    f = Featurizer(64)
    for req in REQUESTS:
        x = f(req)
        assert x.dtype == np.float64 and x.shape == (64,)
        assert np.linalg.norm(x) == pytest.approx(1.0, abs=1e-12)


def test_string_equals_a_single_user_message_except_for_template_tokens() -> None:
    f = Featurizer(64)
    a, b = f("The quick brown fox"), f([{"role": "user", "content": "The quick brown fox"}])
    # Everything but the token-count features agrees (up to the final normalisation).
    da, db = dense(a), dense(b)
    for k in DENSE_FEATURES:
        if k != "log_tokens":
            assert da[k] == pytest.approx(db[k]), k
    assert da["log_tokens"] < db["log_tokens"]
    np.testing.assert_allclose(a[12:] / a[0], b[12:] / b[0], rtol=1e-12)


def test_content_parts_are_joined_and_non_text_parts_ignored() -> None:
    f = Featurizer(32)
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "alpha"}, "beta"]},
    ]
    with_image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "alpha"},
                {"type": "image_url", "image_url": {"url": "http://x"}},
                "beta",
            ],
        }
    ]
    joined = [{"role": "user", "content": "alpha\nbeta"}]
    np.testing.assert_array_equal(f(parts), f(joined))
    np.testing.assert_array_equal(f(with_image), f(joined))
    # None content (assistant tool calls) is empty text.
    f([{"role": "assistant", "content": None}, {"role": "user", "content": "hi"}])


def test_any_mapping_and_sequence_is_accepted() -> None:
    from collections import UserList
    from types import MappingProxyType

    f = Featurizer(32)
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "hello there"}]
    expected = f(msgs)
    np.testing.assert_array_equal(f(tuple(msgs)), expected)
    np.testing.assert_array_equal(f(UserList(msgs)), expected)
    np.testing.assert_array_equal(f([MappingProxyType(m) for m in msgs]), expected)
    np.testing.assert_array_equal(f.featurize_many(UserList([msgs]))[0], expected)
    with pytest.raises(TypeError, match=r"messages must be a str or a list.*got dict"):
        f(msgs[0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"messages\[0\] has no 'role' key"):
        f([MappingProxyType({"content": "x"})])


def test_seed_and_ngram_change_hashes_but_not_dense_features() -> None:
    a = Featurizer(64)(REQUESTS[2])
    b = Featurizer(64, seed=1)(REQUESTS[2])
    c = Featurizer(64, char_ngram=4)(REQUESTS[2])
    assert not np.allclose(a[12:], b[12:]) and not np.allclose(a[12:], c[12:])
    assert dense(a) == pytest.approx(dense(b))


# ---- determinism -----------------------------------------------------------------------------

_CHILD = """
import sys, uniscale, json
reqs = json.loads(sys.stdin.read())
f = uniscale.Featurizer(64)
sys.stdout.write(f.featurize_many(reqs).tobytes().hex())
"""


@pytest.mark.parametrize("hashseed", ["0", "12345"])
def test_identical_bytes_in_another_process(hashseed: str) -> None:
    import json

    expected = Featurizer(64).featurize_many(REQUESTS).tobytes().hex()
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps(REQUESTS),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    assert proc.stdout == expected


def test_batch_equals_singles_and_repeated_calls() -> None:
    f = Featurizer(48)
    m = f.featurize_many(REQUESTS)
    assert m.shape == (len(REQUESTS), 48)
    for i, req in enumerate(REQUESTS):
        np.testing.assert_array_equal(m[i], f(req))
        np.testing.assert_array_equal(f(req), f(req))
    assert f.featurize_many([]).shape == (0, 48)


def test_concurrent_threads_get_the_same_vectors() -> None:
    f = Featurizer(64)
    big = [{"role": "user", "content": "word " * 2000}]
    expected = f(big)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                np.testing.assert_array_equal(f(big), expected)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_pickle_round_trip() -> None:
    h = HashingFeaturizer(40, char_ngram=2, seed=9)
    h2 = pickle.loads(pickle.dumps(h))
    assert h2.version == h.version == "hash-v1-d40-n2-s9"
    np.testing.assert_array_equal(h2.featurize("abc def"), h.featurize("abc def"))
    core = pickle.loads(pickle.dumps(FeatureHasher(20, seed=3)))
    assert core.version == "hash-v1-d20-s3"


# ---- similarity ------------------------------------------------------------------------------


def test_similar_prompts_are_closer_than_unrelated_ones() -> None:
    f = Featurizer(256)
    math_a = f("Solve for x: 3x + 5 = 20. What is x?")
    math_b = f("Solve for x: 7x - 4 = 24. What is x?")
    poem = f("Write a short poem about autumn leaves falling in a quiet park.")
    code_a = f("Write a Python function that reverses a linked list.\n```python\n```")
    code_b = f("Write a Python function that sorts a linked list.\n```python\n```")
    assert cos(math_a, math_b) > cos(math_a, poem) + 0.2
    assert cos(code_a, code_b) > cos(code_a, poem) + 0.2
    assert cos(code_a, code_b) > cos(code_a, math_a)


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [
        ([], uniscale.ShapeError, "messages is empty"),
        ([{"role": "user", "content": 3}], TypeError, r"messages\[0\]\['content'\] must be a str"),
        (
            [{"role": "user", "content": "ok"}, {"role": "user", "content": {"a": 1}}],
            TypeError,
            r"messages\[1\]\['content'\].*got dict",
        ),
        ([{"role": "user", "content": [1]}], TypeError, r"\['content'\]\[0\] must be a str"),
        ([{"role": "user", "content": [{"text": 5}]}], TypeError, r"\['text'\] must be a str"),
        ([{"content": "x"}], TypeError, r"messages\[0\] has no 'role' key"),
        ([{"role": "user"}], TypeError, r"messages\[0\] has no 'content' key"),
        ([{"role": 1, "content": "x"}], TypeError, r"\['role'\] must be a str"),
        (["just a string in a list"], TypeError, r"messages\[0\] must be a dict"),
        (42, TypeError, "messages must be a str or a list"),
        (None, TypeError, "messages must be a str or a list"),
        (b"bytes", TypeError, "messages must be a str or a list"),
    ],
)
def test_bad_messages_raise_clear_errors(bad: Any, exc: type[Exception], match: str) -> None:
    for f in (Featurizer(32), Featurizer(backend=CallableFeaturizer(lambda m: [0.0], 1, "c1"))):
        with pytest.raises(exc, match=match):
            f(bad)
    with pytest.raises(exc, match=match):
        estimate_tokens(bad)


def test_batch_errors_name_the_request() -> None:
    with pytest.raises(TypeError, match=r"batch\[1\]\[0\]\['content'\]"):
        Featurizer(32).featurize_many(["fine", [{"role": "user", "content": 1.5}]])
    with pytest.raises(TypeError, match="list of requests"):
        Featurizer(32).featurize_many("not a batch")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 15}, "dim must be in 16..="),
        ({"dim": -3}, r"called with dim=-3"),
        ({"dim": 64, "char_ngram": 0}, "char_ngram must be in 1..=8"),
        ({"dim": 64, "char_ngram": 9}, "char_ngram must be in 1..=8"),
        ({"dim": 64, "seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_configuration(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(uniscale.ConfigError, match=match):
        Featurizer(**kwargs)


# ---- pluggable backends ----------------------------------------------------------------------


def test_callable_backend_is_validated() -> None:
    f = Featurizer(backend=CallableFeaturizer(lambda m: np.arange(3.0), dim=3, version="ar-v1"))
    assert f.version == "ar-v1" and f.dim == 3
    np.testing.assert_array_equal(f("x"), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(f.featurize_many(["a", "b"]), [[0, 1, 2], [0, 1, 2]])
    assert f.featurize_with_tokens("abcd efgh")[1] == 3

    wrong = Featurizer(backend=CallableFeaturizer(lambda m: [1.0, 2.0], dim=3, version="w"))
    with pytest.raises(uniscale.ShapeError, match=r"returned shape \(2,\), expected \(3,\)"):
        wrong("x")
    nan = Featurizer(backend=CallableFeaturizer(lambda m: [1.0, math.nan], dim=2, version="n"))
    with pytest.raises(uniscale.NonFiniteError, match="non-finite"):
        nan("x")
    with pytest.raises(uniscale.ConfigError, match="does not match the backend's dim=2"):
        Featurizer(8, backend=CallableFeaturizer(lambda m: [0, 0], dim=2, version="z"))
    with pytest.raises(uniscale.ConfigError, match="version must be a non-empty str"):
        CallableFeaturizer(lambda m: [0], dim=1, version="")
    with pytest.raises(uniscale.ConfigError, match="backend must provide"):
        Featurizer(backend=object())  # type: ignore[arg-type]


def test_sentence_embedding_backend_reports_a_missing_package() -> None:
    try:
        import sentence_transformers  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="sentence-transformers"):
            SentenceEmbeddingFeaturizer("all-MiniLM-L6-v2")
    else:
        pytest.skip("sentence-transformers is installed; see the test below")


def test_sentence_embedding_backend_with_a_local_model() -> None:
    pytest.importorskip("sentence_transformers")
    model = os.environ.get("UNISCALE_TEST_ST_MODEL")
    if not model:
        pytest.skip("set UNISCALE_TEST_ST_MODEL to a locally available sentence-transformers model")
    f = Featurizer(backend=SentenceEmbeddingFeaturizer(model))
    x = f("What is 2 + 2?")
    assert x.shape == (f.dim,) and np.linalg.norm(x) == pytest.approx(1.0, abs=1e-5)
    assert f.version.startswith("st-")


# ---- property tests --------------------------------------------------------------------------

_roles = st.sampled_from(["system", "user", "assistant", "tool", "developer", "other"])
_messages = st.lists(
    st.fixed_dictionaries({"role": _roles, "content": st.text(max_size=300)}),
    min_size=1,
    max_size=6,
)


@given(text=st.text(max_size=2000), dim=st.sampled_from([16, 17, 64, 257]))
def test_any_text_gives_a_finite_unit_vector(text: str, dim: int) -> None:
    x = Featurizer(dim)(text)
    assert x.shape == (dim,) and np.isfinite(x).all()
    assert np.linalg.norm(x) == pytest.approx(1.0, abs=1e-12)
    dense_block = x[:12] / x[0]
    assert ((dense_block >= 0) & (dense_block <= 1 + 1e-12)).all()


@given(messages=_messages)
def test_any_conversation_gives_a_finite_unit_vector(messages: list[dict[str, str]]) -> None:
    f = Featurizer(64)
    x, tokens = f.featurize_with_tokens(messages)
    assert np.isfinite(x).all() and np.linalg.norm(x) == pytest.approx(1.0, abs=1e-12)
    assert tokens >= 3 * len(messages)
    assert features_digest(x) == features_digest(f(messages))
