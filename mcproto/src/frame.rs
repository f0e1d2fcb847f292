//! Uncompressed packet framing: `VarInt length` of what follows, then `VarInt packet id`
//! and the body. (Compression is never switched on by anything PayPerPlay serves.)

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{Reader, VARINT_BYTES_MAX, write_varint};
use crate::error::ProtoError;

/// The largest packet the vanilla server accepts: the largest three-byte VarInt.
pub const PACKET_BYTES_MAX: usize = 2_097_151;

/// One packet: its id and body (the bytes after the id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub id: i32,
    pub body: Vec<u8>,
}

impl Packet {
    pub fn new(id: i32, body: Vec<u8>) -> Self {
        Packet { id, body }
    }

    /// A reader over the body.
    pub fn reader(&self) -> Reader<'_> {
        Reader::new(&self.body)
    }

    /// The packet with its length prefix, ready to send.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(self.id, &self.body)
    }
}

/// `id` and `body` framed with their length.
pub fn encode_frame(id: i32, body: &[u8]) -> Vec<u8> {
    let mut id_bytes = Vec::with_capacity(VARINT_BYTES_MAX);
    write_varint(&mut id_bytes, id);
    let mut out = Vec::with_capacity(VARINT_BYTES_MAX + id_bytes.len() + body.len());
    write_varint(&mut out, (id_bytes.len() + body.len()) as i32);
    out.extend_from_slice(&id_bytes);
    out.extend_from_slice(body);
    out
}

/// Splits a framed packet off the front of `bytes`: `Ok(None)` while the packet is
/// incomplete, else the packet and how many bytes it took. A declared length above
/// `bytes_max` is refused at once, before its bytes arrive.
pub fn decode_frame(bytes: &[u8], bytes_max: usize) -> Result<Option<(Packet, usize)>, ProtoError> {
    let mut reader = Reader::new(bytes);
    let length = match reader.read_varint("packet length") {
        Ok(length) => length,
        Err(ProtoError::Truncated { .. }) => return Ok(None),
        Err(other) => return Err(other),
    };
    let length = checked_length(length, bytes_max)?;
    let header_bytes = reader.position();
    let Ok(payload) = reader.read_bytes(length, "packet") else {
        return Ok(None);
    };
    Ok(Some((split_id(payload)?, header_bytes + length)))
}

fn checked_length(length: i32, bytes_max: usize) -> Result<usize, ProtoError> {
    if length < 0 {
        return Err(ProtoError::NegativeLength {
            what: "packet length",
            length,
        });
    }
    let length = length as usize;
    if length == 0 {
        return Err(ProtoError::EmptyPacket);
    }
    if length > bytes_max {
        return Err(ProtoError::PacketTooLarge {
            length_bytes: length,
            max_bytes: bytes_max,
        });
    }
    Ok(length)
}

fn split_id(payload: &[u8]) -> Result<Packet, ProtoError> {
    let mut reader = Reader::new(payload);
    let id = reader.read_varint("packet id")?;
    Ok(Packet {
        id,
        body: reader.remaining().to_vec(),
    })
}

/// Reads a VarInt from a stream, byte by byte (wrap raw sockets in a `BufReader`).
pub async fn read_varint<R: AsyncRead + Unpin>(reader: &mut R, what: &'static str) -> Result<i32, ProtoError> {
    let mut value: u32 = 0;
    for index in 0..VARINT_BYTES_MAX {
        let byte = reader
            .read_u8()
            .await
            .map_err(|error| ProtoError::from_read(error, what))?;
        value |= u32::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(value as i32);
        }
    }
    Err(ProtoError::VarIntTooLong {
        max_bytes: VARINT_BYTES_MAX,
    })
}

/// Reads one framed packet of at most `bytes_max` bytes (length prefix excluded). The
/// body is allocated only after its length passed the cap.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, bytes_max: usize) -> Result<Packet, ProtoError> {
    let length = read_varint(reader, "packet length").await?;
    read_frame_body(reader, length, bytes_max).await
}

