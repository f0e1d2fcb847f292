//! Hostile and broken clients close their own connection only: a proxied player stays
//! connected and new clients are served throughout. Also the PROXY protocol header.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{DOMAIN, NodePlayer, Reported, RouterUnderTest, TestBackend, TestGame, name, route, status};
use payperplay_mcproto::codec::write_varint;
use payperplay_mcproto::packets::{Handshake, NextState};
use payperplay_router::proxy::PROXY_V2_SIGNATURE;
use payperplay_router::{RouterConfig, ServerState};

const HANDSHAKE_TIMEOUT_MS: u64 = 1_000;

/// Reads until the router closes the connection (end of stream or reset); panics if it
/// is still open after `common::WAIT`. Returns what was read.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return received;
            }
            Err(error) => panic!("the router did not close the connection: {error}"),
        }
    }
}

fn status_handshake(hostname: &str, port: u16) -> Vec<u8> {
    let mut bytes = Handshake {
        protocol_version: 340,
        server_address: hostname.to_owned(),
        server_port: port,
        next_state: NextState::Status,
    }
    .to_packet()
    .encode();
    bytes.extend(payperplay_mcproto::packets::status_request().encode());
    bytes
}

#[allow(
    clippy::disallowed_methods,
    reason = "a lower bound on when the router closes, not a speed goal"
)]
#[test]
fn bad_clients_are_closed_while_a_proxied_player_stays_connected() {
    let game = TestGame::start(&[("MOTD", "alpha is up")]);
    let backend = TestBackend::default();
    backend.route(
        name("alpha"),
        route(
            1,
            ServerState::Running {
                address: game.address(),
            },
        ),
    );
    let config = RouterConfig {
        handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS,
        ..RouterConfig::default()
    };
    let router = RouterUnderTest::start(config, backend.clone());
    let alpha = format!("alpha.{DOMAIN}");

    let player = NodePlayer::connect(&router, &alpha, "Alex");
    player.expect_event("joined");
    backend.wait_until("the join", |reported| {
        reported.contains(&Reported::Joined(1, "Alex".into()))
    });

    // Garbage: a length, then a VarInt id that never ends.
    let mut garbage = TcpStream::connect(router.address).unwrap();
    garbage.write_all(&[0x05, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
    assert_eq!(read_until_closed(&mut garbage), b"", "garbage gets no answer");

    // An HTTP request is garbage too.
    let mut http = TcpStream::connect(router.address).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: alpha.play.test\r\n\r\n")
        .unwrap();
    assert_eq!(read_until_closed(&mut http), b"");

    // A 2 MB packet: refused on its length prefix, without reading (or buffering) it.
    let mut huge = TcpStream::connect(router.address).unwrap();
    let mut prefix = Vec::new();
    write_varint(&mut prefix, 2 * 1024 * 1024);
    huge.write_all(&prefix).unwrap();
    let body = vec![0u8; 2 * 1024 * 1024];
    let _maybe_reset = huge.write_all(&body);
    assert_eq!(read_until_closed(&mut huge), b"");

    // A handshake split across many writes is still a handshake: answered in full.
    let mut split = TcpStream::connect(router.address).unwrap();
    split.set_nodelay(true).unwrap();
    for byte in status_handshake(&alpha, router.port()) {
        split.write_all(&[byte]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let answer = read_status_answer(&mut split);
    assert!(answer.contains("alpha is up"), "{answer}");

    // The same bytes dripped slower than the deadline: closed at the deadline.
    let mut drip = TcpStream::connect(router.address).unwrap();
    let opened_at = Instant::now();
    let handshake = status_handshake(&alpha, router.port());
    for byte in &handshake[..4] {
        drip.write_all(&[*byte]).unwrap();
        std::thread::sleep(Duration::from_millis(HANDSHAKE_TIMEOUT_MS / 3));
    }
    assert_eq!(read_until_closed(&mut drip), b"");
    assert!(opened_at.elapsed() >= Duration::from_millis(HANDSHAKE_TIMEOUT_MS));

    // A client that never sends anything: closed at the deadline, not before.
    let mut silent = TcpStream::connect(router.address).unwrap();
    let opened_at = Instant::now();
    assert_eq!(read_until_closed(&mut silent), b"");
    assert!(opened_at.elapsed() >= Duration::from_millis(HANDSHAKE_TIMEOUT_MS));

    // Through all of it: the player is still there, and new clients are served.
    let running = status(&router, &alpha);
    assert_eq!(
        (running["motd"].as_str(), running["online"].as_i64()),
        (Some("alpha is up"), Some(1))
    );
    assert_eq!(backend.players(1), 1);
    player.leave();
    backend.wait_until("the leave", |reported| {
        reported.contains(&Reported::Left(1, "Alex".into()))
    });
}

/// Reads one status response packet and returns its JSON text.
fn read_status_answer(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some((packet, _)) =
            payperplay_mcproto::frame::decode_frame(&received, payperplay_mcproto::frame::PACKET_BYTES_MAX).unwrap()
        {
            return payperplay_mcproto::packets::StatusResponse::from_packet(&packet)
                .map(|response| serde_json::to_string(&response).unwrap())
                .unwrap();
        }
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "closed before a status answer");
        received.extend_from_slice(&buffer[..n]);
    }
}

/// Connects from a chosen loopback address (Linux routes all of 127.0.0.0/8 to lo).
fn connect_from(source: [u8; 4], to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    futures_block(socket.connect(to)).unwrap()
}

fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn a_flood_from_one_address_is_cut_off_while_other_addresses_are_served() {
    let game = TestGame::start(&[("MOTD", "alpha is up")]);
    let backend = TestBackend::default();
    backend.route(
        name("alpha"),
        route(
            1,
            ServerState::Running {
                address: game.address(),
            },
        ),
    );
    let config = RouterConfig {
        connections_per_address_per_s: 1,
        connection_burst_per_address: 5,
        ..RouterConfig::default()
    };
    let router = RouterUnderTest::start(config, backend);
    let hostname = format!("alpha.{DOMAIN}");

    let answered = |source: [u8; 4]| -> bool {
        let stream = connect_from(source, router.address).into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        let mut stream = stream;
        if stream.write_all(&status_handshake(&hostname, router.port())).is_err() {
            return false;
        }
        let answer = read_until_closed_or_answer(&mut stream);
        answer.contains("alpha is up")
    };
    let flood: Vec<bool> = (0..20).map(|_| answered([127, 0, 0, 3])).collect();
    assert!(flood[..5].iter().all(|ok| *ok), "the burst is served: {flood:?}");
    assert!(
        flood[5..].iter().filter(|ok| !**ok).count() >= 10,
        "most of the flood beyond the burst is cut off: {flood:?}"
    );
    assert!(answered([127, 0, 0, 4]), "another address is served during the flood");
}

/// A status answer's text, or an empty string when the router closed the connection.
fn read_until_closed_or_answer(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Ok(Some((packet, _))) =
            payperplay_mcproto::frame::decode_frame(&received, payperplay_mcproto::frame::PACKET_BYTES_MAX)
        {
            return payperplay_mcproto::packets::StatusResponse::from_packet(&packet)
                .map(|response| response.motd())
                .unwrap_or_default();
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return String::new(),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[test]
fn a_server_that_wants_the_players_address_gets_a_proxy_protocol_v2_header() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_address = listener.local_addr().unwrap();
    let backend = TestBackend::default();
    backend.route(
        name("juliet"),
        payperplay_router::Route {
            proxy_protocol: Some(true),
            ..route(
                10,
                ServerState::Running {
                    address: server_address,
                },
            )
        },
    );
    backend.route(
        name("kilo"),
        route(
            11,
            ServerState::Running {
                address: server_address,
            },
        ),
    );
    let router = RouterUnderTest::start(RouterConfig::default(), backend);

    for (server, wants_header) in [("juliet", true), ("kilo", false)] {
        let hostname = format!("{server}.{DOMAIN}");
        let mut player = TcpStream::connect(router.address).unwrap();
        let player_address = player.local_addr().unwrap();
        let opening = status_handshake(&hostname, router.port());
        player.write_all(&opening).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        accepted.set_read_timeout(Some(common::WAIT)).unwrap();
        let expected_len = if wants_header { 28 } else { 0 } + opening.len();
        let mut received = vec![0u8; expected_len];
        accepted.read_exact(&mut received).unwrap();
        let rest = if wants_header {
            assert_eq!(&received[..12], &PROXY_V2_SIGNATURE);
            assert_eq!(
                &received[12..16],
                &[0x21, 0x11, 0x00, 12],
                "v2 PROXY, TCP over IPv4, 12 bytes"
            );
            assert_eq!(&received[16..20], &[127, 0, 0, 1], "the player's address");
            assert_eq!(&received[20..24], &[127, 0, 0, 1]);
            assert_eq!(u16::from_be_bytes([received[24], received[25]]), player_address.port());
            assert_eq!(u16::from_be_bytes([received[26], received[27]]), server_address.port());
            &received[28..]
        } else {
            &received[..]
        };
        assert_eq!(rest, &opening[..], "the handshake is forwarded byte for byte");
        // And the server's bytes come back.
        accepted.write_all(b"from the server").unwrap();
        let mut back = [0u8; 15];
        player.set_read_timeout(Some(common::WAIT)).unwrap();
        player.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"from the server");
    }
}
