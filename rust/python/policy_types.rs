//! The typed values the policy core hands to Python: `Decision`, `ModelInfo`, `Prediction`
//! and `UpdateResult` (frozen pyclasses, so no field is unpacked by position on either side).

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{Borrowed, IntoPyObjectExt};

use crate::cost::{Estimate, Prediction};
use crate::policy::{Decision, UpdateResult};
use crate::space::ModelInfo;

use super::action::PyAction;
use super::ConfigError;

/// (name, price_in, price_out, parallelism, bills_prompt_once, latency_in, latency_out,
///  prior_output_tokens): the older form of a model, still accepted.
type ModelTuple = (String, f64, f64, u32, bool, f64, f64, f64);

/// A model argument: a `ModelInfo`, or the older 8-tuple.
pub struct ModelArg(pub ModelInfo);

impl<'a, 'py> FromPyObject<'a, 'py> for ModelArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(m) = obj.cast::<PyModelInfo>() {
            let m = &m.get().m;
            if m.retired {
                return Err(ConfigError::new_err(format!(
                    "model {:?} is marked retired; pass a ModelInfo with retired=False",
                    m.name
                )));
            }
            return Ok(ModelArg(m.clone()));
        }
        let t: ModelTuple = obj.extract()?;
        Ok(ModelArg(ModelInfo {
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
        }))
    }
}

/// A model's parameters as the core keeps them (prices per million tokens, latency priors per
/// token, the output-token prior), plus whether it is retired. Endpoint settings live in
/// `uniscale.ModelSpec`, whose `info()` builds one of these.
#[pyclass(frozen, module = "uniscale._core", name = "ModelInfo")]
pub struct PyModelInfo {
    pub m: ModelInfo,
}

impl PyModelInfo {
    pub fn from_core(m: &ModelInfo) -> Self {
        PyModelInfo { m: m.clone() }
    }
}

#[pymethods]
impl PyModelInfo {
    #[new]
    #[pyo3(signature = (
        name, *, price_in_per_mtok, price_out_per_mtok, parallelism, bills_prompt_once,
        latency_in_s_per_token, latency_out_s_per_token, prior_output_tokens, retired=false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        price_in_per_mtok: f64,
        price_out_per_mtok: f64,
        parallelism: u32,
        bills_prompt_once: bool,
        latency_in_s_per_token: f64,
        latency_out_s_per_token: f64,
        prior_output_tokens: f64,
        retired: bool,
    ) -> Self {
        // Validated where it is used (`Space::add_model`), with the messages the core gives.
        PyModelInfo {
            m: ModelInfo {
                name,
                price_in_per_mtok,
                price_out_per_mtok,
                parallelism,
                bills_prompt_once,
                latency_in_s_per_token,
                latency_out_s_per_token,
                prior_output_tokens,
                slot: 0,
                retired,
            },
        }
    }
    #[getter]
    fn name(&self) -> &str {
        &self.m.name
    }
    #[getter]
    fn price_in_per_mtok(&self) -> f64 {
        self.m.price_in_per_mtok
    }
    #[getter]
    fn price_out_per_mtok(&self) -> f64 {
        self.m.price_out_per_mtok
    }
    #[getter]
    fn parallelism(&self) -> u32 {
        self.m.parallelism
    }
    #[getter]
    fn bills_prompt_once(&self) -> bool {
        self.m.bills_prompt_once
    }
    #[getter]
    fn latency_in_s_per_token(&self) -> f64 {
        self.m.latency_in_s_per_token
    }
    #[getter]
    fn latency_out_s_per_token(&self) -> f64 {
        self.m.latency_out_s_per_token
    }
    #[getter]
    fn prior_output_tokens(&self) -> f64 {
        self.m.prior_output_tokens
    }
    #[getter]
    fn retired(&self) -> bool {
        self.m.retired
    }
    /// Every field by name (the constructor's keyword arguments).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let m = &self.m;
        d.set_item("name", &m.name)?;
        d.set_item("price_in_per_mtok", m.price_in_per_mtok)?;
        d.set_item("price_out_per_mtok", m.price_out_per_mtok)?;
        d.set_item("parallelism", m.parallelism)?;
        d.set_item("bills_prompt_once", m.bills_prompt_once)?;
        d.set_item("latency_in_s_per_token", m.latency_in_s_per_token)?;
        d.set_item("latency_out_s_per_token", m.latency_out_s_per_token)?;
        d.set_item("prior_output_tokens", m.prior_output_tokens)?;
        d.set_item("retired", m.retired)?;
        Ok(d)
    }
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        kw_repr("ModelInfo", &self.to_dict(py)?)
    }
    fn __eq__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        match other.cast::<PyModelInfo>() {
            Ok(o) => {
                let (a, b) = (&self.m, &o.get().m);
                let same = a.name == b.name
                    && a.price_in_per_mtok == b.price_in_per_mtok
                    && a.price_out_per_mtok == b.price_out_per_mtok
                    && a.parallelism == b.parallelism
                    && a.bills_prompt_once == b.bills_prompt_once
                    && a.latency_in_s_per_token == b.latency_in_s_per_token
                    && a.latency_out_s_per_token == b.latency_out_s_per_token
                    && a.prior_output_tokens == b.prior_output_tokens
                    && a.retired == b.retired;
                same.into_py_any(py)
            }
            Err(_) => Ok(py.NotImplemented()),
        }
    }
    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        PyTuple::new(py, self.to_dict(py)?.values())?.hash()
    }
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        reduce_kw(slf, slf.get().to_dict(slf.py())?)
    }
}

