//! `PolicyCore`: the per-request decision engine (the typed values it returns are in
//! `policy_types.rs`, its settings in `policy_config.rs`).

use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyTuple};

use super::action::PyAction;
use super::convert::{action_index, f64_1d};
use super::learners::{load_file, mask_1d, reduce, save_with, verified_bytes, ArrayPair};
use super::policy_config::{budget, exploration, PyPolicyConfig};
use super::policy_types::{ModelArg, PyDecision, PyModelInfo, PyPrediction, PyUpdateResult};
use super::UnknownDecisionError;
use crate::error::CoreError;
use crate::evidence::InteractionPrior;
use crate::learner::Config;
use crate::policy::{Feedback, NewModel, Policy, PolicyConfig, Request, Weights};
use crate::space::{Space, Strategy, StrategyDef};

use super::strategy::{strategy_list, PyStrategyInfo};

/// A model with its actions, as `PolicyCore` and `action_features` take them.
type ModelWithActions = (ModelArg, Vec<(String, u32)>);

/// `(strategy name, n)` pairs resolved against `strategies` (the space's list).
fn actions_of(
    strategies: &[StrategyDef],
    acts: Vec<(String, u32)>,
) -> Result<Vec<(Strategy, u32)>, CoreError> {
    // parse against an empty space over the list (one place spells the error)
    let space = Space::with_strategies(1, strategies.to_vec())?;
    acts.into_iter()
        .map(|(s, n)| Ok((space.parse_strategy(&s)?, n)))
        .collect()
}

fn now_or(now: Option<f64>) -> f64 {
    now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    })
}

/// The numeric core of `uniscale.Policy` (use that class; it adds the `ActionSpace`, the
/// `ModelSpec`s' endpoint settings and the `Action` objects).
#[pyclass(frozen, module = "uniscale._core", name = "PolicyCore")]
pub struct PyPolicyCore {
    pub(super) inner: Mutex<Policy>,
}

#[pymethods]
impl PyPolicyCore {
    /// A policy over `models` (each a `ModelInfo` with its `(strategy, n)` actions) for
    /// request features of length `dim`, with the settings of `config` (`PolicyConfig()`
    /// when omitted). `strategies` lists the strategies the feature layout has room for (a
    /// `StrategyInfo` each; the four built-ins when omitted).
    #[new]
    #[pyo3(signature = (models, dim, config=None, strategies=None))]
    fn new(
        py: Python<'_>,
        models: Vec<ModelWithActions>,
        dim: i64,
        config: Option<Bound<'_, PyPolicyConfig>>,
        strategies: Option<Vec<PyRef<'_, PyStrategyInfo>>>,
    ) -> PyResult<Self> {
        let strategies = strategy_list(strategies);
        let config = match config {
            Some(c) => c,
            None => PyPolicyConfig::default_bound(py)?,
        };
        let c = config.get();
        let shared = c.learner == "shared";
        let dim = usize::try_from(dim)
            .ok()
            .filter(|d| *d >= 1)
            .ok_or_else(|| CoreError::Config(format!("dim must be >= 1, got {dim}")))?;
        let capacity = usize::try_from(c.capacity)
            .map_err(|_| CoreError::Config(format!("capacity must be >= 1, got {}", c.capacity)))?;
        let n_models = models.len();
        let slots = match c.model_slots {
            // One spare slot for a model added while serving (each slot widens the shared
            // learner's joint dimension by d + 1; pass model_slots to reserve more).
            None => n_models.max(1) + 1,
            Some(s) => usize::try_from(s)
                .map_err(|_| CoreError::Config(format!("model_slots must be >= 1, got {s}")))?,
        };
        let mut new_models: Vec<NewModel> = Vec::with_capacity(n_models);
        for (m, acts) in models {
            new_models.push((m.0, actions_of(&strategies, acts)?));
        }
        let (mult, auto) = c.interaction();
        let cfg = PolicyConfig {
            cost_scale: c.cost_scale.unwrap_or(f64::NAN),
            latency_scale: c.latency_scale.unwrap_or(f64::NAN),
            exploration: c.exploration_rule()?,
            ttl_s: c.ttl_s,
            capacity,
            feature_version: c.feature_version.clone(),
            interaction_scale: c.interaction_scale,
            interaction_prior: InteractionPrior::new(mult, auto)?,
        };
        let mut p = Policy::new(
            new_models,
            strategies,
            slots,
            dim,
            shared,
            Config {
                alpha: c.alpha,
                ridge: c.ridge,
                discount: c.discount,
                prior_mean: c.prior_mean,
            },
            c.weights(),
            cfg,
            c.budget_rule()?,
            c.pacing_step,
            c.pacing_carryover,
            c.seed,
        )?;
        p.set_cost_exploration(c.cost_exploration);
        Ok(PyPolicyCore {
            inner: Mutex::new(p),
        })
    }

