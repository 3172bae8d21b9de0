//! Property tests of the planner core: the Monte Carlo's determinism and its independence of
//! threads and batching, and the rules' defining properties (every pick feasible, no front
//! point dominated, invariance to scaling cost or latency by a power of two, which is exact in
//! floating point).

use proptest::prelude::*;
use uniscale::pareto::{plan_choice, Limits, PlanRule};
use uniscale::plan::{simulate, Accuracy, CallModel, Latency, McConfig, Point};

fn call() -> impl Strategy<Value = CallModel> {
    (
        0.0..2e-5f64,
        0.0..2e-5f64,
        0.0..1e-2f64,
        0.0..1e-2f64,
        0.0..300.0f64,
        0.0..2.0f64,
        0.0..300.0f64,
        0.0..2.0f64,
    )
        .prop_map(|(ci, co, ti, to, mi, si, mo, so)| CallModel {
            cost_in_usd_per_token: ci,
            cost_out_usd_per_token: co,
            latency_in_s_per_token: ti,
            latency_out_s_per_token: to,
            input_tokens_mean: mi,
            input_tokens_sd: mi * si,
            output_tokens_mean: mo,
            output_tokens_sd: mo * so,
        })
}

fn points() -> impl Strategy<Value = Vec<Point>> {
    prop::collection::vec((call(), 1u32..10, 1u32..5, 0.0..1.0f64, 0.0..0.3f64), 1..12).prop_map(
        |v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (call, k, parallelism, mean, sd))| Point {
                    call,
                    k,
                    parallelism,
                    accuracy: Accuracy::BestOfK { mean, sd },
                    stream: i as u64,
                })
                .collect()
        },
    )
}

fn cfg(seed: u64, threads: usize) -> McConfig {
    McConfig {
        trials: 40,
        seed,
        level: 0.9,
        quantile: 0.8,
        latency: Latency::Rounds,
        threads,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn monte_carlo_is_deterministic_and_thread_free(pts in points(), seed in any::<u64>()) {
        let one = simulate(&pts, &cfg(seed, 1)).unwrap();
        prop_assert_eq!(&one, &simulate(&pts, &cfg(seed, 3)).unwrap());
        // each point alone gives the same numbers as in the batch
        for (p, e) in pts.iter().zip(&one) {
            prop_assert_eq!(e, &simulate(std::slice::from_ref(p), &cfg(seed, 1)).unwrap()[0]);
            prop_assert!(e.cost_usd.lo <= e.cost_usd.hi && e.latency_s.lo <= e.latency_s.hi);
            prop_assert!((0.0..=1.0).contains(&e.accuracy.mean));
        }
    }

    #[test]
    fn picks_are_feasible_front_undominated_and_scale_free(
        pts in prop::collection::vec((0.0..1.0f64, 0.0..1.0f64, 0.0..1.0f64), 1..30),
        max_cost in prop::sample::select(vec![0.3, 0.7, f64::INFINITY]),
        max_latency in prop::sample::select(vec![0.3, 0.7, f64::INFINITY]),
        min_accuracy in prop::sample::select(vec![0.0, 0.4]),
        shift in -20i32..20,
    ) {
        let acc: Vec<f64> = pts.iter().map(|p| p.0).collect();
        let cost: Vec<f64> = pts.iter().map(|p| p.1).collect();
        let lat: Vec<f64> = pts.iter().map(|p| p.2).collect();
        let lim = Limits { max_cost, max_latency, min_accuracy };
        let pc = plan_choice(&acc, &cost, &lat, &acc, &cost, &lat, lim).unwrap();
        for &i in &pc.feasible {
            prop_assert!(cost[i] <= max_cost && lat[i] <= max_latency && acc[i] >= min_accuracy);
        }
        for &i in &pc.front {
            prop_assert!(pc.feasible.contains(&i));
            for &j in &pc.feasible {
                let dom = acc[j] >= acc[i] && cost[j] <= cost[i] && lat[j] <= lat[i]
                    && (acc[j] > acc[i] || cost[j] < cost[i] || lat[j] < lat[i]);
                prop_assert!(!dom, "front point {} dominated by {}", i, j);
            }
        }
        for (rule, pick) in PlanRule::ALL.iter().zip(&pc.picks) {
            if let Some(i) = pick {
                prop_assert!(pc.feasible.contains(i));
                if !matches!(rule, PlanRule::AccuracyMax | PlanRule::Cube) {
                    prop_assert!(pc.front.contains(i));
                }
            }
        }
        // a power of two scales exactly: the same choices, bit for bit
        let s = 2f64.powi(shift);
        let cost2: Vec<f64> = cost.iter().map(|c| c * s).collect();
        let lat2: Vec<f64> = lat.iter().map(|c| c / s).collect();
        let lim2 = Limits { max_cost: max_cost * s, max_latency: max_latency / s, min_accuracy };
        let pc2 = plan_choice(&acc, &cost2, &lat2, &acc, &cost2, &lat2, lim2).unwrap();
        prop_assert_eq!(pc, pc2);
    }
}
