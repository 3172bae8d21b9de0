//! The decision pipeline: validate the request, estimate every action (quality from the
//! learner, cost and latency from the cost model), prune by the request's limits, prune
//! dominated actions, score and draw with the exploration rule, let the conservative or
//! quality-floor guard overrule the draw, and record the decision as pending.

use crate::conservative::Metric;
use crate::cost::{Estimate, Prediction};
use crate::error::{check_finite_scalar, CoreError, CoreResult};
use crate::prune::{dominated, PruneReason};

use super::{check_input_tokens, Decision, Pending, Policy, Request, Weights, MIN_EXPLORED_OBS};

/// What the learner and the cost model say about every action for one request.
pub(super) struct Estimates {
    pub qmean: Vec<f64>,
    pub qbonus: Vec<f64>,
    /// Alpha-free confidence widths (conservative modes only, which need them for their
    /// bounds; empty otherwise).
    pub qwidth: Vec<f64>,
    pub preds: Vec<Prediction>,
    /// Point and optimistic cost/latency estimates (`preds[i] == ests[i].point`).
    pub ests: Vec<Estimate>,
    /// Whether each action has `MIN_EXPLORED_OBS` outcomes of its own (dominance pruning
    /// leaves the others in the candidates).
    pub explored: Vec<bool>,
}

/// The terms a decision is ranked with: the reward weights (in quality-floor mode with its
/// multiplier on the quality weight), the pacer's price on cost and the scales.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ranking {
    pub w: Weights,
    pub lambda: f64,
    pub cost_scale: f64,
    pub latency_scale: f64,
    /// Quality-floor mode's multiplier (None in any other mode).
    pub quality_multiplier: Option<f64>,
}

impl Ranking {
    /// Predicted reward, cost priced at `w_c + lambda`, without the exploration bonus.
    pub fn mean(&self, e: &Estimates, i: usize) -> f64 {
        self.w.quality * e.qmean[i]
            - (self.w.cost + self.lambda) * e.preds[i].cost_usd / self.cost_scale
            - self.w.latency * e.preds[i].latency_s / self.latency_scale
    }

    /// What the argmax maximises: optimistic in quality (mean plus the exploration bonus),
    /// cost and latency alike (the cost model's optimistic estimates, which equal the point
    /// predictions once an action's model has data of its own).
    pub fn score(&self, e: &Estimates, i: usize) -> f64 {
        self.w.quality * (e.qmean[i] + e.qbonus[i])
            - (self.w.cost + self.lambda) * e.ests[i].cost_usd_low / self.cost_scale
            - self.w.latency * e.ests[i].latency_s_low / self.latency_scale
    }
}

/// The candidates of a request as the pipeline narrows them down.
#[derive(Debug, Clone)]
pub(super) struct Choice {
    /// Actions within the request's limits (before dominance pruning).
    pub feasible: Vec<usize>,
    pub candidates: Vec<usize>,
    pub probabilities: Vec<f64>,
    pub pruned: Vec<(usize, PruneReason)>,
    pub chosen: usize,
    pub explored: bool,
    /// No allowed action met the limits: `chosen` is the cheapest.
    pub fallback: bool,
}

impl Policy {
    /// Chooses an action. Never fails for unsatisfiable limits: it falls back to the cheapest
    /// allowed action and flags the decision. Fails only on invalid input, and then changes
    /// nothing.
    pub fn select(&mut self, req: Request<'_>, now_s: f64) -> CoreResult<Decision> {
        let next_id = self.check_request(req, now_s)?;
        let x = self.scaled(req.x);
        let est = self.estimate(&x, req.input_tokens)?;
        let ranking = self.ranking();
        check_estimates(&est, &ranking, req.allowed, req.input_tokens)?;
        // the last step that can fail, before the exploration draw takes random numbers
        let retro_hi = self.conservative_retro_hi()?;
        let mut choice = within_limits(&est.ests, req.allowed, req.max_cost_usd, req.max_latency_s);
        if choice.fallback {
            cheapest(&est.preds, req.allowed, &mut choice)?;
        } else {
            undominated(&est, &mut choice);
            self.explore(&est, &ranking, &mut choice);
        }
        let guard = self.guard(&est, &ranking, &mut choice, retro_hi);
        choice.pruned.sort_by_key(|e| e.0);

        // Nothing above changed the policy except the exploration draw's random numbers, and
        // nothing from the draw on can fail.
        let id = self.next_id;
        self.next_id = next_id;
        self.record_guard(id, guard);
        self.pacer.observe_request(now_s);
        let chosen = choice.chosen;
        let a = self.space.actions[chosen];
        let psi = self.learner.pending_psi(&self.space, &a);
        self.pending.insert(
            id,
            Pending {
                x: x.to_vec(),
                action: a,
                psi,
                input_tokens: req.input_tokens,
                prediction: est.preds[chosen],
                created_s: now_s,
            },
            now_s,
        );
        let pos = choice
            .candidates
            .iter()
            .position(|&c| c == chosen)
            .unwrap_or(0);
        let propensity = choice.probabilities.get(pos).copied().unwrap_or(1.0);
        let priced = ranking.lambda * est.preds[chosen].cost_usd / ranking.cost_scale;
        let mean = ranking.mean(&est, chosen) + priced;
        // bonus: the quality bonus plus the optimism on cost and latency, so that
        // score = mean + bonus - lambda * optimistic cost / cost_scale
        let score = ranking.score(&est, chosen);
        let bonus =
            score + ranking.lambda * est.ests[chosen].cost_usd_low / ranking.cost_scale - mean;
        Ok(Decision {
            id,
            index: chosen,
            uid: a.uid,
            model: self.space.models[a.model].name.clone(),
            strategy: self.space.strategy_name(a.strategy).to_string(),
            n: a.n,
            quality_mean: est.qmean[chosen],
            quality_bonus: est.qbonus[chosen],
            mean,
            bonus,
            score,
            prediction: est.preds[chosen],
            input_tokens: req.input_tokens,
            propensity,
            explored: choice.explored && !guard.overridden,
            fallback: choice.fallback,
            conservative: guard.overridden,
            lambda: ranking.lambda,
            quality_multiplier: ranking.quality_multiplier,
            candidates: choice.candidates,
            probabilities: choice.probabilities,
            pruned: choice.pruned,
            created_s: now_s,
        })
    }

