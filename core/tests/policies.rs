//! Scaling policies, provider fallback and pre-warm, driven through the public
//! contract (`handle`, `poll_command`, `poll_event`, `poll_timeout`).

use payperplay_core::prewarm::{BilledTo, PrewarmConfig};
use payperplay_core::testkit::{Driver, cloud_config, no_reserve};
use payperplay_core::{
    Command, CommandKind, CoreConfig, Event, FailureKind, Input, LocationIdx, MS_PER_DAY, MS_PER_HOUR, MS_PER_MINUTE,
    NodeId, NodeState, PolicyConfig, ScaleDownConfig, ScaleDownRule, ServerId, ServerState, Timestamp, UserId,
    VmTypeIdx,
};

/// A driver at day 10 with user 1 holding 100 EUR.
fn driver(config: CoreConfig) -> Driver {
    let mut d = Driver::at(config, Timestamp(10 * MS_PER_DAY));
    d.user(100_000_000);
    d
}

fn ordered(c: &Command) -> (VmTypeIdx, LocationIdx) {
    match c.kind {
        CommandKind::ProvisionNode {
            server_type, location, ..
        } => (server_type, location),
        _ => panic!("not an order"),
    }
}

#[test]
fn a_sold_out_type_falls_back_to_a_larger_type_then_another_location_and_says_so() {
    let mut d = driver(cloud_config(PolicyConfig::reactive()));
    for id in 1..=3 {
        d.create(id, 4);
        d.start(id);
    }
    let first = d.provisions();
    assert_eq!(first.len(), 1);
    let cpx42_fsn1 = (VmTypeIdx(0), LocationIdx(0));
    assert_eq!(ordered(&first[0]), cpx42_fsn1);
    d.fail(&first[0], FailureKind::ResourceUnavailable);
    let second = d.provisions();
    assert_eq!(ordered(&second[0]), (VmTypeIdx(1), LocationIdx(0)), "cpx62 in fsn1");
    d.fail(&second[0], FailureKind::ResourceUnavailable);
    let third = d.provisions();
    assert_eq!(ordered(&third[0]), (VmTypeIdx(0), LocationIdx(1)), "cpx42 in nbg1");
    let fallbacks = d
        .events
        .iter()
        .filter(|e| matches!(e, Event::ProvisionFallback { wanted, .. } if *wanted == cpx42_fsn1))
        .count();
    assert_eq!(fallbacks, 2);
    let stats = d.core.stats();
    assert_eq!((stats.provision_fallbacks, stats.provision_sold_out), (2, 2));
    d.accept(Input::CommandSucceeded {
        command_id: third[0].id,
    });
    d.boot_all();
    for id in 1..=3 {
        assert_eq!(d.state(id), ServerState::Running, "demand was served");
    }
    // Once the sold-out back-off (30 minutes) is over, fsn1 is used again.
    d.advance(31 * MS_PER_MINUTE);
    for id in 4..=8 {
        d.create(id, 4);
        d.start(id);
    }
    let later = d.provisions();
    assert!(!later.is_empty());
    assert!(later.iter().all(|c| ordered(c) == cpx42_fsn1));
}

#[test]
fn a_rate_limit_holds_orders_back_then_demand_is_served() {
    let mut d = driver(cloud_config(PolicyConfig::reactive()));
    d.create(1, 4);
    d.start(1);
    let first = d.provisions();
    d.fail(&first[0], FailureKind::RateLimited);
    assert!(d.provisions().is_empty(), "no order while rate-limited");
    d.advance(59 * MS_PER_MINUTE / 60);
    assert!(d.provisions().is_empty(), "still within the 1-minute back-off");
    d.advance(MS_PER_MINUTE);
    let retry = d.provisions();
    assert_eq!(
        retry.len(),
        1,
        "ordered again at the first evaluation after the back-off"
    );
    assert!(d.core.stats().provisions_held_back >= 1);
    d.accept(Input::CommandSucceeded {
        command_id: retry[0].id,
    });
    d.boot_all();
    assert_eq!(d.state(1), ServerState::Running);
}

