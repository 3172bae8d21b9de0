//! What both LinUCB learners share: configuration, validation, masked argmax with deterministic
//! ties, and the batch forms. A learner only has to provide `scores_into` and `apply_update`.

use crate::error::{check_finite, check_finite_scalar, check_len, CoreError, CoreResult};
use crate::state::{Reader, Writer};

/// Upper bound on any dimension read from a state blob or accepted from a caller.
pub const MAX_DIM: usize = 1 << 16;

/// Largest state (bytes of all matrices and vectors) a learner may allocate; beyond it the
/// constructor (or `add_actions`, or loading) raises `ConfigError` instead of letting the
/// allocation abort the process. 2 GiB: a disjoint learner with 64 arms of dimension 1024 or
/// 16 arms of 2048, or a shared learner at the joint-dimension limit, fit well below it.
pub const MAX_STATE_BYTES: u128 = 2 << 30;

/// Fails with `Config` when a learner of `bytes` would exceed [`MAX_STATE_BYTES`].
pub fn check_state_bytes(what: &str, bytes: u128) -> CoreResult<()> {
    if bytes <= MAX_STATE_BYTES {
        Ok(())
    } else {
        Err(CoreError::Config(format!(
            "{what} would need {:.2} GiB of state, above the limit of {} GiB (MAX_STATE_BYTES); use fewer actions or a smaller dimension",
            bytes as f64 / (1u128 << 30) as f64,
            MAX_STATE_BYTES >> 30
        )))
    }
}

/// Largest `alpha` accepted: far beyond any useful exploration width (typical values are 0.1 to
/// 10), and small enough that `alpha * sqrt(x' A^-1 x)` stays finite for accepted inputs.
pub const ALPHA_MAX: f64 = 1e6;

/// Largest magnitude of a feature value (request features x, action features psi). Its square
/// is the most one update may add to `A` ([`crate::ridge::MAGNITUDE_LIMIT`] = 1e300), so a
/// larger value could never be learned from; select and scores reject it too, rather than
/// return infinite or NaN scores.
pub const FEATURE_LIMIT: f64 = 1e150;

/// Fails with `NonFinite` naming `what` when a value is NaN, infinite or beyond
/// [`FEATURE_LIMIT`]. One pass; the comparison also catches NaN.
#[inline]
pub fn check_features(what: &str, values: &[f64]) -> CoreResult<()> {
    match values.iter().position(|v| v.is_nan() || v.abs() > FEATURE_LIMIT) {
        None => Ok(()),
        Some(i) if values[i].is_finite() => Err(CoreError::NonFinite(format!(
            "{what}[{i}] = {:e} exceeds the feature limit {FEATURE_LIMIT:e}: its square overflows what the statistics may hold; rescale the features",
            values[i]
        ))),
        Some(_) => check_finite(what, values),
    }
}

