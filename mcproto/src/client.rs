//! The status-ping client: is a server up, and how many play on it?

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::ProtoError;
use crate::frame::{PACKET_BYTES_MAX, read_frame};
use crate::packets::{self, Handshake, NextState, StatusResponse, StatusVersion, ids};

/// The protocol version a status ping announces: -1, the convention for "any version"
/// (servers answer with their own).
pub const STATUS_PING_PROTOCOL: i32 = -1;

/// What a status ping learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// Ping to pong, on the open connection.
    pub latency_ms: u64,
    pub version: StatusVersion,
    pub players_online: i64,
    pub players_max: i64,
    /// The description as plain text.
    pub motd: String,
}

/// Connects to `address`, sends a handshake naming `hostname` (what a player would have
/// typed; a router routes by it), asks for the status and measures a ping. The whole
/// exchange is bounded by `timeout`.
pub async fn status_ping(address: SocketAddr, hostname: &str, timeout: Duration) -> Result<StatusReport, ProtoError> {
    let timeout_ms = timeout.as_millis() as u64;
    tokio::time::timeout(timeout, exchange(address, hostname))
        .await
        .map_err(|_| ProtoError::Timeout {
            what: "status ping",
            timeout_ms,
        })?
}

async fn exchange(address: SocketAddr, hostname: &str) -> Result<StatusReport, ProtoError> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let handshake = Handshake {
        protocol_version: STATUS_PING_PROTOCOL,
        server_address: hostname.to_owned(),
        server_port: address.port(),
        next_state: NextState::Status,
    };
    let mut request = handshake.to_packet().encode();
    request.extend(packets::status_request().encode());
    stream.get_mut().write_all(&request).await?;
    let response = StatusResponse::from_packet(&read_frame(&mut stream, PACKET_BYTES_MAX).await?)?;

    let token = i64::from(address.port()) << 32 | 0x5045_5050;
    #[allow(clippy::disallowed_methods, reason = "latency is measured, not fed to the core")]
    let sent_at = Instant::now();
    stream
        .get_mut()
        .write_all(&packets::ping_packet(ids::PING, token).encode())
        .await?;
    let pong = read_frame(&mut stream, PACKET_BYTES_MAX).await?;
    let latency_ms = sent_at.elapsed().as_millis() as u64;
    let echoed = packets::ping_payload(&pong, ids::PONG, "pong")?;
    if echoed != token {
        return Err(ProtoError::Malformed {
            what: "pong",
            detail: format!("echoed {echoed}, sent {token}"),
        });
    }
    Ok(StatusReport {
        latency_ms,
        motd: response.motd(),
        players_online: response.players.online,
        players_max: response.players.max,
        version: response.version,
    })
}
