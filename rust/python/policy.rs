//! `PolicyCore` and `Decision` pyclasses: the per-request decision engine.

use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyTuple};

use super::convert::{action_index, bool_nd, f64_1d};
use super::learners::{reduce, save_with, verified_bytes, ArrayPair};
use super::{ShapeError, UnknownDecisionError};
use crate::cost::Prediction;
use crate::error::CoreError;
use crate::evidence::InteractionPrior;
use crate::learner::Config;
use crate::pacing::Budget;
use crate::policy::{Decision, Exploration, Feedback, NewModel, Policy, PolicyConfig, Weights};
use crate::space::{ModelInfo, Space, Strategy};
use crate::state;

/// (name, price_in, price_out, parallelism, bills_prompt_once, latency_in, latency_out,
///  prior_output_tokens)
type ModelTuple = (String, f64, f64, u32, bool, f64, f64, f64);

fn model_info(t: ModelTuple) -> ModelInfo {
    ModelInfo {
        name: t.0,
        price_in_per_mtok: t.1,
        price_out_per_mtok: t.2,
        parallelism: t.3,
        bills_prompt_once: t.4,
        latency_in_s_per_token: t.5,
        latency_out_s_per_token: t.6,
        prior_output_tokens: t.7,
        slot: 0,
        retired: false,
    }
}

fn actions_of(acts: Vec<(String, u32)>) -> Result<Vec<(Strategy, u32)>, CoreError> {
    acts.into_iter()
        .map(|(s, n)| Ok((Strategy::parse(&s)?, n)))
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

fn exploration(kind: &str, epsilon: f64, temperature: f64) -> Result<Exploration, CoreError> {
    match kind {
        "greedy" => Ok(Exploration::Greedy),
        "epsilon" => Ok(Exploration::Epsilon(epsilon)),
        "softmax" => Ok(Exploration::Softmax(temperature)),
        other => Err(CoreError::Config(format!(
            "unknown exploration {other:?}; expected greedy, epsilon or softmax"
        ))),
    }
}

fn budget(per_request: Option<f64>, per_hour: Option<f64>) -> Result<Budget, CoreError> {
    match (per_request, per_hour) {
        (None, None) => Ok(Budget::None),
        (Some(t), None) => Ok(Budget::PerRequest(t)),
        (None, Some(t)) => Ok(Budget::PerHour(t)),
        (Some(_), Some(_)) => Err(CoreError::Config(
            "give at most one of budget_per_request_usd and budget_per_hour_usd".into(),
        )),
    }
}

fn mask_arg(mask: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<bool>>> {
    match mask {
        None => Ok(None),
        Some(m) if m.is_none() => Ok(None),
        Some(m) => {
            let (v, shape) = bool_nd(m, "mask")?;
            if shape.len() != 1 {
                return Err(ShapeError::new_err(format!(
                    "mask must be 1-D (n_actions,), got shape {shape:?}"
                )));
            }
            Ok(Some(v))
        }
    }
}

static ACTION_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn prediction_dict<'py>(py: Python<'py>, p: &Prediction) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("output_tokens_per_sample", p.output_tokens_per_sample)?;
    d.set_item("samples", p.samples)?;
    d.set_item("rounds", p.rounds)?;
    d.set_item("cost_usd", p.cost_usd)?;
    d.set_item("latency_s", p.latency_s)?;
    Ok(d)
}

/// One decision: the chosen action with everything that explains it.
#[pyclass(frozen, module = "uniscale._core", name = "Decision")]
pub struct PyDecision {
    d: Decision,
}

