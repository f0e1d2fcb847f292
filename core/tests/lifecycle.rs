//! The core's lifecycle, queue, billing and scaling behaviour, driven by hand through
//! the public contract (`handle`, `poll_command`, `poll_event`, `poll_timeout`).

use payperplay_core::testkit::{Driver, no_reserve, one_vm_type_catalog, static_config};
use payperplay_core::{
    Command, CommandKind, CoreConfig, Email, Event, FailureKind, Input, LedgerKind, MS_PER_HOUR, MS_PER_MINUTE,
    MS_PER_SECOND, NodeId, NodeState, Outputs, PolicyConfig, RejectReason, ServerId, ServerState, StartOutcome,
    StopReason, Timestamp, UserId,
};

fn with_user_and_node(config: CoreConfig, node_gb: u32, balance_micros: i64) -> Driver {
    let mut d = Driver::new(config);
    d.input(Input::AddDedicatedNode {
        name: "dedi".into(),
        capacity_mib: node_gb * 1024,
        monthly_cost_micros: 40_000_000,
        is_system: false,
    })
    .unwrap();
    d.user(balance_micros);
    d
}

fn start_and_boot(d: &mut Driver, server: u64) {
    d.input(Input::StartServer {
        server_id: ServerId(server),
    })
    .unwrap();
    let start = d
        .find(|k| matches!(k, CommandKind::StartContainer { server_id, .. } if *server_id == ServerId(server)))
        .expect("start command");
    d.succeed(&start);
    d.input(Input::ServerBooted {
        server_id: ServerId(server),
    })
    .unwrap();
    d.commands.clear();
}

#[test]
fn a_server_runs_sleeps_when_idle_is_archived_and_restores() {
    let mut d = with_user_and_node(static_config(), 16, 10_000_000);
    d.create(1, 4);
    d.input(Input::StartServer { server_id: ServerId(1) }).unwrap();
    assert_eq!(d.state(1), ServerState::Starting);
    let start = d.find(|k| matches!(k, CommandKind::StartContainer { .. })).unwrap();
    assert!(matches!(
        start.kind,
        CommandKind::StartContainer {
            ram_mib: 4096,
            restore_world: false,
            ..
        }
    ));
    d.succeed(&start);
    d.advance(45 * MS_PER_SECOND);
    d.input(Input::ServerBooted { server_id: ServerId(1) }).unwrap();
    assert_eq!(d.state(1), ServerState::Running);
    d.input(Input::PlayerCount {
        server_id: ServerId(1),
        players: 2,
    })
    .unwrap();
    d.advance(60 * MS_PER_MINUTE);
    assert_eq!(d.state(1), ServerState::Running, "players keep it running");
    d.input(Input::PlayerCount {
        server_id: ServerId(1),
        players: 0,
    })
    .unwrap();
    d.take_commands();
    d.advance(9 * MS_PER_MINUTE);
    assert_eq!(d.state(1), ServerState::Running, "idle for less than 10 minutes");
    d.advance(MS_PER_MINUTE);
    assert!(matches!(
        d.state(1),
        ServerState::Stopping {
            reason: StopReason::Idle
        }
    ));
    let stop = d
        .find(|k| matches!(k, CommandKind::StopContainer { .. }))
        .expect("stop command");
    d.succeed(&stop);
    assert_eq!(d.state(1), ServerState::Sleeping);
    d.take_commands();
    d.advance(30 * 24 * MS_PER_HOUR);
    assert_eq!(d.state(1), ServerState::Archived);
    assert!(d.find(|k| matches!(k, CommandKind::ArchiveWorld { .. })).is_some());
    d.input(Input::StartServer { server_id: ServerId(1) }).unwrap();
    let start = d.find(|k| matches!(k, CommandKind::StartContainer { .. })).unwrap();
    assert!(matches!(
        start.kind,
        CommandKind::StartContainer {
            restore_world: true,
            ..
        }
    ));
}