    /// Validates a request; returns the decision id after this one.
    fn check_request(&self, req: Request<'_>, now_s: f64) -> CoreResult<u64> {
        // Decision ids are u64 and never reused: refuse rather than wrap.
        let next_id = self
            .next_id
            .checked_add(1)
            .ok_or_else(|| CoreError::State("decision ids are exhausted (2**64 issued)".into()))?;
        let learner = self.learner.as_learner();
        learner.check_x(req.x)?;
        check_input_tokens(req.input_tokens)?;
        for (what, v) in [
            ("max_cost_usd", req.max_cost_usd),
            ("max_latency_s", req.max_latency_s),
        ] {
            if let Some(v) = v {
                if v.is_nan() || v < 0.0 {
                    return Err(CoreError::Config(format!("{what} must be >= 0, got {v}")));
                }
            }
        }
        check_finite_scalar("now_s", now_s)?;
        if let Some(m) = req.allowed {
            learner.check_mask(m)?;
            if !m.iter().any(|b| *b) {
                return Err(CoreError::AllMasked);
            }
        }
        Ok(next_id)
    }

    /// Quality means and bonuses (and widths in conservative modes) from the learner, cost and
    /// latency predictions from the cost model, for (scaled) request features `x`.
    fn estimate(&mut self, x: &[f64], input_tokens: f64) -> CoreResult<Estimates> {
        let k = self.n_actions();
        let mut qmean = vec![0.0; k];
        let mut qbonus = vec![0.0; k];
        let mut qwidth: Vec<f64> = Vec::new();
        if self.conservative.is_some() {
            qwidth = vec![0.0; k];
            self.learner.means_and_widths(x, &mut qmean, &mut qwidth)?;
            let alpha = self.alpha();
            for (b, wd) in qbonus.iter_mut().zip(&qwidth) {
                *b = alpha * wd;
            }
        } else {
            self.learner
                .as_learner()
                .finite_scores_into(x, &mut qmean, &mut qbonus)?;
        }
        let ests: Vec<Estimate> = self
            .space
            .actions
            .iter()
            .map(|a| self.cost.estimate(&self.space, a, input_tokens))
            .collect();
        let explored = self
            .space
            .actions
            .iter()
            .map(|a| {
                !self.cost.uncertain || self.cost.action_observations(a.uid) >= MIN_EXPLORED_OBS
            })
            .collect();
        Ok(Estimates {
            qmean,
            qbonus,
            qwidth,
            preds: ests.iter().map(|e| e.point).collect(),
            ests,
            explored,
        })
    }

    /// The ranking terms in force. Quality-floor mode ranks with its multiplier on the quality
    /// weight (a dual variable on the floor): high while the choices fall short of the
    /// reference, low while they have quality to spare.
    fn ranking(&self) -> Ranking {
        let mut w = self.weights;
        let quality_multiplier = self
            .conservative
            .as_ref()
            .filter(|c| c.metric == Metric::Quality)
            .map(|c| c.multiplier);
        if let Some(m) = quality_multiplier {
            w.quality *= m;
        }
        Ranking {
            w,
            lambda: self.pacer.lambda,
            cost_scale: self.cfg.cost_scale,
            latency_scale: self.cfg.latency_scale,
            quality_multiplier,
        }
    }

    /// Draws among the candidates by their scores with the exploration rule.
    fn explore(&mut self, est: &Estimates, r: &Ranking, choice: &mut Choice) {
        let scores: Vec<f64> = choice.candidates.iter().map(|&i| r.score(est, i)).collect();
        let draw = self.cfg.exploration.draw(&scores, &mut self.rng);
        choice.chosen = choice.candidates[draw.pick];
        choice.probabilities = draw.probabilities;
        choice.explored = draw.pick != draw.best;
    }
}

