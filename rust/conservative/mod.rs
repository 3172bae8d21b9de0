//! Conservative exploration: never fall (with high probability) below a fraction of what the
//! team's current action would have earned.
//!
//! The idea is that of conservative linear bandits (Kazerouni et al., NeurIPS 2017): the
//! policy plays the learner's choice only when a pessimistic estimate of its cumulative reward,
//! *including this request*, stays above `(1 - delta)` times an optimistic estimate of what the
//! baseline action would have earned on the same requests; otherwise it plays the baseline.
//! Every non-baseline decision spends some of a budget that the baseline's own rewards
//! replenish (`delta` times each of them), so exploration is paid for by the margin the team
//! agreed to give up and never by more.
//!
//! What is known and what is bounded, after `t` decisions:
//! * the policy's own reward of every decision with feedback is **realised** (known exactly);
//!   a decision still waiting for feedback counts with the lower confidence bound it had when
//!   it was made;
//! * the baseline's reward on a request where the baseline was played is realised too; on a
//!   request where another action was played it is the **counterfactual** and counts with the
//!   baseline's upper confidence bound on that request, which stays in the sum for good;
//! * a realised reward differs from its expectation by noise: the check adds
//!   `z * reward_sd * sqrt(m)` to the baseline's bound (m counterfactual requests) and subtracts
//!   `z * reward_sd * sqrt(open)` from the policy's (open = decisions without feedback).
//!
//! Quality-floor mode (`Conservative::with_quality_floor`) keeps the same account with two
//! changes (see `retro`): the reference's counterfactual quality on the requests it did not
//! serve is bounded with the learner's *current* confidence set rather than the (wider) one
//! each request was decided with, and an action whose bounds beat the reference's on a request
//! is allowed even when the slack is negative (it repays it at least as fast as the reference
//! would). Pooling both sides' noise under one square root was tried and measured: it broke
//! the floor on 4 of 50 MMLU-Pro streams, because a single pending outcome is then covered by
//! almost no noise allowance.
//!
//! With `L` the policy's lower bound and `H` the baseline's upper bound, action `a` is allowed
//! when `L - (H - delta * |H|) >= 0` after adding `a`'s lower bound to `L` and the baseline's
//! upper bound for this request to `H`; the absolute value keeps the promise meaningful for
//! rewards that are negative (cost-heavy presets): "at most `delta * |baseline's total|` below
//! the baseline". The check runs on every decision, so it holds at every checkpoint, which is
//! stronger than (and includes) checking it only at checkpoints as Garcelon et al. (AAAI 2020)
//! allow.
//!
//! Quality bounds are `mean +- z * quality_sd * width`, clipped to the quality range ([0, 1] by
//! default), where `width = sqrt(phi' A^-1 phi)` is the learner's (alpha-free) confidence width
//! and `quality_sd` the sub-Gaussian scale of a quality in [0, 1] (0.5); cost and latency come from the cost model's prediction for the
//! request being decided and from realised values afterwards. The guarantee is therefore as
//! good as the linear model's confidence sets (exact for a well-specified model, approximate
//! otherwise); the tests measure it on real tables over many seeds.

use std::collections::BTreeMap;

use crate::error::{CoreError, CoreResult};
use crate::state::{Reader, Writer};

/// An open (not yet updated) decision's contribution to the bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Open {
    /// Lower bound on the policy's reward for this decision.
    pub lo: f64,
    /// Upper bound on the baseline's reward for this request (the baseline's lower bound when
    /// the baseline itself was played: then both sides are the same random reward).
    pub hi: f64,
    /// Noise variance of the policy's realised reward around `lo`'s mean (0 for the baseline).
    pub var_policy: f64,
    /// Noise variance of the baseline's (counterfactual) realised reward (0 for the baseline).
    pub var_baseline: f64,
    pub baseline: bool,
}

/// Coefficient of variation assumed for one request's realised cost and latency around the
/// cost model's prediction (output lengths vary by request far more than the cost model,
/// which does not see the request, can tell): the noise allowance uses
/// `(w_q * quality_sd)^2 + (COST_CV * (w_c * cost / cost_scale + w_l * latency / latency_scale))^2`
/// per request.
pub const COST_CV: f64 = 1.0;

/// Per-request reward noise variance for an action with this predicted cost/latency term
/// (`w_c * cost / cost_scale + w_l * latency / latency_scale`).
pub fn reward_var(quality_weight: f64, quality_sd: f64, cost_term: f64) -> f64 {
    (quality_weight * quality_sd).powi(2) + (COST_CV * cost_term).powi(2)
}

