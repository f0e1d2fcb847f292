//! Snapshots of the core's state: for random input sequences, restoring a snapshot
//! taken at a random point and handling the rest of the inputs gives what handling all
//! of them gives: the same serialized state and the same commands and events after the
//! snapshot point. The inputs are recorded once, from a core driven by random
//! operations, and replayed into both.

use payperplay_core::prewarm::{BilledTo, PrewarmConfig};
use payperplay_core::testkit::cloud_catalog;
use payperplay_core::{
    Command, CommandKind, Core, CoreConfig, Event, Input, MS_PER_MINUTE, NodeId, PolicyConfig, PredictiveConfig,
    ReactiveConfig, ScaleDownConfig, ScaleDownRule, ServerId, Snapshot, SnapshotError, SpareConfig, Timestamp, UserId,
};
use payperplay_tests::ops::{FAILURE_KINDS, N_SERVERS, N_USERS, Op, TIERS, op, pick_node};
use proptest::prelude::*;

/// Variant 0: the reactive policy; 1: a spare pool, a forecast (a learned profile in
/// the state) and underutilized scale-down (per-node clocks in the state).
fn config(variant: usize) -> CoreConfig {
    let base = PolicyConfig {
        max_cloud_nodes: 2,
        ..PolicyConfig::default()
    };
    let policy = if variant == 0 {
        PolicyConfig {
            reactive: Some(ReactiveConfig::default()),
            ..base
        }
    } else {
        PolicyConfig {
            spare: Some(SpareConfig {
                buffer_mib: 4096,
                ..SpareConfig::default()
            }),
            predictive: Some(PredictiveConfig::default()),
            scale_down: Some(ScaleDownConfig {
                rule: ScaleDownRule::Underutilized,
                ..ScaleDownConfig::default()
            }),
            ..base
        }
    };
    let mut config = CoreConfig {
        catalog: cloud_catalog(),
        policy,
        prewarm: PrewarmConfig {
            enabled: true,
            history_days: 2,
            min_days: 1,
            billed_to: BilledTo::Owner,
            ..PrewarmConfig::default()
        },
        ..CoreConfig::default()
    };
    config.billing.ram_price_micros_per_gib_hour = 12_345;
    config.billing.low_balance_threshold_micros = 500_000;
    config.lifecycle.idle_sleep_after_ms = 5 * MS_PER_MINUTE;
    config
}

/// Drives a core with random operations and records every input it was given.
struct Recorder {
    core: Core,
    now: Timestamp,
    pending: Vec<Command>,
    inputs: Vec<(Timestamp, Input)>,
}

impl Recorder {
    fn new(variant: usize, balances: &[i64]) -> Recorder {
        let mut recorder = Recorder {
            core: Core::new(config(variant)),
            now: Timestamp(1_700_000_000_000),
            pending: Vec::new(),
            inputs: Vec::new(),
        };
        for (name, gb) in [("small", 8), ("large", 16)] {
            recorder.input(Input::AddDedicatedNode {
                name: name.into(),
                capacity_mib: gb * 1024,
                monthly_cost_micros: 1,
                is_system: false,
            });
        }
        for u in 1..=N_USERS {
            recorder.input(Input::RegisterUser { user_id: UserId(u) });
            recorder.input(Input::TopUp {
                user_id: UserId(u),
                amount_micros: balances[(u - 1) as usize],
            });
        }
        for s in 1..=N_SERVERS {
            recorder.input(Input::CreateServer {
                server_id: ServerId(s),
                owner: UserId(1 + s % N_USERS),
                ram_mib: TIERS[(s as usize) % TIERS.len()],
            });
        }
        recorder
    }

    fn input(&mut self, input: Input) {
        self.inputs.push((self.now, input.clone()));
        let _verdict = self.core.handle(self.now, input);
        while let Some(command) = self.core.poll_command() {
            if command.kind.awaits_result() {
                self.pending.push(command);
            }
        }
        while self.core.poll_event().is_some() {}
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Start(s) => self.input(Input::StartServer { server_id: ServerId(s) }),
            Op::Stop(s) => self.input(Input::StopServer { server_id: ServerId(s) }),
            Op::Cancel(s) => self.input(Input::CancelStart { server_id: ServerId(s) }),
            Op::Delete(s) => self.input(Input::DeleteServer { server_id: ServerId(s) }),
            Op::TopUp(u, amount_micros) => self.input(Input::TopUp {
                user_id: UserId(u),
                amount_micros,
            }),
            Op::Players(s, players) => self.input(Input::PlayerCount {
                server_id: ServerId(s),
                players,
            }),
            Op::Advance(ms) => {
                let target = self.now.plus_ms(ms);
                while let Some(at) = self.core.poll_timeout() {
                    if at > target {
                        break;
                    }
                    self.now = self.now.max(at);
                    self.input(Input::Timeout);
                }
                self.now = target;
            }
            Op::Complete(i, ok, kind) => {
                if !self.pending.is_empty() {
                    let command = self.pending.remove(i % self.pending.len());
                    let kind = FAILURE_KINDS[kind as usize];
                    self.input(if ok {
                        Input::CommandSucceeded { command_id: command.id }
                    } else {
                        Input::CommandFailed {
                            command_id: command.id,
                            reason: "test".into(),
                            kind,
                        }
                    });
                }
            }
            Op::Boot(s) => self.input(Input::ServerBooted { server_id: ServerId(s) }),
            Op::Exited(s) => self.input(Input::ContainerExited { server_id: ServerId(s) }),
            Op::LoseNode(i) => {
                let nodes: Vec<NodeId> = self.core.nodes().map(|n| n.id).collect();
                if let Some(node_id) = pick_node(&nodes, i) {
                    self.input(Input::NodeLost { node_id });
                }
            }
            Op::AnswerNode(i) => {
                let nodes: Vec<NodeId> = self.core.nodes().map(|n| n.id).collect();
                if let Some(node_id) = pick_node(&nodes, i) {
                    self.input(Input::NodeAnswered { node_id });
                }
            }
        }
    }
}

