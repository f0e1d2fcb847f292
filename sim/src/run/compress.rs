//! Time-series compression: the fleet's figures between two events, merged into spans
//! before they reach the timeline.
//!
//! Most events change nothing the timeline sees, so the fleet's look since the last
//! change is held as one span and grows while the look stays the same; stretches over
//! which the sample does not change are added to the timeline as one. The sums are
//! integers, so the timeline and the run-wide time-weighted means (which come from the
//! same sums) are exactly what one addition per event would give. A new sample is made
//! only when the core totals it is made of (or the VM count) changed, found by one
//! memory compare of the raw figures: the common case, an unchanged look, is inlined
//! into the loop; a change goes out of line to [`CompressedTimeline::hold`].

use payperplay_core::Timestamp;

use crate::timeline::{Integrals, Sample, Timeline, TimelineRecorder};

/// The core's totals a [`Sample`] is made of, and the cloud VMs the provider bills
/// (deleting ones included). All `u64`, in order, so comparing two is a memory compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct FleetFigures {
    pub(super) allocated_mib: u64,
    pub(super) queued_demand_mib: u64,
    pub(super) ready_usable_mib: u64,
    pub(super) provisioning_usable_mib: u64,
    pub(super) queued_count: u64,
    pub(super) servers_holding_ram: u64,
    pub(super) n_cloud_provisioning: u64,
    pub(super) n_ready_nodes: u64,
    pub(super) n_cloud_nodes: u64,
    pub(super) vms: u64,
}

/// A span of time over which the sums' inputs did not change.
struct HeldSpan {
    from: Timestamp,
    to: Timestamp,
    sample: Sample,
    /// What the sample was made of, as last seen: while it stays the same, so does the
    /// sample (and it is cheaper to compare than a sample is to make).
    figures: FleetFigures,
}

/// The timeline, fed through a held span.
pub(super) struct CompressedTimeline {
    /// The time series, and through its exact sums the run-wide time-weighted means.
    timeline: TimelineRecorder,
    /// The fleet's look since `held.from`, not yet added to the timeline.
    held: Option<HeldSpan>,
}

impl CompressedTimeline {
    /// A timeline of the measured period: `duration_ms` from `start`.
    pub(super) fn new(start: Timestamp, duration_ms: u64) -> CompressedTimeline {
        CompressedTimeline {
            timeline: TimelineRecorder::new(start, duration_ms),
            held: None,
        }
    }

    /// The fleet looked like `figures` from `from` to `to`. Inlined for the common
    /// case, the look of the held span continuing: the span then only grows.
    #[inline(always)]
    pub(super) fn record(&mut self, from: Timestamp, to: Timestamp, figures: FleetFigures, n_dedicated: u64) {
        match &mut self.held {
            Some(held) if held.to == from && held.figures == figures => held.to = to,
            _ => self.hold(from, to, figures, n_dedicated),
        }
    }

    /// The fleet looked like `figures` from `from` to `to`, and the held span does not
    /// (or ends earlier): its sample decides. The same sample grows the held span, else
    /// the held span goes to the timeline and this one is held. Kept out of line: most
    /// events leave the look alone.
    #[inline(never)]
    fn hold(&mut self, from: Timestamp, to: Timestamp, figures: FleetFigures, n_dedicated: u64) {
        let sample = sample_of(&figures, n_dedicated);
        match &mut self.held {
            // The sample is all the timeline sees: equal samples merge, whatever else moved.
            Some(held) if held.to == from && held.sample == sample => {
                held.to = to;
                held.figures = figures;
            }
            // Overwritten in place (taking it out and putting a new one in costs copies).
            Some(held) => {
                self.timeline.record(held.from, held.to, &held.sample);
                held.from = from;
                held.to = to;
                held.sample = sample;
                held.figures = figures;
            }
            None => {
                self.held = Some(HeldSpan {
                    from,
                    to,
                    sample,
                    figures,
                })
            }
        }
    }

    /// Add the held span to the timeline (at the end of the run, before reading it).
    pub(super) fn flush(&mut self) {
        let Some(held) = self.held.take() else { return };
        self.timeline.record(held.from, held.to, &held.sample);
    }

    /// The exact sums of what reached the timeline (call [`Self::flush`] first).
    pub(super) fn integrals(&self) -> Integrals {
        self.timeline.integrals()
    }

    /// The finished time series (call [`Self::flush`] first).
    pub(super) fn finish(self) -> Timeline {
        self.timeline.finish()
    }
}

/// The timeline's sample of the fleet's figures.
fn sample_of(figures: &FleetFigures, n_dedicated: u64) -> Sample {
    let ready_cloud = figures.n_ready_nodes.saturating_sub(n_dedicated);
    Sample {
        demand_mib: figures.allocated_mib + figures.queued_demand_mib,
        allocated_mib: figures.allocated_mib,
        capacity_mib: figures.ready_usable_mib,
        provisioning_mib: figures.provisioning_usable_mib,
        queue_len: figures.queued_count,
        servers_holding_ram: figures.servers_holding_ram,
        nodes_provisioning: figures.n_cloud_provisioning,
        nodes_ready: figures.n_ready_nodes,
        nodes_draining: figures
            .n_cloud_nodes
            .saturating_sub(figures.n_cloud_provisioning + ready_cloud),
        nodes_deleting: figures.vms.saturating_sub(figures.n_cloud_nodes),
    }
}
