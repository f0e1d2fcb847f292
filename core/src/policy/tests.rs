//! The policy components against a fake fleet (`testkit::FakeFleet`).

use super::*;
use crate::model::NodeState;
use crate::testkit::FakeFleet as Fleet;
use crate::types::{MS_PER_HOUR, MS_PER_MINUTE, NodeId, Timestamp};

#[test]
fn first_fit_decreasing_counts_new_bins() {
    let mut bins = vec![1, 2, 3];
    assert_eq!(bins_needed([4096, 4096, 2048], [], 7168, &mut bins), 2);
    assert_eq!(bins, [1024, 3072], "scratch cleared, then two new bins");
    assert_eq!(bins_needed([4096, 2048], [7168], 7168, &mut bins), 0);
    assert_eq!(bins_needed([], [], 7168, &mut bins), 0);
    // A request larger than a bin is left for a larger type, not counted here.
    assert_eq!(bins_needed([16384], [], 7168, &mut bins), 0);
}

const GB: u64 = 1024;
/// A Monday, 00:00 UTC.
const T0: Timestamp = Timestamp(4 * crate::types::MS_PER_DAY + 52 * 7 * crate::types::MS_PER_DAY);

fn policy(config: PolicyConfig, fleet: &Fleet) -> CompositePolicy {
    CompositePolicy::new(&config, &fleet.catalog)
}

#[test]
fn spare_pool_keeps_a_buffer_in_gb_or_percent_clamped() {
    let spare = SpareConfig {
        buffer_mib: 0,
        buffer_pct: 20,
        min_mib: 4096,
        max_mib: 64 * 1024,
    };
    assert_eq!(
        spare.target_mib(80 * GB),
        100 * GB,
        "80 GB used at 20% headroom: 100 GB"
    );
    assert_eq!(spare.target_mib(0), 4 * GB, "at least min_gb");
    assert_eq!(spare.target_mib(1000 * GB), 1064 * GB, "at most max_gb");
    let absolute = SpareConfig {
        buffer_mib: 16 * 1024,
        ..SpareConfig::default()
    };
    assert_eq!(absolute.target_mib(10 * GB), 26 * GB);

    // With nothing running, a 16 GB buffer needs two 15 GB VMs; one more holds it.
    let mut fleet = Fleet::new();
    let config = PolicyConfig {
        spare: Some(absolute),
        ..PolicyConfig::default()
    };
    let mut p = policy(config.clone(), &fleet);
    assert_eq!(fleet.evaluate(&mut p, T0, Trigger::Tick).provision.len(), 2);
    fleet.vm(T0, 0, NodeState::Ready);
    fleet.vm(T0, 0, NodeState::Provisioning);
    let decision = fleet.evaluate(&mut p, T0.plus_ms(MS_PER_HOUR), Trigger::Tick);
    assert_eq!(
        decision,
        ScalingDecision::default(),
        "two VMs hold the buffer, none may go"
    );
    // Three empty VMs: one is surplus and goes after empty_after.
    fleet.vm(T0, 0, NodeState::Ready);
    let decision = fleet.evaluate(&mut p, T0.plus_ms(MS_PER_HOUR), Trigger::Tick);
    assert_eq!(decision.delete.len(), 1);
    assert!(decision.provision.is_empty());
}

