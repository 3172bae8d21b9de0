//! `LinUCB` (linucb.rs) and `SharedLinUCB` (shared.rs) pyclasses and what they share. Both are `frozen`; the learner sits behind a
//! `parking_lot::RwLock` that is only taken inside `py.detach`, so concurrent Python threads
//! never see "Already borrowed" and never deadlock against the GIL.

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use super::convert::{action_index, bool_nd, f64_1d, f64_2d, i64_1d};
use super::ShapeError;
use crate::error::CoreError;
use crate::learner::{Config, Learner, Mask};
use crate::state;

/// (mean, bonus) arrays.
pub type ArrayPair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

fn config(alpha: f64, ridge: f64, discount: f64, prior_mean: f64) -> Config {
    Config {
        alpha,
        ridge,
        discount,
        prior_mean,
    }
}

fn count(value: i64, what: &str) -> Result<usize, CoreError> {
    usize::try_from(value)
        .map_err(|_| CoreError::Config(format!("{what} must be >= 1, got {value}")))
}

/// Mask argument of `select`: `None` or a (K,) boolean array.
pub(super) fn mask_1d(mask: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<bool>>> {
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

/// Mask argument of `select_many`: `None`, (K,) shared by every row, or (n, K) per row;
/// returns the values and, for a per-row mask, its shape (checked against (n, K) later).
type BatchMask = (Option<Vec<bool>>, Option<(usize, usize)>);

fn mask_batch(mask: Option<&Bound<'_, PyAny>>) -> PyResult<BatchMask> {
    match mask {
        None => Ok((None, None)),
        Some(m) if m.is_none() => Ok((None, None)),
        Some(m) => {
            let (v, shape) = bool_nd(m, "mask")?;
            match shape[..] {
                [_] => Ok((Some(v), None)),
                [r, c] => Ok((Some(v), Some((r, c)))),
                _ => Err(ShapeError::new_err(format!(
                    "mask must be (n_actions,) or (n_rows, n_actions), got shape {shape:?}"
                ))),
            }
        }
    }
}

fn select_impl<L: Learner + Send + Sync>(
    py: Python<'_>,
    lock: &RwLock<L>,
    x: &Bound<'_, PyAny>,
    mask: Option<&Bound<'_, PyAny>>,
) -> PyResult<usize> {
    let x = f64_1d(x, "x")?;
    let mask = mask_1d(mask)?;
    Ok(py.detach(|| lock.read().select(&x, mask.as_deref()))?)
}

fn scores_impl<'py, L: Learner + Send + Sync>(
    py: Python<'py>,
    lock: &RwLock<L>,
    x: &Bound<'py, PyAny>,
) -> PyResult<ArrayPair<'py>> {
    let x = f64_1d(x, "x")?;
    let (m, b) = py.detach(|| lock.read().scores(&x))?;
    Ok((m.into_pyarray(py), b.into_pyarray(py)))
}

fn update_impl<L: Learner + Send + Sync>(
    py: Python<'_>,
    lock: &RwLock<L>,
    action: &Bound<'_, PyAny>,
    x: &Bound<'_, PyAny>,
    reward: f64,
) -> PyResult<()> {
    let action = action_index(action)?;
    let x = f64_1d(x, "x")?;
    Ok(py.detach(|| lock.write().update(action, &x, reward))?)
}

fn select_many_impl<'py, L: Learner + Send + Sync>(
    py: Python<'py>,
    lock: &RwLock<L>,
    xs: &Bound<'py, PyAny>,
    mask: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let (xs, rows, cols) = f64_2d(xs, "X")?;
    let (mask, per_row) = mask_batch(mask)?;
    let chosen = py.detach(|| {
        let l = lock.read();
        if cols != l.dim() {
            return Err(CoreError::Shape(format!(
                "X has {cols} columns, expected dim = {}",
                l.dim()
            )));
        }
        let m = match (&mask, per_row) {
            (None, _) => Mask::All,
            (Some(v), None) => Mask::Shared(v),
            (Some(v), Some((r, c))) => {
                // Exactly (n_rows, n_actions): a transposed (K, n) mask has the right number of
                // entries and would otherwise be read row-major as something else.
                let k = l.n_actions();
                if (r, c) != (rows, k) {
                    return Err(CoreError::Shape(format!(
                        "mask has length {}, expected {}: shape ({r}, {c}), expected (n_rows, n_actions) = ({rows}, {k})",
                        r * c,
                        rows * k
                    )));
                }
                Mask::PerRow(v)
            }
        };
        l.select_many(&xs, rows, m)
    })?;
    Ok(chosen
        .into_iter()
        .map(|a| a as i64)
        .collect::<Vec<_>>()
        .into_pyarray(py))
}

