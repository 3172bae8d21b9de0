//! Unit tests of the planner's Monte Carlo (the sampler's own tests are in `normal`).

use super::*;

fn paper_call() -> CallModel {
    CallModel {
        cost_in_usd_per_token: 1.25e-6,
        cost_out_usd_per_token: 1e-5,
        latency_in_s_per_token: 5e-4,
        latency_out_s_per_token: 5e-3,
        input_tokens_mean: 1024.0,
        input_tokens_sd: 64.0,
        output_tokens_mean: 2048.0,
        output_tokens_sd: 128.0,
    }
}

fn cfg(trials: usize, threads: usize) -> McConfig {
    McConfig {
        trials,
        seed: 7,
        level: 0.95,
        quantile: 0.9,
        latency: Latency::Rounds,
        threads,
    }
}

fn grid() -> Vec<Point> {
    (0..12)
        .map(|i| Point {
            call: paper_call(),
            k: 1 + 4 * i,
            parallelism: 4,
            accuracy: Accuracy::BestOfK {
                mean: 0.9,
                sd: 0.05,
            },
            stream: u64::from(i),
        })
        .collect()
}

#[test]
fn thread_count_changes_nothing() {
    let pts = grid();
    let one = simulate(&pts, &cfg(200, 1)).unwrap();
    let three = simulate(&pts, &cfg(200, 3)).unwrap();
    assert_eq!(one, three);
    // a point's numbers do not depend on its neighbours
    let alone = simulate(&pts[5..6], &cfg(200, 1)).unwrap();
    assert_eq!(alone[0], one[5]);
}

#[test]
fn closed_form_means_for_one_call() {
    let p = Point {
        k: 1,
        ..grid()[0].clone()
    };
    let e = simulate(&[p], &cfg(200_000, 1)).unwrap()[0];
    let c = paper_call();
    let ec = c.cost_in_usd_per_token * 1024.0 + c.cost_out_usd_per_token * 2048.0;
    let et = c.latency_in_s_per_token * 1024.0 + c.latency_out_s_per_token * 2048.0;
    assert!((e.cost_usd.mean / ec - 1.0).abs() < 1e-3, "{e:?}");
    assert!((e.latency_s.mean / et - 1.0).abs() < 1e-3, "{e:?}");
    assert!(e.cost_usd.lo < ec && ec < e.cost_usd.hi);
    assert!(e.cost_usd.pessimistic > e.cost_usd.mean);
    assert!(e.accuracy.pessimistic < e.accuracy.mean);
}

#[test]
fn rounds_latency_is_at_least_the_paper_mean() {
    let pts = grid();
    let ours = simulate(&pts, &cfg(300, 1)).unwrap();
    let mut c = cfg(300, 1);
    c.latency = Latency::PaperMean;
    let paper = simulate(&pts, &c).unwrap();
    for (o, p) in ours.iter().zip(&paper) {
        assert!(o.latency_s.mean >= p.latency_s.mean * 0.999);
        assert_eq!(o.cost_usd, p.cost_usd);
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let mut p = grid()[0].clone();
    p.call.output_tokens_sd = f64::NAN;
    assert!(matches!(
        simulate(&[p], &cfg(10, 1)),
        Err(CoreError::NonFinite(_))
    ));
    let mut p = grid()[0].clone();
    p.k = 0;
    assert!(matches!(
        simulate(&[p], &cfg(10, 1)),
        Err(CoreError::Config(_))
    ));
    let mut p = grid()[0].clone();
    p.accuracy = Accuracy::Measured {
        estimate: 0.5,
        replicates: vec![],
    };
    assert!(simulate(&[p], &cfg(10, 1)).is_err());
    assert!(simulate(&grid(), &cfg(0, 1)).is_err());
    assert_eq!(simulate(&[], &cfg(10, 1)).unwrap(), vec![]);
}
