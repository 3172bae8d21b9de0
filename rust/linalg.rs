//! Small dense linear algebra on row-major `Vec<f64>` square matrices. The sizes here (tens to a
//! few hundred) are too small for BLAS to pay off and the code must never panic on user input,
//! so every routine checks what it needs and returns `CoreResult`.

use crate::error::{CoreError, CoreResult};

/// `n x n` identity scaled by `s`.
pub fn scaled_identity(n: usize, s: f64) -> Vec<f64> {
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        m[i * n + i] = s;
    }
    m
}

/// `len` copies of `value`, or `CoreError::Memory` if the allocation fails: a large state is
/// refused with an exception rather than aborting the process.
pub fn try_filled<T: Clone>(len: usize, value: T) -> CoreResult<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|e| {
        CoreError::Memory(format!(
            "cannot allocate {len} values of {} bytes: {e}",
            std::mem::size_of::<T>()
        ))
    })?;
    v.resize(len, value);
    Ok(v)
}

/// A copy of `v` with a fallible allocation.
pub fn try_copy<T: Clone>(v: &[T]) -> CoreResult<Vec<T>> {
    let mut out = Vec::new();
    out.try_reserve_exact(v.len())
        .map_err(|e| CoreError::Memory(format!("cannot copy {} values: {e}", v.len())))?;
    out.extend_from_slice(v);
    Ok(out)
}

/// [`scaled_identity`] with a fallible allocation.
pub fn try_scaled_identity(n: usize, s: f64) -> CoreResult<Vec<f64>> {
    let mut m = try_filled(n * n, 0.0)?;
    for i in 0..n {
        m[i * n + i] = s;
    }
    Ok(m)
}

/// Whether the running CPU has AVX2 and FMA (checked once). Hot kernels are compiled twice, once
/// for baseline x86-64 and once with these features enabled, and dispatch on this flag: wheels
/// stay portable while modern CPUs get 4-wide vectors.
#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static FLAG: OnceLock<bool> = OnceLock::new();
    *FLAG.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Defines a kernel twice (baseline and AVX2/FMA) and calls the best one for this CPU. The
/// arguments are identifiers bound by the caller; the body must only call `#[inline(always)]`
/// code so that it is compiled with the enabled features. Use as the tail of a function.
#[macro_export]
macro_rules! simd_dispatch {
    (($($arg:ident : $ty:ty),*) -> $ret:ty $body:block) => {{
        #[inline(always)]
        fn generic($($arg: $ty),*) -> $ret $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn avx2($($arg: $ty),*) -> $ret {
            generic($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        {
            if $crate::linalg::has_avx2_fma() {
                // SAFETY: the CPU supports AVX2 and FMA, checked at run time just above.
                return unsafe { avx2($($arg),*) };
            }
        }
        generic($($arg),*)
    }};
}

#[inline(always)]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Eight independent accumulators over exact chunks: no bounds checks in the loop, and the
    // compiler can keep them in two AVX (or four SSE) registers without reassociating one sum.
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// `out = m x` for a row-major `n x n` matrix.
#[inline(always)]
pub fn matvec(m: &[f64], x: &[f64], out: &mut [f64]) {
    let n = x.len();
    for (i, o) in out.iter_mut().enumerate().take(n) {
        *o = dot(&m[i * n..(i + 1) * n], x);
    }
}

/// Below this dimension `quad_form_sym` reads full rows (see there).
pub const SYM_MIN_DIM: usize = 24;

/// `x' m x` for a symmetric row-major `n x n` matrix, reading only the upper triangle (half the
/// memory traffic of the full form) when n > `SYM_MIN_DIM`.
#[inline(always)]
pub fn quad_form_sym(m: &[f64], x: &[f64]) -> f64 {
    let n = x.len();
    if n <= SYM_MIN_DIM {
        // Small matrices are cache-resident: full rows of exact 8-wide chunks beat short
        // triangular segments with their per-row remainders.
        return quad_form(m, x);
    }
    let mut s = 0.0;
    for i in 0..n {
        let xi = x[i];
        if xi != 0.0 {
            let row = &m[i * n..(i + 1) * n];
            s += xi * (row[i] * xi + 2.0 * dot(&row[i + 1..], &x[i + 1..]));
        }
    }
    s
}

/// `x' m x` for a row-major `n x n` matrix.
#[inline(always)]
pub fn quad_form(m: &[f64], x: &[f64]) -> f64 {
    let n = x.len();
    let mut s = 0.0;
    for i in 0..n {
        let xi = x[i];
        if xi != 0.0 {
            s += xi * dot(&m[i * n..(i + 1) * n], x);
        }
    }
    s
}

/// In-place `m = (m + m') / 2`: rank-one updates keep symmetry only up to rounding, and drift
/// would otherwise accumulate over millions of updates.
pub fn symmetrize(m: &mut [f64], n: usize) {
    for i in 0..n {
        for j in (i + 1)..n {
            let v = 0.5 * (m[i * n + j] + m[j * n + i]);
            m[i * n + j] = v;
            m[j * n + i] = v;
        }
    }
}

/// First half of a Sherman-Morrison step: `z = ainv x` and `denom = 1 + x' z`. Nothing is
/// modified, so callers can check `denom` before committing to the update.
#[inline(always)]
pub fn sherman_morrison_prepare(ainv: &[f64], x: &[f64], z: &mut [f64]) -> CoreResult<f64> {
    matvec(ainv, x, z);
    let denom = 1.0 + dot(x, z);
    if denom.is_finite() && denom > 0.0 {
        Ok(denom)
    } else {
        Err(CoreError::Numerical(format!(
            "Sherman-Morrison denominator {denom} is not positive"
        )))
    }
}

/// Second half: `ainv -= z z' / denom`, i.e. `(A + x x')^-1` from `A^-1`. `z` is overwritten.
/// z is scaled by 1/sqrt(denom) first so that the update is w w' with `w_i * w_j == w_j * w_i`
/// bit for bit: the inverse stays exactly symmetric.
#[inline(always)]
pub fn sherman_morrison_apply(ainv: &mut [f64], z: &mut [f64], denom: f64) {
    let n = z.len();
    let s = 1.0 / denom.sqrt();
    for zi in z.iter_mut() {
        *zi *= s;
    }
    for i in 0..n {
        let wi = z[i];
        let row = &mut ainv[i * n..(i + 1) * n];
        for (r, wj) in row.iter_mut().zip(z.iter()) {
            *r -= wi * wj;
        }
    }
}

/// `a += x x'` (full matrix, kept symmetric by construction).
#[inline(always)]
pub fn rank_one_add(a: &mut [f64], x: &[f64]) {
    let n = x.len();
    for i in 0..n {
        let xi = x[i];
        if xi == 0.0 {
            continue;
        }
        let row = &mut a[i * n..(i + 1) * n];
        for (r, xj) in row.iter_mut().zip(x.iter()) {
            *r += xi * xj;
        }
    }
}

/// Fails with `Shape` unless `a` has the `n * n` entries of an `n x n` matrix.
fn check_square(a: &[f64], n: usize) -> CoreResult<()> {
    if a.len() != n * n {
        return Err(CoreError::Shape(format!(
            "matrix has {} entries, expected {}",
            a.len(),
            n * n
        )));
    }
    Ok(())
}

/// Lower Cholesky factor of a symmetric positive-definite `n x n` matrix.
pub fn cholesky(a: &[f64], n: usize) -> CoreResult<Vec<f64>> {
    check_square(a, n)?;
    let mut l = try_filled(n * n, 0.0)?;
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if !(d.is_finite() && d > 0.0) {
            return Err(CoreError::Numerical(format!(
                "matrix is not positive definite (pivot {j} = {d})"
            )));
        }
        let djj = d.sqrt();
        l[j * n + j] = djj;
        for i in (j + 1)..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = s / djj;
        }
    }
    Ok(l)
}

