//! Disjoint LinUCB (Li et al., 2010): one ridge model per action.
//!
//! `score_a(x) = prior_mean + theta_a . x + alpha * sqrt(x' A_a^-1 x)`. Selecting costs
//! O(K d^2); an update touches one arm at O(d^2) (O(d^3) with a discount < 1).
//!
//! Exact selection through a float32 screen (d > `SYM_MIN_DIM`). At large K x d `select` is
//! bound by memory bandwidth: it streams every arm's A^-1. `select` therefore reads a float32
//! copy of the inverses (8 x 8 blocks on and above the diagonal: about half the bytes, and
//! whole-register work with no per-row remainders) and computes, per arm, an interval that
//! provably holds the float64 score `scores` reports: the rounding error of `x' M x` (float32
//! here, and float64 in `scores`) is at most `gamma * sum_ij |M_ij| |x_i| |x_j|`, with `gamma`
//! from the length of the longest chain of operations (taken 1.5x for safety) plus an absolute
//! term for float32 underflow; the absolute sum is accumulated in the same pass.
//! Only arms whose upper bound reaches the best lower bound are re-scored in float64, so the
//! index returned is exactly the argmax of `scores` (ties to the lowest index), usually after
//! one or two exact re-scores (all of them while arms are still identical, e.g. untouched). Non-
//! finite bounds fall back to the plain float64 path. The copy costs about 55% more memory for
//! the inverses and is refreshed with each arm update (O(d^2), like the update itself).

use crate::error::{check_len, CoreError, CoreResult};
use crate::learner::{
    check_features, check_state_bytes, exact_select_row, removal_mapping, Config, Learner, MAX_DIM,
};
use crate::linalg::{self, SYM_MIN_DIM};
use crate::ridge::Ridge;
use crate::state::{Kind, Reader, Record, Writer};

#[derive(Debug, Clone, PartialEq)]
pub struct LinUcb {
    pub cfg: Config,
    pub dim: usize,
    /// Per-arm statistics (A, A^-1, b, theta). Mutate only through the methods here: they keep
    /// `scoring` in sync.
    pub arms: Vec<Ridge>,
    /// Everything scoring reads, for all arms in one contiguous buffer: per arm A^-1 (packed
    /// upper triangle for d > SYM_MIN_DIM, full rows below) followed by theta. Selecting at
    /// large K x d is bound by memory bandwidth; one linear stream of half the bytes lets the
    /// hardware prefetcher run ahead instead of restarting at every arm's separate allocation.
    scoring: Vec<f64>,
    /// The float32 screen (empty when d <= SYM_MIN_DIM): per arm A^-1 in `shadow_len` layout.
    shadow: Vec<f32>,
}

fn matrix_len(dim: usize) -> usize {
    if dim <= SYM_MIN_DIM {
        dim * dim
    } else {
        dim * (dim + 1) / 2
    }
}

/// Bytes a learner of `k` arms of dimension `d` keeps: per arm the ridge model, its scoring
/// block and (d > SYM_MIN_DIM) its float32 screen.
pub fn state_bytes(k: usize, d: usize) -> u128 {
    let per_arm = Ridge::bytes(d)
        + 8 * (matrix_len(d) as u128 + d as u128)
        + if d > SYM_MIN_DIM {
            4 * shadow_len(d) as u128
        } else {
            0
        };
    per_arm * k as u128
}

/// Lanes of the float32 screen's kernel (one AVX register).
const LANES: usize = 8;

/// The float32 screen's layout: A^-1 cut into `LANES x LANES` blocks, the blocks on and above
/// the diagonal stored one after another (row-major inside), off-diagonal blocks doubled (exact
/// in floating point), padding zero: `x' M x = sum_{I <= J} x_I' B_IJ x_J`.
fn shadow_len(dim: usize) -> usize {
    let nb = dim.div_ceil(LANES);
    nb * (nb + 1) / 2 * LANES * LANES
}