fn update_many_impl<L: Learner + Send + Sync>(
    py: Python<'_>,
    lock: &RwLock<L>,
    actions: &Bound<'_, PyAny>,
    xs: &Bound<'_, PyAny>,
    rewards: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let actions = i64_1d(actions, "actions")?;
    let (xs, rows, cols) = f64_2d(xs, "X")?;
    let rewards = f64_1d(rewards, "rewards")?;
    if rows != actions.len() {
        return Err(ShapeError::new_err(format!(
            "X has {rows} rows but {} actions were given",
            actions.len()
        )));
    }
    Ok(py.detach(|| {
        let mut l = lock.write();
        if cols != l.dim() {
            return Err(CoreError::Shape(format!(
                "X has {cols} columns, expected dim = {}",
                l.dim()
            )));
        }
        l.update_many(&actions, &xs, &rewards)
    })?)
}

fn matrix<'py>(
    py: Python<'py>,
    v: Vec<f64>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    v.into_pyarray(py).reshape([rows, cols])
}

/// Serialises (under the caller's lock), checks with `load` (the loader `from_bytes` uses,
/// every validation included) that the bytes read back, and only then writes them atomically
/// (`state::atomic_write`), with the GIL released. The lock is not held while verifying.
pub(super) fn save_with<T>(
    py: Python<'_>,
    path: &std::path::Path,
    to_bytes: impl FnOnce() -> Vec<u8> + Send,
    load: impl FnOnce(&[u8]) -> Result<T, CoreError> + Send,
) -> PyResult<()> {
    Ok(py.detach(|| {
        let bytes = to_bytes();
        state::save_verified(path, &bytes, |b| state::verify_loads(b, load))
    })?)
}

/// Serialises (under the caller's lock) and returns the bytes once `load` accepted them: what
/// `to_bytes` and pickle hand out always loads. The GIL is released.
pub(super) fn verified_bytes<'py, T>(
    py: Python<'py>,
    to_bytes: impl FnOnce() -> Vec<u8> + Send,
    load: impl FnOnce(&[u8]) -> Result<T, CoreError> + Send,
) -> PyResult<Bound<'py, PyBytes>> {
    let bytes = py.detach(|| {
        let bytes = to_bytes();
        state::verify_loads(&bytes, load).map(|()| bytes)
    })?;
    Ok(PyBytes::new(py, &bytes))
}

/// Reads a state file written by `save` and rebuilds it with `load`; the GIL is released.
pub(super) fn load_file<T: Send>(
    py: Python<'_>,
    path: &std::path::Path,
    load: impl FnOnce(&[u8]) -> Result<T, CoreError> + Send,
) -> PyResult<T> {
    Ok(py.detach(|| load(&state::read_file(path)?))?)
}

/// Pickle support shared by every stateful pyclass: `(type(self).from_bytes, (bytes,))`, with
/// `bytes` from `verified_bytes`.
pub(super) fn reduce<'py, T: pyo3::PyClass, S>(
    slf: &Bound<'py, T>,
    to_bytes: impl FnOnce() -> Vec<u8> + Send,
    load: impl FnOnce(&[u8]) -> Result<S, CoreError> + Send,
) -> PyResult<Bound<'py, PyTuple>> {
    let py = slf.py();
    let bytes = verified_bytes(py, to_bytes, load)?;
    let ctor = slf.as_any().get_type().getattr("from_bytes")?;
    let args = PyTuple::new(py, [bytes])?;
    PyTuple::new(py, [ctor, args.into_any()])
}

