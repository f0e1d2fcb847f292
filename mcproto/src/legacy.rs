//! The pre-1.7 server list ping. Clients send `0xFE` (1.3 and older), `0xFE 0x01`
//! (1.4–1.5) or `0xFE 0x01 0xFA` followed by the `MC|PingHost` plugin message (1.6;
//! `mcstatus`'s `LegacyServer` sends just the first three bytes). The server answers a
//! kick packet `0xFF`, a u16 length in UTF-16 units and UTF-16BE text: for `0xFE 0x01`
//! and later `§1\0protocol\0version\0motd\0online\0max`, for a bare `0xFE`
//! `motd§online§max`. A server tells a legacy ping from a modern handshake by one
//! peeked byte, as vanilla does: `0xFE` is a legacy ping (a modern handshake starts so
//! only if it is 254 + 128·k bytes long, which no client sends).

use crate::codec::Reader;
use crate::error::ProtoError;

/// The first byte of every legacy ping.
pub const LEGACY_PING_ID: u8 = 0xFE;
/// The first byte of the answer (a kick packet).
pub const LEGACY_KICK_ID: u8 = 0xFF;
/// The protocol number 1.6.4 sends in `MC|PingHost`.
pub const LEGACY_PROTOCOL_1_6_4: u8 = 78;
/// The longest legacy ping request accepted, in bytes (`MC|PingHost` with a 255-unit host).
pub const LEGACY_REQUEST_BYTES_MAX: usize = 3 + 2 + 22 + 2 + 1 + 2 + 510 + 4;

/// Which form of legacy ping arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyRequest {
    /// `0xFE` alone: answer `motd§online§max`.
    Beta,
    /// `0xFE 0x01`, possibly followed by `0xFA` and `MC|PingHost` (host and port when
    /// they were sent in full).
    WithPayload {
        host: Option<String>,
        port: Option<u16>,
        protocol: Option<u8>,
    },
}

impl LegacyRequest {
    /// Parses what arrived (starting at `0xFE`). A 1.6 request may be cut short by the
    /// caller's read window: whatever is missing is `None`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = Reader::new(bytes);
        let first = reader.read_u8("legacy ping id")?;
        if first != LEGACY_PING_ID {
            return Err(ProtoError::UnexpectedPacket {
                stage: "legacy ping",
                id: i32::from(first),
            });
        }
        if reader.is_empty() {
            return Ok(LegacyRequest::Beta);
        }
        let payload = reader.read_u8("legacy ping payload")?;
        if payload != 0x01 {
            return Err(ProtoError::Malformed {
                what: "legacy ping",
                detail: format!("byte after 0xFE is {payload:#04x}, expected 0x01"),
            });
        }
        let mut host = None;
        let mut port = None;
        let mut protocol = None;
        if !reader.is_empty() {
            let plugin = reader.read_u8("legacy ping plugin message")?;
            if plugin != 0xFA {
                return Err(ProtoError::Malformed {
                    what: "legacy ping",
                    detail: format!("byte after 0xFE 0x01 is {plugin:#04x}, expected 0xFA"),
                });
            }
            if let Ok((parsed_protocol, parsed_host, parsed_port)) = parse_ping_host(&mut reader) {
                protocol = Some(parsed_protocol);
                host = Some(parsed_host);
                port = Some(parsed_port);
            }
        }
        Ok(LegacyRequest::WithPayload { host, port, protocol })
    }

    /// The full 1.6 request for `host:port`.
    pub fn encode_1_6(host: &str, port: u16) -> Vec<u8> {
        let mut out = vec![LEGACY_PING_ID, 0x01, 0xFA];
        push_utf16_with_length(&mut out, "MC|PingHost");
        let host_units: Vec<u16> = host.encode_utf16().collect();
        out.extend_from_slice(&((7 + 2 * host_units.len()) as u16).to_be_bytes());
        out.push(LEGACY_PROTOCOL_1_6_4);
        push_utf16_with_length(&mut out, host);
        out.extend_from_slice(&i32::from(port).to_be_bytes());
        out
    }
}

