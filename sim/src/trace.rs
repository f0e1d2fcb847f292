//! The trace format (JSONL, version 1): a recorded or frozen workload, one event per
//! line, documented in `scenarios/README.md`. The first line is a header:
//!
//! ```json
//! {"format":"payperplay-trace","version":1,"start_ms":1767571200000,"end_ms":1768176000000,"source":"..."}
//! ```
//!
//! then one event per line, in time order (`at_ms`, Unix milliseconds, never
//! decreasing):
//!
//! ```json
//! {"event":"user_registered","at_ms":1767571200000,"user":1}
//! {"event":"balance_topped_up","at_ms":1767571200000,"user":1,"amount_eur":25.0}
//! {"event":"server_created","at_ms":1767571200000,"server":7,"owner":1,"ram_gb":4}
//! {"event":"player_joined","at_ms":1767580000000,"server":7,"session":12,"players":2}
//! {"event":"player_left","at_ms":1767583600000,"server":7,"session":12}
//! {"event":"start_requested","at_ms":1767590000000,"server":7}
//! {"event":"stop_requested","at_ms":1767591000000,"server":7}
//! {"event":"provisioning_observed","at_ms":1767591000000,"server_type":"cpx42","location":"fsn1","seconds":93.5}
//! ```
//!
//! Replay semantics: a join to a server that is not running asks for a start and the
//! players wait; they play for `left − joined` from the moment the server runs (a
//! recording made while servers were running replays exactly; under a slower policy
//! the session shifts later instead of being cut short).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use payperplay_core::{MICROS_PER_EUR, Timestamp};
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::workload::{Generator, WorkEvent};

pub const FORMAT: &str = "payperplay-trace";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// Start of the recording; the simulation starts here.
    pub start_ms: u64,
    /// End of the recording; sessions still open then end here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// Free text: where the trace came from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// One line after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    UserRegistered {
        at_ms: u64,
        user: u64,
    },
    BalanceToppedUp {
        at_ms: u64,
        user: u64,
        amount_eur: f64,
    },
    ServerCreated {
        at_ms: u64,
        server: u64,
        owner: u64,
        ram_gb: u32,
        /// The owner plays at a regular time of day (set by the generator's habits).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        regular: bool,
    },
    StartRequested {
        at_ms: u64,
        server: u64,
    },
    StopRequested {
        at_ms: u64,
        server: u64,
    },
    PlayerJoined {
        at_ms: u64,
        server: u64,
        session: u64,
        players: u32,
    },
    PlayerLeft {
        at_ms: u64,
        server: u64,
        session: u64,
    },
    /// A measured time from ordering a VM to it being ready.
    ProvisioningObserved {
        at_ms: u64,
        server_type: String,
        location: String,
        seconds: f64,
    },
}

impl Record {
    pub fn at_ms(&self) -> u64 {
        match self {
            Record::UserRegistered { at_ms, .. }
            | Record::BalanceToppedUp { at_ms, .. }
            | Record::ServerCreated { at_ms, .. }
            | Record::StartRequested { at_ms, .. }
            | Record::StopRequested { at_ms, .. }
            | Record::PlayerJoined { at_ms, .. }
            | Record::PlayerLeft { at_ms, .. }
            | Record::ProvisioningObserved { at_ms, .. } => *at_ms,
        }
    }
}

/// A trace compiled for replay: dense ids, sessions paired with their ends.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    pub file: PathBuf,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    /// Events at the start instant (users, balances and servers that already exist).
    pub setup: Vec<WorkEvent>,
    /// Everything after, in time order.
    pub events: Vec<(Timestamp, WorkEvent)>,
    pub n_users: u32,
    pub n_servers: u32,
    /// Observed provisioning latencies in seconds, by (server type, location).
    pub provisioning_samples: BTreeMap<(String, String), Vec<f64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{file}: cannot read: {source}")]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

