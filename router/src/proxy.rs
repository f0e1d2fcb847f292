//! Bytes both ways between a player and a running server, and the PROXY protocol v2
//! header that tells the server who the player is.
//!
//! Each direction waits for its socket to become readable without holding a buffer and
//! takes one ([`COPY_BUFFER_BYTES`], allocated without zeroing) only while data flows,
//! so ten thousand idle players cost their sockets and a small task each, not a buffer.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The buffer a flowing direction borrows.
pub const COPY_BUFFER_BYTES: usize = 256 * 1024;

/// The 12-byte signature that opens a PROXY protocol v2 header.
pub const PROXY_V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// A PROXY protocol v2 header (command PROXY, TCP) saying the connection came from
/// `source` to `destination`. Mixed families are both written as IPv6 (IPv4-mapped).
pub fn proxy_v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&PROXY_V2_SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&from.octets());
            out.extend_from_slice(&to.octets());
        }
        (from, to) => {
            let as_v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&as_v6(from).octets());
            out.extend_from_slice(&as_v6(to).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// Bytes carried each way by a finished session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carried {
    pub to_server_bytes: u64,
    pub to_player_bytes: u64,
}

/// Copies both ways until both directions ended (an end of stream is passed on as a
/// half-close) or either failed.
pub async fn splice(player: TcpStream, server: TcpStream) -> Carried {
    let (player_read, player_write) = player.into_split();
    let (server_read, server_write) = server.into_split();
    let up = one_way(player_read, server_write, "to_server");
    let down = one_way(server_read, player_write, "to_player");
    tokio::pin!(up, down);
    // When one direction fails the other is dropped (both sockets close); an orderly
    // end of stream lets the other direction finish.
    let mut carried = Carried::default();
    let mut up_done = false;
    let mut down_done = false;
    while !(up_done && down_done) {
        tokio::select! {
            result = &mut up, if !up_done => {
                up_done = true;
                match result {
                    Ok(bytes) => carried.to_server_bytes = bytes,
                    Err((bytes, _)) => { carried.to_server_bytes = bytes; break; }
                }
            }
            result = &mut down, if !down_done => {
                down_done = true;
                match result {
                    Ok(bytes) => carried.to_player_bytes = bytes,
                    Err((bytes, _)) => { carried.to_player_bytes = bytes; break; }
                }
            }
        }
    }
    carried
}

async fn one_way(
    reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    direction: &'static str,
) -> Result<u64, (u64, io::Error)> {
    let counter = metrics::counter!("router_proxied_bytes_total", "direction" => direction);
    let mut carried: u64 = 0;
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        if buffer.capacity() == 0 {
            if let Err(error) = reader.readable().await {
                return Err((carried, error));
            }
            buffer = Vec::with_capacity(COPY_BUFFER_BYTES);
        }
        buffer.clear();
        match reader.try_read_buf(&mut buffer) {
            Ok(0) => {
                let _ignored = writer.shutdown().await;
                return Ok(carried);
            }
            Ok(n) => {
                if let Err(error) = writer.write_all(&buffer[..n]).await {
                    return Err((carried, error));
                }
                carried += n as u64;
                counter.increment(n as u64);
            }
            // Drained: give the buffer back while the direction is idle.
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => buffer = Vec::new(),
            Err(error) => return Err((carried, error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_header_matches_the_specification_bytes() {
        let header = proxy_v2_header(
            "192.0.2.1:56324".parse().unwrap(),
            "198.51.100.7:25565".parse().unwrap(),
        );
        let expected: Vec<u8> = [
            &PROXY_V2_SIGNATURE[..],
            &[0x21, 0x11, 0x00, 0x0C],
            &[192, 0, 2, 1],
            &[198, 51, 100, 7],
            &56324u16.to_be_bytes(),
            &25565u16.to_be_bytes(),
        ]
        .concat();
        assert_eq!(header, expected);
    }

    #[test]
    fn mixed_families_are_written_as_ipv6() {
        let header = proxy_v2_header("192.0.2.1:1".parse().unwrap(), "[2001:db8::1]:25565".parse().unwrap());
        assert_eq!(&header[12..16], &[0x21, 0x21, 0x00, 36]);
        assert_eq!(header.len(), 16 + 36);
        assert_eq!(
            &header[16..32],
            &"::ffff:192.0.2.1".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
    }
}