fn parse_ping_host(reader: &mut Reader<'_>) -> Result<(u8, String, u16), ProtoError> {
    let channel = read_utf16_with_length(reader, "legacy ping channel")?;
    if channel != "MC|PingHost" {
        return Err(ProtoError::Malformed {
            what: "legacy ping channel",
            detail: format!("{channel:?}"),
        });
    }
    let _data_length = reader.read_u16("legacy ping data length")?;
    let protocol = reader.read_u8("legacy ping protocol")?;
    let host = read_utf16_with_length(reader, "legacy ping host")?;
    let port = reader.read_i32("legacy ping port")?;
    let port = u16::try_from(port).map_err(|_| ProtoError::Malformed {
        what: "legacy ping port",
        detail: format!("{port} is out of range"),
    })?;
    Ok((protocol, host, port))
}

fn push_utf16_with_length(out: &mut Vec<u8>, text: &str) {
    let units: Vec<u16> = text.encode_utf16().collect();
    out.extend_from_slice(&(units.len() as u16).to_be_bytes());
    units.iter().for_each(|unit| out.extend_from_slice(&unit.to_be_bytes()));
}

fn read_utf16_with_length(reader: &mut Reader<'_>, what: &'static str) -> Result<String, ProtoError> {
    let units = reader.read_u16(what)? as usize;
    let bytes = reader.read_bytes(units * 2, what)?;
    decode_utf16_be(bytes, what)
}

fn decode_utf16_be(bytes: &[u8], what: &'static str) -> Result<String, ProtoError> {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    String::from_utf16(&units).map_err(|_| ProtoError::InvalidText {
        what,
        encoding: "UTF-16BE",
    })
}

/// What a legacy ping answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyStatus {
    pub protocol: i32,
    pub version: String,
    pub motd: String,
    pub online: i64,
    pub max: i64,
}

impl LegacyStatus {
    /// The kick packet answering `request`.
    pub fn encode_for(&self, request: &LegacyRequest) -> Vec<u8> {
        let text = match request {
            LegacyRequest::Beta => format!("{}§{}§{}", strip_section_signs(&self.motd), self.online, self.max),
            LegacyRequest::WithPayload { .. } => {
                format!(
                    "§1\0{}\0{}\0{}\0{}\0{}",
                    self.protocol, self.version, self.motd, self.online, self.max
                )
            }
        };
        let mut out = vec![LEGACY_KICK_ID];
        push_utf16_with_length(&mut out, &text);
        out
    }

    /// Reads a kick packet in either form (the beta form has no protocol or version:
    /// they come back as -1 and an empty string).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut reader = Reader::new(bytes);
        let id = reader.read_u8("legacy kick id")?;
        if id != LEGACY_KICK_ID {
            return Err(ProtoError::UnexpectedPacket {
                stage: "legacy ping answer",
                id: i32::from(id),
            });
        }
        let text = read_utf16_with_length(&mut reader, "legacy kick text")?;
        let number = |field: &str, what: &'static str| {
            field.parse::<i64>().map_err(|_| ProtoError::Malformed {
                what,
                detail: format!("{field:?}"),
            })
        };
        if let Some(rest) = text.strip_prefix("§1\0") {
            let fields: Vec<&str> = rest.split('\0').collect();
            let [protocol, version, motd, online, max] = fields[..] else {
                return Err(ProtoError::Malformed {
                    what: "legacy kick text",
                    detail: format!("{} fields, expected 5", fields.len()),
                });
            };
            Ok(LegacyStatus {
                protocol: number(protocol, "legacy protocol")? as i32,
                version: version.to_owned(),
                motd: motd.to_owned(),
                online: number(online, "legacy online count")?,
                max: number(max, "legacy max players")?,
            })
        } else {
            let fields: Vec<&str> = text.rsplitn(3, '§').collect();
            let [max, online, motd] = fields[..] else {
                return Err(ProtoError::Malformed {
                    what: "legacy kick text",
                    detail: format!("{text:?}"),
                });
            };
            Ok(LegacyStatus {
                protocol: -1,
                version: String::new(),
                motd: motd.to_owned(),
                online: number(online, "legacy online count")?,
                max: number(max, "legacy max players")?,
            })
        }
    }
}

