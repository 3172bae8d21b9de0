//! Multi-replica merging (`rust/policy/sync.rs`): the evidence of replicas fed disjoint shards
//! of one stream, summed and rebuilt, equals the evidence of one policy fed the whole stream.
//!
//! Tolerance: the merged sums differ from the single-process sums only by the order of float64
//! additions, so entry by entry `|merged - single| <= 1e-12 * max(1, max |single|)` (normwise:
//! the error of reordering a sum is bounded by eps times the sum of the terms' magnitudes).

mod common;

use common::{build, Mode, DIM, MODES};
use proptest::prelude::*;
use uniscale::policy::{decode_blob, encode_blob, Feedback, Policy, QualityLearner};
use uniscale::CoreError;

/// (features, action, quality, input tokens, output tokens, samples fraction, latency)
type Obs = (Vec<f64>, usize, f64, f64, f64, f64, f64);

fn stream() -> impl Strategy<Value = Vec<(Obs, usize)>> {
    prop::collection::vec(
        (
            (
                prop::collection::vec(-2.0f64..2.0, DIM),
                0usize..64,
                0.0f64..1.0,
                0.0f64..4000.0,
                1.0f64..2000.0,
                0.0f64..1.0,
                0.01f64..30.0,
            ),
            0usize..4,
        ),
        1..60,
    )
}

