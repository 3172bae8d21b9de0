//! Conservative mode and quality-floor mode: the guard that may overrule the exploration draw,
//! its bookkeeping, and the methods that turn it on and report on it.
//!
//! Conservative mode allows a candidate only if playing it keeps the pessimistic cumulative
//! reward above (1 - delta) x the baseline's optimistic one, and hands the probability of every
//! other candidate to the baseline (Kazerouni et al.). Quality-floor mode makes the same promise
//! about quality, with a tolerance per request, and hands the refused probability to the
//! best-ranked allowed candidate instead.

use crate::conservative::{reward_var, Budget as ConservativeBudget, Conservative, Metric, Open};
use crate::error::{CoreError, CoreResult};

use super::select::{Choice, Estimates, Ranking};
use super::Policy;

/// What the guard decided for one request, recorded once the decision is final.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Guard {
    /// The guard replaced the drawn action.
    pub overridden: bool,
    /// The bounds of the action served, for the mode's account (None: mode off or suspended).
    pub open: Option<Open>,
    /// Quality-floor mode's dual step: the learner's proposal's optimistic quality minus the
    /// reference's, plus the tolerance.
    pub floor_gap: Option<f64>,
}

impl Policy {
    /// Applies the conservative or quality-floor guard to the drawn `choice` (changing its
    /// candidates, probabilities, chosen action and pruned list when it refuses candidates);
    /// `retro_hi` is `conservative_retro_hi()`.
    pub(super) fn guard(
        &self,
        est: &Estimates,
        r: &Ranking,
        choice: &mut Choice,
        retro_hi: f64,
    ) -> Guard {
        // the learner's choice before the guard: the floor's dual step prices it (what is
        // served can only be the reference while slack is short, which says nothing about
        // whether the ranking asks too much of the floor)
        let proposed = choice.chosen;
        let mut out = Guard::default();
        let Some(c) = &self.conservative else {
            return out;
        };
        let Some(bi) = self.conservative_baseline() else {
            return out;
        };
        let floor = c.metric == Metric::Quality;
        let (qmean, qbonus, qwidth, preds) = (&est.qmean, &est.qbonus, &est.qwidth, &est.preds);
        let w = r.w;
        let (cs, ls) = (r.cost_scale, r.latency_scale);
        // the promise's metric: reward under the weights, or quality alone
        let (wq, with_cost) = match c.metric {
            Metric::Reward => (w.quality, 1.0),
            Metric::Quality => (1.0, 0.0),
        };
        let cost_term = |i: usize| {
            with_cost * (w.cost * preds[i].cost_usd / cs + w.latency * preds[i].latency_s / ls)
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
        let baseline_usable = !choice.fallback && choice.feasible.contains(&bi);
        if baseline_usable {
            let opens: Vec<Open> = choice.candidates.iter().map(|&i| open_for(i)).collect();
            let ok = c.allowed(&opens, retro_hi, base_lo);
            if ok.iter().any(|b| !b) {
                let mut base_mass = 0.0;
                let mut nc = Vec::with_capacity(choice.candidates.len());
                let mut np = Vec::with_capacity(choice.candidates.len());
                for (j, &i) in choice.candidates.iter().enumerate() {
                    if ok[j] {
                        nc.push(i);
                        np.push(choice.probabilities[j]);
                    } else {
                        base_mass += choice.probabilities[j];
                    }
                }
                // Conservative mode hands the refused mass to the baseline; a quality floor to
                // the best-ranked allowed candidate, which keeps the promise just as well and
                // is usually cheaper than the reference (the baseline when nothing else is
                // allowed).
                let target = if floor && !nc.is_empty() {
                    let mut t = nc[0];
                    for &i in &nc[1..] {
                        if r.score(est, i) > r.score(est, t) {
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
                        choice.pruned.retain(|(i, _)| *i != bi);
                        nc.push(bi);
                        np.push(base_mass);
                    }
                }
                if !nc.contains(&choice.chosen) {
                    choice.chosen = target;
                    out.overridden = true;
                }
                choice.candidates = nc;
                choice.probabilities = np;
            }
        }
        // the dual step on "expected quality >= the reference's - tolerance" (optimistic on
        // both sides, like the ranking it prices: an unexplored arm's mean is its prior, and
        // pricing exploration by it would drive the multiplier up until nothing but quality
        // counts)
        let ucb = |i: usize| qmean[i] + qbonus[i];
        out.floor_gap = floor.then(|| ucb(proposed) - ucb(bi) + c.tolerance);
        out.open = Some(open_for(choice.chosen));
        out
    }

    /// Records decision `id`'s guard outcome in the mode's account.
    pub(super) fn record_guard(&mut self, id: u64, g: Guard) {
        let (Some(c), Some(o)) = (self.conservative.as_mut(), g.open) else {
            return;
        };
        if g.overridden {
            c.overrides += 1;
        }
        if let Some(gap) = g.floor_gap {
            c.update_multiplier(gap);
        }
        c.record(id, o);
        // Decisions that expired without feedback keep their bounds for good.
        if c.open.len() > 2 * self.pending.len() + 64 {
            let pending = &self.pending;
            c.settle(|i| pending.contains(i));
        }
    }

    /// Quality-floor mode's retrospective bound on the reference's quality over the answered
    /// requests it did not serve (`Conservative::retro_hi`), from the learner's current
    /// statistics; 0 without any (or in conservative mode, which keeps decision-time bounds).
    pub(super) fn conservative_retro_hi(&self) -> CoreResult<f64> {
        let Some(c) = self.conservative.as_ref() else {
            return Ok(0.0);
        };
        if !c.retro || c.cf_n == 0 {
            return Ok(0.0);
        }
        let Some(bi) = self.conservative_baseline() else {
            return Ok(0.0);
        };
        let (sum, width) = self.learner.sum_mean_width(bi, c.cf_n as f64, &c.cf_x);
        if !(sum.is_finite() && width.is_finite()) {
            return Err(CoreError::NonFinite(format!(
                "the quality floor's counterfactual bound is not finite (mean {sum}, width \
                 {width}); rescale the features"
            )));
        }
        Ok(c.retro_hi(sum, width))
    }

    /// Conservative (or quality-floor) mode's budget as it stands.
    pub fn conservative_budget(&self) -> CoreResult<Option<ConservativeBudget>> {
        let retro_hi = self.conservative_retro_hi()?;
        Ok(self.conservative.as_ref().map(|c| c.budget(retro_hi)))
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
        // quality-floor mode ignores delta: it is not validated either
        let delta = if floor.is_some() { 0.0 } else { delta };
        let c = Conservative::new(uid, delta, confidence, quality_sd, quality_range)?;
        self.conservative = Some(match floor {
            None => c,
            Some(tolerance) => c.with_quality_floor(tolerance)?,
        });
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
}
