//! Distributions a scenario can ask for, sampled from a seeded ChaCha stream.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal, OpenClosed01, Weibull};
use serde::{Deserialize, Serialize};

/// A distribution of non-negative values; the unit comes from the field's name
/// (`session_minutes`, `boot_seconds`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    Const {
        value: f64,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    Exponential {
        mean: f64,
    },
    /// Weibull with `shape` k and `scale` λ (mean λ·Γ(1 + 1/k)).
    Weibull {
        shape: f64,
        scale: f64,
    },
    /// Lognormal given by its median and the σ of the underlying normal.
    Lognormal {
        median: f64,
        sigma: f64,
    },
    /// Draw uniformly from recorded samples.
    Empirical {
        samples: Vec<f64>,
    },
}

impl Dist {
    /// Why the parameters are unusable, if they are.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a positive number, not {v}"))
            }
        };
        match self {
            Dist::Const { value } if !(value.is_finite() && *value >= 0.0) => {
                Err(format!("value must be a non-negative number, not {value}"))
            }
            Dist::Const { .. } => Ok(()),
            Dist::Uniform { min, max } => {
                if min.is_finite() && max.is_finite() && 0.0 <= *min && min <= max {
                    Ok(())
                } else {
                    Err(format!("uniform needs 0 <= min <= max, got min = {min}, max = {max}"))
                }
            }
            Dist::Exponential { mean } => positive("mean", *mean),
            Dist::Weibull { shape, scale } => positive("shape", *shape).and(positive("scale", *scale)),
            Dist::Lognormal { median, sigma } => positive("median", *median).and(positive("sigma", *sigma)),
            Dist::Empirical { samples } => {
                if samples.is_empty() {
                    Err("empirical needs at least one sample".to_string())
                } else if let Some(bad) = samples.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                    Err(format!("samples must be non-negative numbers, found {bad}"))
                } else {
                    Ok(())
                }
            }
        }
    }

    pub fn mean(&self) -> f64 {
        match self {
            Dist::Const { value } => *value,
            Dist::Uniform { min, max } => (min + max) / 2.0,
            Dist::Exponential { mean } => *mean,
            Dist::Weibull { shape, scale } => scale * gamma(1.0 + 1.0 / shape),
            Dist::Lognormal { median, sigma } => median * (sigma * sigma / 2.0).exp(),
            Dist::Empirical { samples } => samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }

    pub fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            Dist::Const { value } => *value,
            Dist::Uniform { min, max } => {
                if min == max {
                    *min
                } else {
                    rng.random_range(*min..*max)
                }
            }
            Dist::Exponential { mean } => Exp::new(1.0 / mean).expect("validated").sample(rng),
            // Shape 1/2 (the default session length, heavy-tailed) gives exponent 2:
            // `x * x` is the correctly rounded square, what `powf(x, 2.0)` computes with a
            // library call and a half-ULP error bound, from the same draw as rand_distr.
            Dist::Weibull { shape, scale } if 1.0 / *shape == 2.0 => {
                let u: f64 = rng.sample(OpenClosed01);
                let x = -u.ln();
                scale * (x * x)
            }
            Dist::Weibull { shape, scale } => Weibull::new(*scale, *shape).expect("validated").sample(rng),
            Dist::Lognormal { median, sigma } => LogNormal::new(median.ln(), *sigma).expect("validated").sample(rng),
            Dist::Empirical { samples } => samples[rng.random_range(0..samples.len())],
        }
    }

    /// A sample scaled to whole milliseconds (`unit_ms` per unit).
    #[inline]
    pub fn sample_ms(&self, rng: &mut ChaCha8Rng, unit_ms: f64) -> u64 {
        // Constant timings (the defaults of container starts and stops) are most of the
        // delays drawn per event: no call for them.
        let value = match self {
            Dist::Const { value } => *value,
            _ => self.sample(rng),
        };
        round_u64(value * unit_ms)
    }

    /// A sample of a distribution given in seconds, in milliseconds.
    pub fn seconds_as_ms(&self, rng: &mut ChaCha8Rng) -> u64 {
        self.sample_ms(rng, 1000.0)
    }
}

