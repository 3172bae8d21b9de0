//! Shared LinUCB over joint request x action features (one linear model for every action).
//!
//! `phi(x, psi_a) = kron(u, v_a)` with `u = [1, x]` (length d+1) and `v_a = [1, psi_a]`
//! (length p+1), so `D = (d+1)(p+1)` and
//! `score_a = prior_mean + theta . phi + alpha * sqrt(phi' A^-1 phi)`.
//!
//! Scoring exploits the Kronecker structure instead of forming K vectors of length D. With
//! `Theta` the (d+1) x (p+1) reshape of theta and `M = A^-1` indexed as `M[(i,j),(k,l)]`:
//! * mean:  `theta . phi_a = (u' Theta) . v_a = w . v_a`, where `w = u' Theta` is computed once
//!   per request in O(D);
//! * bonus: `phi_a' M phi_a = v_a' G v_a`, where `G[j,l] = sum_{i,k} u_i u_k M[(i,j),(k,l)]`
//!   is a (p+1) x (p+1) matrix computed once per request in O(D^2), reading only the block
//!   upper triangle of the symmetric M (half of it).
//!
//! Selecting over K actions therefore costs **O(D^2 + K p^2)** = O(d^2 p^2 + K p^2) instead of
//! the naive O(K D^2) = O(K d^2 p^2); at d = 16, p = 8, K = 1024 that is ~107k multiply-adds
//! instead of ~24M. An update is one Sherman-Morrison step on the D x D inverse, O(D^2).

use crate::error::{check_len, CoreError, CoreResult};
use crate::learner::{
    check_features, check_state_bytes, removal_mapping, Config, Learner, MAX_DIM,
};
use crate::linalg;
use crate::ridge::Ridge;
use crate::state::{Kind, Reader, Record, Writer};

/// `kron([1, x], [1, psi_a])`.
pub fn kron_phi(x: &[f64], psi_a: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity((x.len() + 1) * (psi_a.len() + 1));
    for ui in std::iter::once(1.0).chain(x.iter().copied()) {
        out.push(ui);
        out.extend(psi_a.iter().map(|v| ui * v));
    }
    out
}

/// Joint dimension limit: the D x D inverse must stay within a few hundred MB.
pub const MAX_JOINT_DIM: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct SharedLinUcb {
    pub cfg: Config,
    /// Request-feature dimension d.
    pub dim: usize,
    /// Action-feature dimension p.
    pub p: usize,
    /// Number of actions K (kept explicitly: with p = 0 psi is empty).
    pub k: usize,
    /// Action features psi, (K, p) row-major.
    pub psi: Vec<f64>,
    pub model: Ridge,
    /// Ridge multiplier on the interaction coefficients of the model the *means* come from
    /// (`crate::evidence`); 1: the means come from `model` itself.
    pub mean_mult: f64,
    /// With `mean_mult > 1`: the same statistics as `model` with that stronger ridge on the
    /// interactions, kept in step with it. Scores take their means from it and their
    /// exploration bonus from `model`: the estimate shrinks what the data do not support, the
    /// confidence width stays that of the weaker prior, so shrinkage chosen from little data
    /// cannot stop the learner from exploring the interactions that would overturn it.
    pub mean_model: Option<Box<Ridge>>,
}

impl SharedLinUcb {
    pub fn new(
        psi: Vec<f64>,
        n_actions: usize,
        p: usize,
        dim: usize,
        cfg: Config,
    ) -> CoreResult<Self> {
        cfg.validate()?;
        if n_actions == 0 || n_actions > MAX_DIM {
            return Err(CoreError::Config(format!(
                "the number of actions must be in 1..={MAX_DIM}, got {n_actions}"
            )));
        }
        if dim == 0 {
            return Err(CoreError::Config("dim must be >= 1".into()));
        }
        let joint = (dim + 1)
            .checked_mul(p + 1)
            .filter(|j| *j <= MAX_JOINT_DIM)
            .ok_or_else(|| {
                CoreError::Config(format!(
                    "joint dimension (dim + 1) * (p + 1) = ({} * {}) exceeds {MAX_JOINT_DIM}",
                    dim + 1,
                    p + 1
                ))
            })?;
        check_len("action_features", psi.len(), n_actions * p)?;
        check_features("action_features", &psi)?;
        check_state_bytes(
            &format!("SharedLinUCB(joint dimension {joint}, {n_actions} actions)"),
            Ridge::bytes(joint) + 8 * psi.len() as u128,
        )?;
        Ok(SharedLinUcb {
            cfg,
            dim,
            p,
            k: n_actions,
            psi,
            model: Ridge::new(joint, cfg.ridge)?,
            mean_mult: 1.0,
            mean_model: None,
        })
    }

