//! Action-space pruning: Pareto dominance in (predicted cost, predicted latency, quality UCB).

/// Why an action was not a candidate for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneReason {
    /// Excluded by the caller's mask (or retired).
    Masked,
    /// Predicted cost above the request's `max_cost_usd`.
    Cost,
    /// Predicted latency above the request's `max_latency_s`.
    Latency,
    /// Dominated by this action index: no more expensive, no slower, at least as good an upper
    /// confidence bound on quality, and strictly better in one of them.
    Dominated(usize),
}

impl PruneReason {
    pub fn describe(&self) -> String {
        match self {
            PruneReason::Masked => "masked".into(),
            PruneReason::Cost => "cost".into(),
            PruneReason::Latency => "latency".into(),
            PruneReason::Dominated(b) => format!("dominated:{b}"),
        }
    }
}

/// For each point, `Some(j)` if point j dominates it (minimise cost and latency, maximise ucb),
/// else `None`. Points are visited in (cost, latency, -ucb) order, so every dominator of a point
/// is visited before it and, by transitivity, some point of the running non-dominated front
/// dominates it: the cost is O(n log n + n * front) instead of O(n^2).
pub fn dominated(cost: &[f64], latency: &[f64], ucb: &[f64]) -> Vec<Option<usize>> {
    let n = cost.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        cost[a]
            .total_cmp(&cost[b])
            .then(latency[a].total_cmp(&latency[b]))
            .then(ucb[b].total_cmp(&ucb[a]))
            .then(a.cmp(&b))
    });
    let mut front: Vec<usize> = Vec::new();
    let mut out = vec![None; n];
    for &i in &order {
        let by = front.iter().copied().find(|&j| {
            cost[j] <= cost[i]
                && latency[j] <= latency[i]
                && ucb[j] >= ucb[i]
                && (cost[j] < cost[i] || latency[j] < latency[i] || ucb[j] > ucb[i])
        });
        match by {
            Some(j) => out[i] = Some(j),
            None => front.push(i),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_quadratic_definition() {
        let mut s: u64 = 11;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) % 5) as f64
        };
        for _ in 0..200 {
            let n = 12;
            let c: Vec<f64> = (0..n).map(|_| rnd()).collect();
            let l: Vec<f64> = (0..n).map(|_| rnd()).collect();
            let u: Vec<f64> = (0..n).map(|_| rnd()).collect();
            let got = dominated(&c, &l, &u);
            for i in 0..n {
                let naive = (0..n).any(|j| {
                    c[j] <= c[i]
                        && l[j] <= l[i]
                        && u[j] >= u[i]
                        && (c[j] < c[i] || l[j] < l[i] || u[j] > u[i])
                });
                assert_eq!(got[i].is_some(), naive, "point {i}");
                if let Some(j) = got[i] {
                    assert!(c[j] <= c[i] && l[j] <= l[i] && u[j] >= u[i]);
                }
            }
        }
    }
}
