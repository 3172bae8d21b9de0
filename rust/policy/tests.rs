//! Unit tests of the policy that reach into its internals (the store's bookkeeping, the
//! learner's summed-feature bounds); the public behaviour is tested in tests/*.rs.

use super::*;
use crate::evidence::InteractionPrior;
use crate::learner::Learner;
use crate::shared::SharedLinUcb;

fn model(name: &str, price: f64) -> ModelInfo {
    ModelInfo {
        name: name.into(),
        price_in_per_mtok: price,
        price_out_per_mtok: 2.0 * price,
        parallelism: 4,
        bills_prompt_once: false,
        latency_in_s_per_token: 1e-4,
        latency_out_s_per_token: 1e-2,
        prior_output_tokens: 200.0,
        slot: 0,
        retired: false,
    }
}

fn policy(shared: bool, budget: Budget) -> Policy {
    Policy::new(
        vec![
            (
                model("a", 1.0),
                vec![(Strategy::SINGLE, 1), (Strategy::SELF_CONSISTENCY, 4)],
            ),
            (
                model("b", 5.0),
                vec![(Strategy::SINGLE, 1), (Strategy::BEST_OF_N, 8)],
            ),
        ],
        StrategyDef::builtins(),
        3,
        2,
        shared,
        Config::default(),
        Weights {
            quality: 1.0,
            cost: 0.4,
            latency: 0.1,
        },
        PolicyConfig {
            cost_scale: f64::NAN,
            latency_scale: f64::NAN,
            exploration: Exploration::Greedy,
            ttl_s: 1e9,
            capacity: 1000,
            feature_version: String::new(),
            interaction_scale: 1.0,
            interaction_prior: InteractionPrior::off(),
        },
        budget,
        0.05,
        100.0,
        7,
    )
    .unwrap()
}

/// Equal state (compared by bytes: `last_request_s` is NaN before the first request and
/// NaN != NaN) and equal bookkeeping.
fn assert_same(a: &Policy, b: &Policy) {
    assert!(a.to_bytes() == b.to_bytes(), "the state changed");
    assert_eq!(a.pending.bookkeeping_len(), b.pending.bookkeeping_len());
}

/// A request with features `x` and 100 prompt tokens, without limits or mask.
fn ask(x: &[f64]) -> Request<'_> {
    Request {
        x,
        input_tokens: 100.0,
        ..Request::default()
    }
}

fn fb(quality: f64) -> Feedback {
    Feedback {
        quality,
        ..Feedback::default()
    }
}

/// Feedback of quality 0.5 that reports `cost_usd`.
fn costing(cost_usd: f64) -> Feedback {
    Feedback {
        cost_usd: Some(cost_usd),
        ..fb(0.5)
    }
}

/// `p.update(id, feedback, now_s)` fails with an error `expected` accepts and changes nothing.
fn assert_refused(
    p: &mut Policy,
    id: u64,
    feedback: Feedback,
    now_s: f64,
    expected: fn(&CoreError) -> bool,
) {
    let before = p.clone();
    match p.update(id, feedback, now_s) {
        Err(e) => assert!(expected(&e), "unexpected error {e:?}"),
        Ok(r) => panic!("accepted: {r:?}"),
    }
    assert_same(p, &before);
}