#[test]
fn min_run_time_holds_an_empty_server_up() {
    let mut d = with_user_and_node(static_config(), 16, 10_000_000);
    d.create(1, 2);
    let config = d.core.config().lifecycle.clone();
    assert!(config.min_run_ms < config.idle_sleep_after_ms);
    // With a long minimum run, the idle stop waits for it.
    let mut config = static_config();
    config.lifecycle.min_run_ms = 30 * MS_PER_MINUTE;
    let mut d = with_user_and_node(config, 16, 10_000_000);
    d.create(1, 2);
    start_and_boot(&mut d, 1);
    d.advance(29 * MS_PER_MINUTE);
    assert_eq!(d.state(1), ServerState::Running);
    d.advance(MS_PER_MINUTE);
    assert!(matches!(
        d.state(1),
        ServerState::Stopping {
            reason: StopReason::Idle
        }
    ));
}

#[test]
fn a_start_that_does_not_fit_queues_and_runs_when_ram_frees() {
    let mut d = with_user_and_node(static_config(), 6, 10_000_000);
    for id in 1..=2 {
        d.create(id, 4);
    }
    start_and_boot(&mut d, 1);
    d.input(Input::StartServer { server_id: ServerId(2) }).unwrap();
    assert_eq!(d.state(2), ServerState::Queued);
    let status = d.core.queue_status(ServerId(2)).unwrap();
    assert_eq!(status.position, 0);
    assert_eq!(status.estimated_wait_ms, None, "static fleet: nothing on its way");
    d.input(Input::StopServer { server_id: ServerId(1) }).unwrap();
    assert_eq!(d.state(2), ServerState::Queued, "RAM is held until the stop completes");
    let stop = d.find(|k| matches!(k, CommandKind::StopContainer { .. })).unwrap();
    d.succeed(&stop);
    assert_eq!(d.state(1), ServerState::Stopped);
    assert_eq!(d.state(2), ServerState::Starting);
}

#[test]
fn a_queued_start_can_be_cancelled_and_ends_cancelled() {
    let mut d = with_user_and_node(static_config(), 4, 10_000_000);
    for id in 1..=2 {
        d.create(id, 4);
    }
    start_and_boot(&mut d, 1);
    d.input(Input::StartServer { server_id: ServerId(2) }).unwrap();
    d.input(Input::CancelStart { server_id: ServerId(2) }).unwrap();
    assert_eq!(d.state(2), ServerState::Stopped);
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::StartEnded {
            server_id: ServerId(2),
            outcome: StartOutcome::Cancelled,
            ..
        }
    )));
    assert_eq!(
        d.input(Input::CancelStart { server_id: ServerId(2) }),
        Err(RejectReason::WrongState {
            state: "stopped".into()
        })
    );
}

#[test]
fn an_unconfirmed_reservation_is_released_and_retried() {
    let mut d = with_user_and_node(static_config(), 8, 10_000_000);
    d.create(1, 4);
    d.input(Input::StartServer { server_id: ServerId(1) }).unwrap();
    let first = d.find(|k| matches!(k, CommandKind::StartContainer { .. })).unwrap();
    d.take_commands();
    d.advance(120 * MS_PER_SECOND);
    // The RAM went back, a stop makes sure a late container dies, and the start retried.
    let commands = d.take_commands();
    assert!(
        commands
            .iter()
            .any(|c| matches!(c.kind, CommandKind::StopContainer { .. }))
    );
    let retry = commands
        .iter()
        .find(|c| matches!(c.kind, CommandKind::StartContainer { .. }))
        .expect("retried");
    assert_ne!(retry.id, first.id);
    // A late success of the first attempt changes nothing.
    d.succeed(&first);
    assert_eq!(d.core.node(NodeId(1)).unwrap().allocated_mib, 4096);
    // After the last attempt the start is rejected with a reason.
    d.advance(120 * MS_PER_SECOND);
    d.advance(120 * MS_PER_SECOND);
    assert_eq!(d.state(1), ServerState::Stopped);
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::StartEnded {
            outcome: StartOutcome::Rejected {
                reason: RejectReason::TooManyAttempts
            },
            ..
        }
    )));
    assert_eq!(d.core.node(NodeId(1)).unwrap().allocated_mib, 0);
}

