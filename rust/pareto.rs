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

/// Indices of the non-dominated points, in increasing index order. Exact duplicates are all
/// kept. O(n log n + n * front) by visiting points in (cost, latency, -accuracy) order.
pub fn front(acc: &[f64], cost: &[f64], lat: &[f64]) -> CoreResult<Vec<usize>> {
    validate(acc, cost, lat)?;
    let n = acc.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        cost[a]
            .total_cmp(&cost[b])
            .then(lat[a].total_cmp(&lat[b]))
            .then(acc[b].total_cmp(&acc[a]))
            .then(a.cmp(&b))
    });
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
}
