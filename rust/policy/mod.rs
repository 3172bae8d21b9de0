//! The UniScale policy: the decision engine a gateway calls on every request.
//!
//! Per request: the quality learner (LinUCB, shared or disjoint) gives each action a posterior
//! mean and an exploration bonus for *quality*; the cost model predicts dollars and seconds;
//! pruning drops actions that break the request's limits or are dominated; the remaining
//! candidates are scored by
//!
//! ```text
//! score = w_q * (quality_mean + quality_bonus) - (w_c + lambda) * cost / cost_scale
//!         - w_l * latency / latency_scale
//! ```
//!
//! Design choice: the bandit learns **quality only**, and cost and latency come from the cost
//! model. Cost and latency are (nearly) deterministic functions of token counts that the cost
//! model learns directly, while quality is what is uncertain; keeping them apart means the reward
//! weights (presets) and the budget multiplier can change at any time without discarding or
//! biasing anything learned, because nothing learned depends on them.
//!
//! Where things are: this file holds the `Policy` and its small methods; `select` the decision
//! pipeline, `guard` conservative and quality-floor mode, `feedback` learning from outcomes,
//! `quality` the quality learner, `pending` the decisions awaiting feedback, `persist` the saved
//! state and `invariants` what a loaded state must satisfy.

use std::borrow::Cow;

use crate::conservative::{Conservative, Metric};
use crate::cost::{CostModel, Estimate, Prediction};
use crate::error::{check_finite_scalar, CoreError, CoreResult};
use crate::evidence::check_mult;
use crate::learner::Config;
use crate::pacing::{Budget, Pacer};
use crate::prune::PruneReason;
use crate::rng::SplitMix64;
use crate::space::{ActionDef, ModelInfo, Space, Strategy, StrategyDef};

mod config;
mod feedback;
mod guard;
mod invariants;
mod pending;
mod persist;
mod quality;
mod select;
mod sync;
#[cfg(test)]
mod tests;

pub use config::{Draw, Exploration, PolicyConfig, Weights, COST_SENSITIVE, PRESETS};
pub use pending::{Pending, PendingStore, COMPACT_SLACK};
pub use quality::QualityLearner;
pub use sync::{decode_blob, encode_blob, SyncBase, SyncParts, SYNC_FORMAT_VERSION};

use config::check_interaction_scale;

/// Everything a decision exposes (for logs, explanation headers and off-policy evaluation).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub id: u64,
    pub index: usize,
    pub uid: u64,
    pub model: String,
    pub strategy: String,
    pub n: u32,
    pub quality_mean: f64,
    pub quality_bonus: f64,
    /// Predicted reward without the exploration bonus.
    pub mean: f64,
    /// Exploration bonus in reward units (w_q * quality_bonus).
    pub bonus: f64,
    /// mean + bonus - lambda * cost / cost_scale: what the argmax maximised.
    pub score: f64,
    pub prediction: Prediction,
    pub input_tokens: f64,
    pub propensity: f64,
    pub explored: bool,
    pub fallback: bool,
    /// Conservative mode replaced the learner's choice by the baseline action (quality-floor
    /// mode: the floor's guard replaced it by the best allowed candidate).
    pub conservative: bool,
    pub lambda: f64,
    /// Quality-floor mode's multiplier on the quality weight in force for this decision.
    pub quality_multiplier: Option<f64>,
    /// Candidate action indices after pruning, with the probability each had of being chosen.
    pub candidates: Vec<usize>,
    pub probabilities: Vec<f64>,
    pub pruned: Vec<(usize, PruneReason)>,
    pub created_s: f64,
}

/// What `select` is asked (`Feedback` is what `update` is told).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Request<'a> {
    /// The request's features (dim,).
    pub x: &'a [f64],
    pub input_tokens: f64,
    pub max_cost_usd: Option<f64>,
    pub max_latency_s: Option<f64>,
    /// Which actions may be chosen (K,); `None` allows every action.
    pub allowed: Option<&'a [bool]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Feedback {
    pub quality: f64,
    pub cost_usd: Option<f64>,
    pub latency_s: Option<f64>,
    pub output_tokens: Option<f64>,
    pub samples_used: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateResult {
    pub reward: f64,
    pub cost_usd: f64,
    pub latency_s: f64,
    pub learner_updated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub space: Space,
    pub learner: QualityLearner,
    pub cost: CostModel,
    pub pacer: Pacer,
    pub weights: Weights,
    pub cfg: PolicyConfig,
    pub rng: SplitMix64,
    pub pending: PendingStore,
    pub next_id: u64,
    pub dim: usize,
    /// Conservative exploration anchored on a baseline action (`None`: off).
    pub conservative: Option<Conservative>,
}

