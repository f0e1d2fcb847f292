//! One player connection, from its first byte to its end.
//!
//! ```text
//! accept ─► opening (deadline) ─┬─ legacy ping ─► answered here (a running server's figures via a status ping)
//!                               └─ handshake ─► hostname ─► Backend::resolve
//!     status: running ─► proxied │ otherwise ─► answered here (MOTD by state)
//!     login:  read Login Start (same deadline), then
//!             running ─► proxied (join and leave reported)
//!             asleep  ─► no balance: disconnect │ wake ─► hold
//!             starting, queued, stopping ─► hold
//!     hold:   poll resolve every hold_poll_ms until running (then proxied) or hold_ms
//!             ran out (then a disconnect saying where the start stands)
//! ```
//!
//! Whatever a connection sends, only that connection is closed: every read has a cap
//! and, until the player is handed to a server, a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use payperplay_mcproto::ProtoError;
use payperplay_mcproto::frame::{Packet, read_frame};
use payperplay_mcproto::legacy::{LegacyRequest, LegacyStatus};
use payperplay_mcproto::packets::{self, Handshake, LoginStart, NextState, ids};
use payperplay_mcproto::server::{Opening, read_opening};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use crate::Shared;
use crate::answer::{self, Shown, disconnect};
use crate::backend::{Backend, RequestedHost, Route, ServerState, WakeOutcome};
use crate::hostname;
use crate::proxy;

/// After a lone `0xFE`, how long to wait for the rest of a legacy ping.
pub const LEGACY_WINDOW_MS: u64 = 150;
/// The read buffer while the opening is parsed; what it holds beyond the opening is
/// forwarded to the server.
pub const OPENING_BUFFER_BYTES: usize = 2 * 1024;
/// Status request and ping packets are a few bytes; anything larger is not one.
pub const STATUS_PACKET_BYTES_MAX: usize = 64;
/// Login Start: a name, and from 1.19 a UUID and (1.19–1.19.2) a signed public key.
pub const LOGIN_START_BYTES_MAX: usize = 4 * 1024;
/// Bytes a held player may send before their server runs (a 1.12.2 client sends none).
pub const HELD_BYTES_MAX: usize = 8 * 1024;
/// Status pings and answers exchanged on one connection before it is closed.
pub const STATUS_PACKETS_MAX: usize = 4;
/// Bound on the status ping that answers a legacy ping for a running server.
pub const LEGACY_BACKEND_PING_MS: u64 = 2_000;

/// Why a connection ended early (logged at debug level, counted by reason).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("no complete opening within {timeout_ms} ms")]
    OpeningTimeout { timeout_ms: u64 },
    #[error("malformed opening: {0}")]
    Protocol(#[from] ProtoError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the player sent more than {max_bytes} bytes while held")]
    HeldBytesExceeded { max_bytes: usize },
}

impl ConnectionError {
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectionError::OpeningTimeout { .. } => "opening_timeout",
            ConnectionError::Protocol(ProtoError::PacketTooLarge { .. }) => "packet_too_large",
            ConnectionError::Protocol(_) => "malformed",
            ConnectionError::Io(_) => "io",
            ConnectionError::HeldBytesExceeded { .. } => "held_bytes_exceeded",
        }
    }
}