#[test]
fn repeated_failures_back_a_type_off_and_the_next_one_is_used() {
    let mut d = driver(cloud_config(PolicyConfig::reactive()));
    d.create(1, 4);
    d.start(1);
    let first = d.provisions();
    d.fail(&first[0], FailureKind::Other);
    let second = d.provisions();
    assert_eq!(
        ordered(&second[0]),
        ordered(&first[0]),
        "one failure is retried at once"
    );
    d.fail(&second[0], FailureKind::Other);
    let third = d.provisions();
    assert_eq!(ordered(&third[0]), (VmTypeIdx(1), LocationIdx(0)), "backed off: cpx62");
}

fn cluster_autoscaler_like() -> PolicyConfig {
    PolicyConfig {
        scale_down: Some(ScaleDownConfig {
            rule: ScaleDownRule::Underutilized,
            ..ScaleDownConfig::default()
        }),
        ..PolicyConfig::default()
    }
}

#[test]
fn cluster_autoscaler_like_cordons_an_underused_vm_and_never_interrupts_its_players() {
    let mut d = driver(cloud_config(cluster_autoscaler_like()));
    for id in 1..=5 {
        d.create(id, 4);
        d.start(id);
    }
    let orders = d.provisions();
    assert_eq!(orders.len(), 2, "20 GB queued: two 16 GB VMs");
    for c in &orders {
        d.accept(Input::CommandSucceeded { command_id: c.id });
    }
    d.boot_all();
    let on_node = |d: &Driver, id: u64| d.core.server(ServerId(id)).expect("exists").node.expect("placed");
    let full = on_node(&d, 1);
    let light: Vec<u64> = (1..=5).filter(|&id| on_node(&d, id) != full).collect();
    assert_eq!(light.len(), 1, "packed: four on one VM, one on the other");
    let light_node = on_node(&d, light[0]);
    // Two servers on the full VM stop: 8 of 16 GB (50%) is not under 50%.
    let on_full: Vec<u64> = (1..=5).filter(|&id| on_node(&d, id) == full).collect();
    d.stop(on_full[0]);
    d.stop(on_full[1]);
    d.advance(9 * MS_PER_MINUTE);
    assert_eq!(d.core.node(light_node).expect("exists").state, NodeState::Ready);
    d.advance(2 * MS_PER_MINUTE);
    assert_eq!(
        d.core.node(light_node).expect("exists").state,
        NodeState::Draining,
        "4 of 16 GB for 10 minutes: cordoned"
    );
    assert!(d.events.contains(&Event::NodeDraining {
        node_id: light_node,
        draining: true
    }));
    assert!(
        d.take(|k| matches!(k, CommandKind::StopContainer { .. })).is_empty(),
        "its server keeps running"
    );
    assert_eq!(d.state(light[0]), ServerState::Running);
    // A new start goes to the other VM, not to the cordoned one.
    let nodes: Vec<_> = d.core.nodes().map(|n| (n.id, n.state, n.allocated_mib)).collect();
    d.create(9, 4);
    d.start(9);
    assert_eq!(d.state(9), ServerState::Starting, "{nodes:?} {:?}", d.core.stats());
    assert_eq!(on_node(&d, 9), full);
    // When its last server stops, the cordoned VM is deleted.
    d.stop(light[0]);
    let deletes = d.take(|k| matches!(k, CommandKind::DeleteNode { .. }));
    assert_eq!(deletes.len(), 1);
    assert!(matches!(deletes[0].kind, CommandKind::DeleteNode { node_id } if node_id == light_node));
}

