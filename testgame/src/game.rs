//! The game port: handshake, status and ping, the legacy ping, offline-mode login and
//! enough of 1.12.2's play state (Join Game, Spawn Position, Player Position And Look,
//! keep-alive) that a client library considers itself joined and stays connected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use payperplay_mcproto::ProtoError;
use payperplay_mcproto::codec::write_string;
use payperplay_mcproto::frame::{PACKET_BYTES_MAX, Packet, encode_frame, read_frame};
use payperplay_mcproto::legacy::{LegacyRequest, LegacyStatus};
use payperplay_mcproto::packets::{
    self, Handshake, LoginStart, LoginSuccess, NextState, StatusPlayers, StatusResponse, StatusVersion, chat_text_json,
    ids, offline_uuid,
};
use payperplay_mcproto::server::{Opening, read_opening};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::config::PROTOCOL_PLAY_SUPPORTED;
use crate::log;
use crate::state::{JoinRefusal, Player, Shared};

/// A connection must finish its handshake (and status or login) within this.
const HANDSHAKE_DEADLINE_MS: u64 = 10_000;
/// After `0xFE`, how long to wait for the rest of a legacy ping.
const LEGACY_READ_WINDOW_MS: u64 = 100;
/// Handshake, status and login packets are small: a cap well below the play cap.
const PRE_PLAY_PACKET_BYTES_MAX: usize = 4_096;
/// A keep-alive unanswered this long kicks the player (vanilla: 30 s).
const KEEPALIVE_TIMEOUT_MS: u64 = 30_000;
/// Keep-alive answers read but not yet matched (a client answers one at a time).
const KEEPALIVE_ANSWERS_QUEUE_LEN: usize = 8;

/// 1.12.2 play packet ids.
mod play_ids {
    pub const CHAT: i32 = 0x0F;
    pub const DISCONNECT: i32 = 0x1A;
    pub const KEEP_ALIVE: i32 = 0x1F;
    pub const JOIN_GAME: i32 = 0x23;
    pub const PLAYER_POSITION_AND_LOOK: i32 = 0x2F;
    pub const SPAWN_POSITION: i32 = 0x46;
    pub const SERVERBOUND_KEEP_ALIVE: i32 = 0x0B;
}

/// Handles one connection to the game port until it closes.
pub async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ignored = stream.set_nodelay(true);
    let deadline = Duration::from_millis(HANDSHAKE_DEADLINE_MS);
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let legacy_window = Duration::from_millis(LEGACY_READ_WINDOW_MS);
    let handshake = match tokio::time::timeout(deadline, read_opening(&mut reader, legacy_window)).await {
        Ok(Ok(Opening::Handshake { handshake, .. })) => handshake,
        Ok(Ok(Opening::Legacy(request))) => {
            let _ignored = answer_legacy_ping(&shared, &request, &mut write_half).await;
            return;
        }
        _ => return,
    };
    match handshake.next_state {
        NextState::Status => {
            let _ignored = tokio::time::timeout(deadline, serve_status(&shared, &mut reader, &mut write_half)).await;
        }
        NextState::Transfer => {
            let refusal = packets::login_disconnect("Incoming transfers are not accepted");
            let _ignored = write_packet(&mut write_half, &refusal).await;
        }
        NextState::Login => {
            let login = tokio::time::timeout(deadline, read_frame(&mut reader, PRE_PLAY_PACKET_BYTES_MAX)).await;
            let Ok(Ok(packet)) = login else { return };
            let Ok(start) = LoginStart::from_packet(&packet) else {
                return;
            };
            if let Err(error) = login_and_play(&shared, &handshake, start, reader, write_half, peer).await {
                log::info(&format!("/{peer} lost connection: {error}"));
            }
        }
    }
}

async fn write_packet(writer: &mut OwnedWriteHalf, packet: &Packet) -> Result<(), ProtoError> {
    writer.write_all(&packet.encode()).await?;
    Ok(())
}

/// Players online as status answers show them (0 with `hide_online_players`).
fn shown_online(shared: &Shared) -> i64 {
    if shared.config.hide_online_players {
        0
    } else {
        shared.online_count() as i64
    }
}

fn status_response(shared: &Shared) -> StatusResponse {
    StatusResponse {
        version: StatusVersion {
            name: shared.config.version_name.clone(),
            protocol: shared.config.protocol,
        },
        players: StatusPlayers {
            max: i64::from(shared.config.max_players),
            online: shown_online(shared),
            sample: if shared.config.hide_online_players {
                Vec::new()
            } else {
                shared.sample()
            },
        },
        description: serde_json::json!({ "text": shared.config.motd }),
        favicon: None,
    }
}

