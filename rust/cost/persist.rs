//! The cost model's part of the saved state (`crate::state`), including the migration of the
//! layouts before format 6.

use crate::error::{CoreError, CoreResult};
use crate::space::{ModelInfo, StrategyDef};
use crate::state::{Reader, Writer};

use super::pooled::LogStat;
use super::regression::Ridge;
use super::{latency_prior, out_prior, CostModel, PRIOR_WEIGHT};

impl CostModel {
    pub fn write(&self, w: &mut Writer) {
        w.usize(self.latency.len());
        for r in &self.out_tokens {
            r.write(w);
        }
        for r in &self.latency {
            r.write(w);
        }
        w.usize(self.adaptive_samples.len());
        for (uid, s, c) in &self.adaptive_samples {
            w.u64(*uid);
            w.f64(*s);
            w.f64(*c);
        }
        // format version 6
        for g in self.out_log.iter().chain(&self.latency_log) {
            g.write(w);
        }
        w.usize(self.action_obs.len());
        for (uid, c) in &self.action_obs {
            w.u64(*uid);
            w.u64(*c);
        }
        w.bool(self.uncertain);
    }

    /// Reads what `write` wrote, for the space's `models`. Format versions 1 to 5 stored each
    /// regression with its prior folded in and had no pooled statistics: they load with the
    /// prior taken out again and empty pools (factor 1), so they predict exactly as before, and
    /// with no per-action observation counts (every action counts as unexplored until it is
    /// observed again: it may not be pruned as dominated, nothing else changes).
    pub fn read(
        r: &mut Reader,
        models: &[ModelInfo],
        strategies: &[StrategyDef],
    ) -> CoreResult<CostModel> {
        let m = r.dim("cost.n_models", 1024)?;
        if m != models.len() {
            return Err(CoreError::State(format!(
                "cost model has {m} models, the space {}",
                models.len()
            )));
        }
        let legacy = r.version < 6;
        let mut me = CostModel::new(strategies);
        let n_strategies = me.n_strategies();
        for info in models {
            me.prior_out.push(out_prior(info));
            me.prior_latency.push(latency_prior(info));
        }
        for info in models {
            for _ in 0..n_strategies {
                let w0 = [out_prior(info), 0.0];
                me.out_tokens.push(if legacy {
                    Ridge::read_legacy(r, &w0, PRIOR_WEIGHT)?
                } else {
                    Ridge::read(r, &w0, PRIOR_WEIGHT)?
                });
            }
        }
        for info in models {
            let w0 = latency_prior(info);
            me.latency.push(if legacy {
                Ridge::read_legacy(r, &w0, PRIOR_WEIGHT)?
            } else {
                Ridge::read(r, &w0, PRIOR_WEIGHT)?
            });
        }
        let k = r.dim("cost.adaptive", 1 << 20)?;
        for _ in 0..k {
            let e = (r.u64()?, r.finite_f64("samples")?, r.finite_f64("count")?);
            // `expected_samples` binary-searches by uid: strictly increasing, and the running
            // sums are counts of samples (>= 0)
            if me.adaptive_samples.last().is_some_and(|last| last.0 >= e.0) {
                return Err(CoreError::State(
                    "cost model: adaptive-sample entries are not sorted by action uid".into(),
                ));
            }
            if e.1 < 0.0 || e.2 < 0.0 {
                return Err(CoreError::State(
                    "cost model: negative adaptive-sample statistics".into(),
                ));
            }
            me.adaptive_samples.push(e);
        }
        if !legacy {
            for _ in 0..n_strategies * m {
                me.out_log.push(LogStat::read(r)?);
            }
            for _ in 0..m {
                me.latency_log.push(LogStat::read(r)?);
            }
            let k = r.dim("cost.action_obs", 1 << 20)?;
            for _ in 0..k {
                let e = (r.u64()?, r.u64()?);
                if me.action_obs.last().is_some_and(|last| last.0 >= e.0) {
                    return Err(CoreError::State(
                        "cost model: action observation counts are not sorted by uid".into(),
                    ));
                }
                me.action_obs.push(e);
            }
            me.uncertain = r.bool()?;
        }
        if legacy {
            me.out_log = vec![LogStat::default(); n_strategies * m];
            me.latency_log = vec![LogStat::default(); m];
        }
        me.refresh();
        me.check(models.len()).map_err(CoreError::State)?;
        Ok(me)
    }

    /// The invariants `predict` and `observe` rely on, for a space of `n_models` models.
    pub fn check(&self, n_models: usize) -> Result<(), String> {
        if self.latency.len() != n_models
            || self.out_tokens.len() != self.n_strategies() * n_models
            || self.prior_out.len() != n_models
            || self.prior_latency.len() != n_models
        {
            return Err("the cost model does not cover every model".into());
        }
        if self.out_log.len() != self.n_strategies() * n_models
            || self.latency_log.len() != n_models
        {
            return Err("the cost model's pooled statistics do not cover every model".into());
        }
        for g in self.out_log.iter().chain(&self.latency_log) {
            g.check()?;
        }
        let sorted = |v: &[u64]| v.windows(2).all(|w| w[0] < w[1]);
        let uids: Vec<u64> = self.action_obs.iter().map(|e| e.0).collect();
        let ad: Vec<u64> = self.adaptive_samples.iter().map(|e| e.0).collect();
        if !sorted(&uids) || !sorted(&ad) {
            return Err("cost model: per-action entries are not sorted by uid".into());
        }
        for r in self.out_tokens.iter().chain(&self.latency) {
            if r.p
                .iter()
                .chain(&r.q)
                .chain(&r.a)
                .chain(&r.b)
                .any(|v| !v.is_finite())
            {
                return Err("cost model: a regression is not finite".into());
            }
        }
        Ok(())
    }
}
