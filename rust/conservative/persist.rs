//! Conservative mode's account in the policy state: `write` and `read` (every layout the
//! format has had; `read` validates before anything is used).

use super::*;

impl Conservative {
    pub fn write(&self, w: &mut Writer) {
        w.u64(self.baseline_uid);
        for v in [
            self.delta,
            self.z,
            self.quality_sd,
            self.quality_min,
            self.quality_max,
            self.realised,
            self.baseline_realised,
            self.counterfactual_hi,
            self.counterfactual_var,
            self.settled_lo,
            self.settled_hi,
        ] {
            w.f64(v);
        }
        w.u64(self.n_other);
        w.u64(self.overrides);
        w.u64(self.decisions);
        w.usize(self.open.len());
        for (&id, o) in &self.open {
            w.u64(id);
            w.f64(o.lo);
            w.f64(o.hi);
            w.f64(o.var_policy);
            w.f64(o.var_baseline);
            w.bool(o.baseline);
        }
        // layout 2 (see `read`)
        w.u8(match self.metric {
            Metric::Reward => 0,
            Metric::Quality => 1,
        });
        w.f64(self.tolerance);
        // layout 3
        w.f64(self.multiplier);
        w.bool(self.retro);
        w.u64(self.cf_n);
        w.f64s(&self.cf_x);
    }

    /// `layout` 1 is the first format-3 layout (reward metric only); layout 2 appends the
    /// metric and the tolerance; layout 3 the quality-floor multiplier.
    pub fn read(r: &mut Reader, max_open: usize, layout: u8) -> CoreResult<Conservative> {
        let baseline_uid = r.u64()?;
        let mut f = [0.0; 11];
        for v in f.iter_mut() {
            *v = r.f64()?;
        }
        let [delta, z, quality_sd, quality_min, quality_max, realised, baseline_realised, counterfactual_hi, counterfactual_var, settled_lo, settled_hi] =
            f;
        let st = |m: String| CoreError::State(format!("conservative mode: {m}"));
        check_delta(delta).map_err(|e| st(e.to_string()))?;
        if !(z.is_finite() && z > 0.0 && z < 40.0) {
            return Err(st(format!("z must be in (0, 40), got {z}")));
        }
        if !(quality_sd.is_finite() && (0.0..=1e6).contains(&quality_sd)) {
            return Err(st(format!(
                "quality_sd must be in [0, 1e6], got {quality_sd}"
            )));
        }
        for (what, v) in [
            ("realised", realised),
            ("baseline_realised", baseline_realised),
            ("counterfactual_hi", counterfactual_hi),
            ("counterfactual_var", counterfactual_var),
            ("settled_lo", settled_lo),
            ("settled_hi", settled_hi),
        ] {
            if !v.is_finite() {
                return Err(st(format!("{what} is {v}")));
            }
        }
        let n_other = r.u64()?;
        let overrides = r.u64()?;
        let decisions = r.u64()?;
        let n_open = r.dim("conservative open decisions", max_open)?;
        let mut open = BTreeMap::new();
        for _ in 0..n_open {
            let id = r.u64()?;
            let (lo, hi) = (r.f64()?, r.f64()?);
            let (var_policy, var_baseline, baseline) = (r.f64()?, r.f64()?, r.bool()?);
            if ![lo, hi, var_policy, var_baseline]
                .iter()
                .all(|v| v.is_finite())
                || var_policy < 0.0
                || var_baseline < 0.0
            {
                return Err(st(format!("open decision {id} has invalid bounds")));
            }
            let o = Open {
                lo,
                hi,
                var_policy,
                var_baseline,
                baseline,
            };
            if open.insert(id, o).is_some() {
                return Err(st(format!("open decision {id} is listed twice")));
            }
        }
        let (metric, tolerance) = if layout >= 2 {
            let m = match r.u8()? {
                0 => Metric::Reward,
                1 => Metric::Quality,
                k => return Err(st(format!("unknown metric {k}"))),
            };
            let t = r.f64()?;
            if !(t.is_finite() && (0.0..=1e6).contains(&t)) {
                return Err(st(format!("tolerance must be in [0, 1e6], got {t}")));
            }
            (m, t)
        } else {
            (Metric::Reward, 0.0)
        };
        let (multiplier, retro, cf_n, cf_x) = if layout >= 3 {
            let m = r.f64()?;
            let retro = r.bool()?;
            let cf_n = r.u64()?;
            let len = r.dim("conservative counterfactual features", 1 << 16)?;
            let mut cf_x = Vec::with_capacity(len);
            for _ in 0..len {
                cf_x.push(r.f64()?);
            }
            (m, retro, cf_n, cf_x)
        } else {
            (1.0, false, 0, Vec::new())
        };
        if !(multiplier.is_finite() && (MULTIPLIER_MIN..=MULTIPLIER_MAX).contains(&multiplier)) {
            return Err(st(format!(
                "multiplier must be in [{MULTIPLIER_MIN}, {MULTIPLIER_MAX}], got {multiplier}"
            )));
        }
        if let Some(i) = cf_x.iter().position(|v| !v.is_finite()) {
            return Err(st(format!("counterfactual features [{i}] are not finite")));
        }
        if cf_n == 0 && cf_x.iter().any(|v| *v != 0.0) {
            return Err(st(
                "counterfactual features without counterfactual requests".into(),
            ));
        }
        Ok(Conservative {
            baseline_uid,
            metric,
            tolerance,
            multiplier,
            retro,
            cf_x,
            cf_n,
            delta,
            z,
            quality_sd,
            quality_min,
            quality_max,
            realised,
            baseline_realised,
            counterfactual_hi,
            n_other,
            counterfactual_var,
            settled_lo,
            settled_hi,
            overrides,
            decisions,
            open,
        })
    }
}
