//! `Core::reconfigure`: a new configuration takes effect at a point in time, never
//! retroactively; what the running state cannot take is refused, naming the field.

use payperplay_core::testkit::{Driver, cloud_config, static_config};
use payperplay_core::{
    CommandKind, Input, LedgerKind, MS_PER_HOUR, NodeKind, PolicyConfig, ReactiveConfig, ServerId, UserId,
};

fn ram_charges(driver: &mut Driver) -> Vec<i64> {
    driver
        .take(|k| matches!(k, CommandKind::PostLedgerEntry { entry } if entry.kind == LedgerKind::RamTime))
        .into_iter()
        .map(|c| match c.kind {
            CommandKind::PostLedgerEntry { entry } => entry.amount_micros,
            _ => unreachable!(),
        })
        .collect()
}

fn running_8gb(config: payperplay_core::CoreConfig) -> Driver {
    let mut driver = Driver::new(config);
    driver.accept(Input::AddDedicatedNode {
        name: "d1".into(),
        capacity_mib: 64 * 1024,
        monthly_cost_micros: 1,
        is_system: false,
    });
    driver.user(1_000_000_000);
    driver.create(1, 8);
    driver.start(1);
    driver.boot_all();
    driver
}

#[test]
fn a_new_price_bills_from_the_reconfiguration_on_and_history_stays_at_the_old_one() {
    let mut config = static_config();
    config.billing.ram_price_micros_per_gib_hour = 1_000;
    let mut driver = running_8gb(config.clone());
    ram_charges(&mut driver);
    driver.advance(MS_PER_HOUR);
    config.billing.ram_price_micros_per_gib_hour = 3_000;
    driver
        .core
        .reconfigure(driver.now, config)
        .expect("a price change is accepted");
    driver.core.drain(|c| driver.commands.push(c), |_| {});
    // The hour before: 8 GiB at 1,000 a GiB-hour, settled at the reconfiguration.
    assert_eq!(ram_charges(&mut driver), vec![-8_000]);
    driver.advance(MS_PER_HOUR);
    driver.stop(1);
    assert_eq!(ram_charges(&mut driver), vec![-24_000], "the hour after at 3,000");
}

#[test]
fn the_same_configuration_again_changes_nothing() {
    let config = static_config();
    let mut driver = running_8gb(config.clone());
    driver.take_commands();
    driver.advance(MS_PER_HOUR / 2);
    let before = serde_json::to_string(&driver.core.snapshot()).expect("serializes");
    driver.core.reconfigure(driver.now, config).expect("accepted");
    assert!(driver.core.poll_command().is_none());
    assert_eq!(
        serde_json::to_string(&driver.core.snapshot()).expect("serializes"),
        before
    );
}

#[test]
fn removing_a_tier_a_server_has_is_refused_naming_the_field() {
    let mut config = static_config();
    let driver = running_8gb(config.clone());
    config.tiers_mib.retain(|&mib| mib != 8192);
    let mut core = driver.core;
    let error = core
        .reconfigure(payperplay_core::Timestamp(2_000_000), config)
        .expect_err("server 1 has 8 GB");
    assert_eq!(error.field, "core.tiers_gb");
    assert!(
        error.message.contains("8192 MiB") && error.message.contains("server 1"),
        "{error}"
    );
    assert_eq!(core.config().tiers_mib.len(), 5, "nothing changed");
}

fn with_a_vm() -> (Driver, payperplay_core::CoreConfig) {
    let config = cloud_config(PolicyConfig {
        reactive: Some(ReactiveConfig::default()),
        ..PolicyConfig::default()
    });
    let mut driver = Driver::new(config.clone());
    driver.user(1_000_000_000);
    driver.create(1, 8);
    driver.start(1);
    let orders = driver.provisions();
    assert_eq!(orders.len(), 1, "the start orders a VM");
    (driver, config)
}

#[test]
fn a_reordered_catalog_keeps_every_nodes_vm_type_by_name() {
    let (mut driver, mut config) = with_a_vm();
    let type_name = |driver: &Driver| {
        let node = driver.core.nodes().next().expect("one node");
        let NodeKind::Cloud { server_type, location } = node.kind else {
            panic!("a cloud node")
        };
        let catalog = &driver.core.config().catalog;
        (
            catalog.server_types[server_type.0 as usize].name.clone(),
            catalog.locations[location.0 as usize].clone(),
        )
    };
    let before = type_name(&driver);
    config.catalog.server_types.reverse();
    config.catalog.locations.reverse();
    driver
        .core
        .reconfigure(driver.now, config)
        .expect("a reordered catalog is accepted");
    assert_eq!(type_name(&driver), before);
    let awaited = driver.core.awaited_commands();
    let CommandKind::ProvisionNode { server_type, .. } = awaited[0].kind else {
        panic!("the order is awaited")
    };
    assert_eq!(
        driver.core.config().catalog.server_types[server_type.0 as usize].name,
        before.0
    );
}

#[test]
fn removing_a_vm_type_a_node_is_of_is_refused_naming_the_field() {
    let (mut driver, mut config) = with_a_vm();
    config.catalog.server_types.retain(|t| t.name != "cpx42");
    config.policy.server_type = None;
    let error = driver
        .core
        .reconfigure(driver.now, config)
        .expect_err("the node is a cpx42");
    assert_eq!(error.field, "core.catalog.server_types");
    assert!(error.message.contains("cpx42"), "{error}");
    assert_eq!(driver.core.user(UserId(1)).map(|u| u.servers.len()), Some(1));
    assert!(driver.core.server(ServerId(1)).is_some());
}

#[test]
fn a_configuration_recorded_as_json_reads_back_equal() {
    // Recovery compares the recorded configuration with the current one: a lossy
    // round trip would reconfigure the core at every start.
    let mut config = cloud_config(PolicyConfig {
        reactive: Some(ReactiveConfig::default()),
        spare: Some(payperplay_core::SpareConfig::default()),
        predictive: Some(payperplay_core::PredictiveConfig::default()),
        ..PolicyConfig::default()
    });
    config.prewarm.enabled = true;
    let json = serde_json::to_value(&config).expect("serializes");
    let read: payperplay_core::CoreConfig = serde_json::from_value(json).expect("reads back");
    assert_eq!(read, config);
}
