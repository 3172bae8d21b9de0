//! The `SharedLinUCB` pyclass: one LinUCB over joint features `kron([1, x], [1, psi_a])`.

use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;

use super::{count, index_range, matrix, repr};
use crate::learner::{Config, Learner};
use crate::python::convert::{action_index, f64_1d, f64_2d};
use crate::python::ShapeError;
use crate::shared::SharedLinUcb;

impl PySharedLinUcb {
    /// What `new` builds (`dim` and `cfg` as the shared constructor passes them).
    fn build(action_features: &Bound<'_, PyAny>, dim: i64, cfg: Config) -> PyResult<SharedLinUcb> {
        let (psi, k, p) = f64_2d(action_features, "action_features")?;
        Ok(SharedLinUcb::new(psi, k, p, count(dim, "dim")?, cfg)?)
    }
}

learner_pyclass!(
    /// Shared LinUCB over joint features `kron([1, x], [1, psi_a])`.
    PySharedLinUcb = "SharedLinUCB" wraps SharedLinUcb,
    new(action_features: &Bound<'_, PyAny>) {
    #[getter]
    fn n_action_features(&self) -> usize {
        self.inner.read().p
    }
    #[getter]
    fn joint_dim(&self) -> usize {
        self.inner.read().joint_dim()
    }

    /// theta as a flat (D,) vector in `kron([1, x], [1, psi])` order.
    fn theta<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.read().model.theta.clone().into_pyarray(py)
    }

    /// The joint feature vector phi(x, psi_a) (a copy).
    fn phi<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        action: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let action = action_index(action)?;
        let x = f64_1d(x, "x")?;
        let l = self.inner.read();
        l.check_x(&x)?;
        let a = l.check_action(action)?;
        Ok(l.phi(&x, a).into_pyarray(py))
    }

    fn action_features<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let l = self.inner.read();
        matrix(py, l.psi.clone(), l.n_actions(), l.p)
    }

    /// Appends actions with features `psi_new` (m, p); returns their indices.
    fn add_actions<'py>(
        &self,
        py: Python<'py>,
        psi_new: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let (psi, rows, cols) = f64_2d(psi_new, "action_features")?;
        let mut l = self.inner.write();
        if cols != l.p {
            return Err(ShapeError::new_err(format!(
                "new action features have {cols} columns, expected p = {}",
                l.p
            )));
        }
        let first = l.add_actions(&psi)?;
        Ok(index_range(py, first, rows))
    }

    fn __repr__(&self) -> String {
        let l = self.inner.read();
        let extra = format!(", n_action_features={}", l.p);
        repr("SharedLinUCB", l.n_actions(), l.dim, &extra, &l.cfg)
    }
});