/// `(x' M x, |x|' |M| |x|)` in float32 from the `shadow_len` layout; `x` and `ax = |x|` are
/// zero-padded to a multiple of `LANES`. Block rows alternate between four accumulator pairs
/// so that consecutive multiply-adds do not wait on each other.
#[inline(always)]
fn shadow_quad32(mat: &[f32], x: &[f32], ax: &[f32]) -> (f32, f32) {
    let nb = x.len() / LANES;
    let (mut v, mut t) = ([[0.0f32; LANES]; 4], [[0.0f32; LANES]; 4]);
    let mut off = 0;
    for bi in 0..nb {
        let (xi, ai) = (
            &x[bi * LANES..(bi + 1) * LANES],
            &ax[bi * LANES..(bi + 1) * LANES],
        );
        for bj in bi..nb {
            let (xj, aj) = (
                &x[bj * LANES..(bj + 1) * LANES],
                &ax[bj * LANES..(bj + 1) * LANES],
            );
            let block = &mat[off..off + LANES * LANES];
            for r in 0..LANES {
                let row = &block[r * LANES..(r + 1) * LANES];
                let (xr, ar) = (xi[r], ai[r]);
                let (vs, ts) = (&mut v[r & 3], &mut t[r & 3]);
                for c in 0..LANES {
                    vs[c] += row[c] * (xr * xj[c]);
                    ts[c] += row[c].abs() * (ar * aj[c]);
                }
            }
            off += LANES * LANES;
        }
    }
    let sum = |a: [[f32; LANES]; 4]| {
        let mut s = [0.0f32; LANES];
        for set in a {
            for c in 0..LANES {
                s[c] += set[c];
            }
        }
        ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]))
    };
    (sum(v), sum(t))
}

/// `x' M x` from the layout of `matrix_len` (packed upper triangle or full rows).
#[inline(always)]
fn scoring_quad(mat: &[f64], x: &[f64]) -> f64 {
    let n = x.len();
    if n <= SYM_MIN_DIM {
        return linalg::quad_form(mat, x);
    }
    let mut s = 0.0;
    let mut off = 0;
    for i in 0..n {
        let seg = &mat[off..off + (n - i)];
        let xi = x[i];
        if xi != 0.0 {
            s += xi * (seg[0] * xi + 2.0 * linalg::dot(&seg[1..], &x[i + 1..]));
        }
        off += n - i;
    }
    s
}

impl LinUcb {
    pub fn new(n_actions: usize, dim: usize, cfg: Config) -> CoreResult<Self> {
        cfg.validate()?;
        if n_actions == 0 || n_actions > MAX_DIM {
            return Err(CoreError::Config(format!(
                "n_actions must be in 1..={MAX_DIM}, got {n_actions}"
            )));
        }
        if dim == 0 || dim > 4096 {
            return Err(CoreError::Config(format!(
                "dim must be in 1..=4096, got {dim}"
            )));
        }
        check_state_bytes(
            &format!("LinUCB({n_actions}, {dim})"),
            state_bytes(n_actions, dim),
        )?;
        let mut arms = Vec::with_capacity(n_actions);
        for _ in 0..n_actions {
            arms.push(Ridge::new(dim, cfg.ridge)?);
        }
        let mut me = LinUcb {
            cfg,
            dim,
            arms,
            scoring: Vec::new(),
            shadow: Vec::new(),
        };
        me.rebuild_scoring()?;
        Ok(me)
    }

    fn block_len(&self) -> usize {
        matrix_len(self.dim) + self.dim
    }

