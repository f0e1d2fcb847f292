//! The shell's one clock. Everything that needs "now" (the core, business timestamps
//! in SQL, token expiry) gets it from here, so tests can drive time by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use payperplay_core::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// Wall time. The only place in the shell that reads the system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place prod reads wall time
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("system clock is after 1970");
        Timestamp(since_epoch.as_millis() as u64)
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(start.0)),
        }
    }

    pub fn advance_ms(&self, duration_ms: u64) {
        self.now_ms.fetch_add(duration_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now_ms.load(Ordering::SeqCst))
    }
}

/// Milliseconds as stored in BIGINT columns.
pub fn to_db(at: Timestamp) -> i64 {
    i64::try_from(at.0).expect("timestamp fits in i64")
}

/// A monotonic stopwatch for durations that are only measured, never decided on
/// (request latency metrics, replay time in logs). The one place prod reads a
/// monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Instant);

impl Stopwatch {
    #[allow(clippy::disallowed_methods)]
    pub fn start() -> Self {
        Stopwatch(std::time::Instant::now())
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.0.elapsed()
    }
}
