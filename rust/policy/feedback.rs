//! Learning from outcomes: feedback for a decision (`update`) and outcomes no decision asked
//! for (`observe`), both validated completely before anything changes.

use crate::conservative::Metric;
use crate::cost::{CostModel, Prediction};
use crate::error::{check_finite_scalar, CoreError, CoreResult};
use crate::space::ActionDef;

use super::{check_input_tokens, Feedback, Policy, UpdateResult};

/// What an outcome used and earned: samples, realised cost and latency, and the reward under
/// the current weights.
struct Priced {
    samples: f64,
    cost_usd: f64,
    latency_s: f64,
    reward: f64,
}

impl Policy {
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
        let priced = self.price(&a, p.input_tokens, &p.prediction, &fb)?;
        self.pacer.check_cost(priced.cost_usd)?;
        // The learner is the last step that can fail (numerical overflow) and fails without
        // changing anything; everything after it cannot fail.
        let index = self.space.actions.iter().position(|b| b.uid == a.uid);
        let learner_updated = self.learner.learn(
            &self.space,
            &a,
            index,
            Some(&p.psi),
            &p.x,
            fb.quality,
            1.0,
            &mut self.cfg.interaction_prior,
        )?;
        let input_tokens = p.input_tokens;
        let retro_x = match &self.conservative {
            Some(c) if c.retro => p.x.clone(),
            _ => Vec::new(),
        };
        self.pending.complete(id, now_s);
        self.pacer.observe_cost(priced.cost_usd);
        if let Some(c) = self.conservative.as_mut() {
            c.complete(
                id,
                match c.metric {
                    Metric::Reward => priced.reward,
                    Metric::Quality => fb.quality,
                },
                &retro_x,
            );
        }
        Ok(self.learned(&a, input_tokens, &fb, &priced, learner_updated))
    }

    /// Prices an outcome of action `a` (`samples_used`, `realised_usage`, `checked_reward`);
    /// changes nothing.
    fn price(
        &self,
        a: &ActionDef,
        input_tokens: f64,
        prediction: &Prediction,
        fb: &Feedback,
    ) -> CoreResult<Priced> {
        let samples = samples_used(a, fb)?;
        let (cost_usd, latency_s) =
            self.realised_usage(a, input_tokens, prediction, fb, samples)?;
        let reward = self.checked_reward(fb.quality, cost_usd, latency_s)?;
        Ok(Priced {
            samples,
            cost_usd,
            latency_s,
            reward,
        })
    }

    /// The steps after the quality learner took an outcome, which cannot fail: the cost model
    /// learns it and the interaction prior is re-estimated when due.
    fn learned(
        &mut self,
        a: &ActionDef,
        input_tokens: f64,
        fb: &Feedback,
        priced: &Priced,
        learner_updated: bool,
    ) -> UpdateResult {
        self.cost.observe(
            &self.space,
            a,
            input_tokens,
            fb.output_tokens,
            priced.samples,
            fb.latency_s,
        );
        self.learner
            .reestimate_interaction_prior(&mut self.cfg.interaction_prior);
        UpdateResult {
            reward: priced.reward,
            cost_usd: priced.cost_usd,
            latency_s: priced.latency_s,
            learner_updated,
        }
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
        let x = self.scaled(x);
        check_input_tokens(input_tokens)?;
        check_feedback(&fb)?;
        let a = self.space.actions[i];
        let prediction = self.cost.predict(&self.space, &a, input_tokens);
        let priced = self.price(&a, input_tokens, &prediction, &fb)?;
        // the last step that can fail, and it fails without changing anything
        self.learner.learn(
            &self.space,
            &a,
            Some(i),
            None,
            &x,
            fb.quality,
            weight,
            &mut self.cfg.interaction_prior,
        )?;
        Ok(self.learned(&a, input_tokens, &fb, &priced, true))
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
