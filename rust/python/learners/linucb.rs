//! The `LinUCB` pyclass: disjoint LinUCB, one ridge-regression model per action.

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use super::{count, index_range, matrix, repr};
use crate::error::CoreError;
use crate::learner::{Config, Learner};
use crate::linucb::LinUcb;
use crate::python::convert::action_index;

impl PyLinUcb {
    /// What `new` builds (`dim` and `cfg` as the shared constructor passes them).
    fn build(n_actions: i64, dim: i64, cfg: Config) -> Result<LinUcb, CoreError> {
        LinUcb::new(count(n_actions, "n_actions")?, count(dim, "dim")?, cfg)
    }
}

learner_pyclass!(
    /// Disjoint LinUCB: one ridge-regression model per action.
    PyLinUcb = "LinUCB" wraps LinUcb,
    new(n_actions: i64) {
    #[pyo3(signature = (action=None))]
    fn theta<'py>(
        &self,
        py: Python<'py>,
        action: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let action = action
            .filter(|a| !a.is_none())
            .map(action_index)
            .transpose()?;
        let l = self.inner.read();
        match action {
            Some(a) => {
                let a = l.check_action(a)?;
                Ok(l.theta(a).into_pyarray(py).into_any())
            }
            None => {
                let (k, d) = (l.n_actions(), l.dim);
                let flat: Vec<f64> = l
                    .arms
                    .iter()
                    .flat_map(|arm| arm.theta.iter().copied())
                    .collect();
                Ok(matrix(py, flat, k, d)?.into_any())
            }
        }
    }

    /// Appends `count` untrained actions; returns their indices.
    fn add_actions<'py>(&self, py: Python<'py>, count: i64) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let c = usize::try_from(count)
            .map_err(|_| CoreError::Config(format!("count must be >= 0, got {count}")))?;
        let first = self.inner.write().add_actions(c)?;
        Ok(index_range(py, first, c))
    }

    fn __repr__(&self) -> String {
        let l = self.inner.read();
        repr("LinUCB", l.n_actions(), l.dim, "", &l.cfg)
    }
});
