//! The cost model: per-action predictions of dollars and seconds before anything runs, with an
//! optimistic bound for arms the model has little data on.
//!
//! * Output tokens per sample, per (model, strategy): ridge regression on
//!   `[1, input_tokens / 1000]` whose prior mean is the model's `prior_output_tokens` times
//!   `exp(g_s + d_m)`, learned from every model (partial pooling) on the log ratio
//!   `r = ln(observed / configured prior)`:
//!   - `g_s`, shared by all models: the mean of `r` over the observations of strategy `s`,
//!     shrunk toward the mean over all strategies (weight `POOL_STRATEGY_WEIGHT`), and that
//!     toward 0, "the priors are right" (weight `POOL_GLOBAL_WEIGHT`);
//!   - `d_m`, the model's deviation (shared by its strategies): the mean of its residuals
//!     `r - g_s`, shrunk toward 0 with weight `sigma^2 / tau^2` (below); 0 for a model with no
//!     data, which therefore predicts what the other models show relative to their priors;
//!   - the per-(model, strategy) regression refines that with the arm's own data (the prior
//!     counts as `PRIOR_WEIGHT` observations).
//!
//!   Pooling the ratio to the prior, rather than an absolute level, keeps what the priors say
//!   about relative verbosity, and corrects priors that are wrong by a common factor (the
//!   issue's case: 1-2-token answers against the 256-token default of every model) for all
//!   models from the first observation of any.
//! * Samples actually used, per adaptive action: running mean of observed `samples_used`, with a
//!   prior of n (conservative: assume no early stop until observed). Other strategies use n.
//! * Latency per model: ridge regression of seconds on
//!   `[rounds * input_tokens / 1000, rounds * output_tokens / 1000, rounds]` with
//!   `rounds = ceil(samples / parallelism)`, so the learned coefficients are t_in, t_out (per
//!   thousand tokens) and a per-round overhead; the prior mean is the model's configured t_in,
//!   t_out times `exp(g + d_m)` (one shared speed correction, per-model deviations, same
//!   estimates on `ln(observed / prior formula at the observed sizes)`), worth `PRIOR_WEIGHT`
//!   observations.
//! * cost_usd = input_tokens * price_in * (1 if the prompt is billed once else samples)
//!   + output_tokens_per_sample * samples * price_out (prices per million tokens).
//! * Uncertainty: per (model, strategy) group the count, sum and sum of squares of `r`.
//!   `sigma^2` pools the within-group variance (noise); `tau^2` the spread of the models' mean
//!   residuals less their noise; both with a prior of `VAR_PRIOR` worth `VAR_PRIOR_WEIGHT`
//!   observations. A model with `n` observations has a log-scale sd
//!   `(1 / tau^2 + n / sigma^2)^-1/2`, and before its first observation at least
//!   `PRIOR_ERROR_LN` (a factor of 10: another model's prior being right says little about
//!   this one's). The optimistic estimate is the point prediction times
//!   `exp(-OPTIMISM * sd)` (output tokens, hence cost, and latency); `Estimate` carries both.
//!   Everything is a sum, so feedback order does not matter; a prediction is O(1), an update
//!   O(models).
//!
//! The planner reuses `predict` unchanged: it is a pure function of the request size and the
//! learned statistics.

use crate::linalg;
use crate::space::{ActionDef, ModelInfo, Space, Strategy, StrategyDef};

mod persist;
mod pooled;
mod regression;
#[cfg(test)]
mod tests;

pub use pooled::LogStat;
use pooled::{clamped_log_ratio, finite_clamped, Deviations, Pooled};
pub use regression::Ridge;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prediction {
    pub output_tokens_per_sample: f64,
    pub samples: f64,
    pub rounds: f64,
    pub cost_usd: f64,
    pub latency_s: f64,
}

/// A point prediction with the optimistic (lower) cost and latency used for exploration.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimate {
    pub point: Prediction,
    /// Cost with the output tokens at their optimistic value (`<= point.cost_usd`).
    pub cost_usd_low: f64,
    /// Latency at the optimistic output tokens and speed (`<= point.latency_s`).
    pub latency_s_low: f64,
    /// Observations of the arm's own output length ((model, strategy)) and latency (model).
    pub own_out_obs: u64,
    pub own_latency_obs: u64,
}

impl Estimate {
    /// The cost a request's `max_cost_usd` is checked against: the point prediction once the
    /// arm has output lengths of its own, else the optimistic one (a prior alone, or what
    /// other models show, never excludes an arm whose optimistic cost fits).
    pub fn cost_usd_for_limit(&self) -> f64 {
        if self.own_out_obs > 0 {
            self.point.cost_usd
        } else {
            self.cost_usd_low
        }
    }

