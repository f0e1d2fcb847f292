//! The input journal as a workload trace (`payperplay-trace` version 1, documented in
//! scenarios/README.md): what users did in production, which the simulator replays
//! with `payperplay-sim run --trace`.
//!
//! The journal holds every core input with its time. The workload is the part users
//! cause: accounts, top-ups, servers, starts and stops, players. Player counts become
//! sessions of one player each: a count going up opens that many sessions, going down
//! closes the oldest open ones, so the number of players online is the same at every
//! instant, and a server that stops closes its sessions. Orders of VMs become `provisioning_observed` lines (order to ready), found
//! by replaying the journal through a core with the same configuration, which issues
//! the same commands with the same ids (the recovery test proves it). Inputs that are
//! the platform's own (timeouts, boots, container and node results) or that the format
//! has no event for (deleting a server, cancelling a start, changing a tier) are left
//! out; `ExportStats` counts them.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;

use payperplay_core::{CommandKind, Core, CoreConfig, Event, Input, MIB_PER_GIB, ServerId, Timestamp};
use serde_json::json;

/// What the export wrote and what it left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportStats {
    pub inputs: u64,
    pub lines: u64,
    pub sessions: u64,
    pub provisioning_observed: u64,
    /// Deletes, cancels and tier changes: user actions the format cannot express.
    pub user_actions_left_out: u64,
}

/// Writes the trace of a journal, given oldest first as `(at_ms, input)`.
pub struct TraceExport<W: Write> {
    out: W,
    core: Core,
    header_written: bool,
    last_at_ms: u64,
    /// Open one-player sessions per server, oldest first.
    open: BTreeMap<ServerId, VecDeque<u64>>,
    next_session: u64,
    /// VM orders not answered yet: command id → (ordered at, type, location).
    orders: BTreeMap<u64, (u64, String, String)>,
    stats: ExportStats,
}

impl<W: Write> TraceExport<W> {
    /// `config` must be the core configuration production ran with (VM orders are
    /// found by replaying the journal through it).
    pub fn new(out: W, config: CoreConfig) -> Self {
        TraceExport {
            out,
            core: Core::new(config),
            header_written: false,
            last_at_ms: 0,
            open: BTreeMap::new(),
            next_session: 1,
            orders: BTreeMap::new(),
            stats: ExportStats::default(),
        }
    }

    pub fn push(&mut self, at_ms: u64, input: Input) -> std::io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            self.line(json!({
                "format": "payperplay-trace",
                "version": 1,
                "start_ms": at_ms,
                "source": "payperplay export-trace",
            }))?;
        }
        // The journal's clock never goes backwards; the trace's must not either.
        let at_ms = at_ms.max(self.last_at_ms);
        self.last_at_ms = at_ms;
        self.stats.inputs += 1;
        self.workload_lines(at_ms, &input)?;
        if let Input::CommandSucceeded { command_id } = &input
            && let Some((ordered_at, server_type, location)) = self.orders.remove(&command_id.0)
        {
            let seconds = at_ms.saturating_sub(ordered_at) as f64 / 1000.0;
            self.stats.provisioning_observed += 1;
            self.line(json!({
                "event": "provisioning_observed",
                "at_ms": at_ms,
                "server_type": server_type,
                "location": location,
                "seconds": seconds,
            }))?;
        }
        if let Input::CommandFailed { command_id, .. } = &input {
            self.orders.remove(&command_id.0);
        }
        let _ = self.core.handle(Timestamp(at_ms), input);
        while let Some(command) = self.core.poll_command() {
            if let CommandKind::ProvisionNode {
                server_type, location, ..
            } = command.kind
            {
                let catalog = &self.core.config().catalog;
                let type_name = catalog.server_types[server_type.0 as usize].name.clone();
                let location_name = catalog.locations[location.0 as usize].clone();
                self.orders.insert(command.id.0, (at_ms, type_name, location_name));
            }
        }
        let mut stopped = Vec::new();
        while let Some(event) = self.core.poll_event() {
            if let Event::ServerStopped { server_id, .. } = event {
                stopped.push(server_id);
            }
        }
        for server_id in stopped {
            self.players(at_ms, server_id, 0)?;
        }
        Ok(())
    }

    fn workload_lines(&mut self, at_ms: u64, input: &Input) -> std::io::Result<()> {
        match *input {
            Input::RegisterUser { user_id } => self.line(json!({
                "event": "user_registered", "at_ms": at_ms, "user": user_id.0,
            })),
            Input::TopUp { user_id, amount_micros } => self.line(json!({
                "event": "balance_topped_up", "at_ms": at_ms, "user": user_id.0,
                "amount_eur": amount_micros as f64 / 1e6,
            })),
            Input::CreateServer {
                server_id,
                owner,
                ram_mib,
            } => self.line(json!({
                "event": "server_created", "at_ms": at_ms, "server": server_id.0, "owner": owner.0,
                "ram_gb": ram_mib / MIB_PER_GIB as u32,
            })),
            Input::StartServer { server_id } => self.line(json!({
                "event": "start_requested", "at_ms": at_ms, "server": server_id.0,
            })),
            Input::StopServer { server_id } => self.line(json!({
                "event": "stop_requested", "at_ms": at_ms, "server": server_id.0,
            })),
            Input::PlayerCount { server_id, players } => self.players(at_ms, server_id, players as usize),
            Input::DeleteServer { .. } | Input::CancelStart { .. } | Input::UpdateServerTier { .. } => {
                self.stats.user_actions_left_out += 1;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Open or close one-player sessions until `players` are open on the server.
    fn players(&mut self, at_ms: u64, server_id: ServerId, players: usize) -> std::io::Result<()> {
        let mut open = self.open.remove(&server_id).unwrap_or_default();
        while open.len() < players {
            let session = self.next_session;
            self.next_session += 1;
            open.push_back(session);
            self.stats.sessions += 1;
            self.line(json!({
                "event": "player_joined", "at_ms": at_ms, "server": server_id.0, "session": session, "players": 1,
            }))?;
        }
        while open.len() > players {
            let session = open.pop_front().expect("longer than the target");
            self.line(json!({
                "event": "player_left", "at_ms": at_ms, "server": server_id.0, "session": session,
            }))?;
        }
        if !open.is_empty() {
            self.open.insert(server_id, open);
        }
        Ok(())
    }

    /// The configuration production switched to at this point (a runtime start).
    pub fn reconfigure(&mut self, at_ms: u64, config: CoreConfig) -> Result<(), payperplay_core::ConfigError> {
        self.core.reconfigure(Timestamp(at_ms), config)
    }

    fn line(&mut self, value: serde_json::Value) -> std::io::Result<()> {
        self.stats.lines += 1;
        writeln!(self.out, "{value}")
    }

    /// Flushes the output; sessions still open are left open (the simulator ends them
    /// at the end of the run).
    pub fn finish(mut self) -> std::io::Result<ExportStats> {
        self.out.flush()?;
        Ok(self.stats)
    }
}

/// Why the journal in the database cannot be exported as a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceExportError {
    #[error(
        "the journal was pruned before seq {first_seq} (retention.journal_keep_ms): a trace starts at the \
         journal's first input, so it cannot be exported any more; `export-journal` writes the rows that are left"
    )]
    Pruned { first_seq: i64 },
    #[error("journal entry {seq} is not a core input: {error}")]
    NotAnInput { seq: i64, error: serde_json::Error },
    #[error("the configuration recorded at journal seq {seq}: {reason}")]
    RecordedConfig { seq: i64, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("writing the trace: {0}")]
    Io(#[from] std::io::Error),
}

