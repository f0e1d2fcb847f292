//! Handshake, status (request, response, ping, pong) and login (start, disconnect,
//! success) packets, with the caps the vanilla server applies.

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, STRING_UNITS_MAX, write_string, write_varint};
use crate::error::ProtoError;
use crate::frame::Packet;

/// The longest server address a handshake may carry, in UTF-16 units (vanilla: 255).
pub const SERVER_ADDRESS_UNITS_MAX: usize = 255;
/// The longest player name, in UTF-16 units.
pub const PLAYER_NAME_UNITS_MAX: usize = 16;

/// Packet ids in the handshaking, status and login states (serverbound and clientbound
/// where the numbers coincide).
pub mod ids {
    pub const HANDSHAKE: i32 = 0x00;
    pub const STATUS_REQUEST: i32 = 0x00;
    pub const STATUS_RESPONSE: i32 = 0x00;
    pub const PING: i32 = 0x01;
    pub const PONG: i32 = 0x01;
    pub const LOGIN_START: i32 = 0x00;
    pub const LOGIN_DISCONNECT: i32 = 0x00;
    pub const LOGIN_SUCCESS: i32 = 0x02;
}

/// The first protocol version (1.16) whose Login Success carries the UUID as 16 bytes
/// rather than as hyphenated text.
pub const PROTOCOL_BINARY_UUID_MIN: i32 = 735;
/// From 1.19 Login Success also carries a property list.
pub const PROTOCOL_LOGIN_PROPERTIES_MIN: i32 = 759;

/// What the client wants after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextState {
    Status,
    Login,
    Transfer,
}

impl NextState {
    pub fn to_wire(self) -> i32 {
        match self {
            NextState::Status => 1,
            NextState::Login => 2,
            NextState::Transfer => 3,
        }
    }

    pub fn from_wire(value: i32) -> Result<Self, ProtoError> {
        match value {
            1 => Ok(NextState::Status),
            2 => Ok(NextState::Login),
            3 => Ok(NextState::Transfer),
            other => Err(ProtoError::BadNextState(other)),
        }
    }
}

/// The first packet of every modern connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub protocol_version: i32,
    /// The address the player typed (a router routes by it). Forge and some proxies
    /// append `\0`-separated data; it is kept as sent.
    pub server_address: String,
    pub server_port: u16,
    pub next_state: NextState,
}

impl Handshake {
    pub fn to_packet(&self) -> Packet {
        let mut body = Vec::with_capacity(self.server_address.len() + 12);
        write_varint(&mut body, self.protocol_version);
        write_string(&mut body, &self.server_address);
        body.extend_from_slice(&self.server_port.to_be_bytes());
        write_varint(&mut body, self.next_state.to_wire());
        Packet::new(ids::HANDSHAKE, body)
    }

    pub fn from_packet(packet: &Packet) -> Result<Self, ProtoError> {
        expect_id(packet, ids::HANDSHAKE, "handshake")?;
        let mut reader = packet.reader();
        let protocol_version = reader.read_varint("handshake protocol version")?;
        let server_address = reader
            .read_string(SERVER_ADDRESS_UNITS_MAX, "handshake server address")?
            .to_owned();
        let server_port = reader.read_u16("handshake server port")?;
        let next_state = NextState::from_wire(reader.read_varint("handshake next state")?)?;
        expect_end(&reader, "handshake")?;
        Ok(Handshake {
            protocol_version,
            server_address,
            server_port,
            next_state,
        })
    }
}

/// The status request (empty body).
pub fn status_request() -> Packet {
    Packet::new(ids::STATUS_REQUEST, Vec::new())
}

/// Checks that `packet` is a status request.
pub fn expect_status_request(packet: &Packet) -> Result<(), ProtoError> {
    expect_id(packet, ids::STATUS_REQUEST, "status request")?;
    expect_end(&packet.reader(), "status request")
}