#[test]
fn predictive_provisions_ahead_and_never_scales_in_on_a_forecast_alone() {
    let mut fleet = Fleet::new();
    let config = PolicyConfig {
        predictive: Some(PredictiveConfig::default()),
        ..PolicyConfig::default()
    };
    let mut p = policy(config, &fleet);
    // Day 0: 40 GB used from 20:00 to 21:00 on three VMs, little otherwise.
    let ids: Vec<NodeId> = (0..3).map(|_| fleet.vm(T0, 1, NodeState::Ready)).collect();
    for minute in (0..24 * 60).step_by(10) {
        let gb = if (20 * 60..21 * 60).contains(&minute) { 14 } else { 1 };
        for id in &ids {
            fleet.nodes.get_mut(id).expect("exists").allocated_mib = gb * 1024;
        }
        p.evaluate_as(&fleet, T0.plus_ms(minute * MS_PER_MINUTE));
    }
    // Day 1, 19:56: demand is low, but the peak is within the look-ahead (2 m + 3 m).
    for id in &ids {
        fleet.nodes.get_mut(id).expect("exists").allocated_mib = 1024;
    }
    let day1 = T0.plus_ms(crate::types::MS_PER_DAY);
    let early = fleet.evaluate(
        &mut p,
        day1.plus_ms(19 * MS_PER_HOUR + 50 * MS_PER_MINUTE),
        Trigger::Tick,
    );
    assert!(early.provision.is_empty(), "20:00 is beyond the look-ahead at 19:50");
    let decision = fleet.evaluate(
        &mut p,
        day1.plus_ms(19 * MS_PER_HOUR + 56 * MS_PER_MINUTE),
        Trigger::Tick,
    );
    assert!(
        decision.provision.is_empty(),
        "three VMs (45 GB) already cover the 42 GB forecast"
    );
    // An empty fourth VM is not needed by the forecast: it may go. A third one is.
    let spare_vm = fleet.vm(T0, 0, NodeState::Ready);
    let decision = fleet.evaluate(
        &mut p,
        day1.plus_ms(19 * MS_PER_HOUR + 57 * MS_PER_MINUTE),
        Trigger::Tick,
    );
    assert_eq!(decision.delete, vec![spare_vm]);
    fleet.nodes.remove(&spare_vm);
    for id in &ids[1..] {
        let node = fleet.nodes.get_mut(id).expect("exists");
        node.allocated_mib = 0;
        node.n_servers = 0;
        node.empty_since = Some(T0);
    }
    let decision = fleet.evaluate(
        &mut p,
        day1.plus_ms(19 * MS_PER_HOUR + 58 * MS_PER_MINUTE),
        Trigger::Tick,
    );
    assert!(
        decision.delete.is_empty(),
        "the forecast keeps VMs it says will be needed"
    );
    // Removing two VMs' demand entirely: the forecast orders nothing extra either.
    assert!(decision.provision.is_empty());
    // With less capacity than the forecast, it orders ahead.
    fleet.nodes.remove(&ids[2]);
    let decision = fleet.evaluate(
        &mut p,
        day1.plus_ms(19 * MS_PER_HOUR + 58 * MS_PER_MINUTE),
        Trigger::Tick,
    );
    assert_eq!(decision.provision.len(), 1, "42 GB forecast, 30 GB there: one more VM");
}

impl CompositePolicy {
    fn evaluate_as(&mut self, fleet: &Fleet, now: Timestamp) {
        fleet.evaluate(self, now, Trigger::Tick);
    }
}

#[test]
fn scheduled_windows_set_a_minimum() {
    let mut fleet = Fleet::new();
    let window = |from: &str, to: &str, gb: u32, nodes: u32| ScheduleWindow {
        days: vec![Weekday::Mon],
        from: crate::policy::scheduled::hh_mm::parse(from).expect("time"),
        to: crate::policy::scheduled::hh_mm::parse(to).expect("time"),
        min_mib: gb * 1024,
        min_nodes: nodes,
    };
    let config = PolicyConfig {
        scheduled: Some(ScheduledConfig {
            windows: vec![window("18:00", "22:00", 40, 0), window("12:00", "13:00", 0, 4)],
        }),
        ..PolicyConfig::default()
    };
    let mut p = policy(config, &fleet);
    let at = |h: u64| T0.plus_ms(h * MS_PER_HOUR);
    assert!(fleet.evaluate(&mut p, at(10), Trigger::Tick).provision.is_empty());
    assert_eq!(fleet.evaluate(&mut p, at(12), Trigger::Tick).provision.len(), 4);
    assert_eq!(
        fleet.evaluate(&mut p, at(19), Trigger::Tick).provision.len(),
        3,
        "40 GB: 3 × 15 GB"
    );
    for _ in 0..3 {
        fleet.vm(at(18), 0, NodeState::Ready);
    }
    let decision = fleet.evaluate(&mut p, at(21), Trigger::Tick);
    assert!(decision.delete.is_empty() && decision.provision.is_empty());
    let decision = fleet.evaluate(&mut p, at(23), Trigger::Tick);
    assert_eq!(decision.delete.len(), 3, "after the window the empty VMs go");
}

#[test]
fn billing_aware_scale_down_waits_for_the_end_of_the_paid_hour() {
    let mut fleet = Fleet::new();
    let config = PolicyConfig {
        scale_down: Some(ScaleDownConfig {
            rule: ScaleDownRule::BillingHour,
            billing_margin_ms: 5 * MS_PER_MINUTE,
            ..ScaleDownConfig::default()
        }),
        ..PolicyConfig::default()
    };
    let mut p = policy(config, &fleet);
    let vm = fleet.vm(T0, 0, NodeState::Ready);
    assert_eq!(
        billing_hour_left_ms(T0, T0.plus_ms(70 * MS_PER_MINUTE)),
        50 * MS_PER_MINUTE
    );
    for minutes in [1, 30, 54, 61, 100] {
        let decision = fleet.evaluate(&mut p, T0.plus_ms(minutes * MS_PER_MINUTE), Trigger::Tick);
        assert!(decision.delete.is_empty(), "kept at minute {minutes}");
    }
    for minutes in [55, 59, 116] {
        let decision = fleet.evaluate(&mut p, T0.plus_ms(minutes * MS_PER_MINUTE), Trigger::Tick);
        assert_eq!(decision.delete, vec![vm], "deleted at minute {minutes}");
    }
    // Not within the cooldown after a scale-up, and never on a demand trigger.
    fleet.last_scale_up_at = Some(T0.plus_ms(50 * MS_PER_MINUTE));
    assert!(
        fleet
            .evaluate(&mut p, T0.plus_ms(57 * MS_PER_MINUTE), Trigger::Tick)
            .delete
            .is_empty()
    );
    fleet.last_scale_up_at = None;
    assert!(
        fleet
            .evaluate(&mut p, T0.plus_ms(57 * MS_PER_MINUTE), Trigger::Demand)
            .delete
            .is_empty()
    );
}

