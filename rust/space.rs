//! The unified action space: models, strategies, and the semantic action features psi(a).
//!
//! Strategies are data (`StrategyDef`, in a fixed order per space); K of them have a feature
//! slot (`feature`), in list order. psi(a) layout (p = model_slots + 3 + 2K), every entry O(1)
//! in magnitude:
//! ```text
//! [0 .. S)              model identity: one-hot over S = model_slots slots (a model keeps its
//!                       slot for life; a retired model's slot is never reused, so nothing it
//!                       learned leaks)
//! S + 0                 ln(1 + price_out_per_mtok): price as a capability proxy, shared across
//!                       models so a new model starts from what its price bracket suggests
//! S + 1 .. S + 1 + K    strategy one-hot over the slotted strategies (a strategy without a
//!                       slot, `single`, is the all-zero baseline)
//! S + 1 + K             log2(n) / 4
//! S + 2 + K .. S + 2+2K log2(n) / 4 times each strategy indicator (diminishing returns of more
//!                       samples differ by strategy)
//! S + 2 + 2K            log2(n) / 4 times ln(1 + price_out): larger models gain more from
//!                       samples
//! ```
//! The four built-ins (single; self_consistency, best_of_n, adaptive_consistency with slots)
//! give K = 3 and p = S + 9, the layout of every format version before 7.
//! Through the shared learner's `kron([1, x], [1, psi])` each of these also interacts with every
//! request feature, so "this kind of request benefits from voting" transfers across models.

use crate::error::{check_finite_scalar, CoreError, CoreResult};

/// A test-time-scaling strategy as the core sees it: data, not code (the Python side owns what
/// the strategy does, `uniscale.strategies`). The core derives the feature layout from the list
/// and keeps it in the saved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyDef {
    pub name: String,
    /// The run may stop before `n` samples: the cost model learns the mean number used.
    pub adaptive: bool,
    /// Has its own feature slot (indicator and `log2 n` interaction); one without is the
    /// baseline the others are measured against.
    pub feature: bool,
    /// One sample only (`n == 1`).
    pub single_sample: bool,
}

impl StrategyDef {
    pub fn new(name: &str, adaptive: bool, feature: bool, single_sample: bool) -> StrategyDef {
        StrategyDef {
            name: name.to_string(),
            adaptive,
            feature,
            single_sample,
        }
    }

    /// The four built-in strategies in their fixed order (the layout of format versions 1 to
    /// 6, which did not store the list).
    pub fn builtins() -> Vec<StrategyDef> {
        vec![
            StrategyDef::new("single", false, false, true),
            StrategyDef::new("self_consistency", false, true, false),
            StrategyDef::new("best_of_n", false, true, false),
            StrategyDef::new("adaptive_consistency", true, true, false),
        ]
    }

    /// Checks a strategy list: 1..=MAX_STRATEGIES entries with distinct, non-empty names.
    pub fn validate_list(list: &[StrategyDef]) -> CoreResult<()> {
        if list.is_empty() || list.len() > MAX_STRATEGIES {
            return Err(CoreError::Config(format!(
                "the strategy list must have 1 to {MAX_STRATEGIES} entries, got {}",
                list.len()
            )));
        }
        for (i, s) in list.iter().enumerate() {
            if s.name.is_empty() || s.name.len() > 64 {
                return Err(CoreError::Config(format!(
                    "strategy names must have 1 to 64 bytes, got {:?}",
                    s.name
                )));
            }
            if list[..i].iter().any(|o| o.name == s.name) {
                return Err(CoreError::Config(format!(
                    "duplicate strategy {:?} in the strategy list",
                    s.name
                )));
            }
        }
        Ok(())
    }
}

/// Most strategies one space may have (their codes are saved as one byte).
pub const MAX_STRATEGIES: usize = 64;

/// A strategy's index into `Space::strategies` (saved as one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Strategy(pub u8);