/// The beta form separates fields with `§`, so the MOTD loses its colour codes there.
fn strip_section_signs(text: &str) -> String {
    text.replace('§', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> LegacyStatus {
        LegacyStatus {
            protocol: 127,
            version: "1.12.2".into(),
            motd: "A §aTest§r server".into(),
            online: 3,
            max: 20,
        }
    }

    #[test]
    fn every_request_form_is_recognised() {
        assert_eq!(LegacyRequest::parse(&[0xFE]).unwrap(), LegacyRequest::Beta);
        let bare = LegacyRequest::WithPayload {
            host: None,
            port: None,
            protocol: None,
        };
        assert_eq!(LegacyRequest::parse(&[0xFE, 0x01]).unwrap(), bare);
        assert_eq!(LegacyRequest::parse(&[0xFE, 0x01, 0xFA]).unwrap(), bare);
        let full = LegacyRequest::encode_1_6("mc.example", 25565);
        assert_eq!(
            LegacyRequest::parse(&full).unwrap(),
            LegacyRequest::WithPayload {
                host: Some("mc.example".into()),
                port: Some(25565),
                protocol: Some(LEGACY_PROTOCOL_1_6_4)
            }
        );
        assert!(full.len() <= LEGACY_REQUEST_BYTES_MAX);
        // Cut short: still a ping, without the host.
        assert_eq!(LegacyRequest::parse(&full[..full.len() - 3]).unwrap(), bare);
    }

    #[test]
    fn the_1_6_request_matches_the_documented_bytes() {
        let bytes = LegacyRequest::encode_1_6("localhost", 25565);
        let expected_start = [0xFE, 0x01, 0xFA, 0x00, 0x0B, 0x00, 0x4D, 0x00, 0x43, 0x00, 0x7C];
        assert_eq!(&bytes[..expected_start.len()], &expected_start);
        assert_eq!(&bytes[bytes.len() - 4..], &[0, 0, 0x63, 0xDD]);
    }

    #[test]
    fn garbage_after_0xfe_is_refused() {
        assert!(matches!(
            LegacyRequest::parse(&[0xFE, 0x07]),
            Err(ProtoError::Malformed { .. })
        ));
        assert!(matches!(
            LegacyRequest::parse(&[0x10]),
            Err(ProtoError::UnexpectedPacket { id: 0x10, .. })
        ));
    }

    #[test]
    fn answers_round_trip_in_both_forms() {
        let request = LegacyRequest::WithPayload {
            host: None,
            port: None,
            protocol: None,
        };
        let bytes = status().encode_for(&request);
        assert_eq!(bytes[0], 0xFF);
        assert_eq!(&bytes[3..7], &[0x00, 0xA7, 0x00, 0x31]); // "§1"
        assert_eq!(LegacyStatus::decode(&bytes).unwrap(), status());

        let beta = LegacyStatus::decode(&status().encode_for(&LegacyRequest::Beta)).unwrap();
        assert_eq!(
            (beta.motd.as_str(), beta.online, beta.max, beta.protocol),
            ("A aTestr server", 3, 20, -1)
        );
    }

    #[test]
    fn truncated_and_malformed_answers_are_refused() {
        let bytes = status().encode_for(&LegacyRequest::WithPayload {
            host: None,
            port: None,
            protocol: None,
        });
        assert!(matches!(
            LegacyStatus::decode(&bytes[..bytes.len() - 1]),
            Err(ProtoError::Truncated { .. })
        ));
        let mut lone_surrogate = vec![0xFF, 0x00, 0x01, 0xD8, 0x00];
        assert!(matches!(
            LegacyStatus::decode(&lone_surrogate),
            Err(ProtoError::InvalidText { .. })
        ));
        lone_surrogate[0] = 0x00;
        assert!(matches!(
            LegacyStatus::decode(&lone_surrogate),
            Err(ProtoError::UnexpectedPacket { .. })
        ));
    }
}
