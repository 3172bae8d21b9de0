//! `PolicyConfig`: every setting of `uniscale.Policy`, each default written once (in the
//! `#[pyo3(signature)]` below; Python reads them from here).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{Borrowed, IntoPyObjectExt};

use crate::error::CoreError;
use crate::pacing::Budget;
use crate::policy::{Exploration, Weights, COST_SENSITIVE, PRESETS};

use super::policy_types::{kw_repr, reduce_kw};
use super::ConfigError;

/// The reward weights as given: a preset name (kept, so the config shows what was asked for)
/// or explicit `(quality, cost, latency)` weights.
#[derive(Clone, Debug, PartialEq)]
pub enum Reward {
    Preset(&'static str, Weights),
    Weights(Weights),
}

impl Default for Reward {
    /// The `cost_sensitive` preset.
    fn default() -> Self {
        Reward::Preset("cost_sensitive", COST_SENSITIVE)
    }
}

impl Reward {
    fn preset(name: &str) -> Option<Reward> {
        PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(n, w)| Reward::Preset(n, w))
    }

    fn weights(&self) -> Weights {
        match self {
            Reward::Preset(_, w) | Reward::Weights(w) => *w,
        }
    }
}

fn weight_error(key: &str, shown: &str) -> PyErr {
    ConfigError::new_err(format!(
        "RewardWeights.{key} must be a finite number >= 0, got {shown}"
    ))
}

fn one_weight(key: &str, v: &Bound<'_, PyAny>) -> PyResult<f64> {
    let shown = || {
        v.repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let x: f64 = v.extract().map_err(|_| weight_error(key, &shown()))?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(weight_error(key, &shown()))
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Reward {
    type Error = PyErr;

    /// A preset name, a `(quality, cost, latency)` tuple, or anything with `quality`, `cost`
    /// and `latency` attributes (`uniscale.RewardWeights`).
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let obj = obj.to_owned();
        const KEYS: [&str; 3] = ["quality", "cost", "latency"];
        if let Ok(s) = obj.cast::<PyString>() {
            if let Some(r) = Reward::preset(s.to_str()?) {
                return Ok(r);
            }
            let mut names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            names.sort_unstable();
            return Err(ConfigError::new_err(
                format!(
                    "unknown reward preset {}; expected one of {names:?}",
                    obj.repr()?
                )
                .replace('"', "'"),
            ));
        }
        let values: Vec<Bound<'py, PyAny>> = if let Ok(t) = obj.cast::<PyTuple>() {
            t.iter().collect()
        } else if KEYS.iter().all(|k| obj.hasattr(*k).unwrap_or(false)) {
            KEYS.iter()
                .map(|k| obj.getattr(*k))
                .collect::<PyResult<_>>()?
        } else {
            Vec::new()
        };
        if values.len() != 3 {
            return Err(ConfigError::new_err(format!(
                "reward must be a preset name, RewardWeights or a 3-tuple, got {}",
                obj.repr()?
            )));
        }
        Ok(Reward::Weights(Weights {
            quality: one_weight(KEYS[0], &values[0])?,
            cost: one_weight(KEYS[1], &values[1])?,
            latency: one_weight(KEYS[2], &values[2])?,
        }))
    }
}

/// The shared learner's interaction prior as given: a fixed multiplier, `"auto"` (empirical
/// Bayes), or `None` (auto where it applies: the shared learner without discounting).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prior {
    Auto,
    Fixed(f64),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Prior {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = obj.cast::<PyString>() {
            if s.to_str()? == "auto" {
                return Ok(Prior::Auto);
            }
        } else if let Ok(v) = obj.extract::<f64>() {
            return Ok(Prior::Fixed(v));
        }
        Err(ConfigError::new_err(format!(
            "interaction_prior must be a number >= 1 or 'auto', got {}",
            obj.repr()?
        )))
    }
}

pub fn exploration(kind: &str, epsilon: f64, temperature: f64) -> Result<Exploration, CoreError> {
    match kind {
        "greedy" => Ok(Exploration::Greedy),
        "epsilon" => Ok(Exploration::Epsilon(epsilon)),
        "softmax" => Ok(Exploration::Softmax(temperature)),
        other => Err(CoreError::Config(format!(
            "unknown exploration {other:?}; expected greedy, epsilon or softmax"
        ))),
    }
}

pub fn budget(per_request: Option<f64>, per_hour: Option<f64>) -> Result<Budget, CoreError> {
    match (per_request, per_hour) {
        (None, None) => Ok(Budget::None),
        (Some(t), None) => Ok(Budget::PerRequest(t)),
        (None, Some(t)) => Ok(Budget::PerHour(t)),
        (Some(_), Some(_)) => Err(CoreError::Config(
            "give at most one of budget_per_request_usd and budget_per_hour_usd".into(),
        )),
    }
}