impl Strategy {
    /// The built-in strategies' indices (in `StrategyDef::builtins` order).
    pub const SINGLE: Strategy = Strategy(0);
    pub const SELF_CONSISTENCY: Strategy = Strategy(1);
    pub const BEST_OF_N: Strategy = Strategy(2);
    pub const ADAPTIVE: Strategy = Strategy(3);

    pub fn index(self) -> usize {
        self.0 as usize
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
    /// The strategies, indexed by `Strategy`; fixed for the space's life.
    pub strategies: Vec<StrategyDef>,
    /// Feature slot of each strategy (`None`: the baseline), derived from `strategies`.
    slots: Vec<Option<usize>>,
    pub models: Vec<ModelInfo>,
    /// Active actions, in learner index order.
    pub actions: Vec<ActionDef>,
    pub model_slots: usize,
    pub next_uid: u64,
}

impl Space {
    /// A space over the four built-in strategies.
    pub fn new(model_slots: usize) -> CoreResult<Space> {
        Space::with_strategies(model_slots, StrategyDef::builtins())
    }

    pub fn with_strategies(model_slots: usize, strategies: Vec<StrategyDef>) -> CoreResult<Space> {
        if model_slots == 0 || model_slots > 1024 {
            return Err(CoreError::Config(format!(
                "model_slots must be in 1..=1024, got {model_slots}"
            )));
        }
        StrategyDef::validate_list(&strategies)?;
        Ok(Space {
            slots: slots_of(&strategies),
            strategies,
            models: Vec::new(),
            actions: Vec::new(),
            model_slots,
            next_uid: 0,
        })
    }

    /// Replaces the strategy list of a space being restored (its actions' codes are checked
    /// against the new list by the caller's invariant check).
    pub fn set_strategies(&mut self, strategies: Vec<StrategyDef>) -> CoreResult<()> {
        StrategyDef::validate_list(&strategies)?;
        self.slots = slots_of(&strategies);
        self.strategies = strategies;
        Ok(())
    }