/// Status requests and a ping, in any order, until the ping (then the connection ends).
async fn serve_status(
    shared: &Shared,
    reader: &mut BufReader<OwnedReadHalf>,
    writer: &mut OwnedWriteHalf,
) -> Result<(), ProtoError> {
    loop {
        let packet = read_frame(reader, PRE_PLAY_PACKET_BYTES_MAX).await?;
        match packet.id {
            ids::STATUS_REQUEST => {
                packets::expect_status_request(&packet)?;
                write_packet(writer, &status_response(shared).to_packet()?).await?;
            }
            ids::PING => {
                let payload = packets::ping_payload(&packet, ids::PING, "ping")?;
                write_packet(writer, &packets::ping_packet(ids::PONG, payload)).await?;
                return Ok(());
            }
            other => {
                return Err(ProtoError::UnexpectedPacket {
                    stage: "status",
                    id: other,
                });
            }
        }
    }
}

async fn answer_legacy_ping(
    shared: &Shared,
    request: &LegacyRequest,
    writer: &mut OwnedWriteHalf,
) -> Result<(), ProtoError> {
    let status = LegacyStatus {
        protocol: 127,
        version: shared.config.version_name.clone(),
        motd: shared.config.motd.clone(),
        online: shown_online(shared),
        max: i64::from(shared.config.max_players),
    };
    writer.write_all(&status.encode_for(request)).await?;
    writer.shutdown().await?;
    Ok(())
}

fn login_refusal(shared: &Shared, handshake: &Handshake) -> Option<String> {
    let protocol = shared.config.protocol;
    let version = &shared.config.version_name;
    if handshake.protocol_version < protocol {
        return Some(format!("Outdated client! Please use {version}"));
    }
    if handshake.protocol_version > protocol {
        return Some(format!("Outdated server! I'm still on {version}"));
    }
    if protocol != PROTOCOL_PLAY_SUPPORTED {
        return Some(format!(
            "payperplay-testgame logs players in only at protocol {PROTOCOL_PLAY_SUPPORTED} (1.12.2); it advertises {protocol}"
        ));
    }
    None
}

async fn login_and_play(
    shared: &Shared,
    handshake: &Handshake,
    start: LoginStart,
    reader: BufReader<OwnedReadHalf>,
    mut writer: OwnedWriteHalf,
    peer: SocketAddr,
) -> Result<(), ProtoError> {
    if let Some(reason) = login_refusal(shared, handshake) {
        log::info(&format!("Disconnecting {} (/{peer}): {reason}", start.name));
        return write_packet(&mut writer, &packets::login_disconnect(&reason)).await;
    }
    let uuid = offline_uuid(&start.name);
    let entity_id = match shared.join(Player {
        name: start.name.clone(),
        uuid,
    }) {
        Ok(entity_id) => entity_id,
        Err(refusal) => {
            let reason = match refusal {
                JoinRefusal::Full => "The server is full!".to_owned(),
                JoinRefusal::NameTaken => format!("A player named {} is already connected", start.name),
            };
            log::info(&format!("Disconnecting {} (/{peer}): {reason}", start.name));
            return write_packet(&mut writer, &packets::login_disconnect(&reason)).await;
        }
    };
    log::info(&format!(
        "UUID of player {} is {}",
        start.name,
        packets::hyphenated_uuid(uuid)
    ));
    let result = play(shared, &start.name, uuid, entity_id, reader, &mut writer, peer).await;
    shared.leave(entity_id);
    log::info(&format!("{} left the game", start.name));
    result
}

async fn play(
    shared: &Shared,
    name: &str,
    uuid: u128,
    entity_id: i32,
    reader: BufReader<OwnedReadHalf>,
    writer: &mut OwnedWriteHalf,
    peer: SocketAddr,
) -> Result<(), ProtoError> {
    let mut joined = LoginSuccess {
        uuid,
        name: name.to_owned(),
    }
    .to_packet(PROTOCOL_PLAY_SUPPORTED)
    .encode();
    joined.extend(join_game(entity_id, shared.config.max_players));
    joined.extend(encode_frame(
        play_ids::SPAWN_POSITION,
        &block_position(0, 64, 0).to_be_bytes(),
    ));
    joined.extend(player_position_and_look(0.5, 64.0, 0.5));
    writer.write_all(&joined).await?;
    log::info(&format!(
        "{name}[/{peer}] logged in with entity id {entity_id} at (0.5, 64.0, 0.5)"
    ));
    log::info(&format!("{name} joined the game"));

    // Frames are read in their own task: a read cut off by another select! branch would
    // lose the bytes it had taken and desynchronise the stream.
    let (keepalive_answers_sender, mut keepalive_answers) = mpsc::channel(KEEPALIVE_ANSWERS_QUEUE_LEN);
    let reader_task = tokio::spawn(read_play_packets(reader, keepalive_answers_sender));
    let result = play_loop(shared, &mut keepalive_answers, writer).await;
    reader_task.abort();
    result
}

