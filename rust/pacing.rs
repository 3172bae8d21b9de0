//! Budget pacing: an online Lagrange multiplier on cost.
//!
//! The policy maximises `reward - lambda * cost / cost_scale`. After each realised cost c_t,
//! `lambda <- clamp(lambda + step * (c_t - target) / target, 0, LAMBDA_MAX)` (projected dual
//! gradient ascent). Summing the update shows that the realised average cost differs from the
//! target by at most `target * (lambda_T - lambda_0) / (step * T)` whenever lambda stays
//! positive, so on a long stream the average spend lands on the target while the policy keeps the
//! best quality the budget allows. A per-hour target is turned into a per-request one with an
//! exponentially weighted estimate of the request rate.

use crate::error::{CoreError, CoreResult};
use crate::state::{Reader, Writer};

pub const LAMBDA_MAX: f64 = 1e4;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    None,
    PerRequest(f64),
    PerHour(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pacer {
    pub budget: Budget,
    pub lambda: f64,
    pub step: f64,
    /// EWMA of seconds between requests (per-hour budgets only).
    pub gap_s: f64,
    pub last_request_s: f64,
    pub n_costs: u64,
    pub total_cost_usd: f64,
}

impl Pacer {
    pub fn new(budget: Budget, step: f64) -> CoreResult<Pacer> {
        let mut p = Pacer {
            budget: Budget::None,
            lambda: 0.0,
            step: 0.05,
            gap_s: 0.0,
            last_request_s: f64::NAN,
            n_costs: 0,
            total_cost_usd: 0.0,
        };
        p.set_budget(budget, step)?;
        Ok(p)
    }

    pub fn set_budget(&mut self, budget: Budget, step: f64) -> CoreResult<()> {
        match budget {
            Budget::PerRequest(t) | Budget::PerHour(t) if !(t.is_finite() && t > 0.0) => {
                return Err(CoreError::Config(format!(
                    "budget target must be finite and > 0, got {t}"
                )))
            }
            _ => {}
        }
        if !(step.is_finite() && step > 0.0) {
            return Err(CoreError::Config(format!(
                "pacing step must be finite and > 0, got {step}"
            )));
        }
        self.budget = budget;
        self.step = step;
        if budget == Budget::None {
            self.lambda = 0.0;
        }
        Ok(())
    }

    pub fn observe_request(&mut self, now_s: f64) {
        if let Budget::PerHour(_) = self.budget {
            if self.last_request_s.is_finite() {
                let gap = (now_s - self.last_request_s).max(0.0);
                self.gap_s = if self.gap_s > 0.0 {
                    0.98 * self.gap_s + 0.02 * gap
                } else {
                    gap
                };
            }
            self.last_request_s = now_s;
        }
    }

    /// Current per-request target in dollars, if any.
    pub fn target_per_request(&self) -> Option<f64> {
        match self.budget {
            Budget::None => None,
            Budget::PerRequest(t) => Some(t),
            Budget::PerHour(t) => {
                if self.gap_s > 0.0 {
                    Some(t * self.gap_s / 3600.0)
                } else {
                    None
                }
            }
        }
    }

    pub fn observe_cost(&mut self, cost_usd: f64) {
        self.n_costs += 1;
        self.total_cost_usd += cost_usd;
        if let Some(t) = self.target_per_request() {
            self.lambda = (self.lambda + self.step * (cost_usd - t) / t).clamp(0.0, LAMBDA_MAX);
        }
    }

    pub fn write(&self, w: &mut Writer) {
        match self.budget {
            Budget::None => {
                w.u8(0);
                w.f64(0.0)
            }
            Budget::PerRequest(t) => {
                w.u8(1);
                w.f64(t)
            }
            Budget::PerHour(t) => {
                w.u8(2);
                w.f64(t)
            }
        }
        w.f64(self.lambda);
        w.f64(self.step);
        w.f64(self.gap_s);
        w.f64(self.last_request_s);
        w.u64(self.n_costs);
        w.f64(self.total_cost_usd);
    }

    pub fn read(r: &mut Reader) -> CoreResult<Pacer> {
        let kind = r.u8()?;
        let t = r.f64()?;
        let budget = match kind {
            0 => Budget::None,
            1 => Budget::PerRequest(t),
            2 => Budget::PerHour(t),
            k => return Err(CoreError::State(format!("unknown budget kind {k}"))),
        };
        let lambda = r.finite_f64("lambda")?;
        let step = r.f64()?;
        let mut p = Pacer::new(budget, step).map_err(|e| CoreError::State(e.to_string()))?;
        p.lambda = lambda.clamp(0.0, LAMBDA_MAX);
        p.gap_s = r.finite_f64("gap")?;
        p.last_request_s = r.f64()?;
        p.n_costs = r.u64()?;
        p.total_cost_usd = r.finite_f64("total cost")?;
        Ok(p)
    }
}
