"""The static sentence-embedding featurizer (`uniscale.embed`) and the tables' embeddings."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tokenizers")

from uniscale import ActionSpace, Featurizer, ModelSpec, Policy
from uniscale._core import ConfigError
from uniscale.embed import PACKAGED, StaticEmbeddingFeaturizer
from uniscale.lab import datasets

DATA = Path(datasets.DATA_DIR)


@pytest.fixture(scope="module")
def feat() -> StaticEmbeddingFeaturizer:
    return StaticEmbeddingFeaturizer()


def _reference(text: str, max_tokens: int = 512) -> np.ndarray:
    """NumPy oracle straight from the packaged file: mean of the token rows, minus the offset,
    scaled to unit L2 norm."""
    from tokenizers import Tokenizer

    with np.load(DATA / PACKAGED, allow_pickle=False) as z:
        table = z["table"].astype(np.float64)
        offset = z["offset"]
        tok = Tokenizer.from_str(bytes(z["tokenizer"]).decode())
    tok.no_truncation()  # the file pads and cuts at 128 tokens; max_tokens decides here
    tok.no_padding()
    ids = tok.encode(text, add_special_tokens=False).ids[:max_tokens]
    if not ids:
        return np.zeros(table.shape[1])
    x = table[ids].mean(axis=0) - offset
    return x / np.linalg.norm(x)


def test_packaged_table_is_what_the_build_script_says() -> None:
    with np.load(DATA / PACKAGED, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]))
        assert z["table"].shape == (meta["vocab"], meta["dims"]) == (30522, 16)
        assert z["table"].dtype == np.float16 and np.isfinite(z["table"]).all()
        assert z["offset"].shape == (16,)
    assert meta["format"] == "uniscale-static-embedding-v1"
    assert "Apache-2.0" in meta["license"]


def test_matches_the_numpy_oracle(feat: StaticEmbeddingFeaturizer) -> None:
    for text in ["What is 17 times 23?", "Which enzyme breaks down starch?", "a " * 700]:
        np.testing.assert_allclose(feat.featurize(text), _reference(text), rtol=1e-5, atol=1e-6)
    short = StaticEmbeddingFeaturizer(max_tokens=3)
    np.testing.assert_allclose(
        short.featurize("one two three four five"),
        _reference("one two three four five", max_tokens=3),
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_huge_prompt_reads_only_its_start(feat: StaticEmbeddingFeaturizer) -> None:
    huge = "word " * 200_000  # 1 MB; only the first max_tokens (512) tokens count
    np.testing.assert_allclose(feat.featurize(huge), feat.featurize("word " * 600))


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_features_are_finite_and_unit_norm_or_zero(text: str) -> None:
    x = FEAT.featurize(text)
    assert x.shape == (16,) and np.isfinite(x).all()
    norm = float(np.linalg.norm(x))
    assert norm == 0.0 or abs(norm - 1.0) < 1e-9


FEAT = StaticEmbeddingFeaturizer()


def test_batch_equals_one_by_one_and_chat_uses_the_last_user_turn(
    feat: StaticEmbeddingFeaturizer,
) -> None:
    texts = ["Solve 3x + 5 = 20.", "", "Name the capital of France."]
    np.testing.assert_allclose(feat.featurize_many(texts), [feat.featurize(t) for t in texts])
    np.testing.assert_array_equal(feat.featurize(""), np.zeros(16))
    chat = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name the capital of France."},
        {"role": "assistant", "content": "Paris."},
    ]
    np.testing.assert_allclose(feat.featurize(chat), feat.featurize(texts[2]))
    everything = StaticEmbeddingFeaturizer(text="all")
    assert not np.allclose(everything.featurize(chat), feat.featurize(texts[2]))


def test_similar_requests_are_closer(feat: StaticEmbeddingFeaturizer) -> None:
    def cos(a: str, b: str) -> float:
        x, y = feat.featurize(a), feat.featurize(b)
        return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))

    math_a = "Compute the integral of x squared from 0 to 3."
    math_b = "Find the derivative of the function x cubed plus 2x."
    bio = "Which organelle produces most of the cell's energy?"
    assert cos(math_a, math_b) > cos(math_a, bio)


def test_drives_a_policy_through_featurizer(feat: StaticEmbeddingFeaturizer) -> None:
    f = Featurizer(backend=feat)
    assert f.dim == 16 and f.version == "minilm-static16-v1"
    space = ActionSpace.grid([ModelSpec("a", 0.1, 0.2), ModelSpec("b", 1.0, 2.0)], n_values=(1,))
    pol = Policy(space, dim=f.dim)
    d = pol.select(f([{"role": "user", "content": "What is 6 x 7?"}]))
    assert pol.update(d.id, 1.0).learner_updated


def test_bad_inputs_give_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="static embedding table"):
        StaticEmbeddingFeaturizer(bad)
    partial = tmp_path / "partial.npz"
    with zipfile.ZipFile(partial, "w") as zf:
        buf = io.BytesIO()
        np.save(buf, np.zeros((3, 2), dtype=np.float16))
        zf.writestr("table.npy", buf.getvalue())
    with pytest.raises(ConfigError, match="offset"):
        StaticEmbeddingFeaturizer(partial)
    with pytest.raises(ConfigError, match="text"):
        StaticEmbeddingFeaturizer(text="first")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_tokens"):
        StaticEmbeddingFeaturizer(max_tokens=0)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"uniscale\[embed\]"):
        StaticEmbeddingFeaturizer()


def test_mmlu_pro_embedding_features() -> None:
    rt = datasets.load_routing_table()
    emb = datasets.load_routing_embedding()
    assert emb.shape == (rt.n_items, 16) and np.isfinite(emb).all()
    assert rt.features().shape == (rt.n_items, 2 + len(rt.categories))
    x = rt.features("embed", emb)
    assert x.shape == (rt.n_items, 18)
    np.testing.assert_array_equal(x[:, 2:], emb)
    assert rt.features("embed+category", emb).shape == (rt.n_items, 18 + len(rt.categories))
    with pytest.raises(datasets.DataError, match="embedding"):
        rt.features("embed")
    with pytest.raises(datasets.DataError, match="features must be"):
        rt.features("words")  # type: ignore[arg-type]
    src = datasets.mmlu_pro_source(features="embed", n_requests=50)
    assert src.table(0).X.shape == (50, 18)


def test_mmlu_pro_embedding_missing_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(datasets.DataError, match="question embeddings"):
        datasets.load_routing_embedding(tmp_path / "mmlu_pro_v1.json.gz")


def test_collected_table_with_embedding_features() -> None:
    src = datasets.collected_source(features="embed", n_requests=20)
    x = src.table(0).X
    assert x.shape == (20, 16) and np.isfinite(x).all()
    with pytest.raises(datasets.DataError, match="features must be"):
        datasets.collected_source(features="bag")  # type: ignore[arg-type]


def test_replay_cli_features_flag(tmp_path: Path) -> None:
    from uniscale.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "replay",
            "--table",
            "mmlu-pro",
            "--features",
            "embed",
            "--requests",
            "60",
            "--seeds",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code in (0, None)
    assert (out / "replay_results.json").exists()
    with pytest.raises(SystemExit, match="only for --table mmlu-pro"):
        main(["replay", "--features", "embed+category", "--quiet", "--out", str(out)])


def test_serve_with_the_embed_featurizer(tmp_path: Path) -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    import httpx
    from serve_fakes import Upstream, config, running_server

    from uniscale.serve.app import Server
    from uniscale.serve.config import ServeConfigError, parse_config

    with pytest.raises(ServeConfigError, match="dim"):
        parse_config(
            '[policy]\nfeaturizer = "embed"\ndim = 32\n'
            '[[models]]\nname = "a"\nbase_url = "http://127.0.0.1:9/v1"\n'
        )
    with Upstream(answers=["42"]) as up:
        cfg = config({"small": up.base_url}, tmp=tmp_path, policy='featurizer = "embed"')
        assert cfg.policy.dim == 16
        with running_server(cfg) as run:
            body = {"model": "uniscale", "messages": [{"role": "user", "content": "6 x 7?"}]}
            r = httpx.post(f"{run.base_url}/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 200, r.text
        # the snapshot was trained on the embedding: hashed features of the same width are
        # refused at start instead of being read as if they meant the same
        hashed = config({"small": up.base_url}, tmp=tmp_path)
        with pytest.raises(ConfigError, match="featurizer version"):
            Server(hashed)
