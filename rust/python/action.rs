//! `Action`: one point of the action space, `(model, strategy, n)`, as a frozen pyclass, so the
//! policy core hands a chosen action to Python without calling back into Python to build it.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::policy_types::reduce_kw;
use super::ConfigError;

/// `uniscale.strategies.check_action(strategy, n)`: the strategy registry lives in Python (a
/// registered strategy may restrict `n` its own way), so an `Action` built from Python is checked
/// there. Actions the core builds come from a validated action space and skip the check.
static CHECK_ACTION: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// One point of the action space: call `model` with test-time-scaling `strategy` and `n`
/// samples. Immutable, hashable, comparable and picklable.
#[pyclass(frozen, eq, hash, module = "uniscale._core", name = "Action")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyAction {
    pub model: String,
    pub strategy: String,
    pub n: u32,
}

impl PyAction {
    /// An action the core already validated (no registry lookup).
    pub fn trusted(model: &str, strategy: &str, n: u32) -> Self {
        PyAction {
            model: model.to_owned(),
            strategy: strategy.to_owned(),
            n,
        }
    }
}

/// `n` as the sample count, 1..=2^32-1 (`check_action` has already refused anything that is
/// not an int >= 1; the upper bound is the core's).
fn sample_count(n: &Bound<'_, PyAny>) -> PyResult<u32> {
    match n.extract::<u32>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => {
            let shown = n
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| "?".to_owned());
            Err(ConfigError::new_err(format!(
                "Action.n must be an int >= 1, got {shown}"
            )))
        }
    }
}

#[pymethods]
impl PyAction {
    #[new]
    fn new(
        py: Python<'_>,
        model: String,
        strategy: String,
        n: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let check = CHECK_ACTION.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
            Ok(py
                .import("uniscale.strategies")?
                .getattr("check_action")?
                .unbind())
        })?;
        // The strategy's existence, `n`'s type and range and the strategy's own rule for `n`,
        // in that order, in one place (Python, where the registry is).
        check.bind(py).call1((strategy.as_str(), n))?;
        let n = sample_count(n)?;
        Ok(PyAction { model, strategy, n })
    }

    #[getter]
    fn model(&self) -> &str {
        &self.model
    }
    #[getter]
    fn strategy(&self) -> &str {
        &self.strategy
    }
    #[getter]
    fn n(&self) -> u32 {
        self.n
    }

    fn __str__(&self) -> String {
        format!("{}/{}/n={}", self.model, self.strategy, self.n)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let model = PyString::new(py, &self.model).repr()?;
        let strategy = PyString::new(py, &self.strategy).repr()?;
        Ok(format!(
            "Action(model={model}, strategy={strategy}, n={})",
            self.n
        ))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let a = slf.get();
        let d = PyDict::new(slf.py());
        d.set_item("model", &a.model)?;
        d.set_item("strategy", &a.strategy)?;
        d.set_item("n", a.n)?;
        reduce_kw(slf, d)
    }
}
