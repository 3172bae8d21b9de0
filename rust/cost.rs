//! The cost model: per-action predictions of dollars and seconds before anything runs.
//!
//! * Output tokens per sample, per (model, strategy): online ridge regression on
//!   `[1, input_tokens / 1000]` with the model's `prior_output_tokens` as the prior intercept
//!   (a running mean with a length-aware correction; the prior counts as one observation).
//! * Samples actually used, per adaptive action: running mean of observed `samples_used`, with a
//!   prior of n (conservative: assume no early stop until observed). Other strategies use n.
//! * Latency per model: online ridge regression of seconds on
//!   `[rounds * input_tokens / 1000, rounds * output_tokens / 1000, rounds]` with
//!   `rounds = ceil(samples / parallelism)`, so the learned coefficients are t_in, t_out (per
//!   thousand tokens) and a per-round overhead; the prior is the model's configured t_in, t_out.
//! * cost_usd = input_tokens * price_in * (1 if the prompt is billed once else samples)
//!   + output_tokens_per_sample * samples * price_out (prices per million tokens).
//!
//! The planner reuses `predict` unchanged: it is a pure function of the request size and the
//! learned statistics.

use crate::error::{CoreError, CoreResult};
use crate::linalg;
use crate::space::{ActionDef, ModelInfo, Space, Strategy};
use crate::state::{Reader, Writer};

/// Ridge regression with a prior mean `w0` and prior weight `kappa`: minimises
/// `sum (y - w.f)^2 + kappa |w - w0|^2`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rls {
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub w: Vec<f64>,
    pub count: u64,
}

impl Rls {
    pub fn new(w0: &[f64], kappa: f64) -> Rls {
        let n = w0.len();
        Rls {
            a: linalg::scaled_identity(n, kappa),
            b: w0.iter().map(|v| v * kappa).collect(),
            w: w0.to_vec(),
            count: 0,
        }
    }

    pub fn predict(&self, f: &[f64]) -> f64 {
        linalg::dot(&self.w, f)
    }

    pub fn update(&mut self, f: &[f64], y: f64) {
        let n = self.w.len();
        let mut a = self.a.clone();
        linalg::rank_one_add(&mut a, f);
        let b: Vec<f64> = self.b.iter().zip(f).map(|(b, fi)| b + y * fi).collect();
        // A tiny system (n <= 3); a failed solve (impossible for finite input, A >= kappa I)
        // simply drops the observation instead of corrupting the model.
        if let Ok(inv) = linalg::spd_inverse(&a, n) {
            let mut w = vec![0.0; n];
            linalg::matvec(&inv, &b, &mut w);
            // Commit only a model whose every statistic stays finite (an observation in the
            // 1e300s can overflow A or b while w still looks fine).
            if w.iter().chain(&a).chain(&b).all(|v| v.is_finite()) {
                self.a = a;
                self.b = b;
                self.w = w;
                self.count = self.count.saturating_add(1);
            }
        }
    }

    fn write(&self, w: &mut Writer) {
        w.u64(self.count);
        w.f64s(&self.a);
        w.f64s(&self.b);
        w.f64s(&self.w);
    }

    fn read(r: &mut Reader, n: usize) -> CoreResult<Rls> {
        let me = Rls {
            count: r.u64()?,
            a: r.f64s("rls.A", n * n)?,
            b: r.f64s("rls.b", n)?,
            w: r.f64s("rls.w", n)?,
        };
        // A = kappa I + sum f f' is positive definite; anything else could never be updated
        linalg::spd_inverse(&me.a, n)
            .map_err(|e| CoreError::State(format!("cost model regression matrix: {e}")))?;
        Ok(me)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prediction {
    pub output_tokens_per_sample: f64,
    pub samples: f64,
    pub rounds: f64,
    pub cost_usd: f64,
    pub latency_s: f64,
}

/// Prior weight of the configured latency and output-token priors (in observations).
const PRIOR_WEIGHT: f64 = 1.0;
/// Prior weight of "adaptive uses all n samples".
const SAMPLES_PRIOR_WEIGHT: f64 = 2.0;

#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    /// Indexed by `model * 4 + strategy`.
    pub out_tokens: Vec<Rls>,
    /// Indexed by model.
    pub latency: Vec<Rls>,
    /// (uid, sum of samples_used, count) for adaptive actions, sorted by uid.
    pub adaptive_samples: Vec<(u64, f64, f64)>,
}

pub fn out_features(input_tokens: f64) -> [f64; 2] {
    [1.0, input_tokens / 1000.0]
}

pub fn latency_features(rounds: f64, input_tokens: f64, out_per_sample: f64) -> [f64; 3] {
    [
        rounds * input_tokens / 1000.0,
        rounds * out_per_sample / 1000.0,
        rounds,
    ]
}

impl CostModel {
    pub fn new() -> CostModel {
        CostModel {
            out_tokens: Vec::new(),
            latency: Vec::new(),
            adaptive_samples: Vec::new(),
        }
    }

    /// Adds the per-model statistics for a newly registered model.
    pub fn add_model(&mut self, m: &ModelInfo) {
        for _ in Strategy::ALL {
            self.out_tokens
                .push(Rls::new(&[m.prior_output_tokens, 0.0], PRIOR_WEIGHT));
        }
        self.latency.push(Rls::new(
            &[
                m.latency_in_s_per_token * 1000.0,
                m.latency_out_s_per_token * 1000.0,
                0.0,
            ],
            PRIOR_WEIGHT,
        ));
    }

