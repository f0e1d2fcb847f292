//! Source RCON as Minecraft speaks it: little-endian `i32 length` (of what follows),
//! `i32 request id`, `i32 type` (3 login, 2 command, 2 auth response, 0 response), the
//! body and two NUL bytes. A refused login answers request id -1. The vanilla server
//! accepts requests of at most 1,460 bytes and splits responses into 4,096-byte bodies.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::error::ProtoError;

pub const RCON_TYPE_LOGIN: i32 = 3;
pub const RCON_TYPE_COMMAND: i32 = 2;
pub const RCON_TYPE_AUTH_RESPONSE: i32 = 2;
pub const RCON_TYPE_RESPONSE: i32 = 0;
/// The request id a refused login is answered with.
pub const RCON_AUTH_REFUSED_ID: i32 = -1;
/// The smallest valid length field: id, type and the two NUL bytes.
pub const RCON_LENGTH_MIN: usize = 10;
/// The longest request the vanilla server reads (length field value).
pub const RCON_REQUEST_LENGTH_MAX: usize = 1_460;
/// Responses are split into bodies of at most this many bytes.
pub const RCON_RESPONSE_BODY_BYTES_MAX: usize = 4_096;
/// The longest response packet a client accepts (length field value).
pub const RCON_RESPONSE_LENGTH_MAX: usize = RCON_RESPONSE_BODY_BYTES_MAX + RCON_LENGTH_MIN;

/// One RCON packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RconPacket {
    pub request_id: i32,
    pub kind: i32,
    pub body: String,
}

impl RconPacket {
    pub fn new(request_id: i32, kind: i32, body: impl Into<String>) -> Self {
        RconPacket {
            request_id,
            kind,
            body: body.into(),
        }
    }

    /// The packet with its length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let length = RCON_LENGTH_MIN + self.body.len();
        let mut out = Vec::with_capacity(4 + length);
        out.extend_from_slice(&(length as i32).to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&self.kind.to_le_bytes());
        out.extend_from_slice(self.body.as_bytes());
        out.extend_from_slice(&[0, 0]);
        out
    }

    /// Parses what follows the length field (`length` bytes).
    pub fn decode_payload(payload: &[u8]) -> Result<Self, ProtoError> {
        if payload.len() < RCON_LENGTH_MIN {
            return Err(ProtoError::Truncated { what: "RCON packet" });
        }
        let request_id = i32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let kind = i32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]);
        let (body, terminator) = payload[8..].split_at(payload.len() - RCON_LENGTH_MIN);
        if terminator != [0, 0] {
            return Err(ProtoError::Malformed {
                what: "RCON packet",
                detail: "does not end with two NUL bytes".into(),
            });
        }
        let body = std::str::from_utf8(body)
            .map_err(|_| ProtoError::InvalidText {
                what: "RCON body",
                encoding: "UTF-8",
            })?
            .to_owned();
        Ok(RconPacket { request_id, kind, body })
    }
}

/// Reads one packet whose length field is at most `length_max`.
pub async fn read_rcon_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    length_max: usize,
) -> Result<RconPacket, ProtoError> {
    let length = reader
        .read_i32_le()
        .await
        .map_err(|error| ProtoError::from_read(error, "RCON length"))?;
    if length < 0 {
        return Err(ProtoError::NegativeLength {
            what: "RCON length",
            length,
        });
    }
    let length = length as usize;
    if length < RCON_LENGTH_MIN {
        return Err(ProtoError::Malformed {
            what: "RCON length",
            detail: format!("{length} is below the minimum of {RCON_LENGTH_MIN}"),
        });
    }
    if length > length_max {
        return Err(ProtoError::PacketTooLarge {
            length_bytes: length,
            max_bytes: length_max,
        });
    }
    let mut payload = vec![0u8; length];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(|error| ProtoError::from_read(error, "RCON packet"))?;
    RconPacket::decode_payload(&payload)
}

/// Writes one packet and flushes.
pub async fn write_rcon_packet<W: AsyncWrite + Unpin>(writer: &mut W, packet: &RconPacket) -> Result<(), ProtoError> {
    writer.write_all(&packet.encode()).await?;
    writer.flush().await?;
    Ok(())
}

/// An authenticated RCON session. Every call is bounded by the timeout given at connect.
#[derive(Debug)]
pub struct RconClient {
    stream: TcpStream,
    next_request_id: i32,
    timeout: Duration,
}

