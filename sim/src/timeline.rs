//! Time series of a run, for plots: demand against capacity, queue length and nodes by
//! state, as time-weighted means (and maxima) over fixed buckets.
//!
//! The bucket width is chosen from the run's length so a run never holds more than
//! `MAX_BUCKETS` buckets: memory stays flat however long the simulated time.

use serde::{Deserialize, Serialize};

use payperplay_core::{MS_PER_MINUTE, Timestamp};

pub const MAX_BUCKETS: u64 = 1000;

/// One sample of the fleet, taken between events (the state holds until the next one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// RAM held or reserved by servers plus RAM of queued requests.
    pub demand_mib: u64,
    /// RAM held or reserved by servers.
    pub allocated_mib: u64,
    /// Usable RAM on ready nodes.
    pub capacity_mib: u64,
    /// Usable RAM on nodes still provisioning.
    pub provisioning_mib: u64,
    pub queue_len: u64,
    pub servers_holding_ram: u64,
    pub nodes_provisioning: u64,
    pub nodes_ready: u64,
    pub nodes_draining: u64,
    pub nodes_deleting: u64,
}

/// Time-weighted means over one bucket, plus the maxima that matter for plots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Bucket start, in hours since the start of the measured period.
    pub hour: f64,
    pub demand_gb: f64,
    pub demand_gb_max: f64,
    pub allocated_gb: f64,
    pub capacity_gb: f64,
    pub provisioning_gb: f64,
    pub queue_len: f64,
    pub queue_len_max: u64,
    pub servers_holding_ram: f64,
    pub nodes_provisioning: f64,
    pub nodes_ready: f64,
    pub nodes_draining: f64,
    pub nodes_deleting: f64,
}

#[derive(Debug, Clone, Default)]
struct Acc {
    demand: u128,
    demand_max: u64,
    allocated: u128,
    capacity: u128,
    provisioning: u128,
    queue: u128,
    queue_max: u64,
    holding: u128,
    n_prov: u128,
    n_ready: u128,
    n_draining: u128,
    n_deleting: u128,
    ms: u64,
}

impl Acc {
    fn add(&mut self, s: &Sample, dt: u64) {
        let d = dt as u128;
        self.demand += s.demand_mib as u128 * d;
        self.demand_max = self.demand_max.max(s.demand_mib);
        self.allocated += s.allocated_mib as u128 * d;
        self.capacity += s.capacity_mib as u128 * d;
        self.provisioning += s.provisioning_mib as u128 * d;
        self.queue += s.queue_len as u128 * d;
        self.queue_max = self.queue_max.max(s.queue_len);
        self.holding += s.servers_holding_ram as u128 * d;
        self.n_prov += s.nodes_provisioning as u128 * d;
        self.n_ready += s.nodes_ready as u128 * d;
        self.n_draining += s.nodes_draining as u128 * d;
        self.n_deleting += s.nodes_deleting as u128 * d;
        self.ms += dt;
    }

    /// Add another accumulator's sums (its maxima are not needed by anyone).
    fn add_sums(&mut self, other: &Acc) {
        self.demand += other.demand;
        self.allocated += other.allocated;
        self.capacity += other.capacity;
        self.provisioning += other.provisioning;
        self.queue += other.queue;
        self.holding += other.holding;
        self.n_prov += other.n_prov;
        self.n_ready += other.n_ready;
        self.n_draining += other.n_draining;
        self.n_deleting += other.n_deleting;
        self.ms += other.ms;
    }

    fn finish(&self, hour: f64) -> Bucket {
        let ms = self.ms.max(1) as f64;
        let gb = |v: u128| round3(v as f64 / ms / 1024.0);
        let mean = |v: u128| round3(v as f64 / ms);
        Bucket {
            hour: round3(hour),
            demand_gb: gb(self.demand),
            demand_gb_max: round3(self.demand_max as f64 / 1024.0),
            allocated_gb: gb(self.allocated),
            capacity_gb: gb(self.capacity),
            provisioning_gb: gb(self.provisioning),
            queue_len: mean(self.queue),
            queue_len_max: self.queue_max,
            servers_holding_ram: mean(self.holding),
            nodes_provisioning: mean(self.n_prov),
            nodes_ready: mean(self.n_ready),
            nodes_draining: mean(self.n_draining),
            nodes_deleting: mean(self.n_deleting),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Accumulates samples into buckets of `bucket_ms` from `start`.
#[derive(Debug, Clone)]
pub struct TimelineRecorder {
    start: Timestamp,
    bucket_ms: u64,
    current: Acc,
    current_idx: u64,
    buckets: Vec<Bucket>,
    /// The exact sums of the closed buckets (for [`TimelineRecorder::integrals`]).
    closed: Acc,
}

/// Exact time-weighted sums over everything recorded, in units times milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Integrals {
    /// The time recorded.
    pub ms: u64,
    pub queue_len_ms: u128,
    pub allocated_mib_ms: u128,
    pub capacity_mib_ms: u128,
    pub servers_holding_ram_ms: u128,
}

/// A finished time series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub bucket_minutes: f64,
    pub buckets: Vec<Bucket>,
}

impl TimelineRecorder {
    /// Buckets of whole minutes, at most `MAX_BUCKETS` over `duration_ms`.
    pub fn new(start: Timestamp, duration_ms: u64) -> TimelineRecorder {
        let bucket_ms = duration_ms.div_ceil(MAX_BUCKETS).div_ceil(MS_PER_MINUTE).max(1) * MS_PER_MINUTE;
        TimelineRecorder {
            start,
            bucket_ms,
            current: Acc::default(),
            current_idx: 0,
            buckets: Vec::new(),
            closed: Acc::default(),
        }
    }

