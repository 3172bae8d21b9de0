//! Operating points on the 3-D accuracy / cost / latency trade-off (for the planner).
//!
//! A point is (accuracy, cost, latency); accuracy is maximised, cost and latency minimised.
//! `front` returns the non-dominated points; `select` picks one operating point by a named rule:
//! * `AccuracyMax`: highest accuracy (ties: lower cost, then lower latency, then lower index);
//! * `UtopiaClosest`: closest (Euclidean, after scaling each objective to [0, 1] over the front)
//!   to the utopia point (best accuracy, best cost, best latency);
//! * `Knee`: farthest from the plane through the three single-objective extremes of the front,
//!   on the utopia side (the point where one objective stops buying much of the others);
//!   when two objectives share their extreme point, the farthest point from the chord between
//!   the two distinct extremes; a single-point front is its own knee;
//! * `Cube { min_accuracy, max_cost, max_latency }`: the most accurate point inside the box
//!   (ties as `AccuracyMax`), or none.

use crate::error::{check_finite, check_len, CoreError, CoreResult};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    AccuracyMax,
    UtopiaClosest,
    Knee,
    Cube {
        min_accuracy: f64,
        max_cost: f64,
        max_latency: f64,
    },
}

fn validate(acc: &[f64], cost: &[f64], lat: &[f64]) -> CoreResult<()> {
    check_len("cost", cost.len(), acc.len())?;
    check_len("latency", lat.len(), acc.len())?;
    check_finite("accuracy", acc)?;
    check_finite("cost", cost)?;
    check_finite("latency", lat)
}

/// `b` dominates `a`: no worse in every objective and better in one.
#[inline]
fn dominates(acc: &[f64], cost: &[f64], lat: &[f64], b: usize, a: usize) -> bool {
    acc[b] >= acc[a]
        && cost[b] <= cost[a]
        && lat[b] <= lat[a]
        && (acc[b] > acc[a] || cost[b] < cost[a] || lat[b] < lat[a])
}

/// Cost, then latency, then accuracy descending, then index: the order `front` visits points
/// in and the order the knee rules walk a front along.
fn cost_order(acc: &[f64], cost: &[f64], lat: &[f64], a: usize, b: usize) -> std::cmp::Ordering {
    cost[a]
        .total_cmp(&cost[b])
        .then(lat[a].total_cmp(&lat[b]))
        .then(acc[b].total_cmp(&acc[a]))
        .then(a.cmp(&b))
}

/// Indices of the non-dominated points, in increasing index order. Exact duplicates are all
/// kept. O(n log n + n * front) by visiting points in (cost, latency, -accuracy) order.
pub fn front(acc: &[f64], cost: &[f64], lat: &[f64]) -> CoreResult<Vec<usize>> {
    validate(acc, cost, lat)?;
    let n = acc.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cost_order(acc, cost, lat, a, b));
    let mut kept: Vec<usize> = Vec::new();
    for &i in &order {
        if !kept.iter().any(|&j| dominates(acc, cost, lat, j, i)) {
            kept.push(i);
        }
    }
    kept.sort_unstable();
    Ok(kept)
}

fn best_by_accuracy(idx: &[usize], acc: &[f64], cost: &[f64], lat: &[f64]) -> Option<usize> {
    idx.iter().copied().min_by(|&a, &b| {
        acc[b]
            .total_cmp(&acc[a])
            .then(cost[a].total_cmp(&cost[b]))
            .then(lat[a].total_cmp(&lat[b]))
            .then(a.cmp(&b))
    })
}

/// Scaled objectives on the front: (accuracy gain, cost saving, latency saving), each in
/// [0, 1] with 1 = best on the front, so that utopia is (1, 1, 1).
fn scaled(f: &[usize], acc: &[f64], cost: &[f64], lat: &[f64]) -> Vec<[f64; 3]> {
    let span = |v: &[f64]| {
        let lo = f.iter().map(|&i| v[i]).fold(f64::INFINITY, f64::min);
        let hi = f.iter().map(|&i| v[i]).fold(f64::NEG_INFINITY, f64::max);
        (lo, if hi > lo { hi - lo } else { 1.0 })
    };
    let (a0, ar) = span(acc);
    let (c0, cr) = span(cost);
    let (l0, lr) = span(lat);
    f.iter()
        .map(|&i| {
            [
                (acc[i] - a0) / ar,
                1.0 - (cost[i] - c0) / cr,
                1.0 - (lat[i] - l0) / lr,
            ]
        })
        .collect()
}

