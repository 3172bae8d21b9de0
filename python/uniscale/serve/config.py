"""The ``uniscale serve`` configuration: a TOML file, validated at load.

Every key is checked against the schema below; an unknown key, a wrong type or a value out of
range raises `ServeConfigError` with the key's dotted name, the file and the line it is on
(``uniscale.toml:12: [server] prot: unknown key; expected one of host, port, ...``). A TOML
syntax error is reported with the line tomllib gives. The file format is documented in
docs/serve.md; `example_config` returns a complete example.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from uniscale._core import ConfigError
from uniscale.extract import available_extractors
from uniscale.policy import PRESETS
from uniscale.space import Action, ModelSpec
from uniscale.strategies import get_strategy, strategy_names

if TYPE_CHECKING:
    from uniscale.featurize import Featurizer

__all__ = [
    "ServeConfig",
    "ServeConfigError",
    "example_config",
    "load_config",
    "parse_action",
    "parse_config",
]

Mode = Literal["normal", "shadow", "conservative"]
#: in-flight requests per model when ``[[models]] max_concurrency`` is not given
DEFAULT_MODEL_CONCURRENCY = 32
FeedbackKind = Literal["deferred", "confidence"]
UpstreamHTTP = Literal["auto", "aiohttp", "httpx"]
FeaturizerKind = Literal["hash", "embed"]
#: most worker processes of one server (decision ids: one range of 2**WORKER_ID_BITS each)
MAX_WORKERS = 64
#: request dimensions of the ``embed`` featurizer (`uniscale.embed.StaticEmbeddingFeaturizer`)
EMBED_DIM = 16


class ServeConfigError(ConfigError):
    """The serve configuration is invalid; the message names the key, file and line."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    route_names: tuple[str, ...] = ("uniscale",)
    mode: Mode = "normal"
    max_body_bytes: int = 1_000_000
    max_samples: int = 64
    max_inflight: int = 64
    client_token_env: str | None = None
    admin_token_env: str | None = None
    graceful_shutdown_s: float = 30.0
    upstream_http: UpstreamHTTP = "auto"
    #: worker processes sharing the port; more than one needs [sync] (docs/serve.md)
    workers: int = 1


@dataclass(frozen=True, slots=True)
class PolicySettings:
    dim: int = 64
    reward: str = "cost_sensitive"
    alpha: float = 0.3
    exploration: Literal["greedy", "epsilon", "softmax"] = "epsilon"
    epsilon: float = 0.05
    seed: int = 0
    strategies: tuple[str, ...] = ("single", "self_consistency")
    n_values: tuple[int, ...] = (1, 2, 4, 8)
    ttl_s: float = 3600.0
    capacity: int = 65536
    feedback: FeedbackKind = "deferred"
    extractor: str = "text"
    budget_per_request_usd: float | None = None
    baseline: Action | None = None
    conservative_delta: float = 0.05
    featurizer: FeaturizerKind = "hash"


@dataclass(frozen=True, slots=True)
class LimitSettings:
    max_cost_usd: float | None = None
    max_latency_s: float | None = None


@dataclass(frozen=True, slots=True)
class ExecutorSettings:
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    deadline_s: float = 120.0
    retries: int = 1
    backoff_s: float = 0.5
    max_tokens: int = 512
    fallback: Action | None = None


