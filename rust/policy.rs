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

use std::collections::{HashMap, HashSet, VecDeque};

use crate::conservative::{reward_var, Budget as ConservativeBudget, Conservative, Metric, Open};
use crate::cost::{CostModel, Prediction};
use crate::error::{check_finite, check_finite_scalar, CoreError, CoreResult};
use crate::evidence::{best_mult, check_mult, interaction_coords, InteractionPrior};
use crate::learner::{Config, Learner};
use crate::linucb::LinUcb;
use crate::pacing::{Budget, Pacer};
use crate::prune::{dominated, PruneReason};
use crate::rng::SplitMix64;
use crate::shared::SharedLinUcb;
use crate::space::{ActionDef, ModelInfo, Space, Strategy};
use crate::state::{Kind, Reader, Writer};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub quality: f64,
    pub cost: f64,
    pub latency: f64,
}

impl Weights {
    /// The paper's presets.
    pub fn preset(name: &str) -> CoreResult<Weights> {
        match name {
            "quality_priority" => Ok(Weights { quality: 1.0, cost: 0.1, latency: 0.05 }),
            "cost_sensitive" => Ok(Weights { quality: 1.0, cost: 1.0, latency: 0.2 }),
            "balanced" => Ok(Weights { quality: 1.0, cost: 0.4, latency: 0.1 }),
            _ => Err(CoreError::Config(format!(
                "unknown reward preset {name:?}; expected quality_priority, cost_sensitive or balanced"
            ))),
        }
    }
    pub fn validate(&self) -> CoreResult<()> {
        for (what, v) in [
            ("quality", self.quality),
            ("cost", self.cost),
            ("latency", self.latency),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(CoreError::Config(format!(
                    "reward weight {what} must be finite and >= 0, got {v}"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exploration {
    /// Pure LinUCB argmax (propensity 1).
    Greedy,
    /// With probability eps, a uniformly random candidate.
    Epsilon(f64),
    /// Softmax over candidate scores with this temperature.
    Softmax(f64),
}

impl Exploration {
    pub fn validate(&self) -> CoreResult<()> {
        match *self {
            Exploration::Greedy => Ok(()),
            Exploration::Epsilon(e) if e.is_finite() && (0.0..=1.0).contains(&e) => Ok(()),
            Exploration::Softmax(t) if t.is_finite() && t > 0.0 => Ok(()),
            other => Err(CoreError::Config(format!("invalid exploration {other:?}"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum QualityLearner {
    Disjoint(LinUcb),
    Shared(SharedLinUcb),
}

impl QualityLearner {
    fn as_learner(&self) -> &dyn Learner {
        match self {
            QualityLearner::Disjoint(l) => l,
            QualityLearner::Shared(l) => l,
        }
    }

    fn cfg_mut(&mut self) -> &mut Config {
        match self {
            QualityLearner::Disjoint(l) => &mut l.cfg,
            QualityLearner::Shared(l) => &mut l.cfg,
        }
    }

    /// The posterior mean and alpha-free width of action `action`'s *summed* quality over `n`
    /// requests whose features sum to `sx`: `sum_t phi_t' theta` (plus `n` prior means) and
    /// `||sum_t phi_t||_{A^-1}`. The features are linear in x except for the shared learner's
    /// constant block, which the sum carries as `n`.
    fn sum_mean_width(&self, action: usize, n: f64, sx: &[f64]) -> (f64, f64) {
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
    fn means_and_widths(
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub cost_scale: f64,
    pub latency_scale: f64,
    pub exploration: Exploration,
    pub ttl_s: f64,
    pub capacity: usize,
    pub feature_version: String,
    /// Multiplies the request features before the quality learner sees them, in [0, 1]: with
    /// the shared learner's `kron([1, x], [1, psi])` and one ridge for all coefficients, a
    /// scale `s` is a ridge `1 / s^2` times stronger on the request x action interactions than
    /// on the action main effects (and shrinks their exploration bonus by `s`): interactions
    /// are learned only as far as the data support them. 0 is a context-free learner.
    pub interaction_scale: f64,
    /// The shared learner's interaction prior (ridge multiplier on the request x action
    /// coefficients, optionally re-estimated by empirical Bayes) and its evidence statistics.
    pub interaction_prior: InteractionPrior,
}

/// Everything a decision exposes (for logs, explanation headers and off-policy evaluation).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub id: u64,
    pub index: usize,
    pub uid: u64,
    pub model: String,
    pub strategy: Strategy,
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

#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub x: Vec<f64>,
    pub action: ActionDef,
    pub psi: Vec<f64>,
    pub input_tokens: f64,
    pub prediction: Prediction,
    pub created_s: f64,
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

/// Bounded store of decisions awaiting feedback.
///
/// `map` holds the live decisions; `order` is their arrival order for expiry. Completing a
/// decision removes it from `map` only, leaving a stale id in `order`; expiry pops stale ids
/// from the front, and `compact` drops the rest once they outnumber the live ones, so `order`
/// stays within `2 * len + COMPACT_SLACK` however long an old decision stays pending.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingStore {
    map: HashMap<u64, Pending>,
    order: VecDeque<u64>,
    done: HashSet<u64>,
    done_order: VecDeque<u64>,
    pub capacity: usize,
    pub ttl_s: f64,
}

impl PendingStore {
    fn new(capacity: usize, ttl_s: f64) -> Self {
        PendingStore {
            map: HashMap::new(),
            order: VecDeque::new(),
            done: HashSet::new(),
            done_order: VecDeque::new(),
            capacity,
            ttl_s,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries of the internal bookkeeping (live, stale arrival-order and answered ids): what
    /// the store's memory is proportional to. For tests of its bound.
    pub fn bookkeeping_len(&self) -> usize {
        self.map.len() + self.order.len() + self.done.len() + self.done_order.len()
    }

    /// Drops stale ids from `order` once they outnumber the live ones (amortised O(1) per
    /// decision: each pass removes at least half of what it scans).
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + COMPACT_SLACK {
            let map = &self.map;
            self.order.retain(|id| map.contains_key(id));
        }
    }

    fn expire(&mut self, now_s: f64) {
        while let Some(&id) = self.order.front() {
            match self.map.get(&id) {
                None => {
                    self.order.pop_front();
                }
                Some(p) if now_s - p.created_s > self.ttl_s || self.map.len() > self.capacity => {
                    self.map.remove(&id);
                    self.order.pop_front();
                }
                Some(_) => break,
            }
        }
    }

    fn insert(&mut self, id: u64, p: Pending, now_s: f64) {
        self.map.insert(id, p);
        self.order.push_back(id);
        self.expire(now_s);
        self.compact();
    }

    /// The decision `id` if it can take feedback at `now_s`. Changes nothing: a failed update
    /// must leave the store as it was (expiry is applied when an update succeeds).
    fn get_live(&self, id: u64, next_id: u64, now_s: f64) -> CoreResult<&Pending> {
        if id >= next_id {
            return Err(CoreError::UnknownDecision(id));
        }
        if self.done.contains(&id) {
            return Err(CoreError::DuplicateUpdate(id));
        }
        match self.map.get(&id) {
            Some(p) if now_s - p.created_s <= self.ttl_s => Ok(p),
            _ => Err(CoreError::ExpiredDecision(id)),
        }
    }

    /// Marks `id` answered (remembered for duplicate detection up to `capacity` ids) and
    /// applies expiry at `now_s`.
    fn complete(&mut self, id: u64, now_s: f64) -> Option<Pending> {
        let p = self.map.remove(&id)?;
        self.done.insert(id);
        self.done_order.push_back(id);
        while self.done_order.len() > self.capacity {
            if let Some(old) = self.done_order.pop_front() {
                self.done.remove(&old);
            }
        }
        self.expire(now_s);
        self.compact();
        Some(p)
    }
}

/// Stale ids `PendingStore::order` may hold beyond twice the live ones before a compaction.
const COMPACT_SLACK: usize = 64;

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

/// A model to add, with the (strategy, n) pairs to create for it.
pub type NewModel = (ModelInfo, Vec<(Strategy, u32)>);

impl Policy {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        models: Vec<NewModel>,
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
        let mut space = Space::new(model_slots.max(models.len()))?;
        let mut cost = CostModel::new();
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
        let k = space.actions.len();
        let learner = if shared {
            let mut l = SharedLinUcb::new(space.psi_matrix(), k, space.p(), dim, learner_cfg)?;
            l.set_mean_mult(ip.mult)?;
            QualityLearner::Shared(l)
        } else {
            QualityLearner::Disjoint(LinUcb::new(k, dim, learner_cfg)?)
        };
        // Default scales: one answer (n = 1) from the most expensive / slowest model for a
        // 500-token prompt, at the prior. Normalised cost 1.0 then reads "as much as asking the
        // priciest model once", so price gaps between model tiers stay visible in the reward.
        let mut max_cost: f64 = 0.0;
        let mut max_lat: f64 = 0.0;
        for a in &space.actions {
            let one = ActionDef {
                n: 1,
                strategy: Strategy::Single,
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

    /// Chooses an action. Never fails for unsatisfiable limits: it falls back to the cheapest
    /// allowed action and flags the decision. Fails only on invalid input.
    pub fn select(
        &mut self,
        x: &[f64],
        input_tokens: f64,
        max_cost_usd: Option<f64>,
        max_latency_s: Option<f64>,
        allowed: Option<&[bool]>,
        now_s: f64,
    ) -> CoreResult<Decision> {
        let k = self.n_actions();
        // Decision ids are u64 and never reused: refuse rather than wrap.
        let next_id = self
            .next_id
            .checked_add(1)
            .ok_or_else(|| CoreError::State("decision ids are exhausted (2**64 issued)".into()))?;
        let learner = self.learner.as_learner();
        learner.check_x(x)?;
        let scaled: Vec<f64>;
        let x: &[f64] = if self.cfg.interaction_scale == 1.0 {
            x
        } else {
            scaled = x.iter().map(|v| v * self.cfg.interaction_scale).collect();
            &scaled
        };
        check_finite_scalar("input_tokens", input_tokens)?;
        if input_tokens < 0.0 {
            return Err(CoreError::Config(format!(
                "input_tokens must be >= 0, got {input_tokens}"
            )));
        }
        for (what, v) in [
            ("max_cost_usd", max_cost_usd),
            ("max_latency_s", max_latency_s),
        ] {
            if let Some(v) = v {
                if v.is_nan() || v < 0.0 {
                    return Err(CoreError::Config(format!("{what} must be >= 0, got {v}")));
                }
            }
        }
        check_finite_scalar("now_s", now_s)?;
        if let Some(m) = allowed {
            learner.check_mask(m)?;
            if !m.iter().any(|b| *b) {
                return Err(CoreError::AllMasked);
            }
        }

        let mut qmean = vec![0.0; k];
        let mut qbonus = vec![0.0; k];
        // Conservative mode needs the alpha-free widths for its confidence bounds.
        let mut qwidth: Vec<f64> = Vec::new();
        if self.conservative.is_some() {
            qwidth = vec![0.0; k];
            self.learner.means_and_widths(x, &mut qmean, &mut qwidth)?;
            let alpha = self.learner.as_learner().config().alpha;
            for (b, wd) in qbonus.iter_mut().zip(&qwidth) {
                *b = alpha * wd;
            }
        } else {
            learner.finite_scores_into(x, &mut qmean, &mut qbonus)?;
        }
        let preds: Vec<Prediction> = self
            .space
            .actions
            .iter()
            .map(|a| self.cost.predict(&self.space, a, input_tokens))
            .collect();

        // 1. hard limits
        let mut pruned: Vec<(usize, PruneReason)> = Vec::new();
        let mut feasible: Vec<usize> = Vec::with_capacity(k);
        for (i, p) in preds.iter().enumerate() {
            if let Some(m) = allowed {
                if !m[i] {
                    pruned.push((i, PruneReason::Masked));
                    continue;
                }
            }
            if max_cost_usd.is_some_and(|c| p.cost_usd > c) {
                pruned.push((i, PruneReason::Cost));
            } else if max_latency_s.is_some_and(|l| p.latency_s > l) {
                pruned.push((i, PruneReason::Latency));
            } else {
                feasible.push(i);
            }
        }
        // Quality-floor mode ranks with its multiplier on the quality weight (a dual variable
        // on the floor): high while the choices fall short of the reference, low while they
        // have quality to spare.
        let mut w = self.weights;
        let floor = self
            .conservative
            .as_ref()
            .is_some_and(|c| c.metric == Metric::Quality);
        let quality_multiplier = self
            .conservative
            .as_ref()
            .filter(|_| floor)
            .map(|c| c.multiplier);
        if let Some(m) = quality_multiplier {
            w.quality *= m;
        }
        let lambda = self.pacer.lambda;
        let cs = self.cfg.cost_scale;
        let ls = self.cfg.latency_scale;
        let mean_of = |i: usize| -> f64 {
            w.quality * qmean[i]
                - (w.cost + lambda) * preds[i].cost_usd / cs
                - w.latency * preds[i].latency_s / ls
        };

        // Finite inputs can still overflow (input_tokens = 1e308 on a fan-out action, features
        // in the 1e300s): refuse the request before anything changes rather than store an
        // infinite prediction or rank NaN scores.
        for i in 0..k {
            if allowed.is_some_and(|m| !m[i]) {
                continue;
            }
            let p = &preds[i];
            let parts = [
                ("predicted output tokens", p.output_tokens_per_sample),
                ("predicted cost", p.cost_usd),
                ("predicted latency", p.latency_s),
                ("quality mean", qmean[i]),
                ("quality bonus", qbonus[i]),
                ("score", mean_of(i) + w.quality * qbonus[i]),
            ];
            if let Some((what, v)) = parts.iter().find(|(_, v)| !v.is_finite()) {
                return Err(CoreError::NonFinite(format!(
                    "the {what} of action {i} is {v} for this request (input_tokens = \
                     {input_tokens}); rejected before any state changed"
                )));
            }
        }

        let fallback = feasible.is_empty();
        let (candidates, probabilities, chosen, explored) = if fallback {
            // Every allowed action breaks a limit: take the cheapest (ties: lowest latency,
            // then lowest index) and flag it rather than failing the request.
            let mut best: Option<usize> = None;
            for i in 0..k {
                if allowed.is_some_and(|m| !m[i]) {
                    continue;
                }
                best = match best {
                    Some(b)
                        if (preds[b].cost_usd, preds[b].latency_s)
                            <= (preds[i].cost_usd, preds[i].latency_s) =>
                    {
                        Some(b)
                    }
                    _ => Some(i),
                };
            }
            let b = best.ok_or(CoreError::AllMasked)?;
            // The chosen action broke a limit like the others, but it is the decision, not a
            // pruned action: `fallback` records that it was taken despite the limits.
            pruned.retain(|(i, _)| *i != b);
            (vec![b], vec![1.0], b, false)
        } else {
            // 2. dominance in (predicted cost, predicted latency, quality UCB)
            let ucb: Vec<f64> = feasible.iter().map(|&i| qmean[i] + qbonus[i]).collect();
            let c: Vec<f64> = feasible.iter().map(|&i| preds[i].cost_usd).collect();
            let l: Vec<f64> = feasible.iter().map(|&i| preds[i].latency_s).collect();
            let dom = dominated(&c, &l, &ucb);
            let mut cand = Vec::with_capacity(feasible.len());
            for (j, &i) in feasible.iter().enumerate() {
                match dom[j] {
                    Some(by) => pruned.push((i, PruneReason::Dominated(feasible[by]))),
                    None => cand.push(i),
                }
            }
            let scores: Vec<f64> = cand
                .iter()
                .map(|&i| mean_of(i) + w.quality * qbonus[i])
                .collect();
            let mut best = 0;
            for (j, s) in scores.iter().enumerate() {
                if *s > scores[best] {
                    best = j;
                }
            }
            let nc = cand.len() as f64;
            let (probs, pick) = match self.cfg.exploration {
                Exploration::Greedy => {
                    let mut p = vec![0.0; cand.len()];
                    p[best] = 1.0;
                    (p, best)
                }
                Exploration::Epsilon(eps) => {
                    let mut p = vec![eps / nc; cand.len()];
                    p[best] += 1.0 - eps;
                    let pick = if self.rng.next_f64() < eps {
                        ((self.rng.next_f64() * nc) as usize).min(cand.len() - 1)
                    } else {
                        best
                    };
                    (p, pick)
                }
                Exploration::Softmax(t) => {
                    let mx = scores[best];
                    let e: Vec<f64> = scores.iter().map(|s| ((s - mx) / t).exp()).collect();
                    let z: f64 = e.iter().sum();
                    let p: Vec<f64> = e.iter().map(|v| v / z).collect();
                    let u = self.rng.next_f64();
                    let mut acc = 0.0;
                    let mut pick = cand.len() - 1;
                    for (j, pj) in p.iter().enumerate() {
                        acc += pj;
                        if u < acc {
                            pick = j;
                            break;
                        }
                    }
                    (p, pick)
                }
            };
            let chosen = cand[pick];
            (cand, probs, chosen, pick != best)
        };
        let (mut candidates, mut probabilities, mut chosen) = (candidates, probabilities, chosen);
        // the learner's choice before the guard: the floor's dual step prices it (what is
        // served can only be the reference while slack is short, which says nothing about
        // whether the ranking asks too much of the floor)
        let proposed = chosen;

        // 3. conservative mode: a candidate is allowed only if playing it keeps the pessimistic
        // cumulative reward above (1 - delta) x the baseline's optimistic one; the probability
        // of every other candidate moves to the baseline.
        let retro_hi = self.conservative_retro_hi()?;
        let mut overridden = false;
        let mut cons_open: Option<Open> = None;
        let mut floor_gap: Option<f64> = None;
        if let Some(c) = &self.conservative {
            let base = self
                .space
                .actions
                .iter()
                .position(|a| a.uid == c.baseline_uid);
            if let Some(bi) = base {
                // the promise's metric: reward under the weights, or quality alone
                let (wq, with_cost) = match c.metric {
                    Metric::Reward => (w.quality, 1.0),
                    Metric::Quality => (1.0, 0.0),
                };
                let cost_term = |i: usize| {
                    with_cost
                        * (w.cost * preds[i].cost_usd / cs + w.latency * preds[i].latency_s / ls)
                };
                let bound = |i: usize, sign: f64| -> f64 {
                    wq * c.quality_bound(qmean[i], qwidth[i], sign) - cost_term(i)
                };
                let var = |i: usize| reward_var(wq, c.quality_sd, cost_term(i));
                let base_hi = bound(bi, 1.0);
                let base_lo = bound(bi, -1.0);
                let open_for = |i: usize| -> Open {
                    if i == bi {
                        Open {
                            lo: base_lo,
                            hi: base_lo,
                            var_policy: 0.0,
                            var_baseline: 0.0,
                            baseline: true,
                        }
                    } else {
                        Open {
                            lo: bound(i, -1.0),
                            hi: base_hi,
                            var_policy: var(i),
                            var_baseline: var(bi),
                            baseline: false,
                        }
                    }
                };
                let baseline_usable = !fallback && feasible.contains(&bi);
                if baseline_usable {
                    let opens: Vec<Open> = candidates.iter().map(|&i| open_for(i)).collect();
                    let ok = c.allowed(&opens, retro_hi, base_lo);
                    if ok.iter().any(|b| !b) {
                        let mut base_mass = 0.0;
                        let mut nc = Vec::with_capacity(candidates.len());
                        let mut np = Vec::with_capacity(candidates.len());
                        for (j, &i) in candidates.iter().enumerate() {
                            if ok[j] {
                                nc.push(i);
                                np.push(probabilities[j]);
                            } else {
                                base_mass += probabilities[j];
                            }
                        }
                        // Conservative mode hands the refused mass to the baseline (Kazerouni
                        // et al.); a quality floor to the best-ranked allowed candidate, which
                        // keeps the promise just as well and is usually cheaper than the
                        // reference (the baseline when nothing else is allowed).
                        let score = |i: usize| mean_of(i) + w.quality * qbonus[i];
                        let target = if floor && !nc.is_empty() {
                            let mut t = nc[0];
                            for &i in &nc[1..] {
                                if score(i) > score(t) {
                                    t = i;
                                }
                            }
                            t
                        } else {
                            bi
                        };
                        match nc.iter().position(|&i| i == target) {
                            Some(j) => np[j] += base_mass,
                            None => {
                                // the baseline had been pruned as dominated: it is back
                                pruned.retain(|(i, _)| *i != bi);
                                nc.push(bi);
                                np.push(base_mass);
                            }
                        }
                        if !nc.contains(&chosen) {
                            chosen = target;
                            overridden = true;
                        }
                        candidates = nc;
                        probabilities = np;
                    }
                }
                let o = open_for(chosen);
                // the dual step on "expected quality >= the reference's - tolerance"
                // (optimistic on both sides, like the ranking it prices: an unexplored arm's
                // mean is its prior, and pricing exploration by it would drive the
                // multiplier up until nothing but quality counts)
                let ucb = |i: usize| qmean[i] + qbonus[i];
                floor_gap = Some(ucb(proposed) - ucb(bi) + c.tolerance);
                cons_open = Some(o);
            }
        }
        pruned.sort_by_key(|e| e.0);
        let pos = candidates.iter().position(|&c| c == chosen).unwrap_or(0);
        let propensity = probabilities.get(pos).copied().unwrap_or(1.0);

        let a = self.space.actions[chosen];
        let id = self.next_id;
        self.next_id = next_id;
        if let (Some(c), Some(o)) = (self.conservative.as_mut(), cons_open) {
            if overridden {
                c.overrides += 1;
            }
            if let Some(g) = floor_gap {
                c.update_multiplier(g);
            }
            c.record(id, o);
            // Decisions that expired without feedback keep their bounds for good.
            if c.open.len() > 2 * self.pending.len() + 64 {
                let live = &self.pending.map;
                c.settle(|i| live.contains_key(&i));
            }
        }
        self.pacer.observe_request(now_s);
        let psi = match &self.learner {
            QualityLearner::Shared(_) => self.space.psi(&a),
            QualityLearner::Disjoint(_) => Vec::new(),
        };
        self.pending.insert(
            id,
            Pending {
                x: x.to_vec(),
                action: a,
                psi,
                input_tokens,
                prediction: preds[chosen],
                created_s: now_s,
            },
            now_s,
        );
        let mean = mean_of(chosen) + lambda * preds[chosen].cost_usd / cs;
        let bonus = w.quality * qbonus[chosen];
        Ok(Decision {
            id,
            index: chosen,
            uid: a.uid,
            model: self.space.models[a.model].name.clone(),
            strategy: a.strategy,
            n: a.n,
            quality_mean: qmean[chosen],
            quality_bonus: qbonus[chosen],
            mean,
            bonus,
            score: mean + bonus - lambda * preds[chosen].cost_usd / cs,
            prediction: preds[chosen],
            input_tokens,
            propensity,
            explored: explored && !overridden,
            fallback,
            conservative: overridden,
            lambda,
            quality_multiplier,
            candidates,
            probabilities,
            pruned,
            created_s: now_s,
        })
    }

    /// Quality-floor mode's retrospective bound on the reference's quality over the answered
    /// requests it did not serve (`Conservative::retro_hi`), from the learner's current
    /// statistics; 0 without any (or in conservative mode, which keeps decision-time bounds).
    fn conservative_retro_hi(&mut self) -> CoreResult<f64> {
        let Some(c) = self.conservative.as_ref() else {
            return Ok(0.0);
        };
        if !c.retro || c.cf_n == 0 {
            return Ok(0.0);
        }
        let Some(bi) = self
            .space
            .actions
            .iter()
            .position(|a| a.uid == c.baseline_uid)
        else {
            return Ok(0.0);
        };
        let (sum, width) = self.learner.sum_mean_width(bi, c.cf_n as f64, &c.cf_x);
        if !(sum.is_finite() && width.is_finite()) {
            return Err(CoreError::NonFinite(format!(
                "the quality floor's counterfactual bound is not finite (mean {sum}, width                  {width}); rescale the features"
            )));
        }
        Ok(c.retro_hi(sum, width))
    }

    /// Conservative (or quality-floor) mode's budget as it stands.
    pub fn conservative_budget(&mut self) -> CoreResult<Option<ConservativeBudget>> {
        let retro_hi = self.conservative_retro_hi()?;
        Ok(self.conservative.as_ref().map(|c| c.budget(retro_hi)))
    }

    /// Realised reward under the current weights.
    pub fn reward(&self, quality: f64, cost_usd: f64, latency_s: f64) -> f64 {
        self.weights.quality * quality
            - self.weights.cost * cost_usd / self.cfg.cost_scale
            - self.weights.latency * latency_s / self.cfg.latency_scale
    }

    /// Realised reward under the current weights, rejected when it overflows (a finite
    /// quality, cost or latency in the 1e300s can still give an infinite reward).
    fn checked_reward(&self, quality: f64, cost_usd: f64, latency_s: f64) -> CoreResult<f64> {
        let r = self.reward(quality, cost_usd, latency_s);
        if r.is_finite() {
            Ok(r)
        } else {
            Err(CoreError::NonFinite(format!(
                "the reward of quality {quality}, cost_usd {cost_usd} and latency_s {latency_s} \
                 overflows; rejected before any state changed"
            )))
        }
    }

    /// Feedback for a decision. Validated completely before anything changes; an unknown,
    /// expired or already-updated id is rejected. A refused update changes nothing, with one
    /// exception: when the id itself has expired, the expired decisions are dropped from the
    /// pending store (none of them can take feedback any more).
    pub fn update(&mut self, id: u64, fb: Feedback, now_s: f64) -> CoreResult<UpdateResult> {
        check_feedback(&fb)?;
        check_finite_scalar("now_s", now_s)?;
        let p = match self.pending.get_live(id, self.next_id, now_s) {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, CoreError::ExpiredDecision(_)) {
                    self.pending.expire(now_s);
                    self.pending.compact();
                }
                return Err(e);
            }
        };
        let a = p.action;
        let samples = samples_used(&a, &fb)?;
        let (cost_usd, latency_s) =
            self.realised_usage(&a, p.input_tokens, &p.prediction, &fb, samples)?;
        let reward = self.checked_reward(fb.quality, cost_usd, latency_s)?;
        self.pacer.check_cost(cost_usd)?;
        // The learner is the last step that can fail (numerical overflow) and fails without
        // changing anything; everything after it cannot fail.
        let learner_updated = match &mut self.learner {
            QualityLearner::Shared(l) => {
                l.update_features(&p.psi, &p.x, fb.quality)?;
                let y = fb.quality - l.cfg.prior_mean;
                self.cfg.interaction_prior.observe(y, 1.0);
                true
            }
            QualityLearner::Disjoint(l) => {
                match self.space.actions.iter().position(|b| b.uid == a.uid) {
                    Some(idx) => {
                        l.update(idx as i64, &p.x, fb.quality)?;
                        true
                    }
                    None => false, // the action was retired; its arm is gone
                }
            }
        };
        let input_tokens = p.input_tokens;
        let retro_x = match &self.conservative {
            Some(c) if c.retro => p.x.clone(),
            _ => Vec::new(),
        };
        self.pending.complete(id, now_s);
        self.cost.observe(
            &self.space,
            &a,
            input_tokens,
            fb.output_tokens,
            samples,
            fb.latency_s,
        );
        self.pacer.observe_cost(cost_usd);
        if let Some(c) = self.conservative.as_mut() {
            c.complete(
                id,
                match c.metric {
                    Metric::Reward => reward,
                    Metric::Quality => fb.quality,
                },
                &retro_x,
            );
        }
        self.reestimate_interaction_prior();
        Ok(UpdateResult {
            reward,
            cost_usd,
            latency_s,
            learner_updated,
        })
    }

    /// The realised (cost, latency) of action `a` on a request: the measured values where
    /// given, else what the token counts (or the prediction made for the request) imply.
    /// Rejected when a derived value overflows.
    fn realised_usage(
        &self,
        a: &ActionDef,
        input_tokens: f64,
        prediction: &Prediction,
        fb: &Feedback,
        samples: f64,
    ) -> CoreResult<(f64, f64)> {
        let model = &self.space.models[a.model];
        let cost_usd = fb.cost_usd.unwrap_or_else(|| {
            let out = fb
                .output_tokens
                .unwrap_or(prediction.output_tokens_per_sample * samples);
            CostModel::realised_cost(model, input_tokens, out, samples)
        });
        let latency_s = fb.latency_s.unwrap_or(prediction.latency_s);
        for (what, v) in [("cost_usd", cost_usd), ("latency_s", latency_s)] {
            if !v.is_finite() {
                return Err(CoreError::NonFinite(format!(
                    "the realised {what} of this outcome overflows (input_tokens \
                     {input_tokens}, output_tokens {:?}); rejected before any state changed",
                    fb.output_tokens
                )));
            }
        }
        Ok((cost_usd, latency_s))
    }

    /// Learns from an outcome that no decision of this policy asked for: a sub-action observed
    /// for free inside a larger test-time-scaling run (the first 2 of 8 samples are a
    /// self-consistency-2 run), a full-information table used as a warm start, or another
    /// replica's feedback. Updates the quality learner and the cost model exactly as `update`
    /// would for a decision of action `index` on request `x`; the budget pacer is not touched
    /// (nothing was spent on this policy's behalf). Validated completely before anything changes.
    ///
    /// `weight` (> 0, default 1 in the bindings) counts the outcome that many times in the
    /// quality learner: below 1 for correlated side observations or a capped prior, so they
    /// cannot make the learner more confident than the evidence is worth. The cost model
    /// learns from the outcome once either way.
    pub fn observe(
        &mut self,
        x: &[f64],
        index: i64,
        input_tokens: f64,
        fb: Feedback,
        weight: f64,
    ) -> CoreResult<UpdateResult> {
        if !(weight.is_finite() && weight > 0.0 && weight <= 1e6) {
            return Err(CoreError::Config(format!(
                "weight must be in (0, 1e6], got {weight}"
            )));
        }
        let i = self.action_at(index)?;
        self.learner.as_learner().check_x(x)?;
        let scaled: Vec<f64>;
        let x: &[f64] = if self.cfg.interaction_scale == 1.0 {
            x
        } else {
            scaled = x.iter().map(|v| v * self.cfg.interaction_scale).collect();
            &scaled
        };
        check_finite_scalar("input_tokens", input_tokens)?;
        if input_tokens < 0.0 {
            return Err(CoreError::Config(format!(
                "input_tokens must be >= 0, got {input_tokens}"
            )));
        }
        check_feedback(&fb)?;
        let a = self.space.actions[i];
        let samples = samples_used(&a, &fb)?;
        let prediction = self.cost.predict(&self.space, &a, input_tokens);
        let (cost_usd, latency_s) =
            self.realised_usage(&a, input_tokens, &prediction, &fb, samples)?;
        let reward = self.checked_reward(fb.quality, cost_usd, latency_s)?;
        // the last step that can fail, and it fails without changing anything
        match &mut self.learner {
            QualityLearner::Shared(l) => {
                let psi = self.space.psi(&a);
                l.update_features_weighted(&psi, x, fb.quality, weight)?;
                let y = fb.quality - l.cfg.prior_mean;
                self.cfg.interaction_prior.observe(y, weight);
            }
            QualityLearner::Disjoint(l) if weight == 1.0 => l.update(index, x, fb.quality)?,
            QualityLearner::Disjoint(l) => {
                // one update of sqrt(w) x with residual sqrt(w) (quality - prior_mean)
                let sw = weight.sqrt();
                let xs: Vec<f64> = x.iter().map(|v| v * sw).collect();
                let prior = l.cfg.prior_mean;
                l.update(index, &xs, prior + (fb.quality - prior) * sw)?;
            }
        }
        self.cost.observe(
            &self.space,
            &a,
            input_tokens,
            fb.output_tokens,
            samples,
            fb.latency_s,
        );
        self.reestimate_interaction_prior();
        Ok(UpdateResult {
            reward,
            cost_usd,
            latency_s,
            learner_updated: true,
        })
    }

    /// With `interaction_prior` on auto, re-chooses the interaction ridge multiplier by
    /// empirical Bayes when the learner's update count reaches the next point of its geometric
    /// schedule (`crate::evidence`). Cannot fail: a candidate that does not factorise is
    /// skipped, and a failed switch keeps the current multiplier.
    fn reestimate_interaction_prior(&mut self) {
        let QualityLearner::Shared(l) = &mut self.learner else {
            return;
        };
        let ip = &mut self.cfg.interaction_prior;
        if !ip.due() {
            return;
        }
        let coords = interaction_coords(l.dim, l.p);
        let best = best_mult(&l.model, &coords, l.cfg.ridge, 1.0, ip.yy, ip.n);
        if best != ip.mult && l.set_mean_mult(best).is_ok() {
            ip.mult = best;
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
        match &mut learner {
            QualityLearner::Shared(l) => {
                let psi: Vec<f64> = space.actions[first..]
                    .iter()
                    .flat_map(|a| space.psi(a))
                    .collect();
                l.add_actions(&psi)?;
            }
            QualityLearner::Disjoint(l) => {
                l.add_actions(actions.len())?;
            }
        }
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
        let mapping = match &mut learner {
            QualityLearner::Shared(l) => l.remove_actions(&idx)?,
            QualityLearner::Disjoint(l) => l.remove_actions(&idx)?,
        };
        self.learner = learner;
        self.space.actions.retain(|a| a.model != mi);
        self.space.models[mi].retired = true;
        Ok(mapping)
    }

    /// Turns conservative mode on around the action at `index` (or off with `None`); with
    /// `floor = Some(tolerance)` quality-floor mode instead (the promise is about quality, with
    /// an additive tolerance per request; `delta` is ignored). Turning it on (again) starts a
    /// fresh account: the promise is about the stream from now on.
    pub fn set_conservative(
        &mut self,
        index: Option<i64>,
        delta: f64,
        confidence: f64,
        quality_sd: f64,
        quality_range: (f64, f64),
        floor: Option<f64>,
    ) -> CoreResult<()> {
        let Some(index) = index else {
            self.conservative = None;
            return Ok(());
        };
        let i = self.action_at(index)?;
        let uid = self.space.actions[i].uid;
        let c = match floor {
            None => Conservative::new(uid, delta, confidence, quality_sd, quality_range)?,
            Some(tolerance) => {
                Conservative::quality_floor(uid, tolerance, confidence, quality_sd, quality_range)?
            }
        };
        self.conservative = Some(c);
        Ok(())
    }

    /// The baseline's current index (None when conservative mode is off or its action was
    /// retired, which suspends the mode).
    pub fn conservative_baseline(&self) -> Option<usize> {
        let c = self.conservative.as_ref()?;
        self.space
            .actions
            .iter()
            .position(|a| a.uid == c.baseline_uid)
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

    /// Predictions for every action at this request size (for planners and explanations).
    pub fn predict_all(&self, input_tokens: f64) -> CoreResult<Vec<Prediction>> {
        check_finite_scalar("input_tokens", input_tokens)?;
        if input_tokens < 0.0 {
            return Err(CoreError::Config(format!(
                "input_tokens must be >= 0, got {input_tokens}"
            )));
        }
        Ok(self
            .space
            .actions
            .iter()
            .map(|a| self.cost.predict(&self.space, a, input_tokens))
            .collect())
    }

    /// Quality means and bonuses for request features `x` (scaled by `interaction_scale` as
    /// `select` does).
    pub fn quality_scores(&self, x: &[f64]) -> CoreResult<(Vec<f64>, Vec<f64>)> {
        if self.cfg.interaction_scale == 1.0 {
            return self.learner.as_learner().scores(x);
        }
        let xs: Vec<f64> = x.iter().map(|v| v * self.cfg.interaction_scale).collect();
        self.learner.as_learner().scores(&xs)
    }

    // ---- state ----

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.usize(self.dim);
        w.usize(self.space.model_slots);
        w.u64(self.space.next_uid);
        w.usize(self.space.models.len());
        for m in &self.space.models {
            w.str(&m.name);
            w.f64(m.price_in_per_mtok);
            w.f64(m.price_out_per_mtok);
            w.u32(m.parallelism);
            w.bool(m.bills_prompt_once);
            w.f64(m.latency_in_s_per_token);
            w.f64(m.latency_out_s_per_token);
            w.f64(m.prior_output_tokens);
            w.bool(m.retired);
        }
        w.usize(self.space.actions.len());
        for a in &self.space.actions {
            w.usize(a.model);
            w.u8(a.strategy as u8);
            w.u32(a.n);
            w.u64(a.uid);
        }
        match &self.learner {
            QualityLearner::Disjoint(l) => {
                w.u8(0);
                l.write_payload(&mut w);
            }
            QualityLearner::Shared(l) => {
                w.u8(1);
                l.write_payload(&mut w);
            }
        }
        self.cost.write(&mut w);
        self.pacer.write(&mut w);
        w.f64(self.weights.quality);
        w.f64(self.weights.cost);
        w.f64(self.weights.latency);
        w.f64(self.cfg.cost_scale);
        w.f64(self.cfg.latency_scale);
        match self.cfg.exploration {
            Exploration::Greedy => {
                w.u8(0);
                w.f64(0.0)
            }
            Exploration::Epsilon(e) => {
                w.u8(1);
                w.f64(e)
            }
            Exploration::Softmax(t) => {
                w.u8(2);
                w.f64(t)
            }
        }
        w.f64(self.cfg.ttl_s);
        w.usize(self.cfg.capacity);
        w.str(&self.cfg.feature_version);
        w.u64(self.rng.state);
        w.u64(self.next_id);
        // Pending decisions survive a restart, in arrival order.
        let live: Vec<u64> = self
            .pending
            .order
            .iter()
            .copied()
            .filter(|id| self.pending.map.contains_key(id))
            .collect();
        w.usize(live.len());
        for id in live {
            if let Some(p) = self.pending.map.get(&id) {
                w.u64(id);
                w.f64s(&p.x);
                w.u64(p.action.uid);
                w.usize(p.action.model);
                w.u8(p.action.strategy as u8);
                w.u32(p.action.n);
                w.f64s(&p.psi);
                w.f64(p.input_tokens);
                let pr = p.prediction;
                for v in [
                    pr.output_tokens_per_sample,
                    pr.samples,
                    pr.rounds,
                    pr.cost_usd,
                    pr.latency_s,
                ] {
                    w.f64(v);
                }
                w.f64(p.created_s);
            }
        }
        let done: Vec<u64> = self.pending.done_order.iter().copied().collect();
        w.usize(done.len());
        for id in done {
            w.u64(id);
        }
        // format 3: conservative mode
        match &self.conservative {
            None => w.bool(false),
            Some(c) => {
                w.u8(3); // layout 3: with the metric, tolerance and floor multiplier
                c.write(&mut w);
            }
        }
        // format 4
        w.f64(self.cfg.interaction_scale);
        // format 5
        self.cfg.interaction_prior.write(&mut w);
        w.finish(Kind::Policy)
    }

    pub fn from_bytes(bytes: &[u8]) -> CoreResult<Policy> {
        let mut r = Reader::open(bytes, Kind::Policy)?;
        let st = |e: CoreError| CoreError::State(e.to_string());
        let dim = r.dim("dim", 1 << 16)?;
        let model_slots = r.dim("model_slots", 1024)?;
        let next_uid = r.u64()?;
        let n_models = r.dim("n_models", 1024)?;
        let mut space = Space::new(model_slots).map_err(st)?;
        space.next_uid = next_uid;
        for slot in 0..n_models {
            let m = ModelInfo {
                name: r.str()?,
                price_in_per_mtok: r.f64()?,
                price_out_per_mtok: r.f64()?,
                parallelism: r.u32()?,
                bills_prompt_once: r.bool()?,
                latency_in_s_per_token: r.f64()?,
                latency_out_s_per_token: r.f64()?,
                prior_output_tokens: r.f64()?,
                slot,
                retired: r.bool()?,
            };
            m.validate().map_err(st)?;
            if slot >= model_slots {
                return Err(CoreError::State("more models than slots".into()));
            }
            space.models.push(m);
        }
        let n_actions = r.dim("n_actions", 1 << 16)?;
        for _ in 0..n_actions {
            let model = r.usize()?;
            let strategy = Strategy::from_u8(r.u8()?)?;
            let n = r.u32()?;
            let uid = r.u64()?;
            if model >= space.models.len() || n == 0 || uid >= next_uid {
                return Err(CoreError::State(
                    "action refers to an unknown model or uid".into(),
                ));
            }
            space.actions.push(ActionDef {
                model,
                strategy,
                n,
                uid,
            });
        }
        let learner = match r.u8()? {
            0 => QualityLearner::Disjoint(LinUcb::read_payload(&mut r)?),
            1 => QualityLearner::Shared(SharedLinUcb::read_payload(&mut r)?),
            k => return Err(CoreError::State(format!("unknown learner kind {k}"))),
        };
        {
            let l = match &learner {
                QualityLearner::Disjoint(l) => l as &dyn Learner,
                QualityLearner::Shared(l) => l as &dyn Learner,
            };
            if l.n_actions() != space.actions.len() || l.dim() != dim {
                return Err(CoreError::State(
                    "learner does not match the action space".into(),
                ));
            }
        }
        let cost = CostModel::read(&mut r, space.models.len())?;
        let pacer = Pacer::read(&mut r)?;
        let weights = Weights {
            quality: r.f64()?,
            cost: r.f64()?,
            latency: r.f64()?,
        };
        weights.validate().map_err(st)?;
        let cost_scale = r.finite_f64("cost_scale")?;
        let latency_scale = r.finite_f64("latency_scale")?;
        let exploration = match (r.u8()?, r.f64()?) {
            (0, _) => Exploration::Greedy,
            (1, e) => Exploration::Epsilon(e),
            (2, t) => Exploration::Softmax(t),
            (k, _) => return Err(CoreError::State(format!("unknown exploration kind {k}"))),
        };
        exploration.validate().map_err(st)?;
        let ttl_s = r.finite_f64("ttl_s")?;
        let capacity = r.dim("capacity", 1 << 32)?;
        let feature_version = r.str()?;
        let rng = SplitMix64::new(r.u64()?);
        let next_id = r.u64()?;
        let mut cfg = PolicyConfig {
            cost_scale,
            latency_scale,
            exploration,
            ttl_s,
            capacity,
            feature_version,
            interaction_scale: 1.0, // format 4 stores it at the end (read below)
            interaction_prior: InteractionPrior::off(), // format 5, likewise
        };
        let mut pending = PendingStore::new(capacity.max(1), ttl_s);
        let n_pending = r.dim("n_pending", 1 << 32)?;
        let p_len = match &learner {
            QualityLearner::Shared(_) => space.p(),
            QualityLearner::Disjoint(_) => 0,
        };
        for _ in 0..n_pending {
            let id = r.u64()?;
            let x = r.f64s("pending.x", dim)?;
            let uid = r.u64()?;
            let model = r.usize()?;
            let strategy = Strategy::from_u8(r.u8()?)?;
            let n = r.u32()?;
            if model >= space.models.len() || n == 0 || id >= next_id {
                return Err(CoreError::State("pending decision is inconsistent".into()));
            }
            let psi = r.f64s("pending.psi", p_len)?;
            let input_tokens = r.finite_f64("input_tokens")?;
            let prediction = Prediction {
                output_tokens_per_sample: r.finite_f64("pred")?,
                samples: r.finite_f64("pred")?,
                rounds: r.finite_f64("pred")?,
                cost_usd: r.finite_f64("pred")?,
                latency_s: r.finite_f64("pred")?,
            };
            let created_s = r.finite_f64("created_s")?;
            let previous = pending.map.insert(
                id,
                Pending {
                    x,
                    action: ActionDef {
                        model,
                        strategy,
                        n,
                        uid,
                    },
                    psi,
                    input_tokens,
                    prediction,
                    created_s,
                },
            );
            if previous.is_some() {
                return Err(CoreError::State(format!(
                    "pending decision {id} is listed twice"
                )));
            }
            pending.order.push_back(id);
        }
        let n_done = r.dim("n_done", 1 << 32)?;
        for _ in 0..n_done {
            let id = r.u64()?;
            if !pending.done.insert(id) {
                return Err(CoreError::State(format!(
                    "answered decision {id} is listed twice"
                )));
            }
            pending.done_order.push_back(id);
        }
        let conservative = if r.version >= 3 {
            match r.u8()? {
                0 => None,
                layout @ (1..=3) => Some(Conservative::read(&mut r, 1 << 32, layout)?),
                k => {
                    return Err(CoreError::State(format!(
                        "unknown conservative-mode layout {k}"
                    )))
                }
            }
        } else {
            None
        };
        let interaction_scale = if r.version >= 4 { r.f64()? } else { 1.0 };
        check_interaction_scale(interaction_scale).map_err(st)?;
        cfg.interaction_scale = interaction_scale;
        cfg.interaction_prior = if r.version >= 5 {
            InteractionPrior::read(&mut r)?
        } else {
            InteractionPrior::off()
        };
        let mut learner = learner;
        if let QualityLearner::Shared(l) = &mut learner {
            l.set_mean_mult(cfg.interaction_prior.mult)
                .map_err(|e| match e {
                    CoreError::Memory(_) => e,
                    e => CoreError::State(e.to_string()),
                })?;
        }
        r.finish()?;
        check_finite("cost scales", &[cost_scale, latency_scale])?;
        let me = Policy {
            space,
            learner,
            cost,
            pacer,
            weights,
            cfg,
            rng,
            pending,
            next_id,
            dim,
            conservative,
        };
        me.check_invariants()
            .map_err(|e| CoreError::State(format!("inconsistent policy state: {e}")))?;
        Ok(me)
    }

    /// Every cross-field invariant the methods rely on (indexing, binary searches, id
    /// arithmetic). A checksum only proves the bytes are the ones written; this proves they
    /// describe a policy the code can run, so a crafted or buggy blob is a `StateError` at load
    /// instead of a panic later (for example a shared learner narrower than the action space
    /// indexing out of bounds after `add_model`). Returns the first violation as a message.
    pub fn check_invariants(&self) -> Result<(), String> {
        let space = &self.space;
        if space.models.len() > space.model_slots {
            return Err("more models than model slots".into());
        }
        for (i, m) in space.models.iter().enumerate() {
            m.validate().map_err(|e| e.to_string())?;
            if m.slot != i {
                return Err(format!("model {:?} is not in its own slot", m.name));
            }
            if space.models[..i].iter().any(|o| o.name == m.name) {
                return Err(format!("model name {:?} is registered twice", m.name));
            }
        }
        let valid_action = |a: &ActionDef| -> Result<(), String> {
            if a.model >= space.models.len() {
                return Err(format!("an action refers to unknown model {}", a.model));
            }
            if a.n == 0 || a.n > 4096 || (a.strategy == Strategy::Single && a.n != 1) {
                return Err(format!(
                    "an action has an invalid ({}, n = {})",
                    a.strategy.name(),
                    a.n
                ));
            }
            if a.uid >= space.next_uid {
                return Err(format!(
                    "action uid {} is not below the uid counter {}",
                    a.uid, space.next_uid
                ));
            }
            Ok(())
        };
        let mut uids = HashSet::with_capacity(space.actions.len());
        let mut triples = HashSet::with_capacity(space.actions.len());
        for a in &space.actions {
            valid_action(a)?;
            if space.models[a.model].retired {
                return Err(format!("action uid {} belongs to a retired model", a.uid));
            }
            if !uids.insert(a.uid) || !triples.insert((a.model, a.strategy, a.n)) {
                return Err(format!("action uid {} is a duplicate", a.uid));
            }
        }
        if space.actions.is_empty() {
            return Err("the action space is empty".into());
        }
        let learner = self.learner.as_learner();
        if learner.n_actions() != space.actions.len() || learner.dim() != self.dim {
            return Err(format!(
                "the learner has {} actions of dimension {}, the policy {} of dimension {}",
                learner.n_actions(),
                learner.dim(),
                space.actions.len(),
                self.dim
            ));
        }
        if let QualityLearner::Shared(l) = &self.learner {
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
            if l.mean_mult != self.cfg.interaction_prior.mult
                || l.mean_model.is_some() != (l.mean_mult != 1.0)
            {
                return Err(format!(
                    "the shared learner's means use interaction ridge multiplier {}, the policy's \
                     prior is {}",
                    l.mean_mult, self.cfg.interaction_prior.mult
                ));
            }
        } else if self.cfg.interaction_prior.mult != 1.0 || self.cfg.interaction_prior.auto {
            return Err("an interaction prior on a disjoint learner".into());
        }
        if self.cost.latency.len() != space.models.len()
            || self.cost.out_tokens.len() != 4 * space.models.len()
        {
            return Err("the cost model does not cover every model".into());
        }
        if self
            .cost
            .adaptive_samples
            .iter()
            .any(|e| e.0 >= space.next_uid)
        {
            return Err("the cost model refers to an action uid never issued".into());
        }
        for (what, v) in [
            ("cost_scale", self.cfg.cost_scale),
            ("latency_scale", self.cfg.latency_scale),
            ("ttl_s", self.cfg.ttl_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{what} must be finite and > 0, got {v}"));
            }
        }
        let store = &self.pending;
        if self.cfg.capacity == 0
            || store.capacity != self.cfg.capacity
            || store.ttl_s != self.cfg.ttl_s
        {
            return Err("pending-store capacity or TTL disagrees with the configuration".into());
        }
        if store.map.len() > store.capacity || store.done_order.len() > store.capacity {
            return Err(format!(
                "{} pending and {} answered decisions exceed the capacity {}",
                store.map.len(),
                store.done_order.len(),
                store.capacity
            ));
        }
        if store.done.len() != store.done_order.len() {
            return Err("answered decision ids are inconsistent".into());
        }
        let p_len = match &self.learner {
            QualityLearner::Shared(_) => space.p(),
            QualityLearner::Disjoint(_) => 0,
        };
        let queued: HashSet<u64> = store.order.iter().copied().collect();
        let by_uid: HashMap<u64, &ActionDef> = space.actions.iter().map(|a| (a.uid, a)).collect();
        for (&id, p) in &store.map {
            if id >= self.next_id {
                return Err(format!(
                    "pending decision {id} is not below the id counter {}",
                    self.next_id
                ));
            }
            if store.done.contains(&id) {
                return Err(format!("decision {id} is both pending and answered"));
            }
            if !queued.contains(&id) {
                return Err(format!(
                    "pending decision {id} is missing from the expiry queue"
                ));
            }
            valid_action(&p.action)?;
            match by_uid.get(&p.action.uid) {
                Some(a) if **a != p.action => {
                    return Err(format!(
                        "pending decision {id} disagrees with action uid {}",
                        a.uid
                    ))
                }
                Some(_) => {}
                // an action leaves the space only when its model is retired
                None if !space.models[p.action.model].retired => {
                    return Err(format!(
                        "pending decision {id} refers to action uid {} of an active model, \
                         which is not in the action space",
                        p.action.uid
                    ))
                }
                None => {}
            }
            if p.x.len() != self.dim || p.x.iter().any(|v| !v.is_finite()) {
                return Err(format!(
                    "pending decision {id} has invalid request features"
                ));
            }
            if p.psi.len() != p_len || (p_len > 0 && !close(&p.psi, &space.psi(&p.action))) {
                return Err(format!("pending decision {id} has invalid action features"));
            }
            let pr = &p.prediction;
            if [
                p.input_tokens,
                pr.output_tokens_per_sample,
                pr.samples,
                pr.rounds,
                pr.cost_usd,
                pr.latency_s,
            ]
            .iter()
            .any(|v| !(v.is_finite() && *v >= 0.0))
                || !p.created_s.is_finite()
            {
                return Err(format!("pending decision {id} has an invalid prediction"));
            }
        }
        if let Some(id) = store.done_order.iter().find(|id| **id >= self.next_id) {
            return Err(format!(
                "answered decision {id} is not below the id counter {}",
                self.next_id
            ));
        }
        let pacer = &self.pacer;
        for (what, v) in [
            ("lambda", pacer.lambda),
            ("step", pacer.step),
            ("gap", pacer.gap_s),
            ("total cost", pacer.total_cost_usd),
            ("debt", pacer.debt),
            ("carry-over", pacer.carryover),
        ] {
            if !v.is_finite() {
                return Err(format!("pacer {what} is not finite"));
            }
        }
        if pacer.last_request_s.is_infinite() {
            return Err("pacer last request time is infinite".into());
        }
        Ok(())
    }
}

/// Equal up to rounding (psi is recomputed from prices with `ln`, which may differ in the last
/// bit between platforms).
fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-9 * y.abs().max(1.0))
}

/// Samples an outcome of action `a` used: `fb.samples_used` (default `n`), within 1..=n.
fn samples_used(a: &ActionDef, fb: &Feedback) -> CoreResult<f64> {
    let n = a.n as f64;
    let samples = fb.samples_used.unwrap_or(n);
    if !(1.0..=n).contains(&samples) {
        return Err(CoreError::Config(format!(
            "samples_used must be in 1..={n} for this action, got {samples}"
        )));
    }
    Ok(samples)
}

/// Feedback values: quality finite, the optional measurements finite and >= 0.
fn check_interaction_scale(s: f64) -> CoreResult<()> {
    if s.is_finite() && (0.0..=1.0).contains(&s) {
        Ok(())
    } else {
        Err(CoreError::Config(format!(
            "interaction_scale must be in [0, 1], got {s}"
        )))
    }
}

fn check_feedback(fb: &Feedback) -> CoreResult<()> {
    check_finite_scalar("quality", fb.quality)?;
    for (what, v) in [
        ("cost_usd", fb.cost_usd),
        ("latency_s", fb.latency_s),
        ("output_tokens", fb.output_tokens),
        ("samples_used", fb.samples_used),
    ] {
        if let Some(v) = v {
            check_finite_scalar(what, v)?;
            if v < 0.0 {
                return Err(CoreError::Config(format!("{what} must be >= 0, got {v}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, price: f64) -> ModelInfo {
        ModelInfo {
            name: name.into(),
            price_in_per_mtok: price,
            price_out_per_mtok: 2.0 * price,
            parallelism: 4,
            bills_prompt_once: false,
            latency_in_s_per_token: 1e-4,
            latency_out_s_per_token: 1e-2,
            prior_output_tokens: 200.0,
            slot: 0,
            retired: false,
        }
    }

    fn policy(shared: bool, budget: Budget) -> Policy {
        Policy::new(
            vec![
                (
                    model("a", 1.0),
                    vec![(Strategy::Single, 1), (Strategy::SelfConsistency, 4)],
                ),
                (
                    model("b", 5.0),
                    vec![(Strategy::Single, 1), (Strategy::BestOfN, 8)],
                ),
            ],
            3,
            2,
            shared,
            Config {
                alpha: 1.0,
                ridge: 1.0,
                discount: 1.0,
                prior_mean: 0.0,
            },
            Weights {
                quality: 1.0,
                cost: 0.4,
                latency: 0.1,
            },
            PolicyConfig {
                cost_scale: f64::NAN,
                latency_scale: f64::NAN,
                exploration: Exploration::Greedy,
                ttl_s: 1e9,
                capacity: 1000,
                feature_version: String::new(),
                interaction_scale: 1.0,
                interaction_prior: InteractionPrior::off(),
            },
            budget,
            0.05,
            100.0,
            7,
        )
        .unwrap()
    }

    /// Equal state (compared by bytes: `last_request_s` is NaN before the first request and
    /// NaN != NaN) and equal bookkeeping.
    fn assert_same(a: &Policy, b: &Policy) {
        assert!(a.to_bytes() == b.to_bytes(), "the state changed");
        assert_eq!(a.pending.bookkeeping_len(), b.pending.bookkeeping_len());
    }

    fn fb(quality: f64) -> Feedback {
        Feedback {
            quality,
            ..Feedback::default()
        }
    }

    /// The quality floor's retrospective counterfactual: the summed quality of an action over
    /// several requests, from the features' sum, equals the sum of its per-request means, and
    /// its width is that of the summed joint feature vector (checked against the learner's own
    /// statistics, for both learners).
    #[test]
    fn sum_mean_width_is_the_mean_and_width_of_the_summed_features() {
        for shared in [true, false] {
            let mut p = policy(shared, Budget::None);
            p.learner.cfg_mut().prior_mean = 0.3;
            let xs = [[1.0, 0.2], [1.0, -0.5], [0.3, 0.9], [1.0, 0.0]];
            for (t, x) in xs.iter().enumerate() {
                let d = p.select(x, 100.0, None, None, None, t as f64).unwrap();
                p.update(d.id, fb(0.1 * t as f64 + 0.2), t as f64).unwrap();
            }
            let k = p.n_actions();
            let queries = [[0.5, 0.5], [1.0, -1.0], [0.2, 0.1]];
            let mut sx = [0.0; 2];
            let mut total = vec![0.0; k];
            for q in &queries {
                let (mut m, mut w) = (vec![0.0; k], vec![0.0; k]);
                p.learner.means_and_widths(q, &mut m, &mut w).unwrap();
                for (t, v) in total.iter_mut().zip(&m) {
                    *t += v;
                }
                sx[0] += q[0];
                sx[1] += q[1];
            }
            for (a, want) in total.iter().enumerate() {
                let (mean, width) = p.learner.sum_mean_width(a, queries.len() as f64, &sx);
                assert!((mean - want).abs() < 1e-9, "{shared} {a}: {mean} vs {want}");
                // the width of the summed phi: for the shared learner phi(sum) with the
                // constant block n; for the disjoint one the arm's ridge at sum x
                let phi: Vec<f64> = match &p.learner {
                    QualityLearner::Shared(l) => {
                        let mut v = vec![0.0; l.joint_dim()];
                        for q in &queries {
                            for (s, e) in v.iter_mut().zip(l.phi(q, a)) {
                                *s += e;
                            }
                        }
                        v
                    }
                    QualityLearner::Disjoint(_) => sx.to_vec(),
                };
                let var = match &p.learner {
                    QualityLearner::Shared(l) => l.model.mean_and_var(&phi).1,
                    QualityLearner::Disjoint(l) => l.ridge(l.ridge_key(a)).mean_and_var(&phi).1,
                };
                assert!((width - var.sqrt()).abs() < 1e-9, "{shared} {a}");
                assert!(width > 0.0);
            }
        }
    }

    /// D16: one old decision left pending while millions of others are answered must not make
    /// the store's bookkeeping grow with the number of decisions.
    #[test]
    fn pending_bookkeeping_stays_bounded_behind_an_old_decision() {
        let mut p = policy(false, Budget::None);
        p.select(&[0.1, 0.2], 100.0, None, None, None, 0.0).unwrap(); // never answered
        let mut peak = 0;
        for t in 1..50_000 {
            let d = p
                .select(&[0.3, -0.1], 100.0, None, None, None, t as f64)
                .unwrap();
            p.update(d.id, fb(0.5), t as f64).unwrap();
            peak = peak.max(p.pending.bookkeeping_len());
        }
        assert_eq!(p.pending.len(), 1);
        // live (1) + stale order (< 2 + slack) + remembered answers (capacity, twice)
        assert!(peak <= 1 + 2 + COMPACT_SLACK + 1 + 2 * 1000, "peak {peak}");
    }

    /// D15: an update refused for any reason leaves everything as it was, including the other
    /// pending decisions an expiry pass would have dropped.
    #[test]
    fn refused_update_changes_nothing() {
        for shared in [false, true] {
            let mut p = policy(shared, Budget::PerRequest(1e-4));
            p.cfg.ttl_s = 10.0;
            p.pending.ttl_s = 10.0;
            let old = p.select(&[0.1, 0.2], 100.0, None, None, None, 0.0).unwrap();
            let d = p.select(&[0.1, 0.2], 100.0, None, None, None, 5.0).unwrap();
            let before = p.clone();
            // at t = 12 the first decision has expired; samples_used = 0 is invalid
            let bad = Feedback {
                samples_used: Some(0.0),
                ..fb(0.5)
            };
            assert!(matches!(
                p.update(d.id, bad, 12.0),
                Err(CoreError::Config(_))
            ));
            assert_same(&p, &before);
            let huge = Feedback {
                cost_usd: Some(f64::MAX),
                ..fb(0.5)
            };
            assert!(matches!(
                p.update(d.id, huge, 12.0),
                Err(CoreError::NonFinite(_))
            ));
            assert_same(&p, &before);
            assert_eq!(p.pending.len(), 2);
            p.update(d.id, fb(0.5), 12.0).unwrap();
            assert_eq!(
                p.pending.len(),
                0,
                "the expired decision went with the update"
            );
            // an update of the expired id itself is refused and drops it (and only it)
            let mut q = before.clone();
            assert!(matches!(
                q.update(old.id, fb(0.5), 12.0),
                Err(CoreError::ExpiredDecision(_))
            ));
            assert_eq!(q.pending.len(), 1);
            q.update(d.id, fb(0.5), 12.0).unwrap();
        }
    }

    /// D2: two updates of 1e308 dollars overflow the running total: the second is refused.
    #[test]
    fn spend_total_never_overflows() {
        let mut p = policy(true, Budget::PerRequest(1e-3));
        let a = p.select(&[0.1, 0.2], 100.0, None, None, None, 0.0).unwrap();
        let b = p.select(&[0.1, 0.2], 100.0, None, None, None, 0.0).unwrap();
        let big = Feedback {
            cost_usd: Some(1e308),
            ..fb(0.5)
        };
        // the reward -0.4 * 1e308 / cost_scale overflows already
        assert!(matches!(
            p.update(a.id, big, 1.0),
            Err(CoreError::NonFinite(_))
        ));
        p.weights.cost = 0.0;
        p.update(a.id, big, 1.0).unwrap();
        let before = p.clone();
        assert!(matches!(
            p.update(b.id, big, 1.0),
            Err(CoreError::NonFinite(_))
        ));
        assert_same(&p, &before);
        assert!(p.pacer.lambda.is_finite() && p.pacer.debt.is_finite());
        Policy::from_bytes(&p.to_bytes()).unwrap();
    }

    #[test]
    fn exhausted_decision_ids_are_an_error_not_a_wrap() {
        let mut p = policy(false, Budget::None);
        p.next_id = u64::MAX;
        let before = p.clone();
        assert!(matches!(
            p.select(&[0.1, 0.2], 100.0, None, None, None, 0.0),
            Err(CoreError::State(_))
        ));
        assert_same(&p, &before);
    }

    /// D3: invariants a checksum cannot see are checked at load.
    #[test]
    fn invariants_hold_for_valid_policies_and_catch_a_narrow_learner() {
        let mut p = policy(true, Budget::None);
        p.select(&[0.1, 0.2], 100.0, None, None, None, 0.0).unwrap();
        p.check_invariants().unwrap();
        p.add_model(model("c", 2.0), &[(Strategy::Adaptive, 4)])
            .unwrap();
        p.retire_model("a").unwrap();
        p.check_invariants().unwrap();
        let mut bad = p.clone();
        if let QualityLearner::Shared(l) = &mut bad.learner {
            // a learner built for one model slot fewer: p - 1 features per action
            let k = l.k;
            let narrow = l.p - 1;
            *l = SharedLinUcb::new(vec![0.0; k * narrow], k, narrow, 2, l.cfg).unwrap();
        }
        let err = Policy::from_bytes(&bad.to_bytes()).unwrap_err();
        assert!(
            matches!(&err, CoreError::State(m) if m.contains("action features")),
            "{err}"
        );
    }
}