#[test]
fn ram_time_is_billed_exactly_and_balances_match_the_ledger() {
    let mut config = static_config();
    config.billing.ram_price_micros_per_gib_hour = 10_000; // 0.01 EUR per GB-hour
    let mut d = with_user_and_node(config, 16, 10_000_000);
    d.create(1, 4);
    d.input(Input::StartServer { server_id: ServerId(1) }).unwrap();
    let start = d.find(|k| matches!(k, CommandKind::StartContainer { .. })).unwrap();
    let mut history = d.take_commands();
    d.succeed(&start);
    d.input(Input::ServerBooted { server_id: ServerId(1) }).unwrap();
    d.input(Input::PlayerCount {
        server_id: ServerId(1),
        players: 1,
    })
    .unwrap();
    d.now = d.now.plus_ms(MS_PER_HOUR - 1);
    d.input(Input::StopServer { server_id: ServerId(1) }).unwrap();
    d.now = d.now.plus_ms(1);
    let stop = d.find(|k| matches!(k, CommandKind::StopContainer { .. })).unwrap();
    d.succeed(&stop);
    history.extend(d.take_commands());
    let ram: i64 = history
        .iter()
        .filter_map(|c| match &c.kind {
            CommandKind::PostLedgerEntry { entry } if entry.kind == LedgerKind::RamTime => Some(entry.amount_micros),
            _ => None,
        })
        .sum();
    assert_eq!(ram, -40_000, "4 GiB for exactly one hour at 0.01 EUR per GiB-hour");
    let all: i64 = history
        .iter()
        .filter_map(|c| match &c.kind {
            CommandKind::PostLedgerEntry { entry } => Some(entry.amount_micros),
            _ => None,
        })
        .sum();
    // `history` holds every entry, the initial top-up included.
    assert_eq!(d.core.balance_micros(UserId(1)).unwrap(), all);
    assert_eq!(all, 10_000_000 - 40_000);
}

#[test]
fn a_low_balance_warns_and_zero_stops_the_server_cleanly() {
    let mut config = static_config();
    config.billing.ram_price_micros_per_gib_hour = 1_000_000; // 1 EUR per GB-hour
    config.billing.low_balance_threshold_micros = 1_000_000;
    let mut d = with_user_and_node(config, 16, 3_000_000);
    d.create(1, 2);
    start_and_boot(&mut d, 1);
    d.input(Input::PlayerCount {
        server_id: ServerId(1),
        players: 3,
    })
    .unwrap();
    // 2 EUR per hour: the warning at 1 EUR left comes after one hour.
    d.advance(59 * MS_PER_MINUTE);
    assert!(d.find(|k| matches!(k, CommandKind::SendEmail { .. })).is_none());
    d.advance(MS_PER_MINUTE);
    assert!(
        d.find(|k| matches!(
            k,
            CommandKind::SendEmail {
                email: Email::LowBalance { .. },
                ..
            }
        ))
        .is_some()
    );
    assert_eq!(d.state(1), ServerState::Running);
    d.advance(30 * MS_PER_MINUTE);
    assert!(matches!(
        d.state(1),
        ServerState::Stopping {
            reason: StopReason::OutOfBalance
        }
    ));
    assert!(
        d.find(|k| matches!(
            k,
            CommandKind::SendEmail {
                email: Email::StoppedForZeroBalance { .. },
                ..
            }
        ))
        .is_some()
    );
    assert_eq!(d.core.balance_micros(UserId(1)), Some(0));
    assert_eq!(
        d.input(Input::StartServer { server_id: ServerId(1) }),
        Err(RejectReason::InsufficientBalance)
    );
}

#[test]
fn bad_requests_are_rejected_with_a_reason() {
    let mut d = with_user_and_node(static_config(), 16, 1_000_000);
    assert_eq!(
        d.input(Input::CreateServer {
            server_id: ServerId(1),
            owner: UserId(1),
            ram_mib: 3000
        }),
        Err(RejectReason::InvalidTier { ram_mib: 3000 })
    );
    assert_eq!(
        d.input(Input::CreateServer {
            server_id: ServerId(1),
            owner: UserId(9),
            ram_mib: 2048
        }),
        Err(RejectReason::UnknownUser)
    );
    d.create(1, 2);
    assert_eq!(
        d.input(Input::CreateServer {
            server_id: ServerId(1),
            owner: UserId(1),
            ram_mib: 2048
        }),
        Err(RejectReason::DuplicateId)
    );
    assert_eq!(
        d.input(Input::StartServer { server_id: ServerId(7) }),
        Err(RejectReason::UnknownServer)
    );
    assert_eq!(
        d.input(Input::TopUp {
            user_id: UserId(1),
            amount_micros: 0
        }),
        Err(RejectReason::InvalidAmount)
    );
    assert_eq!(
        d.input(Input::CreateServer {
            server_id: ServerId(2),
            owner: UserId(1),
            ram_mib: 32768
        }),
        Ok(())
    );
    assert_eq!(
        d.input(Input::StartServer { server_id: ServerId(2) }),
        Err(RejectReason::NoCapacityForTier { ram_mib: 32768 })
    );
}

