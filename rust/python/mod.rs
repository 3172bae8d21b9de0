//! PyO3 bindings: the only module that imports pyo3/numpy. It converts and validates Python
//! inputs, releases the GIL around the work, and maps `CoreError` onto the exception tree.

use pyo3::create_exception;
use pyo3::exceptions::{PyMemoryError, PyOSError, PyValueError};
use pyo3::prelude::*;

use crate::error::CoreError;

mod action;
mod convert;
mod featurize;
mod learners;
mod pareto;
mod plan;
mod policy;
mod policy_config;
mod policy_types;
mod strategy;
mod sync;

create_exception!(
    uniscale._core,
    UniScaleError,
    PyValueError,
    "Base class of every error UniScale raises for bad input or bad state (a ValueError)."
);
create_exception!(
    uniscale._core,
    ShapeError,
    UniScaleError,
    "An array has the wrong shape or length."
);
create_exception!(
    uniscale._core,
    DTypeError,
    UniScaleError,
    "An input cannot be coerced to the required dtype."
);
create_exception!(
    uniscale._core,
    NonFiniteError,
    UniScaleError,
    "NaN or infinity where a finite value is required."
);
create_exception!(
    uniscale._core,
    UnknownActionError,
    UniScaleError,
    "An action index outside 0..n_actions."
);
create_exception!(
    uniscale._core,
    AllMaskedError,
    UniScaleError,
    "Every action is masked out."
);
create_exception!(
    uniscale._core,
    ConfigError,
    UniScaleError,
    "A constructor argument or setting is out of its domain."
);
create_exception!(
    uniscale._core,
    StateError,
    UniScaleError,
    "A state blob or file is truncated, corrupt, or of another version."
);
create_exception!(
    uniscale._core,
    UnknownDecisionError,
    UniScaleError,
    "A decision id this policy never issued."
);
create_exception!(
    uniscale._core,
    ExpiredDecisionError,
    UniScaleError,
    "A decision id that expired from the pending store."
);
create_exception!(
    uniscale._core,
    DuplicateUpdateError,
    UniScaleError,
    "A second update for the same decision id."
);
create_exception!(
    uniscale._core,
    NumericalError,
    UniScaleError,
    "A numerical failure (e.g. loss of positive definiteness)."
);

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        let msg = e.to_string();
        match e {
            CoreError::Shape(_) => ShapeError::new_err(msg),
            CoreError::NonFinite(_) => NonFiniteError::new_err(msg),
            CoreError::UnknownAction { .. } => UnknownActionError::new_err(msg),
            CoreError::AllMasked | CoreError::AllMaskedRow(_) => AllMaskedError::new_err(msg),
            CoreError::Config(_) => ConfigError::new_err(msg),
            CoreError::State(_) => StateError::new_err(msg),
            CoreError::UnknownDecision(_) => UnknownDecisionError::new_err(msg),
            CoreError::ExpiredDecision(_) => ExpiredDecisionError::new_err(msg),
            CoreError::DuplicateUpdate(_) => DuplicateUpdateError::new_err(msg),
            CoreError::Numerical(_) => NumericalError::new_err(msg),
            CoreError::Io(_) => PyOSError::new_err(msg),
            CoreError::Memory(_) => PyMemoryError::new_err(msg),
        }
    }
}

#[pymodule]
#[pyo3(name = "_core")]
fn uniscale_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "BUILD_PROFILE",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    m.add("STATE_FORMAT_VERSION", crate::state::FORMAT_VERSION)?;
    m.add("REFRESH_PERIOD", crate::ridge::REFRESH_PERIOD)?;
    m.add("UniScaleError", py.get_type::<UniScaleError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("DTypeError", py.get_type::<DTypeError>())?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    m.add("UnknownActionError", py.get_type::<UnknownActionError>())?;
    m.add("AllMaskedError", py.get_type::<AllMaskedError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("StateError", py.get_type::<StateError>())?;
    m.add(
        "UnknownDecisionError",
        py.get_type::<UnknownDecisionError>(),
    )?;
    m.add(
        "ExpiredDecisionError",
        py.get_type::<ExpiredDecisionError>(),
    )?;
    m.add(
        "DuplicateUpdateError",
        py.get_type::<DuplicateUpdateError>(),
    )?;
    m.add("NumericalError", py.get_type::<NumericalError>())?;
    m.add_class::<learners::PyLinUcb>()?;
    m.add_class::<learners::PySharedLinUcb>()?;
    m.add_class::<action::PyAction>()?;
    m.add_class::<policy::PyPolicyCore>()?;
    m.add_class::<policy_types::PyDecision>()?;
    m.add_class::<policy_types::PyModelInfo>()?;
    m.add_class::<strategy::PyStrategyInfo>()?;
    m.add_class::<policy_types::PyPrediction>()?;
    m.add_class::<policy_types::PyUpdateResult>()?;
    m.add_class::<policy_config::PyPolicyConfig>()?;
    let presets = pyo3::types::PyDict::new(py);
    for (name, w) in crate::policy::PRESETS {
        presets.set_item(name, (w.quality, w.cost, w.latency))?;
    }
    m.add("REWARD_PRESETS", presets)?;
    m.add_function(wrap_pyfunction!(policy::action_features, m)?)?;
    m.add_function(wrap_pyfunction!(pareto::pareto_front, m)?)?;
    m.add_function(wrap_pyfunction!(pareto::operating_point, m)?)?;
    m.add_function(wrap_pyfunction!(plan::simulate_plan, m)?)?;
    m.add_function(wrap_pyfunction!(plan::plan_rules, m)?)?;
    m.add_class::<plan::PyPlanEstimates>()?;
    m.add_class::<plan::PyPlanChoice>()?;
    m.add_class::<featurize::PyFeatureHasher>()?;
    m.add("SYNC_FORMAT_VERSION", crate::policy::SYNC_FORMAT_VERSION)?;
    m.add_function(wrap_pyfunction!(sync::sync_fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(sync::sync_len, m)?)?;
    m.add_function(wrap_pyfunction!(sync::sync_export, m)?)?;
    m.add_function(wrap_pyfunction!(sync::sync_encode, m)?)?;
    m.add_function(wrap_pyfunction!(sync::sync_decode, m)?)?;
    m.add_function(wrap_pyfunction!(sync::sync_apply, m)?)?;
    m.add_function(wrap_pyfunction!(sync::sync_updates, m)?)?;
    m.add_function(wrap_pyfunction!(sync::sync_count_mask, m)?)?;
    Ok(())
}