/// Picks one operating point; `None` only for `Cube` with nothing inside or empty input.
pub fn select(acc: &[f64], cost: &[f64], lat: &[f64], rule: Rule) -> CoreResult<Option<usize>> {
    validate(acc, cost, lat)?;
    if acc.is_empty() {
        return Ok(None);
    }
    let f = front(acc, cost, lat)?;
    match rule {
        Rule::AccuracyMax => Ok(best_by_accuracy(&f, acc, cost, lat)),
        Rule::Cube {
            min_accuracy,
            max_cost,
            max_latency,
        } => {
            if min_accuracy.is_nan() || max_cost.is_nan() || max_latency.is_nan() {
                return Err(CoreError::NonFinite("cube bounds must not be NaN".into()));
            }
            let inside: Vec<usize> = f
                .iter()
                .copied()
                .filter(|&i| acc[i] >= min_accuracy && cost[i] <= max_cost && lat[i] <= max_latency)
                .collect();
            Ok(best_by_accuracy(&inside, acc, cost, lat))
        }
        Rule::UtopiaClosest => Ok(Some(utopia_closest(&f, acc, cost, lat))),
        Rule::Knee => {
            let s = scaled(&f, acc, cost, lat);
            // Extremes: best in each scaled objective (ties by index).
            let ext: Vec<usize> = (0..3)
                .map(|k| {
                    (0..s.len())
                        .max_by(|&a, &b| s[a][k].total_cmp(&s[b][k]).then(b.cmp(&a)))
                        .unwrap_or(0)
                })
                .collect();
            let (p0, p1, p2) = (s[ext[0]], s[ext[1]], s[ext[2]]);
            let u = [p1[0] - p0[0], p1[1] - p0[1], p1[2] - p0[2]];
            let v = [p2[0] - p0[0], p2[1] - p0[1], p2[2] - p0[2]];
            let mut nrm = [
                u[1] * v[2] - u[2] * v[1],
                u[2] * v[0] - u[0] * v[2],
                u[0] * v[1] - u[1] * v[0],
            ];
            let len = (nrm[0] * nrm[0] + nrm[1] * nrm[1] + nrm[2] * nrm[2]).sqrt();
            if len < 1e-12 {
                // Two objectives move together on this front (their extremes coincide): the
                // knee is the point farthest from the chord between the two extremes.
                let (a, b) = if ext[0] != ext[1] {
                    (ext[0], ext[1])
                } else {
                    (ext[0], ext[2])
                };
                if a == b {
                    return Ok(Some(f[a]));
                }
                let (pa, pb) = (s[a], s[b]);
                let w = [pb[0] - pa[0], pb[1] - pa[1], pb[2] - pa[2]];
                let wl = (w[0] * w[0] + w[1] * w[1] + w[2] * w[2]).sqrt();
                if wl < 1e-12 {
                    return Ok(Some(utopia_closest(&f, acc, cost, lat)));
                }
                let dist = |q: &[f64; 3]| {
                    let d = [q[0] - pa[0], q[1] - pa[1], q[2] - pa[2]];
                    let c = [
                        d[1] * w[2] - d[2] * w[1],
                        d[2] * w[0] - d[0] * w[2],
                        d[0] * w[1] - d[1] * w[0],
                    ];
                    (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt() / wl
                };
                let best = (0..s.len())
                    .max_by(|&x, &y| dist(&s[x]).total_cmp(&dist(&s[y])).then(y.cmp(&x)))
                    .unwrap_or(0);
                return Ok(Some(f[best]));
            }
            // Orient the normal towards utopia (1, 1, 1).
            let to_u = [1.0 - p0[0], 1.0 - p0[1], 1.0 - p0[2]];
            if nrm[0] * to_u[0] + nrm[1] * to_u[1] + nrm[2] * to_u[2] < 0.0 {
                nrm = [-nrm[0], -nrm[1], -nrm[2]];
            }
            let dist = |q: &[f64; 3]| {
                (nrm[0] * (q[0] - p0[0]) + nrm[1] * (q[1] - p0[1]) + nrm[2] * (q[2] - p0[2])) / len
            };
            let best = (0..s.len())
                .max_by(|&a, &b| dist(&s[a]).total_cmp(&dist(&s[b])).then(b.cmp(&a)))
                .unwrap_or(0);
            Ok(Some(f[best]))
        }
    }
}

fn utopia_closest(f: &[usize], acc: &[f64], cost: &[f64], lat: &[f64]) -> usize {
    let s = scaled(f, acc, cost, lat);
    let d = |q: &[f64; 3]| (1.0 - q[0]).powi(2) + (1.0 - q[1]).powi(2) + (1.0 - q[2]).powi(2);
    let best = (0..s.len())
        .min_by(|&a, &b| d(&s[a]).total_cmp(&d(&s[b])).then(a.cmp(&b)))
        .unwrap_or(0);
    f[best]
}

// ---- the planner's rules (arXiv 2510.18905, section "selection rules") --------------------
//
// Unlike `select`, these take a deployment's limits (C_max, T_max, A_min) and score points by
// objectives normalised by those limits, as the paper does: cost C / C_max, latency
// T / T_max, accuracy A. A limit left open (infinite) is replaced by the largest value among
// the candidates, so the objective still counts. Every rule is invariant to scaling all costs
// (or all latencies) by one positive constant, up to floating-point rounding.

/// A deployment's limits: feasible iff cost <= max_cost, latency <= max_latency and
/// accuracy >= min_accuracy (each compared on whichever statistic the caller passes: the
/// expectations, or pessimistic quantiles for a risk-averse plan).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_cost: f64,
    pub max_latency: f64,
    pub min_accuracy: f64,
}

