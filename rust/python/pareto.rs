//! Bindings for the Pareto / operating-point math (`rust/pareto.rs`).

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;

use super::convert::f64_1d;
use crate::error::CoreError;
use crate::pareto::{front, select, Rule};

/// Indices of the non-dominated points (maximise accuracy, minimise cost and latency).
#[pyfunction]
pub fn pareto_front<'py>(
    py: Python<'py>,
    accuracy: &Bound<'py, PyAny>,
    cost: &Bound<'py, PyAny>,
    latency: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let (a, c, l) = (
        f64_1d(accuracy, "accuracy")?,
        f64_1d(cost, "cost")?,
        f64_1d(latency, "latency")?,
    );
    let f = py.detach(|| front(&a, &c, &l))?;
    Ok(f.into_iter()
        .map(|i| i as i64)
        .collect::<Vec<_>>()
        .into_pyarray(py))
}

/// One operating point by rule: "accuracy_max", "knee", "utopia", or "cube" (with bounds).
#[pyfunction]
#[pyo3(signature = (accuracy, cost, latency, rule="knee", *, min_accuracy=f64::NEG_INFINITY, max_cost=f64::INFINITY, max_latency=f64::INFINITY))]
#[allow(clippy::too_many_arguments)]
pub fn operating_point(
    py: Python<'_>,
    accuracy: &Bound<'_, PyAny>,
    cost: &Bound<'_, PyAny>,
    latency: &Bound<'_, PyAny>,
    rule: &str,
    min_accuracy: f64,
    max_cost: f64,
    max_latency: f64,
) -> PyResult<Option<usize>> {
    let rule = match rule {
        "accuracy_max" => Rule::AccuracyMax,
        "knee" => Rule::Knee,
        "utopia" => Rule::UtopiaClosest,
        "cube" => Rule::Cube {
            min_accuracy,
            max_cost,
            max_latency,
        },
        other => {
            return Err(CoreError::Config(format!(
                "unknown rule {other:?}; expected accuracy_max, knee, utopia or cube"
            ))
            .into())
        }
    };
    let (a, c, l) = (
        f64_1d(accuracy, "accuracy")?,
        f64_1d(cost, "cost")?,
        f64_1d(latency, "latency")?,
    );
    Ok(py.detach(|| select(&a, &c, &l, rule))?)
}
