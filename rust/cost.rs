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

use crate::error::{CoreError, CoreResult};
use crate::linalg;
use crate::space::{ActionDef, ModelInfo, Space, Strategy};
use crate::state::{Reader, Writer};

/// Ridge regression with a prior mean that may be rescaled: minimises
/// `sum (y - w.f)^2 + kappa |w - c w0|^2` for a scalar `c` given at prediction time. Keeps the
/// data statistics (`a = sum f f'`, `b = sum y f`) and the two solutions `p = (a + kappa I)^-1 b`
/// and `q = (a + kappa I)^-1 kappa w0`, so `w = p + c q` costs O(n) per prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Ridge {
    pub count: u64,
    /// `sum f f'` over observations (row-major n x n; the prior is not included).
    pub a: Vec<f64>,
    /// `sum y f` over observations.
    pub b: Vec<f64>,
    kappa: f64,
    w0: Vec<f64>,
    p: Vec<f64>,
    q: Vec<f64>,
}

impl Ridge {
    pub fn new(w0: &[f64], kappa: f64) -> Ridge {
        let n = w0.len();
        let mut me = Ridge {
            count: 0,
            a: vec![0.0; n * n],
            b: vec![0.0; n],
            kappa,
            w0: w0.to_vec(),
            p: vec![0.0; n],
            q: vec![0.0; n],
        };
        // With no data the solution is exact: p = 0, q = w0.
        me.q.copy_from_slice(w0);
        me
    }

    /// Coefficients for prior scale `c`.
    pub fn weights(&self, c: f64) -> Vec<f64> {
        self.p.iter().zip(&self.q).map(|(p, q)| p + c * q).collect()
    }

    /// Prediction at features `f` with the prior mean scaled by `c`. Falls back to the unscaled
    /// prior (`c = 1`) if the scaled one overflows (priors near 1e300).
    pub fn predict(&self, f: &[f64], c: f64) -> f64 {
        let p = linalg::dot(&self.p, f);
        let q = linalg::dot(&self.q, f);
        let v = p + c * q;
        if v.is_finite() {
            v
        } else {
            p + q
        }
    }

    /// `(p, q)` for data statistics `(a, b)`; `None` if the system cannot be solved finitely.
    fn solve(&self, a: &[f64], b: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
        let n = self.w0.len();
        let mut m = a.to_vec();
        for i in 0..n {
            m[i * n + i] += self.kappa;
        }
        let inv = linalg::spd_inverse(&m, n).ok()?;
        let mut p = vec![0.0; n];
        linalg::matvec(&inv, b, &mut p);
        let kw0: Vec<f64> = self.w0.iter().map(|v| v * self.kappa).collect();
        let mut q = vec![0.0; n];
        linalg::matvec(&inv, &kw0, &mut q);
        p.iter()
            .chain(&q)
            .chain(a)
            .chain(b)
            .all(|v| v.is_finite())
            .then_some((p, q))
    }

    pub fn update(&mut self, f: &[f64], y: f64) {
        let mut a = self.a.clone();
        linalg::rank_one_add(&mut a, f);
        let b: Vec<f64> = self.b.iter().zip(f).map(|(b, fi)| b + y * fi).collect();
        // A tiny system (n <= 3); a failed solve (impossible for finite input, a + kappa I >=
        // kappa I) or a statistic that overflows (an observation in the 1e300s) drops the
        // observation instead of corrupting the model.
        if let Some((p, q)) = self.solve(&a, &b) {
            self.a = a;
            self.b = b;
            self.p = p;
            self.q = q;
            self.count = self.count.saturating_add(1);
        }
    }

    fn write(&self, w: &mut Writer) {
        w.u64(self.count);
        w.f64s(&self.a);
        w.f64s(&self.b);
    }

    /// Reads what `write` wrote (format version >= 6), for prior mean `w0`.
    fn read(r: &mut Reader, w0: &[f64], kappa: f64) -> CoreResult<Ridge> {
        let n = w0.len();
        let mut me = Ridge::new(w0, kappa);
        me.count = r.u64()?;
        let a = r.f64s("ridge.A", n * n)?;
        let b = r.f64s("ridge.b", n)?;
        me.set_data(a, b)?;
        Ok(me)
    }