/// Reads play packets until the connection ends, forwarding keep-alive answers (and
/// the reason the reading ended); everything else a client sends (settings, position,
/// teleport confirm) is read and ignored.
async fn read_play_packets(mut reader: BufReader<OwnedReadHalf>, answers: mpsc::Sender<Result<i64, ProtoError>>) {
    loop {
        let answer = match read_frame(&mut reader, PACKET_BYTES_MAX).await {
            Ok(packet) if packet.id == play_ids::SERVERBOUND_KEEP_ALIVE => packet.reader().read_i64("keep-alive id"),
            Ok(_) => continue,
            Err(error) => Err(error),
        };
        let ended = answer.is_err();
        if answers.send(answer).await.is_err() || ended {
            return;
        }
    }
}

async fn play_loop(
    shared: &Shared,
    keepalive_answers: &mut mpsc::Receiver<Result<i64, ProtoError>>,
    writer: &mut OwnedWriteHalf,
) -> Result<(), ProtoError> {
    let mut chat = shared.chat.subscribe();
    let mut stopping = shared.stopping.subscribe();
    let keepalive_timeout = Duration::from_millis(KEEPALIVE_TIMEOUT_MS);
    let mut keepalive = tokio::time::interval(shared.config.keepalive_interval);
    keepalive.tick().await;
    // (id, ticks since sent) of the keep-alive awaiting its answer.
    let mut awaiting: Option<(i64, Duration)> = None;
    let mut next_keepalive_id: i64 = 1;
    loop {
        if *stopping.borrow() {
            write_play_disconnect(writer, "Server closed").await?;
            return Ok(());
        }
        tokio::select! {
            answer = keepalive_answers.recv() => match answer {
                Some(Ok(answered)) => {
                    if awaiting.is_some_and(|(id, _)| id == answered) {
                        awaiting = None;
                    }
                }
                Some(Err(ProtoError::Closed { .. })) | None => return Ok(()),
                Some(Err(error)) => return Err(error),
            },
            _ = keepalive.tick() => {
                match &mut awaiting {
                    Some((_, waited)) => {
                        *waited += shared.config.keepalive_interval;
                        if *waited >= keepalive_timeout {
                            write_play_disconnect(writer, "Timed out").await?;
                            return Ok(());
                        }
                    }
                    None => {
                        let id = next_keepalive_id;
                        next_keepalive_id += 1;
                        writer.write_all(&encode_frame(play_ids::KEEP_ALIVE, &id.to_be_bytes())).await?;
                        awaiting = Some((id, Duration::ZERO));
                    }
                }
            }
            message = chat.recv() => {
                if let Ok(message) = message {
                    let mut body = Vec::new();
                    write_string(&mut body, &chat_text_json(&message));
                    body.push(1); // system message
                    writer.write_all(&encode_frame(play_ids::CHAT, &body)).await?;
                }
            }
            _ = stopping.changed() => {}
        }
    }
}

async fn write_play_disconnect(writer: &mut OwnedWriteHalf, reason: &str) -> Result<(), ProtoError> {
    let mut body = Vec::new();
    write_string(&mut body, &chat_text_json(reason));
    writer.write_all(&encode_frame(play_ids::DISCONNECT, &body)).await?;
    writer.shutdown().await?;
    Ok(())
}

fn join_game(entity_id: i32, max_players: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&entity_id.to_be_bytes());
    body.push(0); // game mode: survival
    body.extend_from_slice(&0i32.to_be_bytes()); // dimension: overworld
    body.push(1); // difficulty: easy
    body.push(max_players.min(255) as u8);
    write_string(&mut body, "default"); // level type
    body.push(0); // reduced debug info: false
    encode_frame(play_ids::JOIN_GAME, &body)
}

/// 1.12.2's packed block position: x (26 bits), y (12 bits), z (26 bits).
fn block_position(x: i64, y: i64, z: i64) -> i64 {
    ((x & 0x3FF_FFFF) << 38) | ((y & 0xFFF) << 26) | (z & 0x3FF_FFFF)
}

fn player_position_and_look(x: f64, y: f64, z: f64) -> Vec<u8> {
    let mut body = Vec::new();
    for coordinate in [x, y, z] {
        body.extend_from_slice(&coordinate.to_be_bytes());
    }
    body.extend_from_slice(&0f32.to_be_bytes()); // yaw
    body.extend_from_slice(&0f32.to_be_bytes()); // pitch
    body.push(0); // flags: all absolute
    payperplay_mcproto::codec::write_varint(&mut body, 1); // teleport id
    encode_frame(play_ids::PLAYER_POSITION_AND_LOOK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_positions_pack_as_1_12_2_does() {
        assert_eq!(block_position(0, 64, 0), 64 << 26);
        assert_eq!(block_position(-1, 0, 0) >> 38, -1);
        assert_eq!(block_position(0, 0, -1) & 0x3FF_FFFF, 0x3FF_FFFF);
    }
}
