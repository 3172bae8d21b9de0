"""Request featurizers: a chat request -> a fixed-size float64 vector for the policy.

`Featurizer` is the facade the `Router` uses. It wraps a backend that follows the
`FeaturizerBackend` protocol (``dim``, ``version``, ``featurize``) and adds what every backend
needs: validated output (shape ``(dim,)``, float64, finite), batch featurization, and a
tokenizer-free prompt-token estimate for the cost model.

Backends:

`HashingFeaturizer` (default)
    The ``hash-v1`` scheme of ``rust/featurize/``: signed feature hashing of word unigrams and
    bigrams (all turns; the last user turn weighted 1, the rest 0.5) and character n-grams of the
    last user turn, next to dense length and structure signals, L2-normalised. Microseconds per
    request, no network, deterministic across processes and platforms. Layout of ``x``:

    ====================  =====================================================================
    ``x[0]``              ``bias`` (1 before normalisation)
    ``x[1]``              ``log_tokens``: estimated prompt tokens of the request (log scale)
    ``x[2]``              ``log_last_tokens``: estimated tokens of the last user turn
    ``x[3]``              ``last_share``: the last user turn's share of all characters
    ``x[4]``              ``log_turns``: number of messages
    ``x[5]``              ``has_system``: 1 if there is a system (or developer) message
    ``x[6]``              ``digit_frac``: digits / non-space characters (last user turn)
    ``x[7]``              ``log_math``: math symbols and LaTeX commands (last user turn)
    ``x[8]``              ``log_questions``: question marks (last user turn)
    ``x[9]``              ``log_code_fences``: runs of 3+ backticks (whole request)
    ``x[10]``             ``log_newlines``: newlines (last user turn)
    ``x[11]``             ``non_ascii_frac``: non-ASCII / non-space characters (last user turn)
    ``x[12:]``            hashed n-gram features, ``dim - 12`` buckets
    ====================  =====================================================================

    The ``log_*`` signals are ``log2(1 + count) / log2(1 + cap)`` clipped to 1 (caps: tokens
    32768, turns 64, math 64, questions 8, code fences 8, newlines 128). The hashed block has
    unit norm before the whole vector is normalised. The version string is ``hash-v1-d{dim}``
    (plus ``-n{char_ngram}`` / ``-s{seed}`` when not the defaults 3 and 0); a policy built with
    ``feature_version=featurizer.version`` refuses vectors of any other version.

`CallableFeaturizer`
    A caller-supplied function returning the vector, with a caller-chosen version string.

`SentenceEmbeddingFeaturizer`
    A local sentence-embedding model (``sentence-transformers``), imported only when constructed
    and loaded only from local files: it never downloads anything.

Messages are a prompt string (one user turn, no chat template) or a list of
``{"role": str, "content": ...}`` dicts, where content is a string, ``None`` (empty), or a list
of OpenAI content parts (text parts are joined by newlines, others ignored). Anything else
raises `TypeError` naming the offending message; an empty list raises `ShapeError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from uniscale._core import ConfigError, FeatureHasher, NonFiniteError, ShapeError
from uniscale.execute import Messages

__all__ = [
    "DENSE_FEATURES",
    "CallableFeaturizer",
    "Featurizer",
    "FeaturizerBackend",
    "HashingFeaturizer",
    "SentenceEmbeddingFeaturizer",
    "estimate_tokens",
    "features_digest",
]

FloatArray = NDArray[np.float64]

#: Names of the dense features at the start of every ``hash-v1`` vector, in order.
DENSE_FEATURES: tuple[str, ...] = tuple(FeatureHasher.dense_names())

# Token estimates do not depend on the hasher's configuration; one instance serves all.
_ESTIMATOR = FeatureHasher()


def estimate_tokens(messages: Messages) -> int:
    """Estimated prompt tokens of a request, without a tokenizer.

    Per message ``ceil(max(chars / 4, 4/3 * words_and_symbols))``, plus 3 per message of a chat
    list for the template's role markers. Validates ``messages`` like the featurizers do.
    """
    return _ESTIMATOR.estimate_tokens(messages)


def features_digest(x: ArrayLike) -> str:
    """SHA-256 (hex) of the little-endian float64 bytes of ``x``: a compact, exact identity of a
    feature vector for decision logs."""
    a = np.ascontiguousarray(np.asarray(x, dtype="<f8"))
    return hashlib.sha256(a.tobytes()).hexdigest()


@runtime_checkable
class FeaturizerBackend(Protocol):
    """What a `Featurizer` backend provides.

    ``featurize`` returns a ``(dim,)`` float64 vector for one request; ``version`` names the
    feature space (change it whenever the vectors change meaning); ``dim`` is fixed.
    """

    @property
    def dim(self) -> int: ...

    @property
    def version(self) -> str: ...

    def featurize(self, messages: Messages) -> ArrayLike: ...


class HashingFeaturizer:
    """The default backend: ``hash-v1`` feature hashing in Rust (see the module docstring).

    ``dim`` >= 16 (12 dense features plus at least 4 hashed buckets); ``char_ngram`` in 1..8;
    ``seed`` changes every hash (use it to decorrelate collisions between two featurizers).
    Thread-safe; the GIL is released while hashing.
    """

    __slots__ = ("_core",)

    def __init__(self, dim: int = 64, *, char_ngram: int = 3, seed: int = 0) -> None:
        for key, v in (("dim", dim), ("char_ngram", char_ngram), ("seed", seed)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"HashingFeaturizer {key} must be an int, got {v!r}")
        if seed < 0:
            raise ConfigError(f"HashingFeaturizer seed must be >= 0, got {seed}")
        self._core = FeatureHasher(dim, char_ngram=char_ngram, seed=seed)

    @property
    def dim(self) -> int:
        return self._core.dim

    @property
    def version(self) -> str:
        return self._core.version

    @property
    def char_ngram(self) -> int:
        return self._core.char_ngram

    @property
    def seed(self) -> int:
        return self._core.seed

    @property
    def layout(self) -> list[str]:
        """A name for every position of ``x``: the dense features, then ``hash[i]``."""
        return [*DENSE_FEATURES, *(f"hash[{i}]" for i in range(self.dim - len(DENSE_FEATURES)))]

    def featurize(self, messages: Messages) -> FloatArray:
        return self._core.featurize(messages)

    def featurize_many(self, batch: Sequence[Messages]) -> FloatArray:
        return self._core.featurize_many(list(batch))

    def featurize_with_tokens(self, messages: Messages) -> tuple[FloatArray, int]:
        return self._core.featurize_with_tokens(messages)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_hashing, (self.dim, self.char_ngram, self.seed))

    def __repr__(self) -> str:
        return f"HashingFeaturizer(dim={self.dim}, version={self.version!r})"


def _hashing(dim: int, char_ngram: int, seed: int) -> HashingFeaturizer:
    return HashingFeaturizer(dim, char_ngram=char_ngram, seed=seed)


class _FixedSpace:
    """A backend whose ``dim`` and ``version`` are set once, in ``__init__``."""

    __slots__ = ("_dim", "_version")

    _dim: int
    _version: str

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def version(self) -> str:
        return self._version


class CallableFeaturizer(_FixedSpace):
    """A backend from a function ``fn(messages) -> array-like of shape (dim,)``.

    The vectors are used as returned (no normalisation); `Featurizer` checks shape and
    finiteness. ``version`` must be non-empty and should change whenever ``fn`` does.
    """

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[Messages], ArrayLike], dim: int, version: str) -> None:
        if not callable(fn):
            raise ConfigError(f"CallableFeaturizer fn must be callable, got {fn!r}")
        if not (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1):
            raise ConfigError(f"CallableFeaturizer dim must be an int >= 1, got {dim!r}")
        if not (isinstance(version, str) and version):
            raise ConfigError(
                f"CallableFeaturizer version must be a non-empty str, got {version!r}"
            )
        self._fn = fn
        self._dim = dim
        self._version = version

    def featurize(self, messages: Messages) -> ArrayLike:
        return self._fn(messages)

    def __repr__(self) -> str:
        return f"CallableFeaturizer({self._fn!r}, dim={self._dim}, version={self._version!r})"


class SentenceEmbeddingFeaturizer(_FixedSpace):
    """A local sentence-embedding model as a backend (optional; needs ``sentence-transformers``).

    ``model`` is a local directory or the name of a model already in the Hugging Face cache: it
    is loaded with ``local_files_only=True`` and never downloaded. ``text`` chooses what is
    embedded: the last user turn (default) or every message's content joined by newlines.
    Embeddings are L2-normalised. The version is ``st-{model name}-d{dim}`` unless given.
    Raises `ImportError` if the package is not installed.
    """

    __slots__ = ("_model", "_text")

    def __init__(
        self,
        model: str,
        *,
        text: Literal["last_user", "all"] = "last_user",
        device: str = "cpu",
        version: str | None = None,
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ImportError(
                "SentenceEmbeddingFeaturizer needs the optional package sentence-transformers "
                "(pip install sentence-transformers) and a model available locally"
            ) from exc
        _check_text(text)
        self._model: Any = SentenceTransformer(model, device=device, local_files_only=True)
        dim = self._model.get_sentence_embedding_dimension()
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"model {model!r} does not report an embedding dimension")
        self._dim = dim
        self._text = text
        name = model.rstrip("/").rsplit("/", 1)[-1]
        self._version = version or f"st-{name}-d{dim}"

    def featurize(self, messages: Messages) -> FloatArray:
        row: FloatArray = self.featurize_many([messages])[0]
        return row

    def featurize_many(self, batch: Sequence[Messages]) -> FloatArray:
        emb = self._model.encode(
            [text_of(m, self._text) for m in batch],
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.asarray(emb, dtype=np.float64).reshape(len(batch), self._dim)


def text_of(messages: Messages, which: Literal["last_user", "all"] = "last_user") -> str:
    """What an embedding backend embeds: the last user turn (else the last message), or every
    message's content joined by newlines."""
    if isinstance(messages, str):
        return messages
    texts = [_content_text(m.get("content")) for m in messages]
    if which == "all":
        return "\n".join(texts)
    for m, t in zip(reversed(messages), reversed(texts), strict=True):
        if m.get("role") == "user":
            return t
    return texts[-1] if texts else ""


