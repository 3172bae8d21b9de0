//! Policies in every mode the saved state has a branch for, and a deterministic driver, shared
//! by the policy state and property tests.
#![allow(dead_code)]

use uniscale::evidence::InteractionPrior;
use uniscale::pacing::Budget;
use uniscale::policy::{
    Decision, Exploration, Feedback, NewModel, Policy, PolicyConfig, Request, Weights,
};
use uniscale::space::{ModelInfo, Strategy, StrategyDef};
use uniscale::Config;

pub const DIM: usize = 3;

pub fn model(name: &str, price: f64, parallelism: u32) -> ModelInfo {
    ModelInfo {
        name: name.into(),
        price_in_per_mtok: price,
        price_out_per_mtok: 2.0 * price,
        parallelism,
        bills_prompt_once: price > 2.0,
        latency_in_s_per_token: 1e-4,
        latency_out_s_per_token: 1e-2 * price.sqrt(),
        prior_output_tokens: 150.0 + 20.0 * price,
        slot: 0,
        retired: false,
    }
}

pub fn models() -> Vec<NewModel> {
    vec![
        (
            model("small", 0.5, 4),
            vec![
                (Strategy::SINGLE, 1),
                (Strategy::SELF_CONSISTENCY, 4),
                (Strategy::ADAPTIVE, 8),
            ],
        ),
        (
            model("mid", 2.0, 2),
            vec![(Strategy::SINGLE, 1), (Strategy::BEST_OF_N, 4)],
        ),
        (model("large", 8.0, 1), vec![(Strategy::SINGLE, 1)]),
    ]
}

/// The modes a saved policy distinguishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Disjoint,
    Shared,
    SharedBudgetEpsilon,
    DisjointHourlySoftmax,
    Conservative,
    QualityFloor,
    InteractionPriorAuto,
    InteractionScale,
}

pub const MODES: [Mode; 8] = [
    Mode::Disjoint,
    Mode::Shared,
    Mode::SharedBudgetEpsilon,
    Mode::DisjointHourlySoftmax,
    Mode::Conservative,
    Mode::QualityFloor,
    Mode::InteractionPriorAuto,
    Mode::InteractionScale,
];

pub fn build(mode: Mode, seed: u64) -> Policy {
    let shared = !matches!(mode, Mode::Disjoint | Mode::DisjointHourlySoftmax);
    let exploration = match mode {
        Mode::SharedBudgetEpsilon => Exploration::Epsilon(0.2),
        Mode::DisjointHourlySoftmax => Exploration::Softmax(0.3),
        _ => Exploration::Greedy,
    };
    let budget = match mode {
        Mode::SharedBudgetEpsilon | Mode::Conservative => Budget::PerRequest(4e-4),
        Mode::DisjointHourlySoftmax => Budget::PerHour(0.5),
        _ => Budget::None,
    };
    let interaction_prior = match mode {
        Mode::InteractionPriorAuto => InteractionPrior::new(16.0, true).unwrap(),
        _ => InteractionPrior::off(),
    };
    let interaction_scale = if mode == Mode::InteractionScale {
        0.5
    } else {
        1.0
    };
    let mut p = Policy::new(
        models(),
        StrategyDef::builtins(),
        4,
        DIM,
        shared,
        Config {
            alpha: 0.7,
            ridge: 1.0,
            discount: 1.0,
            prior_mean: 0.4,
        },
        Weights::preset("balanced").unwrap(),
        PolicyConfig {
            cost_scale: f64::NAN,
            latency_scale: f64::NAN,
            exploration,
            ttl_s: 1e6,
            capacity: 64,
            feature_version: "test-v1".into(),
            interaction_scale,
            interaction_prior,
        },
        budget,
        0.05,
        100.0,
        seed,
    )
    .unwrap();
    match mode {
        Mode::Conservative => p
            .set_conservative(Some(0), 0.1, 0.9, 0.3, (0.0, 1.0), None)
            .unwrap(),
        Mode::QualityFloor => p
            .set_conservative(Some(5), 0.0, 0.9, 0.3, (0.0, 1.0), Some(0.05))
            .unwrap(),
        _ => {}
    }
    p
}

/// A deterministic pseudo-random stream (SplitMix64) for drivers that must not depend on
/// anything but the seed.
pub struct Stream(pub u64);

impl Stream {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Drives `p` through `steps` requests: selects under varying limits and masks, answers most
/// decisions (some late, some never), observes side outcomes, and adds and retires a model
/// halfway. Everything depends on `seed` only. Returns the decisions.
pub fn drive(p: &mut Policy, steps: usize, seed: u64) -> Vec<Decision> {
    let mut decisions = Vec::with_capacity(steps);
    let mut s = Stream(seed);
    let mut open: Vec<(u64, usize)> = Vec::new();
    for t in 0..steps {
        let now = t as f64 * 3.0;
        let x: Vec<f64> = (0..DIM).map(|_| 2.0 * s.f64() - 1.0).collect();
        let input_tokens = 50.0 + 900.0 * s.f64();
        let k = p.n_actions();
        let mask: Vec<bool> = (0..k).map(|i| (i + t) % 5 != 0).collect();
        let req = Request {
            x: &x,
            input_tokens,
            max_cost_usd: if t % 7 == 3 { Some(2e-4) } else { None },
            max_latency_s: if t % 11 == 5 { Some(3.0) } else { None },
            allowed: if t % 4 == 1 { Some(&mask[..]) } else { None },
        };
        let d = p.select(req, now).unwrap();
        open.push((d.id, d.index));
        decisions.push(d);
        // answer the oldest open decision most of the time, leave a few pending for good
        if t % 9 != 8 && !open.is_empty() {
            let (id, index) = open.remove(0);
            let quality = (0.3 + 0.1 * index as f64 + 0.2 * x[0]).clamp(0.0, 1.0);
            let fb = Feedback {
                quality,
                cost_usd: if t % 3 == 0 {
                    Some(1e-4 * (1.0 + s.f64()))
                } else {
                    None
                },
                latency_s: if t % 2 == 0 {
                    Some(0.5 + s.f64())
                } else {
                    None
                },
                output_tokens: if t % 5 != 0 {
                    Some(100.0 + 300.0 * s.f64())
                } else {
                    None
                },
                samples_used: None,
            };
            p.update(id, fb, now + 1.0).unwrap();
        }
        if t % 6 == 2 {
            let k = p.n_actions();
            let idx = (s.next_u64() % k as u64) as i64;
            let fb = Feedback {
                quality: s.f64(),
                output_tokens: Some(120.0),
                latency_s: Some(1.0),
                ..Feedback::default()
            };
            p.observe(
                &x,
                idx,
                input_tokens,
                fb,
                if t % 12 == 2 { 0.5 } else { 1.0 },
            )
            .unwrap();
        }
        if t == steps / 2 && p.space.model_index("late").is_none() {
            p.add_model(
                model("late", 1.0, 8),
                &[(Strategy::SINGLE, 1), (Strategy::ADAPTIVE, 4)],
            )
            .unwrap();
            // keep the baseline of the conservative modes alive: "small" single (index 0) or
            // "large" single (index 5)
            let retire = match p.conservative_baseline() {
                Some(0) => "mid",
                _ => "small",
            };
            let _ = p.retire_model(retire).unwrap();
        }
    }
    decisions
}
