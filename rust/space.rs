//! The unified action space: models, strategies, and the semantic action features psi(a).
//!
//! psi(a) layout (p = model_slots + 9), every entry O(1) in magnitude:
//! ```text
//! [0 .. S)        model identity: one-hot over S = model_slots slots (a model keeps its slot
//!                 for life; a retired model's slot is never reused, so nothing it learned leaks)
//! S + 0           ln(1 + price_out_per_mtok): price as a capability proxy, shared across models
//!                 so a new model starts from what its price bracket suggests
//! S + 1 .. S + 4  strategy one-hot for self_consistency, best_of_n, adaptive_consistency
//!                 (single is the all-zero baseline)
//! S + 4           log2(n) / 4
//! S + 5 .. S + 8  log2(n) / 4 times each of the three strategy indicators (diminishing returns
//!                 of more samples differ by strategy)
//! S + 8           log2(n) / 4 times ln(1 + price_out): larger models gain more from samples
//! ```
//! Through the shared learner's `kron([1, x], [1, psi])` each of these also interacts with every
//! request feature, so "this kind of request benefits from voting" transfers across models.

use crate::error::{check_finite_scalar, CoreError, CoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Strategy {
    Single = 0,
    SelfConsistency = 1,
    BestOfN = 2,
    Adaptive = 3,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Single,
        Strategy::SelfConsistency,
        Strategy::BestOfN,
        Strategy::Adaptive,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Single => "single",
            Strategy::SelfConsistency => "self_consistency",
            Strategy::BestOfN => "best_of_n",
            Strategy::Adaptive => "adaptive_consistency",
        }
    }
    pub fn parse(s: &str) -> CoreResult<Strategy> {
        Strategy::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                CoreError::Config(format!(
                    "unknown strategy {s:?}; expected single, self_consistency, best_of_n or adaptive_consistency"
                ))
            })
    }
    pub fn from_u8(v: u8) -> CoreResult<Strategy> {
        Strategy::ALL
            .get(v as usize)
            .copied()
            .ok_or_else(|| CoreError::State(format!("unknown strategy code {v}")))
    }
}

/// Largest price, per-token latency or output-token prior a model may declare: finite values
/// beyond it overflow what the cost model derives from them (per-thousand-token latency
/// coefficients, the regressions' priors), which then cannot be saved.
pub const MAX_MODEL_VALUE: f64 = 1e300;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub price_in_per_mtok: f64,
    pub price_out_per_mtok: f64,
    pub parallelism: u32,
    pub bills_prompt_once: bool,
    /// Prior seconds per input token and per output token (per round).
    pub latency_in_s_per_token: f64,
    pub latency_out_s_per_token: f64,
    pub prior_output_tokens: f64,
    pub slot: usize,
    pub retired: bool,
}

