//! Rust property tests of the policy's parts: the cost model's predictions, the budget pacer's
//! multiplier, and the invariants of every decision `select` returns.

mod common;

use proptest::prelude::*;
use uniscale::cost::CostModel;
use uniscale::pacing::{Budget, Pacer, LAMBDA_MAX};
use uniscale::policy::{Feedback, Policy, Request};
use uniscale::prune::PruneReason;
use uniscale::space::{ActionDef, ModelInfo, Space, Strategy as Tts};

fn model_info() -> impl Strategy<Value = ModelInfo> {
    (
        0.0f64..50.0,
        0.0f64..100.0,
        1u32..16,
        any::<bool>(),
        0.0f64..1e-3,
        0.0f64..0.1,
        1.0f64..4000.0,
    )
        .prop_map(|(pin, pout, par, once, lin, lout, prior)| ModelInfo {
            name: "m".into(),
            price_in_per_mtok: pin,
            price_out_per_mtok: pout,
            parallelism: par,
            bills_prompt_once: once,
            latency_in_s_per_token: lin,
            latency_out_s_per_token: lout,
            prior_output_tokens: prior,
            slot: 0,
            retired: false,
        })
}

fn strategy() -> impl Strategy<Value = Tts> {
    prop_oneof![
        Just(Tts::SINGLE),
        Just(Tts::SELF_CONSISTENCY),
        Just(Tts::BEST_OF_N),
        Just(Tts::ADAPTIVE),
    ]
}

/// A space with one model and one action of it.
fn one_action(m: ModelInfo, s: Tts, n: u32) -> (Space, CostModel, ActionDef) {
    let n = if s == Tts::SINGLE { 1 } else { n };
    let mut space = Space::new(1).unwrap();
    let mi = space.add_model(m).unwrap();
    let mut cost = CostModel::new(&space.strategies);
    cost.add_model(&space.models[mi]);
    let ai = space.add_action(mi, s, n).unwrap();
    let a = space.actions[ai];
    (space, cost, a)
}

/// One observation: (input tokens, output tokens per sample, samples used as a fraction of n,
/// latency).
fn observations() -> impl Strategy<Value = Vec<(f64, Option<f64>, f64, Option<f64>)>> {
    prop::collection::vec(
        (
            0.0f64..20_000.0,
            prop::option::of(0.0f64..8000.0),
            0.0f64..1.0,
            prop::option::of(0.0f64..600.0),
        ),
        0..30,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// After any observations: predictions finite and >= 0, at least one output token per
    /// sample, expected samples within 1..=n, rounds = ceil(samples / parallelism), and the
    /// cost the token counts and prices imply.
    #[test]
    fn cost_predictions_are_finite_and_consistent(
        m in model_info(), s in strategy(), n in 1u32..64, obs in observations(),
        input_tokens in 0.0f64..1e6,
    ) {
        let (space, mut cost, a) = one_action(m, s, n);
        let nf = a.n as f64;
        for (inp, out, frac, lat) in obs {
            let used = (1.0 + frac * (nf - 1.0)).round();
            cost.observe(&space, &a, inp, out.map(|o| o * used), used, lat);
        }
        let p = cost.predict(&space, &a, input_tokens);
        for v in [p.output_tokens_per_sample, p.samples, p.rounds, p.cost_usd, p.latency_s] {
            prop_assert!(v.is_finite() && v >= 0.0, "{:?}", p);
        }
        prop_assert!(p.output_tokens_per_sample >= 1.0);
        prop_assert!((1.0..=nf).contains(&p.samples), "{:?}", p);
        if s != Tts::ADAPTIVE {
            prop_assert_eq!(p.samples, nf);
        }
        let par = space.models[0].parallelism as f64;
        prop_assert_eq!(p.rounds, (p.samples / par).ceil().max(1.0));
        let m = &space.models[0];
        let billed_in = if m.bills_prompt_once { input_tokens } else { input_tokens * p.samples };
        let want = (billed_in * m.price_in_per_mtok
            + p.output_tokens_per_sample * p.samples * m.price_out_per_mtok) / 1e6;
        prop_assert!((p.cost_usd - want).abs() <= 1e-12 * want.max(1e-300), "{} vs {}", p.cost_usd, want);
    }

    /// At the prior (nothing observed yet), predicted cost and latency never fall as the prompt
    /// grows, and a fixed-n action takes exactly ceil(n / parallelism) rounds.
    #[test]
    fn cost_at_the_prior_is_monotone_in_input_tokens(
        m in model_info(), s in strategy(), n in 1u32..64,
        mut tokens in prop::collection::vec(0.0f64..1e6, 2..12),
    ) {
        let (space, cost, a) = one_action(m, s, n);
        tokens.sort_by(f64::total_cmp);
        let par = space.models[0].parallelism;
        let mut last: Option<(f64, f64)> = None;
        for t in tokens {
            let p = cost.predict(&space, &a, t);
            prop_assert_eq!(p.rounds, a.n.div_ceil(par) as f64);
            if let Some((c, l)) = last {
                prop_assert!(p.cost_usd >= c && p.latency_s >= l * (1.0 - 1e-12), "{:?}", p);
            }
            last = Some((p.cost_usd, p.latency_s));
        }
    }

    /// The realised cost of an outcome grows with its prompt and with its output.
    #[test]
    fn realised_cost_is_monotone(
        m in model_info(), a in 0.0f64..1e6, b in 0.0f64..1e6, out in 0.0f64..1e5,
        more in 0.0f64..1e5, samples in 1.0f64..64.0,
    ) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let c = |i: f64, o: f64| CostModel::realised_cost(&m, i, o, samples.floor());
        prop_assert!(c(lo, out) <= c(hi, out));
        prop_assert!(c(lo, out) <= c(lo, out + more));
        prop_assert!(c(lo, out).is_finite() && c(lo, out) >= 0.0);
    }
}