    /// Copies one arm's A^-1 and theta into the scoring buffer.
    fn sync_arm(&mut self, a: usize) {
        let (d, ml, bl) = (self.dim, matrix_len(self.dim), self.block_len());
        let arm = &self.arms[a];
        let block = &mut self.scoring[a * bl..(a + 1) * bl];
        if d <= SYM_MIN_DIM {
            block[..ml].copy_from_slice(&arm.ainv);
        } else {
            let mut off = 0;
            for i in 0..d {
                block[off..off + d - i].copy_from_slice(&arm.ainv[i * d + i..(i + 1) * d]);
                off += d - i;
            }
        }
        block[ml..].copy_from_slice(&arm.theta);
        if d > SYM_MIN_DIM {
            let (nb, sl) = (d.div_ceil(LANES), shadow_len(d));
            let shadow = &mut self.shadow[a * sl..(a + 1) * sl];
            let mut off = 0;
            for bi in 0..nb {
                for bj in bi..nb {
                    let w = if bi == bj { 1.0 } else { 2.0 };
                    for r in 0..LANES {
                        for c in 0..LANES {
                            // the upper triangle, which the float64 path reads
                            let (i, j) = (bi * LANES + r, bj * LANES + c);
                            shadow[off + r * LANES + c] = if i < d && j < d {
                                (w * arm.ainv[i.min(j) * d + i.max(j)]) as f32
                            } else {
                                0.0
                            };
                        }
                    }
                    off += LANES * LANES;
                }
            }
        }
    }

    fn rebuild_scoring(&mut self) -> CoreResult<()> {
        let (k, d) = (self.arms.len(), self.dim);
        // Free the old buffers first so the peak is one copy, then allocate fallibly.
        self.scoring = Vec::new();
        self.shadow = Vec::new();
        self.scoring = crate::linalg::try_filled(k * self.block_len(), 0.0)?;
        if d > SYM_MIN_DIM {
            self.shadow = crate::linalg::try_filled(k * shadow_len(d), 0.0f32)?;
        }
        for a in 0..k {
            self.sync_arm(a);
        }
        Ok(())
    }

    /// `screened_select` compiled for the running CPU.
    fn screened(
        &self,
        x: &[f64],
        mask: Option<&[bool]>,
        hi: &mut [f64],
    ) -> Option<CoreResult<usize>> {
        let me = self;
        crate::simd_dispatch!((me: &LinUcb, x: &[f64], mask: Option<&[bool]>, hi: &mut [f64]) -> Option<CoreResult<usize>> {
            me.screened_select(x, mask, hi)
        })
    }

    /// The float32-screened exact argmax (module docs); `None` = bounds not finite, use the
    /// plain path. `hi` is scratch of length K (the arms' upper bounds).
    #[inline(always)]
    fn screened_select(
        &self,
        x: &[f64],
        mask: Option<&[bool]>,
        hi: &mut [f64],
    ) -> Option<CoreResult<usize>> {
        let (d, k) = (self.dim, self.arms.len());
        let (ml, bl) = (matrix_len(d), self.block_len());
        let xinf = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if !(xinf > 0.0 && xinf.is_finite()) {
            return None;
        }
        // x scaled to max |x_i| = 1 keeps float32 products away from underflow and overflow.
        let mut x32: Vec<f32> = x.iter().map(|v| (v / xinf) as f32).collect();
        x32.resize(d.div_ceil(LANES) * LANES, 0.0);
        let ax32: Vec<f32> = x32.iter().map(|v| v.abs()).collect();
        let sl = shadow_len(d);
        let scale2 = xinf * xinf;
        // Relative rounding, taken 1.5x: in float32 the longest chain is one accumulator lane
        // (nb (nb + 1) block-row additions) plus conversions, products and the final
        // reduction (< 24); the float64 path's is below 2d + 8. The absolute sum has the same
        // relative error (its terms are >= 0). Underflow: each float32 operation may lose up
        // to 2^-150 absolutely, and a product x_i x_j that underflows is then multiplied by
        // |M_ij| <= 1 / ridge (A >= ridge I holds under discounting and merging too).
        let nb = d.div_ceil(LANES);
        let (u32_, u64_) = (f64::from(f32::EPSILON) / 2.0, f64::EPSILON / 2.0);
        let gamma = 1.5 * ((nb * (nb + 1) + 24) as f64 * u32_ + (2 * d + 8) as f64 * u64_);
        let floor = 8.0 * (3 * sl + 64) as f64 * (1.0 + 1.0 / self.cfg.ridge) * 2f64.powi(-150);
        let (prior, alpha) = (self.cfg.prior_mean, self.cfg.alpha);
        let allowed = |a: usize| mask.is_none_or(|m| m[a]);
        let mut best_lo = f64::NEG_INFINITY;
        let mut any = false;
        for (a, hi_a) in hi.iter_mut().enumerate().take(k) {
            if !allowed(a) {
                continue;
            }
            any = true;
            let theta = &self.scoring[a * bl + ml..(a + 1) * bl];
            let mean = prior + linalg::dot(theta, x);
            let (q, abs) = shadow_quad32(&self.shadow[a * sl..(a + 1) * sl], &x32, &ax32);
            let (q, abs) = (f64::from(q), f64::from(abs));
            let err = gamma * abs * (1.0 + 2.0 * gamma) + floor;
            let (qlo, qhi) = (((q - err) * scale2).max(0.0), ((q + err) * scale2).max(0.0));
            let (l, h) = (mean + alpha * qlo.sqrt(), mean + alpha * qhi.sqrt());
            if !(l.is_finite() && h.is_finite()) {
                return None;
            }
            *hi_a = h;
            best_lo = best_lo.max(l);
        }
        if !any {
            return Some(Err(CoreError::AllMasked));
        }
        // Exact float64 scores, computed as `scores_into` does, for the arms that may win.
        let mut best: Option<(usize, f64)> = None;
        for (a, &h) in hi.iter().enumerate().take(k) {
            if !allowed(a) || h < best_lo {
                continue;
            }
            let (mat, theta) = self.scoring[a * bl..(a + 1) * bl].split_at(ml);
            let score =
                (prior + linalg::dot(theta, x)) + alpha * scoring_quad(mat, x).max(0.0).sqrt();
            if !score.is_finite() {
                return None;
            }
            match best {
                Some((_, b)) if score <= b => {}
                _ => best = Some((a, score)),
            }
        }
        best.map(|(a, _)| Ok(a))
    }

