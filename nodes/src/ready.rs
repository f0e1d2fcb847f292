//! Readiness and player counts: a server is running when its game port answers a
//! Minecraft status ping (`payperplay_mcproto::status_ping`), not when its container
//! starts.

use std::net::SocketAddr;
use std::time::Duration;

pub use payperplay_mcproto::{ProtoError, StatusReport};

/// Pause between status pings while a server boots.
pub const READY_POLL_INTERVAL_MS: u64 = 50;
/// Bound on one status ping.
pub const STATUS_PING_TIMEOUT_MS: u64 = 2_000;
/// Host name sent in the handshake (a router would route by it; a server ignores it).
pub const PING_HOSTNAME: &str = "payperplay.local";

#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("server at {address} did not answer a status ping within {timeout_ms} ms (last attempt: {last_error})")]
    NotAnswering {
        address: SocketAddr,
        timeout_ms: u64,
        last_error: String,
    },
}

/// One status ping: version, MOTD, players online and max.
pub async fn status(address: SocketAddr) -> Result<StatusReport, ProtoError> {
    payperplay_mcproto::status_ping(address, PING_HOSTNAME, Duration::from_millis(STATUS_PING_TIMEOUT_MS)).await
}

/// Players online by RCON `list` (a server may hide them from status pings with
/// `hide-online-players`); every step bounded by `timeout`.
pub async fn players_by_rcon(
    address: SocketAddr,
    password: &secrecy::SecretString,
    timeout: Duration,
) -> Result<u32, ProtoError> {
    use secrecy::ExposeSecret;
    let mut client = payperplay_mcproto::rcon::RconClient::connect(address, password.expose_secret(), timeout).await?;
    let answer = client.command("list").await?;
    players_in_list_answer(&answer).ok_or_else(|| ProtoError::Malformed {
        what: "RCON `list` answer",
        detail: format!("no player count in {answer:?}"),
    })
}

/// The count in a vanilla `list` answer: "There are 3 of a max of 20 players online:
/// ..." (older servers: "There are 3/20 players online:").
pub fn players_in_list_answer(answer: &str) -> Option<u32> {
    let rest = answer.trim().strip_prefix("There are ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Pings `address` every [`READY_POLL_INTERVAL_MS`] until it answers; fails after `timeout`
/// (the configured boot bound) with the last ping's error.
pub async fn wait_until_answering(address: SocketAddr, timeout: Duration) -> Result<StatusReport, ReadyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let error = match status(address).await {
            Ok(report) => return Ok(report),
            Err(error) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(ReadyError::NotAnswering {
                address,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                last_error: error.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_INTERVAL_MS)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::players_in_list_answer;

    #[test]
    fn the_count_is_read_from_vanilla_list_answers() {
        assert_eq!(
            players_in_list_answer("There are 2 of a max of 20 players online: Alex, Steve"),
            Some(2)
        );
        assert_eq!(
            players_in_list_answer("There are 0 of a max of 20 players online: "),
            Some(0)
        );
        assert_eq!(players_in_list_answer("There are 12/20 players online:"), Some(12));
        assert_eq!(players_in_list_answer("Unknown command"), None);
        assert_eq!(players_in_list_answer("There are many"), None);
    }
}