    pub fn expected_samples(&self, a: &ActionDef) -> f64 {
        let n = a.n as f64;
        if a.strategy != Strategy::Adaptive {
            return n;
        }
        match self.adaptive_samples.binary_search_by_key(&a.uid, |e| e.0) {
            Ok(i) => {
                let (_, sum, cnt) = self.adaptive_samples[i];
                ((sum + SAMPLES_PRIOR_WEIGHT * n) / (cnt + SAMPLES_PRIOR_WEIGHT)).clamp(1.0, n)
            }
            Err(_) => n,
        }
    }

    pub fn predict(&self, space: &Space, a: &ActionDef, input_tokens: f64) -> Prediction {
        let m = &space.models[a.model];
        let out = self.out_tokens[a.model * 4 + a.strategy as usize]
            .predict(&out_features(input_tokens))
            .max(1.0);
        let samples = self.expected_samples(a);
        let rounds = (samples / m.parallelism as f64).ceil().max(1.0);
        let billed_in = if m.bills_prompt_once {
            input_tokens
        } else {
            input_tokens * samples
        };
        let cost_usd =
            (billed_in * m.price_in_per_mtok + out * samples * m.price_out_per_mtok) / 1e6;
        let latency_s = self.latency[a.model]
            .predict(&latency_features(rounds, input_tokens, out))
            .max(0.0);
        Prediction {
            output_tokens_per_sample: out,
            samples,
            rounds,
            cost_usd,
            latency_s,
        }
    }

    /// Realised dollars from token counts (used when the caller does not report a cost).
    pub fn realised_cost(
        m: &ModelInfo,
        input_tokens: f64,
        output_tokens: f64,
        samples: f64,
    ) -> f64 {
        let billed_in = if m.bills_prompt_once {
            input_tokens
        } else {
            input_tokens * samples
        };
        (billed_in * m.price_in_per_mtok + output_tokens * m.price_out_per_mtok) / 1e6
    }

    /// Learns from one executed action. `output_tokens` is the total over the samples used.
    pub fn observe(
        &mut self,
        space: &Space,
        a: &ActionDef,
        input_tokens: f64,
        output_tokens: Option<f64>,
        samples_used: f64,
        latency_s: Option<f64>,
    ) {
        let m = &space.models[a.model];
        let out_per_sample = output_tokens.map(|o| o / samples_used.max(1.0));
        if let Some(o) = out_per_sample {
            self.out_tokens[a.model * 4 + a.strategy as usize]
                .update(&out_features(input_tokens), o);
        }
        if a.strategy == Strategy::Adaptive {
            match self.adaptive_samples.binary_search_by_key(&a.uid, |e| e.0) {
                Ok(i) => {
                    self.adaptive_samples[i].1 += samples_used;
                    self.adaptive_samples[i].2 += 1.0;
                }
                Err(i) => self.adaptive_samples.insert(i, (a.uid, samples_used, 1.0)),
            }
        }
        if let Some(lat) = latency_s {
            let rounds = (samples_used / m.parallelism as f64).ceil().max(1.0);
            let out = out_per_sample.unwrap_or_else(|| {
                self.out_tokens[a.model * 4 + a.strategy as usize]
                    .predict(&out_features(input_tokens))
                    .max(1.0)
            });
            self.latency[a.model].update(&latency_features(rounds, input_tokens, out), lat);
        }
    }

    pub fn write(&self, w: &mut Writer) {
        w.usize(self.latency.len());
        for r in &self.out_tokens {
            r.write(w);
        }
        for r in &self.latency {
            r.write(w);
        }
        w.usize(self.adaptive_samples.len());
        for (uid, s, c) in &self.adaptive_samples {
            w.u64(*uid);
            w.f64(*s);
            w.f64(*c);
        }
    }

    pub fn read(r: &mut Reader, n_models: usize) -> CoreResult<CostModel> {
        let m = r.dim("cost.n_models", 1024)?;
        if m != n_models {
            return Err(CoreError::State(format!(
                "cost model has {m} models, the space {n_models}"
            )));
        }
        let mut out_tokens = Vec::with_capacity(4 * m);
        for _ in 0..4 * m {
            out_tokens.push(Rls::read(r, 2)?);
        }
        let mut latency = Vec::with_capacity(m);
        for _ in 0..m {
            latency.push(Rls::read(r, 3)?);
        }
        let k = r.dim("cost.adaptive", 1 << 20)?;
        let mut adaptive_samples: Vec<(u64, f64, f64)> = Vec::with_capacity(k);
        for _ in 0..k {
            let e = (r.u64()?, r.finite_f64("samples")?, r.finite_f64("count")?);
            // `expected_samples` binary-searches by uid: strictly increasing, and the running
            // sums are counts of samples (>= 0)
            if adaptive_samples.last().is_some_and(|last| last.0 >= e.0) {
                return Err(CoreError::State(
                    "cost model: adaptive-sample entries are not sorted by action uid".into(),
                ));
            }
            if e.1 < 0.0 || e.2 < 0.0 {
                return Err(CoreError::State(
                    "cost model: negative adaptive-sample statistics".into(),
                ));
            }
            adaptive_samples.push(e);
        }
        Ok(CostModel {
            out_tokens,
            latency,
            adaptive_samples,
        })
    }
}

impl Default for CostModel {
    fn default() -> Self {
        Self::new()
    }
}