#[test]
fn billing_aware_scale_down_keeps_an_empty_vm_until_its_paid_hour_ends() {
    let policy = PolicyConfig {
        scale_down: Some(ScaleDownConfig {
            rule: ScaleDownRule::BillingHour,
            billing_margin_ms: 5 * MS_PER_MINUTE,
            cooldown_ms: 0,
            ..ScaleDownConfig::default()
        }),
        ..PolicyConfig::default()
    };
    let mut d = driver(cloud_config(policy));
    let ordered_at = d.now;
    d.create(1, 4);
    d.start(1);
    d.succeed_all(|k| matches!(k, CommandKind::ProvisionNode { .. }));
    d.boot_all();
    d.advance(10 * MS_PER_MINUTE);
    d.stop(1);
    d.advance_to(ordered_at.plus_ms(40 * MS_PER_MINUTE));
    // Demand returns within the paid hour: the same VM takes it, nothing is ordered.
    d.start(1);
    assert!(d.provisions().is_empty());
    d.boot_all();
    d.stop(1);
    d.advance_to(ordered_at.plus_ms(54 * MS_PER_MINUTE));
    assert!(d.take(|k| matches!(k, CommandKind::DeleteNode { .. })).is_empty());
    d.advance_to(ordered_at.plus_ms(56 * MS_PER_MINUTE));
    assert_eq!(
        d.take(|k| matches!(k, CommandKind::DeleteNode { .. })).len(),
        1,
        "deleted in the last 5 minutes of the paid hour"
    );
}

fn prewarm_config(billed_to: BilledTo) -> CoreConfig {
    let mut config = CoreConfig {
        reserve: no_reserve(),
        prewarm: PrewarmConfig {
            enabled: true,
            history_days: 7,
            min_days: 3,
            billed_to,
            ..PrewarmConfig::default()
        },
        ..CoreConfig::default()
    };
    config.billing.ram_price_micros_per_gib_hour = 10_000;
    config
}

fn dedicated(d: &mut Driver) {
    d.accept(Input::AddDedicatedNode {
        name: "dedi".into(),
        capacity_mib: 64 * 1024,
        monthly_cost_micros: 1,
        is_system: false,
    });
}

/// Three evenings of play at 20:00 (days 11 to 13), then day 14 begins.
fn habitual_evenings(d: &mut Driver) {
    d.create(1, 4);
    for day in 11..=13 {
        d.advance_to(Timestamp(day * MS_PER_DAY + 20 * MS_PER_HOUR));
        d.start(1);
        d.boot_all();
        d.advance(MS_PER_HOUR);
        d.stop(1);
    }
    d.advance_to(Timestamp(14 * MS_PER_DAY));
}

#[test]
fn a_habitual_server_is_prewarmed_and_the_platform_pays_until_the_first_player() {
    let mut d = driver(prewarm_config(BilledTo::Platform));
    dedicated(&mut d);
    habitual_evenings(&mut d);
    d.events.clear();
    d.advance_to(Timestamp(14 * MS_PER_DAY + 19 * MS_PER_HOUR + 54 * MS_PER_MINUTE));
    assert_eq!(d.state(1), ServerState::Stopped);
    d.advance_to(Timestamp(14 * MS_PER_DAY + 19 * MS_PER_HOUR + 55 * MS_PER_MINUTE));
    assert!(d.events.contains(&Event::PrewarmStarted {
        server_id: ServerId(1),
        platform_pays: true
    }));
    assert_eq!(d.state(1), ServerState::Starting, "started 5 minutes before 20:00");
    d.core.settle_all(d.now);
    let balance_before = d.core.projected_balance_micros(UserId(1));
    d.succeed_all(|k| matches!(k, CommandKind::StartContainer { .. }));
    d.accept(Input::ServerBooted { server_id: ServerId(1) });
    // Fifteen warm minutes with nobody on: the hold keeps it up, the owner pays nothing.
    d.advance(15 * MS_PER_MINUTE);
    assert_eq!(
        d.state(1),
        ServerState::Running,
        "held up past idle_sleep_after (10 minutes)"
    );
    d.core.settle_all(d.now);
    assert_eq!(d.core.projected_balance_micros(UserId(1)), balance_before);
    assert_eq!(d.core.stats().prewarm_platform_mib_ms, 4096 * 15 * MS_PER_MINUTE);
    // The first player claims it: billed to the owner from now on.
    d.accept(Input::PlayerCount {
        server_id: ServerId(1),
        players: 2,
    });
    assert!(d.events.contains(&Event::PrewarmClaimed { server_id: ServerId(1) }));
    d.core.settle_all(d.now);
    let claimed_balance = d.core.projected_balance_micros(UserId(1));
    d.advance(MS_PER_HOUR);
    assert_eq!(d.state(1), ServerState::Running, "{:?}", d.core.server(ServerId(1)));
    d.core.settle_all(d.now);
    let hour_of_4_gb = 4 * 10_000;
    assert_eq!(
        claimed_balance - d.core.projected_balance_micros(UserId(1)),
        hour_of_4_gb
    );
    assert_eq!(d.core.stats().prewarm_platform_mib_ms, 4096 * 15 * MS_PER_MINUTE);
}

