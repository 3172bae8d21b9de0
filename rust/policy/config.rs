//! The policy's settings: reward weights, the exploration rule, and the rest of its
//! configuration.

use crate::error::{CoreError, CoreResult};
use crate::evidence::InteractionPrior;
use crate::rng::SplitMix64;
use crate::state::{Reader, Writer};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub quality: f64,
    pub cost: f64,
    pub latency: f64,
}

/// The default reward weights (the `cost_sensitive` preset).
pub const COST_SENSITIVE: Weights = Weights {
    quality: 1.0,
    cost: 1.0,
    latency: 0.2,
};

/// The paper's presets (plus a middle ground), by name; `uniscale.PRESETS` is built from this.
pub const PRESETS: [(&str, Weights); 3] = [
    (
        "quality_priority",
        Weights {
            quality: 1.0,
            cost: 0.1,
            latency: 0.05,
        },
    ),
    ("cost_sensitive", COST_SENSITIVE),
    (
        "balanced",
        Weights {
            quality: 1.0,
            cost: 0.4,
            latency: 0.1,
        },
    ),
];

impl Weights {
    /// One of the `PRESETS`.
    pub fn preset(name: &str) -> CoreResult<Weights> {
        PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, w)| *w)
            .ok_or_else(|| {
                CoreError::Config(format!(
                    "unknown reward preset {name:?}; expected quality_priority, cost_sensitive or balanced"
                ))
            })
    }
    pub fn validate(&self) -> CoreResult<()> {
        for (what, v) in [
            ("quality", self.quality),
            ("cost", self.cost),
            ("latency", self.latency),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(CoreError::Config(format!(
                    "reward weight {what} must be finite and >= 0, got {v}"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exploration {
    /// Pure LinUCB argmax (propensity 1).
    Greedy,
    /// With probability eps, a uniformly random candidate.
    Epsilon(f64),
    /// Softmax over candidate scores with this temperature.
    Softmax(f64),
}

/// One exploration draw over the candidates' scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    /// The probability each candidate had of being picked (sums to 1).
    pub probabilities: Vec<f64>,
    /// Position of the pick among the candidates.
    pub pick: usize,
    /// Position of the best score (ties: the first).
    pub best: usize,
}

impl Exploration {
    pub fn validate(&self) -> CoreResult<()> {
        match *self {
            Exploration::Greedy => Ok(()),
            Exploration::Epsilon(e) if e.is_finite() && (0.0..=1.0).contains(&e) => Ok(()),
            Exploration::Softmax(t) if t.is_finite() && t > 0.0 => Ok(()),
            other => Err(CoreError::Config(format!("invalid exploration {other:?}"))),
        }
    }

    /// Picks a candidate by its `scores` (finite, at least one), recording every candidate's
    /// probability: the honest propensities off-policy evaluation needs.
    pub fn draw(&self, scores: &[f64], rng: &mut SplitMix64) -> Draw {
        let mut best = 0;
        for (j, s) in scores.iter().enumerate() {
            if *s > scores[best] {
                best = j;
            }
        }
        let k = scores.len();
        let nc = k as f64;
        let (probabilities, pick) = match *self {
            Exploration::Greedy => {
                let mut p = vec![0.0; k];
                p[best] = 1.0;
                (p, best)
            }
            Exploration::Epsilon(eps) => {
                let mut p = vec![eps / nc; k];
                p[best] += 1.0 - eps;
                let pick = if rng.next_f64() < eps {
                    ((rng.next_f64() * nc) as usize).min(k - 1)
                } else {
                    best
                };
                (p, pick)
            }
            Exploration::Softmax(t) => {
                let mx = scores[best];
                let e: Vec<f64> = scores.iter().map(|s| ((s - mx) / t).exp()).collect();
                let z: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|v| v / z).collect();
                let u = rng.next_f64();
                let mut acc = 0.0;
                let mut pick = k - 1;
                for (j, pj) in p.iter().enumerate() {
                    acc += pj;
                    if u < acc {
                        pick = j;
                        break;
                    }
                }
                (p, pick)
            }
        };
        Draw {
            probabilities,
            pick,
            best,
        }
    }

    pub(super) fn write(&self, w: &mut Writer) {
        let (kind, value) = match *self {
            Exploration::Greedy => (0, 0.0),
            Exploration::Epsilon(e) => (1, e),
            Exploration::Softmax(t) => (2, t),
        };
        w.u8(kind);
        w.f64(value);
    }

    pub(super) fn read(r: &mut Reader) -> CoreResult<Self> {
        let e = match (r.u8()?, r.f64()?) {
            (0, _) => Exploration::Greedy,
            (1, e) => Exploration::Epsilon(e),
            (2, t) => Exploration::Softmax(t),
            (k, _) => return Err(CoreError::State(format!("unknown exploration kind {k}"))),
        };
        e.validate()
            .map_err(|err| CoreError::State(err.to_string()))?;
        Ok(e)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub cost_scale: f64,
    pub latency_scale: f64,
    pub exploration: Exploration,
    pub ttl_s: f64,
    pub capacity: usize,
    pub feature_version: String,
    /// Multiplies the request features before the quality learner sees them, in [0, 1]: with
    /// the shared learner's `kron([1, x], [1, psi])` and one ridge for all coefficients, a
    /// scale `s` is a ridge `1 / s^2` times stronger on the request x action interactions than
    /// on the action main effects (and shrinks their exploration bonus by `s`): interactions
    /// are learned only as far as the data support them. 0 is a context-free learner.
    pub interaction_scale: f64,
    /// The shared learner's interaction prior (ridge multiplier on the request x action
    /// coefficients, optionally re-estimated by empirical Bayes) and its evidence statistics.
    pub interaction_prior: InteractionPrior,
}

pub(super) fn check_interaction_scale(s: f64) -> CoreResult<()> {
    if s.is_finite() && (0.0..=1.0).contains(&s) {
        Ok(())
    } else {
        Err(CoreError::Config(format!(
            "interaction_scale must be in [0, 1], got {s}"
        )))
    }
}