/// Handles `inputs` and returns every command and event they led to, with the verdicts.
fn handle_all(core: &mut Core, inputs: &[(Timestamp, Input)]) -> (Vec<Command>, Vec<Event>, Vec<bool>) {
    let (mut commands, mut events, mut verdicts) = (Vec::new(), Vec::new(), Vec::new());
    for (at, input) in inputs {
        verdicts.push(core.handle(*at, input.clone()).is_ok());
        core.drain(|command| commands.push(command), |event| events.push(event));
    }
    (commands, events, verdicts)
}

fn serialized(core: &Core) -> String {
    serde_json::to_string(&core.snapshot()).expect("a core serializes")
}

fn restored(text: &str) -> Core {
    let snapshot: Snapshot = serde_json::from_str(text).expect("a snapshot parses");
    Core::restore(snapshot).expect("a snapshot restores")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_snapshot_and_the_tail_replay_to_the_state_of_a_full_replay(
        balances in prop::collection::vec(1i64..3_000_000, N_USERS as usize),
        ops in prop::collection::vec(op(), 1..120),
        variant in 0usize..2,
        cut in any::<prop::sample::Index>(),
    ) {
        let mut recorder = Recorder::new(variant, &balances);
        for op in &ops {
            recorder.apply(op);
        }
        let inputs = recorder.inputs;
        let cut = cut.index(inputs.len() + 1);

        let mut full = Core::new(config(variant));
        let (_, _, _) = handle_all(&mut full, &inputs[..cut]);
        let (full_commands, full_events, full_verdicts) = handle_all(&mut full, &inputs[cut..]);

        let mut head = Core::new(config(variant));
        handle_all(&mut head, &inputs[..cut]);
        let text = serialized(&head);
        let mut tail = restored(&text);
        // Reading a snapshot back and writing it again gives the same bytes.
        prop_assert_eq!(serialized(&tail), text);
        let (tail_commands, tail_events, tail_verdicts) = handle_all(&mut tail, &inputs[cut..]);

        prop_assert_eq!(tail_verdicts, full_verdicts);
        prop_assert_eq!(tail_commands, full_commands);
        prop_assert_eq!(tail_events, full_events);
        prop_assert_eq!(tail.awaited_commands(), full.awaited_commands());
        prop_assert_eq!(tail.poll_timeout(), full.poll_timeout());
        prop_assert_eq!(serialized(&tail), serialized(&full));
    }
}

#[test]
fn a_snapshot_of_an_unknown_format_is_refused_naming_the_version() {
    let mut core = Core::new(config(1));
    core.handle(Timestamp(1), Input::RegisterUser { user_id: UserId(1) })
        .expect("registers");
    let mut value = serde_json::to_value(core.snapshot()).expect("serializes");
    value["format_version"] = serde_json::json!(99);
    let snapshot: Snapshot = serde_json::from_value(value).expect("the envelope parses");
    let error = Core::restore(snapshot).err().expect("format 99 is refused");
    assert_eq!(error, SnapshotError::UnknownFormat { found: 99 });
    assert!(
        error.to_string().contains("snapshot format version 99 is unknown"),
        "{error}"
    );
}

#[test]
fn a_snapshot_holds_pending_commands_and_timers() {
    let mut core = Core::new(config(0));
    let now = Timestamp(1_700_000_000_000);
    let inputs = [
        Input::RegisterUser { user_id: UserId(1) },
        Input::TopUp {
            user_id: UserId(1),
            amount_micros: 10_000_000,
        },
        Input::CreateServer {
            server_id: ServerId(1),
            owner: UserId(1),
            ram_mib: 4096,
        },
        Input::StartServer { server_id: ServerId(1) },
    ];
    for input in inputs {
        core.handle(now, input).expect("accepted");
    }
    let provisions: Vec<Command> = std::iter::from_fn(|| core.poll_command())
        .filter(|c| matches!(c.kind, CommandKind::ProvisionNode { .. }))
        .collect();
    assert_eq!(provisions.len(), 1, "no node: the start orders a VM");
    let copy = restored(&serialized(&core));
    assert_eq!(copy.awaited_commands(), core.awaited_commands());
    assert_eq!(copy.poll_timeout(), core.poll_timeout());
    assert_eq!(copy.queue_len(), 1);
}
