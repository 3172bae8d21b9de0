"""Type stubs for the compiled core ``uniscale._core`` (Rust, PyO3).

Sections: module constants; the exception tree; the learners (``LinUCB``, ``SharedLinUCB``);
the policy core (``PolicyCore``, its settings ``PolicyConfig`` and the typed values it returns:
``Decision``, ``ModelInfo``, ``Prediction``, ``UpdateResult``; ``action_features``).

Array conventions: every array argument accepts any ``ArrayLike`` (lists, tuples, numpy arrays of
any integer or float dtype, non-contiguous views) and is converted to float64 (int64 for action
indices, bool for masks) once. NaN and infinity are rejected with ``NonFiniteError`` before any
state changes. Every returned array is a new copy, never a view of internal state. All methods
are thread-safe; the GIL is released while the core computes.
"""

import os
from collections.abc import Mapping, Sequence
from typing import (
    Any,
    ClassVar,
    Final,
    Literal,
    Self,
    SupportsFloat,
    SupportsIndex,
    TypedDict,
    Unpack,
    final,
)

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BUILD_PROFILE",
    "REFRESH_PERIOD",
    "REWARD_PRESETS",
    "STATE_FORMAT_VERSION",
    "Action",
    "AllMaskedError",
    "ConfigError",
    "DTypeError",
    "Decision",
    "DuplicateUpdateError",
    "ExpiredDecisionError",
    "LinUCB",
    "ModelInfo",
    "NonFiniteError",
    "NumericalError",
    "PlanChoice",
    "PlanEstimates",
    "PolicyConfig",
    "PolicyCore",
    "Prediction",
    "ShapeError",
    "SharedLinUCB",
    "StateError",
    "StrategyInfo",
    "UniScaleError",
    "UnknownActionError",
    "UnknownDecisionError",
    "UpdateResult",
    "__version__",
    "action_features",
    "operating_point",
    "pareto_front",
    "plan_rules",
    "simulate_plan",
]

# --- module constants -----------------------------------------------------------------------

__version__: Final[str]
"""Version of the compiled core (the crate version)."""

BUILD_PROFILE: Final[Literal["debug", "release"]]
"""``"release"`` for optimised builds; benchmarks refuse to time a ``"debug"`` build."""

STATE_FORMAT_VERSION: Final[int]
"""Version of the binary state format written by ``to_bytes``/``save`` (bytes 8..12, u32 LE)."""

REFRESH_PERIOD: Final[int]
"""Rank-one updates between two exact recomputations of a learner's inverse from its matrix."""

REWARD_PRESETS: Final[dict[str, tuple[float, float, float]]]
"""The reward presets by name: ``(quality, cost, latency)`` weights (``uniscale.PRESETS``)."""

# --- exceptions -----------------------------------------------------------------------------

class UniScaleError(ValueError):
    """Base class of every error UniScale raises for bad input or bad state (a ValueError)."""

class ShapeError(UniScaleError):
    """An array has the wrong shape or length."""

class DTypeError(UniScaleError):
    """An input cannot be coerced to the required dtype (e.g. strings, or a non-bool mask)."""

class NonFiniteError(UniScaleError):
    """NaN or infinity where a finite value is required (or a finite input that overflows)."""

class UnknownActionError(UniScaleError):
    """An action index outside ``0..n_actions``."""

class AllMaskedError(UniScaleError):
    """Every action is masked out, so there is nothing to select."""

class ConfigError(UniScaleError):
    """A constructor argument or setting is out of its domain."""

class StateError(UniScaleError):
    """A state blob or file is truncated, corrupt, of another kind, or of another version."""

class UnknownDecisionError(UniScaleError):
    """A decision id this policy never issued."""

class ExpiredDecisionError(UniScaleError):
    """A decision id that expired from the pending store (time-to-live or capacity)."""

class DuplicateUpdateError(UniScaleError):
    """A second update for the same decision id."""

class NumericalError(UniScaleError):
    """A numerical failure (e.g. a matrix that lost positive definiteness)."""

# --- learners -------------------------------------------------------------------------------

_Path = str | os.PathLike[str]
_Bytes = bytes | bytearray | memoryview