/// `x.round() as u64`, bit for bit, without calling `round`.
///
/// Built for baseline x86-64 (no SSE4.1 `roundsd`), `f64::round` is a software
/// routine, and the simulator rounds a few times per event (arrival gaps, delays,
/// player counts). For `0 <= x < 2^63` the truncation is one conversion and the
/// fraction `x - whole` is exact (a float's fractional part is representable), so
/// "up when the fraction is at least one half" is exactly round-half-away-from-zero.
/// Everything else (negatives, NaN, huge values) takes the library path.
#[inline]
pub fn round_u64(x: f64) -> u64 {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if (0.0..TWO_POW_63).contains(&x) {
        let whole = x as i64;
        let up = x - whole as f64 >= 0.5;
        (whole + i64::from(up)) as u64
    } else {
        x.round() as u64
    }
}

/// `x.round() as u32` (saturating), bit for bit: see [`round_u64`].
#[inline]
pub fn round_u32(x: f64) -> u32 {
    round_u64(x).min(u64::from(u32::MAX)) as u32
}

/// Lanczos approximation of Γ(x) for x > 0 (for Weibull means in reports).
fn gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma(1.0 - x))
    } else {
        let x = x - 1.0;
        let t = x + G + 0.5;
        let sum = C
            .iter()
            .enumerate()
            .skip(1)
            .fold(C[0], |acc, (i, c)| acc + c / (x + i as f64));
        (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sample_means_match_the_analytic_means() {
        let dists = [
            Dist::Exponential { mean: 30.0 },
            Dist::Weibull {
                shape: 0.5,
                scale: 20.0,
            },
            Dist::Lognormal {
                median: 60.0,
                sigma: 0.5,
            },
            Dist::Uniform { min: 30.0, max: 60.0 },
        ];
        for dist in dists {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let n = 400_000;
            let mean = (0..n).map(|_| dist.sample(&mut rng)).sum::<f64>() / n as f64;
            let rel = (mean - dist.mean()).abs() / dist.mean();
            assert!(rel < 0.02, "{dist:?}: sample mean {mean} vs {}", dist.mean());
        }
        assert!((gamma(5.0) - 24.0).abs() < 1e-9);
    }

    #[test]
    fn weibull_shape_one_half_draws_what_rand_distr_draws() {
        // The squared fast path against the library's `powf(x, 2.0)`, draw for draw.
        let dist = Dist::Weibull {
            shape: 0.5,
            scale: 30.0,
        };
        let library = Weibull::new(30.0, 0.5).expect("valid");
        let (mut ours, mut theirs) = (ChaCha8Rng::seed_from_u64(7), ChaCha8Rng::seed_from_u64(7));
        for _ in 0..1_000_000 {
            let (a, b): (f64, f64) = (dist.sample(&mut ours), library.sample(&mut theirs));
            assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
        }
    }

    #[test]
    fn bad_parameters_are_explained() {
        assert!(
            Dist::Uniform { min: 5.0, max: 1.0 }
                .validate()
                .unwrap_err()
                .contains("min <= max")
        );
        assert!(
            Dist::Weibull { shape: 0.0, scale: 1.0 }
                .validate()
                .unwrap_err()
                .contains("shape")
        );
        assert!(Dist::Empirical { samples: vec![] }.validate().is_err());
    }

    #[test]
    fn integer_rounding_matches_the_library_round() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            1.5,
            2.5,
            0.499_999_999_999_999_94,
            -0.4,
            -0.5,
            -0.6,
            -7.5,
            4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            9_007_199_254_740_993.0,
            9_223_372_036_854_774_784.0,
            9_223_372_036_854_775_808.0,
            1.8e19,
            1e30,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            4_294_967_295.4,
            4_294_967_295.5,
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..200_000 {
            let scale = 10f64.powi(rng.random_range(-3..19));
            values.push(rng.random::<f64>() * scale);
            values.push(f64::from_bits(rng.random::<u64>()));
        }
        for x in values {
            assert_eq!(round_u64(x), x.round() as u64, "{x:e}");
            assert_eq!(round_u32(x), x.round() as u32, "{x:e}");
        }
    }
}
