//! Standard normal draws for the planner's Monte Carlo: a ziggurat sampler on one SplitMix64
//! stream, the maximum of `k` draws by inversion, `Phi^-1` and NumPy-style percentiles.

use crate::rng::SplitMix64;

/// Layers of the ziggurat.
const ZIG_LAYERS: usize = 256;
/// Start of the tail and area of each layer, for 256 layers (Marsaglia and Tsang 2000).
const ZIG_R: f64 = 3.654_152_885_361_009;
const ZIG_V: f64 = 0.004_928_673_233_99;

/// Ziggurat tables: `x[i]` layer edges (x[0] the base strip's virtual width, x[1] = R, ...,
/// x[256] = 0) and `f[i] = exp(-x[i]^2 / 2)`.
struct Ziggurat {
    x: [f64; ZIG_LAYERS + 1],
    f: [f64; ZIG_LAYERS + 1],
}

fn ziggurat() -> &'static Ziggurat {
    static TABLE: std::sync::OnceLock<Ziggurat> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let pdf = |x: f64| (-0.5 * x * x).exp();
        let mut x = [0.0; ZIG_LAYERS + 1];
        x[0] = ZIG_V / pdf(ZIG_R);
        x[1] = ZIG_R;
        for i in 2..ZIG_LAYERS {
            let arg = ZIG_V / x[i - 1] + pdf(x[i - 1]);
            // arg reaches 1 only at the top layer, where rounding could push it past 1
            x[i] = (-2.0 * arg.min(1.0).ln()).sqrt();
        }
        x[ZIG_LAYERS] = 0.0;
        let mut f = [0.0; ZIG_LAYERS + 1];
        for i in 0..=ZIG_LAYERS {
            f[i] = pdf(x[i]);
        }
        Ziggurat { x, f }
    })
}

/// Standard normal draws by the ziggurat method (about one uniform and no transcendental
/// function per draw in 99% of cases), from one SplitMix64 stream.
pub(super) struct Normals {
    rng: SplitMix64,
    zig: &'static Ziggurat,
}

impl Normals {
    pub(super) fn new(seed: u64, stream: u64) -> Normals {
        // Key the stream on both numbers through one SplitMix64 step so that neighbouring
        // seeds or streams do not start from neighbouring states.
        let mut k = SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Normals {
            rng: SplitMix64::new(k.next_u64()),
            zig: ziggurat(),
        }
    }

    /// Uniform in (0, 1].
    #[inline]
    fn open_uniform(&mut self) -> f64 {
        1.0 - self.rng.next_f64()
    }

    #[inline]
    pub(super) fn next(&mut self) -> f64 {
        let z = self.zig;
        loop {
            let bits = self.rng.next_u64();
            // low 8 bits pick the layer, the top 53 a symmetric uniform in [-1, 1)
            let i = (bits & 0xff) as usize;
            let u = 2.0 * ((bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0;
            let x = u * z.x[i];
            if x.abs() < z.x[i + 1] {
                return x;
            }
            if i == 0 {
                // the tail beyond R (Marsaglia 1964)
                loop {
                    let xx = -self.open_uniform().ln() / ZIG_R;
                    let yy = -self.open_uniform().ln();
                    if 2.0 * yy > xx * xx {
                        return if u < 0.0 { -(ZIG_R + xx) } else { ZIG_R + xx };
                    }
                }
            }
            if z.f[i + 1] + (z.f[i] - z.f[i + 1]) * self.rng.next_f64() < (-0.5 * x * x).exp() {
                return x;
            }
        }
    }

    /// The largest of `k` standard normal draws, drawn at once by inversion:
    /// `P(max <= z) = Phi(z)^k`, so `max = Phi^-1(U^(1/k))`, computed from the upper tail
    /// `p = 1 - U^(1/k) = -expm1(ln U / k)` to keep precision when k is large.
    #[inline]
    pub(super) fn max_of(&mut self, k: u32) -> f64 {
        if k == 1 {
            return self.next();
        }
        let p = -(self.open_uniform().ln() / f64::from(k)).exp_m1();
        -inverse_normal_cdf(p)
    }
}

/// `Phi^-1(p)`, with `-inf` / `+inf` at 0 / 1 (the core's one implementation is
/// `conservative::normal_quantile`, Acklam's approximation, relative error below 1.2e-9,
/// far below any Monte Carlo error here; it is NaN at the ends).
pub fn inverse_normal_cdf(p: f64) -> f64 {
    if p <= 0.0 {
        f64::NEG_INFINITY
    } else if p >= 1.0 {
        f64::INFINITY
    } else {
        crate::conservative::normal_quantile(p)
    }
}

/// Percentile with linear interpolation between order statistics (NumPy's default), of
/// sorted values; `q` in [0, 1].
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let i = (pos.floor() as usize).min(n - 2);
            let frac = pos - i as f64;
            sorted[i] + (sorted[i + 1] - sorted[i]) * frac
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ziggurat_and_max_of_k_have_the_right_moments() {
        let z = ziggurat();
        assert!(
            z.x[ZIG_LAYERS - 1] > 0.0 && z.x[ZIG_LAYERS - 1] < 0.3,
            "{}",
            z.x[255]
        );
        let mut g = Normals::new(1, 2);
        let n = 400_000;
        let v: Vec<f64> = (0..n).map(|_| g.next()).collect();
        let m = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        let tail = v.iter().filter(|x| x.abs() > ZIG_R).count() as f64 / n as f64;
        assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.01, "{m} {var}");
        // P(|Z| > 3.654) = 2.58e-4
        assert!((tail - 2.58e-4).abs() < 1e-4, "{tail}");
        // E[max of 2 normals] = 1 / sqrt(pi)
        let mx = (0..n).map(|_| g.max_of(2)).sum::<f64>() / n as f64;
        assert!(
            (mx - 1.0 / std::f64::consts::PI.sqrt()).abs() < 0.01,
            "{mx}"
        );
        assert!((inverse_normal_cdf(0.975) - 1.959_963_985).abs() < 1e-8);
        assert!((inverse_normal_cdf(1e-10) + 6.361_340_902).abs() < 1e-7);
        assert_eq!(inverse_normal_cdf(0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile_sorted(&v, 0.5), 2.5);
        assert_eq!(percentile_sorted(&v, 0.0), 1.0);
        assert_eq!(percentile_sorted(&v, 1.0), 4.0);
        assert!((percentile_sorted(&v, 0.25) - 1.75).abs() < 1e-12);
    }
}
