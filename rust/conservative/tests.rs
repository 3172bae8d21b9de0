use super::*;
use crate::state::Kind;

fn open(lo: f64, hi: f64, var: f64, baseline: bool) -> Open {
    Open {
        lo,
        hi,
        var_policy: var,
        var_baseline: var,
        baseline,
    }
}

/// Quality-floor mode around action `uid` with `tolerance` (confidence 0.95, quality sd 0.5 on
/// [0, 1]).
fn quality_floor(uid: u64, tolerance: f64) -> Conservative {
    Conservative::new(uid, 0.0, 0.95, 0.5, (0.0, 1.0))
        .and_then(|c| c.with_quality_floor(tolerance))
        .unwrap()
}

/// `c` written and read back as the policy state holds it (layout 3, up to 10 open decisions).
fn reread(c: &Conservative) -> CoreResult<Conservative> {
    let bytes = crate::state::encode(Kind::Policy, |w| c.write(w));
    crate::state::decode(&bytes, Kind::Policy, |r| Conservative::read(r, 10, 3))
}

#[test]
fn quantile_matches_known_values() {
    for (p, z) in [
        (0.95, 1.644_853_626_951),
        (0.975, 1.959_963_984_540),
        (0.99, 2.326_347_874_041),
        (0.999, 3.090_232_306_168),
    ] {
        assert!(
            (normal_quantile(p) - z).abs() < 1e-8,
            "{p}: {}",
            normal_quantile(p)
        );
    }
}

#[test]
fn baseline_is_always_allowed_and_others_need_slack() {
    let c = Conservative::new(7, 0.1, 0.95, 0.5, (0.0, 1.0)).unwrap();
    let ok = c.allowed(
        &[open(0.5, 0.5, 0.0, true), open(0.5, 0.6, 0.25, false)],
        0.0,
        0.5,
    );
    assert_eq!(ok, vec![true, false]);
}

#[test]
fn baseline_rewards_build_the_budget() {
    let mut c = Conservative::new(7, 0.1, 0.95, 0.5, (0.0, 1.0)).unwrap();
    for id in 0..200 {
        c.record(id, open(0.5, 0.5, 0.0, true));
        c.complete(id, 0.6, &[]);
    }
    // 200 * 0.6 * 0.1 = 12 of slack; one exploratory request at lo 0 vs hi 0.7 with noise
    // 1.645 * 0.5 * (1 + 0.9) costs about 2.3
    assert_eq!(
        c.allowed(&[open(0.0, 0.7, 0.25, false)], 0.0, 0.7),
        vec![true]
    );
    let b = c.budget(0.0);
    assert!((b.slack - 12.0).abs() < 1e-9, "{b:?}");
}

#[test]
fn state_round_trips() {
    let mut c = Conservative::new(3, 0.05, 0.9, 0.5, (0.0, 1.0)).unwrap();
    c.record(1, open(0.1, 0.9, 0.3, false));
    c.record(2, open(0.3, 0.3, 0.0, true));
    c.complete(2, 1.0, &[]);
    assert_eq!(reread(&c).unwrap(), c);
}

#[test]
fn quality_floor_state_round_trips_with_its_multiplier_and_counterfactuals() {
    let mut c = quality_floor(3, 0.02);
    assert!(c.retro);
    c.record(1, open(0.2, 0.8, 0.25, false));
    c.complete(1, 1.0, &[1.0, 0.5, -2.0]);
    c.record(2, open(0.2, 0.8, 0.25, false));
    c.complete(2, 0.0, &[1.0, 0.25, 1.0]);
    c.update_multiplier(-0.3);
    assert_eq!((c.cf_n, c.cf_x.clone()), (2, vec![2.0, 0.75, -1.0]));
    // the decision-time bounds are not kept: the counterfactual comes from the learner
    assert_eq!(c.counterfactual_hi, 0.0);
    assert_eq!(reread(&c).unwrap(), c);
}

#[test]
fn corrupt_floor_multiplier_is_refused() {
    for bad in [f64::NAN, -1.0, 0.0, 1e9] {
        let mut c = quality_floor(3, 0.02);
        c.multiplier = bad;
        let e = reread(&c).unwrap_err();
        assert!(e.to_string().contains("multiplier"), "{e}");
    }
}

#[test]
fn multiplier_follows_the_gap_and_stays_in_range() {
    let mut c = quality_floor(3, 0.01);
    c.update_multiplier(-0.2); // short of the floor: quality counts more
    assert!(c.multiplier > 1.0);
    let m = c.multiplier;
    c.update_multiplier(f64::NAN); // ignored
    assert_eq!(c.multiplier, m);
    for _ in 0..100_000 {
        c.update_multiplier(-1.0);
    }
    assert_eq!(c.multiplier, MULTIPLIER_MAX);
    for _ in 0..100_000 {
        c.update_multiplier(1.0);
    }
    assert_eq!(c.multiplier, MULTIPLIER_MIN);
    // conservative mode has no multiplier
    let mut k = Conservative::new(3, 0.1, 0.95, 0.5, (0.0, 1.0)).unwrap();
    k.update_multiplier(-1.0);
    assert_eq!(k.multiplier, 1.0);
}