/// Serves one accepted connection.
pub async fn serve<B: Backend>(
    shared: Arc<Shared<B>>,
    stream: TcpStream,
    peer: SocketAddr,
) -> Result<(), ConnectionError> {
    stream.set_nodelay(true)?;
    let config = &shared.config;
    let deadline = Instant::now() + config.handshake_timeout();
    let timed_out = || ConnectionError::OpeningTimeout {
        timeout_ms: config.handshake_timeout_ms,
    };
    let mut reader = BufReader::with_capacity(OPENING_BUFFER_BYTES, stream);
    let legacy_window = Duration::from_millis(LEGACY_WINDOW_MS);
    let opening = timeout_at(deadline, read_opening(&mut reader, legacy_window))
        .await
        .map_err(|_| timed_out())??;
    let (handshake, raw_handshake) = match opening {
        Opening::Legacy(request) => {
            metrics::counter!("router_connections_total", "kind" => "legacy").increment(1);
            return answer_legacy(&shared, reader.into_inner(), &request).await;
        }
        Opening::Handshake { handshake, raw } => (handshake, raw),
    };
    let host = hostname::parse(&handshake.server_address, &config.domain);
    match handshake.next_state {
        NextState::Status => {
            metrics::counter!("router_connections_total", "kind" => "status").increment(1);
            let mut forward = raw_handshake;
            serve_status(&shared, reader, peer, &handshake, host, &mut forward, deadline).await
        }
        NextState::Login | NextState::Transfer => {
            metrics::counter!("router_connections_total", "kind" => "login").increment(1);
            let login_packet = timeout_at(deadline, read_frame(&mut reader, LOGIN_START_BYTES_MAX))
                .await
                .map_err(|_| timed_out())??;
            let login_received_at = Instant::now();
            let login_start = LoginStart::from_packet(&login_packet)?;
            let mut forward = raw_handshake;
            forward.extend_from_slice(&login_packet.encode());
            forward.extend_from_slice(reader.buffer());
            let player = Player {
                stream: reader.into_inner(),
                peer,
                name: login_start.name,
                forward,
                login_received_at,
            };
            serve_login(&shared, player, host).await
        }
    }
}

/// A player between their Login Start and their server.
struct Player {
    stream: TcpStream,
    peer: SocketAddr,
    name: String,
    /// What goes to the server before anything else: handshake, Login Start, and
    /// whatever the player sent after them.
    forward: Vec<u8>,
    login_received_at: Instant,
}

async fn serve_status<B: Backend>(
    shared: &Arc<Shared<B>>,
    mut reader: BufReader<TcpStream>,
    peer: SocketAddr,
    handshake: &Handshake,
    host: Result<RequestedHost, hostname::HostnameError>,
    forward: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), ConnectionError> {
    let shown = match &host {
        Err(_) => answer::shown_for_unknown("that address"),
        Ok(requested) => match shared.backend.resolve(requested).await {
            Ok(Some(route)) => match route.state {
                ServerState::Running { address } => match connect(shared, address).await {
                    Ok(mut server) => {
                        // What the client sent past the handshake (its status request) goes too.
                        forward.extend_from_slice(reader.buffer());
                        send_preamble(shared, &mut server, &route, peer, address, forward).await?;
                        proxy::splice(reader.into_inner(), server).await;
                        return Ok(());
                    }
                    Err(error) => {
                        tracing::warn!(server_id = route.server_id, %address, %error, "a running server does not answer a status ping");
                        answer::shown_for_route(&route)
                    }
                },
                _ => answer::shown_for_route(&route),
            },
            Ok(None) => answer::shown_for_unknown(&host_text(requested, &shared.config.domain)),
            Err(error) => {
                tracing::warn!(%error, "status ping: the platform did not answer");
                answer::shown_for_platform_error()
            }
        },
    };
    let response = answer::status_response(&shown, &shared.config.status_version_name, handshake.protocol_version);
    let timed_out = ConnectionError::OpeningTimeout {
        timeout_ms: shared.config.handshake_timeout_ms,
    };
    timeout_at(deadline, answer_status(&mut reader, &response.to_packet()?))
        .await
        .map_err(|_| timed_out)?
}