def _check_text(text: str) -> None:
    """Refuse a ``text`` option of an embedding backend that `text_of` does not know."""
    if text not in ("last_user", "all"):
        raise ConfigError(f"text must be 'last_user' or 'all', got {text!r}")


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p if isinstance(p, str) else str(p.get("text", ""))
            for p in content
            if isinstance(p, str) or (isinstance(p, dict) and isinstance(p.get("text"), str))
        ]
        return "\n".join(parts)
    return ""


class Featurizer:
    """Chat request -> ``(dim,)`` float64 vector, through a pluggable backend.

    ``Featurizer(64)`` is the ``hash-v1`` hashing featurizer with 64 dimensions;
    ``Featurizer(backend=...)`` wraps any `FeaturizerBackend` (``dim``, if given, must match
    it). Every vector is checked (shape, finite) before it is returned, and every request is
    validated the same way whatever the backend (`TypeError` for malformed messages,
    `ShapeError` for an empty list).
    """

    __slots__ = ("_backend", "_hashing")

    def __init__(
        self,
        dim: int | None = None,
        *,
        char_ngram: int = 3,
        seed: int = 0,
        backend: FeaturizerBackend | None = None,
    ) -> None:
        if backend is None:
            backend = HashingFeaturizer(
                64 if dim is None else dim, char_ngram=char_ngram, seed=seed
            )
        elif not isinstance(backend, FeaturizerBackend):
            raise ConfigError(
                f"backend must provide dim, version and featurize(), got {type(backend).__name__}"
            )
        elif dim is not None and dim != backend.dim:
            raise ConfigError(f"dim={dim} does not match the backend's dim={backend.dim}")
        if not (isinstance(backend.version, str) and backend.version):
            raise ConfigError("the backend's version must be a non-empty str")
        self._backend: FeaturizerBackend = backend
        self._hashing = backend if isinstance(backend, HashingFeaturizer) else None

    @property
    def dim(self) -> int:
        return self._backend.dim

    @property
    def version(self) -> str:
        """The feature-space version (pass it to ``Policy(feature_version=...)``)."""
        return self._backend.version

    @property
    def backend(self) -> FeaturizerBackend:
        return self._backend

    def __call__(self, messages: Messages) -> FloatArray:
        """The features of one request, ``(dim,)`` float64."""
        if self._hashing is not None:
            return self._hashing.featurize(messages)
        estimate_tokens(messages)  # the same validation (and errors) as the hashing backend
        return self._check(self._backend.featurize(messages))

    featurize = __call__

    def featurize_with_tokens(self, messages: Messages) -> tuple[FloatArray, int]:
        """``(features, estimate_tokens(messages))`` (one pass for the hashing backend)."""
        if self._hashing is not None:
            return self._hashing.featurize_with_tokens(messages)
        tokens = estimate_tokens(messages)
        return self._check(self._backend.featurize(messages)), tokens

    def featurize_many(self, batch: Sequence[Messages]) -> FloatArray:
        """Features of many requests, ``(n, dim)``."""
        if isinstance(batch, str):
            raise TypeError("featurize_many takes a list of requests, not a str")
        if self._hashing is not None:
            return self._hashing.featurize_many(batch)
        for m in batch:
            estimate_tokens(m)
        many = getattr(self._backend, "featurize_many", None)
        if callable(many):
            out = np.asarray(many(list(batch)), dtype=np.float64)
            if out.shape != (len(batch), self.dim):
                raise ShapeError(
                    f"backend {self.version!r} returned shape {out.shape} for a batch of "
                    f"{len(batch)}, expected ({len(batch)}, {self.dim})"
                )
            self._check_finite(out)
            return out
        if len(batch) == 0:
            return np.zeros((0, self.dim))
        return np.stack([self._check(self._backend.featurize(m)) for m in batch])

    def estimate_tokens(self, messages: Messages) -> int:
        """See `estimate_tokens`."""
        return estimate_tokens(messages)

    def _check(self, x: ArrayLike) -> FloatArray:
        a = np.asarray(x, dtype=np.float64)
        if a.shape != (self.dim,):
            raise ShapeError(
                f"backend {self.version!r} returned shape {a.shape}, expected ({self.dim},)"
            )
        self._check_finite(a)
        return a

    def _check_finite(self, a: FloatArray) -> None:
        if not np.isfinite(a).all():
            raise NonFiniteError(f"backend {self.version!r} returned a non-finite feature")

    def __repr__(self) -> str:
        return f"Featurizer(dim={self.dim}, version={self.version!r}, backend={self._backend!r})"
