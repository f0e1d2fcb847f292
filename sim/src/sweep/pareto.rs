//! Pareto maths: which configurations no other beats on every objective (cost, p95
//! start wait, SLO misses, all minimized), and the recommended one.

use std::collections::BTreeMap;

use super::Configuration;
use crate::outcome::Outcome;

/// The objectives of the Pareto front, all minimized.
pub const OBJECTIVES: [&str; 3] = ["cost_total_eur", "start_wait_p95_s", "slo_misses"];

/// True when `a` is at least as good as `b` everywhere and better somewhere (minimizing).
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
}

/// Indices (ascending) of the points no other point dominates. Equal points are all kept.
pub fn pareto_front(points: &[Vec<f64>]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| !points.iter().any(|other| dominates(other, &points[i])))
        .collect()
}

/// What a sweep found.
#[derive(Debug, Clone)]
pub struct SweepResult {
    pub configurations: Vec<Configuration>,
    pub outcomes: Vec<Outcome>,
    pub metrics: Vec<BTreeMap<String, f64>>,
    /// Failed `[expect]` bounds per configuration, as text.
    pub failures: Vec<Vec<String>>,
    pub front: Vec<usize>,
    pub recommended: Option<usize>,
}

impl SweepResult {
    pub fn new(configurations: Vec<Configuration>, outcomes: Vec<Outcome>) -> SweepResult {
        let metrics: Vec<BTreeMap<String, f64>> = outcomes.iter().map(Outcome::metrics).collect();
        let failures: Vec<Vec<String>> = configurations
            .iter()
            .zip(&outcomes)
            .map(|(c, o)| o.check(&c.scenario.expect).iter().map(|f| f.to_string()).collect())
            .collect();
        let points: Vec<Vec<f64>> = metrics.iter().map(objectives).collect();
        let front = pareto_front(&points);
        let recommended = front
            .iter()
            .copied()
            .filter(|&i| failures[i].is_empty())
            .min_by(|&a, &b| {
                points[a]
                    .iter()
                    .zip(&points[b])
                    .map(|(x, y)| x.total_cmp(y))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(&b))
            });
        SweepResult {
            configurations,
            outcomes,
            metrics,
            failures,
            front,
            recommended,
        }
    }

    pub(super) fn on_front(&self, i: usize) -> bool {
        self.front.binary_search(&i).is_ok()
    }

    /// The front, cheapest first.
    pub(super) fn front_by_cost(&self) -> Vec<usize> {
        let mut front = self.front.clone();
        front.sort_by(|&a, &b| {
            let (pa, pb) = (objectives(&self.metrics[a]), objectives(&self.metrics[b]));
            pa.iter()
                .zip(&pb)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        front
    }
}

/// The objectives of one configuration's metrics, in [`OBJECTIVES`] order (a missing one
/// counts as infinitely bad).
pub(super) fn objectives(metrics: &BTreeMap<String, f64>) -> Vec<f64> {
    OBJECTIVES
        .iter()
        .map(|k| metrics.get(*k).copied().unwrap_or(f64::INFINITY))
        .collect()
}