/// Status requests and a ping, in any order, until the ping (then the connection ends).
async fn answer_status(reader: &mut BufReader<TcpStream>, status: &Packet) -> Result<(), ConnectionError> {
    for _ in 0..STATUS_PACKETS_MAX {
        let packet = match read_frame(reader, STATUS_PACKET_BYTES_MAX).await {
            Ok(packet) => packet,
            // A client that read the status and left.
            Err(ProtoError::Closed { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        if packet.id == ids::STATUS_REQUEST && packet.body.is_empty() {
            reader.get_mut().write_all(&status.encode()).await?;
        } else {
            let token = packets::ping_payload(&packet, ids::PING, "ping")?;
            reader
                .get_mut()
                .write_all(&packets::ping_packet(ids::PONG, token).encode())
                .await?;
            return Ok(());
        }
    }
    Ok(())
}

async fn serve_login<B: Backend>(
    shared: &Arc<Shared<B>>,
    mut player: Player,
    host: Result<RequestedHost, hostname::HostnameError>,
) -> Result<(), ConnectionError> {
    let Ok(requested) = host else {
        return refuse(&mut player, "bad_address", &disconnect::bad_address()).await;
    };
    let route = match shared.backend.resolve(&requested).await {
        Ok(Some(route)) => route,
        Ok(None) => {
            let reason = disconnect::unknown(&host_text(&requested, &shared.config.domain));
            return refuse(&mut player, "unknown_host", &reason).await;
        }
        Err(error) => {
            tracing::warn!(%error, "login: the platform did not answer");
            return refuse(&mut player, "platform_error", &disconnect::platform_error()).await;
        }
    };
    match route.state {
        ServerState::Running { address } => join(shared, player, &route, address).await,
        ServerState::Sleeping | ServerState::Stopped => {
            let Some(state) = wake(shared, &mut player, &route).await? else {
                return Ok(());
            };
            hold(shared, player, &requested, route, state, true).await
        }
        ServerState::Starting | ServerState::Queued { .. } | ServerState::Stopping => {
            let state = route.state.clone();
            hold(shared, player, &requested, route, state, false).await
        }
    }
}

/// Starts an asleep server for a joining player: the new state, or `None` after the
/// player was told why it will not start.
async fn wake<B: Backend>(
    shared: &Arc<Shared<B>>,
    player: &mut Player,
    route: &Route,
) -> Result<Option<ServerState>, ConnectionError> {
    if !route.balance_allows_start {
        tracing::info!(server_id = route.server_id, player = %player.name, "login to an asleep server whose owner's balance is too low: not woken");
        metrics::counter!("router_wakes_total", "outcome" => "no_balance").increment(1);
        refuse(player, "no_balance", &disconnect::insufficient_balance()).await?;
        return Ok(None);
    }
    let waking_at = Instant::now();
    metrics::histogram!("router_wake_call_seconds").record((waking_at - player.login_received_at).as_secs_f64());
    let outcome = shared.backend.wake(route.server_id).await;
    tracing::info!(server_id = route.server_id, player = %player.name, ?outcome, "a login woke the server");
    match outcome {
        Ok(WakeOutcome::Starting) => {
            metrics::counter!("router_wakes_total", "outcome" => "starting").increment(1);
            Ok(Some(ServerState::Starting))
        }
        Ok(WakeOutcome::Queued { position, eta_s }) => {
            metrics::counter!("router_wakes_total", "outcome" => "queued").increment(1);
            Ok(Some(ServerState::Queued { position, eta_s }))
        }
        Ok(WakeOutcome::Refused(refusal)) => {
            metrics::counter!("router_wakes_total", "outcome" => "refused").increment(1);
            refuse(player, "wake_refused", &disconnect::refused(&refusal)).await?;
            Ok(None)
        }
        Err(error) => {
            tracing::warn!(server_id = route.server_id, %error, "wake: the platform did not answer");
            metrics::counter!("router_wakes_total", "outcome" => "platform_error").increment(1);
            refuse(player, "platform_error", &disconnect::platform_error()).await?;
            Ok(None)
        }
    }
}

/// Holds a player until their server runs (then joins them) or `hold_ms` runs out.
async fn hold<B: Backend>(
    shared: &Arc<Shared<B>>,
    mut player: Player,
    requested: &RequestedHost,
    mut route: Route,
    mut state: ServerState,
    mut woken: bool,
) -> Result<(), ConnectionError> {
    let config = &shared.config;
    let held_at = Instant::now();
    let hold_deadline = held_at + config.hold();
    metrics::gauge!("router_players_held").increment(1.0);
    let _held = GaugeGuard("router_players_held");
    let mut scratch = [0u8; 512];
    loop {
        let next_poll = (Instant::now() + config.hold_poll()).min(hold_deadline);
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {}
            ready = player.stream.readable() => {
                ready?;
                match player.stream.try_read(&mut scratch) {
                    Ok(0) => {
                        tracing::info!(server_id = route.server_id, player = %player.name, "a held player left before their server ran");
                        metrics::counter!("router_holds_total", "outcome" => "left").increment(1);
                        return Ok(());
                    }
                    Ok(n) => {
                        if player.forward.len() + n > HELD_BYTES_MAX {
                            return Err(ConnectionError::HeldBytesExceeded { max_bytes: HELD_BYTES_MAX });
                        }
                        player.forward.extend_from_slice(&scratch[..n]);
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error.into()),
                }
                continue;
            }
        }
        match shared.backend.resolve(requested).await {
            Ok(Some(now)) => {
                route = now;
                match route.state.clone() {
                    ServerState::Running { address } => {
                        metrics::counter!("router_holds_total", "outcome" => "joined").increment(1);
                        metrics::histogram!("router_hold_seconds").record(held_at.elapsed().as_secs_f64());
                        return join(shared, player, &route, address).await;
                    }
                    asleep if asleep.is_asleep() && !woken => {
                        // It was stopping and has stopped: start it now.
                        woken = true;
                        match wake(shared, &mut player, &route).await? {
                            Some(next) => state = next,
                            None => return Ok(()),
                        }
                    }
                    other => state = other,
                }
            }
            Ok(None) => return refuse(&mut player, "gone", &disconnect::gone()).await,
            Err(error) => tracing::warn!(%error, "hold: the platform did not answer; still holding"),
        }
        if Instant::now() >= hold_deadline {
            metrics::counter!("router_holds_total", "outcome" => "timed_out").increment(1);
            tracing::info!(server_id = route.server_id, player = %player.name, ?state, "the hold ran out before the server ran");
            return refuse(&mut player, "hold_timed_out", &disconnect::still_waking(&state)).await;
        }
    }
}

/// Hands the player to their running server and carries bytes until either side ends.
async fn join<B: Backend>(
    shared: &Arc<Shared<B>>,
    mut player: Player,
    route: &Route,
    address: SocketAddr,
) -> Result<(), ConnectionError> {
    let connected = match connect(shared, address).await {
        Ok(mut server) => send_preamble(shared, &mut server, route, player.peer, address, &player.forward)
            .await
            .map(|()| server),
        Err(error) => Err(error),
    };
    let server = match connected {
        Ok(server) => server,
        Err(error) => {
            tracing::warn!(server_id = route.server_id, %address, %error, "a running server does not answer a login");
            return refuse(&mut player, "unreachable", &disconnect::unreachable()).await;
        }
    };
    shared.backend.player_joined(route.server_id, &player.name).await;
    metrics::counter!("router_joins_total").increment(1);
    metrics::gauge!("router_players_proxied").increment(1.0);
    tracing::info!(server_id = route.server_id, player = %player.name, peer = %player.peer, "a player joined");
    let leave = LeaveReport {
        shared: Arc::clone(shared),
        server_id: route.server_id,
        name: Some(player.name.clone()),
    };
    let carried = proxy::splice(player.stream, server).await;
    tracing::info!(
        server_id = route.server_id,
        player = %player.name,
        to_server_bytes = carried.to_server_bytes,
        to_player_bytes = carried.to_player_bytes,
        "a player left"
    );
    leave.report().await;
    Ok(())
}

/// Reports a leave exactly once: awaited at the end of a session, or from a task
/// spawned when the session is dropped (the router stopped).
struct LeaveReport<B: Backend> {
    shared: Arc<Shared<B>>,
    server_id: u64,
    name: Option<String>,
}

impl<B: Backend> LeaveReport<B> {
    async fn report(mut self) {
        if let Some(name) = self.name.take() {
            metrics::gauge!("router_players_proxied").decrement(1.0);
            self.shared.backend.player_left(self.server_id, &name).await;
        }
    }
}

impl<B: Backend> Drop for LeaveReport<B> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            metrics::gauge!("router_players_proxied").decrement(1.0);
            let shared = Arc::clone(&self.shared);
            let server_id = self.server_id;
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { shared.backend.player_left(server_id, &name).await });
            }
        }
    }
}

