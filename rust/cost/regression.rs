//! The cost model's ridge regression with a rescalable prior mean.

use crate::error::{CoreError, CoreResult};
use crate::linalg;
use crate::state::{Reader, Writer};

/// Ridge regression with a prior mean that may be rescaled: minimises
/// `sum (y - w.f)^2 + kappa |w - c w0|^2` for a scalar `c` given at prediction time. Keeps the
/// data statistics (`a = sum f f'`, `b = sum y f`) and the two solutions `p = (a + kappa I)^-1 b`
/// and `q = (a + kappa I)^-1 kappa w0`, so `w = p + c q` costs O(n) per prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Ridge {
    pub count: u64,
    /// `sum f f'` over observations (row-major n x n; the prior is not included).
    pub a: Vec<f64>,
    /// `sum y f` over observations.
    pub b: Vec<f64>,
    pub(super) kappa: f64,
    pub(super) w0: Vec<f64>,
    pub(super) p: Vec<f64>,
    pub(super) q: Vec<f64>,
}

impl Ridge {
    pub fn new(w0: &[f64], kappa: f64) -> Ridge {
        let n = w0.len();
        let mut me = Ridge {
            count: 0,
            a: vec![0.0; n * n],
            b: vec![0.0; n],
            kappa,
            w0: w0.to_vec(),
            p: vec![0.0; n],
            q: vec![0.0; n],
        };
        // With no data the solution is exact: p = 0, q = w0.
        me.q.copy_from_slice(w0);
        me
    }

    /// Coefficients for prior scale `c`.
    pub fn weights(&self, c: f64) -> Vec<f64> {
        self.p.iter().zip(&self.q).map(|(p, q)| p + c * q).collect()
    }

    /// Prediction at features `f` with the prior mean scaled by `c`. Falls back to the unscaled
    /// prior (`c = 1`) if the scaled one overflows (priors near 1e300).
    pub fn predict(&self, f: &[f64], c: f64) -> f64 {
        let p = linalg::dot(&self.p, f);
        let q = linalg::dot(&self.q, f);
        let v = p + c * q;
        if v.is_finite() {
            v
        } else {
            p + q
        }
    }

    /// `(p, q)` for data statistics `(a, b)`; `None` if the system cannot be solved finitely.
    fn solve(&self, a: &[f64], b: &[f64]) -> Option<(Vec<f64>, Vec<f64>)> {
        let n = self.w0.len();
        let mut m = a.to_vec();
        for i in 0..n {
            m[i * n + i] += self.kappa;
        }
        let inv = linalg::spd_inverse(&m, n).ok()?;
        let mut p = vec![0.0; n];
        linalg::matvec(&inv, b, &mut p);
        let kw0: Vec<f64> = self.w0.iter().map(|v| v * self.kappa).collect();
        let mut q = vec![0.0; n];
        linalg::matvec(&inv, &kw0, &mut q);
        p.iter()
            .chain(&q)
            .chain(a)
            .chain(b)
            .all(|v| v.is_finite())
            .then_some((p, q))
    }

    pub fn update(&mut self, f: &[f64], y: f64) {
        let mut a = self.a.clone();
        linalg::rank_one_add(&mut a, f);
        let b: Vec<f64> = self.b.iter().zip(f).map(|(b, fi)| b + y * fi).collect();
        // A tiny system (n <= 3); a failed solve (impossible for finite input, a + kappa I >=
        // kappa I) or a statistic that overflows (an observation in the 1e300s) drops the
        // observation instead of corrupting the model.
        if let Some((p, q)) = self.solve(&a, &b) {
            self.a = a;
            self.b = b;
            self.p = p;
            self.q = q;
            self.count = self.count.saturating_add(1);
        }
    }

    pub(super) fn write(&self, w: &mut Writer) {
        w.u64(self.count);
        w.f64s(&self.a);
        w.f64s(&self.b);
    }

    /// Reads what `write` wrote (format version >= 6), for prior mean `w0`.
    pub(super) fn read(r: &mut Reader, w0: &[f64], kappa: f64) -> CoreResult<Ridge> {
        let n = w0.len();
        let mut me = Ridge::new(w0, kappa);
        me.count = r.u64()?;
        let a = r.f64s("ridge.A", n * n)?;
        let b = r.f64s("ridge.b", n)?;
        me.set_data(a, b)?;
        Ok(me)
    }

    /// Reads the format-1/2 layout (`A = kappa I + sum f f'`, `b = kappa w0 + sum y f`, `w`)
    /// and takes the prior out again, so the migrated model predicts exactly as it did.
    pub(super) fn read_legacy(r: &mut Reader, w0: &[f64], kappa: f64) -> CoreResult<Ridge> {
        let n = w0.len();
        let mut me = Ridge::new(w0, kappa);
        me.count = r.u64()?;
        let mut a = r.f64s("rls.A", n * n)?;
        let mut b = r.f64s("rls.b", n)?;
        let _w = r.f64s("rls.w", n)?;
        for i in 0..n {
            a[i * n + i] -= kappa;
            b[i] -= kappa * w0[i];
        }
        me.set_data(a, b)?;
        Ok(me)
    }

    /// This regression's prior with the given data statistics (`sum f f'`, `sum y f`, count):
    /// what merging replicas rebuilds from summed statistics.
    pub fn with_data(&self, count: u64, a: Vec<f64>, b: Vec<f64>) -> CoreResult<Ridge> {
        let n = self.w0.len();
        if a.len() != n * n || b.len() != n {
            return Err(CoreError::State(format!(
                "cost model regression statistics of the wrong size ({} and {}, expected {} and \
                 {n})",
                a.len(),
                b.len(),
                n * n
            )));
        }
        let mut me = Ridge::new(&self.w0, self.kappa);
        me.count = count;
        me.set_data(a, b)?;
        Ok(me)
    }

    pub(super) fn set_data(&mut self, a: Vec<f64>, b: Vec<f64>) -> CoreResult<()> {
        // a + kappa I must be positive definite, or the model could never be updated
        let (p, q) = self.solve(&a, &b).ok_or_else(|| {
            CoreError::State("cost model regression matrix is not positive definite".into())
        })?;
        self.a = a;
        self.b = b;
        self.p = p;
        self.q = q;
        Ok(())
    }
}