/// The quality floor's retrospective counterfactual: the summed quality of an action over
/// several requests, from the features' sum, equals the sum of its per-request means, and
/// its width is that of the summed joint feature vector (checked against the learner's own
/// statistics, for both learners).
#[test]
fn sum_mean_width_is_the_mean_and_width_of_the_summed_features() {
    for shared in [true, false] {
        let mut p = policy(shared, Budget::None);
        p.learner.cfg_mut().prior_mean = 0.3;
        let xs = [[1.0, 0.2], [1.0, -0.5], [0.3, 0.9], [1.0, 0.0]];
        for (t, x) in xs.iter().enumerate() {
            let d = p.select(ask(x), t as f64).unwrap();
            p.update(d.id, fb(0.1 * t as f64 + 0.2), t as f64).unwrap();
        }
        let k = p.n_actions();
        let queries = [[0.5, 0.5], [1.0, -1.0], [0.2, 0.1]];
        let mut sx = [0.0; 2];
        let mut total = vec![0.0; k];
        for q in &queries {
            let (mut m, mut w) = (vec![0.0; k], vec![0.0; k]);
            p.learner.means_and_widths(q, &mut m, &mut w).unwrap();
            for (t, v) in total.iter_mut().zip(&m) {
                *t += v;
            }
            sx[0] += q[0];
            sx[1] += q[1];
        }
        for (a, want) in total.iter().enumerate() {
            let (mean, width) = p.learner.sum_mean_width(a, queries.len() as f64, &sx);
            assert!((mean - want).abs() < 1e-9, "{shared} {a}: {mean} vs {want}");
            // the width of the summed phi: for the shared learner phi(sum) with the
            // constant block n; for the disjoint one the arm's ridge at sum x
            let phi: Vec<f64> = match &p.learner {
                QualityLearner::Shared(l) => {
                    let mut v = vec![0.0; l.joint_dim()];
                    for q in &queries {
                        for (s, e) in v.iter_mut().zip(l.phi(q, a)) {
                            *s += e;
                        }
                    }
                    v
                }
                QualityLearner::Disjoint(_) => sx.to_vec(),
            };
            let var = match &p.learner {
                QualityLearner::Shared(l) => l.model.mean_and_var(&phi).1,
                QualityLearner::Disjoint(l) => l.ridge(l.ridge_key(a)).mean_and_var(&phi).1,
            };
            assert!((width - var.sqrt()).abs() < 1e-9, "{shared} {a}");
            assert!(width > 0.0);
        }
    }
}

/// D16: one old decision left pending while millions of others are answered must not make
/// the store's bookkeeping grow with the number of decisions.
#[test]
fn pending_bookkeeping_stays_bounded_behind_an_old_decision() {
    let mut p = policy(false, Budget::None);
    p.select(ask(&[0.1, 0.2]), 0.0).unwrap(); // never answered
    let mut peak = 0;
    for t in 1..50_000 {
        let d = p.select(ask(&[0.3, -0.1]), t as f64).unwrap();
        p.update(d.id, fb(0.5), t as f64).unwrap();
        peak = peak.max(p.pending.bookkeeping_len());
    }
    assert_eq!(p.pending.len(), 1);
    // live (1) + stale order (< 2 + slack) + remembered answers (capacity, twice)
    assert!(peak <= 1 + 2 + COMPACT_SLACK + 1 + 2 * 1000, "peak {peak}");
}

/// D15: an update refused for any reason leaves everything as it was, including the other
/// pending decisions an expiry pass would have dropped.
#[test]
fn refused_update_changes_nothing() {
    for shared in [false, true] {
        let mut p = policy(shared, Budget::PerRequest(1e-4));
        p.cfg.ttl_s = 10.0;
        p.pending.ttl_s = 10.0;
        let old = p.select(ask(&[0.1, 0.2]), 0.0).unwrap();
        let d = p.select(ask(&[0.1, 0.2]), 5.0).unwrap();
        let before = p.clone();
        // at t = 12 the first decision has expired; samples_used = 0 is invalid
        let bad = Feedback {
            samples_used: Some(0.0),
            ..fb(0.5)
        };
        assert_refused(&mut p, d.id, bad, 12.0, |e| {
            matches!(e, CoreError::Config(_))
        });
        assert_refused(&mut p, d.id, costing(f64::MAX), 12.0, |e| {
            matches!(e, CoreError::NonFinite(_))
        });
        assert_eq!(p.pending.len(), 2);
        p.update(d.id, fb(0.5), 12.0).unwrap();
        assert_eq!(
            p.pending.len(),
            0,
            "the expired decision went with the update"
        );
        // an update of the expired id itself is refused and drops it (and only it)
        let mut q = before.clone();
        assert!(matches!(
            q.update(old.id, fb(0.5), 12.0),
            Err(CoreError::ExpiredDecision(_))
        ));
        assert_eq!(q.pending.len(), 1);
        q.update(d.id, fb(0.5), 12.0).unwrap();
    }
}

