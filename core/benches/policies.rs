//! One scaling evaluation on a fleet of 1,000 cloud VMs, for each scale-down rule,
//! with the spare pool, the forecast and a scheduled window on.
//!
//! The fleet: 1,000 ready 32 GiB VMs, a third of them empty, a third under half used,
//! a third busy; the evaluation is the periodic tick (scale-down considered).

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use payperplay_core::{
    Catalog, CompositePolicy, FleetTotals, FleetView, LocationIdx, MS_PER_DAY, MS_PER_HOUR, Node, NodeId, NodeKind,
    NodeState, PolicyConfig, PredictiveConfig, ReserveConfig, ScaleDownConfig, ScaleDownRule, ScalingPolicy,
    ScheduleWindow, ScheduledConfig, SpareConfig, Timestamp, Trigger, VmType, VmTypeIdx, Weekday,
};

fn bench_policies(c: &mut Criterion) {
    let catalog = Catalog {
        server_types: vec![VmType {
            name: "cpx62".into(),
            ram_mib: 32 * 1024,
            vcpu: 16,
            price_micros_per_hour: 75_000,
            monthly_cap_micros: 47_000_000,
        }],
        locations: vec!["fsn1".into()],
        expected_provision_ms: 120_000,
    };
    let reserve = ReserveConfig::default();
    let start = Timestamp(4 * MS_PER_DAY + 2_000 * 7 * MS_PER_DAY);
    let mut nodes = payperplay_core::idmap::IdMap::new();
    let mut totals = FleetTotals::default();
    let mut empty = BTreeSet::new();
    for i in 0..1_000u64 {
        let kind = NodeKind::Cloud {
            server_type: VmTypeIdx(0),
            location: LocationIdx(0),
        };
        let mut node = Node::new(NodeId(i + 1), kind, false, 32 * 1024, 1_638, start);
        node.state = NodeState::Ready;
        node.n_servers = (i % 3) as u32 * 3;
        node.allocated_mib = node.n_servers * 4096;
        if node.n_servers == 0 {
            node.empty_since = Some(start);
            empty.insert(node.id);
        }
        totals.ready_usable_mib += node.usable_mib() as u64;
        totals.allocated_mib += node.allocated_mib as u64;
        totals.n_cloud_nodes += 1;
        totals.n_ready_nodes += 1;
        nodes.insert(node.id, node);
    }
    let draining = BTreeSet::new();
    let provisioning = BTreeMap::new();
    let type_usable = payperplay_core::policy::type_usable_mib(&catalog, &reserve);
    for rule in [
        ScaleDownRule::EmptyAfter,
        ScaleDownRule::BillingHour,
        ScaleDownRule::Underutilized,
    ] {
        let config = PolicyConfig {
            max_cloud_nodes: 2_000,
            spare: Some(SpareConfig {
                buffer_pct: 10,
                ..SpareConfig::default()
            }),
            predictive: Some(PredictiveConfig::default()),
            scheduled: Some(ScheduledConfig {
                windows: vec![ScheduleWindow {
                    days: Weekday::ALL.to_vec(),
                    from: 18 * 60,
                    to: 23 * 60,
                    min_mib: 1024 * 1024,
                    min_nodes: 0,
                }],
            }),
            scale_down: Some(ScaleDownConfig {
                rule,
                cooldown_ms: 0,
                ..ScaleDownConfig::default()
            }),
            ..PolicyConfig::default()
        };
        let mut policy = CompositePolicy::new(&config, &catalog);
        let mut now = start.plus_ms(MS_PER_HOUR);
        c.bench_function(&format!("policy tick, 1000 VMs, {rule:?}"), |b| {
            b.iter(|| {
                now = now.plus_ms(30_000);
                let view = FleetView {
                    now,
                    trigger: Trigger::Tick,
                    totals,
                    nodes: &nodes,
                    queued_by_size: &[],
                    provisioning_usable_mib: &provisioning,
                    empty_cloud_nodes: &empty,
                    draining_cloud_nodes: &draining,
                    catalog: &catalog,
                    type_usable_mib: &type_usable,
                    last_scale_up_at: None,
                    queued_for_cloud_count: 0,
                    queued_for_cloud_mib: 0,
                };
                black_box(policy.evaluate(black_box(&view)))
            })
        });
    }
}

criterion_group!(benches, bench_policies);
criterion_main!(benches);
