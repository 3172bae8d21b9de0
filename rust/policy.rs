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

use crate::cost::{CostModel, Prediction};
use crate::error::{check_finite, check_finite_scalar, CoreError, CoreResult};
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
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub cost_scale: f64,
    pub latency_scale: f64,
    pub exploration: Exploration,
    pub ttl_s: f64,
    pub capacity: usize,
    pub feature_version: String,
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
    pub lambda: f64,
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
    }

    /// Checks that `id` can take feedback now, without removing it.
    fn check(&mut self, id: u64, next_id: u64, now_s: f64) -> CoreResult<()> {
        if id >= next_id {
            return Err(CoreError::UnknownDecision(id));
        }
        if self.done.contains(&id) {
            return Err(CoreError::DuplicateUpdate(id));
        }
        self.expire(now_s);
        if self.map.contains_key(&id) {
            Ok(())
        } else {
            Err(CoreError::ExpiredDecision(id))
        }
    }

    fn complete(&mut self, id: u64) -> Option<Pending> {
        let p = self.map.remove(&id)?;
        self.done.insert(id);
        self.done_order.push_back(id);
        while self.done_order.len() > self.capacity {
            if let Some(old) = self.done_order.pop_front() {
                self.done.remove(&old);
            }
        }
        Some(p)
    }
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
            QualityLearner::Shared(SharedLinUcb::new(
                space.psi_matrix(),
                k,
                space.p(),
                dim,
                learner_cfg,
            )?)
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
        })
    }

    pub fn n_actions(&self) -> usize {
        self.space.actions.len()
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
        let learner = self.learner.as_learner();
        learner.check_x(x)?;
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
        learner.finite_scores_into(x, &mut qmean, &mut qbonus)?;
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
        let w = self.weights;
        let lambda = self.pacer.lambda;
        let cs = self.cfg.cost_scale;
        let ls = self.cfg.latency_scale;
        let mean_of = |i: usize| -> f64 {
            w.quality * qmean[i]
                - (w.cost + lambda) * preds[i].cost_usd / cs
                - w.latency * preds[i].latency_s / ls
        };

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
        pruned.sort_by_key(|e| e.0);
        let pos = candidates.iter().position(|&c| c == chosen).unwrap_or(0);
        let propensity = probabilities.get(pos).copied().unwrap_or(1.0);

        let a = self.space.actions[chosen];
        let id = self.next_id;
        self.next_id += 1;
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
            explored,
            fallback,
            lambda,
            candidates,
            probabilities,
            pruned,
            created_s: now_s,
        })
    }

    /// Realised reward under the current weights.
    pub fn reward(&self, quality: f64, cost_usd: f64, latency_s: f64) -> f64 {
        self.weights.quality * quality
            - self.weights.cost * cost_usd / self.cfg.cost_scale
            - self.weights.latency * latency_s / self.cfg.latency_scale
    }

    /// Feedback for a decision. Validated completely before anything changes; an unknown,
    /// expired or already-updated id is rejected.
    pub fn update(&mut self, id: u64, fb: Feedback, now_s: f64) -> CoreResult<UpdateResult> {
        check_feedback(&fb)?;
        check_finite_scalar("now_s", now_s)?;
        self.pending.check(id, self.next_id, now_s)?;
        let p = match self.pending.map.get(&id) {
            Some(p) => p,
            None => return Err(CoreError::ExpiredDecision(id)),
        };
        let samples = samples_used(&p.action, &fb)?;
        // Learner first: it is the only step that can fail (numerical overflow), and the
        // pending record is only consumed once it succeeded.
        let a = p.action;
        let learner_updated = match &mut self.learner {
            QualityLearner::Shared(l) => {
                l.update_features(&p.psi, &p.x, fb.quality)?;
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
        let p = self
            .pending
            .complete(id)
            .ok_or(CoreError::ExpiredDecision(id))?;
        let (cost_usd, latency_s) =
            self.learn_usage(&a, p.input_tokens, &p.prediction, &fb, samples);
        self.pacer.observe_cost(cost_usd);
        Ok(UpdateResult {
            reward: self.reward(fb.quality, cost_usd, latency_s),
            cost_usd,
            latency_s,
            learner_updated,
        })
    }

    /// Teaches the cost model what action `a` used on a request, and returns the realised
    /// (cost, latency): the measured values where given, else what the token counts (or the
    /// prediction made for the request) imply.
    fn learn_usage(
        &mut self,
        a: &ActionDef,
        input_tokens: f64,
        prediction: &Prediction,
        fb: &Feedback,
        samples: f64,
    ) -> (f64, f64) {
        self.cost.observe(
            &self.space,
            a,
            input_tokens,
            fb.output_tokens,
            samples,
            fb.latency_s,
        );
        let model = &self.space.models[a.model];
        let cost_usd = fb.cost_usd.unwrap_or_else(|| {
            let out = fb
                .output_tokens
                .unwrap_or(prediction.output_tokens_per_sample * samples);
            CostModel::realised_cost(model, input_tokens, out, samples)
        });
        (cost_usd, fb.latency_s.unwrap_or(prediction.latency_s))
    }

    /// Learns from an outcome that no decision of this policy asked for: a sub-action observed
    /// for free inside a larger test-time-scaling run (the first 2 of 8 samples are a
    /// self-consistency-2 run), a full-information table used as a warm start, or another
    /// replica's feedback. Updates the quality learner and the cost model exactly as `update`
    /// would for a decision of action `index` on request `x`; the budget pacer is not touched
    /// (nothing was spent on this policy's behalf). Validated completely before anything changes.
    pub fn observe(
        &mut self,
        x: &[f64],
        index: i64,
        input_tokens: f64,
        fb: Feedback,
    ) -> CoreResult<UpdateResult> {
        let k = self.n_actions();
        let i = usize::try_from(index)
            .ok()
            .filter(|i| *i < k)
            .ok_or(CoreError::UnknownAction {
                action: index,
                n_actions: k,
            })?;
        self.learner.as_learner().check_x(x)?;
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
        match &mut self.learner {
            QualityLearner::Shared(l) => {
                let psi = self.space.psi(&a);
                l.update_features(&psi, x, fb.quality)?;
            }
            QualityLearner::Disjoint(l) => l.update(index, x, fb.quality)?,
        }
        let (cost_usd, latency_s) = self.learn_usage(&a, input_tokens, &prediction, &fb, samples);
        Ok(UpdateResult {
            reward: self.reward(fb.quality, cost_usd, latency_s),
            cost_usd,
            latency_s,
            learner_updated: true,
        })
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

    pub fn set_weights(&mut self, w: Weights) -> CoreResult<()> {
        w.validate()?;
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

    pub fn quality_scores(&self, x: &[f64]) -> CoreResult<(Vec<f64>, Vec<f64>)> {
        self.learner.as_learner().scores(x)
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
        let cfg = PolicyConfig {
            cost_scale,
            latency_scale,
            exploration,
            ttl_s,
            capacity,
            feature_version,
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
            pending.map.insert(
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
            pending.order.push_back(id);
        }
        let n_done = r.dim("n_done", 1 << 32)?;
        for _ in 0..n_done {
            let id = r.u64()?;
            pending.done.insert(id);
            pending.done_order.push_back(id);
        }
        r.finish()?;
        check_finite("cost scales", &[cost_scale, latency_scale])?;
        Ok(Policy {
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
        })
    }
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
