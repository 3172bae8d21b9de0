//! Monte Carlo estimates of cost, latency and accuracy of `k` samples of one model (the
//! planner's model, after Jung, Ricky and Chatni, arXiv 2510.18905).
//!
//! Per call: input and output tokens `L_in ~ N(mu_in, sd_in^2)`, `L_out ~ N(mu_out, sd_out^2)`,
//! each clipped below at one token (a call reads and writes at least one token; the reference
//! code clips at 1 too and also caps both at 16 times a mean, a cap normal draws with the
//! paper's spreads never reach, left out here); cost `C = c_in L_in + c_out L_out` and latency
//! `T = t_in L_in + t_out L_out` (USD and seconds per token).
//!
//! `k` samples with parallelism `P`: `C(k)` is the sum over the k calls; `T(k)` runs the calls
//! in `ceil(k / P)` rounds of at most `P`, each round as slow as its slowest call
//! (`Latency::Rounds`). `Latency::PaperMean` is the reference code's `(k / P) * mean(T_i)`
//! (the sum of the calls when `P = 1`), kept to reproduce the paper's numbers: it ignores that
//! a round waits for its slowest call, and bills a partial last round as a fraction of one.
//!
//! Accuracy: `Accuracy::BestOfK` is the paper's model, the best of k draws
//! `A_i ~ N(mu_A, sd_A^2)` clipped to [0, 1] (it climbs towards 1 with k for every model),
//! drawn at once as the clipped maximum, by inversion of `Phi(z)^k`;
//! `Accuracy::Measured` is a measured curve, a point estimate with bootstrap replicates (the
//! interval is the replicates' percentiles).
//!
//! Determinism: point `i` draws from its own SplitMix64 stream keyed on `(seed, stream_i)`,
//! so results do not depend on the number of threads, on the order points are computed in,
//! or on which other points share the batch.

use crate::error::{check_finite_scalar, CoreError, CoreResult};

mod normal;
#[cfg(test)]
mod tests;

use normal::Normals;
pub use normal::{inverse_normal_cdf, percentile_sorted};

/// Upper limit of `k` (samples of one point).
pub const MAX_K: u32 = 1 << 16;
/// Upper limit of the trials of one call.
pub const MAX_TRIALS: usize = 10_000_000;
/// Upper limit of the total number of simulated calls (sum of k over points, times trials) of
/// one call into the core: about a minute of work; larger plans are split by the caller.
pub const MAX_CALLS: f64 = 2e10;

/// Per-call token and price model of one (model, strategy) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallModel {
    pub cost_in_usd_per_token: f64,
    pub cost_out_usd_per_token: f64,
    pub latency_in_s_per_token: f64,
    pub latency_out_s_per_token: f64,
    pub input_tokens_mean: f64,
    pub input_tokens_sd: f64,
    pub output_tokens_mean: f64,
    pub output_tokens_sd: f64,
}