fn cloud_config() -> CoreConfig {
    CoreConfig {
        reserve: no_reserve(),
        catalog: one_vm_type_catalog(),
        policy: PolicyConfig {
            max_cloud_nodes: 5,
            ..PolicyConfig::reactive()
        },
        ..CoreConfig::default()
    }
}

#[test]
fn the_reactive_policy_orders_once_per_demand_and_deletes_empty_vms() {
    let mut d = Driver::new(cloud_config());
    d.user(100_000_000);
    for id in 1..=3 {
        d.create(id, 4);
        d.input(Input::StartServer {
            server_id: ServerId(id),
        })
        .unwrap();
    }
    let provisions: Vec<Command> = d
        .take_commands()
        .into_iter()
        .filter(|c| matches!(c.kind, CommandKind::ProvisionNode { .. }))
        .collect();
    assert_eq!(provisions.len(), 1, "three 4 GiB requests fit one 16 GiB VM");
    assert_eq!(
        d.core.queue_status(ServerId(3)).unwrap().estimated_wait_ms,
        Some(2 * MS_PER_MINUTE)
    );
    // Ticks while the VM boots do not order it again.
    d.advance(90 * MS_PER_SECOND);
    assert!(
        d.take_commands()
            .iter()
            .all(|c| !matches!(c.kind, CommandKind::ProvisionNode { .. }))
    );
    d.succeed(&provisions[0]);
    for id in 1..=3 {
        assert_eq!(d.state(id), ServerState::Starting);
    }
    let starts: Vec<Command> = d.take_commands();
    for c in &starts {
        d.succeed(c);
    }
    for id in 1..=3 {
        d.input(Input::StopServer {
            server_id: ServerId(id),
        })
        .unwrap();
    }
    for c in d.take_commands() {
        if matches!(c.kind, CommandKind::StopContainer { .. }) {
            d.succeed(&c);
        }
    }
    // Empty for 10 minutes, and 10 minutes after the scale-up: deleted.
    d.advance(9 * MS_PER_MINUTE);
    assert!(
        d.take_commands()
            .iter()
            .all(|c| !matches!(c.kind, CommandKind::DeleteNode { .. }))
    );
    d.advance(2 * MS_PER_MINUTE);
    let delete = d
        .find(|k| matches!(k, CommandKind::DeleteNode { .. }))
        .expect("empty VM deleted");
    d.succeed(&delete);
    assert_eq!(d.core.nodes().count(), 0);
}

#[test]
fn a_request_no_vm_type_can_hold_waits_without_asking_the_policy_again() {
    let mut d = Driver::new(cloud_config());
    d.user(100_000_000);
    d.input(Input::AddDedicatedNode {
        name: "ax".into(),
        capacity_mib: 32768,
        monthly_cost_micros: 0,
        is_system: false,
    })
    .unwrap();
    for (id, ram_mib) in [(1, 32768), (2, 32768), (3, 4096)] {
        d.input(Input::CreateServer {
            server_id: ServerId(id),
            owner: UserId(1),
            ram_mib,
        })
        .unwrap();
    }
    d.input(Input::StartServer { server_id: ServerId(1) }).unwrap();
    assert_eq!(d.state(1), ServerState::Starting, "the dedicated machine holds it");
    let evaluations = d.core.stats().scale_evaluations;
    // 32 GiB: more than the only type (16 GiB) holds, so it waits for the machine.
    d.input(Input::StartServer { server_id: ServerId(2) }).unwrap();
    assert_eq!(d.state(2), ServerState::Queued);
    assert_eq!(d.core.stats().scale_evaluations, evaluations, "no demand evaluation");
    assert!(d.find(|k| matches!(k, CommandKind::ProvisionNode { .. })).is_none());
    // 4 GiB fits a VM: that demand asks the policy at once, and it orders one.
    d.input(Input::StartServer { server_id: ServerId(3) }).unwrap();
    assert_eq!(d.state(3), ServerState::Queued);
    assert_eq!(d.core.stats().scale_evaluations, evaluations + 1);
    assert!(d.find(|k| matches!(k, CommandKind::ProvisionNode { .. })).is_some());
}