    /// Number of strategies with a feature slot (K in the module docs).
    fn n_slotted(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn p(&self) -> usize {
        self.model_slots + 3 + 2 * self.n_slotted()
    }

    /// True when the strategy list is the four built-ins (the layout before format 7).
    pub fn has_builtin_strategies(&self) -> bool {
        self.strategies == StrategyDef::builtins()
    }

    pub fn strategy_def(&self, s: Strategy) -> Option<&StrategyDef> {
        self.strategies.get(s.index())
    }

    /// The name of strategy `s` (empty for an index outside the list, which a checked space
    /// never holds).
    pub fn strategy_name(&self, s: Strategy) -> &str {
        self.strategy_def(s).map_or("", |d| d.name.as_str())
    }

    pub fn is_adaptive(&self, s: Strategy) -> bool {
        self.strategy_def(s).is_some_and(|d| d.adaptive)
    }

    pub fn parse_strategy(&self, name: &str) -> CoreResult<Strategy> {
        match self.strategies.iter().position(|d| d.name == name) {
            Some(i) => Ok(Strategy(i as u8)),
            None => {
                let names: Vec<&str> = self.strategies.iter().map(|d| d.name.as_str()).collect();
                Err(CoreError::Config(format!(
                    "unknown strategy {name:?}; expected one of {}",
                    names.join(", ")
                )))
            }
        }
    }

    /// The strategy with saved code `v`.
    pub fn strategy_from_u8(&self, v: u8) -> CoreResult<Strategy> {
        if (v as usize) < self.strategies.len() {
            Ok(Strategy(v))
        } else {
            Err(CoreError::State(format!("unknown strategy code {v}")))
        }
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
        let def = self
            .strategy_def(strategy)
            .ok_or_else(|| CoreError::Config(format!("unknown strategy index {}", strategy.0)))?;
        if def.single_sample && n != 1 {
            return Err(CoreError::Config(format!(
                "strategy '{}' requires n == 1",
                def.name
            )));
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
                mi.name, def.name
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
        let k = self.n_slotted();
        if let Some(Some(i)) = self.slots.get(a.strategy.index()) {
            v[s + 1 + i] = 1.0;
            v[s + 2 + k + i] = l2n;
        }
        v[s + 1 + k] = l2n;
        v[s + 2 + 2 * k] = l2n * lp;
        v
    }

    pub fn psi_matrix(&self) -> Vec<f64> {
        self.actions.iter().flat_map(|a| self.psi(a)).collect()
    }
}

/// The feature slot of each strategy: the slotted ones numbered in list order.
fn slots_of(strategies: &[StrategyDef]) -> Vec<Option<usize>> {
    let mut next = 0;
    strategies
        .iter()
        .map(|s| {
            s.feature.then(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, price_out: f64) -> ModelInfo {
        ModelInfo {
            name: name.into(),
            price_in_per_mtok: 1.0,
            price_out_per_mtok: price_out,
            parallelism: 1,
            bills_prompt_once: true,
            latency_in_s_per_token: 1e-4,
            latency_out_s_per_token: 1e-2,
            prior_output_tokens: 100.0,
            slot: 0,
            retired: false,
        }
    }

    /// The layout before strategies were data (format 6 and older), spelled out.
    fn old_psi(slots: usize, slot: usize, price_out: f64, strategy: u8, n: u32) -> Vec<f64> {
        let mut v = vec![0.0; slots + 9];
        v[slot] = 1.0;
        let lp = (1.0 + price_out).ln();
        v[slots] = lp;
        let l2n = (n as f64).log2() / 4.0;
        if strategy > 0 {
            let i = strategy as usize - 1;
            v[slots + 1 + i] = 1.0;
            v[slots + 5 + i] = l2n;
        }
        v[slots + 4] = l2n;
        v[slots + 8] = l2n * lp;
        v
    }

    #[test]
    fn builtins_give_the_old_layout() {
        let mut space = Space::new(3).unwrap();
        assert_eq!(space.p(), 3 + 9);
        space.add_model(model("a", 2.0)).unwrap();
        space.add_model(model("b", 7.0)).unwrap();
        for m in 0..2 {
            space.add_action(m, Strategy::SINGLE, 1).unwrap();
            for s in 1..4u8 {
                for n in [2, 8] {
                    space.add_action(m, Strategy(s), n).unwrap();
                }
            }
        }
        for a in &space.actions {
            let price = space.models[a.model].price_out_per_mtok;
            assert_eq!(space.psi(a), old_psi(3, a.model, price, a.strategy.0, a.n));
        }
    }

    #[test]
    fn a_fifth_strategy_gets_its_own_slot() {
        let mut list = StrategyDef::builtins();
        list.push(StrategyDef::new("longest", false, true, false));
        let mut space = Space::with_strategies(2, list).unwrap();
        assert_eq!(space.p(), 2 + 3 + 2 * 4);
        let m = space.add_model(model("a", 0.0)).unwrap();
        let s = space.parse_strategy("longest").unwrap();
        assert_eq!(s, Strategy(4));
        let i = space.add_action(m, s, 4).unwrap();
        let v = space.psi(&space.actions[i]);
        // slot one-hot at S + 1 + 3, log2(n)/4 at S + 1 + K, its interaction at S + 2 + K + 3
        assert_eq!((v[2 + 4], v[2 + 5], v[2 + 9]), (1.0, 0.5, 0.5));
        assert!(space.parse_strategy("beam").is_err());
        assert!(space.add_action(m, Strategy::SINGLE, 2).is_err());
        assert!(space.add_action(m, Strategy(9), 2).is_err());
        assert!(space.strategy_from_u8(5).is_err());
    }

    #[test]
    fn bad_strategy_lists_are_refused() {
        assert!(Space::with_strategies(2, vec![]).is_err());
        let twice = vec![
            StrategyDef::new("x", false, true, false),
            StrategyDef::new("x", false, true, false),
        ];
        assert!(Space::with_strategies(2, twice).is_err());
        let many = (0..=MAX_STRATEGIES)
            .map(|i| StrategyDef::new(&format!("s{i}"), false, true, false))
            .collect();
        assert!(Space::with_strategies(2, many).is_err());
    }
}