#[test]
fn cluster_autoscaler_like_cordons_underused_nodes_after_unneeded_for() {
    let mut fleet = Fleet::new();
    let config = PolicyConfig {
        scale_down: Some(ScaleDownConfig {
            rule: ScaleDownRule::Underutilized,
            ..ScaleDownConfig::default()
        }),
        ..PolicyConfig::default()
    };
    let mut p = policy(config, &fleet);
    let busy = fleet.vm(T0, 12, NodeState::Ready);
    let light = fleet.vm(T0, 2, NodeState::Ready);
    let empty = fleet.vm(T0, 0, NodeState::Ready);
    let at = |m: u64| T0.plus_ms(m * MS_PER_MINUTE);
    assert_eq!(fleet.evaluate(&mut p, at(0), Trigger::Tick), ScalingDecision::default());
    assert_eq!(fleet.evaluate(&mut p, at(9), Trigger::Tick), ScalingDecision::default());
    let decision = fleet.evaluate(&mut p, at(10), Trigger::Tick);
    assert_eq!(decision.delete, vec![empty]);
    assert_eq!(
        decision.drain,
        vec![light],
        "2 of 15 GB used: cordoned, its servers keep running"
    );
    assert!(!decision.drain.contains(&busy));
    // Demand comes back: the cordoned node is taken back before anything is ordered.
    fleet.nodes.remove(&empty);
    fleet.nodes.get_mut(&light).expect("exists").state = NodeState::Draining;
    fleet.queued = vec![4096, 4096];
    let decision = fleet.evaluate(&mut p, at(11), Trigger::Demand);
    assert_eq!(decision.uncordon, vec![light]);
    assert!(decision.provision.is_empty());
}

#[test]
fn reactive_alone_orders_for_low_headroom_and_the_queue_and_deletes_a_vm_empty_for_ten_minutes() {
    let mut fleet = Fleet::new();
    let config = PolicyConfig {
        reactive: Some(ReactiveConfig {
            scale_up_free_mib_below: 8192,
            ..ReactiveConfig::default()
        }),
        ..PolicyConfig::default()
    };
    let mut p = policy(config, &fleet);
    // Low headroom: one VM; the queue: packed into new VMs.
    assert_eq!(fleet.evaluate(&mut p, T0, Trigger::Tick).provision.len(), 1);
    fleet.queued = vec![8192, 8192, 4096];
    assert_eq!(fleet.evaluate(&mut p, T0, Trigger::Demand).provision.len(), 2);
    fleet.queued.clear();
    let a = fleet.vm(T0, 0, NodeState::Ready);
    let _b = fleet.vm(T0, 0, NodeState::Ready);
    // Two empty VMs (30 GB free): one goes after 10 minutes, one stays for the 8 GB headroom.
    assert!(
        fleet
            .evaluate(&mut p, T0.plus_ms(9 * MS_PER_MINUTE), Trigger::Tick)
            .delete
            .is_empty()
    );
    assert_eq!(
        fleet
            .evaluate(&mut p, T0.plus_ms(10 * MS_PER_MINUTE), Trigger::Tick)
            .delete,
        vec![a]
    );
}

#[test]
fn min_cloud_nodes_is_reached_within_max_provision_per_eval_per_evaluation() {
    let mut fleet = Fleet::new();
    let config = PolicyConfig {
        reactive: Some(ReactiveConfig::default()),
        min_cloud_nodes: 5,
        max_provision_per_eval: 2,
        ..PolicyConfig::default()
    };
    let mut p = policy(config, &fleet);
    let first = fleet.evaluate(&mut p, T0, Trigger::Tick);
    assert_eq!(first.provision.len(), 2, "at most max_provision_per_eval at once");
    fleet.vm(T0, 0, NodeState::Provisioning);
    fleet.vm(T0, 0, NodeState::Provisioning);
    let second = fleet.evaluate(&mut p, T0.plus_ms(30_000), Trigger::Tick);
    assert_eq!(second.provision.len(), 2);
    for _ in 0..2 {
        fleet.vm(T0, 0, NodeState::Provisioning);
    }
    let third = fleet.evaluate(&mut p, T0.plus_ms(60_000), Trigger::Tick);
    assert_eq!(third.provision.len(), 1, "the fifth node completes the minimum");
}