/// `(first..first + count)` as the int64 index array `add_actions` returns.
fn index_range(py: Python<'_>, first: usize, count: usize) -> Bound<'_, PyArray1<i64>> {
    ((first as i64)..(first + count) as i64)
        .collect::<Vec<_>>()
        .into_pyarray(py)
}

/// `__repr__` of a learner: `Name(n_actions=.., dim=..<extra>, alpha=.., ...)`.
fn repr(name: &str, n_actions: usize, dim: usize, extra: &str, cfg: &Config) -> String {
    format!(
        "{name}(n_actions={n_actions}, dim={dim}{extra}, alpha={}, ridge={}, discount={}, prior_mean={})",
        cfg.alpha, cfg.ridge, cfg.discount, cfg.prior_mean
    )
}

/// A learner pyclass `$py` (Python name `$name`) wrapping `inner: RwLock<$core>`, and its
/// `#[pymethods]`: the methods both learners share line for line (the constructor, whose first
/// argument `$first` describes the actions and goes with `dim` and the configuration to the
/// class's own `build`; configuration getters, `select`, `scores`, `update`, the batch
/// variants, `remove_actions` and the state methods), then the class's own items. One `#[pymethods]` block per class, so no `multiple-pymethods`
/// feature is needed. The shared methods name what they use by full path, so a class's module
/// imports only what its own items need.
macro_rules! learner_pyclass {
    (
        $(#[$doc:meta])* $py:ident = $name:literal wraps $core:ident,
        new($first:ident: $first_ty:ty) { $($own:tt)* }
    ) => {
        $(#[$doc])*
        #[pyclass(frozen, module = "uniscale._core", name = $name)]
        pub struct $py {
            inner: ::parking_lot::RwLock<$core>,
        }

        impl From<$core> for $py {
            fn from(l: $core) -> Self {
                $py {
                    inner: ::parking_lot::RwLock::new(l),
                }
            }
        }

        impl $py {
            /// The state blob, serialised under the read lock.
            fn state_bytes(&self) -> Vec<u8> {
                $crate::state::Record::to_bytes(&*self.inner.read())
            }
        }

        #[pymethods]
        impl $py {
            #[new]
            #[pyo3(signature = ($first, dim, alpha=1.0, ridge=1.0, discount=1.0, prior_mean=0.0))]
            fn new(
                $first: $first_ty,
                dim: i64,
                alpha: f64,
                ridge: f64,
                discount: f64,
                prior_mean: f64,
            ) -> PyResult<Self> {
                let cfg = $crate::python::learners::config(alpha, ridge, discount, prior_mean);
                Ok(Self::build($first, dim, cfg)?.into())
            }

            $($own)*

            #[getter]
            fn n_actions(&self) -> usize {
                self.inner.read().n_actions()
            }
            #[getter]
            fn dim(&self) -> usize {
                self.inner.read().dim
            }
            #[getter]
            fn alpha(&self) -> f64 {
                self.inner.read().cfg.alpha
            }
            #[getter]
            fn ridge(&self) -> f64 {
                self.inner.read().cfg.ridge
            }
            #[getter]
            fn discount(&self) -> f64 {
                self.inner.read().cfg.discount
            }
            #[getter]
            fn prior_mean(&self) -> f64 {
                self.inner.read().cfg.prior_mean
            }
            #[getter]
            fn n_updates(&self) -> u64 {
                self.inner.read().n_updates()
            }

            #[pyo3(signature = (x, mask=None))]
            fn select(
                &self,
                py: Python<'_>,
                x: &Bound<'_, PyAny>,
                mask: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<usize> {
                $crate::python::learners::select_impl(py, &self.inner, x, mask)
            }

            fn scores<'py>(
                &self,
                py: Python<'py>,
                x: &Bound<'py, PyAny>,
            ) -> PyResult<$crate::python::learners::ArrayPair<'py>> {
                $crate::python::learners::scores_impl(py, &self.inner, x)
            }

            fn update(
                &self,
                py: Python<'_>,
                action: &Bound<'_, PyAny>,
                x: &Bound<'_, PyAny>,
                reward: f64,
            ) -> PyResult<()> {
                $crate::python::learners::update_impl(py, &self.inner, action, x, reward)
            }

            #[pyo3(signature = (X, mask=None))]
            #[allow(non_snake_case)]
            fn select_many<'py>(
                &self,
                py: Python<'py>,
                X: &Bound<'py, PyAny>,
                mask: Option<&Bound<'py, PyAny>>,
            ) -> PyResult<Bound<'py, ::numpy::PyArray1<i64>>> {
                $crate::python::learners::select_many_impl(py, &self.inner, X, mask)
            }

            #[allow(non_snake_case)]
            fn update_many(
                &self,
                py: Python<'_>,
                actions: &Bound<'_, PyAny>,
                X: &Bound<'_, PyAny>,
                rewards: &Bound<'_, PyAny>,
            ) -> PyResult<()> {
                $crate::python::learners::update_many_impl(py, &self.inner, actions, X, rewards)
            }

            /// Removes actions; returns `mapping` with `mapping[old] = new index` or -1 if removed.
            fn remove_actions<'py>(
                &self,
                py: Python<'py>,
                indices: &Bound<'py, PyAny>,
            ) -> PyResult<Bound<'py, ::numpy::PyArray1<i64>>> {
                let idx = $crate::python::convert::i64_1d(indices, "indices")?;
                let mapping = self.inner.write().remove_actions(&idx)?;
                Ok(::numpy::IntoPyArray::into_pyarray(mapping, py))
            }

            /// The state blob; verified to load back before it is returned.
            fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, ::pyo3::types::PyBytes>> {
                $crate::python::learners::verified_bytes(
                    py,
                    || self.state_bytes(),
                    <$core as $crate::state::Record>::from_bytes,
                )
            }

            #[staticmethod]
            fn from_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<Self> {
                Ok(py.detach(|| <$core as $crate::state::Record>::from_bytes(&data))?.into())
            }

            fn save(&self, py: Python<'_>, path: ::std::path::PathBuf) -> PyResult<()> {
                $crate::python::learners::save_with(
                    py,
                    &path,
                    || self.state_bytes(),
                    <$core as $crate::state::Record>::from_bytes,
                )
            }

            #[staticmethod]
            fn load(py: Python<'_>, path: ::std::path::PathBuf) -> PyResult<Self> {
                Ok($crate::python::learners::load_file(py, &path, <$core as $crate::state::Record>::from_bytes)?.into())
            }

            fn __reduce__<'py>(
                slf: &Bound<'py, Self>,
            ) -> PyResult<Bound<'py, ::pyo3::types::PyTuple>> {
                let me = slf.get();
                $crate::python::learners::reduce(slf, || me.state_bytes(), <$core as $crate::state::Record>::from_bytes)
            }
        }
    };
}

mod linucb;
mod shared;

pub use linucb::PyLinUcb;
pub use shared::PySharedLinUcb;
