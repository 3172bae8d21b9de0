use super::*;
use crate::state::{Reader, Writer};

fn info(name: &str, prior_out: f64, t_out: f64) -> ModelInfo {
    ModelInfo {
        name: name.into(),
        price_in_per_mtok: 1.0,
        price_out_per_mtok: 2.0,
        parallelism: 1,
        bills_prompt_once: true,
        latency_in_s_per_token: 1e-4,
        latency_out_s_per_token: t_out,
        prior_output_tokens: prior_out,
        slot: 0,
        retired: false,
    }
}

/// Three models with the given output-token priors, one single-sample action each.
fn setup(priors: &[f64]) -> (Space, CostModel) {
    let mut space = Space::new(8).unwrap();
    let mut cost = CostModel::new(&space.strategies);
    cost.uncertain = true;
    for (i, p) in priors.iter().enumerate() {
        let mi = space.add_model(info(&format!("m{i}"), *p, 0.02)).unwrap();
        cost.add_model(&space.models[mi]);
        space.add_action(mi, Strategy::SINGLE, 1).unwrap();
    }
    (space, cost)
}

#[test]
fn cold_start_predicts_the_configured_prior() {
    let (space, cost) = setup(&[256.0, 40.0, 1000.0]);
    for (a, want) in space.actions.iter().zip([256.0, 40.0, 1000.0]) {
        let p = cost.predict(&space, a, 500.0);
        assert!((p.output_tokens_per_sample - want).abs() < 1e-9 * want);
    }
}

#[test]
fn unseen_model_moves_toward_what_other_models_show() {
    // every prior says 256; models 0 and 1 answer with 2 tokens
    let (space, mut cost) = setup(&[256.0, 256.0, 256.0]);
    let a = space.actions.clone();
    for t in 0..30 {
        let which = &a[t % 2];
        cost.observe(&space, which, 300.0, Some(2.0), 1.0, Some(0.3));
    }
    let unseen = cost.predict(&space, &a[2], 300.0).output_tokens_per_sample;
    assert!(unseen < 4.0, "unseen model still predicts {unseen} tokens");
    // and its latency follows the pooled speed: the prior formula says 2 tokens * 20 ms +
    // 300 * 0.1 ms = 0.07 s, the others took 0.3 s
    let lat = cost.predict(&space, &a[2], 300.0).latency_s;
    assert!(lat > 0.15 && lat < 0.5, "unseen model latency {lat}");
    // an untried arm's optimistic estimate stays below its point prediction, a well
    // observed arm's close to it
    let e2 = cost.estimate(&space, &a[2], 300.0);
    let e0 = cost.estimate(&space, &a[0], 300.0);
    assert!(e2.cost_usd_low < e2.point.cost_usd);
    assert!(e0.cost_usd_low / e0.point.cost_usd > e2.cost_usd_low / e2.point.cost_usd);
}

#[test]
fn priors_wrong_in_either_direction_are_pooled_away() {
    for factor in [10.0, 0.1] {
        let (space, mut cost) = setup(&[100.0 * factor, 100.0 * factor, 100.0 * factor]);
        let a = space.actions.clone();
        for _ in 0..20 {
            cost.observe(&space, &a[0], 300.0, Some(100.0), 1.0, None);
        }
        let unseen = cost.predict(&space, &a[1], 300.0).output_tokens_per_sample;
        assert!(
            (unseen / 100.0).ln().abs() < 0.25_f64,
            "factor {factor}: unseen model predicts {unseen}, truth 100"
        );
    }
}

/// `rounds` observations at 300 input tokens, one sample each, in turn: actions 0 and 1
/// answer with 20 output tokens, action 2 with 400.
fn observe_20_20_400(space: &Space, cost: &mut CostModel, rounds: usize) {
    let a = &space.actions;
    for t in 0..rounds {
        let (which, out) = match t % 3 {
            0 => (&a[0], 20.0),
            1 => (&a[1], 20.0),
            _ => (&a[2], 400.0),
        };
        cost.observe(space, which, 300.0, Some(out), 1.0, None);
    }
}

#[test]
fn per_model_deviation_is_learned_when_the_data_say_so() {
    let (space, mut cost) = setup(&[256.0, 256.0, 256.0]);
    observe_20_20_400(&space, &mut cost, 90);
    let a = space.actions.clone();
    let p = |i: usize| cost.predict(&space, &a[i], 300.0).output_tokens_per_sample;
    assert!((p(0) - 20.0).abs() < 2.0, "{}", p(0));
    assert!((p(1) - 20.0).abs() < 2.0, "{}", p(1));
    assert!((p(2) - 400.0).abs() < 20.0, "{}", p(2));
}