    /// Takes the means from a model with ridge `cfg.ridge * m` on the interaction coefficients
    /// (`m >= 1`; 1 drops the second model). Transactional.
    pub fn set_mean_mult(&mut self, m: f64) -> CoreResult<()> {
        crate::evidence::check_mult(m)?;
        if m == 1.0 {
            self.mean_model = None;
        } else {
            let coords = crate::evidence::interaction_coords(self.dim, self.p);
            let mut mm = self.model.try_clone()?;
            crate::evidence::set_mult(&mut mm, &coords, self.cfg.ridge, 1.0, m)?;
            self.mean_model = Some(Box::new(mm));
        }
        self.mean_mult = m;
        Ok(())
    }

    pub fn joint_dim(&self) -> usize {
        (self.dim + 1) * (self.p + 1)
    }

    /// The joint feature vector `kron([1, x], [1, psi_a])` (used by updates and by tests).
    pub fn phi(&self, x: &[f64], action: usize) -> Vec<f64> {
        kron_phi(x, &self.psi[action * self.p..(action + 1) * self.p])
    }

    /// Update with explicit action features (used for a decision whose action was removed
    /// between selection and feedback: the shared model still learns from it).
    pub fn update_features(&mut self, psi_a: &[f64], x: &[f64], reward: f64) -> CoreResult<()> {
        self.update_features_weighted(psi_a, x, reward, 1.0)
    }

    /// `update_features` counted `weight` times (any weight > 0): `A += w phi phi'`,
    /// `b += w (reward - prior_mean) phi`, done as one update of `sqrt(w) phi`.
    pub fn update_features_weighted(
        &mut self,
        psi_a: &[f64],
        x: &[f64],
        reward: f64,
        weight: f64,
    ) -> CoreResult<()> {
        check_len("x", x.len(), self.dim)?;
        check_features("x", x)?;
        check_len("action features", psi_a.len(), self.p)?;
        check_features("action features", psi_a)?;
        crate::error::check_finite_scalar("reward", reward)?;
        let mut phi = kron_phi(x, psi_a);
        let sw = weight.sqrt();
        if weight != 1.0 {
            phi.iter_mut().for_each(|v| *v *= sw);
        }
        self.update_phi(&phi, (reward - self.cfg.prior_mean) * sw)
    }

    /// One update of both models with joint features `phi` and centred reward `y`; if the
    /// second fails, the first is rolled back, so a refused update changes nothing.
    fn update_phi(&mut self, phi: &[f64], y: f64) -> CoreResult<()> {
        let mut scratch = vec![0.0; phi.len()];
        let cfg = self.cfg;
        let Some(mm) = self.mean_model.as_mut() else {
            return self
                .model
                .update(phi, y, cfg.discount, cfg.ridge, &mut scratch);
        };
        let backup = self.model.try_clone()?;
        self.model
            .update(phi, y, cfg.discount, cfg.ridge, &mut scratch)?;
        if let Err(e) = mm.update(phi, y, cfg.discount, cfg.ridge, &mut scratch) {
            self.model = backup;
            return Err(e);
        }
        Ok(())
    }

    /// Appends actions with features `psi_new` ((count, p) row-major); returns the first new index.
    /// What was learned is kept: theta lives on features, not on action indices.
    pub fn add_actions(&mut self, psi_new: &[f64]) -> CoreResult<usize> {
        if self.p == 0 {
            return Err(CoreError::Config(
                "cannot add actions to a learner with p = 0 action features".into(),
            ));
        }
        if psi_new.len() % self.p != 0 {
            return Err(CoreError::Shape(format!(
                "new action features have {} values, not a multiple of p = {}",
                psi_new.len(),
                self.p
            )));
        }
        check_features("action_features", psi_new)?;
        let count = psi_new.len() / self.p;
        if self.n_actions() + count > MAX_DIM {
            return Err(CoreError::Config(format!(
                "too many actions (limit {MAX_DIM})"
            )));
        }
        check_state_bytes(
            &format!(
                "SharedLinUCB(joint dimension {}, {} actions)",
                self.joint_dim(),
                self.n_actions() + count
            ),
            Ridge::bytes(self.joint_dim()) + 8 * (self.psi.len() + psi_new.len()) as u128,
        )?;
        self.psi
            .try_reserve(psi_new.len())
            .map_err(|e| CoreError::Memory(e.to_string()))?;
        let first = self.n_actions();
        self.psi.extend_from_slice(psi_new);
        self.k += count;
        Ok(first)
    }