/// A model to add, with the (strategy, n) pairs to create for it (strategies as indices into
/// the policy's strategy list).
pub type NewModel = (ModelInfo, Vec<(Strategy, u32)>);

impl Policy {
    /// A policy over `strategies` (`StrategyDef::builtins()` for the four built-ins; the
    /// feature layout follows from the list, see `crate::space`) and `models`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        models: Vec<NewModel>,
        strategies: Vec<StrategyDef>,
        model_slots: usize,
        dim: usize,
        shared: bool,
        learner_cfg: Config,
        weights: Weights,
        mut cfg: PolicyConfig,
        budget: Budget,
        pacing_step: f64,
        pacing_carryover: f64,
        seed: u64,
    ) -> CoreResult<Policy> {
        weights.validate()?;
        cfg.exploration.validate()?;
        if !(cfg.ttl_s.is_finite() && cfg.ttl_s > 0.0) {
            return Err(CoreError::Config(format!(
                "ttl_s must be > 0, got {}",
                cfg.ttl_s
            )));
        }
        if cfg.capacity == 0 {
            return Err(CoreError::Config("pending capacity must be >= 1".into()));
        }
        check_interaction_scale(cfg.interaction_scale)?;
        check_mult(cfg.interaction_prior.mult)?;
        let ip = cfg.interaction_prior;
        if (ip.mult != 1.0 || ip.auto) && !shared {
            return Err(CoreError::Config(
                "interaction_prior applies to the shared learner only (the disjoint learner \
                 has no request x action interaction block)"
                    .into(),
            ));
        }
        if (ip.mult != 1.0 || ip.auto) && learner_cfg.discount < 1.0 {
            return Err(CoreError::Config(
                "interaction_prior needs discount = 1: discounting pulls every coefficient's \
                 prior back to the one ridge"
                    .into(),
            ));
        }
        let mut space = Space::with_strategies(model_slots.max(models.len()), strategies)?;
        let mut cost = CostModel::new(&space.strategies);
        for (info, acts) in models {
            let mi = space.add_model(info)?;
            cost.add_model(&space.models[mi]);
            for (s, n) in acts {
                space.add_action(mi, s, n)?;
            }
        }
        if space.actions.is_empty() {
            return Err(CoreError::Config("the action space is empty".into()));
        }
        let learner = QualityLearner::new(shared, &space, dim, learner_cfg, ip.mult)?;
        // Default scales: one answer (n = 1) from the most expensive / slowest model for a
        // 500-token prompt, at the prior. Normalised cost 1.0 then reads "as much as asking the
        // priciest model once", so price gaps between model tiers stay visible in the reward.
        let mut max_cost: f64 = 0.0;
        let mut max_lat: f64 = 0.0;
        for a in &space.actions {
            let one = ActionDef {
                n: 1,
                strategy: Strategy::SINGLE,
                ..*a
            };
            let p = cost.predict(&space, &one, 500.0);
            max_cost = max_cost.max(p.cost_usd);
            max_lat = max_lat.max(p.latency_s);
        }
        if !(cfg.cost_scale.is_finite() && cfg.cost_scale > 0.0) {
            cfg.cost_scale = if max_cost > 0.0 { max_cost } else { 1.0 };
        }
        if !(cfg.latency_scale.is_finite() && cfg.latency_scale > 0.0) {
            cfg.latency_scale = if max_lat > 0.0 { max_lat } else { 1.0 };
        }
        // Prices and priors near the top of the doubles make the defaults overflow.
        for (what, v) in [
            ("cost_scale", cfg.cost_scale),
            ("latency_scale", cfg.latency_scale),
        ] {
            if !v.is_finite() {
                return Err(CoreError::Config(format!(
                    "the default {what} (one answer of the priciest / slowest model to a \
                     500-token prompt) overflows with these model parameters; pass {what}"
                )));
            }
        }
        Ok(Policy {
            space,
            learner,
            cost,
            pacer: Pacer::new(budget, pacing_step, pacing_carryover)?,
            weights,
            pending: PendingStore::new(cfg.capacity, cfg.ttl_s),
            cfg,
            rng: SplitMix64::new(seed),
            next_id: 0,
            dim,
            conservative: None,
        })
    }

    pub fn n_actions(&self) -> usize {
        self.space.actions.len()
    }

    /// The quality learner's exploration width.
    pub fn alpha(&self) -> f64 {
        self.learner.as_learner().config().alpha
    }

    /// `index` as a position in the action list, or `UnknownAction`.
    fn action_at(&self, index: i64) -> CoreResult<usize> {
        let k = self.n_actions();
        usize::try_from(index)
            .ok()
            .filter(|i| *i < k)
            .ok_or(CoreError::UnknownAction {
                action: index,
                n_actions: k,
            })
    }

    /// Request features as the quality learner sees them (times `interaction_scale`).
    fn scaled<'a>(&self, x: &'a [f64]) -> Cow<'a, [f64]> {
        let s = self.cfg.interaction_scale;
        if s == 1.0 {
            Cow::Borrowed(x)
        } else {
            Cow::Owned(x.iter().map(|v| v * s).collect())
        }
    }

    /// Registers a model and its actions while serving; what was learned is kept.
    pub fn add_model(
        &mut self,
        info: ModelInfo,
        actions: &[(Strategy, u32)],
    ) -> CoreResult<Vec<usize>> {
        if actions.is_empty() {
            return Err(CoreError::Config(
                "a new model needs at least one action".into(),
            ));
        }
        let mut space = self.space.clone();
        let mi = space.add_model(info)?;
        let first = space.actions.len();
        for &(s, n) in actions {
            space.add_action(mi, s, n)?;
        }
        let mut learner = self.learner.clone();
        learner.add_actions(&space, first)?;
        self.cost.add_model(&space.models[mi]);
        self.space = space;
        self.learner = learner;
        Ok((first..self.space.actions.len()).collect())
    }

    /// Retires a model: its actions leave the space (and the disjoint learner); the shared
    /// model keeps everything. Returns old -> new action index (-1 = removed).
    pub fn retire_model(&mut self, name: &str) -> CoreResult<Vec<i64>> {
        let mi = self
            .space
            .model_index(name)
            .filter(|&i| !self.space.models[i].retired)
            .ok_or_else(|| CoreError::Config(format!("no active model named {name:?}")))?;
        let idx: Vec<i64> = self
            .space
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.model == mi)
            .map(|(i, _)| i as i64)
            .collect();
        let mut learner = self.learner.clone();
        let mapping = learner.remove_actions(&idx)?;
        self.learner = learner;
        self.space.actions.retain(|a| a.model != mi);
        self.space.models[mi].retired = true;
        Ok(mapping)
    }

    /// New reward weights. Conservative mode's account restarts (its sums are rewards under
    /// the old weights).
    pub fn set_weights(&mut self, w: Weights) -> CoreResult<()> {
        w.validate()?;
        if w != self.weights {
            if let Some(c) = self.conservative.as_mut() {
                if c.metric == Metric::Reward {
                    c.reset();
                }
            }
        }
        self.weights = w;
        Ok(())
    }

    pub fn set_exploration(&mut self, e: Exploration) -> CoreResult<()> {
        e.validate()?;
        self.cfg.exploration = e;
        Ok(())
    }

    /// Cost exploration (`CostModel::uncertain`): pooled cost/latency corrections across models
    /// and optimism about the cost and latency of arms with little data of their own.
    pub fn set_cost_exploration(&mut self, on: bool) {
        self.cost.uncertain = on;
    }

    pub fn cost_exploration(&self) -> bool {
        self.cost.uncertain
    }

    /// Predictions for every action at this request size (for planners and explanations).
    pub fn predict_all(&self, input_tokens: f64) -> CoreResult<Vec<Prediction>> {
        check_input_tokens(input_tokens)?;
        Ok(self
            .space
            .actions
            .iter()
            .map(|a| self.cost.predict(&self.space, a, input_tokens))
            .collect())
    }

    /// Point and optimistic estimates for every action at this request size.
    pub fn estimate_all(&self, input_tokens: f64) -> CoreResult<Vec<Estimate>> {
        check_input_tokens(input_tokens)?;
        Ok(self
            .space
            .actions
            .iter()
            .map(|a| self.cost.estimate(&self.space, a, input_tokens))
            .collect())
    }

    /// Outcomes observed per action (decisions and side observations); an action with fewer
    /// than `MIN_EXPLORED_OBS` is never pruned as dominated.
    pub fn action_observations(&self) -> Vec<u64> {
        self.space
            .actions
            .iter()
            .map(|a| self.cost.action_observations(a.uid))
            .collect()
    }

    /// Quality means and bonuses for request features `x` (scaled by `interaction_scale` as
    /// `select` does).
    pub fn quality_scores(&self, x: &[f64]) -> CoreResult<(Vec<f64>, Vec<f64>)> {
        self.learner.as_learner().scores(&self.scaled(x))
    }
}

/// Outcomes an action needs before it may be pruned as dominated.
pub const MIN_EXPLORED_OBS: u64 = 2;

/// A request's prompt length: finite and >= 0.
fn check_input_tokens(input_tokens: f64) -> CoreResult<()> {
    check_finite_scalar("input_tokens", input_tokens)?;
    if input_tokens < 0.0 {
        return Err(CoreError::Config(format!(
            "input_tokens must be >= 0, got {input_tokens}"
        )));
    }
    Ok(())
}
