//! Disjoint LinUCB (Li et al., 2010): one ridge model per action.
//!
//! `score_a(x) = prior_mean + theta_a . x + alpha * sqrt(x' A_a^-1 x)`. Selecting costs
//! O(K d^2); an update touches one arm at O(d^2) (O(d^3) with a discount < 1).

use crate::error::{check_finite, check_len, CoreError, CoreResult};
use crate::learner::{removal_mapping, Config, Learner, MAX_DIM};
use crate::ridge::Ridge;
use crate::state::{Kind, Reader, Writer};

#[derive(Debug, Clone, PartialEq)]
pub struct LinUcb {
    pub cfg: Config,
    pub dim: usize,
    pub arms: Vec<Ridge>,
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
        Ok(LinUcb {
            cfg,
            dim,
            arms: (0..n_actions).map(|_| Ridge::new(dim, cfg.ridge)).collect(),
        })
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
        let mut me = LinUcb::new(k, d, cfg).map_err(|e| CoreError::State(e.to_string()))?;
        for arm in me.arms.iter_mut() {
            let n_updates = r.u64()?;
            let a = r.f64s("A", d * d)?;
            let b = r.f64s("b", d)?;
            *arm = Ridge::from_stats(d, a, b, n_updates)
                .map_err(|e| CoreError::State(format!("arm matrix: {e}")))?;
        }
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
            for ((arm, m), b) in me.arms.iter().zip(mean.iter_mut()).zip(bonus.iter_mut()) {
                let (mu, var) = arm.mean_and_var(x);
                *m = me.cfg.prior_mean + mu;
                *b = me.cfg.alpha * var.sqrt();
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
        )
    }
}
