//! What the router says itself: status answers for servers that are not running, for
//! unknown hostnames and for an unreachable platform, and the login disconnects.
//! Every text here is read by players, so it says what happened and what to do.

use payperplay_mcproto::legacy::LegacyStatus;
use payperplay_mcproto::packets::{StatusPlayers, StatusResponse, StatusVersion};

use crate::backend::{Route, ServerState, WakeRefusal};

/// The protocol version answered when the client's is unknown (a legacy ping): 1.12.2.
pub const FALLBACK_PROTOCOL: i32 = 340;

/// What a status answer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub motd: String,
    pub players_max: u32,
    pub favicon: Option<String>,
}

/// The MOTD of a server the router answers for (every state but a reachable running one).
pub fn route_motd(route: &Route) -> String {
    match &route.state {
        ServerState::Sleeping if route.balance_allows_start => "sleeping: join to start".to_owned(),
        ServerState::Stopped if route.balance_allows_start => "stopped: join to start".to_owned(),
        ServerState::Sleeping | ServerState::Stopped => "asleep: the owner's balance is too low to start it".to_owned(),
        ServerState::Starting => "starting: join in a moment".to_owned(),
        ServerState::Queued { position, eta_s } => format!("queued: position {position}, about {eta_s} s"),
        ServerState::Stopping => "stopping: join to start it again".to_owned(),
        ServerState::Running { .. } => "running, but not answering: try again in a moment".to_owned(),
    }
}

pub fn shown_for_route(route: &Route) -> Shown {
    Shown {
        motd: route_motd(route),
        players_max: route.players_max,
        favicon: route.favicon.clone(),
    }
}

pub fn shown_for_unknown(hostname: &str) -> Shown {
    Shown {
        motd: format!("No server at {hostname}: check the address"),
        players_max: 0,
        favicon: None,
    }
}

pub fn shown_for_platform_error() -> Shown {
    Shown {
        motd: "PayPerPlay is not answering right now: try again in a minute".to_owned(),
        players_max: 0,
        favicon: None,
    }
}

/// A legacy ping that did not say which server it wants (clients before 1.6 and
/// `mcstatus`'s legacy ping send no hostname).
pub fn shown_for_hostless_legacy(domain: &str) -> Shown {
    Shown {
        motd: format!("PayPerPlay: connect to <server>.{domain}"),
        players_max: 0,
        favicon: None,
    }
}

/// The status JSON; `protocol` is the client's own, so it shows as compatible.
pub fn status_response(shown: &Shown, version_name: &str, protocol: i32) -> StatusResponse {
    StatusResponse {
        version: StatusVersion {
            name: version_name.to_owned(),
            protocol: if protocol > 0 { protocol } else { FALLBACK_PROTOCOL },
        },
        players: StatusPlayers {
            max: i64::from(shown.players_max),
            online: 0,
            sample: Vec::new(),
        },
        description: serde_json::json!({ "text": shown.motd }),
        favicon: shown.favicon.clone(),
    }
}

pub fn legacy_status(shown: &Shown, version_name: &str) -> LegacyStatus {
    LegacyStatus {
        protocol: 127,
        version: version_name.to_owned(),
        motd: shown.motd.clone(),
        online: 0,
        max: i64::from(shown.players_max),
    }
}

/// Login disconnects.
pub mod disconnect {
    use super::*;

    pub fn unknown(hostname: &str) -> String {
        format!("There is no server at {hostname}. Check the address you typed.")
    }

    pub fn bad_address() -> String {
        "That address leads to no server. Check the address you typed.".to_owned()
    }

    pub fn platform_error() -> String {
        "PayPerPlay cannot start or reach this server right now. Try again in a minute.".to_owned()
    }

    pub fn insufficient_balance() -> String {
        "This server is asleep and its owner's balance is too low to start it. Ask the owner to top up.".to_owned()
    }

    pub fn refused(refusal: &WakeRefusal) -> String {
        match refusal {
            WakeRefusal::InsufficientBalance => insufficient_balance(),
            WakeRefusal::Other(reason) => format!("This server could not be started: {reason}"),
        }
    }

    pub fn gone() -> String {
        "This server no longer exists.".to_owned()
    }

    pub fn unreachable() -> String {
        "The server is running but does not answer. Try again in a moment.".to_owned()
    }

    /// The hold ran out: where the start stands.
    pub fn still_waking(state: &ServerState) -> String {
        match state {
            ServerState::Queued { position, eta_s } => format!(
                "The server is starting: it waits for a machine, position {position} in the queue, \
                 about {eta_s} s. Join again then."
            ),
            ServerState::Stopping => "The server is stopping. Join again in a moment to start it again.".to_owned(),
            _ => "The server is starting. Join again in a moment.".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(state: ServerState, balance_allows_start: bool) -> Route {
        Route {
            server_id: 7,
            state,
            players_max: 10,
            favicon: None,
            balance_allows_start,
            proxy_protocol: None,
        }
    }

    #[test]
    fn each_state_has_its_own_words() {
        assert_eq!(
            route_motd(&route(ServerState::Sleeping, true)),
            "sleeping: join to start"
        );
        assert_eq!(
            route_motd(&route(ServerState::Sleeping, false)),
            "asleep: the owner's balance is too low to start it"
        );
        assert_eq!(
            route_motd(&route(ServerState::Queued { position: 3, eta_s: 90 }, true)),
            "queued: position 3, about 90 s"
        );
        assert!(route_motd(&route(ServerState::Starting, true)).starts_with("starting"));
        assert!(
            disconnect::still_waking(&ServerState::Queued { position: 2, eta_s: 40 })
                .contains("position 2 in the queue, about 40 s")
        );
    }

    #[test]
    fn a_status_answer_echoes_the_client_protocol_and_shows_no_players() {
        let shown = shown_for_route(&route(ServerState::Sleeping, true));
        let answer = status_response(&shown, "PayPerPlay", 765);
        assert_eq!(answer.version.protocol, 765);
        assert_eq!((answer.players.online, answer.players.max), (0, 10));
        assert_eq!(answer.motd(), "sleeping: join to start");
        assert_eq!(status_response(&shown, "x", -1).version.protocol, FALLBACK_PROTOCOL);
    }
}
