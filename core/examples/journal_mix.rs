//! Writes a realistic journal of N inputs for prod's restart-time bench
//! (`prod/bench/restart_time.sh`), as `seq<TAB>at_ms<TAB>input JSON` lines for
//! Postgres' COPY: users register and top up, servers are created, started (the
//! container start succeeds, the server boots, players come and go), stopped (the
//! stop succeeds) and billed, balance and idle timers fire. The journal ends quiet:
//! every server stopped, every command answered. On stderr: `command_id_max=…`. The
//! core configuration it ran under (the default) goes to CONFIG_JSON.
//!
//!   cargo run --release -p payperplay-core --example journal_mix -- N USERS SERVERS CONFIG_JSON > journal.tsv

use std::io::Write;

use payperplay_core::{CommandKind, Core, CoreConfig, Input, MS_PER_SECOND, ServerId, ServerState, Timestamp, UserId};

/// A fixed xorshift: the same journal every time.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const TIERS_MIB: [u32; 3] = [2048, 4096, 8192];

struct Writer<W: Write> {
    out: W,
    core: Core,
    seq: u64,
    now: Timestamp,
    /// Container starts and stops awaiting their result.
    awaited: Vec<payperplay_core::CommandId>,
    command_id_max: u64,
}

impl<W: Write> Writer<W> {
    fn input(&mut self, input: Input) {
        self.seq += 1;
        let json = serde_json::to_string(&input).expect("an input serializes");
        writeln!(self.out, "{}\t{}\t{}", self.seq, self.now.ms(), json).expect("stdout");
        let _verdict = self.core.handle(self.now, input);
        while let Some(command) = self.core.poll_command() {
            self.command_id_max = self.command_id_max.max(command.id.0);
            if matches!(
                command.kind,
                CommandKind::StartContainer { .. } | CommandKind::StopContainer { .. }
            ) {
                self.awaited.push(command.id);
            }
        }
        while self.core.poll_event().is_some() {}
    }

    /// Moves the clock `ms` on, handling every timer due on the way.
    fn advance(&mut self, ms: u64) {
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

    /// Answers every awaited container command and boots every starting server.
    fn settle(&mut self) {
        while let Some(command_id) = self.awaited.pop() {
            self.input(Input::CommandSucceeded { command_id });
        }
        let starting: Vec<ServerId> = self
            .core
            .servers()
            .filter(|(_, s)| s.state == ServerState::Starting)
            .map(|(id, _)| id)
            .collect();
        for server_id in starting {
            self.input(Input::ServerBooted { server_id });
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize| -> u64 { args[i].parse().expect("a number") };
    let (n_inputs, n_users, n_servers) = (number(0), number(1), number(2));
    let config = CoreConfig::default();
    std::fs::write(&args[3], serde_json::to_string(&config).expect("a config serializes")).expect("CONFIG_JSON");
    let stdout = std::io::stdout();
    let mut w = Writer {
        out: std::io::BufWriter::new(stdout.lock()),
        core: Core::new(config),
        seq: 0,
        now: Timestamp(1_790_000_000_000),
        awaited: Vec::new(),
        command_id_max: 0,
    };
    for n in 1..=8 {
        w.input(Input::AddDedicatedNode {
            name: format!("bench-{n}"),
            capacity_mib: 256 * 1024,
            monthly_cost_micros: 100_000_000,
            is_system: false,
        });
    }
    for u in 1..=n_users {
        w.input(Input::RegisterUser { user_id: UserId(u) });
        w.input(Input::TopUp {
            user_id: UserId(u),
            amount_micros: 20_000_000,
        });
    }
    for s in 1..=n_servers {
        w.input(Input::CreateServer {
            server_id: ServerId(s),
            owner: UserId(1 + s % n_users),
            ram_mib: TIERS_MIB[(s % 3) as usize],
        });
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Leave room for the quiet ending: every running server stopped and answered.
    while w.seq + 4 * n_servers < n_inputs {
        let server_id = ServerId(1 + rng.below(n_servers));
        let state = w.core.server(server_id).map(|s| s.state);
        match state {
            Some(ServerState::Stopped | ServerState::Sleeping | ServerState::Archived) => {
                w.input(Input::StartServer { server_id });
            }
            Some(ServerState::Running) => match rng.below(4) {
                0 => w.input(Input::StopServer { server_id }),
                _ => w.input(Input::PlayerCount {
                    server_id,
                    players: rng.below(6) as u32,
                }),
            },
            _ => {}
        }
        if rng.below(50) == 0 {
            let user_id = UserId(1 + rng.below(n_users));
            w.input(Input::TopUp {
                user_id,
                amount_micros: 5_000_000,
            });
        }
        if rng.below(3) == 0 {
            w.settle();
        }
        w.advance(rng.below(4) * MS_PER_SECOND);
    }
    // The quiet ending.
    for _ in 0..3 {
        w.settle();
        let busy: Vec<(ServerId, ServerState)> = w
            .core
            .servers()
            .filter(|(_, s)| matches!(s.state, ServerState::Running | ServerState::Queued))
            .map(|(id, s)| (id, s.state))
            .collect();
        for (server_id, state) in busy {
            w.input(if state == ServerState::Queued {
                Input::CancelStart { server_id }
            } else {
                Input::StopServer { server_id }
            });
        }
        w.settle();
    }
    assert!(w.core.awaited_commands().is_empty(), "the journal ends quiet");
    w.out.flush().expect("stdout");
    eprintln!("inputs={} command_id_max={}", w.seq, w.command_id_max);
}
