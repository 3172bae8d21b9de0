//! The policy's saved state: one versioned binary record (`crate::state`), written and read
//! field by field in the same order. Later formats append at the end; older ones still load.

use crate::conservative::Conservative;
use crate::cost::CostModel;
use crate::error::{check_finite, CoreError, CoreResult};
use crate::evidence::InteractionPrior;
use crate::pacing::Pacer;
use crate::rng::SplitMix64;
use crate::space::{ActionDef, ModelInfo, Space, Strategy, StrategyDef};
use crate::state::{Kind, Reader, Writer};

use super::config::check_interaction_scale;
use super::{Exploration, PendingStore, Policy, PolicyConfig, QualityLearner, Weights};

/// Layout of conservative mode written today: with the metric, tolerance and floor multiplier.
const CONSERVATIVE_LAYOUT: u8 = 3;

impl Policy {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.usize(self.dim);
        write_space(&self.space, &mut w);
        // format 7: the strategy list (the actions' codes, the cost model's groups and the
        // pending decisions refer to it)
        write_strategies(&self.space.strategies, &mut w);
        self.learner.write(&mut w);
        self.cost.write(&mut w);
        self.pacer.write(&mut w);
        w.f64(self.weights.quality);
        w.f64(self.weights.cost);
        w.f64(self.weights.latency);
        w.f64(self.cfg.cost_scale);
        w.f64(self.cfg.latency_scale);
        self.cfg.exploration.write(&mut w);
        w.f64(self.cfg.ttl_s);
        w.usize(self.cfg.capacity);
        w.str(&self.cfg.feature_version);
        w.u64(self.rng.state);
        w.u64(self.next_id);
        self.pending.write(&mut w);
        // format 3: conservative mode
        match &self.conservative {
            None => w.bool(false),
            Some(c) => {
                w.u8(CONSERVATIVE_LAYOUT);
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
        let mut space = read_space(&mut r)?;
        if r.version >= 7 {
            space
                .set_strategies(read_strategies(&mut r)?)
                .map_err(|e| CoreError::State(e.to_string()))?;
        }
        // every action's strategy code is in the list (the cost model and the learner's
        // features index by it)
        if let Some(a) = space
            .actions
            .iter()
            .find(|a| a.strategy.index() >= space.strategies.len())
        {
            return Err(CoreError::State(format!(
                "unknown strategy code {}",
                a.strategy.0
            )));
        }
        let learner = QualityLearner::read(&mut r)?;
        {
            let l = learner.as_learner();
            if l.n_actions() != space.actions.len() || l.dim() != dim {
                return Err(CoreError::State(
                    "learner does not match the action space".into(),
                ));
            }
        }
        let cost = CostModel::read(&mut r, &space.models, &space.strategies)?;
        let pacer = Pacer::read(&mut r)?;
        let weights = Weights {
            quality: r.f64()?,
            cost: r.f64()?,
            latency: r.f64()?,
        };
        weights.validate().map_err(st)?;
        let cost_scale = r.finite_f64("cost_scale")?;
        let latency_scale = r.finite_f64("latency_scale")?;
        let exploration = Exploration::read(&mut r)?;
        let ttl_s = r.finite_f64("ttl_s")?;
        let capacity = r.dim("capacity", 1 << 32)?;
        let feature_version = r.str()?;
        let rng = SplitMix64::new(r.u64()?);
        let next_id = r.u64()?;
        let pending = PendingStore::read(
            &mut r,
            capacity,
            ttl_s,
            dim,
            learner.psi_len(&space),
            &space,
            next_id,
        )?;
        let conservative = if r.version >= 3 {
            match r.u8()? {
                0 => None,
                layout @ (1..=CONSERVATIVE_LAYOUT) => {
                    Some(Conservative::read(&mut r, 1 << 32, layout)?)
                }
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
        let interaction_prior = if r.version >= 5 {
            InteractionPrior::read(&mut r)?
        } else {
            InteractionPrior::off()
        };
        let cfg = PolicyConfig {
            cost_scale,
            latency_scale,
            exploration,
            ttl_s,
            capacity,
            feature_version,
            interaction_scale,
            interaction_prior,
        };
        let mut learner = learner;
        learner
            .set_mean_mult(cfg.interaction_prior.mult)
            .map_err(|e| e.loading(""))?;
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
}

/// The strategy list (format 7): count, then per strategy its name and three flags.
fn write_strategies(list: &[StrategyDef], w: &mut Writer) {
    w.usize(list.len());
    for s in list {
        w.str(&s.name);
        w.bool(s.adaptive);
        w.bool(s.feature);
        w.bool(s.single_sample);
    }
}

fn read_strategies(r: &mut Reader) -> CoreResult<Vec<StrategyDef>> {
    let n = r.dim("n_strategies", crate::space::MAX_STRATEGIES)?;
    let mut list = Vec::with_capacity(n);
    for _ in 0..n {
        list.push(StrategyDef {
            name: r.str()?,
            adaptive: r.bool()?,
            feature: r.bool()?,
            single_sample: r.bool()?,
        });
    }
    StrategyDef::validate_list(&list).map_err(|e| CoreError::State(e.to_string()))?;
    Ok(list)
}

/// The strategy list when it is not the built-in one (sync fingerprints; a space over the
/// built-ins hashes as before format 7).
pub(super) fn write_custom_strategies(space: &Space, w: &mut Writer) {
    if !space.has_builtin_strategies() {
        write_strategies(&space.strategies, w);
    }
}

/// Model slots, the uid counter, the models and the actions.
pub(super) fn write_space(space: &Space, w: &mut Writer) {
    w.usize(space.model_slots);
    w.u64(space.next_uid);
    w.usize(space.models.len());
    for m in &space.models {
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
    w.usize(space.actions.len());
    for a in &space.actions {
        w.usize(a.model);
        w.u8(a.strategy.0);
        w.u32(a.n);
        w.u64(a.uid);
    }
}

/// The space as `write_space` wrote it, over the built-in strategies (format 7 stores the
/// strategy list after it: the caller sets it and checks the actions' codes).
fn read_space(r: &mut Reader) -> CoreResult<Space> {
    let st = |e: CoreError| CoreError::State(e.to_string());
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
        let strategy = Strategy(r.u8()?);
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
    Ok(space)
}
