//! Multi-replica merging (`crate::policy::sync`) for `uniscale.sync`: module-level functions
//! over a `PolicyCore`. The evidence vectors cross as float64 arrays and the blobs as bytes;
//! the O(D^3) rebuild runs with the GIL released and without the policy's lock, which is taken
//! only to copy the statistics out and to swap the rebuilt ones in.

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::convert::f64_1d;
use super::policy::PyPolicyCore;
use super::ShapeError;
use crate::error::CoreResult;
use crate::policy::{decode_blob, encode_blob};

/// Identifies the layout and meaning of the policy's evidence vector.
#[pyfunction]
pub fn sync_fingerprint(policy: PyRef<'_, PyPolicyCore>) -> u64 {
    policy.inner.lock().sync_fingerprint()
}

/// Length of the policy's evidence vector.
#[pyfunction]
pub fn sync_len(policy: PyRef<'_, PyPolicyCore>) -> usize {
    policy.inner.lock().sync_len()
}

/// The quality learner's update count (O(K)): for "sync every N updates" without copying
/// the statistics.
#[pyfunction]
pub fn sync_updates(policy: PyRef<'_, PyPolicyCore>) -> u64 {
    policy.inner.lock().sync_update_count()
}

/// The policy's evidence vector (additive statistics minus the prior).
#[pyfunction]
pub fn sync_export<'py>(
    py: Python<'py>,
    policy: PyRef<'py, PyPolicyCore>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let p = &*policy;
    let v = py.detach(|| p.inner.lock().sync_export())?;
    Ok(v.into_pyarray(py))
}

/// An evidence vector as a sync blob, stamped with its discount epoch.
#[pyfunction]
#[pyo3(signature = (fingerprint, values, epoch=0))]
pub fn sync_encode<'py>(
    py: Python<'py>,
    fingerprint: u64,
    values: &Bound<'py, PyAny>,
    epoch: u32,
) -> PyResult<Bound<'py, PyBytes>> {
    let v = f64_1d(values, "values")?;
    let b = py.detach(|| encode_blob(fingerprint, epoch, &v));
    Ok(PyBytes::new(py, &b))
}

/// `(fingerprint, values, epoch)` from a sync blob; `StateError` if it is truncated or
/// corrupt.
#[pyfunction]
pub fn sync_decode<'py>(
    py: Python<'py>,
    blob: &[u8],
) -> PyResult<(u64, Bound<'py, PyArray1<f64>>, u32)> {
    let (f, e, v) = py.detach(|| decode_blob(blob))?;
    Ok((f, v.into_pyarray(py), e))
}

/// Which entries of the evidence vector are integer counts (not scaled by an epoch discount).
#[pyfunction]
pub fn sync_count_mask<'py>(
    py: Python<'py>,
    policy: PyRef<'py, PyPolicyCore>,
) -> Bound<'py, PyArray1<bool>> {
    let m = policy.inner.lock().sync_count_mask();
    m.into_pyarray(py)
}

type Swapped = Option<(Vec<f64>, Vec<f64>)>;
type PyPair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

/// Adds `add` to the policy's evidence and rebuilds its statistics. Returns `(before, after)`:
/// the evidence the addition was applied to (everything learned locally up to the swap) and
/// the evidence after it; or None when local learning changed the statistics during the
/// rebuild (nothing is changed; try again) and `force` is false. With `force`, such a race is
/// resolved by rebuilding once more while holding the lock.
#[pyfunction]
#[pyo3(signature = (policy, add, force=false))]
pub fn sync_apply<'py>(
    py: Python<'py>,
    policy: PyRef<'py, PyPolicyCore>,
    add: &Bound<'py, PyAny>,
    force: bool,
) -> PyResult<Option<PyPair<'py>>> {
    let add = f64_1d(add, "add")?;
    let p = &*policy;
    let r = py.detach(|| -> PyResult<Swapped> {
        // under the lock: one O(D^2) copy of the evidence, the learner's shape, the counts
        let (base, before, counts) = {
            let g = p.inner.lock();
            if add.len() != g.sync_len() {
                return Err(ShapeError::new_err(format!(
                    "add has {} values, the policy's evidence vector {}",
                    add.len(),
                    g.sync_len()
                )));
            }
            (g.sync_base()?, g.sync_export()?, g.sync_counts())
        };
        let plus = |v: &[f64]| -> Vec<f64> { v.iter().zip(&add).map(|(a, b)| a + b).collect() };
        // without it: the O(D^3) rebuild and the evidence of the result
        let parts = base.rebuild(&plus(&before))?;
        let mut g = p.inner.lock();
        let swapped: CoreResult<Swapped> = if g.sync_counts() == counts {
            // nothing was learned meanwhile: the swap is a few moves
            let after = parts.evidence().to_vec();
            g.sync_swap(parts)?;
            Ok(Some((before, after)))
        } else if force {
            let now = g.sync_export()?;
            let parts = g.sync_base()?.rebuild(&plus(&now))?;
            let after = parts.evidence().to_vec();
            g.sync_swap(parts)?;
            Ok(Some((now, after)))
        } else {
            Ok(None)
        };
        Ok(swapped?)
    })?;
    Ok(r.map(|(b, a)| (b.into_pyarray(py), a.into_pyarray(py))))
}