/// Largest relative diagonal jitter `spd_inverse` adds before it declares a matrix not positive
/// semi-definite. A Gram matrix `ridge I + sum x x'` accumulated in floating point is PSD only up
/// to rounding: each entry carries a relative error of about `updates * eps`, so after the
/// diagonal scaling below the error has norm below `dim * updates * eps` (1e-5 at dim 4096 and
/// ten million updates, and typically orders of magnitude less). A genuinely indefinite matrix
/// (a corrupt file) needs a jitter of order 1 and is still rejected.
pub const JITTER_MAX: f64 = 1e-4;

/// Inverse of a symmetric matrix that is positive semi-definite up to rounding and has a
/// positive diagonal (every `ridge I + sum x x'` qualifies); the result is exactly symmetric.
///
/// Robust to scale and to rounding: the matrix is first scaled to unit diagonal,
/// `C = S A S` with `S = diag(A)^-1/2`, so that features of very different magnitudes (a unix
/// time next to an intercept) do not decide the pivots, and `A^-1 = S C^-1 S`. If `C` is not
/// numerically positive definite (it can be singular in floating point while `A` is positive
/// definite in exact arithmetic, e.g. `I + 1e16 [[1, 1], [1, 1]]`, whose `1` is lost next to
/// `1e16`), a relative jitter `tau I` is added to `C` (i.e. `tau diag(A)` to `A`), starting at
/// `dim * eps` and growing tenfold up to [`JITTER_MAX`]; the inverse is that of the jittered
/// matrix, a perturbation no larger than the rounding already present in `A`.
pub fn spd_inverse(a: &[f64], n: usize) -> CoreResult<Vec<f64>> {
    check_square(a, n)?;
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        return Err(CoreError::Numerical(format!(
            "matrix entry {i} is not finite ({})",
            a[i]
        )));
    }
    let mut s = vec![0.0; n];
    for (i, si) in s.iter_mut().enumerate() {
        let d = a[i * n + i];
        if d.is_nan() || d <= 0.0 {
            return Err(CoreError::Numerical(format!(
                "matrix is not positive definite (diagonal entry {i} = {d})"
            )));
        }
        *si = 1.0 / d.sqrt();
    }
    let mut c = try_filled(n * n, 0.0)?;
    for i in 0..n {
        for j in 0..n {
            c[i * n + j] = a[i * n + j] * s[i] * s[j];
        }
    }
    let mut tau = 0.0;
    let first = (n as f64) * f64::EPSILON;
    let l = loop {
        if tau > 0.0 {
            for i in 0..n {
                // the scaled diagonal is 1 up to rounding; jitter is relative to it
                c[i * n + i] = a[i * n + i] * s[i] * s[i] + tau;
            }
        }
        match cholesky(&c, n) {
            Ok(l) => break l,
            Err(e) => {
                tau = if tau == 0.0 { first } else { tau * 10.0 };
                if tau > JITTER_MAX * 1.000_001 {
                    return Err(CoreError::Numerical(format!(
                        "{e}; not positive semi-definite even with a relative diagonal jitter of {JITTER_MAX:e}"
                    )));
                }
            }
        }
    };
    drop(c);
    let mut inv = triangular_inverse_product(&l, n)?;
    for i in 0..n {
        for j in 0..n {
            inv[i * n + j] *= s[i] * s[j];
        }
    }
    if let Some(i) = inv.iter().position(|v| !v.is_finite()) {
        return Err(CoreError::Numerical(format!(
            "inverse entry {i} is not finite ({})",
            inv[i]
        )));
    }
    Ok(inv)
}