    /// Appends `count` fresh actions (prior only); returns the index of the first new one.
    pub fn add_actions(&mut self, count: usize) -> CoreResult<usize> {
        if self.arms.len() + count > MAX_DIM {
            return Err(CoreError::Config(format!(
                "too many actions (limit {MAX_DIM})"
            )));
        }
        let first = self.arms.len();
        check_state_bytes(
            &format!("LinUCB({}, {})", first + count, self.dim),
            state_bytes(first + count, self.dim),
        )?;
        let mut fresh = Vec::new();
        fresh
            .try_reserve_exact(count)
            .map_err(|e| CoreError::Memory(e.to_string()))?;
        for _ in 0..count {
            fresh.push(Ridge::new(self.dim, self.cfg.ridge)?);
        }
        self.arms.extend(fresh);
        if let Err(e) = self.rebuild_scoring() {
            self.arms.truncate(first);
            self.rebuild_scoring()?;
            return Err(e);
        }
        Ok(first)
    }

    /// Removes actions, keeping the others' statistics; returns old -> new index (-1 = removed).
    pub fn remove_actions(&mut self, indices: &[i64]) -> CoreResult<Vec<i64>> {
        let mapping = removal_mapping(self.arms.len(), indices)?;
        let mut i = 0;
        self.arms.retain(|_| {
            let keep = mapping[i] >= 0;
            i += 1;
            keep
        });
        self.rebuild_scoring()?;
        Ok(mapping)
    }

    pub fn theta(&self, action: usize) -> Vec<f64> {
        self.arms[action].theta.clone()
    }

    /// Adds a delta learner's evidence (see `Ridge::absorb`).
    pub fn absorb(&mut self, other: &LinUcb) -> CoreResult<()> {
        if other.dim != self.dim || other.arms.len() != self.arms.len() {
            return Err(CoreError::Shape(format!(
                "cannot merge a ({}, {}) learner into a ({}, {}) one",
                other.arms.len(),
                other.dim,
                self.arms.len(),
                self.dim
            )));
        }
        let mut merged = self.arms.clone();
        for (m, o) in merged.iter_mut().zip(&other.arms) {
            m.absorb(o, self.cfg.ridge)?;
        }
        self.arms = merged;
        self.rebuild_scoring()
    }
}

