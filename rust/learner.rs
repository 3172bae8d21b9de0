//! What both LinUCB learners share: configuration, validation, masked argmax with deterministic
//! ties, and the batch forms. A learner only has to provide `scores_into` and `apply_update`.

use crate::error::{check_finite, check_finite_scalar, check_len, CoreError, CoreResult};
use crate::state::{Reader, Writer};

/// Upper bound on any dimension read from a state blob or accepted from a caller.
pub const MAX_DIM: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Width of the confidence bonus.
    pub alpha: f64,
    /// Ridge regulariser (prior precision), > 0.
    pub ridge: f64,
    /// Discount gamma in (0, 1]; 1 is plain LinUCB.
    pub discount: f64,
    /// Prior mean of the reward: the learner fits `r - prior_mean` and adds it back when
    /// scoring, so untried actions start at the prior rather than at 0 (cold start).
    pub prior_mean: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            alpha: 1.0,
            ridge: 1.0,
            discount: 1.0,
            prior_mean: 0.0,
        }
    }
}

impl Config {
    pub fn validate(&self) -> CoreResult<()> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(CoreError::Config(format!(
                "alpha must be finite and >= 0, got {}",
                self.alpha
            )));
        }
        // Outside this range A^-1 = I / ridge over- or underflows.
        if !(1e-10..=1e10).contains(&self.ridge) {
            return Err(CoreError::Config(format!(
                "ridge must be finite and > 0, got {} (accepted range [1e-10, 1e10])",
                self.ridge
            )));
        }
        if !(self.discount.is_finite() && self.discount > 0.0 && self.discount <= 1.0) {
            return Err(CoreError::Config(format!(
                "discount must be in (0, 1], got {}",
                self.discount
            )));
        }
        if !self.prior_mean.is_finite() {
            return Err(CoreError::Config(format!(
                "prior_mean must be finite, got {}",
                self.prior_mean
            )));
        }
        Ok(())
    }

    pub fn write(&self, w: &mut Writer) {
        w.f64(self.alpha);
        w.f64(self.ridge);
        w.f64(self.discount);
        w.f64(self.prior_mean);
    }

    pub fn read(r: &mut Reader) -> CoreResult<Config> {
        let c = Config {
            alpha: r.f64()?,
            ridge: r.f64()?,
            discount: r.f64()?,
            prior_mean: r.f64()?,
        };
        c.validate().map_err(|e| CoreError::State(e.to_string()))?;
        Ok(c)
    }
}

/// Which actions may be chosen in a batch call.
#[derive(Debug, Clone, Copy)]
pub enum Mask<'a> {
    All,
    /// One (n_actions,) mask applied to every row.
    Shared(&'a [bool]),
    /// One mask per row: (n_rows * n_actions,) row-major.
    PerRow(&'a [bool]),
}

/// Index of the largest score among allowed actions; ties go to the lowest index. NaN never
/// wins (scores are finite for validated input, but this keeps the rule total).
pub fn masked_argmax(scores: &[f64], mask: Option<&[bool]>) -> CoreResult<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if let Some(m) = mask {
            if !m.get(i).copied().unwrap_or(false) {
                continue;
            }
        }
        let s = if s.is_nan() { f64::NEG_INFINITY } else { s };
        match best {
            Some((_, b)) if s <= b => {}
            _ => best = Some((i, s)),
        }
    }
    best.map(|(i, _)| i).ok_or(CoreError::AllMasked)
}

pub trait Learner {
    fn n_actions(&self) -> usize;
    /// Request-feature dimension d.
    fn dim(&self) -> usize;
    fn config(&self) -> &Config;
    /// Posterior mean (prior included) and exploration bonus (alpha included) for every action.
    /// `x` is validated; `mean` and `bonus` have length `n_actions`.
    fn scores_into(&self, x: &[f64], mean: &mut [f64], bonus: &mut [f64]);
    /// One observation; arguments are validated.
    fn apply_update(&mut self, action: usize, x: &[f64], reward: f64) -> CoreResult<()>;
    /// Which ridge model an action's updates go to (the arm, or 0 for a shared model).
    fn ridge_key(&self, action: usize) -> usize;
    fn ridge(&self, key: usize) -> &crate::ridge::Ridge;
    /// Largest absolute entry of the feature vector an update of `action` with `x` adds.
    fn feature_max(&self, action: usize, x: &[f64]) -> f64;

    fn check_x(&self, x: &[f64]) -> CoreResult<()> {
        check_len("x", x.len(), self.dim())?;
        check_finite("x", x)
    }

    fn check_action(&self, action: i64) -> CoreResult<usize> {
        usize::try_from(action)
            .ok()
            .filter(|a| *a < self.n_actions())
            .ok_or(CoreError::UnknownAction {
                action,
                n_actions: self.n_actions(),
            })
    }

    fn check_mask(&self, mask: &[bool]) -> CoreResult<()> {
        check_len("mask", mask.len(), self.n_actions())
    }

    fn scores(&self, x: &[f64]) -> CoreResult<(Vec<f64>, Vec<f64>)> {
        self.check_x(x)?;
        let k = self.n_actions();
        let (mut m, mut b) = (vec![0.0; k], vec![0.0; k]);
        self.scores_into(x, &mut m, &mut b);
        Ok((m, b))
    }

    fn select(&self, x: &[f64], mask: Option<&[bool]>) -> CoreResult<usize> {
        self.check_x(x)?;
        if let Some(m) = mask {
            self.check_mask(m)?;
        }
        let k = self.n_actions();
        let (mut m, mut b) = (vec![0.0; k], vec![0.0; k]);
        self.select_row(x, mask, &mut m, &mut b)
    }