#[test]
fn a_models_deviation_carries_to_its_other_strategies() {
    // every prior says 256; models 0 and 1 answer with 20 tokens, model 2 with 400, all
    // observed with one sample only
    let (mut space, mut cost) = setup(&[256.0, 256.0, 256.0]);
    space.add_action(2, Strategy::SELF_CONSISTENCY, 4).unwrap();
    space.add_action(0, Strategy::SELF_CONSISTENCY, 4).unwrap();
    observe_20_20_400(&space, &mut cost, 60);
    let a = space.actions.clone();
    let p = |i: usize| cost.predict(&space, &a[i], 300.0).output_tokens_per_sample;
    // model 2's self-consistency arm was never observed: it follows model 2, not the pool
    assert!(p(3) > 200.0 && p(3) < 600.0, "{}", p(3));
    assert!(p(4) > 10.0 && p(4) < 40.0, "{}", p(4));
    // and its uncertainty is the model's, which has data: little optimism left
    let e = cost.estimate(&space, &a[3], 300.0);
    assert!(e.cost_usd_low > 0.5 * e.point.cost_usd);
}

#[test]
fn length_dependence_is_learned_per_model() {
    let (space, mut cost) = setup(&[256.0, 256.0, 256.0]);
    let a = space.actions.clone();
    for t in 0..200 {
        let input = 100.0 + 20.0 * (t % 50) as f64;
        cost.observe(&space, &a[0], input, Some(10.0 + input / 10.0), 1.0, None);
    }
    let p = cost.predict(&space, &a[0], 2000.0).output_tokens_per_sample;
    assert!((p - 210.0).abs() < 10.0, "{p}");
}

#[test]
fn legacy_layout_round_trips_to_the_same_predictions() {
    // a format-2 regression: A = kappa I + sum ff', b = kappa w0 + sum y f
    let (space, mut cost) = setup(&[256.0, 80.0, 30.0]);
    let a = space.actions.clone();
    for t in 0..7 {
        cost.observe(
            &space,
            &a[t % 3],
            200.0 + 50.0 * t as f64,
            Some(50.0),
            1.0,
            Some(1.0),
        );
    }
    let mut w = Writer::new();
    w.usize(3);
    let legacy = |w: &mut Writer, r: &Ridge| {
        let n = r.w0.len();
        let mut am = r.a.clone();
        let mut b = r.b.clone();
        for i in 0..n {
            am[i * n + i] += r.kappa;
            b[i] += r.kappa * r.w0[i];
        }
        w.u64(r.count);
        w.f64s(&am);
        w.f64s(&b);
        w.f64s(&r.weights(1.0));
    };
    for r in cost.out_tokens.iter().chain(&cost.latency) {
        legacy(&mut w, r);
    }
    w.usize(0);
    let mut bytes = w.finish(crate::state::Kind::Policy);
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    // re-checksum after patching the version
    let body = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    let mut r = Reader::open(&bytes, crate::state::Kind::Policy).unwrap();
    let back = CostModel::read(&mut r, &space.models, &space.strategies).unwrap();
    // the pools are empty after migration, so compare with factor 1
    for (x, y) in back.out_tokens.iter().zip(&cost.out_tokens) {
        let (wx, wy) = (x.weights(1.0), y.weights(1.0));
        assert!(wx
            .iter()
            .zip(&wy)
            .all(|(u, v)| (u - v).abs() < 1e-9 * v.abs().max(1.0)));
    }
    assert_eq!(back.action_obs, vec![]);
}

#[test]
fn absurd_observations_stay_finite() {
    let (space, mut cost) = setup(&[1e300, 0.0, 1.0]);
    let a = space.actions.clone();
    for (i, (out, lat)) in [(1e300, 1e300), (0.0, 0.0), (1e-300, 1e-300), (1e308, 1e10)]
        .iter()
        .enumerate()
    {
        cost.observe(&space, &a[i % 3], 1e12, Some(*out), 1.0, Some(*lat));
    }
    cost.check(3).unwrap();
    for x in &a {
        let e = cost.estimate(&space, x, 1000.0);
        for v in [
            e.point.cost_usd,
            e.point.latency_s,
            e.cost_usd_low,
            e.latency_s_low,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{v}");
        }
    }
}