    /// The latency a request's `max_latency_s` is checked against (same rule; latency needs
    /// the arm's own output lengths and its model's own latencies).
    pub fn latency_s_for_limit(&self) -> f64 {
        if self.own_out_obs > 0 && self.own_latency_obs > 0 {
            self.point.latency_s
        } else {
            self.latency_s_low
        }
    }
}

/// Prior weight of the configured (pooled-corrected) latency and output-token priors, in
/// observations: the per-model deviation's prior weight.
const PRIOR_WEIGHT: f64 = 1.0;
/// Prior weight of "adaptive uses all n samples".
const SAMPLES_PRIOR_WEIGHT: f64 = 2.0;
/// Shrinkage of a strategy's pooled output-length correction toward the all-strategy one, and
/// of that toward 0 (the priors are right), in observations.
const POOL_STRATEGY_WEIGHT: f64 = 2.0;
const POOL_GLOBAL_WEIGHT: f64 = 1.0;
/// Log-scale corrections and ratios are clamped to +-ln(1e6): one absurd observation cannot
/// move a prediction by more than that factor, and everything stays finite.
const LOG_CLAMP: f64 = 13.815510557964274;
/// Prior log-scale variance of the noise and of a model's deviation (a factor e either way),
/// and its weight in observations.
const VAR_PRIOR: f64 = 1.0;
const VAR_PRIOR_WEIGHT: f64 = 2.0;
const VAR_MIN: f64 = 1e-8;
/// Standard deviations of optimism.
pub const OPTIMISM: f64 = 1.0;
/// Log-scale error a configured prior may have (a factor of 10): the smallest spread the
/// optimism assumes for a model's deviation, so a model with no observations of its own is
/// explored as if it could be 10x cheaper and faster than predicted.
const PRIOR_ERROR_LN: f64 = std::f64::consts::LN_10;

#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    /// Indexed by `model * S + strategy` (S strategies, `Space::strategies`).
    pub out_tokens: Vec<Ridge>,
    /// Indexed by model.
    pub latency: Vec<Ridge>,
    /// (uid, sum of samples_used, count) for adaptive actions, sorted by uid.
    pub adaptive_samples: Vec<(u64, f64, f64)>,
    /// `ln(observed output tokens / model prior)`, indexed by `model * S + strategy`.
    pub out_log: Vec<LogStat>,
    /// `ln(observed latency / prior formula)`, indexed by model.
    pub latency_log: Vec<LogStat>,
    /// Derived from `out_log` and `latency_log` (not saved).
    pooled: Pooled,
    /// (uid, observations) per action, sorted by uid: outcomes attributable to the action
    /// (decisions and side observations). Used to tell unexplored actions apart.
    pub action_obs: Vec<(u64, u64)>,
    /// Configured output-token prior per model (from `ModelInfo`, not saved).
    prior_out: Vec<f64>,
    /// Configured latency coefficients per model (from `ModelInfo`, not saved).
    prior_latency: Vec<[f64; 3]>,
    /// Cost exploration on: predictions use the pooled corrections and exploration the
    /// optimistic estimates. Off (the default), every factor is 1 and the optimistic estimate is
    /// the point prediction, so the policy predicts and ranks exactly as before the pooled
    /// model existed; the pooled statistics are kept either way, so switching it on uses
    /// everything observed so far.
    pub uncertain: bool,
    /// Per strategy of the space: whether it stops adaptively (from the space, not saved).
    adaptive: Vec<bool>,
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

fn latency_prior(m: &ModelInfo) -> [f64; 3] {
    [
        m.latency_in_s_per_token * 1000.0,
        m.latency_out_s_per_token * 1000.0,
        0.0,
    ]
}

fn out_prior(m: &ModelInfo) -> f64 {
    m.prior_output_tokens
}

impl CostModel {
    /// An empty cost model for a space over `strategies`.
    pub fn new(strategies: &[StrategyDef]) -> CostModel {
        CostModel {
            adaptive: strategies.iter().map(|s| s.adaptive).collect(),
            out_tokens: Vec::new(),
            latency: Vec::new(),
            adaptive_samples: Vec::new(),
            out_log: Vec::new(),
            latency_log: Vec::new(),
            pooled: Pooled::default(),
            action_obs: Vec::new(),
            prior_out: Vec::new(),
            prior_latency: Vec::new(),
            uncertain: false,
        }
    }

    /// Number of strategies (output-length groups per model).
    pub fn n_strategies(&self) -> usize {
        self.adaptive.len()
    }

