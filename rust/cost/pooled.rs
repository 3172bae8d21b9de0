//! Partial pooling of the cost model's log ratios to the configured priors: per-group
//! statistics, the shared corrections and the per-model deviations.

use crate::error::{CoreError, CoreResult};
use crate::state::{Reader, Writer};

use super::{LOG_CLAMP, PRIOR_ERROR_LN, VAR_MIN, VAR_PRIOR, VAR_PRIOR_WEIGHT};

/// Count, sum and sum of squares of one group's log ratios to the prior.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LogStat {
    pub count: f64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl LogStat {
    pub(super) fn add(&mut self, r: f64) {
        let next = LogStat {
            count: self.count + 1.0,
            sum: self.sum + r,
            sum_sq: self.sum_sq + r * r,
        };
        if next.count.is_finite() && next.sum.is_finite() && next.sum_sq.is_finite() {
            *self = next;
        }
    }
    pub(super) fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
    /// Sum of squared deviations from the group mean (>= 0).
    pub(super) fn within_ss(&self) -> f64 {
        match self.mean() {
            Some(m) => (self.sum_sq - m * self.sum).max(0.0),
            None => 0.0,
        }
    }
    pub(super) fn write(&self, w: &mut Writer) {
        w.f64(self.count);
        w.f64(self.sum);
        w.f64(self.sum_sq);
    }
    pub(super) fn read(r: &mut Reader) -> CoreResult<LogStat> {
        let me = LogStat {
            count: r.finite_f64("cost.log_stat")?,
            sum: r.finite_f64("cost.log_stat")?,
            sum_sq: r.finite_f64("cost.log_stat")?,
        };
        me.check().map_err(CoreError::State)?;
        Ok(me)
    }
    pub(super) fn check(&self) -> Result<(), String> {
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
pub(super) struct Pooled {
    /// ln of the shared output-length correction per strategy, and of the speed correction.
    pub(super) out_ln: Vec<f64>,
    pub(super) latency_ln: f64,
    /// Per-model log deviations from the shared corrections, with their posterior sd.
    pub(super) out: Deviations,
    pub(super) latency: Deviations,
}

/// Per-model log deviations from a shared correction: partial pooling with the noise variance
/// `sigma^2` and the between-model variance `tau^2` estimated from the data.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Deviations {
    pub(super) dev: Vec<f64>,
    pub(super) sd: Vec<f64>,
    pub(super) tau2: f64,
    pub(super) sigma2: f64,
}

impl Deviations {
    /// `groups` holds `per_model` consecutive groups per model; `center(i)` is group i's
    /// shared correction. Per model: `n` observations and `s` the sum of `r - center`. Then
    /// `sigma^2` pools the within-group variance; `tau^2` the spread of the models' mean
    /// residuals less their noise (`mean^2 - sigma^2 / n`); each with the prior `VAR_PRIOR`
    /// worth `VAR_PRIOR_WEIGHT` observations. A model's deviation is its posterior mean
    /// `s / (n + sigma^2 / tau^2)` (shrunk toward 0, a model with no data has none), its sd
    /// `(1 / tau^2 + n / sigma^2)^-1/2`.
    pub(super) fn estimate(
        groups: &[LogStat],
        per_model: usize,
        center: impl Fn(usize) -> f64,
    ) -> Self {
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

pub(super) fn finite_clamped(v: f64, lo: f64, hi: f64, default: f64) -> f64 {
    if v.is_finite() {
        v.clamp(lo, hi)
    } else {
        default
    }
}

pub(super) fn clamped_log_ratio(num: f64, den: f64) -> Option<f64> {
    (num > 0.0 && den > 0.0 && num.is_finite() && den.is_finite())
        .then(|| (num.ln() - den.ln()).clamp(-LOG_CLAMP, LOG_CLAMP))
}