/// Step size of the quality-floor multiplier (per request, in log space, per unit of quality
/// range): a sustained gap of 0.05 moves it by a factor e in 200 requests.
pub const MULTIPLIER_STEP: f64 = 0.1;
/// Range of the quality-floor multiplier: from "quality is worth 1/100 of the preset's weight"
/// to "10^4 times it" (cost then barely matters).
pub const MULTIPLIER_MIN: f64 = 1e-2;
pub const MULTIPLIER_MAX: f64 = 1e4;

/// What the promise is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Reward under the current weights: "at most delta x |baseline's cumulative reward| below
    /// it" (conservative mode).
    Reward,
    /// Quality alone: "cumulative quality at most tolerance x requests below the reference's"
    /// (quality-floor mode); cost is what the learner's reward then minimises.
    Quality,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conservative {
    /// The baseline action's stable uid.
    pub baseline_uid: u64,
    pub metric: Metric,
    /// Additive allowance per request, in the metric's units (quality floor's tolerance).
    pub tolerance: f64,
    /// Quality-floor mode's multiplier on the quality weight (1 in conservative mode): a dual
    /// variable on "expected quality >= reference's - tolerance", see `update_multiplier`.
    pub multiplier: f64,
    /// Retrospective counterfactuals (quality-floor mode): the baseline's quality on the
    /// answered requests it did not serve is bounded with the learner's *current* confidence
    /// set, `sum_t phi(x_t, baseline)' theta +- z * sd * ||sum_t phi(x_t, baseline)||`, instead
    /// of keeping the (wider) bound each had when it was decided. `cf_x` is `sum_t x_t` over
    /// those requests (the features are linear in x, so this is all the bound needs) and
    /// `cf_n` their number.
    pub retro: bool,
    pub cf_x: Vec<f64>,
    pub cf_n: u64,
    /// Largest fraction of the baseline's cumulative reward the policy may give up.
    pub delta: f64,
    /// Normal quantile of the confidence bounds (e.g. 1.645 for one-sided 95%).
    pub z: f64,
    /// Sub-Gaussian scale of one quality observation (0.5 for qualities in [0, 1]).
    pub quality_sd: f64,
    /// The range qualities live in; confidence bounds are clipped to it.
    pub quality_min: f64,
    pub quality_max: f64,
    /// Sum of realised rewards of every decision with feedback.
    pub realised: f64,
    /// Sum of realised rewards of the baseline's own decisions with feedback.
    pub baseline_realised: f64,
    /// Sum of the baseline's upper bounds on requests where another action was played and
    /// feedback arrived (the counterfactual is never observed, so the bound stays).
    pub counterfactual_hi: f64,
    /// Requests on which another action than the baseline was played (open or not).
    pub n_other: u64,
    /// Sum of the counterfactual noise variances of those with feedback (and of expired ones).
    pub counterfactual_var: f64,
    /// Bounds of decisions that expired without feedback: kept for good.
    pub settled_lo: f64,
    pub settled_hi: f64,
    /// Decisions where the constraint replaced the learner's choice by the baseline.
    pub overrides: u64,
    /// Decisions taken while the mode was on.
    pub decisions: u64,
    /// Open decisions by id (ordered, so sums come out the same after a reload).
    pub open: BTreeMap<u64, Open>,
}

/// The bounds entering the check, for reporting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Pessimistic cumulative reward of the policy so far (before the outcome noise).
    pub policy_lo: f64,
    /// Optimistic cumulative reward of the baseline on the same requests, with the noise
    /// allowance of every outcome not yet realised on either side.
    pub baseline_hi: f64,
    /// `policy_lo - (baseline_hi - delta * |baseline_hi|)`: what exploration may still spend.
    pub slack: f64,
}

fn check_range((lo, hi): (f64, f64)) -> CoreResult<()> {
    if lo.is_nan() || hi.is_nan() || lo >= hi || lo == f64::INFINITY || hi == f64::NEG_INFINITY {
        return Err(CoreError::Config(format!(
            "quality_range must be (low, high) with low < high, got ({lo}, {hi})"
        )));
    }
    Ok(())
}

fn check_delta(delta: f64) -> CoreResult<()> {
    if delta.is_finite() && (0.0..1.0).contains(&delta) {
        Ok(())
    } else {
        Err(CoreError::Config(format!(
            "delta must be in [0, 1), got {delta}"
        )))
    }
}

/// Inverse of the standard normal CDF at `p` in (0.5, 1) (Acklam's rational approximation,
/// relative error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p_low = 0.02425;
    if p < p_low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - p_low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