impl Limits {
    pub fn validate(&self) -> CoreResult<()> {
        if self.max_cost.is_nan() || self.max_latency.is_nan() || self.min_accuracy.is_nan() {
            return Err(CoreError::NonFinite("limits must not be NaN".into()));
        }
        if !(self.max_cost > 0.0 && self.max_latency > 0.0) {
            return Err(CoreError::Config(format!(
                "max_cost and max_latency must be > 0 (infinity for no limit), got {} and {}",
                self.max_cost, self.max_latency
            )));
        }
        Ok(())
    }
}

/// The planner's selection rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanRule {
    /// The feasible point of highest accuracy (ties: lower cost, lower latency, lower index).
    AccuracyMax,
    /// The feasible point maximising (1 - C/C_max)(1 - T/T_max) A.
    Cube,
    /// Among the Pareto-optimal feasible points, the one closest (Euclidean) to the utopia
    /// (0, 0, 0) in (C/C_max, T/T_max, 1 - A).
    Utopia,
    /// The Pareto-optimal feasible point of largest curvature along the front, in 3-D over
    /// (C/C_max, T/T_max, A): the front is ordered by cost (then latency, then accuracy
    /// descending) and each interior point scored by the curvature of the circle through it
    /// and its two neighbours (Menger curvature, independent of how the points are spaced).
    KneeCurvature,
    /// The interior Pareto-optimal point farthest from the chord between the first and last
    /// points of the same ordering, in the same normalised 3-D coordinates.
    KneeChord,
    /// The reference code's knee (`find_knee_point_curvature`): central differences over the
    /// point index, `|p' x p''| / |p'|^3` with the cross product of the first **two**
    /// coordinates only (cost and latency; accuracy enters only through `|p'|`).
    KneePaper,
}

impl PlanRule {
    pub const ALL: [PlanRule; 6] = [
        PlanRule::AccuracyMax,
        PlanRule::Cube,
        PlanRule::Utopia,
        PlanRule::KneeCurvature,
        PlanRule::KneeChord,
        PlanRule::KneePaper,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlanRule::AccuracyMax => "accuracy_max",
            PlanRule::Cube => "cube",
            PlanRule::Utopia => "utopia",
            PlanRule::KneeCurvature => "knee",
            PlanRule::KneeChord => "knee_chord",
            PlanRule::KneePaper => "knee_paper",
        }
    }
}

/// Feasible points, Pareto-optimal feasible points and every rule's pick.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanChoice {
    pub feasible: Vec<usize>,
    pub front: Vec<usize>,
    /// In `PlanRule::ALL` order; `None` when nothing is feasible, or for a knee rule when the
    /// front has fewer than three points (no interior point to bend at).
    pub picks: Vec<Option<usize>>,
}