/// Finite inputs can still overflow (input_tokens = 1e308 on a fan-out action, features in the
/// 1e300s): refuses the request before anything changes rather than store an infinite
/// prediction or rank NaN scores.
fn check_estimates(
    est: &Estimates,
    r: &Ranking,
    allowed: Option<&[bool]>,
    input_tokens: f64,
) -> CoreResult<()> {
    for (i, p) in est.preds.iter().enumerate() {
        if allowed.is_some_and(|m| !m[i]) {
            continue;
        }
        let parts = [
            ("predicted output tokens", p.output_tokens_per_sample),
            ("predicted cost", p.cost_usd),
            ("predicted latency", p.latency_s),
            ("optimistic cost", est.ests[i].cost_usd_low),
            ("optimistic latency", est.ests[i].latency_s_low),
            ("quality mean", est.qmean[i]),
            ("quality bonus", est.qbonus[i]),
            ("score", r.score(est, i)),
        ];
        if let Some((what, v)) = parts.iter().find(|(_, v)| !v.is_finite()) {
            return Err(CoreError::NonFinite(format!(
                "the {what} of action {i} is {v} for this request (input_tokens = \
                 {input_tokens}); rejected before any state changed"
            )));
        }
    }
    Ok(())
}

/// Step 1, the hard limits: masked actions and those predicted over the request's cost or
/// latency limit are pruned; the rest are feasible (and, until dominance, the candidates). An
/// arm is excluded on the strength of its own observations (point prediction) or, while it has
/// none, only if even its optimistic estimate breaks the limit: a prior alone never keeps an
/// arm out (`Estimate::cost_usd_for_limit`).
fn within_limits(
    ests: &[Estimate],
    allowed: Option<&[bool]>,
    max_cost_usd: Option<f64>,
    max_latency_s: Option<f64>,
) -> Choice {
    let mut pruned: Vec<(usize, PruneReason)> = Vec::new();
    let mut feasible: Vec<usize> = Vec::with_capacity(ests.len());
    for (i, e) in ests.iter().enumerate() {
        if let Some(m) = allowed {
            if !m[i] {
                pruned.push((i, PruneReason::Masked));
                continue;
            }
        }
        if max_cost_usd.is_some_and(|c| e.cost_usd_for_limit() > c) {
            pruned.push((i, PruneReason::Cost));
        } else if max_latency_s.is_some_and(|l| e.latency_s_for_limit() > l) {
            pruned.push((i, PruneReason::Latency));
        } else {
            feasible.push(i);
        }
    }
    Choice {
        fallback: feasible.is_empty(),
        candidates: feasible.clone(),
        feasible,
        probabilities: Vec::new(),
        pruned,
        chosen: 0,
        explored: false,
    }
}

/// Every allowed action breaks a limit: takes the cheapest (ties: lowest latency, then lowest
/// index) and flags it rather than failing the request.
fn cheapest(preds: &[Prediction], allowed: Option<&[bool]>, choice: &mut Choice) -> CoreResult<()> {
    let mut best: Option<usize> = None;
    for (i, p) in preds.iter().enumerate() {
        if allowed.is_some_and(|m| !m[i]) {
            continue;
        }
        best = match best {
            Some(b) if (preds[b].cost_usd, preds[b].latency_s) <= (p.cost_usd, p.latency_s) => {
                Some(b)
            }
            _ => Some(i),
        };
    }
    let b = best.ok_or(CoreError::AllMasked)?;
    // The chosen action broke a limit like the others, but it is the decision, not a pruned
    // action: `fallback` records that it was taken despite the limits.
    choice.pruned.retain(|(i, _)| *i != b);
    choice.candidates = vec![b];
    choice.probabilities = vec![1.0];
    choice.chosen = b;
    choice.explored = false;
    Ok(())
}

/// Step 2, dominance in (optimistic cost, optimistic latency, quality UCB), the values the score
/// uses, so pruning never removes the argmax: a feasible action another one beats on all three
/// leaves the candidates, unless it has fewer than `MIN_EXPLORED_OBS` outcomes of its own (its
/// UCB still reflects the prior, not evidence; only limits and masks exclude it).
fn undominated(est: &Estimates, choice: &mut Choice) {
    let feasible = &choice.feasible;
    let ucb: Vec<f64> = feasible
        .iter()
        .map(|&i| est.qmean[i] + est.qbonus[i])
        .collect();
    let c: Vec<f64> = feasible.iter().map(|&i| est.ests[i].cost_usd_low).collect();
    let l: Vec<f64> = feasible
        .iter()
        .map(|&i| est.ests[i].latency_s_low)
        .collect();
    let dom = dominated(&c, &l, &ucb);
    let mut cand = Vec::with_capacity(feasible.len());
    for (j, &i) in feasible.iter().enumerate() {
        match dom[j] {
            Some(by) if est.explored[i] => choice
                .pruned
                .push((i, PruneReason::Dominated(feasible[by]))),
            _ => cand.push(i),
        }
    }
    choice.candidates = cand;
}
