//! Empirical Bayes for the shared learner's interaction prior.
//!
//! The shared learner regresses quality on `phi = kron([1, x], [1, psi])`. Its coefficients
//! fall in four blocks: the intercept, the action main effects (`1 x psi`), the request main
//! effects (`x x 1`) and the request x action interactions (`x x psi`). One ridge `lambda` for
//! all of them lets ~1,000 interaction coefficients soak up noise on a stream of a few hundred
//! requests. Here the interactions get their own, stronger ridge `lambda * m` (`m >= 1`, prior
//! standard deviation `1 / sqrt(m)` times the main effects'), and `m` is chosen by maximising
//! the marginal likelihood of the feedback seen so far (MacKay's evidence, with the noise
//! variance profiled out), so interactions are switched on only as far as the data support
//! them.
//!
//! With prior `theta ~ N(0, sigma^2 Lambda^-1)` and noise `N(0, sigma^2)`, `A = Lambda + sum
//! phi phi'` and `b = sum y phi` (`y` = quality minus the prior mean), the log evidence with
//! `sigma^2` at its maximum `(yy - b' A^-1 b) / n` is, up to a constant,
//!
//! `-n/2 log((yy - b' A^-1 b) / n) - 1/2 log det A + 1/2 sum log Lambda_jj`.
//!
//! Changing `m` changes only the interaction entries of `A`'s diagonal, so every candidate is
//! evaluated from the current `A` and `b` (one Cholesky factorisation each, `O(D^3)`); the
//! policy does it on a geometric schedule of updates, so the total cost over a stream grows
//! with the logarithm of its length.

use crate::error::{CoreError, CoreResult};
use crate::linalg;
use crate::ridge::Ridge;
use crate::state::{Reader, Writer};

/// Candidate interaction ridge multipliers (prior standard deviation 1, 1/2, ..., 1/32 of the
/// main effects').
pub const GRID: [f64; 6] = [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0];
/// First update count at which the multiplier is re-estimated; then every time the count has
/// grown by [`GROWTH`], at most every [`MAX_PERIOD`] updates.
pub const FIRST_AT: u64 = 32;
pub const GROWTH: u64 = 4;
pub const MAX_PERIOD: u64 = 4096;
/// Largest multiplier accepted from a user or a state file.
pub const MAX_MULT: f64 = 1e6;

/// Indices of the interaction coefficients (`x_i psi_j`, i, j >= 1) in the joint vector of a
/// shared learner with request dimension `dim` and action dimension `p`.
pub fn interaction_coords(dim: usize, p: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(dim * p);
    for i in 1..=dim {
        for j in 1..=p {
            out.push(i * (p + 1) + j);
        }
    }
    out
}

pub fn check_mult(m: f64) -> CoreResult<()> {
    if m.is_finite() && (1.0..=MAX_MULT).contains(&m) {
        Ok(())
    } else {
        Err(CoreError::Config(format!(
            "interaction_prior must be in [1, {MAX_MULT:e}], got {m}"
        )))
    }
}

/// The interaction prior of a policy's shared learner and the sufficient statistics its
/// evidence needs beyond `A` and `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InteractionPrior {
    /// Current ridge multiplier `m` on the interaction coefficients.
    pub mult: f64,
    /// Re-estimate `m` by empirical Bayes as feedback arrives.
    pub auto: bool,
    /// Weighted sum of squared centred rewards (`sum w (q - prior_mean)^2`).
    pub yy: f64,
    /// Weighted number of observations.
    pub n: f64,
    /// Learner update count at which `m` is next re-estimated.
    pub next_at: u64,
}

impl InteractionPrior {
    pub fn new(mult: f64, auto: bool) -> CoreResult<Self> {
        check_mult(mult)?;
        Ok(InteractionPrior {
            mult,
            auto,
            yy: 0.0,
            n: 0.0,
            next_at: FIRST_AT,
        })
    }

    /// A fixed multiplier of 1: one ridge for every coefficient (formats before 5).
    pub const fn off() -> Self {
        InteractionPrior {
            mult: 1.0,
            auto: false,
            yy: 0.0,
            n: 0.0,
            next_at: FIRST_AT,
        }
    }

