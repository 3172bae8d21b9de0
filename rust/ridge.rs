//! Online ridge regression: the statistics one LinUCB arm (or the one shared model) keeps.
//!
//! `A = ridge * I + sum_t gamma^(T-t) x_t x_t'` and `b = sum_t gamma^(T-t) r_t x_t` (with
//! `gamma = 1` this is plain ridge regression). `A` is kept alongside its inverse: the inverse is
//! maintained by Sherman-Morrison rank-one updates (O(n^2) each) and recomputed from `A` by a
//! Cholesky factorisation every [`REFRESH_PERIOD`] updates, so rounding error cannot accumulate
//! over millions of updates (the tests check it against a direct solve).

use crate::error::{CoreError, CoreResult};
use crate::linalg;

/// Number of rank-one updates between two exact recomputations of `A^-1` from `A`.
/// At n = 153 (d = 16, p = 8 in the shared learner) a refresh costs ~1.2 ms, i.e. ~1.2 us
/// amortised per update, while the drift of a Sherman-Morrison chain of 1024 steps stays at the
/// 1e-13 level relative for well-conditioned A.
pub const REFRESH_PERIOD: u32 = 1024;

/// Largest magnitude accumulated statistics may reach; beyond it sums of squares risk overflow.
pub const MAGNITUDE_LIMIT: f64 = 1e300;

#[inline(always)]
pub fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ridge {
    pub n: usize,
    /// Regularised Gram matrix A (n x n, row-major).
    pub a: Vec<f64>,
    /// A^-1, kept in step with `a`.
    pub ainv: Vec<f64>,
    pub b: Vec<f64>,
    /// theta = A^-1 b, cached because every score needs it.
    pub theta: Vec<f64>,
    pub n_updates: u64,
    pub since_refresh: u32,
    /// Upper bound on the largest diagonal entry of A (= its largest entry, A being PSD), kept
    /// incrementally so the overflow check does not read a strided diagonal on every update;
    /// recomputed exactly at each refresh.
    pub diag_bound: f64,
}

impl Ridge {
    pub fn new(n: usize, ridge: f64) -> Self {
        Ridge {
            n,
            a: linalg::scaled_identity(n, ridge),
            ainv: linalg::scaled_identity(n, 1.0 / ridge),
            b: vec![0.0; n],
            theta: vec![0.0; n],
            n_updates: 0,
            since_refresh: 0,
            diag_bound: ridge,
        }
    }

    /// Rebuild from stored `A` and `b` (used by state loading and merging).
    pub fn from_stats(n: usize, a: Vec<f64>, b: Vec<f64>, n_updates: u64) -> CoreResult<Self> {
        let mut r = Ridge {
            n,
            ainv: vec![0.0; n * n],
            a,
            b,
            theta: vec![0.0; n],
            n_updates,
            since_refresh: 0,
            diag_bound: 0.0,
        };
        r.refresh()?;
        Ok(r)
    }

    /// Fails (before anything changes) if adding entries of these magnitudes could push `A` or
    /// `b` past [`MAGNITUDE_LIMIT`]. A is positive semi-definite, so its largest entry is on the
    /// diagonal and this bound is O(n) to check.
    pub fn check_headroom(&self, add_a: f64, add_b: f64) -> CoreResult<()> {
        let bmax = max_abs(&self.b);
        let (na, nb) = (self.diag_bound + add_a, bmax + add_b);
        if na.is_finite() && nb.is_finite() && na <= MAGNITUDE_LIMIT && nb <= MAGNITUDE_LIMIT {
            Ok(())
        } else {
            Err(CoreError::NonFinite(format!(
                "update overflows: the accumulated statistics would reach |A| = {na:e}, |b| = {nb:e} (limit {MAGNITUDE_LIMIT:e}); rescale features or rewards"
            )))
        }
    }

    /// Exact recomputation of `A^-1` and `theta` from `A`.
    pub fn refresh(&mut self) -> CoreResult<()> {
        linalg::symmetrize(&mut self.a, self.n);
        let n = self.n;
        self.diag_bound = (0..n).map(|i| self.a[i * n + i]).fold(0.0f64, f64::max);
        // Assign only on success so a failed factorisation leaves the old inverse in place.
        self.ainv = linalg::spd_inverse(&self.a, self.n)?;
        linalg::matvec(&self.ainv, &self.b, &mut self.theta);
        self.since_refresh = 0;
        Ok(())
    }