#[test]
fn a_large_request_is_not_starved_by_a_stream_of_small_ones() {
    let mut config = static_config();
    config.queue.head_bypass_ms_max = 5 * MS_PER_MINUTE;
    let mut d = with_user_and_node(config, 16, 1_000_000_000);
    for id in 1..=40 {
        d.create(id, 2);
    }
    d.create(100, 16);
    // Eight small servers are always wanted; each plays 8 minutes, then its owner stops
    // it and another one is started. Without the head's claim they would keep the
    // 16 GiB node from ever being empty.
    let mut wanted: Vec<(u64, Timestamp)> = Vec::new();
    let mut big_requested = None;
    for minute in 0..180u64 {
        for id in 1..=40u64 {
            if wanted.len() < 8 && d.state(id) == ServerState::Stopped && !wanted.iter().any(|(w, _)| *w == id) {
                d.input(Input::StartServer {
                    server_id: ServerId(id),
                })
                .unwrap();
                wanted.push((id, d.now.plus_ms(8 * MS_PER_MINUTE)));
            }
        }
        if minute == 2 {
            d.input(Input::StartServer {
                server_id: ServerId(100),
            })
            .unwrap();
            big_requested = Some(d.now);
        }
        for c in d.take_commands() {
            match c.kind {
                CommandKind::StartContainer { server_id, .. } => {
                    d.succeed(&c);
                    d.input(Input::ServerBooted { server_id }).unwrap();
                    d.input(Input::PlayerCount { server_id, players: 1 }).unwrap();
                }
                CommandKind::StopContainer { .. } => d.succeed(&c),
                _ => {}
            }
        }
        if d.state(100) == ServerState::Running {
            let waited = d.now.since(big_requested.unwrap());
            assert!(waited <= 15 * MS_PER_MINUTE, "the large start waited {waited} ms");
            assert!(minute > 2);
            return;
        }
        let now = d.now;
        for &(id, until) in &wanted {
            if until <= now && d.state(id) == ServerState::Running {
                d.input(Input::StopServer {
                    server_id: ServerId(id),
                })
                .unwrap();
            }
        }
        wanted.retain(|&(id, until)| until > now || d.state(id) == ServerState::Queued);
        d.advance(MS_PER_MINUTE);
    }
    panic!("the 16 GiB start never ran: {:?}", d.state(100));
}

#[test]
fn the_core_names_the_commands_it_still_awaits_exactly_as_issued() {
    let mut d = Driver::new(payperplay_core::testkit::cloud_config(PolicyConfig::reactive()));
    d.user(10_000_000);
    d.create(1, 4);
    d.start(1);
    let order = d
        .find(|k| matches!(k, CommandKind::ProvisionNode { .. }))
        .expect("a VM ordered");
    assert_eq!(d.core.awaited_commands(), vec![order.clone()]);
    d.succeed(&order);
    let start = d
        .find(|k| matches!(k, CommandKind::StartContainer { .. }))
        .expect("placed");
    let ledger = d
        .find(|k| matches!(k, CommandKind::PostLedgerEntry { .. }))
        .expect("top-up booked");
    assert_eq!(
        d.core.awaited_commands(),
        vec![start.clone()],
        "ledger entries are not awaited"
    );
    assert!(!ledger.kind.awaits_result());
    d.succeed(&start);
    assert!(d.core.awaited_commands().is_empty());
    d.accept(Input::ServerBooted { server_id: ServerId(1) });
    d.commands.clear();
    d.stop(1);
    assert!(d.core.awaited_commands().is_empty(), "the stop was confirmed");
    d.accept(Input::StartServer { server_id: ServerId(1) });
    d.accept(Input::StopServer { server_id: ServerId(1) });
    let stop = d
        .find(|k| matches!(k, CommandKind::StopContainer { .. }))
        .expect("stop issued");
    assert_eq!(d.core.awaited_commands(), vec![stop]);
}

