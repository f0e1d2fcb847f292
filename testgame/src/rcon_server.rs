//! The RCON port: login, then `list`, `say`, `save-all`, `stop` and `crash`, answered as
//! the vanilla server answers them.

use std::sync::Arc;

use payperplay_mcproto::ProtoError;
use payperplay_mcproto::rcon::{
    RCON_AUTH_REFUSED_ID, RCON_REQUEST_LENGTH_MAX, RCON_RESPONSE_BODY_BYTES_MAX, RCON_TYPE_AUTH_RESPONSE,
    RCON_TYPE_COMMAND, RCON_TYPE_LOGIN, RCON_TYPE_RESPONSE, RconPacket, read_rcon_packet, write_rcon_packet,
};
use tokio::io::BufReader;
use tokio::net::TcpStream;

use crate::log;
use crate::state::{Control, Shared};

/// What a command does besides answering.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    Control(Control),
    SaveWorld,
}

/// The answer to `command` and what it sets off.
pub fn run_command(shared: &Shared, command: &str) -> (String, Effect) {
    let command = command.trim().trim_start_matches('/');
    let (name, argument) = command.split_once(' ').unwrap_or((command, ""));
    match name {
        "list" => {
            let names = shared.player_names();
            let answer = format!(
                "There are {} of a max of {} players online: {}",
                names.len(),
                shared.config.max_players,
                names.join(", ")
            );
            (answer, Effect::None)
        }
        "say" if !argument.trim().is_empty() => {
            let message = format!("[Server] {}", argument.trim());
            log::info(&message);
            let _no_players = shared.chat.send(message);
            (String::new(), Effect::None)
        }
        "save-all" => (
            "Saving the game (this may take a moment!)Saved the game".to_owned(),
            Effect::SaveWorld,
        ),
        "stop" => ("Stopping the server".to_owned(), Effect::Control(Control::Stop)),
        "crash" => (
            "Crashing the server (test switch: exit 1, no save)".to_owned(),
            Effect::Control(Control::Crash),
        ),
        _ => (format!("Unknown or incomplete command: {command}"), Effect::None),
    }
}

/// Serves one RCON connection until it closes.
pub async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    password: String,
    save: tokio::sync::mpsc::Sender<()>,
) {
    let _ignored = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    if let Err(error) = serve(&shared, stream, &password, &save).await
        && !matches!(error, ProtoError::Closed { .. })
    {
        log::warn(&format!("RCON connection from {peer:?} closed: {error}"));
    }
}

async fn serve(
    shared: &Shared,
    stream: TcpStream,
    password: &str,
    save: &tokio::sync::mpsc::Sender<()>,
) -> Result<(), ProtoError> {
    let mut stream = BufReader::new(stream);
    let mut authenticated = false;
    loop {
        let request = read_rcon_packet(&mut stream, RCON_REQUEST_LENGTH_MAX).await?;
        match request.kind {
            RCON_TYPE_LOGIN => {
                authenticated = request.body == password;
                let id = if authenticated {
                    request.request_id
                } else {
                    RCON_AUTH_REFUSED_ID
                };
                if !authenticated {
                    log::warn("Rcon connection refused: wrong password");
                }
                write_rcon_packet(stream.get_mut(), &RconPacket::new(id, RCON_TYPE_AUTH_RESPONSE, "")).await?;
            }
            RCON_TYPE_COMMAND if authenticated => {
                let (answer, effect) = run_command(shared, &request.body);
                for chunk in chunks(&answer, RCON_RESPONSE_BODY_BYTES_MAX) {
                    let response = RconPacket::new(request.request_id, RCON_TYPE_RESPONSE, chunk);
                    write_rcon_packet(stream.get_mut(), &response).await?;
                }
                match effect {
                    Effect::None => {}
                    Effect::SaveWorld => {
                        let _stopping = save.send(()).await;
                    }
                    Effect::Control(control) => {
                        let _stopping = shared.control.send(control).await;
                    }
                }
            }
            RCON_TYPE_COMMAND => {
                let refusal = RconPacket::new(RCON_AUTH_REFUSED_ID, RCON_TYPE_AUTH_RESPONSE, "");
                write_rcon_packet(stream.get_mut(), &refusal).await?;
            }
            other => {
                let answer = format!("Unknown request {other:#x}");
                write_rcon_packet(
                    stream.get_mut(),
                    &RconPacket::new(request.request_id, RCON_TYPE_RESPONSE, answer),
                )
                .await?;
            }
        }
    }
}

/// Splits `text` into pieces of at most `bytes_max` bytes on character boundaries; an
/// empty text is one empty piece.
fn chunks(text: &str, bytes_max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > bytes_max {
        let mut cut = bytes_max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces.push(rest);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::Player;

    fn shared() -> Shared {
        let config = Config::from_lookup(|name| match name {
            "EULA" => Some("TRUE".into()),
            "MAX_PLAYERS" => Some("5".into()),
            _ => None,
        })
        .unwrap();
        Shared::new(config, tokio::sync::mpsc::channel(1).0)
    }

    #[test]
    fn list_answers_like_vanilla() {
        let shared = shared();
        assert_eq!(
            run_command(&shared, "list").0,
            "There are 0 of a max of 5 players online: "
        );
        shared
            .join(Player {
                name: "Alex".into(),
                uuid: 1,
            })
            .unwrap();
        shared
            .join(Player {
                name: "Steve".into(),
                uuid: 2,
            })
            .unwrap();
        assert_eq!(
            run_command(&shared, "/list").0,
            "There are 2 of a max of 5 players online: Alex, Steve"
        );
    }

    #[test]
    fn stop_crash_and_unknown_commands() {
        let shared = shared();
        assert_eq!(
            run_command(&shared, "stop"),
            ("Stopping the server".into(), Effect::Control(Control::Stop))
        );
        assert_eq!(run_command(&shared, "crash").1, Effect::Control(Control::Crash));
        assert_eq!(run_command(&shared, "say hello").0, "");
        assert!(
            run_command(&shared, "op Steve")
                .0
                .starts_with("Unknown or incomplete command")
        );
    }

    #[test]
    fn long_answers_split_on_character_boundaries() {
        let text = "é".repeat(3000);
        let pieces = chunks(&text, 4096);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|piece| piece.len() <= 4096));
        assert_eq!(pieces.concat(), text);
        assert_eq!(chunks("", 4096), vec![""]);
    }
}