/// `Name(k=v, ...)` with the values' reprs.
pub fn kw_repr(name: &str, d: &Bound<'_, PyDict>) -> PyResult<String> {
    let mut parts = Vec::with_capacity(d.len());
    for (k, v) in d.iter() {
        parts.push(format!("{}={}", k.str()?, v.repr()?));
    }
    Ok(format!("{name}({})", parts.join(", ")))
}

/// `__reduce__` that rebuilds by keyword arguments (so a pickle survives a new field with a
/// default).
pub fn reduce_kw<'py, T: pyo3::PyClass>(
    slf: &Bound<'py, T>,
    kwargs: Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyTuple>> {
    let py = slf.py();
    let newobj = py.import("copyreg")?.getattr("__newobj_ex__")?;
    let args = (slf.as_any().get_type(), PyTuple::empty(py), kwargs);
    (newobj, args).into_pyobject(py)
}

/// The cost model's predictions, named once here: (column, value of one prediction).
const COLUMNS: [&str; 9] = [
    "output_tokens_per_sample",
    "samples",
    "rounds",
    "cost_usd",
    "latency_s",
    "cost_usd_low",
    "latency_s_low",
    "cost_usd_for_limit",
    "latency_s_for_limit",
];

fn row(e: &Estimate) -> [f64; 9] {
    let p = &e.point;
    [
        p.output_tokens_per_sample,
        p.samples,
        p.rounds,
        p.cost_usd,
        p.latency_s,
        e.cost_usd_low,
        e.latency_s_low,
        e.cost_usd_for_limit(),
        e.latency_s_for_limit(),
    ]
}

/// The cost model's predictions for every action (in action-index order) at one prompt size:
/// one (K,) array per quantity.
#[pyclass(frozen, module = "uniscale._core", name = "Prediction")]
pub struct PyPrediction {
    pub rows: Vec<Estimate>,
}

impl PyPrediction {
    fn column<'py>(&self, py: Python<'py>, j: usize) -> Bound<'py, PyArray1<f64>> {
        self.rows
            .iter()
            .map(|p| row(p)[j])
            .collect::<Vec<_>>()
            .into_pyarray(py)
    }
}