    /// Reads the format-1/2 layout (`A = kappa I + sum f f'`, `b = kappa w0 + sum y f`, `w`)
    /// and takes the prior out again, so the migrated model predicts exactly as it did.
    fn read_legacy(r: &mut Reader, w0: &[f64], kappa: f64) -> CoreResult<Ridge> {
        let n = w0.len();
        let mut me = Ridge::new(w0, kappa);
        me.count = r.u64()?;
        let mut a = r.f64s("rls.A", n * n)?;
        let mut b = r.f64s("rls.b", n)?;
        let _w = r.f64s("rls.w", n)?;
        for i in 0..n {
            a[i * n + i] -= kappa;
            b[i] -= kappa * w0[i];
        }
        me.set_data(a, b)?;
        Ok(me)
    }

    /// This regression's prior with the given data statistics (`sum f f'`, `sum y f`, count):
    /// what merging replicas rebuilds from summed statistics.
    pub fn with_data(&self, count: u64, a: Vec<f64>, b: Vec<f64>) -> CoreResult<Ridge> {
        let n = self.w0.len();
        if a.len() != n * n || b.len() != n {
            return Err(CoreError::State(format!(
                "cost model regression statistics of the wrong size ({} and {}, expected {} and \
                 {n})",
                a.len(),
                b.len(),
                n * n
            )));
        }
        let mut me = Ridge::new(&self.w0, self.kappa);
        me.count = count;
        me.set_data(a, b)?;
        Ok(me)
    }