/// The status JSON (Server List Ping).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub version: StatusVersion,
    #[serde(default)]
    pub players: StatusPlayers,
    /// A chat component or a plain string; [`description_text`] flattens it.
    #[serde(default)]
    pub description: serde_json::Value,
    /// `data:image/png;base64,...`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub favicon: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusVersion {
    pub name: String,
    pub protocol: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusPlayers {
    pub max: i64,
    pub online: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<PlayerSample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerSample {
    pub name: String,
    /// Hyphenated UUID.
    pub id: String,
}

impl StatusResponse {
    pub fn to_packet(&self) -> Result<Packet, ProtoError> {
        let json = serde_json::to_string(self)?;
        let mut body = Vec::with_capacity(json.len() + 3);
        write_string(&mut body, &json);
        Ok(Packet::new(ids::STATUS_RESPONSE, body))
    }

    pub fn from_packet(packet: &Packet) -> Result<Self, ProtoError> {
        expect_id(packet, ids::STATUS_RESPONSE, "status response")?;
        let mut reader = packet.reader();
        let json = reader.read_string(STRING_UNITS_MAX, "status response JSON")?;
        Ok(serde_json::from_str(json)?)
    }

    /// The MOTD as plain text.
    pub fn motd(&self) -> String {
        description_text(&self.description)
    }
}

/// Flattens a chat component (a string, an object with `text` and `extra`, or an array)
/// to its plain text.
pub fn description_text(component: &serde_json::Value) -> String {
    fn collect(component: &serde_json::Value, out: &mut String) {
        match component {
            serde_json::Value::String(text) => out.push_str(text),
            serde_json::Value::Array(parts) => parts.iter().for_each(|part| collect(part, out)),
            serde_json::Value::Object(fields) => {
                if let Some(serde_json::Value::String(text)) = fields.get("text") {
                    out.push_str(text);
                }
                if let Some(extra) = fields.get("extra") {
                    collect(extra, out);
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    collect(component, &mut out);
    out
}

/// A chat component holding plain `text`, as JSON.
pub fn chat_text_json(text: &str) -> String {
    serde_json::json!({ "text": text }).to_string()
}

/// Ping (serverbound) and pong (clientbound) share the layout: one i64 echoed back.
pub fn ping_packet(id: i32, payload: i64) -> Packet {
    Packet::new(id, payload.to_be_bytes().to_vec())
}

/// The payload of a ping or pong.
pub fn ping_payload(packet: &Packet, id: i32, what: &'static str) -> Result<i64, ProtoError> {
    expect_id(packet, id, what)?;
    let mut reader = packet.reader();
    let payload = reader.read_i64(what)?;
    expect_end(&reader, what)?;
    Ok(payload)
}

/// Login Start: the player's name. Fields newer versions append (signature data, UUID)
/// are not needed by anyone here and are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStart {
    pub name: String,
}

impl LoginStart {
    /// The 1.12.2 layout (name only).
    pub fn to_packet(&self) -> Packet {
        let mut body = Vec::new();
        write_string(&mut body, &self.name);
        Packet::new(ids::LOGIN_START, body)
    }

    pub fn from_packet(packet: &Packet) -> Result<Self, ProtoError> {
        expect_id(packet, ids::LOGIN_START, "login start")?;
        let name = packet
            .reader()
            .read_string(PLAYER_NAME_UNITS_MAX, "player name")?
            .to_owned();
        if name.is_empty() {
            return Err(ProtoError::Malformed {
                what: "player name",
                detail: "empty".into(),
            });
        }
        Ok(LoginStart { name })
    }
}

/// Login Disconnect: a chat component (JSON) shown to the player.
pub fn login_disconnect(reason: &str) -> Packet {
    let mut body = Vec::new();
    write_string(&mut body, &chat_text_json(reason));
    Packet::new(ids::LOGIN_DISCONNECT, body)
}

/// The reason of a Login Disconnect, as plain text.
pub fn login_disconnect_reason(packet: &Packet) -> Result<String, ProtoError> {
    expect_id(packet, ids::LOGIN_DISCONNECT, "login disconnect")?;
    let json = packet
        .reader()
        .read_string(STRING_UNITS_MAX, "login disconnect reason")?
        .to_owned();
    let value: serde_json::Value = serde_json::from_str(&json)?;
    Ok(description_text(&value))
}

/// Login Success: the player's UUID and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSuccess {
    pub uuid: u128,
    pub name: String,
}

impl LoginSuccess {
    /// Encoded for `protocol_version`: hyphenated text before 1.16, 16 bytes from 1.16,
    /// with an empty property list from 1.19 (and the 1.20.5–1.21.1 strict-errors flag).
    pub fn to_packet(&self, protocol_version: i32) -> Packet {
        let mut body = Vec::new();
        if protocol_version < PROTOCOL_BINARY_UUID_MIN {
            write_string(&mut body, &hyphenated_uuid(self.uuid));
        } else {
            body.extend_from_slice(&self.uuid.to_be_bytes());
        }
        write_string(&mut body, &self.name);
        if protocol_version >= PROTOCOL_LOGIN_PROPERTIES_MIN {
            write_varint(&mut body, 0);
        }
        if (766..=767).contains(&protocol_version) {
            body.push(1);
        }
        Packet::new(ids::LOGIN_SUCCESS, body)
    }

    pub fn from_packet(packet: &Packet, protocol_version: i32) -> Result<Self, ProtoError> {
        expect_id(packet, ids::LOGIN_SUCCESS, "login success")?;
        let mut reader = packet.reader();
        let uuid = if protocol_version < PROTOCOL_BINARY_UUID_MIN {
            let text = reader.read_string(36, "login success UUID")?;
            parse_hyphenated_uuid(text)?
        } else {
            reader.read_u128("login success UUID")?
        };
        let name = reader.read_string(PLAYER_NAME_UNITS_MAX, "player name")?.to_owned();
        Ok(LoginSuccess { uuid, name })
    }
}

/// The UUID an offline-mode server gives a player: version 3 (MD5) of
/// `"OfflinePlayer:" + name`, as vanilla's `UUID.nameUUIDFromBytes`.
pub fn offline_uuid(name: &str) -> u128 {
    use md5::{Digest, Md5};
    let digest: [u8; 16] = Md5::digest(format!("OfflinePlayer:{name}").as_bytes()).into();
    let mut bytes = digest;
    bytes[6] = (bytes[6] & 0x0f) | 0x30;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    u128::from_be_bytes(bytes)
}

/// `8-4-4-4-12` lowercase hex.
pub fn hyphenated_uuid(uuid: u128) -> String {
    let hex = format!("{uuid:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Parses a UUID written with or without hyphens.
pub fn parse_hyphenated_uuid(text: &str) -> Result<u128, ProtoError> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(ProtoError::Malformed {
            what: "UUID",
            detail: format!("{text:?} is not 32 hex digits"),
        });
    }
    u128::from_str_radix(&hex, 16).map_err(|_| ProtoError::Malformed {
        what: "UUID",
        detail: format!("{text:?} is not hexadecimal"),
    })
}

pub(crate) fn expect_id(packet: &Packet, id: i32, stage: &'static str) -> Result<(), ProtoError> {
    if packet.id == id {
        Ok(())
    } else {
        Err(ProtoError::UnexpectedPacket { stage, id: packet.id })
    }
}

fn expect_end(reader: &Reader<'_>, what: &'static str) -> Result<(), ProtoError> {
    if reader.is_empty() {
        Ok(())
    } else {
        Err(ProtoError::Malformed {
            what,
            detail: format!("{} trailing bytes", reader.remaining().len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::write_varint;

    fn handshake() -> Handshake {
        Handshake {
            protocol_version: 340,
            server_address: "alpha.play.example".into(),
            server_port: 25565,
            next_state: NextState::Login,
        }
    }

    #[test]
    fn a_handshake_round_trips() {
        let packet = handshake().to_packet();
        assert_eq!(Handshake::from_packet(&packet).unwrap(), handshake());
        let transfer = Handshake {
            next_state: NextState::Transfer,
            ..handshake()
        };
        assert_eq!(Handshake::from_packet(&transfer.to_packet()).unwrap(), transfer);
    }

    #[test]
    fn a_truncated_handshake_names_the_missing_field() {
        let packet = handshake().to_packet();
        let cut = Packet::new(0, packet.body[..packet.body.len() - 2].to_vec());
        match Handshake::from_packet(&cut) {
            Err(ProtoError::Truncated { what }) => assert_eq!(what, "handshake server port"),
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn a_handshake_with_a_bad_next_state_or_a_long_address_is_refused() {
        let mut body = Vec::new();
        write_varint(&mut body, 340);
        write_string(&mut body, "host");
        body.extend_from_slice(&25565u16.to_be_bytes());
        write_varint(&mut body, 7);
        assert!(matches!(
            Handshake::from_packet(&Packet::new(0, body)),
            Err(ProtoError::BadNextState(7))
        ));

        let long = Handshake {
            server_address: "a".repeat(256),
            ..handshake()
        };
        assert!(matches!(
            Handshake::from_packet(&long.to_packet()),
            Err(ProtoError::StringTooLong {
                what: "handshake server address",
                ..
            })
        ));
        assert!(matches!(
            Handshake::from_packet(&Packet::new(0x05, vec![])),
            Err(ProtoError::UnexpectedPacket { id: 5, .. })
        ));
    }

    #[test]
    fn a_handshake_address_with_bad_utf8_is_refused() {
        let mut body = Vec::new();
        write_varint(&mut body, 340);
        body.extend_from_slice(&[2, 0xff, 0xfe]);
        body.extend_from_slice(&25565u16.to_be_bytes());
        write_varint(&mut body, 1);
        assert!(matches!(
            Handshake::from_packet(&Packet::new(0, body)),
            Err(ProtoError::InvalidText { .. })
        ));
    }

    #[test]
    fn a_status_response_round_trips_and_reads_vanilla_json() {
        let response = StatusResponse {
            version: StatusVersion {
                name: "1.12.2".into(),
                protocol: 340,
            },
            players: StatusPlayers {
                max: 20,
                online: 1,
                sample: vec![PlayerSample {
                    name: "Alex".into(),
                    id: hyphenated_uuid(offline_uuid("Alex")),
                }],
            },
            description: serde_json::json!({"text": "A §aMinecraft§r Server"}),
            favicon: Some("data:image/png;base64,AAAA".into()),
        };
        let decoded = StatusResponse::from_packet(&response.to_packet().unwrap()).unwrap();
        assert_eq!(decoded, response);
        assert_eq!(decoded.motd(), "A §aMinecraft§r Server");

        let vanilla = r#"{"description":{"extra":[{"color":"gold","text":"Hello "},{"text":"world"}],"text":""},
            "players":{"max":20,"online":0},"version":{"name":"Paper 1.20.4","protocol":765}}"#;
        let mut body = Vec::new();
        write_string(&mut body, vanilla);
        let parsed = StatusResponse::from_packet(&Packet::new(0, body)).unwrap();
        assert_eq!(parsed.motd(), "Hello world");
        assert_eq!(parsed.players.sample, vec![]);
        assert_eq!(parsed.version.protocol, 765);
        assert_eq!(description_text(&serde_json::json!("plain")), "plain");
    }

    #[test]
    fn malformed_status_json_is_a_json_error() {
        let mut body = Vec::new();
        write_string(&mut body, r#"{"version":{"name":"x"}"#);
        assert!(matches!(
            StatusResponse::from_packet(&Packet::new(0, body)),
            Err(ProtoError::Json(_))
        ));
    }

    #[test]
    fn ping_and_pong_echo_the_payload() {
        let ping = ping_packet(ids::PING, -123_456_789_012);
        assert_eq!(ping_payload(&ping, ids::PING, "ping").unwrap(), -123_456_789_012);
        let short = Packet::new(ids::PONG, vec![0; 7]);
        assert!(matches!(
            ping_payload(&short, ids::PONG, "pong"),
            Err(ProtoError::Truncated { what: "pong" })
        ));
    }

    #[test]
    fn login_start_round_trips_and_caps_the_name() {
        let start = LoginStart { name: "Steve".into() };
        assert_eq!(LoginStart::from_packet(&start.to_packet()).unwrap(), start);
        let mut newer = start.to_packet();
        newer.body.extend_from_slice(&offline_uuid("Steve").to_be_bytes());
        assert_eq!(LoginStart::from_packet(&newer).unwrap(), start);
        let long = LoginStart { name: "x".repeat(17) };
        assert!(matches!(
            LoginStart::from_packet(&long.to_packet()),
            Err(ProtoError::StringTooLong { .. })
        ));
        let empty = LoginStart { name: String::new() };
        assert!(matches!(
            LoginStart::from_packet(&empty.to_packet()),
            Err(ProtoError::Malformed { .. })
        ));
    }

    #[test]
    fn login_disconnect_carries_json_chat() {
        let packet = login_disconnect("Server is starting: \"queued\"");
        let mut reader = packet.reader();
        let json = reader.read_string(STRING_UNITS_MAX, "reason").unwrap();
        assert_eq!(json, r#"{"text":"Server is starting: \"queued\""}"#);
        assert_eq!(
            login_disconnect_reason(&packet).unwrap(),
            "Server is starting: \"queued\""
        );
    }

    #[test]
    fn offline_uuids_match_vanilla() {
        // Values vanilla (UUID.nameUUIDFromBytes("OfflinePlayer:" + name)) gives.
        assert_eq!(
            hyphenated_uuid(offline_uuid("Notch")),
            "b50ad385-829d-3141-a216-7e7d7539ba7f"
        );
        assert_eq!(
            hyphenated_uuid(offline_uuid("jeb_")),
            "a762f560-4fce-3236-812a-b80efff0b62b"
        );
        let uuid = offline_uuid("Steve");
        assert_eq!(parse_hyphenated_uuid(&hyphenated_uuid(uuid)).unwrap(), uuid);
        assert!(parse_hyphenated_uuid("not-a-uuid").is_err());
    }

    #[test]
    fn login_success_round_trips_in_every_layout() {
        let success = LoginSuccess {
            uuid: offline_uuid("Alex"),
            name: "Alex".into(),
        };
        for protocol in [340, 578, 754, 760, 766, 769] {
            let packet = success.to_packet(protocol);
            assert_eq!(
                LoginSuccess::from_packet(&packet, protocol).unwrap(),
                success,
                "protocol {protocol}"
            );
        }
        let text = success.to_packet(340);
        assert_eq!(text.body[0], 36);
        let cut = Packet::new(2, text.body[..20].to_vec());
        assert!(matches!(
            LoginSuccess::from_packet(&cut, 340),
            Err(ProtoError::Truncated { .. })
        ));
    }
}
