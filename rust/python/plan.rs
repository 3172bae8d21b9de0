//! Bindings for the planner: Monte Carlo estimates (`rust/plan/`) and the rules
//! (`rust/pareto.rs::plan_choice`).

use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::convert::{f64_1d, f64_2d, i64_1d};
use super::ShapeError;
use crate::error::CoreError;
use crate::pareto::{plan_choice, Limits, PlanChoice, PlanRule};
use crate::plan::{simulate, Accuracy, CallModel, Estimate, Latency, McConfig, Point, MAX_K};

/// Columns of the `calls` matrix, in order.
const CALL_COLUMNS: usize = 8;

/// Monte Carlo estimates of a batch of plan points: (n, 3) arrays with columns
/// (cost_usd, latency_s, accuracy).
#[pyclass(frozen, module = "uniscale._core", name = "PlanEstimates")]
pub struct PyPlanEstimates {
    est: Vec<Estimate>,
    trials: usize,
    level: f64,
    quantile: f64,
}

impl PyPlanEstimates {
    fn column<'py>(
        &self,
        py: Python<'py>,
        f: impl Fn(&crate::plan::Summary) -> f64,
    ) -> Bound<'py, PyArray2<f64>> {
        let mut v = Vec::with_capacity(self.est.len() * 3);
        for e in &self.est {
            v.extend([f(&e.cost_usd), f(&e.latency_s), f(&e.accuracy)]);
        }
        numpy::ndarray::Array2::from_shape_vec((self.est.len(), 3), v)
            .map(|a| a.into_pyarray(py))
            .unwrap_or_else(|_| numpy::PyArray2::zeros(py, [0, 3], false))
    }
}

#[pymethods]
impl PyPlanEstimates {
    /// Expectations (n, 3).
    #[getter]
    fn mean<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.column(py, |s| s.mean)
    }
    /// Lower ends of the percentile intervals (n, 3).
    #[getter]
    fn lo<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.column(py, |s| s.lo)
    }
    /// Upper ends of the percentile intervals (n, 3).
    #[getter]
    fn hi<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.column(py, |s| s.hi)
    }
    /// Pessimistic quantiles (n, 3).
    #[getter]
    fn pessimistic<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f64>> {
        self.column(py, |s| s.pessimistic)
    }
    #[getter]
    fn trials(&self) -> usize {
        self.trials
    }
    #[getter]
    fn level(&self) -> f64 {
        self.level
    }
    #[getter]
    fn quantile(&self) -> f64 {
        self.quantile
    }
    fn __len__(&self) -> usize {
        self.est.len()
    }
    fn __repr__(&self) -> String {
        format!(
            "PlanEstimates({} points, trials={}, level={}, quantile={})",
            self.est.len(),
            self.trials,
            self.level,
            self.quantile
        )
    }
}

fn u32_column(v: Vec<i64>, what: &str, lo: i64, hi: i64) -> PyResult<Vec<u32>> {
    v.into_iter()
        .enumerate()
        .map(|(i, x)| {
            if (lo..=hi).contains(&x) {
                Ok(x as u32)
            } else {
                Err(CoreError::Config(format!("{what}[{i}] = {x} is outside {lo}..={hi}")).into())
            }
        })
        .collect()
}