impl Record for LinUcb {
    const KIND: Kind = Kind::LinUcb;

    fn write_payload(&self, w: &mut Writer) {
        w.usize(self.arms.len());
        w.usize(self.dim);
        self.cfg.write(w);
        for arm in &self.arms {
            arm.write_stats(w);
        }
    }

    fn read_payload(r: &mut Reader) -> CoreResult<Self> {
        let k = r.dim("n_actions", MAX_DIM)?;
        let d = r.dim("dim", 4096)?;
        let cfg = Config::read(r)?;
        // Each arm stores n_updates, A (d x d) and b (d) with their length prefixes.
        let per_arm = 8 * (1 + 1 + (d as u128) * (d as u128) + 1 + d as u128);
        r.expect_at_least("the arms", per_arm * k as u128)?;
        let mut me = LinUcb::new(k, d, cfg).map_err(|e| e.loading(""))?;
        for arm in me.arms.iter_mut() {
            *arm = Ridge::read_stats(r, d, "arm matrix")?;
        }
        me.rebuild_scoring()?;
        Ok(me)
    }
}

impl Learner for LinUcb {
    fn n_actions(&self) -> usize {
        self.arms.len()
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn n_updates(&self) -> u64 {
        self.arms
            .iter()
            .fold(0u64, |n, arm| n.saturating_add(arm.n_updates))
    }

    fn scores_into(&self, x: &[f64], mean: &mut [f64], bonus: &mut [f64]) {
        let me = self;
        crate::simd_dispatch!((me: &LinUcb, x: &[f64], mean: &mut [f64], bonus: &mut [f64]) -> () {
            let ml = matrix_len(me.dim);
            let blocks = me.scoring.chunks_exact(ml + me.dim);
            for ((block, m), b) in blocks.zip(mean.iter_mut()).zip(bonus.iter_mut()) {
                let (mat, theta) = block.split_at(ml);
                *m = me.cfg.prior_mean + linalg::dot(theta, x);
                *b = me.cfg.alpha * scoring_quad(mat, x).max(0.0).sqrt();
            }
        })
    }

    fn select_row(
        &self,
        x: &[f64],
        mask: Option<&[bool]>,
        mean: &mut [f64],
        bonus: &mut [f64],
    ) -> CoreResult<usize> {
        if self.shadow.is_empty() || self.cfg.alpha == 0.0 || self.arms.len() < 2 {
            return exact_select_row(self, x, mask, mean, bonus);
        }
        match self.screened(x, mask, bonus) {
            Some(r) => r,
            None => exact_select_row(self, x, mask, mean, bonus),
        }
    }

    fn ridge_key(&self, action: usize) -> usize {
        action
    }
    fn ridge(&self, key: usize) -> &Ridge {
        &self.arms[key]
    }
    fn restore_ridge(&mut self, key: usize, ridge: Ridge) {
        if let Some(arm) = self.arms.get_mut(key) {
            *arm = ridge;
            self.sync_arm(key);
        }
    }
    fn feature_max(&self, _action: usize, x: &[f64]) -> f64 {
        crate::ridge::max_abs(x)
    }

    fn apply_update(&mut self, action: usize, x: &[f64], reward: f64) -> CoreResult<()> {
        check_len("x", x.len(), self.dim)?;
        check_features("x", x)?;
        let cfg = self.cfg;
        let n_actions = self.arms.len();
        let arm = self.arms.get_mut(action).ok_or(CoreError::UnknownAction {
            action: action as i64,
            n_actions,
        })?;
        let mut scratch = vec![0.0; x.len()];
        arm.update(
            x,
            reward - cfg.prior_mean,
            cfg.discount,
            cfg.ridge,
            &mut scratch,
        )?;
        self.sync_arm(action);
        Ok(())
    }
}
