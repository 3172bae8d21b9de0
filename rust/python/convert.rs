//! Python -> Rust conversion with the project's error types. Fast path: an exact float64 /
//! bool / int64 NumPy array; anything else goes through `numpy.asarray` once and is then
//! checked for dtype and shape. Values are copied into Rust-owned buffers so the GIL can be
//! released safely while the core works on them (the arrays are tiny next to the math).

use numpy::{PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::{DTypeError, ShapeError, UnknownActionError};

/// `numpy.asarray(obj)` converted to `dtype`, refusing kinds whose conversion would lose
/// information silently (complex, strings, dates, ...). Booleans, integers, floats and object
/// arrays of numbers are accepted.
fn asarray<'py>(obj: &Bound<'py, PyAny>, dtype: &str, what: &str) -> PyResult<Bound<'py, PyAny>> {
    let np = obj.py().import("numpy")?;
    let raw = np
        .call_method1("asarray", (obj,))
        .map_err(|e| DTypeError::new_err(format!("{what} cannot be converted to an array: {e}")))?;
    let kind: String = raw.getattr("dtype")?.getattr("kind")?.extract()?;
    let size: usize = raw.getattr("size")?.extract()?;
    if size > 0 && !matches!(kind.as_str(), "b" | "i" | "u" | "f" | "O") {
        let name = raw.getattr("dtype")?.str()?.to_string();
        return Err(DTypeError::new_err(format!(
            "{what} cannot be converted to {dtype}: it must be numeric, got dtype {name}"
        )));
    }
    raw.call_method1("astype", (dtype,))
        .map_err(|e| DTypeError::new_err(format!("{what} cannot be converted to {dtype}: {e}")))
}

fn ndim_error(what: &str, want: usize, got: usize, shape: &[usize]) -> PyErr {
    ShapeError::new_err(format!(
        "{what} must be {want}-D, got a {got}-D array of shape {shape:?}"
    ))
}

/// A 1-D float64 vector.
pub fn f64_1d(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f64>> {
    if let Ok(a) = obj.cast::<PyArray1<f64>>() {
        // `to_vec` copies a contiguous array without touching rust-numpy's dynamic borrow
        // flags, which are the dominant per-call cost for tiny vectors.
        if let Ok(v) = a.to_vec() {
            return Ok(v);
        }
        return Ok(a.readonly().as_array().iter().copied().collect());
    }
    let arr = asarray(obj, "float64", what)?;
    let dynarr = arr.cast::<PyArrayDyn<f64>>()?;
    if dynarr.ndim() != 1 {
        return Err(ndim_error(what, 1, dynarr.ndim(), dynarr.shape()));
    }
    Ok(dynarr.readonly().as_array().iter().copied().collect())
}

/// Copies `len` values into a new vector, raising `MemoryError` if it cannot be allocated
/// (a huge input must not abort the interpreter).
fn try_collect(len: usize, values: impl Iterator<Item = f64>) -> PyResult<Vec<f64>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|e| {
        pyo3::exceptions::PyMemoryError::new_err(format!("cannot copy {len} values: {e}"))
    })?;
    v.extend(values);
    Ok(v)
}

/// A 2-D float64 matrix as (row-major values, rows, cols).
pub fn f64_2d(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<f64>, usize, usize)> {
    if let Ok(a) = obj.cast::<PyArray2<f64>>() {
        let ro = a.readonly();
        let shape = ro.shape();
        let (r, c) = (shape[0], shape[1]);
        return Ok((try_collect(r * c, ro.as_array().iter().copied())?, r, c));
    }
    let arr = asarray(obj, "float64", what)?;
    let dynarr = arr.cast::<PyArrayDyn<f64>>()?;
    if dynarr.ndim() != 2 {
        return Err(ndim_error(what, 2, dynarr.ndim(), dynarr.shape()));
    }
    let shape = dynarr.shape().to_vec();
    let (r, c) = (shape[0], shape[1]);
    Ok((
        try_collect(r * c, dynarr.readonly().as_array().iter().copied())?,
        r,
        c,
    ))
}

/// A boolean mask, 1-D or 2-D, as (values, shape). Only real booleans are accepted: coercing
/// floats or ints to bool would silently turn a wrong argument into a valid mask.
pub fn bool_nd(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<bool>, Vec<usize>)> {
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    match arr.cast::<PyArrayDyn<bool>>() {
        Ok(b) => Ok((
            b.readonly().as_array().iter().copied().collect(),
            b.shape().to_vec(),
        )),
        Err(_) => {
            let dtype = arr.getattr("dtype")?.str()?.to_string();
            Err(DTypeError::new_err(format!(
                "{what} must be a boolean array, got dtype {dtype}"
            )))
        }
    }
}

/// One action index argument: a Python int or anything with `__index__` (NumPy integers).
/// A value outside the int64 range is an unknown action, like any other out-of-range index
/// (not an `OverflowError`); booleans are refused (`True` is an int to Python, but passing it
/// as an action is a bug); other types raise `TypeError`.
pub fn action_index(obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(UnknownActionError::new_err(format!(
            "action must be an int index, got {}",
            obj.repr()?
        )));
    }
    if let Ok(v) = obj.extract::<i64>() {
        return Ok(v);
    }
    // Not an int64: either a bigger int (unknown action) or not an integer (TypeError).
    let index = obj.py().import("operator")?.call_method1("index", (obj,))?;
    Err(UnknownActionError::new_err(format!(
        "unknown action {index}: out of the range of action indices"
    )))
}

/// A 1-D array of integers (e.g. action indices).
pub fn i64_1d(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    if let Ok(a) = obj.cast::<PyArray1<i64>>() {
        return Ok(a.readonly().as_array().iter().copied().collect());
    }
    let np = obj.py().import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    let size: usize = arr.getattr("size")?.extract()?;
    let ndim: usize = arr.getattr("ndim")?.extract()?;
    if size == 0 && ndim == 1 {
        // `[]` is float64 to NumPy; an empty index list is still a valid (empty) index list.
        return Ok(Vec::new());
    }
    if kind != "i" && kind != "u" {
        return Err(DTypeError::new_err(format!(
            "{what} must be an array of integers, got dtype kind {kind:?}"
        )));
    }
    let arr = asarray(&arr, "int64", what)?;
    let dynarr = arr.cast::<PyArrayDyn<i64>>()?;
    if dynarr.ndim() != 1 {
        return Err(ndim_error(what, 1, dynarr.ndim(), dynarr.shape()));
    }
    Ok(dynarr.readonly().as_array().iter().copied().collect())
}
