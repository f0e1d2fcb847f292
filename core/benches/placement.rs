//! One placement decision on a fleet of 1,000 nodes holding 20,000 running servers.
//!
//! The fleet: 1,000 cloud nodes of 32 GiB with 20 servers each (a mix of tiers), so
//! free RAM differs from node to node. The measured call is one `StartServer` that is
//! placed at once (reserve RAM, issue the command) followed by `StopServer` and the
//! stop's success, which returns the fleet to the same state for the next iteration.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use payperplay_core::{
    CommandId, CommandKind, Core, CoreConfig, Input, Outputs, PolicyConfig, ServerId, Timestamp, UserId,
};

fn fleet() -> (Core, Timestamp) {
    let mut config = CoreConfig {
        policy: PolicyConfig::default(),
        ..CoreConfig::default()
    };
    config.queue.max_len = 1_000_000;
    let mut core = Core::new(config);
    let now = Timestamp(1_700_000_000_000);
    for i in 0..1_000 {
        core.handle(
            now,
            Input::AddDedicatedNode {
                name: format!("node-{i}"),
                capacity_mib: 64 * 1024,
                monthly_cost_micros: 1,
                is_system: false,
            },
        )
        .unwrap();
    }
    core.handle(now, Input::RegisterUser { user_id: UserId(1) }).unwrap();
    core.handle(
        now,
        Input::TopUp {
            user_id: UserId(1),
            amount_micros: i64::MAX / 4,
        },
    )
    .unwrap();
    for s in 0..20_001u64 {
        // Three in four servers have 2 GiB, one in four 4 GiB.
        let ram_mib = if s % 4 == 0 { 4096 } else { 2048 };
        core.handle(
            now,
            Input::CreateServer {
                server_id: ServerId(s + 1),
                owner: UserId(1),
                ram_mib,
            },
        )
        .unwrap();
    }
    let mut outputs = Outputs::default();
    for s in 1..=20_000u64 {
        core.handle_into(now, Input::StartServer { server_id: ServerId(s) }, &mut outputs)
            .unwrap();
        for command in outputs.commands.drain(..) {
            if let CommandKind::StartContainer { server_id, .. } = command.kind {
                core.handle(now, Input::CommandSucceeded { command_id: command.id })
                    .unwrap();
                core.handle(now, Input::ServerBooted { server_id }).unwrap();
                core.handle(now, Input::PlayerCount { server_id, players: 1 }).unwrap();
            }
        }
        core.drain(|_| {}, |_| {});
        outputs.clear();
    }
    assert_eq!(core.totals().servers_holding_ram, 20_000);
    (core, now)
}

/// The placement index alone: the decision itself, without the bookkeeping around it.
fn index_choice(c: &mut Criterion) {
    use payperplay_core::NodeId;
    use payperplay_core::placement::{FreeIndex, Strategy};
    let mut index = FreeIndex::default();
    for i in 0..1_000u64 {
        index.insert(NodeId(i), ((i * 7919) % 30_000) as u32 + 1024);
    }
    c.bench_function("free-RAM index: choose among 1000 nodes (pack)", |b| {
        b.iter(|| index.choose(black_box(4096), Strategy::Pack))
    });
    c.bench_function("free-RAM index: choose among 1000 nodes (spread)", |b| {
        b.iter(|| index.choose(black_box(4096), Strategy::Spread))
    });
}

fn placement(c: &mut Criterion) {
    let (mut core, now) = fleet();
    let probe = ServerId(20_001);
    let mut outputs = Outputs::default();
    c.bench_function("place one start on 1000 nodes / 20000 servers", |b| {
        b.iter(|| {
            core.handle(
                now,
                Input::StartServer {
                    server_id: black_box(probe),
                },
            )
            .unwrap();
            core.handle_into(now, Input::StopServer { server_id: probe }, &mut outputs)
                .unwrap();
            for command in &outputs.commands {
                if let CommandKind::StopContainer { .. } = command.kind {
                    core.handle(now, Input::CommandSucceeded { command_id: command.id })
                        .unwrap();
                }
            }
            outputs.clear();
            core.drain(|_| {}, |_| {});
        })
    });
}

/// The same start-and-stop round with the outputs taken three ways: `poll_*` loops
/// written by hand, `drain` with closures, `drain_into` reused buffers. The helpers
/// must cost what the loops cost.
fn drain_styles(c: &mut Criterion) {
    let (mut core, now) = fleet();
    let probe = ServerId(20_001);
    let round = |core: &mut Core, take: &mut dyn FnMut(&mut Core) -> Option<CommandId>| {
        core.handle(now, Input::StartServer { server_id: probe }).unwrap();
        take(core);
        core.handle(now, Input::StopServer { server_id: probe }).unwrap();
        let stop = take(core).expect("a stop issued");
        core.handle(now, Input::CommandSucceeded { command_id: stop }).unwrap();
        take(core);
    };
    let is_stop = |kind: &CommandKind| matches!(kind, CommandKind::StopContainer { .. });
    c.bench_function("outputs: poll loops", |b| {
        b.iter(|| {
            round(&mut core, &mut |core| {
                let mut stop = None;
                while let Some(command) = core.poll_command() {
                    if is_stop(&command.kind) {
                        stop = Some(command.id);
                    }
                }
                while let Some(event) = core.poll_event() {
                    black_box(event);
                }
                stop
            })
        })
    });
    c.bench_function("outputs: drain", |b| {
        b.iter(|| {
            round(&mut core, &mut |core| {
                let mut stop = None;
                core.drain(
                    |command| {
                        if is_stop(&command.kind) {
                            stop = Some(command.id);
                        }
                    },
                    |event| {
                        black_box(event);
                    },
                );
                stop
            })
        })
    });
    let mut outputs = Outputs::default();
    c.bench_function("outputs: drain_into", |b| {
        b.iter(|| {
            round(&mut core, &mut |core| {
                outputs.clear();
                core.drain_into(&mut outputs);
                black_box(&outputs.events);
                outputs.commands.iter().find(|c| is_stop(&c.kind)).map(|c| c.id)
            })
        })
    });
}

criterion_group!(benches, index_choice, placement, drain_styles);
criterion_main!(benches);
