//! The policy's quality learner: disjoint or shared LinUCB, behind one set of methods so the
//! rest of the policy never asks which one it holds.
//!
//! An enum rather than a `Box<dyn Trait>`: the set is closed by the saved state (its kind byte
//! is 0 or 1), the policy is `Clone + PartialEq`, and the two learners differ in more than the
//! scoring the `Learner` trait covers (action features, interaction prior, growing and
//! shrinking the action set). Every `match` on it lives in this file: a third learner is added
//! here and in the kind byte, nowhere else.

use crate::error::{CoreError, CoreResult};
use crate::evidence::{best_mult, interaction_coords, InteractionPrior};
use crate::learner::{Config, Learner};
use crate::linucb::LinUcb;
use crate::shared::SharedLinUcb;
use crate::space::{ActionDef, Space};
use crate::state::{Reader, Record, Writer};

#[derive(Debug, Clone, PartialEq)]
pub enum QualityLearner {
    Disjoint(LinUcb),
    Shared(SharedLinUcb),
}

impl QualityLearner {
    /// A fresh learner over `space`'s actions: shared (over the action features, with the
    /// interaction prior's ridge multiplier `mult` on its means) or disjoint (one arm each).
    pub fn new(
        shared: bool,
        space: &Space,
        dim: usize,
        cfg: Config,
        mult: f64,
    ) -> CoreResult<Self> {
        let k = space.actions.len();
        Ok(if shared {
            let mut l = SharedLinUcb::new(space.psi_matrix(), k, space.p(), dim, cfg)?;
            l.set_mean_mult(mult)?;
            QualityLearner::Shared(l)
        } else {
            QualityLearner::Disjoint(LinUcb::new(k, dim, cfg)?)
        })
    }