impl Conservative {
    pub fn new(
        baseline_uid: u64,
        delta: f64,
        confidence: f64,
        quality_sd: f64,
        quality_range: (f64, f64),
    ) -> CoreResult<Self> {
        check_delta(delta)?;
        if !(confidence.is_finite() && confidence > 0.5 && confidence < 1.0) {
            return Err(CoreError::Config(format!(
                "confidence must be in (0.5, 1), got {confidence}"
            )));
        }
        if !(quality_sd.is_finite() && (0.0..=1e6).contains(&quality_sd)) {
            return Err(CoreError::Config(format!(
                "quality_sd must be in [0, 1e6], got {quality_sd}"
            )));
        }
        check_range(quality_range)?;
        Ok(Conservative::empty(
            baseline_uid,
            delta,
            normal_quantile(confidence),
            quality_sd,
            quality_range,
        ))
    }

    /// Starts a fresh account with the same settings (after the reward weights change, old
    /// sums are in other units).
    pub fn reset(&mut self) {
        *self = Conservative {
            metric: self.metric,
            tolerance: self.tolerance,
            multiplier: self.multiplier,
            retro: self.retro,
            ..Conservative::empty(
                self.baseline_uid,
                self.delta,
                self.z,
                self.quality_sd,
                (self.quality_min, self.quality_max),
            )
        };
    }

    /// This account in quality-floor mode around its baseline (the reference action):
    /// cumulative quality never (with high probability) more than `tolerance` per request below
    /// the reference's. The promise is additive, so `delta` is dropped.
    pub fn with_quality_floor(mut self, tolerance: f64) -> CoreResult<Self> {
        if !(tolerance.is_finite() && (0.0..=1e6).contains(&tolerance)) {
            return Err(CoreError::Config(format!(
                "tolerance must be in [0, 1e6], got {tolerance}"
            )));
        }
        self.delta = 0.0;
        self.metric = Metric::Quality;
        self.tolerance = tolerance;
        self.retro = true;
        Ok(self)
    }

    fn empty(baseline_uid: u64, delta: f64, z: f64, quality_sd: f64, range: (f64, f64)) -> Self {
        Conservative {
            baseline_uid,
            metric: Metric::Reward,
            tolerance: 0.0,
            multiplier: 1.0,
            retro: false,
            cf_x: Vec::new(),
            cf_n: 0,
            delta,
            z,
            quality_sd,
            quality_min: range.0,
            quality_max: range.1,
            realised: 0.0,
            baseline_realised: 0.0,
            counterfactual_hi: 0.0,
            n_other: 0,
            counterfactual_var: 0.0,
            settled_lo: 0.0,
            settled_hi: 0.0,
            overrides: 0,
            decisions: 0,
            open: BTreeMap::new(),
        }
    }

    /// A confidence bound on quality: `mean + sign * z * quality_sd * width`, clipped to the
    /// quality range.
    pub fn quality_bound(&self, mean: f64, width: f64, sign: f64) -> f64 {
        (mean + sign * self.z * self.quality_sd * width).clamp(self.quality_min, self.quality_max)
    }

    /// The confidence level `z` stands for.
    pub fn confidence(&self) -> f64 {
        0.5 * (1.0 + erf(self.z / std::f64::consts::SQRT_2))
    }

    /// The retrospective counterfactual bound from the learner's current mean and (alpha-free)
    /// width of the baseline at `cf_x`: `mean + z * sd * width`, clipped to what `cf_n`
    /// qualities can sum to. 0 when there are none.
    pub fn retro_hi(&self, mean: f64, width: f64) -> f64 {
        if self.cf_n == 0 {
            return 0.0;
        }
        let n = self.cf_n as f64;
        (mean + self.z * self.quality_sd * width).clamp(n * self.quality_min, n * self.quality_max)
    }

    /// (policy's lower bound, its noise variance, baseline's upper bound, its noise variance);
    /// `retro_hi` is the retrospective counterfactual bound (`Conservative::retro_hi`, 0 when
    /// the mode keeps decision-time bounds).
    fn sums(&self, retro_hi: f64) -> (f64, f64, f64, f64) {
        let mut lo = self.realised + self.settled_lo;
        let mut hi = self.baseline_realised + self.counterfactual_hi + retro_hi + self.settled_hi;
        let mut var_p = 0.0;
        let mut var_b = self.counterfactual_var;
        for o in self.open.values() {
            lo += o.lo;
            hi += o.hi;
            var_p += o.var_policy;
            var_b += o.var_baseline;
        }
        (lo, var_p, hi, var_b)
    }

