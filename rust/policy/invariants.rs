//! What a policy state must satisfy beyond its checksum: every cross-field invariant the
//! methods rely on, checked when a state is loaded.

use std::collections::{HashMap, HashSet};

use crate::space::ActionDef;

use super::quality::close;
use super::Policy;

impl Policy {
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
            let Some(def) = space.strategy_def(a.strategy) else {
                return Err(format!(
                    "an action refers to unknown strategy {}",
                    a.strategy.0
                ));
            };
            if a.n == 0 || a.n > 4096 || (def.single_sample && a.n != 1) {
                return Err(format!(
                    "an action has an invalid ({}, n = {})",
                    def.name, a.n
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
        self.learner
            .check_against(space, &self.cfg.interaction_prior)?;
        self.cost.check(space.models.len())?;
        if self
            .cost
            .adaptive_samples
            .iter()
            .map(|e| e.0)
            .chain(self.cost.action_obs.iter().map(|e| e.0))
            .any(|uid| uid >= space.next_uid)
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
        let p_len = self.learner.psi_len(space);
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