#[pymethods]
impl PyDecision {
    #[getter]
    fn id(&self) -> u64 {
        self.d.id
    }
    #[getter]
    fn index(&self) -> usize {
        self.d.index
    }
    #[getter]
    fn action_uid(&self) -> u64 {
        self.d.uid
    }
    #[getter]
    fn model(&self) -> &str {
        &self.d.model
    }
    #[getter]
    fn strategy(&self) -> &'static str {
        self.d.strategy.name()
    }
    #[getter]
    fn n(&self) -> u32 {
        self.d.n
    }
    /// The chosen action as a `uniscale.Action`.
    #[getter]
    fn action<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let cls = ACTION_CLASS.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py.import("uniscale.space")?.getattr("Action")?.unbind())
        })?;
        cls.bind(py)
            .call1((self.d.model.as_str(), self.d.strategy.name(), self.d.n))
    }
    #[getter]
    fn quality_mean(&self) -> f64 {
        self.d.quality_mean
    }
    #[getter]
    fn quality_bonus(&self) -> f64 {
        self.d.quality_bonus
    }
    #[getter]
    fn mean(&self) -> f64 {
        self.d.mean
    }
    #[getter]
    fn bonus(&self) -> f64 {
        self.d.bonus
    }
    #[getter]
    fn score(&self) -> f64 {
        self.d.score
    }
    #[getter]
    fn cost_usd(&self) -> f64 {
        self.d.prediction.cost_usd
    }
    #[getter]
    fn latency_s(&self) -> f64 {
        self.d.prediction.latency_s
    }
    #[getter]
    fn output_tokens(&self) -> f64 {
        self.d.prediction.output_tokens_per_sample
    }
    #[getter]
    fn samples(&self) -> f64 {
        self.d.prediction.samples
    }
    #[getter]
    fn rounds(&self) -> f64 {
        self.d.prediction.rounds
    }
    #[getter]
    fn input_tokens(&self) -> f64 {
        self.d.input_tokens
    }
    #[getter]
    fn propensity(&self) -> f64 {
        self.d.propensity
    }
    #[getter]
    fn explored(&self) -> bool {
        self.d.explored
    }
    #[getter]
    fn fallback(&self) -> bool {
        self.d.fallback
    }
    /// Conservative mode replaced the learner's choice by the baseline action (a quality
    /// floor's guard: by the best allowed candidate).
    #[getter]
    fn conservative(&self) -> bool {
        self.d.conservative
    }
    #[getter]
    fn pacing_lambda(&self) -> f64 {
        self.d.lambda
    }
    /// Quality-floor mode's price on quality for this decision (None in other modes).
    #[getter]
    fn quality_multiplier(&self) -> Option<f64> {
        self.d.quality_multiplier
    }
    #[getter]
    fn created_s(&self) -> f64 {
        self.d.created_s
    }
    #[getter]
    fn candidates<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        self.d
            .candidates
            .iter()
            .map(|&c| c as i64)
            .collect::<Vec<_>>()
            .into_pyarray(py)
    }
    #[getter]
    fn probabilities<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.d.probabilities.clone().into_pyarray(py)
    }
    /// `{action index: reason}` with reason "masked", "cost", "latency" or "dominated:<index>".
    #[getter]
    fn pruned<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (i, r) in &self.d.pruned {
            d.set_item(i, r.describe())?;
        }
        Ok(d)
    }
    /// A JSON-ready dict of the whole decision (for decision logs).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let x = &self.d;
        d.set_item("id", x.id)?;
        d.set_item("index", x.index)?;
        d.set_item("action_uid", x.uid)?;
        d.set_item("model", &x.model)?;
        d.set_item("strategy", x.strategy.name())?;
        d.set_item("n", x.n)?;
        d.set_item("quality_mean", x.quality_mean)?;
        d.set_item("quality_bonus", x.quality_bonus)?;
        d.set_item("mean", x.mean)?;
        d.set_item("bonus", x.bonus)?;
        d.set_item("score", x.score)?;
        d.set_item("prediction", prediction_dict(py, &x.prediction)?)?;
        d.set_item("input_tokens", x.input_tokens)?;
        d.set_item("propensity", x.propensity)?;
        d.set_item("explored", x.explored)?;
        d.set_item("fallback", x.fallback)?;
        d.set_item("conservative", x.conservative)?;
        d.set_item("pacing_lambda", x.lambda)?;
        d.set_item("quality_multiplier", x.quality_multiplier)?;
        d.set_item("candidates", x.candidates.clone())?;
        d.set_item("probabilities", x.probabilities.clone())?;
        let pr = PyDict::new(py);
        for (i, r) in &x.pruned {
            pr.set_item(i.to_string(), r.describe())?;
        }
        d.set_item("pruned", pr)?;
        d.set_item("created_s", x.created_s)?;
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "Decision(id={}, action={}/{}/n={}, score={:.4}, cost_usd={:.3e}, latency_s={:.3}, propensity={:.3}{})",
            self.d.id,
            self.d.model,
            self.d.strategy.name(),
            self.d.n,
            self.d.score,
            self.d.prediction.cost_usd,
            self.d.prediction.latency_s,
            self.d.propensity,
            if self.d.fallback { ", fallback" } else if self.d.conservative { ", conservative" } else { "" }
        )
    }
}