    fn set_data(&mut self, a: Vec<f64>, b: Vec<f64>) -> CoreResult<()> {
        // a + kappa I must be positive definite, or the model could never be updated
        let (p, q) = self.solve(&a, &b).ok_or_else(|| {
            CoreError::State("cost model regression matrix is not positive definite".into())
        })?;
        self.a = a;
        self.b = b;
        self.p = p;
        self.q = q;
        Ok(())
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

/// Count, sum and sum of squares of one group's log ratios to the prior.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LogStat {
    pub count: f64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl LogStat {
    fn add(&mut self, r: f64) {
        let next = LogStat {
            count: self.count + 1.0,
            sum: self.sum + r,
            sum_sq: self.sum_sq + r * r,
        };
        if next.count.is_finite() && next.sum.is_finite() && next.sum_sq.is_finite() {
            *self = next;
        }
    }
    fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
    /// Sum of squared deviations from the group mean (>= 0).
    fn within_ss(&self) -> f64 {
        match self.mean() {
            Some(m) => (self.sum_sq - m * self.sum).max(0.0),
            None => 0.0,
        }
    }
    fn write(&self, w: &mut Writer) {
        w.f64(self.count);
        w.f64(self.sum);
        w.f64(self.sum_sq);
    }
    fn read(r: &mut Reader) -> CoreResult<LogStat> {
        let me = LogStat {
            count: r.finite_f64("cost.log_stat")?,
            sum: r.finite_f64("cost.log_stat")?,
            sum_sq: r.finite_f64("cost.log_stat")?,
        };
        me.check().map_err(CoreError::State)?;
        Ok(me)
    }
    fn check(&self) -> Result<(), String> {
        if !(self.count.is_finite()
            && self.sum.is_finite()
            && self.sum_sq.is_finite()
            && self.count >= 0.0
            && self.sum_sq >= 0.0)
        {
            return Err(format!(
                "cost model: invalid log-ratio statistics (count {}, sum {}, sum of squares {})",
                self.count, self.sum, self.sum_sq
            ));
        }
        Ok(())
    }
}

/// What the pooled statistics imply, recomputed whenever they change (O(models)).
#[derive(Debug, Clone, PartialEq, Default)]
struct Pooled {
    /// ln of the shared output-length correction per strategy, and of the speed correction.
    out_ln: [f64; 4],
    latency_ln: f64,
    /// Per-model log deviations from the shared corrections, with their posterior sd.
    out: Deviations,
    latency: Deviations,
}

/// Per-model log deviations from a shared correction: partial pooling with the noise variance
/// `sigma^2` and the between-model variance `tau^2` estimated from the data.
#[derive(Debug, Clone, PartialEq, Default)]
struct Deviations {
    dev: Vec<f64>,
    sd: Vec<f64>,
    tau2: f64,
    sigma2: f64,
}

impl Deviations {
    /// `groups` holds `per_model` consecutive groups per model; `center(i)` is group i's
    /// shared correction. Per model: `n` observations and `s` the sum of `r - center`. Then
    /// `sigma^2` pools the within-group variance; `tau^2` the spread of the models' mean
    /// residuals less their noise (`mean^2 - sigma^2 / n`); each with the prior `VAR_PRIOR`
    /// worth `VAR_PRIOR_WEIGHT` observations. A model's deviation is its posterior mean
    /// `s / (n + sigma^2 / tau^2)` (shrunk toward 0, a model with no data has none), its sd
    /// `(1 / tau^2 + n / sigma^2)^-1/2`.
    fn estimate(groups: &[LogStat], per_model: usize, center: impl Fn(usize) -> f64) -> Self {
        let models = groups.len() / per_model.max(1);
        let (mut within, mut dof) = (0.0, 0.0);
        let mut per: Vec<(f64, f64)> = Vec::with_capacity(models);
        for m in 0..models {
            let (mut n, mut sum) = (0.0, 0.0);
            let first = m * per_model;
            for (i, g) in groups.iter().enumerate().skip(first).take(per_model) {
                if g.count > 0.0 {
                    n += g.count;
                    sum += g.sum - g.count * center(i);
                    within += g.within_ss();
                    dof += g.count - 1.0;
                }
            }
            per.push((n, sum));
        }
        let w = VAR_PRIOR_WEIGHT * VAR_PRIOR;
        let hi = LOG_CLAMP * LOG_CLAMP;
        let sigma2 = finite_clamped(
            (within + w) / (dof + VAR_PRIOR_WEIGHT),
            VAR_MIN,
            hi,
            VAR_PRIOR,
        );
        let (mut between, mut k) = (0.0, 0.0);
        for &(n, sum) in &per {
            if n > 0.0 {
                between += (sum / n).powi(2) - sigma2 / n;
                k += 1.0;
            }
        }
        let tau2 = finite_clamped(
            (between + w) / (k + VAR_PRIOR_WEIGHT),
            VAR_MIN,
            hi,
            VAR_PRIOR,
        );
        let shrink = sigma2 / tau2;
        let dev = per
            .iter()
            .map(|&(n, sum)| finite_clamped(sum / (n + shrink), -LOG_CLAMP, LOG_CLAMP, 0.0))
            .collect();
        // A model with no observations of its own: its prior is unverified, and how far
        // *other* models' priors were off says little about how far this one's is (one
        // model's prior can be wrong alone), so its spread is at least PRIOR_ERROR_LN (a
        // factor of 10) whatever tau^2 says. From its first observation on, its own data and
        // the estimated spread decide.
        let sd = per
            .iter()
            .map(|&(n, _)| {
                let tau2 = if n > 0.0 {
                    tau2
                } else {
                    tau2.max(PRIOR_ERROR_LN * PRIOR_ERROR_LN)
                };
                finite_clamped(
                    (1.0 / (1.0 / tau2 + n / sigma2)).sqrt(),
                    0.0,
                    LOG_CLAMP,
                    1.0,
                )
            })
            .collect();
        Deviations {
            dev,
            sd,
            tau2,
            sigma2,
        }
    }
}

fn finite_clamped(v: f64, lo: f64, hi: f64, default: f64) -> f64 {
    if v.is_finite() {
        v.clamp(lo, hi)
    } else {
        default
    }
}

fn clamped_log_ratio(num: f64, den: f64) -> Option<f64> {
    (num > 0.0 && den > 0.0 && num.is_finite() && den.is_finite())
        .then(|| (num.ln() - den.ln()).clamp(-LOG_CLAMP, LOG_CLAMP))
}

#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    /// Indexed by `model * 4 + strategy`.
    pub out_tokens: Vec<Ridge>,
    /// Indexed by model.
    pub latency: Vec<Ridge>,
    /// (uid, sum of samples_used, count) for adaptive actions, sorted by uid.
    pub adaptive_samples: Vec<(u64, f64, f64)>,
    /// `ln(observed output tokens / model prior)`, indexed by `model * 4 + strategy`.
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
    pub fn new() -> CostModel {
        CostModel {
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

    /// Adds the per-model statistics for a newly registered model.
    pub fn add_model(&mut self, m: &ModelInfo) {
        for _ in Strategy::ALL {
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
        let mut per_strategy = [(0.0, 0.0); 4];
        for (i, g) in self.out_log.iter().enumerate() {
            per_strategy[i % 4].0 += g.sum;
            per_strategy[i % 4].1 += g.count;
        }
        let (sum, count) = per_strategy
            .iter()
            .fold((0.0, 0.0), |(s, c), p| (s + p.0, c + p.1));
        let global = sum / (count + POOL_GLOBAL_WEIGHT);
        let mut out_ln = [0.0; 4];
        for (o, (s, c)) in out_ln.iter_mut().zip(per_strategy) {
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
        self.pooled = Pooled {
            out_ln,
            latency_ln,
            out: Deviations::estimate(&self.out_log, 4, |i| out_ln[i % 4]),
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
        (self.pooled.out_ln[s as usize] + dev)
            .clamp(-LOG_CLAMP, LOG_CLAMP)
            .exp()
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

    /// Observations attributable to action `uid`.
    pub fn action_observations(&self, uid: u64) -> u64 {
        match self.action_obs.binary_search_by_key(&uid, |e| e.0) {
            Ok(i) => self.action_obs[i].1,
            Err(_) => 0,
        }
    }

    fn out_per_sample(&self, a: &ActionDef, input_tokens: f64) -> f64 {
        self.out_tokens[a.model * 4 + a.strategy as usize]
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
        let own_out_obs = self.out_tokens[a.model * 4 + a.strategy as usize].count;
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
            let g = a.model * 4 + a.strategy as usize;
            if let Some(r) = clamped_log_ratio(o.max(1.0), self.prior_out[a.model].max(1.0)) {
                self.out_log[g].add(r);
            }
            self.out_tokens[g].update(&out_features(input_tokens), o);
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
        // format version 6
        for g in self.out_log.iter().chain(&self.latency_log) {
            g.write(w);
        }
        w.usize(self.action_obs.len());
        for (uid, c) in &self.action_obs {
            w.u64(*uid);
            w.u64(*c);
        }
        w.bool(self.uncertain);
    }

    /// Reads what `write` wrote, for the space's `models`. Format versions 1 to 5 stored each
    /// regression with its prior folded in and had no pooled statistics: they load with the
    /// prior taken out again and empty pools (factor 1), so they predict exactly as before, and
    /// with no per-action observation counts (every action counts as unexplored until it is
    /// observed again: it may not be pruned as dominated, nothing else changes).
    pub fn read(r: &mut Reader, models: &[ModelInfo]) -> CoreResult<CostModel> {
        let m = r.dim("cost.n_models", 1024)?;
        if m != models.len() {
            return Err(CoreError::State(format!(
                "cost model has {m} models, the space {}",
                models.len()
            )));
        }
        let legacy = r.version < 6;
        let mut me = CostModel::new();
        for info in models {
            me.prior_out.push(out_prior(info));
            me.prior_latency.push(latency_prior(info));
        }
        for info in models {
            for _ in Strategy::ALL {
                let w0 = [out_prior(info), 0.0];
                me.out_tokens.push(if legacy {
                    Ridge::read_legacy(r, &w0, PRIOR_WEIGHT)?
                } else {
                    Ridge::read(r, &w0, PRIOR_WEIGHT)?
                });
            }
        }
        for info in models {
            let w0 = latency_prior(info);
            me.latency.push(if legacy {
                Ridge::read_legacy(r, &w0, PRIOR_WEIGHT)?
            } else {
                Ridge::read(r, &w0, PRIOR_WEIGHT)?
            });
        }
        let k = r.dim("cost.adaptive", 1 << 20)?;
        for _ in 0..k {
            let e = (r.u64()?, r.finite_f64("samples")?, r.finite_f64("count")?);
            // `expected_samples` binary-searches by uid: strictly increasing, and the running
            // sums are counts of samples (>= 0)
            if me.adaptive_samples.last().is_some_and(|last| last.0 >= e.0) {
                return Err(CoreError::State(
                    "cost model: adaptive-sample entries are not sorted by action uid".into(),
                ));
            }
            if e.1 < 0.0 || e.2 < 0.0 {
                return Err(CoreError::State(
                    "cost model: negative adaptive-sample statistics".into(),
                ));
            }
            me.adaptive_samples.push(e);
        }
        if !legacy {
            for _ in 0..4 * m {
                me.out_log.push(LogStat::read(r)?);
            }
            for _ in 0..m {
                me.latency_log.push(LogStat::read(r)?);
            }
            let k = r.dim("cost.action_obs", 1 << 20)?;
            for _ in 0..k {
                let e = (r.u64()?, r.u64()?);
                if me.action_obs.last().is_some_and(|last| last.0 >= e.0) {
                    return Err(CoreError::State(
                        "cost model: action observation counts are not sorted by uid".into(),
                    ));
                }
                me.action_obs.push(e);
            }
            me.uncertain = r.bool()?;
        }
        if legacy {
            me.out_log = vec![LogStat::default(); 4 * m];
            me.latency_log = vec![LogStat::default(); m];
        }
        me.refresh();
        me.check(models.len()).map_err(CoreError::State)?;
        Ok(me)
    }

    /// The invariants `predict` and `observe` rely on, for a space of `n_models` models.
    pub fn check(&self, n_models: usize) -> Result<(), String> {
        if self.latency.len() != n_models
            || self.out_tokens.len() != 4 * n_models
            || self.prior_out.len() != n_models
            || self.prior_latency.len() != n_models
        {
            return Err("the cost model does not cover every model".into());
        }
        if self.out_log.len() != 4 * n_models || self.latency_log.len() != n_models {
            return Err("the cost model's pooled statistics do not cover every model".into());
        }
        for g in self.out_log.iter().chain(&self.latency_log) {
            g.check()?;
        }
        let sorted = |v: &[u64]| v.windows(2).all(|w| w[0] < w[1]);
        let uids: Vec<u64> = self.action_obs.iter().map(|e| e.0).collect();
        let ad: Vec<u64> = self.adaptive_samples.iter().map(|e| e.0).collect();
        if !sorted(&uids) || !sorted(&ad) {
            return Err("cost model: per-action entries are not sorted by uid".into());
        }
        for r in self.out_tokens.iter().chain(&self.latency) {
            if r.p
                .iter()
                .chain(&r.q)
                .chain(&r.a)
                .chain(&r.b)
                .any(|v| !v.is_finite())
            {
                return Err("cost model: a regression is not finite".into());
            }
        }
        Ok(())
    }
}

impl Default for CostModel {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut cost = CostModel::new();
        cost.uncertain = true;
        for (i, p) in priors.iter().enumerate() {
            let mi = space.add_model(info(&format!("m{i}"), *p, 0.02)).unwrap();
            cost.add_model(&space.models[mi]);
            space.add_action(mi, Strategy::Single, 1).unwrap();
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

    #[test]
    fn per_model_deviation_is_learned_when_the_data_say_so() {
        let (space, mut cost) = setup(&[256.0, 256.0, 256.0]);
        let a = space.actions.clone();
        for t in 0..90 {
            let (which, out) = match t % 3 {
                0 => (&a[0], 20.0),
                1 => (&a[1], 20.0),
                _ => (&a[2], 400.0),
            };
            cost.observe(&space, which, 300.0, Some(out), 1.0, None);
        }
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
        space.add_action(2, Strategy::SelfConsistency, 4).unwrap();
        space.add_action(0, Strategy::SelfConsistency, 4).unwrap();
        let a = space.actions.clone();
        for t in 0..60 {
            let (which, out) = match t % 3 {
                0 => (&a[0], 20.0),
                1 => (&a[1], 20.0),
                _ => (&a[2], 400.0),
            };
            cost.observe(&space, which, 300.0, Some(out), 1.0, None);
        }
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
        let back = CostModel::read(&mut r, &space.models).unwrap();
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
}