    /// "shared" or "disjoint".
    pub fn kind(&self) -> &'static str {
        match self {
            QualityLearner::Disjoint(_) => "disjoint",
            QualityLearner::Shared(_) => "shared",
        }
    }

    pub fn as_learner(&self) -> &dyn Learner {
        match self {
            QualityLearner::Disjoint(l) => l,
            QualityLearner::Shared(l) => l,
        }
    }

    pub(crate) fn cfg_mut(&mut self) -> &mut Config {
        match self {
            QualityLearner::Disjoint(l) => &mut l.cfg,
            QualityLearner::Shared(l) => &mut l.cfg,
        }
    }

    /// The posterior mean and alpha-free width of action `action`'s *summed* quality over `n`
    /// requests whose features sum to `sx`: `sum_t phi_t' theta` (plus `n` prior means) and
    /// `||sum_t phi_t||_{A^-1}`. The features are linear in x except for the shared learner's
    /// constant block, which the sum carries as `n`.
    pub(crate) fn sum_mean_width(&self, action: usize, n: f64, sx: &[f64]) -> (f64, f64) {
        let prior = self.as_learner().config().prior_mean;
        let (m, v) = match self {
            QualityLearner::Shared(l) => {
                let psi = &l.psi[action * l.p..(action + 1) * l.p];
                let mut phi = Vec::with_capacity(l.joint_dim());
                for ui in std::iter::once(n).chain(sx.iter().copied()) {
                    phi.push(ui);
                    phi.extend(psi.iter().map(|v| ui * v));
                }
                let mean_model = l.mean_model.as_deref().unwrap_or(&l.model);
                (
                    mean_model.mean_and_var(&phi).0,
                    l.model.mean_and_var(&phi).1,
                )
            }
            QualityLearner::Disjoint(l) => l.ridge(l.ridge_key(action)).mean_and_var(sx),
        };
        (n * prior + m, v.sqrt())
    }

    /// Posterior means and alpha-free confidence widths `sqrt(phi' A^-1 phi)` (the bonus is
    /// `alpha * width`): scored once with alpha = 1, then alpha is put back.
    pub(crate) fn means_and_widths(
        &mut self,
        x: &[f64],
        mean: &mut [f64],
        width: &mut [f64],
    ) -> CoreResult<()> {
        let alpha = self.as_learner().config().alpha;
        self.cfg_mut().alpha = 1.0;
        let r = self.as_learner().finite_scores_into(x, mean, width);
        self.cfg_mut().alpha = alpha;
        r
    }

    /// Length of the action features a pending decision keeps: the shared learner learns from
    /// a decision whose action was retired meanwhile through them; the disjoint one keeps none.
    pub(crate) fn psi_len(&self, space: &Space) -> usize {
        match self {
            QualityLearner::Shared(_) => space.p(),
            QualityLearner::Disjoint(_) => 0,
        }
    }

    /// The action features a pending decision of action `a` keeps (see `psi_len`).
    pub(crate) fn pending_psi(&self, space: &Space, a: &ActionDef) -> Vec<f64> {
        match self {
            QualityLearner::Shared(_) => space.psi(a),
            QualityLearner::Disjoint(_) => Vec::new(),
        }
    }

    /// Learns one outcome of action `a` on (scaled) request features `x`, counted `weight`
    /// times. `index` is the action's current position (None: retired, which the disjoint
    /// learner, having dropped its arm, cannot learn from); `psi` its action features as
    /// stored with a decision, or None to take them from `space`. The shared learner's
    /// outcomes also feed the interaction prior's evidence. Returns whether the learner
    /// learned; fails without changing anything.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn learn(
        &mut self,
        space: &Space,
        a: &ActionDef,
        index: Option<usize>,
        psi: Option<&[f64]>,
        x: &[f64],
        quality: f64,
        weight: f64,
        prior: &mut InteractionPrior,
    ) -> CoreResult<bool> {
        match self {
            QualityLearner::Shared(l) => {
                let owned;
                let psi = match psi {
                    Some(p) => p,
                    None => {
                        owned = space.psi(a);
                        &owned
                    }
                };
                l.update_features_weighted(psi, x, quality, weight)?;
                prior.observe(quality - l.cfg.prior_mean, weight);
                Ok(true)
            }
            QualityLearner::Disjoint(l) => {
                let Some(i) = index else {
                    return Ok(false); // the action was retired; its arm is gone
                };
                if weight == 1.0 {
                    l.update(i as i64, x, quality)?;
                } else {
                    // one update of sqrt(w) x with residual sqrt(w) (quality - prior_mean)
                    let sw = weight.sqrt();
                    let xs: Vec<f64> = x.iter().map(|v| v * sw).collect();
                    let prior_mean = l.cfg.prior_mean;
                    l.update(i as i64, &xs, prior_mean + (quality - prior_mean) * sw)?;
                }
                Ok(true)
            }
        }
    }

    /// With the interaction prior on auto, re-chooses the shared learner's interaction ridge
    /// multiplier by empirical Bayes when the update count reaches the next point of its
    /// geometric schedule (`crate::evidence`). Cannot fail: a candidate that does not factorise
    /// is skipped, and a failed switch keeps the current multiplier.
    pub(crate) fn reestimate_interaction_prior(&mut self, ip: &mut InteractionPrior) {
        let QualityLearner::Shared(l) = self else {
            return;
        };
        if !ip.due() {
            return;
        }
        let coords = interaction_coords(l.dim, l.p);
        let best = best_mult(&l.model, &coords, l.cfg.ridge, 1.0, ip.yy, ip.n);
        if best != ip.mult && l.set_mean_mult(best).is_ok() {
            ip.mult = best;
        }
    }

    /// Makes room for the actions `space.actions[first..]`, keeping what was learned.
    pub(crate) fn add_actions(&mut self, space: &Space, first: usize) -> CoreResult<()> {
        match self {
            QualityLearner::Shared(l) => {
                let psi: Vec<f64> = space.actions[first..]
                    .iter()
                    .flat_map(|a| space.psi(a))
                    .collect();
                l.add_actions(&psi)?;
            }
            QualityLearner::Disjoint(l) => {
                l.add_actions(space.actions.len() - first)?;
            }
        }
        Ok(())
    }

    /// Drops the actions at `indices`; returns old -> new index (-1 = removed).
    pub(crate) fn remove_actions(&mut self, indices: &[i64]) -> CoreResult<Vec<i64>> {
        match self {
            QualityLearner::Shared(l) => l.remove_actions(indices),
            QualityLearner::Disjoint(l) => l.remove_actions(indices),
        }
    }

    /// Puts the interaction prior's multiplier `mult` on a loaded learner's means.
    pub(crate) fn set_mean_mult(&mut self, mult: f64) -> CoreResult<()> {
        match self {
            QualityLearner::Shared(l) => l.set_mean_mult(mult),
            QualityLearner::Disjoint(_) => Ok(()),
        }
    }

    /// The learner's cross-field invariants against the policy's action space and interaction
    /// prior (see `Policy::check_invariants`).
    pub(crate) fn check_against(&self, space: &Space, ip: &InteractionPrior) -> Result<(), String> {
        match self {
            QualityLearner::Shared(l) => {
                if l.p != space.p() {
                    return Err(format!(
                        "the shared learner has {} action features, the action space {}",
                        l.p,
                        space.p()
                    ));
                }
                if !close(&l.psi, &space.psi_matrix()) {
                    return Err(
                        "the shared learner's action features are not the action space's".into(),
                    );
                }
                if l.mean_mult != ip.mult || l.mean_model.is_some() != (l.mean_mult != 1.0) {
                    return Err(format!(
                        "the shared learner's means use interaction ridge multiplier {}, the \
                         policy's prior is {}",
                        l.mean_mult, ip.mult
                    ));
                }
            }
            QualityLearner::Disjoint(_) => {
                if ip.mult != 1.0 || ip.auto {
                    return Err("an interaction prior on a disjoint learner".into());
                }
            }
        }
        Ok(())
    }

    /// The kind byte and the learner's payload.
    pub(crate) fn write(&self, w: &mut Writer) {
        match self {
            QualityLearner::Disjoint(l) => {
                w.u8(0);
                l.write_payload(w);
            }
            QualityLearner::Shared(l) => {
                w.u8(1);
                l.write_payload(w);
            }
        }
    }

    pub(crate) fn read(r: &mut Reader) -> CoreResult<Self> {
        Ok(match r.u8()? {
            0 => QualityLearner::Disjoint(LinUcb::read_payload(r)?),
            1 => QualityLearner::Shared(SharedLinUcb::read_payload(r)?),
            k => return Err(CoreError::State(format!("unknown learner kind {k}"))),
        })
    }
}

/// Equal up to rounding (psi is recomputed from prices with `ln`, which may differ in the last
/// bit between platforms).
pub(crate) fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-9 * y.abs().max(1.0))
}