fn feed(p: &mut Policy, o: &Obs) {
    let k = p.n_actions();
    let n = f64::from(p.space.actions[o.1 % k].n);
    let fb = Feedback {
        quality: o.2,
        cost_usd: None,
        latency_s: Some(o.6),
        output_tokens: Some(o.4),
        samples_used: Some(1.0 + (o.5 * (n - 1.0)).floor()),
    };
    p.observe(&o.0, (o.1 % k) as i64, o.3, fb, 1.0).unwrap();
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * scale,
            "{what}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}

/// Every mode but the discounted ones (there is none in `MODES`) merges.
fn mergeable_modes() -> impl Strategy<Value = Mode> {
    prop::sample::select(MODES.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn merged_shards_equal_one_process(mode in mergeable_modes(), s in stream(), replicas in 1usize..5) {
        let mut single = build(mode, 1);
        let mut shards: Vec<Policy> = (0..replicas).map(|r| build(mode, 10 + r as u64)).collect();
        for (o, r) in &s {
            // what a merge relies on to detect a racing update: every update moves a count
            let counts = single.sync_counts();
            feed(&mut single, o);
            prop_assert!(single.sync_counts() != counts);
            feed(&mut shards[r % replicas], o);
        }
        let fp = single.sync_fingerprint();
        let mut total = vec![0.0; single.sync_len()];
        for sh in &shards {
            prop_assert_eq!(sh.sync_fingerprint(), fp);
            // through the blob, as Redis carries it
            let (f, e, v) = decode_blob(&encode_blob(fp, 7, &sh.sync_export().unwrap())).unwrap();
            prop_assert_eq!(e, 7);
            prop_assert_eq!(f, fp);
            for (t, x) in total.iter_mut().zip(&v) {
                *t += x;
            }
        }
        // counts are exactly the integer-valued entries the mask names
        let mask = single.sync_count_mask();
        prop_assert_eq!(mask.len(), total.len());
        let ev = single.sync_export().unwrap();
        let n = s.len() as f64;
        prop_assert!(mask.iter().zip(&ev).all(|(m, v)| !m || (v.fract() == 0.0 && *v <= n)));
        let mut merged = build(mode, 99);
        let parts = merged.sync_rebuild(&total).unwrap();
        let predicted = parts.evidence().to_vec();
        merged.sync_swap(parts).unwrap();
        prop_assert!(predicted == merged.sync_export().unwrap());
        let want = single.sync_export().unwrap();
        assert_close(&merged.sync_export().unwrap(), &want, "evidence");
        // a merged policy is a valid state: it saves and loads back (every invariant checked)
        let back = Policy::from_bytes(&merged.to_bytes()).unwrap();
        prop_assert!(back.to_bytes() == merged.to_bytes());
        // what the statistics are for: the same quality estimates and cost predictions
        let x = vec![0.3; DIM];
        let (m1, w1) = single.quality_scores(&x).unwrap();
        let (m2, w2) = merged.quality_scores(&x).unwrap();
        // the interaction multiplier is re-estimated on each policy's own schedule (module docs)
        if single.cfg.interaction_prior.mult == merged.cfg.interaction_prior.mult {
            assert_close(&m2, &m1, "quality mean");
        }
        assert_close(&w2, &w1, "quality bonus");
        let p1 = single.predict_all(700.0).unwrap();
        let p2 = merged.predict_all(700.0).unwrap();
        for (a, b) in p1.iter().zip(&p2) {
            assert_close(&[b.cost_usd, b.latency_s, b.samples], &[a.cost_usd, a.latency_s, a.samples], "prediction");
        }
        // with cost exploration on, the pooled corrections and the optimism merge too
        single.set_cost_exploration(true);
        merged.set_cost_exploration(true);
        prop_assert_eq!(single.action_observations(), merged.action_observations());
        let e1 = single.estimate_all(700.0).unwrap();
        let e2 = merged.estimate_all(700.0).unwrap();
        for (a, b) in e1.iter().zip(&e2) {
            assert_close(
                &[b.point.cost_usd, b.point.latency_s, b.cost_usd_low, b.latency_s_low],
                &[a.point.cost_usd, a.point.latency_s, a.cost_usd_low, a.latency_s_low],
                "estimate with cost exploration",
            );
        }
    }

    /// A corrupted or truncated blob is an error, never a panic or a changed policy.
    #[test]
    fn corrupt_blobs_are_refused(cut in 0usize..400, flip in 0usize..400, bit in 0u8..8) {
        let mut p = build(Mode::Shared, 3);
        feed(&mut p, &(vec![0.5; DIM], 1, 0.7, 300.0, 100.0, 0.5, 2.0));
        let blob = encode_blob(p.sync_fingerprint(), 0, &p.sync_export().unwrap());
        let short = &blob[..cut.min(blob.len() - 1)];
        prop_assert!(matches!(decode_blob(short), Err(CoreError::State(_))));
        let mut bad = blob.clone();
        let i = flip % bad.len();
        bad[i] ^= 1 << bit;
        prop_assert!(matches!(decode_blob(&bad), Err(CoreError::State(_))));
    }
}

#[test]
fn discounted_policies_refuse_to_merge() {
    let mut p = build(Mode::Shared, 1);
    if let QualityLearner::Shared(l) = &mut p.learner {
        l.cfg.discount = 0.9;
    }
    let e = p.sync_export().unwrap_err();
    assert!(
        matches!(&e, CoreError::Config(m) if m.contains("discount")),
        "{e}"
    );
}

#[test]
fn another_action_space_has_another_fingerprint() {
    let a = build(Mode::Shared, 1);
    let mut b = build(Mode::Shared, 1);
    b.retire_model("large").unwrap();
    assert_ne!(a.sync_fingerprint(), b.sync_fingerprint());
    assert_ne!(
        build(Mode::Shared, 1).sync_fingerprint(),
        build(Mode::Disjoint, 1).sync_fingerprint()
    );
    // a vector of another layout is refused before anything is built (the disjoint learner
    // drops the retired model's arm; the shared one keeps its layout, the fingerprint differs)
    let a = build(Mode::Disjoint, 1);
    let mut b = build(Mode::Disjoint, 1);
    b.retire_model("large").unwrap();
    let e = b.sync_rebuild(&a.sync_export().unwrap()).err();
    assert!(matches!(e, Some(CoreError::State(_))), "{e:?}");
}

#[test]
fn evidence_that_is_not_positive_definite_is_refused_and_changes_nothing() {
    let mut p = build(Mode::Disjoint, 1);
    feed(&mut p, &(vec![0.5; DIM], 0, 0.7, 300.0, 100.0, 0.5, 2.0));
    let before = p.to_bytes();
    let mut v = p.sync_export().unwrap();
    v[0] = -1e6; // A[0][0] = ridge - 1e6
    let e = p.sync_rebuild(&v).unwrap_err();
    assert!(matches!(e, CoreError::State(_)), "{e}");
    assert!(p.to_bytes() == before);
}
