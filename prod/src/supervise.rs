//! Supervised background tasks: a task that panics or fails is logged and started
//! again with backoff; a task that returns `Ok` (shutdown) is not restarted.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

const BACKOFF_MS_MIN: u64 = 100;
const BACKOFF_MS_MAX: u64 = 30_000;
/// A task that ran this long before failing restarts with the smallest backoff.
const HEALTHY_RUN_MS: u64 = 60_000;

/// Runs `make()` as a task until it returns `Ok` or shutdown is signalled.
pub async fn supervise<F, Fut, E>(name: &'static str, mut shutdown: watch::Receiver<bool>, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut backoff_ms = BACKOFF_MS_MIN;
    loop {
        let started = crate::clock::Stopwatch::start();
        let outcome = tokio::spawn(make()).await;
        match outcome {
            Ok(Ok(())) => {
                tracing::info!(task = name, "task finished");
                return;
            }
            Ok(Err(error)) => {
                tracing::error!(task = name, %error, "task failed, restarting");
            }
            Err(join_error) if join_error.is_panic() => {
                tracing::error!(task = name, "task panicked, restarting");
            }
            Err(_) => {
                tracing::warn!(task = name, "task cancelled");
                return;
            }
        }
        metrics::counter!("payperplay_task_restarts_total", "task" => name).increment(1);
        if *shutdown.borrow() {
            return;
        }
        if started.elapsed() >= Duration::from_millis(HEALTHY_RUN_MS) {
            backoff_ms = BACKOFF_MS_MIN;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
        }
        backoff_ms = (backoff_ms * 2).min(BACKOFF_MS_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_panicking_task_is_restarted_until_it_finishes() {
        let (_tx, rx) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        supervise("flaky", rx, move || {
            let counter = counter.clone();
            async move {
                let run = counter.fetch_add(1, Ordering::SeqCst) + 1;
                if run == 1 {
                    panic!("first run panics");
                }
                if run == 2 {
                    return Err("second run fails".to_string());
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn shutdown_stops_restarts() {
        let (tx, rx) = watch::channel(false);
        tx.send(true).unwrap();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        supervise("failing", rx, move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("always fails")
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
