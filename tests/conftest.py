"""Shared pytest configuration: hypothesis profiles, learner fixtures and fake-server fixtures.

Hypothesis profiles (choose with ``HYPOTHESIS_PROFILE=dev|ci``, default ``dev``):

* ``dev``: random exploration, few examples, no deadline (the first call into the extension and
  numpy's LAPACK warm-up make single examples slow in a way that says nothing about the code).
* ``ci``: derandomized (the same examples on every run, so a red build is reproducible from the
  log alone), more examples, no deadline (shared CI runners have noisy timings).
* ``stress``: random exploration with many examples, for hunting edge cases by hand before they
  reach CI (``HYPOTHESIS_PROFILE=stress pytest tests/test_pareto.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_openai import FakeConfig, FakeOpenAI
from hypothesis import HealthCheck, settings

# the real redis-server of the sync tests (tests/redis_fixture.py)
from redis_fixture import redis_cluster, redis_server  # noqa: F401

import uniscale

# every profile: no deadline (see above) and no too-slow health check
for _name, _profile in {
    "dev": {"max_examples": 25},
    "ci": {"max_examples": 60, "derandomize": True, "print_blob": True},
    "stress": {"max_examples": 1000, "print_blob": True},
}.items():
    settings.register_profile(
        _name, deadline=None, suppress_health_check=[HealthCheck.too_slow], **_profile
    )
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

Learner = uniscale.LinUCB | uniscale.SharedLinUCB
MakeLearner = Callable[..., Learner]


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator: every test sees the same numbers on every run."""
    return np.random.default_rng(20240611)


@pytest.fixture(params=["linucb", "shared"])
def kind(request: pytest.FixtureRequest) -> str:
    """Runs a test once for each learner."""
    return str(request.param)


def build(kind: str, n_actions: int = 3, dim: int = 2, p: int = 2, **cfg: Any) -> Learner:
    """A learner of `kind` with `n_actions` actions; shared learners get deterministic, distinct
    action features (K, p) so that their actions are distinguishable."""
    if kind == "linucb":
        return uniscale.LinUCB(n_actions, dim, **cfg)
    psi = np.linspace(-1.0, 1.0, n_actions * p).reshape(n_actions, p)
    return uniscale.SharedLinUCB(psi, dim, **cfg)


@pytest.fixture
def make(kind: str) -> MakeLearner:
    """Factory for a learner of the parametrized kind: ``make(n_actions, dim, **config)``."""

    def factory(n_actions: int = 3, dim: int = 2, **cfg: Any) -> Learner:
        return build(kind, n_actions, dim, **cfg)

    return factory


@pytest.fixture
def trained(make: MakeLearner, rng: np.random.Generator) -> Learner:
    """A (3 actions, dim 2) learner of the parametrized kind after 20 updates (not fresh, so a
    state-changing bug cannot hide behind the prior)."""
    learner = make(3, 2, alpha=0.5, ridge=1.5, prior_mean=0.1)
    X = rng.normal(size=(20, 2))
    learner.update_many(rng.integers(0, 3, size=20), X, rng.normal(size=20))
    return learner


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeOpenAI]]:
    """Factory for started fake OpenAI servers: ``fake_server("text", ...)`` answers those texts
    in rotation (no texts: the `FakeConfig` default). All of them stop at teardown."""
    with contextlib.ExitStack() as stack:

        def start(*answers: str) -> FakeOpenAI:
            config = FakeConfig(answers=list(answers)) if answers else FakeConfig()
            return stack.enter_context(FakeOpenAI(config))

        yield start


@pytest.fixture
def fa(fake_server: Callable[..., FakeOpenAI]) -> FakeOpenAI:
    """Model "a" of the collection and calibration tests: a fake server that always answers
    "The answer is 4." (each of those modules has its own "b", ``fb``)."""
    return fake_server("The answer is 4.")


@pytest.fixture
def no_real_llama(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep meta collection away from a real llama-server binary or model cache."""
    monkeypatch.setenv("UNISCALE_LLAMA_SERVER", str(tmp_path / "no-llama-server"))
    monkeypatch.setenv("UNISCALE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def items_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The test module's ``ITEMS`` written to ``tmp_path / "items.jsonl"``, one object a line."""
    p = tmp_path / "items.jsonl"
    p.write_text("".join(json.dumps(d) + "\n" for d in request.module.ITEMS))
    return p