@dataclass(frozen=True, slots=True)
class StateSettings:
    policy_path: Path | None = None
    decision_log: Path | None = None
    snapshot_interval_s: float = 60.0
    include_features: bool = True
    #: rotate the decision log when it grows past this many bytes (None: never)
    decision_log_max_bytes: int | None = None
    #: rotated files kept (PATH.1 is the newest)
    decision_log_keep: int = 5


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """``[sync]``: share what this replica learns with the others through Redis
    (`uniscale.sync.RedisSync`, docs/sync.md). Off without ``redis_url``."""

    redis_url: str | None = None
    #: every replica of one policy uses the same key (Redis keys ``{policy_key}:...``)
    policy_key: str = "uniscale"
    #: this replica's slot; stable across restarts (a pod or host name), so that a restart
    #: recovers it. Default: the host name.
    replica_id: str | None = None
    interval_s: float = 1.0
    #: also sync as soon as this many local learner updates arrived (None: time only)
    every_updates: int | None = None
    #: discounting across replicas: every statistic decays by epoch_decay per epoch_s
    #: seconds of Redis's clock (docs/sync.md)
    epoch_s: float | None = None
    epoch_decay: float = 1.0
    timeout_s: float = 0.5
    failure_threshold: int = 3
    backoff_max_s: float = 30.0
    #: ``redis_url`` names a node of a Redis Cluster
    cluster: bool = False

    @property
    def enabled(self) -> bool:
        return self.redis_url is not None


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """A validated configuration (`load_config` / `parse_config`)."""

    models: tuple[ModelSpec, ...]
    server: ServerSettings = field(default_factory=ServerSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    state: StateSettings = field(default_factory=StateSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    source: str = "<config>"

    def actions(self) -> list[Action]:
        """The action grid: every (model, strategy, n) the policy chooses among."""
        out: list[Action] = []
        for m in self.models:
            for s in self.policy.strategies:
                for n in self.policy.n_values:
                    if get_strategy(s).greedy == (n == 1):
                        out.append(Action(m.name, s, n))
        return out


# --------------------------------------------------------------------------------------------
# Schema: key -> (kind, check). A check returns the converted value or raises ValueError with
# a short reason.

Check = Callable[[Any], Any]


def _int(lo: int, hi: int | None = None) -> Check:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected an integer, got {type(v).__name__} {v!r}")
        if v < lo or (hi is not None and v > hi):
            raise ValueError(
                f"expected an integer in [{lo}, {hi if hi is not None else 'inf'}], got {v}"
            )
        return v

    return check


def _float(lo: float, *, strict: bool = False, optional: bool = False) -> Check:
    def check(v: Any) -> float | None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"expected a number, got {type(v).__name__} {v!r}")
        f = float(v)
        if not math.isfinite(f) or f < lo or (strict and f == lo):
            raise ValueError(f"expected a finite number {'>' if strict else '>='} {lo}, got {v}")
        return f

    return check


def _str(choices: Sequence[str] | None = None) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise ValueError(f"expected a non-empty string, got {type(v).__name__} {v!r}")
        if choices is not None and v not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {v!r}")
        return v

    return check


def _strategy(v: Any) -> str:
    """A registered strategy's name (checked when the config is read, so a strategy registered
    before is accepted)."""
    name: str = _str(strategy_names())(v)
    return name


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {type(v).__name__} {v!r}")
    return v


def _list(item: Check, *, nonempty: bool = True) -> Check:
    def check(v: Any) -> tuple[Any, ...]:
        if not isinstance(v, list):
            raise ValueError(f"expected an array, got {type(v).__name__} {v!r}")
        if nonempty and not v:
            raise ValueError("expected a non-empty array")
        out = tuple(item(x) for x in v)
        if len(set(out)) != len(out):
            raise ValueError(f"duplicate entries in {v!r}")
        return out

    return check


def parse_action(text: str) -> Action:
    """``"model"``, ``"model/strategy/n"`` -> `Action` (``"model"`` means ``model/single/1``)."""
    parts = text.split("/")
    if len(parts) == 1:
        return Action(parts[0], "single", 1)
    if len(parts) == 3 and parts[2].startswith("n="):
        parts[2] = parts[2][2:]  # str(Action) spells it "model/strategy/n=4"
    names = strategy_names()
    if len(parts) != 3 or parts[1] not in names or not parts[2].isdigit():
        raise ValueError(
            f"expected 'MODEL' or 'MODEL/STRATEGY/N' with STRATEGY in {', '.join(names)}, "
            f"got {text!r}"
        )
    return Action(parts[0], parts[1], int(parts[2]))


def _action(v: Any) -> Action:
    return parse_action(_str()(v))


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env(v: Any) -> str:
    s: str = _str()(v)
    if not _ENV_NAME.match(s):
        raise ValueError(f"expected an environment variable name, got {s!r}")
    return s


SCHEMA: dict[str, dict[str, Check]] = {
    "server": {
        "host": _str(),
        "port": _int(0, 65535),
        "route_names": _list(_str()),
        "mode": _str(("normal", "shadow", "conservative")),
        "max_body_bytes": _int(1024),
        "max_samples": _int(1, 1024),
        "max_inflight": _int(1),
        "client_token_env": _env,
        "admin_token_env": _env,
        "graceful_shutdown_s": _float(0.0),
        "upstream_http": _str(("auto", "aiohttp", "httpx")),
        "workers": _int(1, MAX_WORKERS),
    },
    "policy": {
        "dim": _int(1, 4096),
        "reward": _str(tuple(sorted(PRESETS))),
        "alpha": _float(0.0),
        "exploration": _str(("greedy", "epsilon", "softmax")),
        "epsilon": _float(0.0),
        "seed": _int(0),
        "strategies": _list(_strategy),
        "n_values": _list(_int(1, 128)),
        "ttl_s": _float(0.0, strict=True),
        "capacity": _int(1),
        "feedback": _str(("deferred", "confidence")),
        "extractor": _str(available_extractors()),
        "budget_per_request_usd": _float(0.0, strict=True),
        "baseline": _action,
        "conservative_delta": _float(0.0),
        "featurizer": _str(("hash", "embed")),
    },
    "limits": {
        "max_cost_usd": _float(0.0, strict=True),
        "max_latency_s": _float(0.0, strict=True),
    },
    "executor": {
        "timeout_s": _float(0.0, strict=True),
        "connect_timeout_s": _float(0.0, strict=True),
        "deadline_s": _float(0.0, strict=True),
        "retries": _int(0, 10),
        "backoff_s": _float(0.0),
        "max_tokens": _int(1),
        "fallback": _action,
    },
    "state": {
        "policy_path": _str(),
        "decision_log": _str(),
        "snapshot_interval_s": _float(0.0, strict=True),
        "include_features": _bool,
        "decision_log_max_bytes": _int(4096),
        "decision_log_keep": _int(1, 1000),
    },
    "sync": {
        "redis_url": _str(),
        "policy_key": _str(),
        "replica_id": _str(),
        "interval_s": _float(0.0, strict=True),
        "every_updates": _int(1),
        "epoch_s": _float(0.0, strict=True),
        "epoch_decay": _float(0.0, strict=True),
        "timeout_s": _float(0.0, strict=True),
        "failure_threshold": _int(1, 1000),
        "backoff_max_s": _float(0.0, strict=True),
        "cluster": _bool,
    },
}

MODEL_SCHEMA: dict[str, Check] = {
    "name": _str(),
    "base_url": _str(),
    "api_model": _str(),
    "api_key_env": _env,
    "endpoint": _str(("chat", "completions")),
    "price_in_per_mtok": _float(0.0),
    "price_out_per_mtok": _float(0.0),
    "parallelism": _int(1),
    "max_concurrency": _int(1),
    "honours_n": _bool,
    "prior_output_tokens": _float(0.0),
    "latency_in_s_per_token": _float(0.0),
    "latency_out_s_per_token": _float(0.0),
}


# --------------------------------------------------------------------------------------------
# Where a key is in the file (tomllib gives no positions)

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


def _key_lines(text: str) -> dict[tuple[str, int | None, str | None], int]:
    """``(table, array index or None, key or None)`` -> 1-based line number (``key None``: the
    table header)."""
    out: dict[tuple[str, int | None, str | None], int] = {}
    table, index = "", None
    counts: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            table = m.group(2).strip().strip('"')
            if m.group(1) == "[[":
                index = counts.get(table, 0)
                counts[table] = index + 1
            else:
                index = None
            out.setdefault((table, index, None), lineno)
            continue
        k = _KEY.match(line)
        if k:
            out.setdefault((table, index, k.group(1).strip('"')), lineno)
    return out


class _Reporter:
    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = _key_lines(text)

    def error(self, table: str, index: int | None, key: str | None, why: str) -> ServeConfigError:
        line = self.lines.get((table, index, key)) or self.lines.get((table, index, None))
        where = f"{self.source}:{line}" if line else self.source
        name = table + (f"[{index}]" if index is not None else "")
        shown = f"[{name}] {key}" if key else f"[{name}]" if name else "top level"
        return ServeConfigError(f"{where}: {shown}: {why}")


def _section(
    rep: _Reporter, table: str, index: int | None, raw: Any, schema: Mapping[str, Check]
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise rep.error(table, index, None, f"expected a table, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        check = schema.get(key)
        if check is None:
            raise rep.error(
                table, index, key, f"unknown key; expected one of {', '.join(sorted(schema))}"
            )
        try:
            out[key] = check(value)
        except (ValueError, ConfigError) as exc:
            raise rep.error(table, index, key, str(exc)) from None
    return out


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None) -> ServeConfig:
    """Validate the TOML ``text``; relative state paths resolve against ``base_dir``."""
    rep = _Reporter(source, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ServeConfigError(f"{source}: not valid TOML: {exc}") from None
    known = {*SCHEMA, "models"}
    for key in data:
        if key not in known:
            raise (
                rep.error(
                    key, None, None, f"unknown section; expected one of {', '.join(sorted(known))}"
                )
                if isinstance(data[key], dict)
                else rep.error(
                    "", None, key, f"unknown key; expected one of {', '.join(sorted(known))}"
                )
            )
    sections = {
        name: _section(rep, name, None, data.get(name, {}), s) for name, s in SCHEMA.items()
    }
    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise rep.error("models", None, None, "at least one [[models]] table is required")
    models: list[ModelSpec] = []
    for i, raw in enumerate(raw_models):
        fields = _section(rep, "models", i, raw, MODEL_SCHEMA)
        for required in ("name", "base_url"):
            if required not in fields:
                raise rep.error("models", i, None, f"missing required key {required!r}")
        # A proxy serves many clients at once: ModelSpec's default of 4 in-flight requests per
        # model suits a batch job, not this.
        fields.setdefault("max_concurrency", DEFAULT_MODEL_CONCURRENCY)
        if any(m.name == fields["name"] for m in models):
            raise rep.error("models", i, "name", f"duplicate model name {fields['name']!r}")
        try:
            models.append(ModelSpec(**fields))
        except ConfigError as exc:
            raise rep.error("models", i, None, str(exc)) from None

    server = ServerSettings(**sections["server"])
    names = {m.name for m in models}
    clash = names & set(server.route_names)
    if clash:
        raise rep.error("server", None, "route_names", f"{sorted(clash)} are also model names")
    pol = dict(sections["policy"])
    if pol.get("featurizer") == "embed":
        if pol.setdefault("dim", EMBED_DIM) != EMBED_DIM:
            raise rep.error(
                "policy", None, "dim", f"the embed featurizer has {EMBED_DIM} dimensions"
            )
    if "n_values" in pol:
        pol["n_values"] = tuple(sorted(pol["n_values"]))
    policy = PolicySettings(**pol)
    executor = ExecutorSettings(**sections["executor"])
    base = base_dir or Path.cwd()
    st = dict(sections["state"])
    for key in ("policy_path", "decision_log"):
        if key in st:
            p = Path(st[key]).expanduser()
            st[key] = p if p.is_absolute() else base / p
    state = StateSettings(**st)
    sync = SyncSettings(**sections["sync"])
    if sync.replica_id is not None and (
        not sync.replica_id or ":" in sync.replica_id or "{" in sync.replica_id
    ):
        raise rep.error("sync", None, "replica_id", "must be non-empty without ':' or '{'")
    if not sync.policy_key:
        raise rep.error("sync", None, "policy_key", "must not be empty")
    if sync.epoch_decay > 1.0:
        raise rep.error("sync", None, "epoch_decay", "must be in (0, 1]")
    if sync.epoch_decay < 1.0 and sync.epoch_s is None:
        raise rep.error("sync", None, "epoch_decay", "needs epoch_s (the length of an epoch)")
    cfg = ServeConfig(
        models=tuple(models),
        server=server,
        policy=policy,
        limits=LimitSettings(**sections["limits"]),
        executor=executor,
        state=state,
        sync=sync,
        source=source,
    )
    actions = cfg.actions()
    if not actions:
        raise rep.error("policy", None, "strategies", "the action grid is empty")
    for table, key, action in (
        ("policy", "baseline", policy.baseline),
        ("executor", "fallback", executor.fallback),
    ):
        if action is not None and action not in actions:
            raise rep.error(table, None, key, f"{action} is not in the action grid")
    if server.workers > 1 and not sync.enabled:
        raise rep.error(
            "server",
            None,
            "workers",
            workers_need_sync(server.workers),
        )
    if server.mode in ("shadow", "conservative") and policy.baseline is None:
        raise rep.error(
            "server", None, "mode", f"mode {server.mode!r} needs [policy] baseline = 'MODEL/...'"
        )
    return cfg


def workers_need_sync(n: int) -> str:
    """Why ``workers = n`` (n > 1) is refused without ``[sync]``."""
    return (
        f"{n} workers need [sync] redis_url: each worker process is a replica that shares what "
        "it learns through Redis (docs/serve.md, Workers)"
    )


def load_config(path: str | Path) -> ServeConfig:
    """Read and validate a TOML configuration file."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ServeConfigError(f"cannot read the configuration {p}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ServeConfigError(f"{p}: not UTF-8 text") from None
    return parse_config(text, str(p), p.resolve().parent)


def example_config() -> str:
    """A complete, commented example configuration (what docs/serve.md shows)."""
    return _EXAMPLE


_EXAMPLE = """\
# uniscale serve --config uniscale.toml
[server]
host = "127.0.0.1"
port = 8000
route_names = ["uniscale"]        # "model" values that let the policy choose
mode = "normal"                   # normal | shadow | conservative (both need [policy] baseline)
max_body_bytes = 1000000
max_inflight = 64                 # routed requests executing at once (server-wide)
max_samples = 64                  # no action drawing more samples than this per request
upstream_http = "auto"            # auto | aiohttp | httpx: the connection layer under httpx
# workers = 4                     # processes sharing the port (needs [sync]; default 1)
# client_token_env = "UNISCALE_CLIENT_TOKEN"   # bearer token clients must send
# admin_token_env = "UNISCALE_ADMIN_TOKEN"     # bearer token for /v1/feedback, /metrics, /admin

[policy]
dim = 64                          # request features (hash); the embed featurizer has 16
# featurizer = "embed"            # hash (default) | embed: 16-dim static sentence embedding
reward = "cost_sensitive"         # cost_sensitive | quality_priority | balanced
exploration = "epsilon"
epsilon = 0.05
strategies = ["single", "self_consistency"]
n_values = [1, 2, 4, 8]
feedback = "deferred"             # deferred (POST /v1/feedback) | confidence (vote share)
extractor = "text"                # how votes compare answers (text, last_number, choice, ...)
# baseline = "large/single/1"

[limits]                          # defaults; a request may override them
# max_cost_usd = 0.002
# max_latency_s = 10

[executor]
timeout_s = 60
deadline_s = 120
retries = 1                       # on connection errors, 429 and 5xx
backoff_s = 0.5                   # first retry after this, doubling
# fallback = "small/single/1"

[state]
policy_path = "state/policy.bin"
decision_log = "state/decisions.jsonl"
# decision_log_max_bytes = 100_000_000   # rotate to decisions.jsonl.1, .2, ... (keep 5)
snapshot_interval_s = 60

# [sync]                          # many replicas, one policy (docs/sync.md; uniscale[redis])
# redis_url = "redis://127.0.0.1:6379/0"
# policy_key = "uniscale"         # the same on every replica of this policy
# replica_id = "gw-1"             # stable per replica (default: the host name)
# interval_s = 1.0                # push own slot, pull the others', rebuild

[[models]]
name = "small"
base_url = "http://127.0.0.1:8101/v1"
price_in_per_mtok = 0.05
price_out_per_mtok = 0.10
parallelism = 8

[[models]]
name = "large"
base_url = "https://api.example.com/v1"
api_model = "large-2026-01"
api_key_env = "LARGE_API_KEY"     # the key is read from this variable, never from the file
price_in_per_mtok = 2.0
price_out_per_mtok = 6.0
parallelism = 4
"""


def make_featurizer(policy: PolicySettings) -> Featurizer:
    """The request featurizer ``[policy] featurizer`` names: ``hash`` (`uniscale.Featurizer`
    with ``dim`` hashed features) or ``embed`` (`uniscale.embed.StaticEmbeddingFeaturizer`,
    16 dimensions; needs the ``embed`` extra, a `ConfigError` saying so when it is missing)."""
    from uniscale.featurize import Featurizer

    if policy.featurizer == "hash":
        return Featurizer(policy.dim)
    try:
        from uniscale.embed import StaticEmbeddingFeaturizer

        backend = StaticEmbeddingFeaturizer()
    except ImportError as exc:
        raise ConfigError(f"[policy] featurizer = 'embed': {exc}") from None
    return Featurizer(backend=backend)