impl ModelInfo {
    pub fn validate(&self) -> CoreResult<()> {
        if self.name.is_empty() {
            return Err(CoreError::Config("model name must not be empty".into()));
        }
        for (what, v) in [
            ("price_in_per_mtok", self.price_in_per_mtok),
            ("price_out_per_mtok", self.price_out_per_mtok),
            ("latency_in_s_per_token", self.latency_in_s_per_token),
            ("latency_out_s_per_token", self.latency_out_s_per_token),
            ("prior_output_tokens", self.prior_output_tokens),
        ] {
            check_finite_scalar(what, v)
                .map_err(|e| CoreError::Config(format!("model {:?}: {e}", self.name)))?;
            if !(0.0..=MAX_MODEL_VALUE).contains(&v) {
                return Err(CoreError::Config(format!(
                    "model {:?}: {what} must be in [0, {MAX_MODEL_VALUE:e}], got {v}",
                    self.name
                )));
            }
        }
        if self.parallelism == 0 {
            return Err(CoreError::Config(format!(
                "model {:?}: parallelism must be >= 1",
                self.name
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActionDef {
    /// Index into `Space::models` (models are never removed from that list, only retired).
    pub model: usize,
    pub strategy: Strategy,
    pub n: u32,
    /// Stable identity across additions and removals (decision logs refer to it).
    pub uid: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    pub models: Vec<ModelInfo>,
    /// Active actions, in learner index order.
    pub actions: Vec<ActionDef>,
    pub model_slots: usize,
    pub next_uid: u64,
}

pub const PSI_EXTRA: usize = 9;

impl Space {
    pub fn new(model_slots: usize) -> CoreResult<Space> {
        if model_slots == 0 || model_slots > 1024 {
            return Err(CoreError::Config(format!(
                "model_slots must be in 1..=1024, got {model_slots}"
            )));
        }
        Ok(Space {
            models: Vec::new(),
            actions: Vec::new(),
            model_slots,
            next_uid: 0,
        })
    }

    pub fn p(&self) -> usize {
        self.model_slots + PSI_EXTRA
    }

    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// Registers a model in the next free slot.
    pub fn add_model(&mut self, mut m: ModelInfo) -> CoreResult<usize> {
        m.validate()?;
        if self.model_index(&m.name).is_some() {
            return Err(CoreError::Config(format!(
                "a model named {:?} is already registered (retired names cannot be reused either)",
                m.name
            )));
        }
        if self.models.len() >= self.model_slots {
            return Err(CoreError::Config(format!(
                "all {} model slots are used (retired models keep theirs); create the policy with a larger model_slots",
                self.model_slots
            )));
        }
        m.slot = self.models.len();
        m.retired = false;
        self.models.push(m);
        Ok(self.models.len() - 1)
    }

    /// Validates and appends an action; returns its index.
    pub fn add_action(&mut self, model: usize, strategy: Strategy, n: u32) -> CoreResult<usize> {
        let mi = self.models.get(model).ok_or_else(|| {
            CoreError::Config(format!("action refers to unknown model index {model}"))
        })?;
        if mi.retired {
            return Err(CoreError::Config(format!("model {:?} is retired", mi.name)));
        }
        if n == 0 || n > 4096 {
            return Err(CoreError::Config(format!("n must be in 1..=4096, got {n}")));
        }
        if strategy == Strategy::Single && n != 1 {
            return Err(CoreError::Config(
                "strategy 'single' requires n == 1".into(),
            ));
        }
        let next_uid = self
            .next_uid
            .checked_add(1)
            .ok_or_else(|| CoreError::Config("action uids are exhausted".into()))?;
        if self
            .actions
            .iter()
            .any(|a| a.model == model && a.strategy == strategy && a.n == n)
        {
            return Err(CoreError::Config(format!(
                "duplicate action ({}, {}, n={n})",
                mi.name,
                strategy.name()
            )));
        }
        self.actions.push(ActionDef {
            model,
            strategy,
            n,
            uid: self.next_uid,
        });
        self.next_uid = next_uid;
        Ok(self.actions.len() - 1)
    }

    /// psi for one action (see the module docs for the layout).
    pub fn psi(&self, a: &ActionDef) -> Vec<f64> {
        let s = self.model_slots;
        let mut v = vec![0.0; self.p()];
        let m = &self.models[a.model];
        v[m.slot] = 1.0;
        let lp = (1.0 + m.price_out_per_mtok).ln();
        v[s] = lp;
        let l2n = (a.n as f64).log2() / 4.0;
        let ind = match a.strategy {
            Strategy::Single => None,
            Strategy::SelfConsistency => Some(0),
            Strategy::BestOfN => Some(1),
            Strategy::Adaptive => Some(2),
        };
        if let Some(i) = ind {
            v[s + 1 + i] = 1.0;
            v[s + 5 + i] = l2n;
        }
        v[s + 4] = l2n;
        v[s + 8] = l2n * lp;
        v
    }

    pub fn psi_matrix(&self) -> Vec<f64> {
        self.actions.iter().flat_map(|a| self.psi(a)).collect()
    }
}