    /// `select` for one validated row: the masked argmax of mean + bonus, ties to the lowest
    /// index; `mean` and `bonus` are scratch of length K. Learners may override it with a
    /// faster search that returns the same index (see `LinUcb`).
    fn select_row(
        &self,
        x: &[f64],
        mask: Option<&[bool]>,
        mean: &mut [f64],
        bonus: &mut [f64],
    ) -> CoreResult<usize> {
        exact_select_row(self, x, mask, mean, bonus)
    }

    /// `xs` is (n_rows, dim) row-major. Validates everything before computing anything.
    fn select_many(&self, xs: &[f64], n_rows: usize, mask: Mask) -> CoreResult<Vec<usize>> {
        let d = self.dim();
        let k = self.n_actions();
        check_len("X", xs.len(), n_rows * d)?;
        check_finite("X", xs)?;
        match mask {
            Mask::All => {}
            Mask::Shared(m) => self.check_mask(m)?,
            Mask::PerRow(m) => check_len("mask", m.len(), n_rows * k)?,
        }
        let (mut mean, mut bonus) = (vec![0.0; k], vec![0.0; k]);
        let mut out = Vec::with_capacity(n_rows);
        for r in 0..n_rows {
            let x = &xs[r * d..(r + 1) * d];
            let row_mask = match mask {
                Mask::All => None,
                Mask::Shared(m) => Some(m),
                Mask::PerRow(m) => Some(&m[r * k..(r + 1) * k]),
            };
            out.push(
                self.select_row(x, row_mask, &mut mean, &mut bonus)
                    .map_err(|e| match e {
                        CoreError::AllMasked => CoreError::AllMaskedRow(r),
                        other => other,
                    })?,
            );
        }
        Ok(out)
    }

    fn update(&mut self, action: i64, x: &[f64], reward: f64) -> CoreResult<()> {
        let a = self.check_action(action)?;
        self.check_x(x)?;
        check_finite_scalar("reward", reward)?;
        self.apply_update(a, x, reward)
    }

    /// All-or-nothing: every row is validated before the first one is applied.
    fn update_many(&mut self, actions: &[i64], xs: &[f64], rewards: &[f64]) -> CoreResult<()> {
        let n = actions.len();
        let d = self.dim();
        check_len("rewards", rewards.len(), n)?;
        check_len("X", xs.len(), n * d)?;
        check_finite("X", xs)?;
        check_finite("rewards", rewards)?;
        let mut idx = Vec::with_capacity(n);
        for &a in actions {
            idx.push(self.check_action(a)?);
        }
        // Overflow is checked against the accumulated statistics of the whole batch first, so
        // a bad row never leaves earlier rows applied.
        let prior = self.config().prior_mean;
        let mut adds: Vec<(usize, f64, f64)> = Vec::new();
        for (r, (&a, &rew)) in idx.iter().zip(rewards).enumerate() {
            let key = self.ridge_key(a);
            let fmax = self.feature_max(a, &xs[r * d..(r + 1) * d]);
            let (add_a, add_b) = (fmax * fmax, (rew - prior).abs() * fmax);
            match adds.iter_mut().find(|e| e.0 == key) {
                Some(e) => {
                    e.1 += add_a;
                    e.2 += add_b;
                }
                None => adds.push((key, add_a, add_b)),
            }
        }
        for (key, add_a, add_b) in adds {
            self.ridge(key).check_headroom(add_a, add_b)?;
        }
        for (r, (&a, &rew)) in idx.iter().zip(rewards).enumerate() {
            self.apply_update(a, &xs[r * d..(r + 1) * d], rew)?;
        }
        Ok(())
    }
}

/// The reference `select_row`: every action's exact score, then the masked argmax.
pub fn exact_select_row<L: Learner + ?Sized>(
    learner: &L,
    x: &[f64],
    mask: Option<&[bool]>,
    mean: &mut [f64],
    bonus: &mut [f64],
) -> CoreResult<usize> {
    learner.scores_into(x, mean, bonus);
    for (mi, bi) in mean.iter_mut().zip(bonus.iter()) {
        *mi += bi;
    }
    masked_argmax(mean, mask)
}

/// Validates indices for `remove_actions` and returns the old -> new mapping (-1 = removed).
pub fn removal_mapping(n_actions: usize, indices: &[i64]) -> CoreResult<Vec<i64>> {
    let mut keep = vec![true; n_actions];
    for &i in indices {
        let u =
            usize::try_from(i)
                .ok()
                .filter(|u| *u < n_actions)
                .ok_or(CoreError::UnknownAction {
                    action: i,
                    n_actions,
                })?;
        keep[u] = false;
    }
    if !keep.iter().any(|k| *k) {
        return Err(CoreError::Config(
            "cannot remove every action: at least one must remain".into(),
        ));
    }
    let mut next = 0i64;
    Ok(keep
        .iter()
        .map(|&k| {
            if k {
                next += 1;
                next - 1
            } else {
                -1
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_and_mask() {
        assert_eq!(masked_argmax(&[1.0, 3.0, 3.0], None).unwrap(), 1);
        assert_eq!(
            masked_argmax(&[1.0, 3.0, 3.0], Some(&[true, false, true])).unwrap(),
            2
        );
        assert_eq!(
            masked_argmax(&[1.0, 3.0], Some(&[false, false])),
            Err(CoreError::AllMasked)
        );
        assert_eq!(masked_argmax(&[f64::NAN, -1e300], None).unwrap(), 1);
    }

    #[test]
    fn removal_mapping_compacts() {
        assert_eq!(removal_mapping(4, &[1, 3]).unwrap(), vec![0, -1, 1, -1]);
        assert!(removal_mapping(2, &[0, 1]).is_err());
        assert!(removal_mapping(2, &[2]).is_err());
        assert!(removal_mapping(2, &[-1]).is_err());
    }
}