/// A budget, a step and a carry-over the pacer accepts.
fn pacer_setup() -> impl Strategy<Value = (Budget, f64, f64)> {
    (
        prop_oneof![Just(0u8), Just(1u8), Just(2u8)],
        1e-6f64..10.0,
        prop_oneof![1e-6f64..1.0, 1.0f64..1e4],
        0.0f64..1e4,
    )
        .prop_map(|(kind, target, step, carry)| {
            let budget = match kind {
                0 => Budget::None,
                1 => Budget::PerRequest(target),
                _ => Budget::PerHour(target * 3600.0),
            };
            (budget, step, carry)
        })
}

/// (seconds since the last request, cost in multiples of the target per request).
fn spend() -> impl Strategy<Value = Vec<(f64, f64)>> {
    prop::collection::vec(
        (
            0.0f64..10.0,
            prop_oneof![0.0f64..3.0, Just(0.0), 0.0f64..1e6, Just(1e300)],
        ),
        1..200,
    )
}

fn check_pacer(p: &Pacer) -> Result<(), TestCaseError> {
    prop_assert!(
        p.lambda.is_finite() && (0.0..=LAMBDA_MAX).contains(&p.lambda),
        "{:?}",
        p
    );
    prop_assert!(p.debt.is_finite(), "{:?}", p);
    prop_assert!(
        p.debt >= -p.carryover && p.debt <= LAMBDA_MAX / p.step,
        "{:?}",
        p
    );
    prop_assert!(p.total_cost_usd.is_finite() && p.total_cost_usd >= 0.0);
    if p.budget == Budget::None {
        prop_assert_eq!(p.lambda, 0.0);
    } else {
        // exact after a charge; a budget change keeps lambda and sets debt = lambda / step
        let want = (p.step * p.debt).clamp(0.0, LAMBDA_MAX);
        prop_assert!(
            (p.lambda - want).abs() <= 1e-12 * want.max(1e-300),
            "{:?}",
            p
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// Whatever is spent, the multiplier stays finite, never negative and at most LAMBDA_MAX,
    /// the debt within [-carryover, LAMBDA_MAX / step], and changing the budget midway keeps
    /// all of it.
    #[test]
    fn pacing_multiplier_stays_within_bounds(
        (budget, step, carry) in pacer_setup(), costs in spend(), (budget2, step2, carry2) in pacer_setup(),
    ) {
        let mut p = Pacer::new(budget, step, carry).unwrap();
        let mut now = 0.0;
        for (j, (gap, c)) in costs.iter().enumerate() {
            now += gap;
            p.observe_request(now);
            let target = p.target_per_request().unwrap_or(1e-3);
            let cost = (c * target).min(1e300);
            if p.check_cost(cost).is_ok() {
                p.observe_cost(cost);
            }
            check_pacer(&p)?;
            if j == costs.len() / 2 {
                p.set_budget(budget2, step2, carry2).unwrap();
                check_pacer(&p)?;
            }
        }
    }

    /// Spending exactly the target never raises the multiplier from 0; spending nothing never
    /// raises it at all.
    #[test]
    fn pacing_at_or_below_target_keeps_lambda_at_zero(
        target in 1e-6f64..10.0, step in 1e-4f64..1.0, carry in 0.0f64..1e3, n in 1usize..300,
        below in any::<bool>(),
    ) {
        let mut p = Pacer::new(Budget::PerRequest(target), step, carry).unwrap();
        for t in 0..n {
            p.observe_request(t as f64);
            p.observe_cost(if below { 0.0 } else { target });
            prop_assert_eq!(p.lambda, 0.0);
        }
    }
}

/// One request of a random stream: features, prompt length, limits, mask bits, and the
/// feedback (quality, delay) if it is answered.
type Step = (
    Vec<f64>,
    f64,
    Option<f64>,
    Option<f64>,
    u8,
    Option<(f64, f64)>,
);

fn requests() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (
            prop::collection::vec(-2.0f64..2.0, common::DIM),
            0.0f64..4000.0,
            prop::option::of(prop_oneof![0.0f64..2e-4, 0.0f64..0.05]),
            prop::option::of(0.0f64..20.0),
            any::<u8>(),
            prop::option::of((0.0f64..1.0, 0.0f64..5.0)),
        ),
        1..40,
    )
}