    /// Records one observation of centred reward `y` with weight `w` (already validated).
    pub fn observe(&mut self, y: f64, w: f64) {
        let (yy, n) = (self.yy + w * y * y, self.n + w);
        if yy.is_finite() && n.is_finite() {
            (self.yy, self.n) = (yy, n);
        }
    }

    /// Whether the multiplier is due for re-estimation after `updates` learner updates; when
    /// it is, schedules the next one.
    pub fn due(&mut self, updates: u64) -> bool {
        if !self.auto || updates < self.next_at {
            return false;
        }
        let grown = updates.saturating_mul(GROWTH);
        self.next_at = grown.min(updates.saturating_add(MAX_PERIOD));
        true
    }

    pub fn write(&self, w: &mut Writer) {
        w.f64(self.mult);
        w.bool(self.auto);
        w.f64(self.yy);
        w.f64(self.n);
        w.u64(self.next_at);
    }

    pub fn read(r: &mut Reader) -> CoreResult<Self> {
        let mult = r.f64()?;
        check_mult(mult).map_err(|e| CoreError::State(e.to_string()))?;
        let auto = r.bool()?;
        let (yy, n) = (r.f64()?, r.f64()?);
        if !(yy.is_finite() && yy >= 0.0 && n.is_finite() && n >= 0.0) {
            return Err(CoreError::State(format!(
                "interaction prior statistics must be finite and >= 0, got yy = {yy}, n = {n}"
            )));
        }
        let next_at = r.u64()?;
        Ok(InteractionPrior {
            mult,
            auto,
            yy,
            n,
            next_at,
        })
    }
}

/// `model.a` with the interaction diagonal moved from multiplier `from` to `to`.
fn shifted(
    model: &Ridge,
    coords: &[usize],
    ridge: f64,
    from: f64,
    to: f64,
) -> CoreResult<Vec<f64>> {
    let mut a = linalg::try_copy(&model.a)?;
    let n = model.n;
    let delta = ridge * (to - from);
    for &c in coords {
        a[c * n + c] += delta;
    }
    Ok(a)
}

/// Log evidence (up to a constant shared by every multiplier) of the data summarised by
/// `model` (built with multiplier `current`), `yy` and `n`, were the multiplier `m`.
pub fn log_evidence(
    model: &Ridge,
    coords: &[usize],
    ridge: f64,
    current: f64,
    m: f64,
    yy: f64,
    n: f64,
) -> CoreResult<f64> {
    let dim = model.n;
    let a = shifted(model, coords, ridge, current, m)?;
    let l = linalg::cholesky(&a, dim)?;
    // A theta = b by two triangular solves with L L' = A.
    let mut z = model.b.clone();
    for i in 0..dim {
        let mut s = z[i];
        for k in 0..i {
            s -= l[i * dim + k] * z[k];
        }
        z[i] = s / l[i * dim + i];
    }
    // b' A^-1 b = |L^-1 b|^2
    let fit: f64 = z.iter().map(|v| v * v).sum();
    let log_det: f64 = (0..dim).map(|i| l[i * dim + i].ln()).sum::<f64>() * 2.0;
    let k = coords.len() as f64;
    let log_prior = (dim as f64 - k) * ridge.ln() + k * (ridge * m).ln();
    // The residual sum of squares cannot be negative in exact arithmetic; floor it so a
    // perfectly fitted stream scores finitely.
    let rss = (yy - fit).max(1e-12 * yy.max(1e-12));
    let out = -0.5 * n * (rss / n.max(1e-12)).ln() - 0.5 * log_det + 0.5 * log_prior;
    if out.is_finite() {
        Ok(out)
    } else {
        Err(CoreError::Numerical(format!(
            "log evidence at m = {m} is {out}"
        )))
    }
}