class _Learner:
    """What ``LinUCB`` and ``SharedLinUCB`` share (stub only: no such class at runtime)."""

    @property
    def n_actions(self) -> int:
        """Number of actions K."""
    @property
    def dim(self) -> int:
        """Request-feature dimension d."""
    @property
    def alpha(self) -> float:
        """Width of the confidence bonus."""
    @property
    def ridge(self) -> float:
        """Ridge regulariser (prior precision)."""
    @property
    def discount(self) -> float:
        """Discount gamma in (0, 1]; 1 is plain LinUCB."""
    @property
    def prior_mean(self) -> float:
        """Prior mean of the reward: the model fits ``reward - prior_mean`` (in ``LinUCB``,
        untried actions score ``prior_mean + bonus``)."""
    @property
    def n_updates(self) -> int:
        """Number of updates the learner holds: ``SharedLinUCB`` counts every update applied;
        in ``LinUCB`` a removed action takes its count with it."""
    def select(self, x: ArrayLike, mask: ArrayLike | None = None) -> int:
        """Index of the best action for ``x`` (d,) among those where the boolean ``mask`` (K,)
        is true; ties go to the lowest index. Raises ``AllMaskedError`` if none is allowed."""
    def scores(self, x: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``(mean, bonus)``, each (K,): posterior mean (prior included) and exploration bonus
        (alpha included) of every action for ``x`` (d,). ``SharedLinUCB`` costs
        O(D^2 + K p^2), not O(K D^2)."""
    def update(self, action: SupportsIndex, x: ArrayLike, reward: SupportsFloat) -> None:
        """Records that ``action`` earned ``reward`` on ``x`` (d,). Any index outside
        ``0..K`` (of any size) or a bool raises ``UnknownActionError``."""
    def select_many(self, X: ArrayLike, mask: ArrayLike | None = None) -> NDArray[np.int64]:
        """``select`` for every row of ``X`` (n, d): returns (n,) action indices. ``mask`` is
        (K,) for every row or exactly (n, K) per row (``ShapeError`` otherwise, including a
        transposed (K, n) mask). Validates everything before computing."""
    def update_many(self, actions: ArrayLike, X: ArrayLike, rewards: ArrayLike) -> None:
        """``update`` for each row: ``actions`` (n,) integers, ``X`` (n, d), ``rewards`` (n,).
        All or nothing: every row is validated before the first is applied, and a failure
        after that rolls every row back."""
    def remove_actions(self, indices: ArrayLike) -> NDArray[np.int64]:
        """Removes the actions at ``indices``, keeping what was learned for the others. Returns
        the mapping (old K,): ``mapping[old]`` is the new index, or -1 if removed. Raises
        ``ConfigError`` rather than remove every action."""
    def to_bytes(self) -> bytes:
        """The complete state in the versioned, checksummed binary format, verified to load
        back (``StateError`` otherwise) before it is returned."""
    def save(self, path: _Path) -> None:
        """Writes ``to_bytes()`` to ``path`` atomically (temporary file, fsync, rename): a
        crash leaves the old file or the new one, and the next save removes the temporary file
        a killed writer left. The bytes are first loaded back with every validation of
        ``load``: if they do not load, ``StateError`` is raised and the old file stays. If
        ``path`` is a symbolic link, the file it points to is replaced (the link stays); an
        existing file keeps its permission bits (its owner becomes the saving user).
        ``OSError`` on I/O failure."""
    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        """Pickle (and ``copy``) support through ``from_bytes(to_bytes())``."""

@final
class LinUCB(_Learner):
    """Disjoint LinUCB: one ridge-regression model per action.

    For action ``a``: ``A_a = ridge * I + sum x x'`` and ``b_a = sum (r - prior_mean) x`` over
    the updates of ``a``; with a discount ``g < 1`` each update first decays the arm,
    ``A <- g A + x x' + (1 - g) ridge I`` and ``b <- g b + (r - prior_mean) x``. Scores:
    ``mean_a = prior_mean + theta_a . x`` with ``theta_a = A_a^-1 b_a`` and
    ``bonus_a = alpha * sqrt(x' A_a^-1 x)``; ``select`` takes the argmax of ``mean + bonus``
    over the allowed actions, ties going to the lowest index.

    Raises ``ConfigError`` for ``n_actions`` outside ``1..=65536``, ``dim`` outside
    ``1..=4096``, ``alpha`` outside ``[0, 1e6]``, ``ridge`` outside ``[1e-10, 1e10]``,
    ``discount`` outside ``(0, 1]``, a non-finite value, or a state above 2 GiB (about
    ``22 * K * d**2`` bytes; ``MemoryError`` if the allocation itself fails).

    Numerics: feature values must satisfy ``|x_i| <= 1e150`` (``NonFiniteError`` otherwise);
    an update that would push the statistics or theta past 1e300 is refused with
    ``NonFiniteError`` before anything changes, and a score that overflows in combination is
    ``NonFiniteError`` rather than ``inf``. Ill-conditioned input (features in the billions, a
    tiny ridge) is handled by scaled, jittered factorisations: every accepted update keeps a
    state that saves and loads back.
    """

    def __new__(
        cls,
        n_actions: SupportsIndex,
        dim: SupportsIndex,
        alpha: SupportsFloat = 1.0,
        ridge: SupportsFloat = 1.0,
        discount: SupportsFloat = 1.0,
        prior_mean: SupportsFloat = 0.0,
    ) -> Self: ...
    def theta(self, action: SupportsIndex | None = None) -> NDArray[np.float64]:
        """Ridge coefficients ``A_a^-1 b_a`` (prior mean not included): (K, d) for all actions,
        or (d,) for one ``action``."""
    def add_actions(self, count: SupportsIndex) -> NDArray[np.int64]:
        """Appends ``count`` untrained actions; returns their indices."""
    @staticmethod
    def from_bytes(data: _Bytes) -> LinUCB:
        """Rebuilds a learner from ``to_bytes`` output; ``StateError`` if the blob is
        truncated, corrupt, of another kind or of another format version."""
    @staticmethod
    def load(path: _Path) -> LinUCB:
        """Reads a file written by ``save``; ``OSError`` if it cannot be read, ``StateError``
        if its contents are invalid."""

@final
class SharedLinUCB(_Learner):
    """Shared LinUCB: one ridge model over joint request x action features.

    ``phi(x, a) = kron([1, x], [1, psi_a])`` of length ``D = (d + 1)(p + 1)``, where
    ``action_features`` is the (K, p) matrix ``psi``. Same formulas as ``LinUCB`` with one
    ``A`` (D, D) and ``b`` (D,) shared by every action, so evidence on one action informs every
    action with similar features (including actions added later).

    Raises ``ConfigError`` for no actions, ``dim < 1``, ``D > 4096``, a state above 2 GiB or
    a bad configuration value, ``ShapeError``/``NonFiniteError``/``DTypeError`` for bad
    ``action_features`` (values must satisfy ``|psi| <= 1e150``). Numerics as for ``LinUCB``.
    """

    def __new__(
        cls,
        action_features: ArrayLike,
        dim: SupportsIndex,
        alpha: SupportsFloat = 1.0,
        ridge: SupportsFloat = 1.0,
        discount: SupportsFloat = 1.0,
        prior_mean: SupportsFloat = 0.0,
    ) -> Self: ...
    @property
    def n_action_features(self) -> int:
        """Action-feature dimension p."""
    @property
    def joint_dim(self) -> int:
        """Joint dimension ``D = (d + 1)(p + 1)``."""
    def theta(self) -> NDArray[np.float64]:
        """Ridge coefficients ``A^-1 b`` as a flat (D,) vector in ``kron([1, x], [1, psi])``
        order (reshape to (d + 1, p + 1))."""
    def phi(self, x: ArrayLike, action: SupportsIndex) -> NDArray[np.float64]:
        """The joint feature vector ``kron([1, x], [1, psi_action])``, (D,)."""
    def action_features(self) -> NDArray[np.float64]:
        """The action features psi, (K, p) (a copy)."""
    def add_actions(self, psi_new: ArrayLike) -> NDArray[np.int64]:
        """Appends actions with features ``psi_new`` (m, p); returns their indices. What was
        learned carries over: the model lives on features, not on indices."""
    @staticmethod
    def from_bytes(data: _Bytes) -> SharedLinUCB:
        """Rebuilds a learner from ``to_bytes`` output; ``StateError`` if invalid."""
    @staticmethod
    def load(path: _Path) -> SharedLinUCB:
        """Reads a file written by ``save``; ``OSError`` or ``StateError`` on failure."""

# --- featurizer -----------------------------------------------------------------------------

__all__ += ["FeatureHasher"]

_Messages = str | Sequence[Mapping[str, object]]

@final
class FeatureHasher:
    """The ``hash-v1`` request featurizer (``rust/featurize/``): signed feature hashing of word
    unigrams/bigrams and character n-grams next to 12 dense length/structure signals,
    L2-normalised. Deterministic across processes and platforms. Immutable and thread-safe; the
    GIL is released while hashing.

    ``messages`` is a prompt string or a list (or tuple) of ``{"role": str, "content": ...}``
    dicts with content a str, ``None`` or a list of OpenAI content parts. Malformed messages raise
    ``TypeError`` naming the offending path; an empty list raises ``ShapeError``. Raises
    ``ConfigError`` for ``dim`` outside 16..=2**20 or ``char_ngram`` outside 1..=8.
    """

    n_dense: ClassVar[int]
    """Number of dense features at the start of every vector (12)."""

    def __new__(cls, dim: int = 64, *, char_ngram: int = 3, seed: int = 0) -> Self: ...
    @property
    def dim(self) -> int:
        """Length of every feature vector."""
    @property
    def char_ngram(self) -> int:
        """Character n-gram length."""
    @property
    def seed(self) -> int:
        """Hash seed (0 by default)."""
    @property
    def version(self) -> str:
        """``hash-v1-d{dim}``, plus ``-n{char_ngram}`` / ``-s{seed}`` when not 3 / 0."""
    @staticmethod
    def dense_names() -> list[str]:
        """Names of the dense features ``x[:n_dense]``, in order."""
    def featurize(self, messages: _Messages) -> NDArray[np.float64]:
        """Features of one request: a new (dim,) float64 array with unit L2 norm."""
    def featurize_many(self, batch: Sequence[_Messages]) -> NDArray[np.float64]:
        """Features of a list of requests, (n, dim); the GIL is released once for the batch."""
    def estimate_tokens(self, messages: _Messages) -> int:
        """Tokenizer-free prompt-token estimate: per message ``ceil(max(chars / 4,
        4/3 * words_and_symbols))``, plus 3 per message of a chat list."""
    def featurize_with_tokens(self, messages: _Messages) -> tuple[NDArray[np.float64], int]:
        """``(featurize(messages), estimate_tokens(messages))`` from one pass."""
    def __reduce__(self) -> tuple[object, tuple[()]]:
        """Pickle support (re-creates the hasher from its configuration)."""

# --- Pareto front and operating points (for the planner) ------------------------------------

def pareto_front(accuracy: ArrayLike, cost: ArrayLike, latency: ArrayLike) -> NDArray[np.int64]:
    """Indices (increasing) of the points no other point beats on accuracy (higher), cost and
    latency (lower) at once."""

def operating_point(
    accuracy: ArrayLike,
    cost: ArrayLike,
    latency: ArrayLike,
    rule: Literal["accuracy_max", "knee", "utopia", "cube"] = "knee",
    *,
    min_accuracy: float = ...,
    max_cost: float = ...,
    max_latency: float = ...,
) -> int | None:
    """One point of the front: the most accurate; the knee (farthest from the plane through the
    single-objective extremes, objectives scaled to [0, 1] over the front); the one closest to
    utopia; or the most accurate inside the cube given by the bounds (None if empty)."""

# --- planner (rust/plan.rs, rust/pareto.rs) -------------------------------------------------

@final
class PlanEstimates:
    """Monte Carlo estimates of a batch of plan points. Every array is (n, 3) with columns
    (cost_usd, latency_s, accuracy)."""

    @property
    def mean(self) -> NDArray[np.float64]:
        """Expectations over the trials (accuracy: the measured estimate for measured curves)."""
    @property
    def lo(self) -> NDArray[np.float64]:
        """``(1 - level) / 2`` percentiles (linear interpolation, NumPy's default)."""
    @property
    def hi(self) -> NDArray[np.float64]:
        """``(1 + level) / 2`` percentiles."""
    @property
    def pessimistic(self) -> NDArray[np.float64]:
        """The ``quantile`` percentile of cost and latency and the ``1 - quantile`` percentile
        of accuracy (risk-averse feasibility)."""
    @property
    def trials(self) -> int:
        """Trials per point."""
    @property
    def level(self) -> float:
        """Two-sided level of ``lo``/``hi``."""
    @property
    def quantile(self) -> float:
        """One-sided level of ``pessimistic``."""
    def __len__(self) -> int: ...

def simulate_plan(
    calls: ArrayLike,
    k: ArrayLike,
    parallelism: ArrayLike,
    accuracy_mean: ArrayLike,
    accuracy_sd: ArrayLike | None = None,
    accuracy_replicates: ArrayLike | None = None,
    *,
    trials: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    quantile: float = 0.9,
    latency: Literal["rounds", "paper_mean"] = "rounds",
    first_stream: int = 0,
    threads: int = 0,
) -> PlanEstimates:
    """Monte Carlo estimates of cost, latency and accuracy of ``k`` samples for n points.

    ``calls`` (n, 8): cost_in_usd_per_token, cost_out_usd_per_token, latency_in_s_per_token,
    latency_out_s_per_token, input_tokens_mean, input_tokens_sd, output_tokens_mean,
    output_tokens_sd (all finite and >= 0). Per call, tokens are normal draws clipped below at
    1; cost and latency are linear in them. ``k`` calls cost their sum; with ``latency =
    "rounds"`` they take ``ceil(k / P)`` rounds each as slow as its slowest call
    (``"paper_mean"``: the reference code's ``(k / P) * mean``). Accuracy: with
    ``accuracy_sd``, the best of k draws of N(accuracy_mean, accuracy_sd**2) clipped to
    [0, 1] (the paper's model); with ``accuracy_replicates`` (n, B), a measured curve:
    ``accuracy_mean`` is the estimate and the interval the replicates' percentiles. Give
    exactly one of the two (``ConfigError`` otherwise).

    Point i draws from its own stream ``(seed, first_stream + i)``: results do not depend on
    ``threads`` (0 = all cores) or on the other points of the batch. Raises ``ConfigError``
    (k outside 1..=65536, parallelism < 1, trials outside 1..=1e7, level outside (0, 1),
    quantile outside [0.5, 1), negative rates, more than 2e10 simulated calls),
    ``NonFiniteError`` and ``ShapeError``. The GIL is released while simulating."""

@final
class PlanChoice:
    """What the planner's rules chose (indices into the arrays given to ``plan_rules``)."""

    @property
    def feasible(self) -> NDArray[np.int64]:
        """Indices of the feasible points, increasing."""
    @property
    def front(self) -> NDArray[np.int64]:
        """Indices of the Pareto-optimal feasible points, increasing."""
    @property
    def picks(self) -> dict[str, int | None]:
        """Rule -> index: ``accuracy_max``, ``cube``, ``utopia``, ``knee`` (3-D curvature),
        ``knee_chord``, ``knee_paper`` (the reference code's 2-coordinate curvature). None when
        nothing is feasible, or for a knee on a front of fewer than three points."""

def plan_rules(
    accuracy: ArrayLike,
    cost: ArrayLike,
    latency: ArrayLike,
    *,
    max_cost: float = ...,
    max_latency: float = ...,
    min_accuracy: float = ...,
    check_accuracy: ArrayLike | None = None,
    check_cost: ArrayLike | None = None,
    check_latency: ArrayLike | None = None,
) -> PlanChoice:
    """Feasibility and the planner's selection rules (arXiv 2510.18905).

    A point is feasible when ``check_cost <= max_cost``, ``check_latency <= max_latency`` and
    ``check_accuracy >= min_accuracy`` (the ``check_*`` arrays default to the expectations;
    pass pessimistic quantiles for a risk-averse plan). Rules score the expectations with
    cost and latency divided by ``max_cost`` / ``max_latency`` (an infinite limit: by the
    largest among the feasible points). ``max_cost`` and ``max_latency`` must be > 0."""

# --- policy ---------------------------------------------------------------------------------

class _Value:
    """What the immutable value classes (``Action``, ``StrategyInfo``, ``ModelInfo``,
    ``PolicyConfig``, ``UpdateResult``) share (stub only: no such class at runtime): equality
    by value, hashing, and pickling by their constructor's arguments."""

    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __reduce__(self) -> tuple[Any, ...]: ...

_ModelTuple = tuple[str, float, float, int, bool, float, float, float]
"""The older form of a model: (name, price_in, price_out, parallelism, bills_prompt_once,
latency_in, latency_out, prior_output_tokens); ``ModelInfo`` is the typed one."""
_CoreModels = Sequence[tuple[ModelInfo | _ModelTuple, Sequence[tuple[str, int]]]]

def action_features(
    models: _CoreModels,
    model_slots: int | None = None,
    strategies: Sequence[StrategyInfo] | None = None,
) -> NDArray[np.float64]:
    """Semantic action features psi (K, p) for models given as ``(ModelInfo, [(strategy, n),
    ...])`` pairs over ``strategies`` (the four built-ins when omitted). Layout documented in
    ``rust/space.rs``."""

@final
class Action(_Value):
    """One point of the action space: call ``model`` with test-time-scaling ``strategy`` and
    ``n`` samples. The constructor checks the strategy is registered and runs with ``n``
    (``uniscale.strategies.check_action``; `ConfigError` otherwise). Immutable, comparable,
    hashable, picklable; ``str()`` is ``model/strategy/n=N``."""

    def __new__(cls, model: str, strategy: str, n: int) -> Self: ...
    @property
    def model(self) -> str: ...
    @property
    def strategy(self) -> str: ...
    @property
    def n(self) -> int: ...

@final
class StrategyInfo(_Value):
    """A test-time-scaling strategy as the policy's core sees it
    (``uniscale.strategies.Strategy.info()``): its name, whether it may stop before ``n``
    samples (``adaptive``), whether it has its own action-feature slot (``feature``), and
    whether it is one sample (``single_sample``, ``n == 1``). The core derives the feature
    layout from the list of these and stores the list in the saved state. Immutable,
    comparable, hashable, picklable."""

    def __new__(
        cls,
        name: str,
        *,
        adaptive: bool = False,
        feature: bool = True,
        single_sample: bool = False,
    ) -> Self: ...
    @property
    def name(self) -> str: ...
    @property
    def adaptive(self) -> bool: ...
    @property
    def feature(self) -> bool: ...
    @property
    def single_sample(self) -> bool: ...

@final
class ModelInfo(_Value):
    """A model's parameters as the core keeps them (``uniscale.ModelSpec.info()``): prices in
    dollars per million tokens, latency priors in seconds per token, the output-token prior,
    and whether the model is retired. Immutable, comparable, hashable, picklable."""

    def __new__(
        cls,
        name: str,
        *,
        price_in_per_mtok: float,
        price_out_per_mtok: float,
        parallelism: int,
        bills_prompt_once: bool,
        latency_in_s_per_token: float,
        latency_out_s_per_token: float,
        prior_output_tokens: float,
        retired: bool = False,
    ) -> Self: ...
    @property
    def name(self) -> str: ...
    @property
    def price_in_per_mtok(self) -> float: ...
    @property
    def price_out_per_mtok(self) -> float: ...
    @property
    def parallelism(self) -> int: ...
    @property
    def bills_prompt_once(self) -> bool: ...
    @property
    def latency_in_s_per_token(self) -> float: ...
    @property
    def latency_out_s_per_token(self) -> float: ...
    @property
    def prior_output_tokens(self) -> float: ...
    @property
    def retired(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]:
        """Every field by name (the constructor's keyword arguments)."""

@final
class Prediction:
    """The cost model's predictions for every action (action-index order) at one prompt size,
    one (K,) float64 array per quantity. ``np.asarray(p)`` is ``p.as_array()``."""

    COLUMNS: ClassVar[tuple[str, ...]]
    """The quantities' names in ``as_array()`` column order."""
    @property
    def output_tokens_per_sample(self) -> NDArray[np.float64]: ...
    @property
    def samples(self) -> NDArray[np.float64]:
        """Expected samples used (n, or the learned mean for adaptive strategies)."""
    @property
    def rounds(self) -> NDArray[np.float64]:
        """ceil(samples / parallelism)."""
    @property
    def cost_usd(self) -> NDArray[np.float64]: ...
    @property
    def latency_s(self) -> NDArray[np.float64]: ...
    @property
    def cost_usd_low(self) -> NDArray[np.float64]:
        """Optimistic cost (what scores and dominance pruning use; equal to `cost_usd` while
        cost exploration is off)."""
    @property
    def latency_s_low(self) -> NDArray[np.float64]:
        """Optimistic latency (as `cost_usd_low`)."""
    @property
    def cost_usd_for_limit(self) -> NDArray[np.float64]:
        """The cost `max_cost_usd` is checked against: the point prediction once the action
        has observations of its own, else the optimistic one."""
    @property
    def latency_s_for_limit(self) -> NDArray[np.float64]:
        """The latency `max_latency_s` is checked against (as `cost_usd_for_limit`)."""
    def to_dict(self) -> dict[str, NDArray[np.float64]]:
        """``{name: (K,) array}`` in ``COLUMNS`` order."""
    def as_array(self) -> NDArray[np.float64]:
        """(K, 9), the columns in ``COLUMNS`` order."""
    def __array__(self, dtype: Any = None, copy: bool | None = None) -> NDArray[Any]: ...
    def __len__(self) -> int: ...

@final
class UpdateResult(_Value):
    """What an update (or observation) learned from: the realised reward under the current
    weights, the cost and latency charged, and whether the quality learner changed (False
    when feedback came back without a quality it can learn from). Immutable, comparable."""

    def __new__(
        cls, reward: float, cost_usd: float, latency_s: float, learner_updated: bool
    ) -> Self: ...
    @property
    def reward(self) -> float: ...
    @property
    def cost_usd(self) -> float: ...
    @property
    def latency_s(self) -> float: ...
    @property
    def learner_updated(self) -> bool: ...

class _PolicySettings(TypedDict, total=False):
    """``PolicyConfig``'s fields as keyword arguments (its defaults are in Rust)."""

    learner: Literal["shared", "disjoint"]
    alpha: float
    ridge: float
    discount: float
    prior_mean: float
    reward: str | tuple[float, float, float] | Any
    cost_scale: float | None
    latency_scale: float | None
    exploration: Literal["greedy", "epsilon", "softmax"]
    epsilon: float
    temperature: float
    budget_per_request_usd: float | None
    budget_per_hour_usd: float | None
    pacing_step: float
    pacing_carryover: float
    ttl_s: float
    capacity: int
    seed: int
    model_slots: int | None
    feature_version: str
    baseline: Any
    conservative_delta: float
    conservative_confidence: float
    quality_floor: Any
    interaction_scale: float
    interaction_prior: float | Literal["auto"] | None
    cost_exploration: bool

@final
class PolicyConfig(_Value):
    """Every setting of ``uniscale.Policy``, each default set once (in Rust; ``help`` shows
    them). Immutable, comparable, hashable, picklable; ``replace(**changes)`` returns a
    changed copy. See ``uniscale.Policy`` for what each setting does."""

    def __new__(cls, **settings: Unpack[_PolicySettings]) -> Self: ...
    @property
    def learner(self) -> Literal["shared", "disjoint"]: ...
    @property
    def alpha(self) -> float: ...
    @property
    def ridge(self) -> float: ...
    @property
    def discount(self) -> float: ...
    @property
    def prior_mean(self) -> float: ...
    @property
    def reward(self) -> str | tuple[float, float, float]:
        """A preset name or ``(quality, cost, latency)``, as given."""
    @property
    def weights(self) -> tuple[float, float, float]:
        """``(quality, cost, latency)``: the reward weights, a preset resolved."""
    @property
    def cost_scale(self) -> float | None: ...
    @property
    def latency_scale(self) -> float | None: ...
    @property
    def exploration(self) -> Literal["greedy", "epsilon", "softmax"]: ...
    @property
    def epsilon(self) -> float: ...
    @property
    def temperature(self) -> float: ...
    @property
    def budget_per_request_usd(self) -> float | None: ...
    @property
    def budget_per_hour_usd(self) -> float | None: ...
    @property
    def pacing_step(self) -> float: ...
    @property
    def pacing_carryover(self) -> float: ...
    @property
    def ttl_s(self) -> float: ...
    @property
    def capacity(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def model_slots(self) -> int | None: ...
    @property
    def feature_version(self) -> str: ...
    @property
    def baseline(self) -> Any:
        """The conservative-mode baseline (an ``Action`` or an index), or None."""
    @property
    def conservative_delta(self) -> float: ...
    @property
    def conservative_confidence(self) -> float: ...
    @property
    def quality_floor(self) -> Any:
        """A ``uniscale.QualityFloor``, or None."""
    @property
    def interaction_scale(self) -> float: ...
    @property
    def interaction_prior(self) -> float | Literal["auto"] | None: ...
    @property
    def cost_exploration(self) -> bool:
        """Pooled cost/latency model with optimism for arms with little data (off by
        default)."""
    def to_dict(self) -> dict[str, Any]:
        """Every setting by name, in signature order (``PolicyConfig(**c.to_dict()) == c``)."""
    def replace(self, **changes: Unpack[_PolicySettings]) -> PolicyConfig:
        """A copy with ``changes`` applied (like ``dataclasses.replace``), validated anew."""

@final
class Decision:
    """One decision of ``PolicyCore.select``: the chosen action and what explains it."""

    @property
    def id(self) -> int:
        """Decision id to pass to ``update``."""
    @property
    def index(self) -> int:
        """Index of the chosen action in the policy's current action list."""
    @property
    def action_uid(self) -> int:
        """Stable identity of the chosen action (survives additions and removals)."""
    @property
    def model(self) -> str: ...
    @property
    def strategy(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def action(self) -> Action:
        """The chosen action as a ``uniscale.Action`` (built in Rust)."""
    @property
    def quality_mean(self) -> float:
        """Posterior mean of quality for the chosen action."""
    @property
    def quality_bonus(self) -> float:
        """LinUCB exploration bonus on quality (alpha included)."""
    @property
    def mean(self) -> float:
        """Predicted reward at the point predictions, without any exploration bonus."""
    @property
    def bonus(self) -> float:
        """Exploration bonus in reward units: the quality bonus (w_q * quality_bonus) plus the
        optimism on cost and latency (the reward difference between the point and the
        optimistic cost and latency predictions, see ``Policy.predict``)."""
    @property
    def score(self) -> float:
        """mean + bonus - pacing_lambda * optimistic cost / cost_scale: what the argmax
        maximised."""
    @property
    def cost_usd(self) -> float:
        """Predicted dollars (point prediction)."""
    @property
    def latency_s(self) -> float:
        """Predicted seconds (point prediction)."""
    @property
    def output_tokens(self) -> float:
        """Predicted output tokens per sample."""
    @property
    def samples(self) -> float:
        """Expected samples used (n, or the learned mean for adaptive strategies)."""
    @property
    def rounds(self) -> float:
        """ceil(samples / parallelism)."""
    @property
    def input_tokens(self) -> float: ...
    @property
    def propensity(self) -> float:
        """Probability with which the chosen action was picked (1.0 for pure argmax)."""
    @property
    def explored(self) -> bool:
        """True when exploration picked something other than the argmax."""
    @property
    def fallback(self) -> bool:
        """True when no allowed action met the limits and the cheapest was taken."""
    @property
    def conservative(self) -> bool:
        """True when conservative mode replaced the learner's choice by the baseline (a quality
        floor's guard: by the best allowed candidate)."""
    @property
    def pacing_lambda(self) -> float:
        """Budget multiplier in force for this decision."""
    @property
    def quality_multiplier(self) -> float | None:
        """Quality-floor mode's price on quality for this decision (None in other modes)."""
    @property
    def created_s(self) -> float: ...
    @property
    def candidates(self) -> NDArray[np.int64]:
        """Action indices that survived pruning."""
    @property
    def probabilities(self) -> NDArray[np.float64]:
        """Probability of each candidate (same order as ``candidates``); sums to 1."""
    @property
    def pruned(self) -> dict[int, str]:
        """{action index: reason}, reason in masked / cost / latency / dominated:<index>."""
    def to_dict(self) -> dict[str, Any]:
        """Everything above as a JSON-ready dict (for decision logs)."""

@final
class PolicyCore:
    """Numeric core of ``uniscale.Policy`` (use that class; this one takes raw tuples)."""

    def __new__(
        cls,
        models: _CoreModels,
        dim: SupportsIndex,
        config: PolicyConfig | None = None,
        strategies: Sequence[StrategyInfo] | None = None,
    ) -> Self: ...
    def select(
        self,
        x: ArrayLike,
        input_tokens: float = 0.0,
        max_cost_usd: float | None = None,
        max_latency_s: float | None = None,
        mask: ArrayLike | None = None,
        now: float | None = None,
    ) -> Decision:
        """Chooses an action (see ``uniscale.Policy.select``)."""
    def update(
        self,
        decision_id: SupportsIndex,
        quality: float,
        cost_usd: float | None = None,
        latency_s: float | None = None,
        output_tokens: float | None = None,
        samples_used: float | None = None,
        now: float | None = None,
    ) -> UpdateResult:
        """Feedback for a decision (see ``uniscale.Policy.update``)."""
    def observe(
        self,
        x: ArrayLike,
        action: SupportsIndex,
        quality: float,
        input_tokens: float = 0.0,
        cost_usd: float | None = None,
        latency_s: float | None = None,
        output_tokens: float | None = None,
        samples_used: float | None = None,
        weight: float = 1.0,
    ) -> UpdateResult:
        """Learns from an outcome no decision asked for (see ``uniscale.Policy.observe``)."""
    def set_weights(self, quality: float, cost: float, latency: float) -> None: ...
    @property
    def weights(self) -> tuple[float, float, float]: ...
    def set_conservative(
        self,
        index: int | None,
        delta: float | None = None,
        confidence: float | None = None,
        quality_sd: float | None = None,
        quality_range: tuple[float, float] | None = None,
        floor: float | None = None,
    ) -> None: ...
    def conservative_status(self) -> dict[str, Any] | None: ...
    def set_exploration(
        self, kind: str, epsilon: float | None = None, temperature: float | None = None
    ) -> None:
        """``None``: ``PolicyConfig``'s default."""
    def set_cost_exploration(self, on: bool) -> None:
        """Cost exploration on or off (see `Policy.set_cost_exploration`)."""
    @property
    def cost_exploration(self) -> bool: ...
    def set_budget(
        self,
        budget_per_request_usd: float | None = None,
        budget_per_hour_usd: float | None = None,
        pacing_step: float | None = None,
        pacing_carryover: float | None = None,
    ) -> None:
        """``None`` for the pacing settings: ``PolicyConfig``'s defaults."""
    @property
    def pacing_lambda(self) -> float: ...
    @property
    def pacing_credit(self) -> float:
        """Unspent budget kept as credit, in requests' worth of the target."""
    @property
    def total_cost_usd(self) -> float: ...
    @property
    def n_actions(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def n_pending(self) -> int: ...
    @property
    def next_decision_id(self) -> int:
        """The id the next decision will get."""
    def advance_decision_ids(self, at_least: int) -> int:
        """Moves the next decision id up to ``at_least`` (never down); returns it."""
    @property
    def cost_scale(self) -> float: ...
    @property
    def latency_scale(self) -> float: ...
    @property
    def alpha(self) -> float:
        """The quality learner's exploration width."""
    @property
    def interaction_scale(self) -> float: ...
    @property
    def interaction_prior(self) -> tuple[float, bool]:
        """``(multiplier, auto)`` of the shared learner's interaction ridge."""
    @property
    def feature_version(self) -> str: ...
    @property
    def learner(self) -> str: ...
    def strategies(self) -> list[StrategyInfo]:
        """The strategies, in index order (the feature layout follows from them)."""
    def action_list(self) -> list[Action]:
        """The actions as ``Action`` objects, in index order (built in Rust, no registry
        lookup)."""
    def actions(self) -> list[tuple[str, str, int, int]]:
        """(model, strategy, n, uid) per action, in index order."""
    def model_table(self) -> list[ModelInfo]:
        """Every registered model, retired ones included, in registration order."""
    def action_uids(self) -> list[int]:
        """Stable identity of each current action, in index order."""
    def models(self) -> list[str]:
        """Names of active models."""
    def action_features(self) -> NDArray[np.float64]: ...
    def predict(self, input_tokens: float) -> Prediction:
        """Cost-model predictions for every action at this prompt size."""
    def action_observations(self) -> NDArray[np.uint64]:
        """(K,): outcomes observed per action (decisions and side observations)."""
    def quality_scores(self, x: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]: ...
    def add_model(
        self, model: ModelInfo | _ModelTuple, actions: Sequence[tuple[str, int]]
    ) -> NDArray[np.int64]: ...
    def retire_model(self, name: str) -> NDArray[np.int64]: ...
    def to_bytes(self) -> bytes:
        """The state blob, verified to load back (``StateError`` otherwise)."""
    @staticmethod
    def from_bytes(data: _Bytes) -> PolicyCore: ...
    def save(self, path: _Path) -> None:
        """Atomic, verified save, as ``LinUCB.save``."""
    @staticmethod
    def load(path: _Path) -> PolicyCore: ...
    def __reduce__(self) -> tuple[object, tuple[bytes]]: ...

# ---- multi-replica merging (uniscale.sync; rust/policy/sync.rs) ----

__all__ += [
    "SYNC_FORMAT_VERSION",
    "sync_apply",
    "sync_count_mask",
    "sync_decode",
    "sync_encode",
    "sync_export",
    "sync_fingerprint",
    "sync_len",
    "sync_updates",
]

SYNC_FORMAT_VERSION: Final[int]

def sync_fingerprint(policy: PolicyCore) -> int:
    """Identifies the layout and meaning of the policy's evidence vector (action space, models,
    dimension, learner kind and configuration, interaction scale, feature version)."""

def sync_len(policy: PolicyCore) -> int:
    """Length of the policy's evidence vector."""

def sync_export(policy: PolicyCore) -> NDArray[np.float64]:
    """The policy's additive statistics minus the prior; ``ConfigError`` for a policy that
    cannot be merged (discount < 1)."""

def sync_encode(fingerprint: int, values: ArrayLike, epoch: int = 0) -> bytes:
    """An evidence vector as a sync blob (header with the discount epoch, float64 little
    endian, CRC-32)."""

def sync_decode(blob: bytes) -> tuple[int, NDArray[np.float64], int]:
    """``(fingerprint, values, epoch)``; ``StateError`` for truncated, corrupt or foreign
    bytes."""

def sync_count_mask(policy: PolicyCore) -> NDArray[np.bool_]:
    """Which entries of the evidence vector are integer counts (an epoch discount leaves
    them)."""

def sync_apply(
    policy: PolicyCore, add: ArrayLike, force: bool = False
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Adds ``add`` to the policy's evidence and rebuilds its statistics (GIL released, the
    policy's lock held only to copy out and swap in). ``(before, after)`` evidence, or None
    when local learning raced the rebuild and ``force`` is false (nothing changed)."""

def sync_updates(policy: PolicyCore) -> int:
    """The quality learner's update count, O(K) (for "sync every N updates")."""