    /// Removes actions; returns old -> new index (-1 = removed).
    pub fn remove_actions(&mut self, indices: &[i64]) -> CoreResult<Vec<i64>> {
        let mapping = removal_mapping(self.n_actions(), indices)?;
        let p = self.p;
        let mut psi = Vec::with_capacity(self.psi.len());
        for (a, &m) in mapping.iter().enumerate() {
            if m >= 0 {
                psi.extend_from_slice(&self.psi[a * p..(a + 1) * p]);
            }
        }
        self.psi = psi;
        self.k = mapping.iter().filter(|m| **m >= 0).count();
        Ok(mapping)
    }

    pub fn absorb(&mut self, other: &SharedLinUcb) -> CoreResult<()> {
        if other.dim != self.dim || other.p != self.p {
            return Err(CoreError::Shape(format!(
                "cannot merge a (d={}, p={}) learner into a (d={}, p={}) one",
                other.dim, other.p, self.dim, self.p
            )));
        }
        let mut merged = self.model.clone();
        merged.absorb(&other.model, self.cfg.ridge)?;
        let old = std::mem::replace(&mut self.model, merged);
        if let Err(e) = self.set_mean_mult(self.mean_mult) {
            self.model = old;
            return Err(e);
        }
        Ok(())
    }
}

impl Record for SharedLinUcb {
    const KIND: Kind = Kind::SharedLinUcb;

    fn write_payload(&self, w: &mut Writer) {
        w.usize(self.n_actions());
        w.usize(self.dim);
        w.usize(self.p);
        self.cfg.write(w);
        w.f64s(&self.psi);
        self.model.write_stats(w);
    }

    fn read_payload(r: &mut Reader) -> CoreResult<Self> {
        let k = r.dim("n_actions", MAX_DIM)?;
        let d = r.dim("dim", MAX_JOINT_DIM)?;
        let p = r.dim("p", MAX_JOINT_DIM)?;
        let cfg = Config::read(r)?;
        let joint = ((d as u128) + 1) * ((p as u128) + 1);
        r.expect_at_least("the model", 8 * (joint * joint + joint))?;
        let psi = r.f64s("action_features", k * p)?;
        let mut me = SharedLinUcb::new(psi, k, p, d, cfg).map_err(|e| e.loading(""))?;
        me.model = Ridge::read_stats(r, me.joint_dim(), "model matrix")?;
        Ok(me)
    }
}

