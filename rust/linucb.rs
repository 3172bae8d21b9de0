//! Disjoint LinUCB (Li et al., 2010): one ridge model per action.
//!
//! `score_a(x) = prior_mean + theta_a . x + alpha * sqrt(x' A_a^-1 x)`. Selecting costs
//! O(K d^2); an update touches one arm at O(d^2) (O(d^3) with a discount < 1).

use crate::error::{check_finite, check_len, CoreError, CoreResult};
use crate::learner::{removal_mapping, Config, Learner, MAX_DIM};
use crate::linalg::{self, SYM_MIN_DIM};
use crate::ridge::Ridge;
use crate::state::{Kind, Reader, Writer};

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
}

fn matrix_len(dim: usize) -> usize {
    if dim <= SYM_MIN_DIM {
        dim * dim
    } else {
        dim * (dim + 1) / 2
    }
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
        let mut me = LinUcb {
            cfg,
            dim,
            arms: (0..n_actions).map(|_| Ridge::new(dim, cfg.ridge)).collect(),
            scoring: Vec::new(),
        };
        me.rebuild_scoring();
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
    }

    fn rebuild_scoring(&mut self) {
        self.scoring = vec![0.0; self.arms.len() * self.block_len()];
        for a in 0..self.arms.len() {
            self.sync_arm(a);
        }
    }

    /// Appends `count` fresh actions (prior only); returns the index of the first new one.
    pub fn add_actions(&mut self, count: usize) -> CoreResult<usize> {
        if self.arms.len() + count > MAX_DIM {
            return Err(CoreError::Config(format!(
                "too many actions (limit {MAX_DIM})"
            )));
        }
        let first = self.arms.len();
        for _ in 0..count {
            self.arms.push(Ridge::new(self.dim, self.cfg.ridge));
        }
        self.rebuild_scoring();
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
        self.rebuild_scoring();
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
        self.rebuild_scoring();
        Ok(())
    }

    pub fn write_payload(&self, w: &mut Writer) {
        w.usize(self.arms.len());
        w.usize(self.dim);
        self.cfg.write(w);
        for arm in &self.arms {
            w.u64(arm.n_updates);
            w.f64s(&arm.a);
            w.f64s(&arm.b);
        }
    }

    pub fn read_payload(r: &mut Reader) -> CoreResult<Self> {
        let k = r.dim("n_actions", MAX_DIM)?;
        let d = r.dim("dim", 4096)?;
        let cfg = Config::read(r)?;
        // Each arm stores n_updates, A (d x d) and b (d) with their length prefixes.
        let per_arm = 8 * (1 + 1 + (d as u128) * (d as u128) + 1 + d as u128);
        r.expect_at_least("the arms", per_arm * k as u128)?;
        let mut me = LinUcb::new(k, d, cfg).map_err(|e| CoreError::State(e.to_string()))?;
        for arm in me.arms.iter_mut() {
            let n_updates = r.u64()?;
            let a = r.f64s("A", d * d)?;
            let b = r.f64s("b", d)?;
            *arm = Ridge::from_stats(d, a, b, n_updates)
                .map_err(|e| CoreError::State(format!("arm matrix: {e}")))?;
        }
        me.rebuild_scoring();
        Ok(me)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write_payload(&mut w);
        w.finish(Kind::LinUcb)
    }

    pub fn from_bytes(bytes: &[u8]) -> CoreResult<Self> {
        let mut r = Reader::open(bytes, Kind::LinUcb)?;
        let me = Self::read_payload(&mut r)?;
        r.finish()?;
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

    fn ridge_key(&self, action: usize) -> usize {
        action
    }
    fn ridge(&self, key: usize) -> &Ridge {
        &self.arms[key]
    }
    fn feature_max(&self, _action: usize, x: &[f64]) -> f64 {
        crate::ridge::max_abs(x)
    }

    fn apply_update(&mut self, action: usize, x: &[f64], reward: f64) -> CoreResult<()> {
        check_len("x", x.len(), self.dim)?;
        check_finite("x", x)?;
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