impl Trace {
    pub fn load(path: &Path) -> Result<Arc<Trace>, TraceError> {
        let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
            file: path.into(),
            source,
        })?;
        Trace::read(std::io::BufReader::with_capacity(1 << 16, file), path).map(Arc::new)
    }

    /// Parse a trace; `file` is used in error messages only.
    pub fn read(reader: impl BufRead, file: &Path) -> Result<Trace, TraceError> {
        let invalid = |line: usize, message: String| TraceError::Invalid {
            file: file.into(),
            line,
            message,
        };
        let io = |source| TraceError::Io {
            file: file.into(),
            source,
        };
        let mut lines = reader.lines().enumerate();
        let header: Header = loop {
            let Some((i, line)) = lines.next() else {
                return Err(invalid(1, "empty trace: the first line must be the header".into()));
            };
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            break serde_json::from_str(&line).map_err(|e| invalid(i + 1, format!("header: {e}")))?;
        };
        if header.format != FORMAT {
            return Err(invalid(
                1,
                format!("header.format: expected {FORMAT:?}, got {:?}", header.format),
            ));
        }
        if header.version != VERSION {
            return Err(invalid(
                1,
                format!(
                    "header.version: this simulator reads version {VERSION}, got {}",
                    header.version
                ),
            ));
        }
        let start = Timestamp(header.start_ms);
        let mut trace = Trace {
            file: file.into(),
            start,
            end: header.end_ms.map(Timestamp),
            ..Trace::default()
        };
        let mut users: BTreeMap<u64, u32> = BTreeMap::new();
        let mut servers: BTreeMap<u64, u32> = BTreeMap::new();
        // Open sessions: id -> index into `events` of its join.
        let mut open: BTreeMap<u64, usize> = BTreeMap::new();
        let mut last_at = header.start_ms;
        for (i, line) in lines {
            let n = i + 1;
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Record = serde_json::from_str(&line).map_err(|e| invalid(n, e.to_string()))?;
            let at_ms = record.at_ms();
            if at_ms < last_at {
                return Err(invalid(
                    n,
                    format!("at_ms: {at_ms} is earlier than the line before ({last_at}); events must be in time order"),
                ));
            }
            last_at = at_ms;
            let at = Timestamp(at_ms);
            let user_idx = |users: &BTreeMap<u64, u32>, id: u64, field: &str| {
                users
                    .get(&id)
                    .copied()
                    .ok_or_else(|| invalid(n, format!("{field}: user {id} is not registered before this line")))
            };
            let server_idx = |servers: &BTreeMap<u64, u32>, id: u64| {
                servers
                    .get(&id)
                    .copied()
                    .ok_or_else(|| invalid(n, format!("server: server {id} is not created before this line")))
            };
            let event = match record {
                Record::UserRegistered { user, .. } => {
                    if users.contains_key(&user) {
                        return Err(invalid(n, format!("user: user {user} is registered twice")));
                    }
                    let idx = users.len() as u32;
                    users.insert(user, idx);
                    WorkEvent::RegisterUser { user: idx }
                }
                Record::BalanceToppedUp { user, amount_eur, .. } => {
                    let amount_micros = (amount_eur * MICROS_PER_EUR as f64).round() as i64;
                    // At least one micro-EUR: the core refuses a top-up of nothing.
                    if !(amount_eur.is_finite() && amount_micros > 0) {
                        return Err(invalid(n, format!("amount_eur: must be positive, got {amount_eur}")));
                    }
                    WorkEvent::TopUp {
                        user: user_idx(&users, user, "user")?,
                        amount_micros,
                    }
                }
                Record::ServerCreated {
                    server,
                    owner,
                    ram_gb,
                    regular,
                    ..
                } => {
                    if servers.contains_key(&server) {
                        return Err(invalid(n, format!("server: server {server} is created twice")));
                    }
                    if ram_gb == 0 {
                        return Err(invalid(n, "ram_gb: must be at least 1".into()));
                    }
                    let owner = user_idx(&users, owner, "owner")?;
                    let idx = servers.len() as u32;
                    servers.insert(server, idx);
                    WorkEvent::CreateServer {
                        server: idx,
                        owner,
                        ram_mib: ram_gb * 1024,
                        regular,
                    }
                }
                Record::StartRequested { server, .. } => WorkEvent::StartRequested {
                    server: server_idx(&servers, server)?,
                },
                Record::StopRequested { server, .. } => WorkEvent::StopRequested {
                    server: server_idx(&servers, server)?,
                },
                Record::PlayerJoined {
                    server,
                    session,
                    players,
                    ..
                } => {
                    if players == 0 {
                        return Err(invalid(n, "players: must be at least 1".into()));
                    }
                    let server = server_idx(&servers, server)?;
                    if open.insert(session, trace.events.len()).is_some() {
                        return Err(invalid(n, format!("session: session {session} is already open")));
                    }
                    WorkEvent::Session {
                        server,
                        players,
                        length_ms: u64::MAX,
                    }
                }
                Record::PlayerLeft { server, session, .. } => {
                    let server = server_idx(&servers, server)?;
                    let Some(idx) = open.remove(&session) else {
                        return Err(invalid(n, format!("session: session {session} never joined")));
                    };
                    let (joined, event) = &mut trace.events[idx];
                    match event {
                        WorkEvent::Session {
                            server: s, length_ms, ..
                        } if *s == server => *length_ms = at.since(*joined),
                        _ => return Err(invalid(n, format!("server: session {session} joined another server"))),
                    }
                    continue;
                }
                Record::ProvisioningObserved {
                    server_type,
                    location,
                    seconds,
                    ..
                } => {
                    if !(seconds.is_finite() && seconds >= 0.0) {
                        return Err(invalid(
                            n,
                            format!("seconds: must be a non-negative number, got {seconds}"),
                        ));
                    }
                    trace
                        .provisioning_samples
                        .entry((server_type, location))
                        .or_default()
                        .push(seconds);
                    continue;
                }
            };
            if at <= start
                && matches!(
                    event,
                    WorkEvent::RegisterUser { .. } | WorkEvent::TopUp { .. } | WorkEvent::CreateServer { .. }
                )
                && trace.events.is_empty()
            {
                trace.setup.push(event);
            } else {
                trace.events.push((at.max(start), event));
            }
        }
        // Sessions still open at the end of the recording end there.
        let end = trace.end.unwrap_or(Timestamp(last_at));
        for idx in open.into_values() {
            let (joined, event) = &mut trace.events[idx];
            if let WorkEvent::Session { length_ms, .. } = event {
                *length_ms = end.since(*joined);
            }
        }
        trace.n_users = users.len() as u32;
        trace.n_servers = servers.len() as u32;
        Ok(trace)
    }
}