impl Learner for SharedLinUcb {
    fn n_actions(&self) -> usize {
        self.k
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn n_updates(&self) -> u64 {
        self.model.n_updates
    }

    fn scores_into(&self, x: &[f64], mean: &mut [f64], bonus: &mut [f64]) {
        let me = self;
        crate::simd_dispatch!((me: &SharedLinUcb, x: &[f64], mean: &mut [f64], bonus: &mut [f64]) -> () {
            me.scores_inline(x, mean, bonus)
        })
    }

    fn ridge_key(&self, _action: usize) -> usize {
        0
    }
    fn ridge(&self, _key: usize) -> &Ridge {
        &self.model
    }
    fn restore_ridge(&mut self, _key: usize, ridge: Ridge) {
        self.model = ridge;
    }
    fn feature_max(&self, action: usize, x: &[f64]) -> f64 {
        // max |u_i v_j| = max|u| * max|v| with u = [1, x], v = [1, psi_a].
        let psi_a = &self.psi[action * self.p..(action + 1) * self.p];
        crate::ridge::max_abs(x).max(1.0) * crate::ridge::max_abs(psi_a).max(1.0)
    }

    fn apply_update(&mut self, action: usize, x: &[f64], reward: f64) -> CoreResult<()> {
        check_len("x", x.len(), self.dim)?;
        check_features("x", x)?;
        if action >= self.n_actions() {
            return Err(CoreError::UnknownAction {
                action: action as i64,
                n_actions: self.n_actions(),
            });
        }
        let phi = self.phi(x, action);
        self.update_phi(&phi, reward - self.cfg.prior_mean)
    }
}

/// `y[l] = sum_{k >= from} u_k row[k pp + l]` for `l < pp`, any `pp`.
#[inline(always)]
fn blocks_after_any(row: &[f64], u: &[f64], from: usize, pp: usize, y: &mut [f64]) {
    y.iter_mut().for_each(|v| *v = 0.0);
    for (k, &uk) in u.iter().enumerate().skip(from) {
        if uk != 0.0 {
            for (yl, mv) in y.iter_mut().zip(&row[k * pp..(k + 1) * pp]) {
                *yl += uk * mv;
            }
        }
    }
}

/// `blocks_after_any` for `W - 4 < pp <= W`: every block is read as `W` values (the lanes past
/// `pp` belong to the next block and are discarded), so each step is a fixed number of whole
/// registers with no remainder loop, and two accumulators alternate so consecutive steps do not
/// wait on each other. Per (row, block) work was dominated by loop overhead at `pp = 15`.
#[inline(always)]
fn blocks_after<const W: usize>(row: &[f64], u: &[f64], from: usize, pp: usize, y: &mut [f64]) {
    let (mut ya, mut yb) = ([0.0f64; W], [0.0f64; W]);
    let du = u.len();
    let mut k = from;
    // whole-width reads stay inside the row except (possibly) for the last block
    let full = du.min(row.len().saturating_sub(W) / pp + 1);
    while k + 1 < full {
        let (ua, ub) = (u[k], u[k + 1]);
        let (ca, cb) = (
            &row[k * pp..k * pp + W],
            &row[(k + 1) * pp..(k + 1) * pp + W],
        );
        for l in 0..W {
            ya[l] += ua * ca[l];
            yb[l] += ub * cb[l];
        }
        k += 2;
    }
    while k < du {
        let uk = u[k];
        for (l, mv) in row[k * pp..(k + 1) * pp].iter().enumerate() {
            ya[l] += uk * mv;
        }
        k += 1;
    }
    for (l, yl) in y.iter_mut().enumerate() {
        *yl = ya[l] + yb[l];
    }
}

impl SharedLinUcb {
    #[inline(always)]
    fn scores_inline(&self, x: &[f64], mean: &mut [f64], bonus: &mut [f64]) {
        let pp = self.p + 1;
        let du = self.dim + 1;
        let jd = du * pp;
        let theta = &self.mean_model.as_deref().unwrap_or(&self.model).theta;
        let m = &self.model.ainv;
        let mut u = Vec::with_capacity(du);
        u.push(1.0);
        u.extend_from_slice(x);
        // w = u' Theta
        let mut w = vec![0.0; pp];
        for (i, &ui) in u.iter().enumerate() {
            if ui != 0.0 {
                for (wj, t) in w.iter_mut().zip(&theta[i * pp..(i + 1) * pp]) {
                    *wj += ui * t;
                }
            }
        }
        // G[j, l] = sum_{i,k} u_i u_k M[(i, j), (k, l)]. M is symmetric, so with B_ik the
        // (p+1) x (p+1) block (i, k) of M and B_ki = B_ik':
        //   G = sum_i u_i^2 B_ii + sum_{i<k} u_i u_k (B_ik + B_ik').
        // Row (i, j) of M is therefore read only from column block i onwards: half of M per
        // request, still O(D^2), in contiguous row segments. g1 collects the blocks as they
        // are, g2 the ones that enter transposed.
        let mut g1 = vec![0.0; pp * pp];
        let mut g2 = vec![0.0; pp * pp];
        let mut y = vec![0.0; pp];
        for (i, &ui) in u.iter().enumerate() {
            if ui == 0.0 {
                continue;
            }
            for j in 0..pp {
                let r = i * pp + j;
                let row = &m[r * jd..(r + 1) * jd];
                match pp {
                    13..=16 => blocks_after::<16>(row, &u, i + 1, pp, &mut y),
                    9..=12 => blocks_after::<12>(row, &u, i + 1, pp, &mut y),
                    5..=8 => blocks_after::<8>(row, &u, i + 1, pp, &mut y),
                    _ => blocks_after_any(row, &u, i + 1, pp, &mut y),
                }
                let diag = &row[i * pp..(i + 1) * pp];
                let g1r = &mut g1[j * pp..(j + 1) * pp];
                for ((g, d), yl) in g1r.iter_mut().zip(diag).zip(&y) {
                    *g += ui * (ui * d + yl);
                }
                for (g, yl) in g2[j * pp..(j + 1) * pp].iter_mut().zip(&y) {
                    *g += ui * yl;
                }
            }
        }
        let mut g = vec![0.0; pp * pp];
        for j in 0..pp {
            for l in 0..pp {
                g[j * pp + l] = g1[j * pp + l] + g2[l * pp + j];
            }
        }
        // Per action: O(p^2).
        let mut v = vec![0.0; pp];
        v[0] = 1.0;
        let k = self.n_actions();
        for a in 0..k {
            v[1..].copy_from_slice(&self.psi[a * self.p..(a + 1) * self.p]);
            mean[a] = self.cfg.prior_mean + linalg::dot(&w, &v);
            let q = linalg::quad_form(&g, &v).max(0.0);
            bonus[a] = self.cfg.alpha * q.sqrt();
        }
    }
}
