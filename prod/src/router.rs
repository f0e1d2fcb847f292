//! The player router inside `serve`: [`PlatformBackend`] answers the router
//! (`payperplay-router`) from the store (which server a hostname names) and the core
//! (its state, queue place, the owner's balance), wakes servers with
//! `Input::StartServer`, and reports the players it carries as `Input::PlayerCount`.
//!
//! A server's hostname is `<label>.<domain>`, its label the name made DNS-safe and its
//! id (`my-survival-42`): unique, and readable. Custom hostnames are not stored yet, so
//! a custom hostname routes nowhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use payperplay_core::{Core, Input, RejectReason, ServerId, ServerState as CoreState};
use payperplay_router::{
    Backend, BackendError, RequestedHost, Route, RouterConfig, ServerState, WakeOutcome, WakeRefusal,
};
use tokio::sync::Mutex;

use crate::drivers::{ContainerDriver, ObservationSink};
use crate::runtime::{RuntimeError, RuntimeHandle};
use crate::store::{Store, StoreError};

/// The player maximum shown for a server the router answers for (servers do not
/// declare theirs to the platform yet).
pub const SHOWN_PLAYERS_MAX: u32 = 20;
/// The longest name part of a label (a DNS label holds 63 bytes with the id).
pub const LABEL_NAME_BYTES_MAX: usize = 40;