    fn slack_of(&self, lo: f64, var_p: f64, hi: f64, var_b: f64, requests: u64) -> Budget {
        let policy_lo = lo - self.z * var_p.sqrt();
        let baseline_hi = hi + self.z * var_b.sqrt();
        let allowance = self.delta * baseline_hi.abs() + self.tolerance * requests as f64;
        Budget {
            policy_lo,
            baseline_hi,
            slack: policy_lo - (baseline_hi - allowance),
        }
    }

    /// The budget as it stands (no new decision).
    pub fn budget(&self, retro_hi: f64) -> Budget {
        let (lo, var_p, hi, var_b) = self.sums(retro_hi);
        self.slack_of(lo, var_p, hi, var_b, self.decisions)
    }

    /// For each candidate `open` (its bounds if it were played now), whether playing it keeps
    /// the constraint: its slack afterwards is >= 0, or (quality-floor mode) at least what
    /// playing the baseline (whose bound on this request is `baseline`) would leave. The
    /// second clause matters once
    /// the slack is negative, which a retrospective counterfactual bound can make it after the
    /// fact: an action the bounds already prove better than the baseline here still moves the
    /// account towards the promise at least as fast. The baseline is always allowed.
    pub fn allowed(&self, candidates: &[Open], retro_hi: f64, baseline: f64) -> Vec<bool> {
        let (lo, var_p, hi, var_b) = self.sums(retro_hi);
        let n = self.decisions + 1;
        let floor = if self.retro {
            self.slack_of(lo + baseline, var_p, hi + baseline, var_b, n)
                .slack
                .min(0.0)
        } else {
            0.0
        };
        candidates
            .iter()
            .map(|o| {
                o.baseline
                    || self
                        .slack_of(
                            lo + o.lo,
                            var_p + o.var_policy,
                            hi + o.hi,
                            var_b + o.var_baseline,
                            n,
                        )
                        .slack
                        >= floor
            })
            .collect()
    }

    /// Quality-floor mode's dual step after a decision: with `gap` = the chosen action's
    /// expected quality minus the reference's on this request, plus the tolerance, the
    /// multiplier on the quality weight shrinks when the choice clears the floor (`gap > 0`:
    /// quality to spare, so cheaper actions may rank first) and grows when it falls short
    /// (exponentiated gradient on the Lagrangian of "mean quality >= reference's - tolerance",
    /// the same shape as the budget pacer's multiplier on cost).
    pub fn update_multiplier(&mut self, gap: f64) {
        if self.metric == Metric::Quality && gap.is_finite() {
            let span = (self.quality_max - self.quality_min).max(f64::MIN_POSITIVE);
            let step = (-MULTIPLIER_STEP * gap / span).clamp(-1.0, 1.0);
            self.multiplier = (self.multiplier * step.exp()).clamp(MULTIPLIER_MIN, MULTIPLIER_MAX);
        }
    }

    /// Records a decision.
    pub fn record(&mut self, id: u64, o: Open) {
        if !o.baseline {
            self.n_other += 1;
        }
        self.decisions += 1;
        self.open.insert(id, o);
    }

    /// Replaces a decision's bounds by its realised reward; `x` is the request's features (as
    /// the learner saw them), kept in `cf_x` for a retrospective counterfactual.
    pub fn complete(&mut self, id: u64, reward: f64, x: &[f64]) {
        if let Some(o) = self.open.remove(&id) {
            self.realised += reward;
            if o.baseline {
                self.baseline_realised += reward;
            } else {
                if self.retro {
                    if self.cf_x.is_empty() {
                        self.cf_x = vec![0.0; x.len()];
                    }
                    for (s, v) in self.cf_x.iter_mut().zip(x) {
                        *s += v;
                    }
                    self.cf_n += 1;
                } else {
                    self.counterfactual_hi += o.hi;
                }
                self.counterfactual_var += o.var_baseline;
            }
        }
    }

    /// Decisions that can no longer take feedback keep their bounds for good.
    pub fn settle(&mut self, live: impl Fn(u64) -> bool) {
        let gone: Vec<u64> = self.open.keys().copied().filter(|id| !live(*id)).collect();
        for id in gone {
            if let Some(o) = self.open.remove(&id) {
                self.settled_lo += o.lo;
                self.settled_hi += o.hi;
                // the policy's reward stays a bound too, so its noise joins the other side
                self.counterfactual_var += o.var_baseline + o.var_policy;
            }
        }
    }
}

/// Error function (Abramowitz-Stegun 7.1.26, absolute error below 1.5e-7); used only to report
/// the confidence level back.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

mod persist;
#[cfg(test)]
mod tests;