/// The grid multiplier of highest evidence (ties and failures keep the lowest index among the
/// best); `current` when no candidate can be evaluated.
pub fn best_mult(
    model: &Ridge,
    coords: &[usize],
    ridge: f64,
    current: f64,
    yy: f64,
    n: f64,
) -> f64 {
    let mut best = (f64::NEG_INFINITY, current);
    for &m in GRID.iter() {
        if let Ok(e) = log_evidence(model, coords, ridge, current, m, yy, n) {
            if e > best.0 {
                best = (e, m);
            }
        }
    }
    best.1
}

/// Moves `model` from multiplier `from` to `to` (A's interaction diagonal, then `A^-1` and
/// theta recomputed). Transactional: on failure `model` is unchanged.
pub fn set_mult(
    model: &mut Ridge,
    coords: &[usize],
    ridge: f64,
    from: f64,
    to: f64,
) -> CoreResult<()> {
    if from == to || coords.is_empty() {
        return Ok(());
    }
    let a = shifted(model, coords, ridge, from, to)?;
    let old = std::mem::replace(&mut model.a, a);
    if let Err(e) = model.refresh() {
        model.a = old;
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fitted(n_obs: usize, interaction: f64) -> (Ridge, Vec<usize>, f64, f64) {
        // d = 2 request features, p = 2 action features
        let (d, p) = (2usize, 2usize);
        let joint = (d + 1) * (p + 1);
        let mut m = Ridge::new(joint, 1.0).unwrap();
        let mut scratch = vec![0.0; joint];
        let mut rng = crate::rng::SplitMix64::new(7);
        let (mut yy, mut n) = (0.0, 0.0);
        for _ in 0..n_obs {
            let x = [rng.next_f64(), rng.next_f64()];
            let a = (rng.next_f64() * 2.0) as usize;
            let psi = if a == 0 { [1.0, 0.0] } else { [0.0, 1.0] };
            let phi = crate::shared::kron_phi(&x, &psi);
            let noise = rng.next_f64() - 0.5;
            let y = 0.1 * psi[0] + interaction * (x[0] - 0.5) * (psi[0] - psi[1]) + noise;
            m.update(&phi, y, 1.0, 1.0, &mut scratch).unwrap();
            yy += y * y;
            n += 1.0;
        }
        (m, interaction_coords(d, p), yy, n)
    }

    #[test]
    fn coords_are_the_interaction_block() {
        assert_eq!(interaction_coords(2, 2), vec![4, 5, 7, 8]);
        assert!(interaction_coords(3, 0).is_empty());
    }

    #[test]
    fn evidence_prefers_shrinkage_without_interactions_and_not_with_them() {
        let (m, c, yy, n) = fitted(2000, 0.0);
        assert!(best_mult(&m, &c, 1.0, 1.0, yy, n) > 1.0);
        let (m, c, yy, n) = fitted(2000, 2.0);
        assert_eq!(best_mult(&m, &c, 1.0, 1.0, yy, n), 1.0);
    }

    #[test]
    fn set_mult_round_trips_and_matches_a_fresh_fit() {
        let (mut m, c, _, _) = fitted(300, 0.5);
        let before = m.clone();
        set_mult(&mut m, &c, 1.0, 1.0, 64.0).unwrap();
        set_mult(&mut m, &c, 1.0, 64.0, 1.0).unwrap();
        for (a, b) in m.theta.iter().zip(&before.theta) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }

    #[test]
    fn schedule_is_geometric_and_capped() {
        let mut p = InteractionPrior::new(1.0, true).unwrap();
        let hits: Vec<u64> = (0..40_000).filter(|&u| p.due(u)).collect();
        assert_eq!(&hits[..4], &[32, 128, 512, 2048]);
        assert!(hits.windows(2).all(|w| w[1] - w[0] <= MAX_PERIOD));
        let mut off = InteractionPrior::new(1.0, false).unwrap();
        assert!(!(0..10_000).any(|u| off.due(u)));
    }

    #[test]
    fn bad_multipliers_are_config_errors() {
        for m in [0.5, f64::NAN, f64::INFINITY, 2e6] {
            assert!(InteractionPrior::new(m, false).is_err());
        }
    }
}