/// Write the generator's workload for `scenario` as a trace. Returns how many events
/// were written.
pub fn generate(scenario: &Scenario, out: &mut impl Write) -> std::io::Result<u64> {
    let start = scenario.start();
    let end = start.plus_ms(scenario.duration_ms);
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        start_ms: start.ms(),
        end_ms: Some(end.ms()),
        source: format!("payperplay-sim generate {} (seed {})", scenario.name, scenario.seed),
    };
    let mut writer = Writer { out, lines: 0 };
    writer.line(&header)?;
    let (setup, mut generator) = Generator::new(scenario);
    for event in setup {
        writer.event(start, event, 0)?;
    }
    // Leaves are written when their time comes, so the file stays in time order.
    let mut leaves: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u64, u32)>> = Default::default();
    let mut session = 0u64;
    while let Some((at, event)) = generator.next_event() {
        while let Some(&std::cmp::Reverse((t, id, server))) = leaves.peek() {
            if t > at.ms() {
                break;
            }
            leaves.pop();
            writer.leave(t, server, id)?;
        }
        if let WorkEvent::Session { server, length_ms, .. } = event {
            session += 1;
            leaves.push(std::cmp::Reverse((at.ms().saturating_add(length_ms), session, server)));
        }
        writer.event(at, event, session)?;
    }
    while let Some(std::cmp::Reverse((t, id, server))) = leaves.pop() {
        writer.leave(t, server, id)?;
    }
    Ok(writer.lines)
}

struct Writer<'a, W: Write> {
    out: &'a mut W,
    lines: u64,
}

impl<W: Write> Writer<'_, W> {
    fn line(&mut self, value: &impl Serialize) -> std::io::Result<()> {
        serde_json::to_writer(&mut *self.out, value)?;
        self.out.write_all(b"\n")?;
        self.lines += 1;
        Ok(())
    }

    fn leave(&mut self, at_ms: u64, server: u32, session: u64) -> std::io::Result<()> {
        self.line(&Record::PlayerLeft {
            at_ms,
            server: server as u64 + 1,
            session,
        })
    }

    fn event(&mut self, at: Timestamp, event: WorkEvent, session: u64) -> std::io::Result<()> {
        let at_ms = at.ms();
        let id = |i: u32| i as u64 + 1;
        let record = match event {
            WorkEvent::RegisterUser { user } => Record::UserRegistered { at_ms, user: id(user) },
            WorkEvent::TopUp { user, amount_micros } => Record::BalanceToppedUp {
                at_ms,
                user: id(user),
                amount_eur: amount_micros as f64 / MICROS_PER_EUR as f64,
            },
            WorkEvent::CreateServer {
                server,
                owner,
                ram_mib,
                regular,
            } => Record::ServerCreated {
                at_ms,
                server: id(server),
                owner: id(owner),
                ram_gb: ram_mib / 1024,
                regular,
            },
            WorkEvent::Session { server, players, .. } => Record::PlayerJoined {
                at_ms,
                server: id(server),
                session,
                players,
            },
            WorkEvent::StartRequested { server } => Record::StartRequested {
                at_ms,
                server: id(server),
            },
            WorkEvent::StopRequested { server } => Record::StopRequested {
                at_ms,
                server: id(server),
            },
        };
        self.line(&record)
    }
}