/// D2: two updates of 1e308 dollars overflow the running total: the second is refused.
#[test]
fn spend_total_never_overflows() {
    let mut p = policy(true, Budget::PerRequest(1e-3));
    let a = p.select(ask(&[0.1, 0.2]), 0.0).unwrap();
    let b = p.select(ask(&[0.1, 0.2]), 0.0).unwrap();
    let non_finite = |e: &CoreError| matches!(e, CoreError::NonFinite(_));
    // the reward -0.4 * 1e308 / cost_scale overflows already
    assert_refused(&mut p, a.id, costing(1e308), 1.0, non_finite);
    p.weights.cost = 0.0;
    p.update(a.id, costing(1e308), 1.0).unwrap();
    assert_refused(&mut p, b.id, costing(1e308), 1.0, non_finite);
    assert!(p.pacer.lambda.is_finite() && p.pacer.debt.is_finite());
    Policy::from_bytes(&p.to_bytes()).unwrap();
}

#[test]
fn exhausted_decision_ids_are_an_error_not_a_wrap() {
    let mut p = policy(false, Budget::None);
    p.next_id = u64::MAX;
    let before = p.clone();
    assert!(matches!(
        p.select(ask(&[0.1, 0.2]), 0.0),
        Err(CoreError::State(_))
    ));
    assert_same(&p, &before);
}

/// D3: invariants a checksum cannot see are checked at load.
#[test]
fn invariants_hold_for_valid_policies_and_catch_a_narrow_learner() {
    let mut p = policy(true, Budget::None);
    p.select(ask(&[0.1, 0.2]), 0.0).unwrap();
    p.check_invariants().unwrap();
    p.add_model(model("c", 2.0), &[(Strategy::ADAPTIVE, 4)])
        .unwrap();
    p.retire_model("a").unwrap();
    p.check_invariants().unwrap();
    let mut bad = p.clone();
    if let QualityLearner::Shared(l) = &mut bad.learner {
        // a learner built for one model slot fewer: p - 1 features per action
        let k = l.k;
        let narrow = l.p - 1;
        *l = SharedLinUcb::new(vec![0.0; k * narrow], k, narrow, 2, l.cfg).unwrap();
    }
    let err = Policy::from_bytes(&bad.to_bytes()).unwrap_err();
    assert!(
        matches!(&err, CoreError::State(m) if m.contains("action features")),
        "{err}"
    );
}

/// A quality floor whose counterfactual bound overflows refuses the request before the
/// exploration draw: the random number generator (part of the state) is untouched too.
#[test]
fn overflowing_floor_bound_refuses_before_the_draw() {
    for shared in [false, true] {
        let mut p = policy(shared, Budget::None);
        p.set_exploration(Exploration::Epsilon(0.5)).unwrap();
        p.set_conservative(Some(0), 0.0, 0.9, 0.3, (0.0, 1.0), Some(0.05))
            .unwrap();
        if let Some(c) = p.conservative.as_mut() {
            c.cf_x = vec![f64::MAX, f64::MAX];
            c.cf_n = 3;
        }
        let before = p.clone();
        assert!(matches!(
            p.select(ask(&[0.1, 0.2]), 0.0),
            Err(CoreError::NonFinite(m)) if m.contains("counterfactual")
        ));
        assert_same(&p, &before);
    }
}

#[test]
fn a_custom_strategy_list_round_trips() {
    // the built-in policy's state (format 7) carries the built-in list
    let p = policy(true, Budget::None);
    let builtin = Policy::from_bytes(&p.to_bytes()).unwrap();
    assert_eq!(builtin.space.strategies, StrategyDef::builtins());
    let mut list = StrategyDef::builtins();
    list.push(StrategyDef::new("longest", false, true, false));
    let cfg = p.cfg.clone();
    let mut q = Policy::new(
        vec![(
            model("a", 1.0),
            vec![(Strategy::SINGLE, 1), (Strategy(4), 4)],
        )],
        list.clone(),
        2,
        2,
        true,
        Config::default(),
        Weights {
            quality: 1.0,
            cost: 1.0,
            latency: 0.0,
        },
        cfg,
        Budget::None,
        0.05,
        0.0,
        3,
    )
    .unwrap();
    assert_eq!(q.space.p(), 2 + 3 + 2 * 4);
    assert_eq!(q.cost.n_strategies(), 5);
    let d = q.select(ask(&[0.1, 0.2]), 1.0).unwrap();
    assert!(d.strategy == "single" || d.strategy == "longest");
    let bytes = q.to_bytes();
    let back = Policy::from_bytes(&bytes).unwrap();
    assert_eq!(back.space.strategies, list);
    assert!(back.to_bytes() == bytes);
}
