"""A 16-dimensional static sentence embedding as a featurizer backend (no model download).

`StaticEmbeddingFeaturizer` turns a request into the mean of its WordPiece tokens' rows of a
packaged table (``data/minilm_static16.npz``, built by ``scripts/make_static_embedding.py``):
all-MiniLM-L6-v2's input embeddings (Apache-2.0) projected on their top 16 principal
components. There is no transformer pass, so it runs in a fraction of a millisecond on CPU,
and its 16 dimensions keep the policy's joint model small (the hashing featurizer's 64 make
``kron([1, x], [1, psi])`` four times wider). It needs the ``tokenizers`` package (the
``embed`` extra); the table ships with UniScale, nothing is downloaded.

    from uniscale import Featurizer
    from uniscale.embed import StaticEmbeddingFeaturizer
    feat = Featurizer(backend=StaticEmbeddingFeaturizer())
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from uniscale._core import ConfigError
from uniscale.execute import Messages
from uniscale.featurize import _check_text, _FixedSpace, text_of

FloatArray = NDArray[np.float64]
PACKAGED = "minilm_static16.npz"


def _load(
    path: str | Path | None,
) -> tuple[NDArray[np.float32], NDArray[np.float64], bytes, dict[str, Any]]:
    try:
        if path is None:
            blob = resources.files("uniscale").joinpath("data", PACKAGED).read_bytes()
        else:
            blob = Path(path).read_bytes()
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            arrays = {
                n.removesuffix(".npy"): np.load(io.BytesIO(zf.read(n)), allow_pickle=False)
                for n in zf.namelist()
            }
        table = np.asarray(arrays["table"], dtype=np.float32)
        offset = np.asarray(arrays["offset"], dtype=np.float64)
        tok = bytes(np.asarray(arrays["tokenizer"], dtype=np.uint8))
        meta = json.loads(bytes(np.asarray(arrays["meta"], dtype=np.uint8)))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        where = PACKAGED if path is None else str(path)
        raise ConfigError(f"cannot read the static embedding table {where}: {exc}") from exc
    if table.ndim != 2 or offset.shape != (table.shape[1],):
        raise ConfigError(f"static embedding table has shapes {table.shape}, {offset.shape}")
    if not (np.isfinite(table).all() and np.isfinite(offset).all()):
        raise ConfigError("static embedding table has non-finite entries")
    return table, offset, tok, meta


class StaticEmbeddingFeaturizer(_FixedSpace):
    """Mean of the request's token rows in a static embedding table (`FeaturizerBackend`).

    ``text`` chooses what is embedded: the last user turn (default) or every message's content.
    Features are centred on ordinary English text (see the build script) and scaled to unit
    L2 norm per request. At most ``max_tokens`` tokens are read (the start of the
    text). An empty text gives zeros.
    Raises `ImportError` when ``tokenizers`` is missing, `ConfigError` for an unreadable table.
    """

    __slots__ = ("_max_tokens", "_offset", "_table", "_text", "_tokenizer", "meta")

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        text: Literal["last_user", "all"] = "last_user",
        max_tokens: int = 512,
    ) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ImportError(
                "StaticEmbeddingFeaturizer needs the tokenizers package: "
                "pip install 'uniscale[embed]'"
            ) from exc
        _check_text(text)
        if not (isinstance(max_tokens, int) and max_tokens >= 1):
            raise ConfigError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        self._table, self._offset, tok, self.meta = _load(path)
        self._tokenizer = Tokenizer.from_str(tok.decode())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._dim = int(self._table.shape[1])
        self._text = text
        self._max_tokens = max_tokens
        self._version = f"minilm-static{self._dim}-v1"

    def _row(self, ids: Sequence[int]) -> FloatArray:
        ids = ids[: self._max_tokens]
        if not ids:
            return np.zeros(self._dim)
        x = np.asarray(self._table[np.asarray(ids)].mean(axis=0), dtype=np.float64) - self._offset
        # unit L2 norm (as sentence-transformers normalises): the direction carries the
        # meaning, every request's features have the norm of a one-hot task-type vector
        # whatever its length, so the policy's exploration bonus on the request x action
        # interactions is on that scale too (unit RMS, four times larger, explored 4x more
        # and lost 0.006 per request more on MMLU-Pro: scripts/feature_ablation.py)
        norm = float(np.linalg.norm(x))
        return x / norm if norm > 1e-12 else np.zeros(self._dim)

    def _text_of(self, messages: Messages) -> str:
        # only the first max_tokens tokens are read: a WordPiece token is at most a word of
        # the vocabulary (<= 18 characters here), so a huge prompt is not tokenized whole
        return text_of(messages, self._text)[: 32 * self._max_tokens]

    def featurize(self, messages: Messages) -> FloatArray:
        text = self._text_of(messages)
        return self._row(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def featurize_many(self, batch: Sequence[Messages]) -> FloatArray:
        texts = [self._text_of(m) for m in batch]
        enc = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        out = np.zeros((len(batch), self._dim))
        for i, e in enumerate(enc):
            out[i] = self._row(e.ids)
        return out

    def __repr__(self) -> str:
        return f"StaticEmbeddingFeaturizer(dim={self._dim}, text={self._text!r})"