/// Every setting of a `uniscale.Policy` (see its docstring for what each one does). Immutable:
/// `replace(**changes)` returns a changed copy. The learner-facing settings are checked when
/// the config is built; numeric domains (e.g. `ttl_s > 0`) when a policy is built from it.
#[pyclass(frozen, module = "uniscale._core", name = "PolicyConfig")]
pub struct PyPolicyConfig {
    #[pyo3(get)]
    pub learner: String,
    #[pyo3(get)]
    pub alpha: f64,
    #[pyo3(get)]
    pub ridge: f64,
    #[pyo3(get)]
    pub discount: f64,
    #[pyo3(get)]
    pub prior_mean: f64,
    pub reward: Reward,
    #[pyo3(get)]
    pub cost_scale: Option<f64>,
    #[pyo3(get)]
    pub latency_scale: Option<f64>,
    #[pyo3(get)]
    pub exploration: String,
    #[pyo3(get)]
    pub epsilon: f64,
    #[pyo3(get)]
    pub temperature: f64,
    #[pyo3(get)]
    pub budget_per_request_usd: Option<f64>,
    #[pyo3(get)]
    pub budget_per_hour_usd: Option<f64>,
    #[pyo3(get)]
    pub pacing_step: f64,
    #[pyo3(get)]
    pub pacing_carryover: f64,
    #[pyo3(get)]
    pub ttl_s: f64,
    #[pyo3(get)]
    pub capacity: i64,
    #[pyo3(get)]
    pub seed: u64,
    #[pyo3(get)]
    pub model_slots: Option<i64>,
    #[pyo3(get)]
    pub feature_version: String,
    #[pyo3(get)]
    pub baseline: Option<Py<PyAny>>,
    #[pyo3(get)]
    pub conservative_delta: f64,
    #[pyo3(get)]
    pub conservative_confidence: f64,
    #[pyo3(get)]
    pub quality_floor: Option<Py<PyAny>>,
    #[pyo3(get)]
    pub interaction_scale: f64,
    pub interaction_prior: Option<Prior>,
    /// Pooled cost/latency model with optimism for arms with little data (off by default;
    /// docs/cost_uncertainty.md).
    #[pyo3(get)]
    pub cost_exploration: bool,
}

impl PyPolicyConfig {
    /// The reward weights (a preset resolved).
    pub fn weights(&self) -> Weights {
        self.reward.weights()
    }

    /// `(multiplier, auto)` of the interaction prior, the default resolved: empirical Bayes
    /// for the shared learner without discounting (docs/interaction_prior.md), 1 otherwise.
    pub fn interaction(&self) -> (f64, bool) {
        match self.interaction_prior {
            Some(Prior::Fixed(m)) => (m, false),
            Some(Prior::Auto) => (1.0, true),
            None => (1.0, self.learner == "shared" && self.discount == 1.0),
        }
    }

    pub fn exploration_rule(&self) -> Result<Exploration, CoreError> {
        exploration(&self.exploration, self.epsilon, self.temperature)
    }

    pub fn budget_rule(&self) -> Result<Budget, CoreError> {
        budget(self.budget_per_request_usd, self.budget_per_hour_usd)
    }

    /// The defaults (what `PolicyConfig()` gives).
    pub fn default_bound(py: Python<'_>) -> PyResult<Bound<'_, PyPolicyConfig>> {
        Ok(py.get_type::<PyPolicyConfig>().call0()?.cast_into()?)
    }

    fn validate(&self) -> PyResult<()> {
        if !matches!(self.learner.as_str(), "shared" | "disjoint") {
            return Err(CoreError::Config(format!(
                "learner must be 'shared' or 'disjoint', got {:?}",
                self.learner
            ))
            .into());
        }
        self.exploration_rule()?.validate()?;
        self.budget_rule()?;
        for (what, v) in [
            ("cost_scale", self.cost_scale),
            ("latency_scale", self.latency_scale),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(CoreError::Config(format!(
                        "{what} must be finite and > 0, got {v}"
                    ))
                    .into());
                }
            }
        }
        if self.baseline.is_some() && self.quality_floor.is_some() {
            return Err(ConfigError::new_err(
                "give at most one of baseline and quality_floor",
            ));
        }
        Ok(())
    }
}