    pub fn bucket_ms(&self) -> u64 {
        self.bucket_ms
    }

    /// The fleet looked like `sample` from `from` to `to`.
    pub fn record(&mut self, from: Timestamp, to: Timestamp, sample: &Sample) {
        if to <= from || to <= self.start {
            return;
        }
        let mut t = from.max(self.start).ms() - self.start.ms();
        let end = to.ms() - self.start.ms();
        // Most calls fall inside the current bucket: no division, one add.
        let current_start = self.current_idx * self.bucket_ms;
        if t >= current_start && end <= current_start + self.bucket_ms {
            self.current.add(sample, end - t);
            return;
        }
        while t < end {
            let idx = t / self.bucket_ms;
            if idx != self.current_idx {
                self.close_until(idx);
            }
            let bucket_end = (idx + 1) * self.bucket_ms;
            let upto = end.min(bucket_end);
            self.current.add(sample, upto - t);
            t = upto;
        }
    }

    fn close_until(&mut self, idx: u64) {
        while self.current_idx < idx {
            let hour = (self.current_idx * self.bucket_ms) as f64 / payperplay_core::MS_PER_HOUR as f64;
            self.buckets.push(self.current.finish(hour));
            self.closed.add_sums(&self.current);
            self.current = Acc::default();
            self.current_idx += 1;
        }
    }

    /// The sums over everything recorded so far: the buckets add up exactly (integer
    /// sums), so whoever needs run-wide means reads them here rather than keeping sums
    /// of their own on every record.
    pub fn integrals(&self) -> Integrals {
        let mut all = self.closed.clone();
        all.add_sums(&self.current);
        Integrals {
            ms: all.ms,
            queue_len_ms: all.queue,
            allocated_mib_ms: all.allocated,
            capacity_mib_ms: all.capacity,
            servers_holding_ram_ms: all.holding,
        }
    }

    pub fn finish(mut self) -> Timeline {
        if self.current.ms > 0 {
            self.close_until(self.current_idx + 1);
        }
        Timeline {
            bucket_minutes: self.bucket_ms as f64 / MS_PER_MINUTE as f64,
            buckets: self.buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_split_across_buckets_by_time() {
        let start = Timestamp(0);
        let mut rec = TimelineRecorder::new(start, 1000 * MS_PER_MINUTE);
        assert_eq!(rec.bucket_ms(), MS_PER_MINUTE);
        let a = Sample {
            queue_len: 4,
            demand_mib: 2048,
            ..Sample::default()
        };
        let b = Sample {
            queue_len: 0,
            ..Sample::default()
        };
        // 30 s of a, then 90 s of b: the first bucket's mean queue is 2.
        rec.record(Timestamp(0), Timestamp(30_000), &a);
        rec.record(Timestamp(30_000), Timestamp(120_000), &b);
        let timeline = rec.finish();
        assert_eq!(timeline.buckets.len(), 2);
        assert_eq!(timeline.buckets[0].queue_len, 2.0);
        assert_eq!(timeline.buckets[0].queue_len_max, 4);
        assert_eq!(timeline.buckets[0].demand_gb, 1.0);
        assert_eq!(timeline.buckets[1].queue_len, 0.0);
        assert_eq!(timeline.buckets[1].hour, round3(1.0 / 60.0));
    }

    #[test]
    fn integrals_add_up_every_span_across_buckets() {
        let mut rec = TimelineRecorder::new(Timestamp(0), 1000 * MS_PER_MINUTE);
        let a = Sample {
            queue_len: 3,
            allocated_mib: 1024,
            capacity_mib: 4096,
            servers_holding_ram: 2,
            ..Sample::default()
        };
        let b = Sample {
            queue_len: 1,
            allocated_mib: 2048,
            capacity_mib: 8192,
            servers_holding_ram: 5,
            ..Sample::default()
        };
        rec.record(Timestamp(10_000), Timestamp(150_000), &a);
        rec.record(Timestamp(150_000), Timestamp(400_000), &b);
        let expected = Integrals {
            ms: 140_000 + 250_000,
            queue_len_ms: 3 * 140_000 + 250_000,
            allocated_mib_ms: 1024 * 140_000 + 2048 * 250_000,
            capacity_mib_ms: 4096 * 140_000 + 8192 * 250_000,
            servers_holding_ram_ms: 2 * 140_000 + 5 * 250_000,
        };
        assert_eq!(rec.integrals(), expected);
    }

    #[test]
    fn long_runs_keep_at_most_max_buckets() {
        let rec = TimelineRecorder::new(Timestamp(0), 365 * payperplay_core::MS_PER_DAY);
        assert!(365 * payperplay_core::MS_PER_DAY / rec.bucket_ms() <= MAX_BUCKETS);
    }
}