/// Feasibility on `check_*` (expectations or pessimistic quantiles), rules scored on the
/// expectations `acc`, `cost`, `lat`.
#[allow(clippy::too_many_arguments)]
pub fn plan_choice(
    acc: &[f64],
    cost: &[f64],
    lat: &[f64],
    check_acc: &[f64],
    check_cost: &[f64],
    check_lat: &[f64],
    limits: Limits,
) -> CoreResult<PlanChoice> {
    validate(acc, cost, lat)?;
    validate(check_acc, check_cost, check_lat)?;
    check_len("check_accuracy", check_acc.len(), acc.len())?;
    limits.validate()?;
    let feasible: Vec<usize> = (0..acc.len())
        .filter(|&i| {
            check_cost[i] <= limits.max_cost
                && check_lat[i] <= limits.max_latency
                && check_acc[i] >= limits.min_accuracy
        })
        .collect();
    if feasible.is_empty() {
        return Ok(PlanChoice {
            feasible,
            front: Vec::new(),
            picks: vec![None; PlanRule::ALL.len()],
        });
    }
    let sub = |v: &[f64]| feasible.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let (fa, fc, fl) = (sub(acc), sub(cost), sub(lat));
    let front_local = front(&fa, &fc, &fl)?;
    let front_idx: Vec<usize> = front_local.iter().map(|&j| feasible[j]).collect();
    let reference = |v: &[f64], limit: f64| {
        if limit.is_finite() {
            limit
        } else {
            let m = feasible.iter().map(|&i| v[i]).fold(0.0, f64::max);
            if m > 0.0 {
                m
            } else {
                1.0
            }
        }
    };
    let c_ref = reference(cost, limits.max_cost);
    let t_ref = reference(lat, limits.max_latency);
    let norm = |i: usize| [cost[i] / c_ref, lat[i] / t_ref, acc[i]];
    let picks = PlanRule::ALL
        .iter()
        .map(|&rule| match rule {
            PlanRule::AccuracyMax => best_by_accuracy(&feasible, acc, cost, lat),
            PlanRule::Cube => argmax(&feasible, |i| {
                let p = norm(i);
                (1.0 - p[0]).max(0.0) * (1.0 - p[1]).max(0.0) * p[2]
            }),
            PlanRule::Utopia => argmax(&front_idx, |i| {
                let p = norm(i);
                -(p[0] * p[0] + p[1] * p[1] + (1.0 - p[2]) * (1.0 - p[2])).sqrt()
            }),
            PlanRule::KneeCurvature | PlanRule::KneeChord | PlanRule::KneePaper => {
                knee(&front_idx, acc, cost, lat, &norm, rule)
            }
        })
        .collect();
    Ok(PlanChoice {
        feasible,
        front: front_idx,
        picks,
    })
}