#[test]
fn floor_allows_a_provably_better_action_on_negative_slack_and_conservative_mode_does_not() {
    // slack below zero (a re-estimated counterfactual can do that after the fact)
    let mut f = quality_floor(3, 0.01);
    f.record(1, open(0.5, 0.5, 0.0, true));
    f.complete(1, 0.0, &[]);
    let retro_hi = 0.0;
    f.baseline_realised += 2.0; // the reference's side is 2 ahead
    assert!(f.budget(retro_hi).slack < 0.0);
    // candidate far better than the reference's bound here vs one worse
    let better = open(0.95, 0.1, 0.0, false);
    let worse = open(0.1, 0.9, 0.0, false);
    assert_eq!(
        f.allowed(&[better, worse], retro_hi, 0.5),
        vec![true, false]
    );
    let mut k = Conservative::new(3, 0.0, 0.95, 0.5, (0.0, 1.0)).unwrap();
    k.baseline_realised += 2.0;
    assert_eq!(k.allowed(&[better], 0.0, 0.5), vec![false]);
}

/// Properties of the account over random histories (proptest).
mod props {
    use super::{open, quality_floor, Conservative};
    use proptest::prelude::*;

    fn history() -> impl Strategy<Value = Vec<(f64, f64, f64, bool, Option<f64>)>> {
        prop::collection::vec(
            (
                -2.0f64..1.0,
                -1.0f64..2.0,
                0.0f64..1.0,
                any::<bool>(),
                prop::option::of(-2.0f64..2.0),
            ),
            0..40,
        )
    }

    fn build(delta: f64, hist: &[(f64, f64, f64, bool, Option<f64>)]) -> Conservative {
        build_mode(delta, hist, false)
    }

    /// `floor`: quality-floor mode (tolerance `delta`, retrospective counterfactuals).
    fn build_mode(
        delta: f64,
        hist: &[(f64, f64, f64, bool, Option<f64>)],
        floor: bool,
    ) -> Conservative {
        let mut c = if floor {
            quality_floor(0, delta)
        } else {
            Conservative::new(0, delta, 0.95, 0.5, (0.0, 1.0)).unwrap()
        };
        for (id, &(lo, hi, var, base, reward)) in hist.iter().enumerate() {
            let o = if base {
                open(lo, lo, 0.0, true)
            } else {
                open(lo, hi, var, false)
            };
            c.record(id as u64, o);
            if let Some(r) = reward {
                c.complete(id as u64, r, &[1.0, 0.5]);
            }
        }
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

        /// The baseline is always allowed; an action allowed at some lower bound stays allowed
        /// at a higher one, and at a lower baseline upper bound or a smaller noise variance.
        #[test]
        fn allowed_is_monotone(
            delta in 0.0f64..0.9, hist in history(),
            lo in -2.0f64..1.0, hi in -1.0f64..2.0, var in 0.0f64..1.0,
            dlo in 0.0f64..1.0, dhi in 0.0f64..1.0, dvar in 0.0f64..1.0,
            floor in any::<bool>(), retro in 0.0f64..20.0,
        ) {
            let c = build_mode(delta, &hist, floor);
            let retro = if floor { retro } else { 0.0 };
            prop_assert!(c.allowed(&[open(lo, hi, var, true)], retro, 0.5)[0]);
            if c.allowed(&[open(lo, hi, var, false)], retro, 0.5)[0] {
                prop_assert!(c.allowed(&[open(lo + dlo, hi, var, false)], retro, 0.5)[0]);
                prop_assert!(c.allowed(&[open(lo, hi - dhi, var, false)], retro, 0.5)[0]);
                prop_assert!(c.allowed(&[open(lo, hi, (var - dvar).max(0.0), false)], retro, 0.5)[0]);
            }
        }

        /// The slack is policy_lo - (baseline_hi - delta |baseline_hi|), and completing a
        /// baseline decision at reward r changes the two sums by exactly r (up to rounding).
        #[test]
        fn slack_identity_and_baseline_rewards(delta in 0.0f64..0.9, hist in history(), r in -2.0f64..2.0) {
            let mut c = build(delta, &hist);
            let b = c.budget(0.0);
            let want = b.policy_lo - (b.baseline_hi - delta * b.baseline_hi.abs());
            prop_assert!((b.slack - want).abs() <= 1e-9 * (1.0 + want.abs()));
            let id = 1_000_000;
            c.record(id, open(0.0, 0.0, 0.0, true));
            let before = c.budget(0.0);
            c.complete(id, r, &[1.0, 0.5]);
            let after = c.budget(0.0);
            prop_assert!((after.policy_lo - before.policy_lo - r).abs() < 1e-9);
            prop_assert!((after.baseline_hi - before.baseline_hi - r).abs() < 1e-9);
        }
    }
}