/// Reads the rest of a packet whose length prefix the caller already read (for callers
/// that peeked at the first byte, e.g. to tell a legacy ping from a handshake).
pub async fn read_frame_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    length: i32,
    bytes_max: usize,
) -> Result<Packet, ProtoError> {
    let length = checked_length(length, bytes_max)?;
    let mut payload = vec![0u8; length];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(|error| ProtoError::from_read(error, "packet"))?;
    split_id(&payload)
}

/// Writes one framed packet and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, id: i32, body: &[u8]) -> Result<(), ProtoError> {
    writer.write_all(&encode_frame(id, body)).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_frame_round_trips_through_a_stream() {
        let bytes = encode_frame(0x01, &42i64.to_be_bytes());
        assert_eq!(bytes[0], 9);
        let packet = block_on(read_frame(&mut bytes.as_slice(), PACKET_BYTES_MAX)).unwrap();
        assert_eq!(packet, Packet::new(1, 42i64.to_be_bytes().to_vec()));
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_body() {
        let mut bytes = Vec::new();
        write_varint(&mut bytes, 3_000_000);
        match block_on(read_frame(&mut bytes.as_slice(), PACKET_BYTES_MAX)) {
            Err(ProtoError::PacketTooLarge {
                length_bytes,
                max_bytes,
            }) => {
                assert_eq!((length_bytes, max_bytes), (3_000_000, PACKET_BYTES_MAX))
            }
            other => panic!("expected PacketTooLarge, got {other:?}"),
        }
        assert!(matches!(
            decode_frame(&bytes, 1024),
            Err(ProtoError::PacketTooLarge { .. })
        ));
    }

    #[test]
    fn empty_and_negative_lengths_are_refused() {
        assert!(matches!(
            block_on(read_frame(&mut [0u8].as_slice(), 100)),
            Err(ProtoError::EmptyPacket)
        ));
        let mut bytes = Vec::new();
        write_varint(&mut bytes, -1);
        assert!(matches!(
            block_on(read_frame(&mut bytes.as_slice(), 100)),
            Err(ProtoError::NegativeLength { length: -1, .. })
        ));
    }

    #[test]
    fn a_truncated_stream_reports_a_closed_connection() {
        let bytes = encode_frame(0x00, b"hello");
        let cut = &bytes[..bytes.len() - 2];
        assert!(matches!(
            block_on(read_frame(&mut &cut[..], PACKET_BYTES_MAX)),
            Err(ProtoError::Closed { what: "packet" })
        ));
        assert!(matches!(
            block_on(read_frame(&mut &[0x85u8][..], PACKET_BYTES_MAX)),
            Err(ProtoError::Closed { what: "packet length" })
        ));
        assert_eq!(decode_frame(cut, PACKET_BYTES_MAX).unwrap(), None);
    }

    proptest! {
        #[test]
        fn frames_round_trip_and_split_at_their_boundaries(
            first_id in 0i32..0x80,
            first_body in proptest::collection::vec(any::<u8>(), 0..600),
            second_id in any::<i32>(),
            second_body in proptest::collection::vec(any::<u8>(), 0..50),
        ) {
            let mut stream = encode_frame(first_id, &first_body);
            let first_len = stream.len();
            stream.extend(encode_frame(second_id, &second_body));
            let (packet, used) = decode_frame(&stream, PACKET_BYTES_MAX).unwrap().unwrap();
            prop_assert_eq!(used, first_len);
            prop_assert_eq!(&packet, &Packet::new(first_id, first_body.clone()));
            let (second, used_second) = decode_frame(&stream[used..], PACKET_BYTES_MAX).unwrap().unwrap();
            prop_assert_eq!(used + used_second, stream.len());
            prop_assert_eq!(second, Packet::new(second_id, second_body.clone()));
            for cut in 0..first_len {
                prop_assert_eq!(decode_frame(&stream[..cut], PACKET_BYTES_MAX).unwrap(), None);
            }
            let streamed = block_on(async {
                let mut reader = stream.as_slice();
                let a = read_frame(&mut reader, PACKET_BYTES_MAX).await.unwrap();
                let b = read_frame(&mut reader, PACKET_BYTES_MAX).await.unwrap();
                (a, b)
            });
            prop_assert_eq!(streamed, (Packet::new(first_id, first_body), Packet::new(second_id, second_body)));
        }
    }
}