/// The index of `idx` with the largest score; ties (and NaN scores, which cannot arise from
/// finite validated input) go to the lowest index.
fn argmax(idx: &[usize], score: impl Fn(usize) -> f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    let mut sorted = idx.to_vec();
    sorted.sort_unstable();
    for i in sorted {
        let s = score(i);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

fn sub3(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn cross3(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm3(a: [f64; 3]) -> f64 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}

fn knee(
    front_idx: &[usize],
    acc: &[f64],
    cost: &[f64],
    lat: &[f64],
    norm: &dyn Fn(usize) -> [f64; 3],
    rule: PlanRule,
) -> Option<usize> {
    if front_idx.len() < 3 {
        return None;
    }
    let mut order = front_idx.to_vec();
    order.sort_by(|&a, &b| cost_order(acc, cost, lat, a, b));
    let p: Vec<[f64; 3]> = order.iter().map(|&i| norm(i)).collect();
    let m = p.len();
    let mut best: Option<(usize, f64)> = None;
    let mut consider = |j: usize, s: f64| {
        if s.is_finite() && best.is_none_or(|(_, b)| s > b) {
            best = Some((j, s));
        }
    };
    match rule {
        PlanRule::KneeCurvature => {
            for j in 1..m - 1 {
                let (a, b, c) = (p[j - 1], p[j], p[j + 1]);
                let (ab, bc, ac) = (norm3(sub3(b, a)), norm3(sub3(c, b)), norm3(sub3(c, a)));
                let denom = ab * bc * ac;
                // Coincident neighbours (duplicate expectations) bend nothing.
                let kappa = if denom > 1e-300 {
                    2.0 * norm3(cross3(sub3(b, a), sub3(c, a))) / denom
                } else {
                    0.0
                };
                consider(j, kappa);
            }
        }
        PlanRule::KneeChord => {
            let (a, c) = (p[0], p[m - 1]);
            let v = sub3(c, a);
            let vl = norm3(v);
            for (j, q) in p.iter().enumerate().take(m - 1).skip(1) {
                let w = sub3(*q, a);
                let d = if vl > 1e-300 {
                    norm3(cross3(w, v)) / vl
                } else {
                    norm3(w)
                };
                consider(j, d);
            }
        }
        _ => {
            // Verbatim semantics of the reference: start at the first point with score -1, so
            // a front with no usable interior point returns its first point.
            best = Some((0, -1.0));
            for j in 1..m - 1 {
                let (a, b, c) = (p[j - 1], p[j], p[j + 1]);
                let dp = [
                    (c[0] - a[0]) / 2.0,
                    (c[1] - a[1]) / 2.0,
                    (c[2] - a[2]) / 2.0,
                ];
                let ddp = [
                    c[0] - 2.0 * b[0] + a[0],
                    c[1] - 2.0 * b[1] + a[1],
                    c[2] - 2.0 * b[2] + a[2],
                ];
                let cross2 = (dp[0] * ddp[1] - dp[1] * ddp[0]).abs();
                let nd = norm3(dp);
                if nd > 1e-10 {
                    let kappa = cross2 / (nd * nd * nd);
                    if best.is_none_or(|(_, bk)| kappa > bk) {
                        best = Some((j, kappa));
                    }
                }
            }
        }
    }
    best.map(|(j, _)| order[j])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_front_and_rules() {
        // 0: cheap/weak, 1: balanced, 2: strong/expensive, 3: dominated by 1
        let acc = [0.5, 0.8, 0.9, 0.7];
        let cost = [1.0, 2.0, 10.0, 3.0];
        let lat = [1.0, 2.0, 10.0, 2.5];
        assert_eq!(front(&acc, &cost, &lat).unwrap(), vec![0, 1, 2]);
        assert_eq!(
            select(&acc, &cost, &lat, Rule::AccuracyMax).unwrap(),
            Some(2)
        );
        assert_eq!(select(&acc, &cost, &lat, Rule::Knee).unwrap(), Some(1));
        assert_eq!(
            select(&acc, &cost, &lat, Rule::UtopiaClosest).unwrap(),
            Some(1)
        );
        let cube = Rule::Cube {
            min_accuracy: 0.6,
            max_cost: 5.0,
            max_latency: 5.0,
        };
        assert_eq!(select(&acc, &cost, &lat, cube).unwrap(), Some(1));
        let none = Rule::Cube {
            min_accuracy: 0.95,
            max_cost: 5.0,
            max_latency: 5.0,
        };
        assert_eq!(select(&acc, &cost, &lat, none).unwrap(), None);
        assert!(front(&[f64::NAN], &[0.0], &[0.0]).is_err());
        assert!(front(&[1.0], &[0.0, 1.0], &[0.0]).is_err());
    }

    #[test]
    fn planner_rules_on_a_small_grid() {
        // 0..4: one model's k = 1, 2, 4, 8, 16 (accuracy saturates), 5: a dominated point
        let acc = [0.60, 0.75, 0.82, 0.85, 0.86, 0.70];
        let cost = [1.0, 2.0, 4.0, 8.0, 16.0, 3.0];
        let lat = [1.0, 1.0, 2.0, 4.0, 8.0, 2.0];
        let lim = Limits {
            max_cost: 10.0,
            max_latency: 10.0,
            min_accuracy: 0.7,
        };
        let pc = plan_choice(&acc, &cost, &lat, &acc, &cost, &lat, lim).unwrap();
        assert_eq!(pc.feasible, vec![1, 2, 3, 5]);
        assert_eq!(pc.front, vec![1, 2, 3]);
        let pick = |r: PlanRule| pc.picks[PlanRule::ALL.iter().position(|&x| x == r).unwrap()];
        assert_eq!(pick(PlanRule::AccuracyMax), Some(3));
        // cube: 0.8*0.9*0.75 = 0.54, 0.6*0.8*0.82 = 0.39, 0.2*0.6*0.85 = 0.10
        assert_eq!(pick(PlanRule::Cube), Some(1));
        // utopia: |(.2,.1,.25)| = .335, |(.4,.2,.18)| = .48, |(.8,.4,.15)| = .91
        assert_eq!(pick(PlanRule::Utopia), Some(1));
        assert_eq!(pick(PlanRule::KneeCurvature), Some(2));
        assert_eq!(pick(PlanRule::KneeChord), Some(2));
        assert_eq!(pick(PlanRule::KneePaper), Some(2));
        let none = Limits {
            min_accuracy: 0.99,
            ..lim
        };
        let pc = plan_choice(&acc, &cost, &lat, &acc, &cost, &lat, none).unwrap();
        assert!(pc.feasible.is_empty() && pc.picks.iter().all(Option::is_none));
        let bad = Limits {
            max_cost: 0.0,
            ..lim
        };
        assert!(plan_choice(&acc, &cost, &lat, &acc, &cost, &lat, bad).is_err());
    }
}