/// The numeric core of `uniscale.Policy` (use that class; this one takes raw tuples).
#[pyclass(frozen, module = "uniscale._core", name = "PolicyCore")]
pub struct PyPolicyCore {
    pub(super) inner: Mutex<Policy>,
}

#[pymethods]
impl PyPolicyCore {
    #[new]
    #[pyo3(signature = (
        models, dim, *, learner="shared", alpha=1.0, ridge=1.0, discount=1.0, prior_mean=0.0,
        weights=(1.0, 1.0, 0.2), cost_scale=None, latency_scale=None, exploration="greedy",
        epsilon=0.05, temperature=0.1, budget_per_request_usd=None, budget_per_hour_usd=None,
        pacing_step=0.05, pacing_carryover=100.0, ttl_s=3600.0, capacity=65536,
        seed=0, model_slots=None, feature_version=String::new(), interaction_scale=1.0,
        interaction_prior=1.0, interaction_auto=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        models: Vec<(ModelTuple, Vec<(String, u32)>)>,
        dim: i64,
        learner: &str,
        alpha: f64,
        ridge: f64,
        discount: f64,
        prior_mean: f64,
        weights: (f64, f64, f64),
        cost_scale: Option<f64>,
        latency_scale: Option<f64>,
        exploration: &str,
        epsilon: f64,
        temperature: f64,
        budget_per_request_usd: Option<f64>,
        budget_per_hour_usd: Option<f64>,
        pacing_step: f64,
        pacing_carryover: f64,
        ttl_s: f64,
        capacity: i64,
        seed: u64,
        model_slots: Option<i64>,
        feature_version: String,
        interaction_scale: f64,
        interaction_prior: f64,
        interaction_auto: bool,
    ) -> PyResult<Self> {
        let shared = match learner {
            "shared" => true,
            "disjoint" => false,
            other => {
                return Err(CoreError::Config(format!(
                    "learner must be 'shared' or 'disjoint', got {other:?}"
                ))
                .into())
            }
        };
        let dim = usize::try_from(dim)
            .ok()
            .filter(|d| *d >= 1)
            .ok_or_else(|| CoreError::Config(format!("dim must be >= 1, got {dim}")))?;
        let capacity = usize::try_from(capacity)
            .map_err(|_| CoreError::Config(format!("capacity must be >= 1, got {capacity}")))?;
        let n_models = models.len();
        let slots = match model_slots {
            // One spare slot for a model added while serving (each slot widens the shared
            // learner's joint dimension by d + 1; pass model_slots to reserve more).
            None => n_models.max(1) + 1,
            Some(s) => usize::try_from(s)
                .map_err(|_| CoreError::Config(format!("model_slots must be >= 1, got {s}")))?,
        };
        let mut new_models: Vec<NewModel> = Vec::with_capacity(n_models);
        for (m, acts) in models {
            new_models.push((model_info(m), actions_of(acts)?));
        }
        for (what, v) in [("cost_scale", cost_scale), ("latency_scale", latency_scale)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(CoreError::Config(format!(
                        "{what} must be finite and > 0, got {v}"
                    ))
                    .into());
                }
            }
        }
        let cfg = PolicyConfig {
            cost_scale: cost_scale.unwrap_or(f64::NAN),
            latency_scale: latency_scale.unwrap_or(f64::NAN),
            exploration: self::exploration(exploration, epsilon, temperature)?,
            ttl_s,
            capacity,
            feature_version,
            interaction_scale,
            interaction_prior: InteractionPrior::new(interaction_prior, interaction_auto)?,
        };
        let p = Policy::new(
            new_models,
            slots,
            dim,
            shared,
            Config {
                alpha,
                ridge,
                discount,
                prior_mean,
            },
            Weights {
                quality: weights.0,
                cost: weights.1,
                latency: weights.2,
            },
            cfg,
            budget(budget_per_request_usd, budget_per_hour_usd)?,
            pacing_step,
            pacing_carryover,
            seed,
        )?;
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
        let mask = mask_arg(mask)?;
        let now = now_or(now);
        let d = py.detach(|| {
            self.inner.lock().select(
                &x,
                input_tokens,
                max_cost_usd,
                max_latency_s,
                mask.as_deref(),
                now,
            )
        })?;
        Ok(PyDecision { d })
    }

    /// Feedback for a decision; returns (reward, cost_usd, latency_s, learner_updated).
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
    ) -> PyResult<(f64, f64, f64, bool)> {
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
        Ok((r.reward, r.cost_usd, r.latency_s, r.learner_updated))
    }

    /// Learns from an outcome no decision asked for (a sub-action seen inside a larger run, a
    /// warm start, another replica); returns (reward, cost_usd, latency_s, learner_updated).
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
    ) -> PyResult<(f64, f64, f64, bool)> {
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
        Ok((r.reward, r.cost_usd, r.latency_s, r.learner_updated))
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

    /// Conservative mode around the action at `index`, or off with `None`.
    #[pyo3(signature = (
        index, delta=0.05, confidence=0.95, quality_sd=0.5, quality_range=(0.0, 1.0),
        floor=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn set_conservative(
        &self,
        index: Option<&Bound<'_, PyAny>>,
        delta: f64,
        confidence: f64,
        quality_sd: f64,
        quality_range: (f64, f64),
        floor: Option<f64>,
    ) -> PyResult<()> {
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

    #[pyo3(signature = (kind, epsilon=0.05, temperature=0.1))]
    fn set_exploration(&self, kind: &str, epsilon: f64, temperature: f64) -> PyResult<()> {
        let e = exploration(kind, epsilon, temperature)?;
        Ok(self.inner.lock().set_exploration(e)?)
    }

    /// Cost exploration on or off (see `Policy.set_cost_exploration`).
    fn set_cost_exploration(&self, on: bool) {
        self.inner.lock().set_cost_exploration(on);
    }

    #[getter]
    fn cost_exploration(&self) -> bool {
        self.inner.lock().cost_exploration()
    }

    #[pyo3(signature = (
        budget_per_request_usd=None, budget_per_hour_usd=None, pacing_step=0.05,
        pacing_carryover=100.0
    ))]
    fn set_budget(
        &self,
        budget_per_request_usd: Option<f64>,
        budget_per_hour_usd: Option<f64>,
        pacing_step: f64,
        pacing_carryover: f64,
    ) -> PyResult<()> {
        let b = budget(budget_per_request_usd, budget_per_hour_usd)?;
        Ok(self
            .inner
            .lock()
            .pacer
            .set_budget(b, pacing_step, pacing_carryover)?)
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

    /// Current actions as (model, strategy, n, uid) tuples, in index order.
    fn actions(&self) -> Vec<(String, &'static str, u32, u64)> {
        let p = self.inner.lock();
        p.space
            .actions
            .iter()
            .map(|a| {
                (
                    p.space.models[a.model].name.clone(),
                    a.strategy.name(),
                    a.n,
                    a.uid,
                )
            })
            .collect()
    }

    /// Every registered model as (name, price_in, price_out, parallelism, bills_prompt_once,
    /// latency_in, latency_out, prior_output_tokens, retired).
    #[allow(clippy::type_complexity)]
    fn model_table(&self) -> Vec<(String, f64, f64, u32, bool, f64, f64, f64, bool)> {
        let p = self.inner.lock();
        p.space
            .models
            .iter()
            .map(|m| {
                (
                    m.name.clone(),
                    m.price_in_per_mtok,
                    m.price_out_per_mtok,
                    m.parallelism,
                    m.bills_prompt_once,
                    m.latency_in_s_per_token,
                    m.latency_out_s_per_token,
                    m.prior_output_tokens,
                    m.retired,
                )
            })
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

    /// Cost-model predictions for every action: (K, 5) columns output_tokens_per_sample,
    /// samples, rounds, cost_usd, latency_s.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        input_tokens: f64,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let preds = self.inner.lock().predict_all(input_tokens)?;
        let k = preds.len();
        let flat: Vec<f64> = preds
            .iter()
            .flat_map(|p| {
                [
                    p.output_tokens_per_sample,
                    p.samples,
                    p.rounds,
                    p.cost_usd,
                    p.latency_s,
                ]
            })
            .collect();
        flat.into_pyarray(py).reshape([k, 5])
    }

    /// Optimistic estimates and the values limits are checked against for every action:
    /// (K, 4) columns cost_usd_low, latency_s_low, cost_usd_for_limit, latency_s_for_limit.
    fn predict_bounds<'py>(
        &self,
        py: Python<'py>,
        input_tokens: f64,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let est = self.inner.lock().estimate_all(input_tokens)?;
        let k = est.len();
        let flat: Vec<f64> = est
            .iter()
            .flat_map(|e| {
                [
                    e.cost_usd_low,
                    e.latency_s_low,
                    e.cost_usd_for_limit(),
                    e.latency_s_for_limit(),
                ]
            })
            .collect();
        flat.into_pyarray(py).reshape([k, 4])
    }

    /// Outcomes observed per action (decisions and side observations), (K,).
    fn action_observations<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        self.inner.lock().action_observations().into_pyarray(py)
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
        model: ModelTuple,
        actions: Vec<(String, u32)>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let acts = actions_of(actions)?;
        let idx = self.inner.lock().add_model(model_info(model), &acts)?;
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
        let b = verified_bytes(py, || self.inner.lock().to_bytes(), Policy::from_bytes)?;
        Ok(PyBytes::new(py, &b))
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
        let p = py.detach(|| Policy::from_bytes(&state::read_file(&path)?))?;
        Ok(PyPolicyCore {
            inner: Mutex::new(p),
        })
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let me = slf.get();
        let bytes = verified_bytes(slf.py(), || me.inner.lock().to_bytes(), Policy::from_bytes)?;
        reduce(slf, bytes)
    }
}

/// psi for an explicit action list (what `ActionSpace.features()` shows).
#[pyfunction]
#[pyo3(signature = (models, model_slots=None))]
pub fn action_features<'py>(
    py: Python<'py>,
    models: Vec<(ModelTuple, Vec<(String, u32)>)>,
    model_slots: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let mut space = Space::new(model_slots.unwrap_or(models.len().max(1) + 1))?;
    for (m, acts) in models {
        let mi = space.add_model(model_info(m))?;
        for (s, n) in actions_of(acts)? {
            space.add_action(mi, s, n)?;
        }
    }
    let (k, w) = (space.actions.len(), space.p());
    space.psi_matrix().into_pyarray(py).reshape([k, w])
}