/// Exports the whole journal as a trace to `out`, replayed under the configuration
/// recorded with each runtime start (`current` when none is recorded). A journal
/// pruned at its start is refused, saying so.
pub async fn export_store<W: Write>(
    store: &crate::store::Store,
    current: CoreConfig,
    out: W,
    page_rows: i64,
) -> Result<ExportStats, TraceExportError> {
    let first_seq = store.journal_seq_min().await?;
    if first_seq > 1 {
        return Err(TraceExportError::Pruned { first_seq });
    }
    let starts = store.runtime_starts().await?;
    let config_at = |start: &crate::store::RuntimeStart| -> Result<CoreConfig, TraceExportError> {
        serde_json::from_value(start.core_config.clone()).map_err(|error| TraceExportError::RecordedConfig {
            seq: start.first_seq,
            reason: error.to_string(),
        })
    };
    let first_config = match starts.first() {
        Some(start) => config_at(start)?,
        None => current,
    };
    let mut export = TraceExport::new(out, first_config);
    let mut next_start = 0;
    store
        .for_each_journal_row(page_rows, |row| -> Result<(), TraceExportError> {
            while let Some(start) = starts.get(next_start).filter(|start| start.first_seq <= row.seq) {
                export
                    .reconfigure(u64::try_from(start.started_at_ms).unwrap_or(0), config_at(start)?)
                    .map_err(|error| TraceExportError::RecordedConfig {
                        seq: start.first_seq,
                        reason: error.to_string(),
                    })?;
                next_start += 1;
            }
            let input: Input = serde_json::from_value(row.input)
                .map_err(|error| TraceExportError::NotAnInput { seq: row.seq, error })?;
            export.push(u64::try_from(row.at_ms).unwrap_or(0), input)?;
            Ok(())
        })
        .await?;
    Ok(export.finish()?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use payperplay_core::{CommandId, MS_PER_MINUTE, UserId};

    use super::*;

    fn export(inputs: Vec<(u64, Input)>, config: CoreConfig) -> (String, ExportStats) {
        let mut buffer = Vec::new();
        let mut export = TraceExport::new(&mut buffer, config);
        for (at_ms, input) in inputs {
            export.push(at_ms, input).unwrap();
        }
        let stats = export.finish().unwrap();
        (String::from_utf8(buffer).unwrap(), stats)
    }

    #[test]
    fn player_counts_become_sessions_the_simulator_reads() {
        let t0 = 1_767_571_200_000;
        let server = ServerId(7);
        let inputs = vec![
            (
                t0,
                Input::AddDedicatedNode {
                    name: "ax".into(),
                    capacity_mib: 65536,
                    monthly_cost_micros: 1,
                    is_system: false,
                },
            ),
            (t0, Input::RegisterUser { user_id: UserId(3) }),
            (
                t0,
                Input::TopUp {
                    user_id: UserId(3),
                    amount_micros: 25_000_000,
                },
            ),
            (
                t0,
                Input::CreateServer {
                    server_id: server,
                    owner: UserId(3),
                    ram_mib: 4096,
                },
            ),
            (t0 + MS_PER_MINUTE, Input::StartServer { server_id: server }),
            (t0 + 2 * MS_PER_MINUTE, Input::ServerBooted { server_id: server }),
            (
                t0 + 3 * MS_PER_MINUTE,
                Input::PlayerCount {
                    server_id: server,
                    players: 3,
                },
            ),
            (
                t0 + 20 * MS_PER_MINUTE,
                Input::PlayerCount {
                    server_id: server,
                    players: 1,
                },
            ),
            (t0 + 25 * MS_PER_MINUTE, Input::CancelStart { server_id: server }),
            (t0 + 40 * MS_PER_MINUTE, Input::StopServer { server_id: server }),
            (t0 + 41 * MS_PER_MINUTE, Input::ContainerExited { server_id: server }),
        ];
        let (text, stats) = export(inputs, CoreConfig::default());
        let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(events[0]["format"], "payperplay-trace");
        assert_eq!(events[0]["start_ms"], t0);
        let kinds: Vec<&str> = events[1..].iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "user_registered",
                "balance_topped_up",
                "server_created",
                "start_requested",
                "player_joined",
                "player_joined",
                "player_joined",
                "player_left",
                "player_left",
                "stop_requested",
                "player_left",
            ]
        );
        // The oldest sessions leave first; the last one leaves when the container exits.
        assert_eq!(events[8]["session"], 1);
        assert_eq!(events[9]["session"], 2);
        assert_eq!(events[11]["session"], 3);
        assert_eq!(events[3]["ram_gb"], 4);
        assert_eq!(events[2]["amount_eur"], 25.0);
        assert_eq!(
            stats,
            ExportStats {
                inputs: 11,
                lines: 12,
                sessions: 3,
                provisioning_observed: 0,
                user_actions_left_out: 1,
            }
        );

        let trace = payperplay_sim::trace::Trace::read(text.as_bytes(), Path::new("export.jsonl")).unwrap();
        assert_eq!((trace.n_users, trace.n_servers), (1, 1));
        assert_eq!(trace.start, Timestamp(t0));
    }

    #[test]
    fn vm_orders_become_provisioning_observations() {
        let mut config = CoreConfig::default();
        config.catalog.server_types = vec![payperplay_core::VmType {
            name: "cpx42".into(),
            ram_mib: 16 * 1024,
            vcpu: 8,
            price_micros_per_hour: 40_000,
            monthly_cap_micros: 24_000_000,
        }];
        config.catalog.locations = vec!["fsn1".into()];
        config.policy.reactive = Some(payperplay_core::ReactiveConfig::default());
        config.policy.max_cloud_nodes = 4;
        assert!(config.policy.autoscales(), "the test needs an autoscaling policy");
        let t0 = 1_767_571_200_000;
        let mut inputs = vec![
            (t0, Input::RegisterUser { user_id: UserId(1) }),
            (
                t0,
                Input::TopUp {
                    user_id: UserId(1),
                    amount_micros: 50_000_000,
                },
            ),
            (
                t0,
                Input::CreateServer {
                    server_id: ServerId(1),
                    owner: UserId(1),
                    ram_mib: 4096,
                },
            ),
            // No dedicated node: the start queues and the core orders a VM.
            (t0 + 1000, Input::StartServer { server_id: ServerId(1) }),
        ];
        // Find the order's command id by replaying the same inputs.
        let mut core = Core::new(config.clone());
        let mut order = None;
        for (at, input) in &inputs {
            core.handle(Timestamp(*at), input.clone()).unwrap();
            while let Some(command) = core.poll_command() {
                if matches!(command.kind, CommandKind::ProvisionNode { .. }) {
                    order = order.or(Some(command.id));
                }
            }
        }
        let order: CommandId = order.expect("a VM was ordered");
        inputs.push((t0 + 1000 + 93_500, Input::CommandSucceeded { command_id: order }));
        let (text, stats) = export(inputs, config.clone());
        let observed: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] == "provisioning_observed")
            .collect();
        assert_eq!(observed.len(), 1, "{text}");
        assert_eq!(observed[0]["seconds"], 93.5);
        assert_eq!(observed[0]["server_type"], "cpx42");
        assert_eq!(observed[0]["location"], "fsn1");
        assert_eq!(stats.provisioning_observed, 1);
        let trace = payperplay_sim::trace::Trace::read(text.as_bytes(), Path::new("export.jsonl")).unwrap();
        assert_eq!(trace.provisioning_samples.values().map(Vec::len).sum::<usize>(), 1);
    }
}