fn check_decision(
    p: &Policy,
    d: &uniscale::policy::Decision,
    max_cost: Option<f64>,
    max_latency: Option<f64>,
    mask: Option<&[bool]>,
) -> Result<(), TestCaseError> {
    let k = p.n_actions();
    prop_assert!(!d.candidates.is_empty());
    prop_assert_eq!(d.candidates.len(), d.probabilities.len());
    let total: f64 = d.probabilities.iter().sum();
    prop_assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {}", total);
    prop_assert!(d
        .probabilities
        .iter()
        .all(|q| (0.0..=1.0 + 1e-12).contains(q)));
    let pos = d.candidates.iter().position(|&c| c == d.index);
    prop_assert!(
        pos.is_some(),
        "chosen {} not in {:?}",
        d.index,
        d.candidates
    );
    prop_assert_eq!(d.propensity, d.probabilities[pos.unwrap()]);
    prop_assert!(d.propensity > 0.0);
    prop_assert!(d.candidates.iter().all(|&c| c < k));
    let mut seen = vec![false; k];
    for &c in &d.candidates {
        prop_assert!(!seen[c], "candidate {} twice", c);
        seen[c] = true;
    }
    let mut last = None;
    for (i, reason) in &d.pruned {
        prop_assert!(
            *i < k && !seen[*i],
            "pruned {} is also a candidate or twice",
            i
        );
        prop_assert!(last < Some(*i), "pruned not sorted");
        last = Some(*i);
        if let PruneReason::Dominated(by) = reason {
            prop_assert!(*by < k && by != i);
        }
    }
    if let Some(m) = mask {
        prop_assert!(m[d.index], "a masked action was chosen");
        for (i, allowed) in m.iter().enumerate() {
            if !allowed {
                prop_assert!(d.pruned.contains(&(i, PruneReason::Masked)));
            }
        }
    }
    if !d.fallback {
        // the limits hold for the values they are checked against: the point prediction once
        // the arm has data of its own, the optimistic estimate before (a prior alone never
        // excludes an arm)
        let est = &p.estimate_all(d.input_tokens).unwrap()[d.index];
        prop_assert!(est.point.cost_usd == d.prediction.cost_usd);
        prop_assert!(max_cost.is_none_or(|c| est.cost_usd_for_limit() <= c));
        prop_assert!(max_latency.is_none_or(|l| est.latency_s_for_limit() <= l));
    } else {
        prop_assert_eq!(d.candidates.len(), 1);
    }
    prop_assert!(d.score.is_finite() && d.mean.is_finite() && d.bonus.is_finite());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// In every mode, after any stream of requests, answers and unanswered decisions: every
    /// decision's probabilities sum to 1, its action is among the candidates with the recorded
    /// propensity, pruned and candidate actions are disjoint, limits and masks are respected
    /// unless it is a flagged fallback; and the state round-trips byte for byte.
    #[test]
    fn select_invariants_and_state_round_trip(
        mode in 0usize..common::MODES.len(), seed in any::<u64>(), stream in requests(),
    ) {
        let mode = common::MODES[mode];
        let mut p = common::build(mode, seed);
        let k = p.n_actions();
        let mut later: Vec<(u64, f64, f64)> = Vec::new();
        for (t, (x, tokens, max_cost, max_latency, bits, answer)) in stream.into_iter().enumerate() {
            let now = t as f64;
            let mask: Vec<bool> = (0..k).map(|i| bits >> (i % 8) & 1 == 1 || i == t % k).collect();
            let mask = (bits % 3 == 0).then_some(mask);
            let req = Request {
                x: &x,
                input_tokens: tokens,
                max_cost_usd: max_cost,
                max_latency_s: max_latency,
                allowed: mask.as_deref(),
            };
            let d = p.select(req, now).unwrap();
            check_decision(&p, &d, max_cost, max_latency, mask.as_deref())?;
            if matches!(mode, common::Mode::Disjoint | common::Mode::Shared | common::Mode::InteractionPriorAuto | common::Mode::InteractionScale) {
                prop_assert!(!d.explored && d.propensity == 1.0, "greedy explored");
            }
            if let Some((q, delay)) = answer {
                later.push((d.id, q, now + delay));
            }
            // answer what is due, in order of arrival
            let (due, rest): (Vec<_>, Vec<_>) = later.into_iter().partition(|e| e.2 <= now);
            later = rest;
            for (id, q, at) in due {
                let fb = Feedback { quality: q, ..Feedback::default() };
                p.update(id, fb, at.max(now)).unwrap();
            }
            if t % 5 == 4 {
                let bytes = p.to_bytes();
                let q = Policy::from_bytes(&bytes).unwrap();
                prop_assert!(q.to_bytes() == bytes);
            }
        }
        let bytes = p.to_bytes();
        let q = Policy::from_bytes(&bytes).unwrap();
        prop_assert!(q.to_bytes() == bytes);
        prop_assert_eq!(q.pending.len(), p.pending.len());
    }
}