impl RconClient {
    /// Connects and logs in; a wrong password is [`ProtoError::RconAuthRefused`].
    pub async fn connect(address: impl ToSocketAddrs, password: &str, timeout: Duration) -> Result<Self, ProtoError> {
        let timeout_ms = timeout.as_millis() as u64;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| ProtoError::Timeout {
                what: "RCON connect",
                timeout_ms,
            })??;
        stream.set_nodelay(true)?;
        let mut client = RconClient {
            stream,
            next_request_id: 1,
            timeout,
        };
        let request_id = client.allocate_request_id();
        let answer = client
            .exchange(RconPacket::new(request_id, RCON_TYPE_LOGIN, password), "RCON login")
            .await?;
        if answer.request_id == RCON_AUTH_REFUSED_ID {
            return Err(ProtoError::RconAuthRefused);
        }
        if answer.request_id != request_id {
            return Err(ProtoError::RconIdMismatch {
                expected: request_id,
                got: answer.request_id,
            });
        }
        Ok(client)
    }

    /// Runs a command and returns its output (the first response body: the vanilla
    /// server answers every command PayPerPlay sends in one packet).
    pub async fn command(&mut self, command: &str) -> Result<String, ProtoError> {
        if command.len() + RCON_LENGTH_MIN > RCON_REQUEST_LENGTH_MAX {
            return Err(ProtoError::PacketTooLarge {
                length_bytes: command.len() + RCON_LENGTH_MIN,
                max_bytes: RCON_REQUEST_LENGTH_MAX,
            });
        }
        let request_id = self.allocate_request_id();
        let answer = self
            .exchange(RconPacket::new(request_id, RCON_TYPE_COMMAND, command), "RCON command")
            .await?;
        if answer.request_id != request_id {
            return Err(ProtoError::RconIdMismatch {
                expected: request_id,
                got: answer.request_id,
            });
        }
        Ok(answer.body)
    }

    fn allocate_request_id(&mut self) -> i32 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.checked_add(1).unwrap_or(1);
        id
    }

    async fn exchange(&mut self, request: RconPacket, what: &'static str) -> Result<RconPacket, ProtoError> {
        let timeout_ms = self.timeout.as_millis() as u64;
        let stream = &mut self.stream;
        let round_trip = async move {
            write_rcon_packet(stream, &request).await?;
            read_rcon_packet(stream, RCON_RESPONSE_LENGTH_MAX).await
        };
        tokio::time::timeout(self.timeout, round_trip)
            .await
            .map_err(|_| ProtoError::Timeout { what, timeout_ms })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_packet_matches_the_documented_layout_and_round_trips() {
        let packet = RconPacket::new(7, RCON_TYPE_COMMAND, "list");
        let bytes = packet.encode();
        assert_eq!(&bytes[..4], &14i32.to_le_bytes());
        assert_eq!(&bytes[4..8], &7i32.to_le_bytes());
        assert_eq!(&bytes[8..12], &2i32.to_le_bytes());
        assert_eq!(&bytes[12..], b"list\0\0");
        assert_eq!(
            block_on(read_rcon_packet(&mut bytes.as_slice(), RCON_REQUEST_LENGTH_MAX)).unwrap(),
            packet
        );
    }

    #[test]
    fn truncated_oversized_and_short_packets_are_refused() {
        let bytes = RconPacket::new(1, RCON_TYPE_LOGIN, "secret").encode();
        assert!(matches!(
            block_on(read_rcon_packet(
                &mut &bytes[..bytes.len() - 1],
                RCON_REQUEST_LENGTH_MAX
            )),
            Err(ProtoError::Closed { what: "RCON packet" })
        ));
        let big = RconPacket::new(1, RCON_TYPE_COMMAND, "x".repeat(2000)).encode();
        assert!(matches!(
            block_on(read_rcon_packet(&mut big.as_slice(), RCON_REQUEST_LENGTH_MAX)),
            Err(ProtoError::PacketTooLarge {
                length_bytes: 2010,
                max_bytes: 1460
            })
        ));
        let short = 4i32.to_le_bytes();
        assert!(matches!(
            block_on(read_rcon_packet(&mut short.as_slice(), RCON_REQUEST_LENGTH_MAX)),
            Err(ProtoError::Malformed {
                what: "RCON length",
                ..
            })
        ));
        let negative = (-5i32).to_le_bytes();
        assert!(matches!(
            block_on(read_rcon_packet(&mut negative.as_slice(), RCON_REQUEST_LENGTH_MAX)),
            Err(ProtoError::NegativeLength { .. })
        ));
    }

    #[test]
    fn bad_utf8_and_a_missing_terminator_are_refused() {
        let mut payload = vec![1, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xfe, 0, 0];
        assert!(matches!(
            RconPacket::decode_payload(&payload),
            Err(ProtoError::InvalidText { .. })
        ));
        payload[10] = b'x';
        assert!(matches!(
            RconPacket::decode_payload(&payload),
            Err(ProtoError::Malformed { .. })
        ));
    }
}
