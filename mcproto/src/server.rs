//! The server side of a connection's first bytes: a legacy ping or a modern handshake.
//! Shared by the test game server and the player router (which forwards `raw` to the
//! backend verbatim).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::codec::{VARINT_BYTES_MAX, write_varint};
use crate::error::ProtoError;
use crate::frame::read_frame_body;
use crate::legacy::{LEGACY_PING_ID, LEGACY_REQUEST_BYTES_MAX, LegacyRequest};
use crate::packets::Handshake;

/// The largest handshake accepted (length prefix excluded): id, protocol, a 255-unit
/// address (765 bytes), port and next state fit in 781 bytes.
pub const HANDSHAKE_BYTES_MAX: usize = 1_024;

/// How a connection opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A pre-1.7 server list ping: answer with [`crate::legacy::LegacyStatus::encode_for`].
    Legacy(LegacyRequest),
    /// A modern handshake and the exact bytes it arrived as (length prefix included).
    Handshake { handshake: Handshake, raw: Vec<u8> },
}

/// Reads how a connection opens. After a `0xFE` it waits at most `legacy_window` for
/// the rest of a legacy ping (a 1.3 client sends the one byte and waits for an answer).
/// No overall deadline: wrap the call in `tokio::time::timeout`.
pub async fn read_opening<R: AsyncRead + Unpin>(
    reader: &mut R,
    legacy_window: Duration,
) -> Result<Opening, ProtoError> {
    let first = reader
        .read_u8()
        .await
        .map_err(|error| ProtoError::from_read(error, "handshake"))?;
    if first == LEGACY_PING_ID {
        return Ok(Opening::Legacy(read_legacy_rest(reader, legacy_window).await?));
    }
    let mut length: u32 = u32::from(first & 0x7f);
    let mut byte = first;
    let mut index = 1;
    while byte & 0x80 != 0 {
        if index == VARINT_BYTES_MAX {
            return Err(ProtoError::VarIntTooLong {
                max_bytes: VARINT_BYTES_MAX,
            });
        }
        byte = reader
            .read_u8()
            .await
            .map_err(|error| ProtoError::from_read(error, "packet length"))?;
        length |= u32::from(byte & 0x7f) << (7 * index);
        index += 1;
    }
    let packet = read_frame_body(reader, length as i32, HANDSHAKE_BYTES_MAX).await?;
    let handshake = Handshake::from_packet(&packet)?;
    let mut raw = Vec::with_capacity(VARINT_BYTES_MAX + length as usize);
    write_varint(&mut raw, length as i32);
    write_varint(&mut raw, packet.id);
    raw.extend_from_slice(&packet.body);
    Ok(Opening::Handshake { handshake, raw })
}

async fn read_legacy_rest<R: AsyncRead + Unpin>(
    reader: &mut R,
    legacy_window: Duration,
) -> Result<LegacyRequest, ProtoError> {
    let mut request = Vec::with_capacity(LEGACY_REQUEST_BYTES_MAX);
    request.push(LEGACY_PING_ID);
    let window = tokio::time::sleep(legacy_window);
    tokio::pin!(window);
    let mut buffer = [0u8; 256];
    while request.len() < LEGACY_REQUEST_BYTES_MAX {
        if let Ok(LegacyRequest::WithPayload { host: Some(_), .. }) = LegacyRequest::parse(&request) {
            break;
        }
        tokio::select! {
            read = reader.read(&mut buffer) => match read? {
                0 => break,
                n => {
                    let room = LEGACY_REQUEST_BYTES_MAX - request.len();
                    request.extend_from_slice(&buffer[..n.min(room)]);
                }
            },
            () = &mut window => break,
        }
    }
    LegacyRequest::parse(&request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::NextState;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(future)
    }

    const WINDOW: Duration = Duration::from_millis(50);

    #[test]
    fn a_handshake_comes_back_with_its_exact_bytes() {
        let handshake = Handshake {
            protocol_version: 765,
            server_address: "alpha.play.example".into(),
            server_port: 25565,
            next_state: NextState::Login,
        };
        let mut bytes = handshake.to_packet().encode();
        let framed_len = bytes.len();
        bytes.extend_from_slice(b"next packet");
        let mut reader = bytes.as_slice();
        let opening = block_on(read_opening(&mut reader, WINDOW)).unwrap();
        assert_eq!(
            opening,
            Opening::Handshake {
                handshake,
                raw: bytes[..framed_len].to_vec()
            }
        );
        assert_eq!(reader, b"next packet", "nothing past the handshake is consumed");
    }

    #[test]
    fn legacy_pings_are_told_from_handshakes_by_their_first_byte() {
        let full = crate::legacy::LegacyRequest::encode_1_6("mc.example", 25565);
        let opening = block_on(read_opening(&mut full.as_slice(), WINDOW)).unwrap();
        assert!(
            matches!(opening, Opening::Legacy(LegacyRequest::WithPayload { host: Some(host), .. }) if host == "mc.example")
        );
        let beta = block_on(read_opening(&mut [0xFEu8].as_slice(), WINDOW)).unwrap();
        assert_eq!(beta, Opening::Legacy(LegacyRequest::Beta));
    }

    #[test]
    fn a_bare_0xfe_on_an_open_connection_is_answered_after_the_window() {
        block_on(async {
            let (mut client, mut server) = tokio::io::duplex(64);
            tokio::io::AsyncWriteExt::write_all(&mut client, &[0xFE, 0x01])
                .await
                .unwrap();
            let opening = read_opening(&mut server, WINDOW).await.unwrap();
            assert_eq!(
                opening,
                Opening::Legacy(LegacyRequest::WithPayload {
                    host: None,
                    port: None,
                    protocol: None
                })
            );
        });
    }

    #[test]
    fn oversized_malformed_and_truncated_openings_are_refused() {
        let mut huge = Vec::new();
        write_varint(&mut huge, 2_000);
        assert!(matches!(
            block_on(read_opening(&mut huge.as_slice(), WINDOW)),
            Err(ProtoError::PacketTooLarge {
                length_bytes: 2_000,
                max_bytes: HANDSHAKE_BYTES_MAX
            })
        ));
        let endless = [0x80u8; 8];
        assert!(matches!(
            block_on(read_opening(&mut endless.as_slice(), WINDOW)),
            Err(ProtoError::VarIntTooLong { .. })
        ));
        let handshake = Handshake {
            protocol_version: 340,
            server_address: "h".into(),
            server_port: 1,
            next_state: NextState::Status,
        };
        let bytes = handshake.to_packet().encode();
        assert!(matches!(
            block_on(read_opening(&mut &bytes[..bytes.len() - 1], WINDOW)),
            Err(ProtoError::Closed { what: "packet" })
        ));
        assert!(matches!(
            block_on(read_opening(&mut &[][..], WINDOW)),
            Err(ProtoError::Closed { what: "handshake" })
        ));
        let not_a_handshake = crate::frame::encode_frame(0x05, &[]);
        assert!(matches!(
            block_on(read_opening(&mut not_a_handshake.as_slice(), WINDOW)),
            Err(ProtoError::UnexpectedPacket { id: 5, .. })
        ));
    }
}