#[test]
fn an_unused_prewarm_stops_after_its_hold_and_the_owner_pays_when_billed_to_owner() {
    let mut d = driver(prewarm_config(BilledTo::Owner));
    dedicated(&mut d);
    habitual_evenings(&mut d);
    d.advance_to(Timestamp(14 * MS_PER_DAY + 19 * MS_PER_HOUR + 55 * MS_PER_MINUTE));
    assert!(d.events.contains(&Event::PrewarmStarted {
        server_id: ServerId(1),
        platform_pays: false
    }));
    let balance = d.core.projected_balance_micros(UserId(1));
    d.succeed_all(|k| matches!(k, CommandKind::StartContainer { .. }));
    d.accept(Input::ServerBooted { server_id: ServerId(1) });
    d.advance(19 * MS_PER_MINUTE);
    assert_eq!(d.state(1), ServerState::Running, "within the 20-minute hold");
    d.advance(2 * MS_PER_MINUTE);
    assert!(
        matches!(d.state(1), ServerState::Stopping { .. }),
        "idle after the hold"
    );
    d.succeed_all(|k| matches!(k, CommandKind::StopContainer { .. }));
    assert_eq!(d.core.stats().prewarm_platform_mib_ms, 0);
    assert!(
        d.core.projected_balance_micros(UserId(1)) < balance,
        "the owner paid the warm minutes"
    );
    // The habit holds: tomorrow's pre-warm is armed.
    d.events.clear();
    d.advance_to(Timestamp(15 * MS_PER_DAY + 19 * MS_PER_HOUR + 56 * MS_PER_MINUTE));
    assert!(d.events.iter().any(|e| matches!(e, Event::PrewarmStarted { .. })));
    assert_eq!(d.core.stats().prewarm_starts, 2);
}

#[test]
fn nodes_are_never_interrupted_by_scale_down() {
    // Every scale-down rule leaves a VM with a running server alone.
    for rule in [
        ScaleDownRule::EmptyAfter,
        ScaleDownRule::BillingHour,
        ScaleDownRule::Underutilized,
    ] {
        let policy = PolicyConfig {
            scale_down: Some(ScaleDownConfig {
                rule,
                cooldown_ms: 0,
                ..ScaleDownConfig::default()
            }),
            ..PolicyConfig::default()
        };
        let mut d = driver(cloud_config(policy));
        d.create(1, 2);
        d.start(1);
        d.succeed_all(|k| matches!(k, CommandKind::ProvisionNode { .. }));
        d.boot_all();
        d.advance(3 * MS_PER_HOUR);
        assert_eq!(d.state(1), ServerState::Running, "{rule:?}");
        assert!(d.take(|k| matches!(k, CommandKind::StopContainer { .. })).is_empty());
        assert!(d.core.nodes().any(|n| n.id == NodeId(1)));
    }
}
