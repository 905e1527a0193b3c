//! The whole load, decided before the first request: for trigger `i`, when it is due,
//! which tenant sends it (Zipf-distributed, so a few tenants are loud and most are quiet)
//! and which workflow it starts. Deciding up front keeps the sending loop free of
//! randomness and makes a run repeatable from its seed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use crate::loadgen::LoadError;
use aiq_loadtests::open_loop::due;

/// Draws tenant indexes `0..n`, index 0 the most frequent, with `P(k) ∝ 1/(k+1)^s`.
pub struct TenantDraw {
    zipf: Zipf<f64>,
    n: usize,
}

impl TenantDraw {
    pub fn new(n: usize, s: f64) -> Result<Self, LoadError> {
        let bad = |reason: String| LoadError::Setting {
            name: "--tenants/--zipf",
            reason,
        };
        if n == 0 {
            return Err(bad("at least one tenant is needed".into()));
        }
        let zipf = Zipf::new(n as f64, s).map_err(|e| bad(format!("Zipf({n}, {s}): {e}")))?;
        Ok(Self { zipf, n })
    }

    pub fn draw(&self, rng: &mut impl Rng) -> usize {
        // Zipf samples 1..=n as floats.
        let k = self.zipf.sample(rng) as usize;
        k.clamp(1, self.n) - 1
    }
}

/// Workflows and their shares of the triggers, e.g. `hello=0.7,ten-steps=0.3`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    names: Vec<String>,
    /// Cumulative shares, normalised so that the last is 1.
    cumulative: Vec<f64>,
}

impl Mix {
    pub fn parse(spec: &str) -> Result<Self, LoadError> {
        let bad = |reason: String| LoadError::Setting {
            name: "--mix",
            reason,
        };
        let mut names = Vec::new();
        let mut weights = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => {
                    let w: f64 = w
                        .trim()
                        .parse()
                        .map_err(|e| bad(format!("{part:?}: weight: {e}")))?;
                    (n.trim(), w)
                }
                None => (part, 1.0),
            };
            if name.is_empty() || !weight.is_finite() || weight <= 0.0 {
                return Err(bad(format!(
                    "{part:?}: want name=weight with a positive weight"
                )));
            }
            if names.iter().any(|n| n == name) {
                return Err(bad(format!("{name:?} is listed twice")));
            }
            names.push(name.to_owned());
            weights.push(weight);
        }
        if names.is_empty() {
            return Err(bad("names no workflow".into()));
        }
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Ok(Self { names, cumulative })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The share of workflow `i`, between 0 and 1.
    pub fn share(&self, i: usize) -> f64 {
        let before = if i == 0 { 0.0 } else { self.cumulative[i - 1] };
        self.cumulative.get(i).map_or(0.0, |c| c - before)
    }

    /// The workflow for a uniform draw `u` in `[0, 1)`.
    pub fn pick(&self, u: f64) -> usize {
        self.cumulative
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.names.len() - 1)
    }
}

/// One trigger of the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    pub i: u64,
    /// After the start.
    pub due: Duration,
    pub tenant: usize,
    pub workflow: usize,
}

/// `count` triggers at `rate` per second, drawn from `seed`.
pub fn plan(count: u64, rate: f64, tenants: &TenantDraw, mix: &Mix, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|i| Planned {
            i,
            due: due(i, rate),
            tenant: tenants.draw(&mut rng),
            workflow: mix.pick(rng.random::<f64>()),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn triggers_are_due_at_i_over_rate() {
        let t = TenantDraw::new(3, 1.1).unwrap();
        let m = Mix::parse("a").unwrap();
        let p = plan(5, 4.0, &t, &m, 7);
        let dues: Vec<_> = p.iter().map(|x| x.due.as_millis()).collect();
        assert_eq!(dues, vec![0, 250, 500, 750, 1000]);
        assert_eq!(
            p.iter().map(|x| x.i).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert!(p.iter().all(|x| x.tenant < 3 && x.workflow == 0));
    }

    #[test]
    fn a_plan_is_repeatable_from_its_seed() {
        let t = TenantDraw::new(50, 1.1).unwrap();
        let m = Mix::parse("hello=0.7,ten-steps=0.3").unwrap();
        assert_eq!(plan(1000, 100.0, &t, &m, 42), plan(1000, 100.0, &t, &m, 42));
        assert_ne!(plan(1000, 100.0, &t, &m, 42), plan(1000, 100.0, &t, &m, 43));
    }

    #[test]
    fn zipf_tenants_are_ordered_by_frequency() {
        let n = 10;
        let t = TenantDraw::new(n, 1.1).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = vec![0u64; n];
        let draws = 200_000;
        for _ in 0..draws {
            counts[t.draw(&mut rng)] += 1;
        }
        for w in counts.windows(2) {
            assert!(w[0] > w[1], "not decreasing: {counts:?}");
        }
        // P(1) = 1 / H(10, 1.1) ≈ 0.384.
        let h: f64 = (1..=n).map(|k| (k as f64).powf(-1.1)).sum();
        let p0 = counts[0] as f64 / draws as f64;
        assert!((p0 - 1.0 / h).abs() < 0.01, "p0 {p0} vs {}", 1.0 / h);
    }

    #[test]
    fn the_mix_follows_its_weights() {
        let m = Mix::parse("hello=0.7, ten-steps=0.3").unwrap();
        assert_eq!(m.names(), ["hello", "ten-steps"]);
        assert!((m.share(0) - 0.7).abs() < 1e-9 && (m.share(1) - 0.3).abs() < 1e-9);
        assert_eq!(m.pick(0.0), 0);
        assert_eq!(m.pick(0.69), 0);
        assert_eq!(m.pick(0.71), 1);
        assert_eq!(m.pick(0.999_999), 1);
        // Weights need not sum to one.
        let m = Mix::parse("a=2,b=6").unwrap();
        assert!((m.share(0) - 0.25).abs() < 1e-9);
        let t = TenantDraw::new(1, 1.1).unwrap();
        let p = plan(10_000, 1000.0, &t, &m, 3);
        let b = p.iter().filter(|x| x.workflow == 1).count();
        assert!((7_300..7_700).contains(&b), "{b}");
        assert!(p.iter().all(|x| x.tenant == 0));
    }

    #[test]
    fn bad_mixes_and_tenant_counts_are_refused() {
        for bad in ["", "a=0", "a=-1", "a=x", "a,a", "=1"] {
            assert!(Mix::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TenantDraw::new(0, 1.1).is_err());
        assert!(TenantDraw::new(5, -1.0).is_err());
    }
}
