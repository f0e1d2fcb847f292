//! The one parallel runner of `compare`, `check` and `sweep`: independent jobs (whole
//! simulations) on a few threads, results collected by index.
//!
//! Results never depend on the thread count: every job is a deterministic function of
//! its input, the threads only take the next index from a shared counter, and each
//! result goes to its own slot, so the output is in input order whatever finished first.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::run::{RunResult, Simulation};
use crate::scenario::Scenario;

/// The threads `jobs` asks for (0: one per core), at least one and no more than there
/// are items.
pub fn threads_for(jobs: usize, n_items: usize) -> usize {
    let jobs = if jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        jobs
    };
    jobs.clamp(1, n_items.max(1))
}

/// `run` over every item on [`threads_for`]`(jobs, items.len())` threads; the results in
/// the items' order. `done(i)` is called (from a worker thread) after item `i` ran.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    run: impl Fn(&T) -> R + Sync,
    done: &(dyn Fn(usize) + Sync),
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads_for(jobs, items.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = run(item);
                    *slots[i].lock().expect("no thread panicked holding a slot") = Some(result);
                    done(i);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("no thread panicked holding a slot")
                .expect("every item ran")
        })
        .collect()
}

/// Every scenario run to the end on `jobs` threads (0: one per core), in the
/// scenarios' order.
pub fn run_scenarios(scenarios: &[Scenario], jobs: usize) -> Vec<RunResult> {
    map(
        scenarios,
        jobs,
        |scenario| Simulation::new(scenario.clone()).run_full(),
        &|_| {},
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn results_come_in_input_order_whatever_the_thread_count() {
        let items: Vec<u64> = (0..97).collect();
        // Uneven work, so threads finish out of order.
        let work = |&x: &u64| (0..(x % 7) * 10_000).fold(x, |acc, k| acc.wrapping_mul(31).wrapping_add(k));
        let one = map(&items, 1, work, &|_| {});
        for jobs in [0, 2, 3, 8, 500] {
            let calls = AtomicU64::new(0);
            let many = map(&items, jobs, work, &|_| {
                calls.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(many, one, "{jobs} jobs");
            assert_eq!(calls.into_inner(), 97, "done is called once per item");
        }
        assert_eq!(one[5], work(&5));
        assert!(map(&[] as &[u64], 4, work, &|_| {}).is_empty());
    }

    #[test]
    fn threads_are_at_least_one_and_at_most_one_per_item() {
        assert_eq!(threads_for(8, 3), 3);
        assert_eq!(threads_for(2, 10), 2);
        assert_eq!(threads_for(5, 0), 1);
        assert!(threads_for(0, 1000) >= 1);
    }
}
