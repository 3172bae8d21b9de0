"""The vote's agreement as a dense, label-free reward term (#12): `action_agreement`,
`OutcomeTable.agreement` / `with_agreement_reward`, replay's ``--agreement-weight``."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniscale.lab import datasets
from uniscale.lab.replay import LearnerSpec, Scales, reward_matrix, run_learner, schedule
from uniscale.outcomes import NO_SIGNAL_AGREEMENT, Sample, action_agreement
from uniscale.space import Action


def _s(answer: str | None, score: float = float("-inf")) -> Sample:
    return Sample(answer, False, 10, score, 0.1)


def test_vote_share_of_the_chosen_answer() -> None:
    runs = [_s("a"), _s("a"), _s("b"), _s(None)]
    assert action_agreement(Action("m", "self_consistency", 4), runs, None) == 0.5
    assert action_agreement(Action("m", "self_consistency", 2), runs, None) == 1.0
    assert action_agreement(Action("m", "self_consistency", 2), [_s(None)] * 2, None) == 0.0


def test_one_sample_uses_its_token_probability() -> None:
    greedy = _s("a", math.log(0.8))
    assert action_agreement(Action("m", "single", 1), [], greedy) == pytest.approx(0.8)
    assert action_agreement(Action("m", "single", 1), [], _s("a")) == NO_SIGNAL_AGREEMENT


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=8))
def test_agreement_is_the_plurality_share(answers: list[str | None]) -> None:
    n = len(answers)
    got = action_agreement(Action("m", "self_consistency", n), [_s(a) for a in answers], None)
    assert 0.0 <= got <= 1.0
    if n > 1:
        votes = Counter(a for a in answers if a is not None)
        top = max(votes.values()) if votes else 0
        assert got == pytest.approx(top / n)


def test_table_agreement_and_the_mixed_quality() -> None:
    t = datasets.collected_source(n_requests=30).table(0)
    assert t.agreement is not None and t.agreement.shape == t.quality.shape
    assert ((t.agreement >= 0) & (t.agreement <= 1)).all()
    sub = t.subset([2, 0])
    assert sub.agreement is not None
    np.testing.assert_array_equal(sub.agreement, t.agreement[[2, 0]])
    np.testing.assert_array_equal(t.with_agreement_reward(0.0).quality, t.quality)
    np.testing.assert_array_equal(t.with_agreement_reward(1.0).quality, t.agreement)
    half = t.with_agreement_reward(0.5).quality
    np.testing.assert_allclose(half, 0.5 * t.quality + 0.5 * t.agreement)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        t.with_agreement_reward(1.5)
    routing = datasets.mmlu_pro_source(n_requests=10).table(0)
    assert routing.agreement is None
    with pytest.raises(ValueError, match="no agreement"):
        routing.with_agreement_reward(0.5)


def test_learner_learns_from_the_mix_but_is_scored_on_correctness() -> None:
    src = datasets.collected_source(n_requests=60)
    t = src.table(0)
    _, w = schedule(t, [], "quality_priority")
    sc = Scales.from_table(t)
    r = reward_matrix(t, w, sc)
    spec = LearnerSpec("u", t.actions, {})
    plain = run_learner(spec, t, src.models, r, r.max(1), [], sc, "quality_priority")
    zero = run_learner(
        spec, t, src.models, r, r.max(1), [], sc, "quality_priority", agreement_weight=0.0
    )
    np.testing.assert_array_equal(plain.chosen, zero.chosen)
    mixed = run_learner(
        spec, t, src.models, r, r.max(1), [], sc, "quality_priority", agreement_weight=1.0
    )
    rows = np.arange(t.n_requests)
    np.testing.assert_array_equal(mixed.quality, t.quality[rows, mixed.chosen])
    np.testing.assert_array_equal(mixed.reward, r[rows, mixed.chosen])
    assert not np.array_equal(mixed.chosen, plain.chosen)  # it learned from something else


def test_cli_refuses_bad_weights_and_tables_without_samples(tmp_path: object) -> None:
    from uniscale.cli import main

    with pytest.raises(SystemExit, match="agreement-weight must be in"):
        main(["replay", "--agreement-weight", "2", "--quiet"])
    with pytest.raises(SystemExit, match="needs recorded samples"):
        main(["replay", "--table", "mmlu-pro", "--agreement-weight", "0.5", "--quiet"])