impl CallModel {
    fn validate(&self, i: usize) -> CoreResult<()> {
        let fields = [
            ("cost_in_usd_per_token", self.cost_in_usd_per_token),
            ("cost_out_usd_per_token", self.cost_out_usd_per_token),
            ("latency_in_s_per_token", self.latency_in_s_per_token),
            ("latency_out_s_per_token", self.latency_out_s_per_token),
            ("input_tokens_mean", self.input_tokens_mean),
            ("input_tokens_sd", self.input_tokens_sd),
            ("output_tokens_mean", self.output_tokens_mean),
            ("output_tokens_sd", self.output_tokens_sd),
        ];
        for (name, v) in fields {
            check_finite_scalar(&format!("point {i}: {name}"), v)?;
            if v < 0.0 {
                return Err(CoreError::Config(format!(
                    "point {i}: {name} must be >= 0, got {v}"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Accuracy {
    /// The paper's model: best of k draws of N(mean, sd^2) clipped to [0, 1].
    BestOfK { mean: f64, sd: f64 },
    /// A measured accuracy: the estimate and bootstrap replicates of it.
    Measured { estimate: f64, replicates: Vec<f64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// `ceil(k / P)` rounds, each as slow as its slowest call (ours).
    Rounds,
    /// `(k / P) * mean(T_i)`, or the sum when `P = 1` (the reference code).
    PaperMean,
}

impl Latency {
    pub fn parse(s: &str) -> CoreResult<Latency> {
        match s {
            "rounds" => Ok(Latency::Rounds),
            "paper_mean" => Ok(Latency::PaperMean),
            other => Err(CoreError::Config(format!(
                "unknown latency model {other:?}; expected rounds or paper_mean"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub call: CallModel,
    pub k: u32,
    pub parallelism: u32,
    pub accuracy: Accuracy,
    /// Random stream of this point (see the module docs).
    pub stream: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McConfig {
    pub trials: usize,
    pub seed: u64,
    /// Two-sided interval level in (0, 1): `lo`, `hi` are the `(1 -+ level) / 2` percentiles.
    pub level: f64,
    /// One-sided level in [0.5, 1) of the pessimistic quantile (risk-averse feasibility).
    pub quantile: f64,
    pub latency: Latency,
    /// Worker threads; 0 = the machine's available parallelism. Results do not depend on it.
    pub threads: usize,
}

/// Summary of one quantity over the trials (or bootstrap replicates).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// The pessimistic `quantile`: its upper quantile for cost and latency, the lower one
    /// (at `1 - quantile`) for accuracy.
    pub pessimistic: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Estimate {
    pub cost_usd: Summary,
    pub latency_s: Summary,
    pub accuracy: Summary,
}

fn summarise(values: &mut [f64], mean: f64, cfg: &McConfig, upper_is_bad: bool) -> Summary {
    values.sort_unstable_by(f64::total_cmp);
    let tail = (1.0 - cfg.level) / 2.0;
    Summary {
        mean,
        lo: percentile_sorted(values, tail),
        hi: percentile_sorted(values, 1.0 - tail),
        pessimistic: percentile_sorted(
            values,
            if upper_is_bad {
                cfg.quantile
            } else {
                1.0 - cfg.quantile
            },
        ),
    }
}

fn mean_of(v: &[f64]) -> f64 {
    // Pairwise-free but compensated enough for 1e7 terms of similar size.
    let mut s = 0.0;
    let mut c = 0.0;
    for &x in v {
        let y = x - c;
        let t = s + y;
        c = (t - s) - y;
        s = t;
    }
    s / v.len() as f64
}

fn validate(points: &[Point], cfg: &McConfig) -> CoreResult<()> {
    if cfg.trials == 0 || cfg.trials > MAX_TRIALS {
        return Err(CoreError::Config(format!(
            "trials must be in 1..={MAX_TRIALS}, got {}",
            cfg.trials
        )));
    }
    if !(cfg.level > 0.0 && cfg.level < 1.0) {
        return Err(CoreError::Config(format!(
            "level must be in (0, 1), got {}",
            cfg.level
        )));
    }
    if !(cfg.quantile >= 0.5 && cfg.quantile < 1.0) {
        return Err(CoreError::Config(format!(
            "quantile must be in [0.5, 1), got {}",
            cfg.quantile
        )));
    }
    let mut calls = 0.0;
    for (i, p) in points.iter().enumerate() {
        p.call.validate(i)?;
        if p.k == 0 || p.k > MAX_K {
            return Err(CoreError::Config(format!(
                "point {i}: k must be in 1..={MAX_K}, got {}",
                p.k
            )));
        }
        if p.parallelism == 0 {
            return Err(CoreError::Config(format!(
                "point {i}: parallelism must be >= 1"
            )));
        }
        match &p.accuracy {
            Accuracy::BestOfK { mean, sd } => {
                check_finite_scalar(&format!("point {i}: accuracy mean"), *mean)?;
                check_finite_scalar(&format!("point {i}: accuracy sd"), *sd)?;
                if *sd < 0.0 {
                    return Err(CoreError::Config(format!(
                        "point {i}: accuracy sd must be >= 0, got {sd}"
                    )));
                }
            }
            Accuracy::Measured {
                estimate,
                replicates,
            } => {
                check_finite_scalar(&format!("point {i}: accuracy estimate"), *estimate)?;
                if replicates.is_empty() {
                    return Err(CoreError::Shape(format!(
                        "point {i}: a measured accuracy needs at least one bootstrap replicate"
                    )));
                }
                crate::error::check_finite(&format!("point {i}: accuracy replicates"), replicates)?;
            }
        }
        calls += f64::from(p.k) * cfg.trials as f64;
    }
    if calls > MAX_CALLS {
        return Err(CoreError::Config(format!(
            "{calls:.3e} simulated calls (sum of k times trials) in one batch; the limit is \
             {MAX_CALLS:.0e}: use fewer trials or split the points into batches"
        )));
    }
    Ok(())
}

/// Simulates one point: `trials` draws of (C(k), T(k), A(k)).
fn simulate_point(p: &Point, cfg: &McConfig) -> Estimate {
    let mut g = Normals::new(cfg.seed, p.stream);
    let n = cfg.trials;
    let k = p.k as usize;
    let par = p.parallelism as usize;
    let c = &p.call;
    let mut cost = vec![0.0; n];
    let mut lat = vec![0.0; n];
    let mut acc = match &p.accuracy {
        Accuracy::BestOfK { .. } => vec![0.0; n],
        Accuracy::Measured { replicates, .. } => replicates.clone(),
    };
    for t in 0..n {
        let mut total_c = 0.0;
        let mut total_t = 0.0;
        let mut j = 0;
        while j < k {
            let end = (j + par).min(k);
            let (mut round_max, mut round_sum) = (0.0f64, 0.0);
            for _ in j..end {
                let lin = (c.input_tokens_mean + c.input_tokens_sd * g.next()).max(1.0);
                let lout = (c.output_tokens_mean + c.output_tokens_sd * g.next()).max(1.0);
                total_c += c.cost_in_usd_per_token * lin + c.cost_out_usd_per_token * lout;
                let tj = c.latency_in_s_per_token * lin + c.latency_out_s_per_token * lout;
                round_max = round_max.max(tj);
                round_sum += tj;
            }
            total_t += match cfg.latency {
                Latency::Rounds => round_max,
                Latency::PaperMean => round_sum,
            };
            j = end;
        }
        if cfg.latency == Latency::PaperMean && par > 1 {
            // (k / P) * mean = sum / P
            total_t /= par as f64;
        }
        cost[t] = total_c;
        lat[t] = total_t;
        if let Accuracy::BestOfK { mean, sd } = p.accuracy {
            // Clipping is monotone, so the best of k clipped draws is the clipped best draw.
            acc[t] = if sd > 0.0 {
                (mean + sd * g.max_of(p.k)).clamp(0.0, 1.0)
            } else {
                mean.clamp(0.0, 1.0)
            };
        }
    }
    let acc_mean = match &p.accuracy {
        Accuracy::BestOfK { .. } => mean_of(&acc),
        Accuracy::Measured { estimate, .. } => *estimate,
    };
    let (cm, lm) = (mean_of(&cost), mean_of(&lat));
    Estimate {
        cost_usd: summarise(&mut cost, cm, cfg, true),
        latency_s: summarise(&mut lat, lm, cfg, true),
        accuracy: summarise(&mut acc, acc_mean, cfg, false),
    }
}

/// Estimates every point. Validates everything first; never panics on user input.
pub fn simulate(points: &[Point], cfg: &McConfig) -> CoreResult<Vec<Estimate>> {
    validate(points, cfg)?;
    let mut out = vec![Estimate::default(); points.len()];
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.threads
    }
    .clamp(1, points.len().max(1));
    if threads == 1 {
        for (o, p) in out.iter_mut().zip(points) {
            *o = simulate_point(p, cfg);
        }
        return Ok(out);
    }
    // Interleaved assignment (point i to worker i mod threads) balances grids whose k grows
    // along the index; each point has its own stream, so the split changes no number.
    let results: Vec<Vec<(usize, Estimate)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || {
                    (w..points.len())
                        .step_by(threads)
                        .map(|i| (i, simulate_point(&points[i], cfg)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join())
            .collect::<Result<_, _>>()
    })
    .map_err(|_| CoreError::Numerical("a Monte Carlo worker thread panicked".into()))?;
    for (i, e) in results.into_iter().flatten() {
        if let Some(o) = out.get_mut(i) {
            *o = e;
        }
    }
    Ok(out)
}