#[test]
fn drain_into_hands_over_what_poll_would_in_the_same_order() {
    let mut polled = Driver::new(static_config());
    let mut drained = Driver::new(static_config());
    let mut outputs = Outputs::default();
    let inputs = [
        Input::AddDedicatedNode {
            name: "dedi".into(),
            capacity_mib: 8192,
            monthly_cost_micros: 1,
            is_system: false,
        },
        Input::RegisterUser { user_id: UserId(1) },
        Input::TopUp {
            user_id: UserId(1),
            amount_micros: 1_000_000,
        },
        Input::CreateServer {
            server_id: ServerId(1),
            owner: UserId(1),
            ram_mib: 4096,
        },
        Input::StartServer { server_id: ServerId(1) },
    ];
    for input in inputs {
        polled.accept(input.clone());
        let now = drained.now;
        drained.core.handle_into(now, input, &mut outputs).expect("accepted");
    }
    assert_eq!(outputs.commands, polled.commands);
    assert_eq!(outputs.events, polled.events);
    assert!(!outputs.commands.is_empty() && !outputs.events.is_empty());
    assert_eq!(drained.core.poll_command(), None);
}

#[test]
fn a_start_failing_for_good_ends_rejected_at_once_and_a_transient_failure_is_retried() {
    let mut d = with_user_and_node(static_config(), 8, 10_000_000);
    d.create(1, 4);
    d.create(2, 4);
    // A transient failure (engine 5xx, full disk on one node): the start is retried.
    d.input(Input::StartServer { server_id: ServerId(1) }).unwrap();
    let first = d.find(|k| matches!(k, CommandKind::StartContainer { .. })).unwrap();
    d.take_commands();
    d.fail(&first, FailureKind::Other);
    assert_eq!(d.state(1), ServerState::Starting, "placed again");
    let retry = d.find(|k| matches!(k, CommandKind::StartContainer { .. })).unwrap();
    assert_ne!(retry.id, first.id);
    d.take_commands();
    // A permanent one (unknown image, refused configuration): rejected with the reason,
    // no second attempt, the RAM back on the node.
    d.fail(&retry, FailureKind::Permanent);
    assert_eq!(d.state(1), ServerState::Stopped);
    assert!(
        d.find(|k| matches!(k, CommandKind::StartContainer { .. })).is_none(),
        "not retried"
    );
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::StartEnded {
            server_id: ServerId(1),
            outcome: StartOutcome::Rejected {
                reason: RejectReason::StartFailed
            },
            ..
        }
    )));
    assert_eq!(d.core.node(NodeId(1)).unwrap().allocated_mib, 0);
    // The node still takes the next start.
    start_and_boot(&mut d, 2);
    assert_eq!(d.state(2), ServerState::Running);
}

#[test]
fn a_lost_dedicated_node_that_answers_again_is_taken_back() {
    let mut d = with_user_and_node(static_config(), 8, 10_000_000);
    d.create(1, 4);
    d.create(2, 4);
    start_and_boot(&mut d, 1);
    d.input(Input::NodeLost { node_id: NodeId(1) }).unwrap();
    assert_eq!(d.core.node(NodeId(1)).unwrap().state, NodeState::Lost);
    assert_eq!(d.state(1), ServerState::Queued, "queued for another node");
    // With no node that could hold it, a new start is refused meanwhile.
    assert_eq!(
        d.input(Input::StartServer { server_id: ServerId(2) }),
        Err(RejectReason::NoCapacityForTier { ram_mib: 4 * 1024 })
    );
    d.take_commands();
    d.events.clear();
    d.input(Input::NodeAnswered { node_id: NodeId(1) }).unwrap();
    assert_eq!(d.core.node(NodeId(1)).unwrap().state, NodeState::Ready);
    assert!(
        d.events
            .iter()
            .any(|e| matches!(e, Event::NodeReady { node_id: NodeId(1) }))
    );
    // The queued start is placed there again, and a new one too.
    assert_eq!(d.state(1), ServerState::Starting);
    d.input(Input::StartServer { server_id: ServerId(2) }).unwrap();
    assert_eq!(d.state(2), ServerState::Starting);
    assert_eq!(d.core.node(NodeId(1)).unwrap().allocated_mib, 8 * 1024);
    // A ready node answering changes nothing; an unknown node is refused by name.
    d.input(Input::NodeAnswered { node_id: NodeId(1) }).unwrap();
    assert_eq!(
        d.input(Input::NodeAnswered { node_id: NodeId(99) }),
        Err(RejectReason::UnknownNode)
    );
}
