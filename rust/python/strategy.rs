//! `StrategyInfo`: a test-time-scaling strategy as the policy core receives it (data only; the
//! strategy's behaviour lives in `uniscale.strategies`).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::space::StrategyDef;

use super::policy_types::reduce_kw;

/// A strategy as the policy's core sees it: its name, whether it may stop early (`adaptive`),
/// whether it has its own action-feature slot (`feature`), and whether it is one sample
/// (`single_sample`, `n == 1`). `uniscale.strategies.Strategy.info()` builds one.
#[pyclass(frozen, eq, module = "uniscale._core", name = "StrategyInfo")]
#[derive(PartialEq)]
pub struct PyStrategyInfo {
    pub s: StrategyDef,
}

#[pymethods]
impl PyStrategyInfo {
    #[new]
    #[pyo3(signature = (name, *, adaptive=false, feature=true, single_sample=false))]
    fn new(name: String, adaptive: bool, feature: bool, single_sample: bool) -> PyResult<Self> {
        let s = StrategyDef {
            name,
            adaptive,
            feature,
            single_sample,
        };
        StrategyDef::validate_list(std::slice::from_ref(&s))?;
        Ok(PyStrategyInfo { s })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.s.name
    }
    #[getter]
    fn adaptive(&self) -> bool {
        self.s.adaptive
    }
    #[getter]
    fn feature(&self) -> bool {
        self.s.feature
    }
    #[getter]
    fn single_sample(&self) -> bool {
        self.s.single_sample
    }

    fn __hash__(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.s.name.hash(&mut h);
        (self.s.adaptive, self.s.feature, self.s.single_sample).hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        let b = |v: bool| if v { "True" } else { "False" };
        format!(
            "StrategyInfo({:?}, adaptive={}, feature={}, single_sample={})",
            self.s.name,
            b(self.s.adaptive),
            b(self.s.feature),
            b(self.s.single_sample)
        )
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let s = &slf.get().s;
        let d = PyDict::new(slf.py());
        d.set_item("name", &s.name)?;
        d.set_item("adaptive", s.adaptive)?;
        d.set_item("feature", s.feature)?;
        d.set_item("single_sample", s.single_sample)?;
        reduce_kw(slf, d)
    }
}

/// The strategy list argument of `PolicyCore` and `action_features`: `None` is the built-ins.
pub fn strategy_list(list: Option<Vec<PyRef<'_, PyStrategyInfo>>>) -> Vec<StrategyDef> {
    match list {
        None => StrategyDef::builtins(),
        Some(v) => v.iter().map(|s| s.s.clone()).collect(),
    }
}
