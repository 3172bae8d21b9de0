//! Rust property tests of the learners' math invariants (run by `cargo test`).

use proptest::prelude::*;
use uniscale::learner::Learner;
use uniscale::linalg;
use uniscale::{Config, LinUcb, SharedLinUcb};

fn vecs(n: usize, len: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
    prop::collection::vec(prop::collection::vec(-2.0f64..2.0, len), n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// The Sherman-Morrison inverse equals a direct inverse of the accumulated matrix.
    #[test]
    fn sherman_morrison_matches_direct(n in 1usize..12, ridge in 0.05f64..5.0, xs in vecs(40, 12)) {
        let mut a = linalg::scaled_identity(n, ridge);
        let mut ainv = linalg::scaled_identity(n, 1.0 / ridge);
        let mut z = vec![0.0; n];
        for x in &xs {
            let x = &x[..n];
            let denom = linalg::sherman_morrison_prepare(&ainv, x, &mut z).unwrap();
            linalg::sherman_morrison_apply(&mut ainv, &mut z, denom);
            linalg::rank_one_add(&mut a, x);
        }
        let direct = linalg::spd_inverse(&a, n).unwrap();
        let scale = direct.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (g, w) in ainv.iter().zip(&direct) {
            prop_assert!((g - w).abs() <= 1e-9 * scale, "{} vs {}", g, w);
        }
        for i in 0..n { for j in 0..n { prop_assert_eq!(ainv[i*n+j], ainv[j*n+i]); } }
    }

    /// The Kronecker-structured scores equal the naive joint-feature scores.
    #[test]
    fn kron_scores_match_naive(
        d in 1usize..7, p in 0usize..5, k in 1usize..9,
        alpha in 0.0f64..3.0, ridge in 0.1f64..3.0, prior in -1.0f64..1.0,
        psi in prop::collection::vec(-1.5f64..1.5, 8 * 5),
        stream in prop::collection::vec((0usize..8, prop::collection::vec(-1.0f64..1.0, 6), -1.0f64..1.0), 0..30),
        xq in prop::collection::vec(-1.0f64..1.0, 6),
    ) {
        let p_eff = if p == 0 { 0 } else { p };
        let k_eff = if p == 0 { 1 } else { k };
        let cfg = Config { alpha, ridge, discount: 1.0, prior_mean: prior };
        let mut s = SharedLinUcb::new(psi[..k_eff * p_eff].to_vec(), k_eff, p_eff, d, cfg).unwrap();
        for (a, x, r) in &stream {
            s.update((*a % k_eff) as i64, &x[..d], *r).unwrap();
        }
        let x = &xq[..d];
        let (mean, bonus) = s.scores(x).unwrap();
        for a in 0..k_eff {
            let phi = s.phi(x, a);
            let naive_mean = prior + linalg::dot(&s.model.theta, &phi);
            let naive_bonus = alpha * linalg::quad_form(&s.model.ainv, &phi).max(0.0).sqrt();
            prop_assert!((mean[a] - naive_mean).abs() <= 1e-9 * (1.0 + naive_mean.abs()));
            prop_assert!((bonus[a] - naive_bonus).abs() <= 1e-9 * (1.0 + naive_bonus.abs()));
        }
    }

    /// State round-trips bit for bit and decisions continue identically.
    #[test]
    fn state_roundtrip(k in 1usize..6, d in 1usize..6,
        stream in prop::collection::vec((0usize..6, prop::collection::vec(-1.0f64..1.0, 6), -1.0f64..1.0), 0..40)) {
        let mut l = LinUcb::new(k, d, Config::default()).unwrap();
        for (a, x, r) in &stream { l.update((*a % k) as i64, &x[..d], *r).unwrap(); }
        let back = LinUcb::from_bytes(&l.to_bytes()).unwrap();
        prop_assert_eq!(back.to_bytes(), l.to_bytes());
        let x = vec![0.3; d];
        prop_assert_eq!(back.select(&x, None).unwrap(), l.select(&x, None).unwrap());
    }
}

#[test]
fn discounted_update_matches_definition() {
    let cfg = Config {
        alpha: 1.0,
        ridge: 2.0,
        discount: 0.9,
        prior_mean: 0.0,
    };
    let mut l = LinUcb::new(1, 2, cfg).unwrap();
    l.update(0, &[1.0, 0.0], 1.0).unwrap();
    l.update(0, &[0.0, 1.0], 0.5).unwrap();
    // A = 0.9 (0.9*2I + 0.1*2I + e1 e1') + 0.1*2I + e2 e2' = diag(2 + 0.9, 2 + 1)
    let a = &l.arms[0].a;
    assert!((a[0] - 2.9).abs() < 1e-12 && (a[3] - 3.0).abs() < 1e-12 && a[1].abs() < 1e-15);
    // b = 0.9 * (1 * e1) + 0.5 * e2
    assert!((l.arms[0].b[0] - 0.9).abs() < 1e-12 && (l.arms[0].b[1] - 0.5).abs() < 1e-12);
}