#[pymethods]
impl PyPolicyConfig {
    #[new]
    #[pyo3(signature = (
        *, learner="shared", alpha=0.3, ridge=1.0, discount=1.0, prior_mean=0.5,
        reward=Reward::default(), cost_scale=None,
        latency_scale=None, exploration="greedy", epsilon=0.05, temperature=0.1,
        budget_per_request_usd=None, budget_per_hour_usd=None, pacing_step=0.05,
        pacing_carryover=100.0, ttl_s=3600.0, capacity=65536, seed=0, model_slots=None,
        feature_version="", baseline=None, conservative_delta=0.05,
        conservative_confidence=0.95, quality_floor=None, interaction_scale=1.0,
        interaction_prior=None, cost_exploration=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        learner: &str,
        alpha: f64,
        ridge: f64,
        discount: f64,
        prior_mean: f64,
        reward: Reward,
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
        feature_version: &str,
        baseline: Option<Py<PyAny>>,
        conservative_delta: f64,
        conservative_confidence: f64,
        quality_floor: Option<Py<PyAny>>,
        interaction_scale: f64,
        interaction_prior: Option<Prior>,
        cost_exploration: bool,
    ) -> PyResult<Self> {
        let cfg = PyPolicyConfig {
            learner: learner.to_owned(),
            alpha,
            ridge,
            discount,
            prior_mean,
            reward,
            cost_scale,
            latency_scale,
            exploration: exploration.to_owned(),
            epsilon,
            temperature,
            budget_per_request_usd,
            budget_per_hour_usd,
            pacing_step,
            pacing_carryover,
            ttl_s,
            capacity,
            seed,
            model_slots,
            feature_version: feature_version.to_owned(),
            baseline,
            conservative_delta,
            conservative_confidence,
            quality_floor,
            interaction_scale,
            interaction_prior,
            cost_exploration,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A preset name or `(quality, cost, latency)`, as given.
    #[getter]
    fn reward<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.reward {
            Reward::Preset(name, _) => name.into_bound_py_any(py),
            Reward::Weights(w) => (w.quality, w.cost, w.latency).into_bound_py_any(py),
        }
    }

    /// `(quality, cost, latency)`: the reward weights, a preset resolved.
    #[getter(weights)]
    fn weights_tuple(&self) -> (f64, f64, f64) {
        let w = self.weights();
        (w.quality, w.cost, w.latency)
    }

    /// A number, `"auto"`, or `None` (auto for the shared learner without discounting).
    #[getter]
    fn interaction_prior<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.interaction_prior {
            None => Ok(py.None().into_bound(py)),
            Some(Prior::Auto) => "auto".into_bound_py_any(py),
            Some(Prior::Fixed(m)) => m.into_bound_py_any(py),
        }
    }

    /// Every setting by name, in signature order (`PolicyConfig(**c.to_dict()) == c`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("learner", &self.learner)?;
        d.set_item("alpha", self.alpha)?;
        d.set_item("ridge", self.ridge)?;
        d.set_item("discount", self.discount)?;
        d.set_item("prior_mean", self.prior_mean)?;
        d.set_item("reward", self.reward(py)?)?;
        d.set_item("cost_scale", self.cost_scale)?;
        d.set_item("latency_scale", self.latency_scale)?;
        d.set_item("exploration", &self.exploration)?;
        d.set_item("epsilon", self.epsilon)?;
        d.set_item("temperature", self.temperature)?;
        d.set_item("budget_per_request_usd", self.budget_per_request_usd)?;
        d.set_item("budget_per_hour_usd", self.budget_per_hour_usd)?;
        d.set_item("pacing_step", self.pacing_step)?;
        d.set_item("pacing_carryover", self.pacing_carryover)?;
        d.set_item("ttl_s", self.ttl_s)?;
        d.set_item("capacity", self.capacity)?;
        d.set_item("seed", self.seed)?;
        d.set_item("model_slots", self.model_slots)?;
        d.set_item("feature_version", &self.feature_version)?;
        d.set_item("baseline", &self.baseline)?;
        d.set_item("conservative_delta", self.conservative_delta)?;
        d.set_item("conservative_confidence", self.conservative_confidence)?;
        d.set_item("quality_floor", &self.quality_floor)?;
        d.set_item("interaction_scale", self.interaction_scale)?;
        d.set_item("interaction_prior", self.interaction_prior(py)?)?;
        d.set_item("cost_exploration", self.cost_exploration)?;
        Ok(d)
    }

    /// A copy with `changes` applied (like `dataclasses.replace`), validated as a new config;
    /// an unknown name raises `TypeError`.
    #[pyo3(signature = (**changes))]
    fn replace<'py>(
        slf: &Bound<'py, Self>,
        changes: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let d = slf.get().to_dict(slf.py())?;
        if let Some(c) = changes {
            d.update(c.as_mapping())?;
        }
        slf.get_type().call((), Some(&d))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        kw_repr("PolicyConfig", &self.to_dict(py)?)
    }

    fn __eq__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        match other.cast::<PyPolicyConfig>() {
            Ok(o) => {
                let eq = self.to_dict(py)?.eq(o.get().to_dict(py)?)?;
                eq.into_py_any(py)
            }
            Err(_) => Ok(py.NotImplemented()),
        }
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        let values = self.to_dict(py)?.values();
        PyTuple::new(py, values)?.hash()
    }

    /// Pickles by keyword arguments, so a pickle survives a new setting with a default.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        reduce_kw(slf, slf.get().to_dict(slf.py())?)
    }
}