/// Decrements a gauge when dropped.
struct GaugeGuard(&'static str);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

/// Connects to a running server, bounded by `backend_connect_timeout_ms`.
async fn connect<B: Backend>(shared: &Shared<B>, address: SocketAddr) -> Result<TcpStream, std::io::Error> {
    let connect_timeout = shared.config.backend_connect_timeout();
    let server = timeout(connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    server.set_nodelay(true)?;
    Ok(server)
}

/// Sends the optional PROXY header and `forward` (what the player sent so far).
async fn send_preamble<B: Backend>(
    shared: &Shared<B>,
    server: &mut TcpStream,
    route: &Route,
    peer: SocketAddr,
    address: SocketAddr,
    forward: &[u8],
) -> Result<(), std::io::Error> {
    let mut preamble = Vec::with_capacity(forward.len() + 52);
    if route.proxy_protocol.unwrap_or(shared.config.proxy_protocol) {
        preamble.extend_from_slice(&proxy::proxy_v2_header(peer, address));
    }
    preamble.extend_from_slice(forward);
    server.write_all(&preamble).await
}

/// Sends a login disconnect and closes.
async fn refuse(player: &mut Player, reason: &'static str, text: &str) -> Result<(), ConnectionError> {
    metrics::counter!("router_login_refusals_total", "reason" => reason).increment(1);
    tracing::debug!(player = %player.name, peer = %player.peer, reason, "login refused");
    player
        .stream
        .write_all(&packets::login_disconnect(text).encode())
        .await?;
    player.stream.shutdown().await?;
    Ok(())
}

async fn answer_legacy<B: Backend>(
    shared: &Shared<B>,
    mut stream: TcpStream,
    request: &LegacyRequest,
) -> Result<(), ConnectionError> {
    let config = &shared.config;
    let host = match request {
        LegacyRequest::WithPayload { host: Some(host), .. } => Some(host.as_str()),
        _ => None,
    };
    let status = match host {
        None => answer::legacy_status(
            &answer::shown_for_hostless_legacy(&config.domain),
            &config.status_version_name,
        ),
        Some(raw) => match hostname::parse(raw, &config.domain) {
            Err(_) => answer::legacy_status(&answer::shown_for_unknown("that address"), &config.status_version_name),
            Ok(requested) => legacy_for(shared, &requested).await,
        },
    };
    stream.write_all(&status.encode_for(request)).await?;
    stream.shutdown().await?;
    Ok(())
}

async fn legacy_for<B: Backend>(shared: &Shared<B>, requested: &RequestedHost) -> LegacyStatus {
    let config = &shared.config;
    let shown: Shown = match shared.backend.resolve(requested).await {
        Ok(Some(route)) => {
            if let ServerState::Running { address } = route.state {
                let hostname = host_text(requested, &config.domain);
                let bound = Duration::from_millis(LEGACY_BACKEND_PING_MS);
                if let Ok(report) = payperplay_mcproto::status_ping(address, &hostname, bound).await {
                    return LegacyStatus {
                        protocol: 127,
                        version: report.version.name,
                        motd: report.motd,
                        online: report.players_online,
                        max: report.players_max,
                    };
                }
            }
            answer::shown_for_route(&route)
        }
        Ok(None) => answer::shown_for_unknown(&host_text(requested, &config.domain)),
        Err(_) => answer::shown_for_platform_error(),
    };
    answer::legacy_status(&shown, &config.status_version_name)
}

/// The hostname as the player typed it (normalised).
fn host_text(requested: &RequestedHost, domain: &str) -> String {
    match requested {
        RequestedHost::Name(name) => format!("{name}.{domain}"),
        RequestedHost::Custom(hostname) => hostname.clone(),
    }
}