/// `L^-T L^-1` for a lower-triangular `L` with a positive diagonal: the inverse of `L L'`.
fn triangular_inverse_product(l: &[f64], n: usize) -> CoreResult<Vec<f64>> {
    // Invert L (lower triangular) column by column by forward substitution.
    let mut linv = try_filled(n * n, 0.0)?;
    for c in 0..n {
        for i in c..n {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                s -= l[i * n + k] * linv[k * n + c];
            }
            linv[i * n + c] = s / l[i * n + i];
        }
    }
    // A^-1 = L^-T L^-1.
    let mut inv = try_filled(n * n, 0.0)?;
    for i in 0..n {
        for j in 0..=i {
            let mut s = 0.0;
            for k in i..n {
                s += linv[k * n + i] * linv[k * n + j];
            }
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_of_spd_times_matrix_is_identity() {
        let n = 4;
        let mut a = scaled_identity(n, 2.0);
        rank_one_add(&mut a, &[1.0, -0.5, 0.25, 3.0]);
        rank_one_add(&mut a, &[0.1, 0.2, -0.3, 0.4]);
        let inv = spd_inverse(&a, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let s: f64 = (0..n).map(|k| a[i * n + k] * inv[k * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((s - want).abs() < 1e-12, "({i},{j}) = {s}");
            }
        }
    }

    #[test]
    fn spd_inverse_accepts_a_matrix_singular_only_by_rounding() {
        // I + 1e16 [[1, 1], [1, 1]]: positive definite, but its 1s are lost next to 1e16.
        let mut a = scaled_identity(2, 1.0);
        rank_one_add(&mut a, &[1e8, 1e8]);
        assert!(cholesky(&a, 2).is_err());
        let inv = spd_inverse(&a, 2).unwrap();
        assert!(inv.iter().all(|v| v.is_finite()));
        assert!(inv[0] > 0.0 && inv[3] > 0.0 && inv[0] * inv[3] - inv[1] * inv[2] > 0.0);
    }

    #[test]
    fn spd_inverse_is_accurate_across_scales() {
        // an intercept next to a unix time: badly scaled, but well conditioned once scaled
        let mut a = scaled_identity(2, 1.0);
        for t in [1.7e9, 1.7e9 + 3600.0, 1.7e9 + 7200.0] {
            rank_one_add(&mut a, &[1.0, t]);
        }
        let inv = spd_inverse(&a, 2).unwrap();
        // (S A S)(S^-1 A^-1 S^-1) = I with S = diag(A)^-1/2
        let s = [1.0 / a[0].sqrt(), 1.0 / a[3].sqrt()];
        for i in 0..2 {
            for j in 0..2 {
                let v: f64 = (0..2)
                    .map(|k| a[i * 2 + k] * s[i] * s[k] * inv[k * 2 + j] / (s[k] * s[j]))
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-6, "({i},{j}) = {v}");
            }
        }
    }

    #[test]
    fn spd_inverse_rejects_indefinite_and_bad_input() {
        assert!(matches!(
            spd_inverse(&[1.0, 2.0, 2.0, 1.0], 2),
            Err(CoreError::Numerical(_))
        ));
        assert!(spd_inverse(&[0.0, 0.0, 0.0, 1.0], 2).is_err());
        assert!(spd_inverse(&[f64::NAN, 0.0, 0.0, 1.0], 2).is_err());
        assert!(spd_inverse(&[1.0, 0.0, 0.0], 2).is_err());
    }

    #[test]
    fn cholesky_rejects_indefinite() {
        let a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(matches!(cholesky(&a, 2), Err(CoreError::Numerical(_))));
    }
}