/// Monte Carlo estimates of E[C(k)], E[T(k)], E[A(k)] with percentile intervals.
#[pyfunction]
#[pyo3(signature = (calls, k, parallelism, accuracy_mean, accuracy_sd=None, accuracy_replicates=None, *, trials=1000, seed=0, level=0.95, quantile=0.9, latency="rounds", first_stream=0, threads=0))]
#[allow(clippy::too_many_arguments)]
pub fn simulate_plan(
    py: Python<'_>,
    calls: &Bound<'_, PyAny>,
    k: &Bound<'_, PyAny>,
    parallelism: &Bound<'_, PyAny>,
    accuracy_mean: &Bound<'_, PyAny>,
    accuracy_sd: Option<&Bound<'_, PyAny>>,
    accuracy_replicates: Option<&Bound<'_, PyAny>>,
    trials: usize,
    seed: u64,
    level: f64,
    quantile: f64,
    latency: &str,
    first_stream: u64,
    threads: usize,
) -> PyResult<PyPlanEstimates> {
    let (c, n, cols) = f64_2d(calls, "calls")?;
    if cols != CALL_COLUMNS {
        return Err(ShapeError::new_err(format!(
            "calls must be (n, {CALL_COLUMNS}) with columns cost_in_usd_per_token, \
             cost_out_usd_per_token, latency_in_s_per_token, latency_out_s_per_token, \
             input_tokens_mean, input_tokens_sd, output_tokens_mean, output_tokens_sd; got \
             {cols} columns"
        )));
    }
    let ks = u32_column(i64_1d(k, "k")?, "k", 1, i64::from(MAX_K))?;
    let ps = u32_column(
        i64_1d(parallelism, "parallelism")?,
        "parallelism",
        1,
        i64::from(u32::MAX),
    )?;
    let am = f64_1d(accuracy_mean, "accuracy_mean")?;
    for (what, len) in [
        ("k", ks.len()),
        ("parallelism", ps.len()),
        ("accuracy_mean", am.len()),
    ] {
        crate::error::check_len(what, len, n)?;
    }
    let latency = Latency::parse(latency)?;
    let accuracy: Vec<Accuracy> = match (accuracy_sd, accuracy_replicates) {
        (Some(sd), None) => {
            let sd = f64_1d(sd, "accuracy_sd")?;
            crate::error::check_len("accuracy_sd", sd.len(), n)?;
            am.iter()
                .zip(sd)
                .map(|(&mean, sd)| Accuracy::BestOfK { mean, sd })
                .collect()
        }
        (None, Some(reps)) => {
            let (r, rows, b) = f64_2d(reps, "accuracy_replicates")?;
            crate::error::check_len("accuracy_replicates rows", rows, n)?;
            am.iter()
                .zip(r.chunks(b.max(1)))
                .map(|(&estimate, row)| Accuracy::Measured {
                    estimate,
                    replicates: if b == 0 { Vec::new() } else { row.to_vec() },
                })
                .collect()
        }
        _ => {
            return Err(CoreError::Config(
                "give exactly one of accuracy_sd (the paper's best-of-k model) and \
                 accuracy_replicates (a measured curve's bootstrap replicates)"
                    .into(),
            )
            .into())
        }
    };
    let points: Vec<Point> = (0..n)
        .zip(accuracy)
        .map(|(i, accuracy)| {
            let r = &c[i * CALL_COLUMNS..(i + 1) * CALL_COLUMNS];
            Point {
                call: CallModel {
                    cost_in_usd_per_token: r[0],
                    cost_out_usd_per_token: r[1],
                    latency_in_s_per_token: r[2],
                    latency_out_s_per_token: r[3],
                    input_tokens_mean: r[4],
                    input_tokens_sd: r[5],
                    output_tokens_mean: r[6],
                    output_tokens_sd: r[7],
                },
                k: ks[i],
                parallelism: ps[i],
                accuracy,
                stream: first_stream.wrapping_add(i as u64),
            }
        })
        .collect();
    let cfg = McConfig {
        trials,
        seed,
        level,
        quantile,
        latency,
        threads,
    };
    let est = py.detach(|| simulate(&points, &cfg))?;
    Ok(PyPlanEstimates {
        est,
        trials,
        level,
        quantile,
    })
}

fn index_array<'py>(py: Python<'py>, v: &[usize]) -> Bound<'py, PyArray1<i64>> {
    v.iter()
        .map(|&i| i as i64)
        .collect::<Vec<_>>()
        .into_pyarray(py)
}

/// Feasible points, Pareto-optimal feasible points and each rule's pick (indices into the
/// arrays given to `plan_rules`).
#[pyclass(frozen, module = "uniscale._core", name = "PlanChoice")]
pub struct PyPlanChoice {
    inner: PlanChoice,
}

#[pymethods]
impl PyPlanChoice {
    /// Indices of the feasible points, increasing.
    #[getter]
    fn feasible<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        index_array(py, &self.inner.feasible)
    }
    /// Indices of the Pareto-optimal feasible points, increasing.
    #[getter]
    fn front<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        index_array(py, &self.inner.front)
    }
    /// Rule name -> picked index (None: nothing feasible, or a knee rule on a front of fewer
    /// than three points).
    #[getter]
    fn picks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let picks = PyDict::new(py);
        for (rule, pick) in PlanRule::ALL.iter().zip(&self.inner.picks) {
            picks.set_item(rule.name(), *pick)?;
        }
        Ok(picks)
    }
    fn __repr__(&self) -> String {
        format!(
            "PlanChoice({} feasible, {} on the front)",
            self.inner.feasible.len(),
            self.inner.front.len()
        )
    }
}

/// Feasible points, Pareto-optimal feasible points and every planner rule's pick.
#[pyfunction]
#[pyo3(signature = (accuracy, cost, latency, *, max_cost=f64::INFINITY, max_latency=f64::INFINITY, min_accuracy=f64::NEG_INFINITY, check_accuracy=None, check_cost=None, check_latency=None))]
#[allow(clippy::too_many_arguments)]
pub fn plan_rules<'py>(
    py: Python<'py>,
    accuracy: &Bound<'py, PyAny>,
    cost: &Bound<'py, PyAny>,
    latency: &Bound<'py, PyAny>,
    max_cost: f64,
    max_latency: f64,
    min_accuracy: f64,
    check_accuracy: Option<&Bound<'py, PyAny>>,
    check_cost: Option<&Bound<'py, PyAny>>,
    check_latency: Option<&Bound<'py, PyAny>>,
) -> PyResult<PyPlanChoice> {
    let (a, c, l) = (
        f64_1d(accuracy, "accuracy")?,
        f64_1d(cost, "cost")?,
        f64_1d(latency, "latency")?,
    );
    let or = |o: Option<&Bound<'py, PyAny>>, d: &Vec<f64>, what: &str| match o {
        Some(x) => f64_1d(x, what),
        None => Ok(d.clone()),
    };
    let ca = or(check_accuracy, &a, "check_accuracy")?;
    let cc = or(check_cost, &c, "check_cost")?;
    let cl = or(check_latency, &l, "check_latency")?;
    let limits = Limits {
        max_cost,
        max_latency,
        min_accuracy,
    };
    let pc = py.detach(|| plan_choice(&a, &c, &l, &ca, &cc, &cl, limits))?;
    Ok(PyPlanChoice { inner: pc })
}