    #[pyo3(signature = (x, input_tokens=0.0, max_cost_usd=None, max_latency_s=None, mask=None, now=None))]
    #[allow(clippy::too_many_arguments)]
    fn select(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        input_tokens: f64,
        max_cost_usd: Option<f64>,
        max_latency_s: Option<f64>,
        mask: Option<&Bound<'_, PyAny>>,
        now: Option<f64>,
    ) -> PyResult<PyDecision> {
        let x = f64_1d(x, "x")?;
        let mask = mask_1d(mask)?;
        let now = now_or(now);
        let req = Request {
            x: &x,
            input_tokens,
            max_cost_usd,
            max_latency_s,
            allowed: mask.as_deref(),
        };
        let d = py.detach(|| self.inner.lock().select(req, now))?;
        Ok(PyDecision { d })
    }

    /// Feedback for a decision.
    #[pyo3(signature = (decision_id, quality, cost_usd=None, latency_s=None, output_tokens=None, samples_used=None, now=None))]
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        py: Python<'_>,
        decision_id: &Bound<'_, PyAny>,
        quality: f64,
        cost_usd: Option<f64>,
        latency_s: Option<f64>,
        output_tokens: Option<f64>,
        samples_used: Option<f64>,
        now: Option<f64>,
    ) -> PyResult<PyUpdateResult> {
        // Ids are u64 in the core; anything else (negative, huge, not an int, a bool) was never
        // issued.
        let extracted: PyResult<u64> = if decision_id.is_instance_of::<PyBool>() {
            Err(UnknownDecisionError::new_err("bool"))
        } else {
            decision_id.extract()
        };
        let id: u64 = extracted.map_err(|_| {
            let shown = decision_id
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| "?".into());
            UnknownDecisionError::new_err(format!(
                "unknown decision id {shown}: ids are the non-negative integers select() returns"
            ))
        })?;
        let fb = Feedback {
            quality,
            cost_usd,
            latency_s,
            output_tokens,
            samples_used,
        };
        let now = now_or(now);
        let r = py.detach(|| self.inner.lock().update(id, fb, now))?;
        Ok(PyUpdateResult { r })
    }

    /// Learns from an outcome no decision asked for (a sub-action seen inside a larger run, a
    /// warm start, another replica).
    #[pyo3(signature = (x, action, quality, input_tokens=0.0, cost_usd=None, latency_s=None, output_tokens=None, samples_used=None, weight=1.0))]
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        quality: f64,
        input_tokens: f64,
        cost_usd: Option<f64>,
        latency_s: Option<f64>,
        output_tokens: Option<f64>,
        samples_used: Option<f64>,
        weight: f64,
    ) -> PyResult<PyUpdateResult> {
        let action = action_index(action)?;
        let x = f64_1d(x, "x")?;
        let fb = Feedback {
            quality,
            cost_usd,
            latency_s,
            output_tokens,
            samples_used,
        };
        let r = py.detach(|| {
            self.inner
                .lock()
                .observe(&x, action, input_tokens, fb, weight)
        })?;
        Ok(PyUpdateResult { r })
    }

    fn set_weights(&self, quality: f64, cost: f64, latency: f64) -> PyResult<()> {
        Ok(self.inner.lock().set_weights(Weights {
            quality,
            cost,
            latency,
        })?)
    }

    #[getter]
    fn weights(&self) -> (f64, f64, f64) {
        let w = self.inner.lock().weights;
        (w.quality, w.cost, w.latency)
    }

    /// Conservative mode around the action at `index`, or off with `None`; `delta` and
    /// `confidence` default to `PolicyConfig`'s `conservative_delta` / `_confidence`.
    #[pyo3(signature = (
        index, delta=None, confidence=None, quality_sd=None, quality_range=None, floor=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn set_conservative(
        &self,
        py: Python<'_>,
        index: Option<&Bound<'_, PyAny>>,
        delta: Option<f64>,
        confidence: Option<f64>,
        quality_sd: Option<f64>,
        quality_range: Option<(f64, f64)>,
        floor: Option<f64>,
    ) -> PyResult<()> {
        // The noise scale of one quality and the range its bounds are clipped to: qualities in
        // [0, 1] unless told otherwise.
        let quality_sd = quality_sd.unwrap_or(0.5);
        let quality_range = quality_range.unwrap_or((0.0, 1.0));
        let (delta, confidence) = match (delta, confidence) {
            (Some(d), Some(c)) => (d, c),
            _ => {
                let dflt = PyPolicyConfig::default_bound(py)?;
                let c = dflt.get();
                (
                    delta.unwrap_or(c.conservative_delta),
                    confidence.unwrap_or(c.conservative_confidence),
                )
            }
        };
        let i = match index {
            Some(v) if !v.is_none() => Some(action_index(v)?),
            _ => None,
        };
        Ok(self.inner.lock().set_conservative(
            i,
            delta,
            confidence,
            quality_sd,
            quality_range,
            floor,
        )?)
    }

    /// Conservative mode's account as a dict, or `None` when it is off.
    fn conservative_status<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let p = self.inner.lock();
        let Some(b) = p.conservative_budget()? else {
            return Ok(None);
        };
        let Some(c) = &p.conservative else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("baseline", p.conservative_baseline())?;
        d.set_item(
            "metric",
            match c.metric {
                crate::conservative::Metric::Reward => "reward",
                crate::conservative::Metric::Quality => "quality",
            },
        )?;
        d.set_item("tolerance", c.tolerance)?;
        d.set_item("multiplier", c.multiplier)?;
        d.set_item("retrospective", c.retro)?;
        d.set_item("counterfactual_requests", c.cf_n)?;
        d.set_item("delta", c.delta)?;
        d.set_item("confidence", c.confidence())?;
        d.set_item("z", c.z)?;
        d.set_item("quality_sd", c.quality_sd)?;
        d.set_item("quality_range", (c.quality_min, c.quality_max))?;
        d.set_item("decisions", c.decisions)?;
        d.set_item("overrides", c.overrides)?;
        d.set_item("non_baseline", c.n_other)?;
        d.set_item("open", c.open.len())?;
        d.set_item("realised_reward", c.realised)?;
        d.set_item("policy_lower", b.policy_lo)?;
        d.set_item("baseline_upper", b.baseline_hi)?;
        d.set_item("slack", b.slack)?;
        Ok(Some(d))
    }

    /// `epsilon` and `temperature` default to `PolicyConfig`'s.
    #[pyo3(signature = (kind, epsilon=None, temperature=None))]
    fn set_exploration(
        &self,
        py: Python<'_>,
        kind: &str,
        epsilon: Option<f64>,
        temperature: Option<f64>,
    ) -> PyResult<()> {
        let dflt = PyPolicyConfig::default_bound(py)?;
        let c = dflt.get();
        let e = exploration(
            kind,
            epsilon.unwrap_or(c.epsilon),
            temperature.unwrap_or(c.temperature),
        )?;
        Ok(self.inner.lock().set_exploration(e)?)
    }

    /// `pacing_step` and `pacing_carryover` default to `PolicyConfig`'s.
    #[pyo3(signature = (
        budget_per_request_usd=None, budget_per_hour_usd=None, pacing_step=None,
        pacing_carryover=None
    ))]
    fn set_budget(
        &self,
        py: Python<'_>,
        budget_per_request_usd: Option<f64>,
        budget_per_hour_usd: Option<f64>,
        pacing_step: Option<f64>,
        pacing_carryover: Option<f64>,
    ) -> PyResult<()> {
        let b = budget(budget_per_request_usd, budget_per_hour_usd)?;
        let dflt = PyPolicyConfig::default_bound(py)?;
        let c = dflt.get();
        let (step, carry) = (
            pacing_step.unwrap_or(c.pacing_step),
            pacing_carryover.unwrap_or(c.pacing_carryover),
        );
        Ok(self.inner.lock().pacer.set_budget(b, step, carry)?)
    }

    /// Unspent budget kept as credit, in requests' worth of the target (0 when over budget).
    #[getter]
    fn pacing_credit(&self) -> f64 {
        (-self.inner.lock().pacer.debt).max(0.0)
    }

    #[getter]
    fn pacing_lambda(&self) -> f64 {
        self.inner.lock().pacer.lambda
    }
    #[getter]
    fn total_cost_usd(&self) -> f64 {
        self.inner.lock().pacer.total_cost_usd
    }
    #[getter]
    fn n_actions(&self) -> usize {
        self.inner.lock().n_actions()
    }
    #[getter]
    fn dim(&self) -> usize {
        self.inner.lock().dim
    }
    #[getter]
    fn n_pending(&self) -> usize {
        self.inner.lock().pending.len()
    }

    /// The id the next decision will get.
    #[getter]
    fn next_decision_id(&self) -> u64 {
        self.inner.lock().next_id
    }

    /// Moves the next decision id up to `at_least` (never down, so no id is issued twice);
    /// returns the next id. Workers of one server take disjoint id ranges this way.
    fn advance_decision_ids(&self, at_least: u64) -> u64 {
        let mut p = self.inner.lock();
        p.next_id = p.next_id.max(at_least);
        p.next_id
    }
    #[getter]
    fn cost_scale(&self) -> f64 {
        self.inner.lock().cfg.cost_scale
    }
    #[getter]
    fn latency_scale(&self) -> f64 {
        self.inner.lock().cfg.latency_scale
    }
    /// The quality learner's exploration width (the bonus is `alpha * sqrt(phi' A^-1 phi)`).
    #[getter]
    fn alpha(&self) -> f64 {
        self.inner.lock().alpha()
    }
    #[getter]
    fn interaction_scale(&self) -> f64 {
        self.inner.lock().cfg.interaction_scale
    }

    /// `(multiplier, auto)`: the ridge multiplier currently on the shared learner's request x
    /// action interactions, and whether it is re-estimated by empirical Bayes.
    #[getter]
    fn interaction_prior(&self) -> (f64, bool) {
        let ip = self.inner.lock().cfg.interaction_prior;
        (ip.mult, ip.auto)
    }
    #[getter]
    fn feature_version(&self) -> String {
        self.inner.lock().cfg.feature_version.clone()
    }
    #[getter]
    fn learner(&self) -> &'static str {
        self.inner.lock().learner.kind()
    }

    /// Current actions as `Action`s, in index order (built here from the validated space: no
    /// strategy-registry lookup per action).
    fn action_list(&self) -> Vec<PyAction> {
        let p = self.inner.lock();
        p.space
            .actions
            .iter()
            .map(|a| {
                PyAction::trusted(
                    &p.space.models[a.model].name,
                    p.space.strategy_name(a.strategy),
                    a.n,
                )
            })
            .collect()
    }

    /// Current actions as (model, strategy, n, uid) tuples, in index order.
    fn actions(&self) -> Vec<(String, String, u32, u64)> {
        let p = self.inner.lock();
        p.space
            .actions
            .iter()
            .map(|a| {
                (
                    p.space.models[a.model].name.clone(),
                    p.space.strategy_name(a.strategy).to_string(),
                    a.n,
                    a.uid,
                )
            })
            .collect()
    }

    /// The strategies, in index order (what the feature layout was derived from).
    fn strategies(&self) -> Vec<PyStrategyInfo> {
        let p = self.inner.lock();
        p.space
            .strategies
            .iter()
            .map(|s| PyStrategyInfo { s: s.clone() })
            .collect()
    }

    /// Every registered model, retired ones included, in registration order.
    fn model_table(&self) -> Vec<PyModelInfo> {
        let p = self.inner.lock();
        p.space.models.iter().map(PyModelInfo::from_core).collect()
    }

    /// Stable identity of each current action, in index order (`Decision.action_uid`).
    fn action_uids(&self) -> Vec<u64> {
        self.inner
            .lock()
            .space
            .actions
            .iter()
            .map(|a| a.uid)
            .collect()
    }

    /// Names of the active (not retired) models.
    fn models(&self) -> Vec<String> {
        let p = self.inner.lock();
        p.space
            .models
            .iter()
            .filter(|m| !m.retired)
            .map(|m| m.name.clone())
            .collect()
    }

    /// Action features psi, (K, p).
    fn action_features<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let p = self.inner.lock();
        let psi = p.space.psi_matrix();
        let (k, w) = (p.space.actions.len(), p.space.p());
        psi.into_pyarray(py).reshape([k, w])
    }

    /// Cost-model predictions for every action at this prompt size.
    fn predict(&self, input_tokens: f64) -> PyResult<PyPrediction> {
        let rows = self.inner.lock().estimate_all(input_tokens)?;
        Ok(PyPrediction { rows })
    }

    /// Outcomes observed per action (decisions and side observations), (K,).
    fn action_observations<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        self.inner.lock().action_observations().into_pyarray(py)
    }

    /// Cost exploration on or off (see `Policy.set_cost_exploration`).
    fn set_cost_exploration(&self, on: bool) {
        self.inner.lock().set_cost_exploration(on);
    }

    #[getter]
    fn cost_exploration(&self) -> bool {
        self.inner.lock().cost_exploration()
    }

    /// Quality posterior (mean, bonus) per action for request features x.
    fn quality_scores<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<ArrayPair<'py>> {
        let x = f64_1d(x, "x")?;
        let (m, b) = py.detach(|| self.inner.lock().quality_scores(&x))?;
        Ok((m.into_pyarray(py), b.into_pyarray(py)))
    }

    /// Adds a model while serving; returns the new action indices.
    fn add_model<'py>(
        &self,
        py: Python<'py>,
        model: ModelArg,
        actions: Vec<(String, u32)>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let mut p = self.inner.lock();
        let acts = actions_of(&p.space.strategies, actions)?;
        let idx = p.add_model(model.0, &acts)?;
        Ok(idx
            .into_iter()
            .map(|i| i as i64)
            .collect::<Vec<_>>()
            .into_pyarray(py))
    }

    /// Retires a model; returns mapping old action index -> new (-1 = removed).
    fn retire_model<'py>(
        &self,
        py: Python<'py>,
        name: &str,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let m = self.inner.lock().retire_model(name)?;
        Ok(m.into_pyarray(py))
    }

    /// The state blob; verified to load back before it is returned.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        verified_bytes(py, || self.inner.lock().to_bytes(), Policy::from_bytes)
    }

    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<Self> {
        let p = py.detach(|| Policy::from_bytes(&data))?;
        Ok(PyPolicyCore {
            inner: Mutex::new(p),
        })
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        save_with(
            py,
            &path,
            || self.inner.lock().to_bytes(),
            Policy::from_bytes,
        )
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let p = load_file(py, &path, Policy::from_bytes)?;
        Ok(PyPolicyCore {
            inner: Mutex::new(p),
        })
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let me = slf.get();
        reduce(slf, || me.inner.lock().to_bytes(), Policy::from_bytes)
    }
}

/// psi for an explicit action list (what `ActionSpace.features()` shows).
#[pyfunction]
#[pyo3(signature = (models, model_slots=None, strategies=None))]
pub fn action_features<'py>(
    py: Python<'py>,
    models: Vec<ModelWithActions>,
    model_slots: Option<usize>,
    strategies: Option<Vec<PyRef<'_, PyStrategyInfo>>>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let mut space = Space::with_strategies(
        model_slots.unwrap_or(models.len().max(1) + 1),
        strategy_list(strategies),
    )?;
    for (m, acts) in models {
        let mi = space.add_model(m.0)?;
        for (s, n) in actions_of(&space.strategies, acts)? {
            space.add_action(mi, s, n)?;
        }
    }
    let (k, w) = (space.actions.len(), space.p());
    space.psi_matrix().into_pyarray(py).reshape([k, w])
}