    /// One observation. `x` must be finite and of length n (checked by the callers);
    /// `scratch` must have length n. Transactional: on error the statistics are unchanged.
    pub fn update(
        &mut self,
        x: &[f64],
        reward: f64,
        gamma: f64,
        ridge: f64,
        scratch: &mut [f64],
    ) -> CoreResult<()> {
        let me = self;
        crate::simd_dispatch!((me: &mut Ridge, x: &[f64], reward: f64, gamma: f64, ridge: f64, scratch: &mut [f64]) -> CoreResult<()> {
            me.update_inline(x, reward, gamma, ridge, scratch)
        })
    }

    #[inline(always)]
    fn update_inline(
        &mut self,
        x: &[f64],
        reward: f64,
        gamma: f64,
        ridge: f64,
        scratch: &mut [f64],
    ) -> CoreResult<()> {
        let n = self.n;
        let xmax = max_abs(x);
        self.check_headroom(xmax * xmax, reward.abs() * xmax)?;
        if gamma < 1.0 {
            // Discounted LinUCB: A <- gamma A + x x' + (1 - gamma) ridge I, b <- gamma b + r x.
            // The (1 - gamma) ridge I term is not rank one, so the inverse is recomputed exactly
            // (O(n^3)); plain LinUCB (gamma = 1) takes the O(n^2) path below.
            let backup = self.clone();
            for v in self.a.iter_mut() {
                *v *= gamma;
            }
            for i in 0..n {
                self.a[i * n + i] += (1.0 - gamma) * ridge;
            }
            linalg::rank_one_add(&mut self.a, x);
            for (bi, xi) in self.b.iter_mut().zip(x) {
                *bi = gamma * *bi + reward * xi;
            }
            self.n_updates += 1;
            if let Err(e) = self.refresh() {
                *self = backup;
                return Err(e);
            }
            return Ok(());
        }
        let denom = linalg::sherman_morrison_prepare(&self.ainv, x, scratch)?;
        linalg::rank_one_add(&mut self.a, x);
        self.diag_bound += xmax * xmax;
        for (bi, xi) in self.b.iter_mut().zip(x) {
            *bi += reward * xi;
        }
        self.n_updates += 1;
        self.since_refresh += 1;
        // Recursive least squares: with z = A^-1 x, theta' = theta + z (r - x.theta) / denom
        // equals (A + x x')^-1 (b + r x) in O(n) instead of an O(n^2) product; rounding drift
        // is removed by the periodic refresh below, which recomputes theta from A and b.
        let gain = (reward - linalg::dot(x, &self.theta)) / denom;
        for (t, zi) in self.theta.iter_mut().zip(scratch.iter()) {
            *t += gain * zi;
        }
        linalg::sherman_morrison_apply(&mut self.ainv, scratch, denom);
        if self.since_refresh >= REFRESH_PERIOD {
            // If the exact refresh fails (it cannot for finite input, A >= ridge I) the
            // Sherman-Morrison inverse is still a valid state, so keep it and retry next period.
            if self.refresh().is_ok() {
                return Ok(());
            }
            self.since_refresh = 0;
        }
        Ok(())
    }

    /// Adds another model's evidence: `A += A_other - ridge I`, `b += b_other`. Both sides must
    /// have been built with the same ridge; `other` must be a *delta* (statistics observed since
    /// the two diverged), otherwise shared history is counted twice.
    pub fn absorb(&mut self, other: &Ridge, ridge: f64) -> CoreResult<()> {
        let n = self.n;
        for (i, (a, o)) in self.a.iter_mut().zip(&other.a).enumerate() {
            *a += *o;
            if i / n == i % n {
                *a -= ridge;
            }
        }
        for (b, o) in self.b.iter_mut().zip(&other.b) {
            *b += *o;
        }
        self.n_updates += other.n_updates;
        self.refresh()
    }

    /// `(mean, x' A^-1 x)` for one feature vector, before the prior and alpha are applied.
    #[inline(always)]
    pub fn mean_and_var(&self, x: &[f64]) -> (f64, f64) {
        (
            linalg::dot(&self.theta, x),
            linalg::quad_form_sym(&self.ainv, x).max(0.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_updates_keep_inverse_exact() {
        let n = 6;
        let mut r = Ridge::new(n, 1.0);
        let mut scratch = vec![0.0; n];
        let mut s: u64 = 7;
        for _ in 0..200_000 {
            let x: Vec<f64> = (0..n)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
                })
                .collect();
            r.update(&x, 0.5, 1.0, 1.0, &mut scratch).unwrap();
        }
        let direct = linalg::spd_inverse(&r.a, n).unwrap();
        let scale = direct.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (got, want) in r.ainv.iter().zip(&direct) {
            assert!((got - want).abs() <= 1e-9 * scale, "{got} vs {want}");
        }
        for i in 0..n {
            for j in 0..n {
                assert_eq!(r.ainv[i * n + j], r.ainv[j * n + i]);
            }
        }
    }
}