/// Fails with `NonFinite` when a computed score is not finite (features, statistics and
/// settings that are each in range can still overflow in combination).
pub fn check_scores(mean: &[f64], bonus: &[f64]) -> CoreResult<()> {
    for (what, v) in [("mean", mean), ("bonus", bonus)] {
        if let Some(i) = v.iter().position(|s| !s.is_finite()) {
            return Err(CoreError::NonFinite(format!(
                "the {what} score of action {i} is {} for this x (the features, alpha or the learned statistics are too large in combination); rescale the features or rewards",
                v[i]
            )));
        }
    }
    Ok(())
}

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
        if self.alpha > ALPHA_MAX {
            return Err(CoreError::Config(format!(
                "alpha must be <= {ALPHA_MAX:e}, got {:e}",
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
    /// Updates the learner holds, over all its ridge models (saturating): `SharedLinUcb` counts
    /// every update applied; in `LinUcb` a removed action takes its count with it.
    fn n_updates(&self) -> u64;
    /// Posterior mean (prior included) and exploration bonus (alpha included) for every action.
    /// `x` is validated; `mean` and `bonus` have length `n_actions`.
    fn scores_into(&self, x: &[f64], mean: &mut [f64], bonus: &mut [f64]);
    /// One observation; arguments are validated.
    fn apply_update(&mut self, action: usize, x: &[f64], reward: f64) -> CoreResult<()>;
    /// Which ridge model an action's updates go to (the arm, or 0 for a shared model).
    fn ridge_key(&self, action: usize) -> usize;
    fn ridge(&self, key: usize) -> &crate::ridge::Ridge;
    /// Puts back a ridge model taken from `ridge(key)` (keeping any derived buffers in sync):
    /// how a failed batch is rolled back.
    fn restore_ridge(&mut self, key: usize, ridge: crate::ridge::Ridge);
    /// Largest absolute entry of the feature vector an update of `action` with `x` adds.
    fn feature_max(&self, action: usize, x: &[f64]) -> f64;

    fn check_x(&self, x: &[f64]) -> CoreResult<()> {
        check_len("x", x.len(), self.dim())?;
        check_features("x", x)
    }

    /// `scores_into` followed by the check that every score is finite: what anything that
    /// selects or reports scores must call.
    fn finite_scores_into(&self, x: &[f64], mean: &mut [f64], bonus: &mut [f64]) -> CoreResult<()> {
        self.scores_into(x, mean, bonus);
        check_scores(mean, bonus)
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
        self.finite_scores_into(x, &mut m, &mut b)?;
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
        check_features("X", xs)?;
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

    /// All-or-nothing: every row is validated before the first one is applied, and should a
    /// later step still fail (a numerical failure no pre-check foresees) every model the batch
    /// touched is rolled back, so the state is exactly what it was.
    fn update_many(&mut self, actions: &[i64], xs: &[f64], rewards: &[f64]) -> CoreResult<()> {
        let n = actions.len();
        let d = self.dim();
        check_len("rewards", rewards.len(), n)?;
        check_len("X", xs.len(), n * d)?;
        check_features("X", xs)?;
        check_finite("rewards", rewards)?;
        let mut idx = Vec::with_capacity(n);
        for &a in actions {
            idx.push(self.check_action(a)?);
        }
        // Overflow is checked against the accumulated statistics of the whole batch first, so
        // a bad row never leaves earlier rows applied.
        let prior = self.config().prior_mean;
        let ridge = self.config().ridge;
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
        for &(key, add_a, add_b) in &adds {
            self.ridge(key).check_headroom(add_a, add_b, ridge)?;
        }
        // Snapshot each touched model just before its first update (only those are copied).
        let mut saved: Vec<(usize, crate::ridge::Ridge)> = Vec::with_capacity(adds.len());
        for (r, (&a, &rew)) in idx.iter().zip(rewards).enumerate() {
            let key = self.ridge_key(a);
            if !saved.iter().any(|(k, _)| *k == key) {
                let snapshot = match self.ridge(key).try_clone() {
                    Ok(s) => s,
                    Err(e) => {
                        for (k, ridge) in saved {
                            self.restore_ridge(k, ridge);
                        }
                        return Err(e);
                    }
                };
                saved.push((key, snapshot));
            }
            if let Err(e) = self.apply_update(a, &xs[r * d..(r + 1) * d], rew) {
                for (k, ridge) in saved {
                    self.restore_ridge(k, ridge);
                }
                return Err(e);
            }
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
    // mean + bonus is finite exactly when both are (bonus >= 0), so one flag in the summing
    // loop is the whole check on this hot path.
    let mut finite = true;
    for (mi, bi) in mean.iter_mut().zip(bonus.iter()) {
        *mi += bi;
        finite &= mi.is_finite();
    }
    if !finite {
        let i = mean.iter().position(|t| !t.is_finite()).unwrap_or(0);
        return Err(CoreError::NonFinite(format!(
            "the score of action {i} is {} for this x (the features, alpha or the learned statistics are too large in combination); rescale the features or rewards",
            mean[i]
        )));
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
    use crate::state::Record;

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

    /// A learner whose updates fail on a marked reward, after validation: stands in for a
    /// numerical failure no pre-check foresees.
    struct Flaky(crate::linucb::LinUcb);

    impl Learner for Flaky {
        fn n_actions(&self) -> usize {
            self.0.n_actions()
        }
        fn dim(&self) -> usize {
            self.0.dim()
        }
        fn config(&self) -> &Config {
            self.0.config()
        }
        fn n_updates(&self) -> u64 {
            self.0.n_updates()
        }
        fn scores_into(&self, x: &[f64], mean: &mut [f64], bonus: &mut [f64]) {
            self.0.scores_into(x, mean, bonus)
        }
        fn apply_update(&mut self, action: usize, x: &[f64], reward: f64) -> CoreResult<()> {
            if reward == 42.0 {
                return Err(CoreError::Numerical("injected".into()));
            }
            self.0.apply_update(action, x, reward)
        }
        fn ridge_key(&self, action: usize) -> usize {
            self.0.ridge_key(action)
        }
        fn ridge(&self, key: usize) -> &crate::ridge::Ridge {
            self.0.ridge(key)
        }
        fn restore_ridge(&mut self, key: usize, ridge: crate::ridge::Ridge) {
            self.0.restore_ridge(key, ridge)
        }
        fn feature_max(&self, action: usize, x: &[f64]) -> f64 {
            self.0.feature_max(action, x)
        }
    }

    #[test]
    fn update_many_rolls_back_every_touched_model_on_a_late_failure() {
        let mut l = Flaky(crate::linucb::LinUcb::new(3, 2, Config::default()).unwrap());
        l.update(1, &[0.3, -0.2], 0.5).unwrap();
        let before = l.0.clone();
        let xs = [1.0, 0.5, -1.0, 2.0, 0.1, 0.1, 0.7, 0.7];
        let err = l.update_many(&[0, 1, 2, 0], &xs, &[1.0, 0.0, 1.0, 42.0]);
        assert!(matches!(err, Err(CoreError::Numerical(_))));
        assert_eq!(l.0, before, "rows before the failure stayed applied");
        assert_eq!(l.0.to_bytes(), before.to_bytes());
        l.update_many(&[0, 1, 2, 0], &xs, &[1.0, 0.0, 1.0, 0.0])
            .unwrap();
        assert_eq!(l.n_updates(), 5);
    }

    #[test]
    fn removal_mapping_compacts() {
        assert_eq!(removal_mapping(4, &[1, 3]).unwrap(), vec![0, -1, 1, -1]);
        assert!(removal_mapping(2, &[0, 1]).is_err());
        assert!(removal_mapping(2, &[2]).is_err());
        assert!(removal_mapping(2, &[-1]).is_err());
    }
}