    /// The output-length group of action `a`: (model, strategy).
    fn group(&self, a: &ActionDef) -> usize {
        a.model * self.n_strategies() + a.strategy.index()
    }

    /// Adds the per-model statistics for a newly registered model.
    pub fn add_model(&mut self, m: &ModelInfo) {
        for _ in 0..self.n_strategies() {
            self.out_tokens
                .push(Ridge::new(&[out_prior(m), 0.0], PRIOR_WEIGHT));
            self.out_log.push(LogStat::default());
        }
        self.latency
            .push(Ridge::new(&latency_prior(m), PRIOR_WEIGHT));
        self.latency_log.push(LogStat::default());
        self.prior_out.push(out_prior(m));
        self.prior_latency.push(latency_prior(m));
        self.refresh();
    }

    /// Replaces the pooled log-ratio statistics and the per-action observation counts (merged
    /// from replicas) and recomputes the pooled corrections.
    pub fn set_pooled_stats(
        &mut self,
        out_log: Vec<LogStat>,
        latency_log: Vec<LogStat>,
        action_obs: Vec<(u64, u64)>,
    ) -> Result<(), String> {
        if out_log.len() != self.out_log.len() || latency_log.len() != self.latency_log.len() {
            return Err("pooled cost statistics of the wrong size".into());
        }
        if out_log.iter().chain(&latency_log).any(|g| {
            !(g.count.is_finite() && g.sum.is_finite() && g.sum_sq.is_finite()) || g.count < 0.0
        }) {
            return Err("pooled cost statistics are not finite or have a negative count".into());
        }
        if action_obs.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err("action observation counts are not sorted by uid".into());
        }
        self.out_log = out_log;
        self.latency_log = latency_log;
        self.action_obs = action_obs;
        self.refresh();
        Ok(())
    }

    /// Recomputes the pooled corrections and variances from the per-group statistics.
    fn refresh(&mut self) {
        let k = self.n_strategies().max(1);
        let mut per_strategy = vec![(0.0, 0.0); k];
        for (i, g) in self.out_log.iter().enumerate() {
            per_strategy[i % k].0 += g.sum;
            per_strategy[i % k].1 += g.count;
        }
        let (sum, count) = per_strategy
            .iter()
            .fold((0.0, 0.0), |(s, c), p| (s + p.0, c + p.1));
        let global = sum / (count + POOL_GLOBAL_WEIGHT);
        let mut out_ln = vec![0.0; k];
        for (o, &(s, c)) in out_ln.iter_mut().zip(&per_strategy) {
            *o = finite_clamped(
                (s + POOL_STRATEGY_WEIGHT * global) / (c + POOL_STRATEGY_WEIGHT),
                -LOG_CLAMP,
                LOG_CLAMP,
                0.0,
            );
        }
        let (lsum, lcount) = self
            .latency_log
            .iter()
            .fold((0.0, 0.0), |(s, c), g| (s + g.sum, c + g.count));
        let latency_ln = finite_clamped(
            lsum / (lcount + POOL_GLOBAL_WEIGHT),
            -LOG_CLAMP,
            LOG_CLAMP,
            0.0,
        );
        let out = Deviations::estimate(&self.out_log, k, |i| out_ln[i % k]);
        self.pooled = Pooled {
            out_ln,
            latency_ln,
            out,
            latency: Deviations::estimate(&self.latency_log, 1, |_| latency_ln),
        };
    }

    /// The factor applied to model `m`'s configured output-token prior for strategy `s`: the
    /// shared correction of `s` times the model's deviation (1 before any data).
    pub fn out_factor(&self, m: usize, s: Strategy) -> f64 {
        if !self.uncertain {
            return 1.0;
        }
        let dev = self.pooled.out.dev.get(m).copied().unwrap_or(0.0);
        let shared = self.pooled.out_ln.get(s.index()).copied().unwrap_or(0.0);
        (shared + dev).clamp(-LOG_CLAMP, LOG_CLAMP).exp()
    }

    /// The factor applied to model `m`'s configured latency prior (1 before any data).
    pub fn latency_factor(&self, m: usize) -> f64 {
        if !self.uncertain {
            return 1.0;
        }
        let dev = self.pooled.latency.dev.get(m).copied().unwrap_or(0.0);
        (self.pooled.latency_ln + dev)
            .clamp(-LOG_CLAMP, LOG_CLAMP)
            .exp()
    }

    pub fn expected_samples(&self, a: &ActionDef) -> f64 {
        let n = a.n as f64;
        if !self
            .adaptive
            .get(a.strategy.index())
            .copied()
            .unwrap_or(false)
        {
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

    /// Observations attributable to action `uid`.
    pub fn action_observations(&self, uid: u64) -> u64 {
        match self.action_obs.binary_search_by_key(&uid, |e| e.0) {
            Ok(i) => self.action_obs[i].1,
            Err(_) => 0,
        }
    }

    fn out_per_sample(&self, a: &ActionDef, input_tokens: f64) -> f64 {
        self.out_tokens[self.group(a)]
            .predict(
                &out_features(input_tokens),
                self.out_factor(a.model, a.strategy),
            )
            .max(1.0)
    }

    fn latency_at(&self, model: usize, rounds: f64, input_tokens: f64, out: f64) -> f64 {
        self.latency[model]
            .predict(
                &latency_features(rounds, input_tokens, out),
                self.latency_factor(model),
            )
            .max(0.0)
    }

    pub fn predict(&self, space: &Space, a: &ActionDef, input_tokens: f64) -> Prediction {
        self.estimate(space, a, input_tokens).point
    }

    /// The point prediction and the optimistic cost and latency of action `a`.
    pub fn estimate(&self, space: &Space, a: &ActionDef, input_tokens: f64) -> Estimate {
        let m = &space.models[a.model];
        let out = self.out_per_sample(a, input_tokens);
        let samples = self.expected_samples(a);
        let rounds = (samples / m.parallelism as f64).ceil().max(1.0);
        let billed_in = if m.bills_prompt_once {
            input_tokens
        } else {
            input_tokens * samples
        };
        let cost_of = |out: f64| {
            (billed_in * m.price_in_per_mtok + out * samples * m.price_out_per_mtok) / 1e6
        };
        let latency_s = self.latency_at(a.model, rounds, input_tokens, out);
        let own_out_obs = self.out_tokens[self.group(a)].count;
        let own_latency_obs = self.latency[a.model].count;
        let (sd_out, sd_lat) = if self.uncertain {
            (
                self.pooled.out.sd.get(a.model).copied().unwrap_or(1.0),
                self.pooled.latency.sd.get(a.model).copied().unwrap_or(1.0),
            )
        } else {
            (0.0, 0.0)
        };
        let out_low = out * (-OPTIMISM * sd_out).exp();
        let latency_s_low = (self.latency_at(a.model, rounds, input_tokens, out_low)
            * (-OPTIMISM * sd_lat).exp())
        .min(latency_s);
        let cost_usd = cost_of(out);
        Estimate {
            point: Prediction {
                output_tokens_per_sample: out,
                samples,
                rounds,
                cost_usd,
                latency_s,
            },
            cost_usd_low: cost_of(out_low).min(cost_usd),
            latency_s_low,
            own_out_obs,
            own_latency_obs,
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
        let rounds = (samples_used / m.parallelism as f64).ceil().max(1.0);
        let out_per_sample = output_tokens.map(|o| o / samples_used.max(1.0));
        let out = out_per_sample.unwrap_or_else(|| self.out_per_sample(a, input_tokens));
        if let Some(o) = out_per_sample {
            let g = self.group(a);
            if let Some(r) = clamped_log_ratio(o.max(1.0), self.prior_out[a.model].max(1.0)) {
                self.out_log[g].add(r);
            }
            self.out_tokens[g].update(&out_features(input_tokens), o);
        }
        if self
            .adaptive
            .get(a.strategy.index())
            .copied()
            .unwrap_or(false)
        {
            match self.adaptive_samples.binary_search_by_key(&a.uid, |e| e.0) {
                Ok(i) => {
                    self.adaptive_samples[i].1 += samples_used;
                    self.adaptive_samples[i].2 += 1.0;
                }
                Err(i) => self.adaptive_samples.insert(i, (a.uid, samples_used, 1.0)),
            }
        }
        if let Some(lat) = latency_s {
            let f = latency_features(rounds, input_tokens, out);
            let prior_formula = linalg::dot(&self.prior_latency[a.model], &f);
            if let Some(r) = clamped_log_ratio(lat, prior_formula) {
                self.latency_log[a.model].add(r);
            }
            self.latency[a.model].update(&f, lat);
        }
        self.refresh();
        match self.action_obs.binary_search_by_key(&a.uid, |e| e.0) {
            Ok(i) => self.action_obs[i].1 = self.action_obs[i].1.saturating_add(1),
            Err(i) => self.action_obs.insert(i, (a.uid, 1)),
        }
    }
}

impl Default for CostModel {
    /// An empty cost model over the four built-in strategies.
    fn default() -> Self {
        Self::new(&StrategyDef::builtins())
    }
}