/// `my-survival-42` for server 42 named "My Survival!": lowercase letters and digits,
/// runs of anything else as one hyphen, then the id; `s42` when nothing is left.
pub fn server_label(server_id: i64, name: &str) -> String {
    let mut slug = String::with_capacity(name.len().min(LABEL_NAME_BYTES_MAX));
    for c in name.chars() {
        if slug.len() >= LABEL_NAME_BYTES_MAX {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        format!("s{server_id}")
    } else {
        format!("{slug}-{server_id}")
    }
}

/// The server id a label names (checked against the server's current label after).
pub fn label_server_id(label: &str) -> Option<i64> {
    let digits = match label.rsplit_once('-') {
        Some((_, digits)) => digits,
        None => label.strip_prefix('s')?,
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What players type to reach a server: `<label>.<domain>`, with the port when the
/// router does not listen on Minecraft's default.
pub fn player_address(config: &RouterConfig, server_id: i64, name: &str) -> String {
    let domain = config.domain.trim_end_matches('.').to_ascii_lowercase();
    let host = format!("{}.{domain}", server_label(server_id, name));
    match config.listen.port() {
        25565 => host,
        port => format!("{host}:{port}"),
    }
}

/// The router's view of the platform.
pub struct PlatformBackend {
    runtime: RuntimeHandle,
    store: Store,
    containers: Arc<dyn ContainerDriver>,
    observations: ObservationSink,
    /// Players the router carries, per server; locked across the report so counts reach
    /// the core in the order they were counted.
    players: Mutex<BTreeMap<u64, u32>>,
}

impl PlatformBackend {
    pub fn new(runtime: RuntimeHandle, store: Store, containers: Arc<dyn ContainerDriver>) -> Self {
        let observations = runtime.observation_sink();
        PlatformBackend {
            runtime,
            store,
            containers,
            observations,
            players: Mutex::new(BTreeMap::new()),
        }
    }

    async fn report_players(&self, server_id: u64, change: impl FnOnce(&mut u32)) {
        let mut players = self.players.lock().await;
        let count = players.entry(server_id).or_default();
        change(count);
        let now = *count;
        if now == 0 {
            players.remove(&server_id);
        }
        self.observations
            .observe(Input::PlayerCount {
                server_id: ServerId(server_id),
                players: now,
            })
            .await;
    }
}

/// What the router needs of the core about one server.
struct CoreView {
    state: CoreState,
    balance_allows_start: bool,
    queue: Option<(u32, u32)>,
}

fn core_view(core: &Core, server_id: ServerId) -> Option<CoreView> {
    let server = core.server(server_id)?;
    Some(CoreView {
        state: server.state,
        // The core refuses a start when the balance is not positive.
        balance_allows_start: core.balance_micros(server.owner).is_some_and(|balance| balance > 0),
        queue: core.queue_status(server_id).map(|status| {
            let eta_s = status.estimated_wait_ms.map_or(0, |wait_ms| wait_ms.div_ceil(1_000)) as u32;
            (status.position + 1, eta_s)
        }),
    })
}

fn platform_error(error: impl std::fmt::Display) -> BackendError {
    BackendError(error.to_string())
}

impl Backend for PlatformBackend {
    async fn resolve(&self, host: &RequestedHost) -> Result<Option<Route>, BackendError> {
        let RequestedHost::Name(label) = host else {
            return Ok(None);
        };
        let Some(server_id) = label_server_id(label) else {
            return Ok(None);
        };
        let row = match self.store.live_server(server_id).await {
            Ok(row) => row,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(error) => return Err(platform_error(error)),
        };
        if server_label(row.id, &row.name) != *label {
            return Ok(None);
        }
        let core_id = ServerId(server_id as u64);
        let Some(view) = self
            .runtime
            .query(move |core| core_view(core, core_id))
            .await
            .map_err(platform_error)?
        else {
            return Ok(None);
        };
        let state = match view.state {
            CoreState::Running => match self.containers.game_address(core_id) {
                Some(address) => ServerState::Running { address },
                // Booted as far as the core knows, but no game port is known (the
                // in-process fake driver has none): shown as starting.
                None => ServerState::Starting,
            },
            CoreState::Sleeping => ServerState::Sleeping,
            CoreState::Stopped | CoreState::Archived => ServerState::Stopped,
            CoreState::Starting => ServerState::Starting,
            CoreState::Queued => {
                let (position, eta_s) = view.queue.unwrap_or((1, 0));
                ServerState::Queued { position, eta_s }
            }
            CoreState::Stopping { .. } => ServerState::Stopping,
        };
        Ok(Some(Route {
            server_id: server_id as u64,
            state,
            players_max: SHOWN_PLAYERS_MAX,
            favicon: None,
            balance_allows_start: view.balance_allows_start,
            proxy_protocol: None,
        }))
    }

    async fn wake(&self, server_id: u64) -> Result<WakeOutcome, BackendError> {
        let core_id = ServerId(server_id);
        let answer = self
            .runtime
            .submit(Input::StartServer { server_id: core_id }, move |core| {
                core_view(core, core_id).and_then(|view| view.queue)
            })
            .await;
        match answer {
            Ok(Some((position, eta_s))) => Ok(WakeOutcome::Queued { position, eta_s }),
            Ok(None) => Ok(WakeOutcome::Starting),
            Err(RuntimeError::Rejected(rejection)) => Ok(WakeOutcome::Refused(match rejection.reason {
                RejectReason::InsufficientBalance => WakeRefusal::InsufficientBalance,
                other => WakeRefusal::Other(other.to_string()),
            })),
            Err(error) => Err(platform_error(error)),
        }
    }

    async fn player_joined(&self, server_id: u64, _player: &str) {
        self.report_players(server_id, |count| *count += 1).await;
    }

    async fn player_left(&self, server_id: u64, _player: &str) {
        self.report_players(server_id, |count| *count = count.saturating_sub(1))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_the_name_made_dns_safe_and_the_id() {
        assert_eq!(server_label(42, "My Survival!"), "my-survival-42");
        assert_eq!(server_label(7, "  __ "), "s7");
        assert_eq!(server_label(9, "a.b_c"), "a-b-c-9");
        let long = server_label(1, &"x".repeat(64));
        assert!(long.len() <= LABEL_NAME_BYTES_MAX + 2, "{long}");
        for (name, id) in [("My Survival!", 42), ("", 7), ("a.b_c", 9), ("x-1", 11)] {
            assert_eq!(label_server_id(&server_label(id, name)), Some(id), "{name:?}");
        }
        assert_eq!(label_server_id("survival"), None);
        assert_eq!(label_server_id("survival-"), None);
        assert_eq!(label_server_id("s"), None);
    }

    #[test]
    fn the_player_address_names_the_port_only_when_it_is_not_the_default() {
        let mut config = RouterConfig {
            domain: "Play.Example.com.".into(),
            ..RouterConfig::default()
        };
        assert_eq!(player_address(&config, 42, "Alpha"), "alpha-42.play.example.com");
        config.listen = "0.0.0.0:25570".parse().unwrap();
        assert_eq!(player_address(&config, 42, "Alpha"), "alpha-42.play.example.com:25570");
    }
}