#[pymethods]
impl PyPrediction {
    /// The quantities' names, in `as_array()` column order.
    #[classattr]
    #[pyo3(name = "COLUMNS")]
    fn columns(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
        PyTuple::new(py, COLUMNS)
    }
    /// Output tokens per sample.
    #[getter]
    fn output_tokens_per_sample<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.column(py, 0)
    }
    /// Expected samples used (n, or the learned mean for adaptive strategies).
    #[getter]
    fn samples<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.column(py, 1)
    }
    /// ceil(samples / parallelism).
    #[getter]
    fn rounds<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.column(py, 2)
    }
    #[getter]
    fn cost_usd<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.column(py, 3)
    }
    #[getter]
    fn latency_s<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.column(py, 4)
    }
    /// Optimistic cost (what scores and dominance pruning use; equal to `cost_usd` while cost
    /// exploration is off).
    #[getter]
    fn cost_usd_low<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.column(py, 5)
    }
    /// Optimistic latency (as `cost_usd_low`).
    #[getter]
    fn latency_s_low<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.column(py, 6)
    }
    /// The cost `max_cost_usd` is checked against: the point prediction once the action has
    /// observations of its own, else the optimistic one.
    #[getter]
    fn cost_usd_for_limit<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.column(py, 7)
    }
    /// The latency `max_latency_s` is checked against (as `cost_usd_for_limit`).
    #[getter]
    fn latency_s_for_limit<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.column(py, 8)
    }
    /// `{name: (K,) array}` in `COLUMNS` order.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (j, name) in COLUMNS.iter().enumerate() {
            d.set_item(*name, self.column(py, j))?;
        }
        Ok(d)
    }
    /// (K, 9) with the columns in `COLUMNS` order.
    fn as_array<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let flat: Vec<f64> = self.rows.iter().flat_map(row).collect();
        flat.into_pyarray(py)
            .reshape([self.rows.len(), COLUMNS.len()])
    }
    #[pyo3(signature = (dtype=None, copy=None))]
    fn __array__<'py>(
        &self,
        py: Python<'py>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = copy; // always a new array
        let a = self.as_array(py)?.into_any();
        match dtype {
            Some(t) if !t.is_none() => a.call_method1("astype", (t,)),
            _ => Ok(a),
        }
    }
    fn __len__(&self) -> usize {
        self.rows.len()
    }
    fn __repr__(&self) -> String {
        format!("Prediction({} actions)", self.rows.len())
    }
}

/// What an update (or an observation) learned from: the realised reward under the current
/// weights, the cost and latency it was charged, and whether the quality learner changed.
#[pyclass(frozen, module = "uniscale._core", name = "UpdateResult")]
pub struct PyUpdateResult {
    pub r: UpdateResult,
}

#[pymethods]
impl PyUpdateResult {
    #[new]
    fn new(reward: f64, cost_usd: f64, latency_s: f64, learner_updated: bool) -> Self {
        PyUpdateResult {
            r: UpdateResult {
                reward,
                cost_usd,
                latency_s,
                learner_updated,
            },
        }
    }
    #[getter]
    fn reward(&self) -> f64 {
        self.r.reward
    }
    #[getter]
    fn cost_usd(&self) -> f64 {
        self.r.cost_usd
    }
    #[getter]
    fn latency_s(&self) -> f64 {
        self.r.latency_s
    }
    #[getter]
    fn learner_updated(&self) -> bool {
        self.r.learner_updated
    }
    fn __repr__(&self) -> String {
        let r = &self.r;
        // Python's float repr, so the text reads back exactly
        format!(
            "UpdateResult(reward={:?}, cost_usd={:?}, latency_s={:?}, learner_updated={})",
            r.reward,
            r.cost_usd,
            r.latency_s,
            if r.learner_updated { "True" } else { "False" }
        )
    }
    fn __eq__<'py>(&self, py: Python<'py>, other: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        match other.cast::<PyUpdateResult>() {
            Ok(o) => (self.r == o.get().r).into_py_any(py),
            Err(_) => Ok(py.NotImplemented()),
        }
    }
    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        let r = &self.r;
        (r.reward, r.cost_usd, r.latency_s, r.learner_updated)
            .into_pyobject(py)?
            .hash()
    }
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let r = &slf.get().r;
        let args = (r.reward, r.cost_usd, r.latency_s, r.learner_updated);
        (slf.as_any().get_type(), args).into_pyobject(slf.py())
    }
}

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
    pub d: Decision,
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
    fn strategy(&self) -> &str {
        &self.d.strategy
    }
    #[getter]
    fn n(&self) -> u32 {
        self.d.n
    }
    /// The chosen action as a `uniscale.Action`.
    #[getter]
    fn action(&self) -> PyAction {
        PyAction::trusted(&self.d.model, &self.d.strategy, self.d.n)
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
        d.set_item("strategy", &x.strategy)?;
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
            self.d.strategy,
            self.d.n,
            self.d.score,
            self.d.prediction.cost_usd,
            self.d.prediction.latency_s,
            self.d.propensity,
            if self.d.fallback { ", fallback" } else if self.d.conservative { ", conservative" } else { "" }
        )
    }
}
