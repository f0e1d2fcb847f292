//! The test game server's life: boot delay, crash switches, stops that save, restarts
//! that find the old world, and bad input; driven with mcproto's own clients.

#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the wall clock")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{RCON_PASSWORD, TestGame, WAIT};
use payperplay_mcproto::frame::{PACKET_BYTES_MAX, Packet, read_frame};
use payperplay_mcproto::packets::{self, Handshake, LoginStart, LoginSuccess, NextState};
use payperplay_mcproto::rcon::RconClient;
use payperplay_mcproto::{ProtoError, status_ping};
use tokio::io::AsyncWriteExt;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn game_address(game: &TestGame) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], game.port))
}

fn rcon(game: &TestGame, command: &str) -> Result<String, ProtoError> {
    block_on(async {
        let mut client = RconClient::connect(("127.0.0.1", game.rcon_port), RCON_PASSWORD, CLIENT_TIMEOUT).await?;
        client.command(command).await
    })
}

#[test]
fn mcproto_status_ping_reads_the_server() {
    let game = TestGame::start(&[("MOTD", "hello §bworld"), ("MAX_PLAYERS", "9")]);
    let report = block_on(status_ping(game_address(&game), "alpha.play.example", CLIENT_TIMEOUT)).unwrap();
    assert_eq!((report.players_online, report.players_max), (0, 9));
    assert_eq!((report.version.name.as_str(), report.version.protocol), ("1.12.2", 340));
    assert_eq!(report.motd, "hello §bworld");
}

#[test]
fn mcproto_rcon_client_runs_commands_and_is_refused_a_wrong_password() {
    let game = TestGame::start(&[]);
    assert_eq!(
        rcon(&game, "list").unwrap(),
        "There are 0 of a max of 20 players online: "
    );
    assert!(
        rcon(&game, "frobnicate")
            .unwrap()
            .starts_with("Unknown or incomplete command")
    );
    let refused = block_on(RconClient::connect(
        ("127.0.0.1", game.rcon_port),
        "wrong",
        CLIENT_TIMEOUT,
    ));
    assert!(matches!(refused, Err(ProtoError::RconAuthRefused)), "{refused:?}");
}

#[test]
fn the_game_port_stays_closed_until_the_boot_delay_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let game = TestGame::spawn(&[("TESTGAME_BOOT_DELAY_MS", "1500")], dir.path());
    assert!(game.wait_for_line("Preparing level", WAIT));
    assert!(!game.has_line("Done ("));
    let refused = block_on(status_ping(game_address(&game), "localhost", CLIENT_TIMEOUT));
    assert!(
        matches!(&refused, Err(ProtoError::Io(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused),
        "{refused:?}"
    );
    assert!(game.wait_for_line("Done (", WAIT));
    let done = game
        .log_text()
        .lines()
        .find(|line| line.contains("Done ("))
        .unwrap()
        .to_owned();
    let seconds: f64 = done
        .split("Done (")
        .nth(1)
        .unwrap()
        .split('s')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds >= 1.5, "the Done line reports the boot time: {done}");
    assert!(done.ends_with("For help, type \"help\""), "{done}");
    block_on(status_ping(game_address(&game), "localhost", CLIENT_TIMEOUT)).unwrap();
}

#[test]
fn the_crash_switch_exits_one_without_saving() {
    let dir = tempfile::tempdir().unwrap();
    let mut game = TestGame::spawn(&[("TESTGAME_CRASH_AFTER_MS", "800")], dir.path());
    assert!(game.wait_for_line("Done (", WAIT));
    assert_eq!(game.level_dat()["save_count"], 0);
    assert_eq!(game.wait_exit(WAIT).code(), Some(1));
    assert_eq!(game.level_dat()["save_count"], 0, "a crash does not save");
}

#[test]
fn rcon_crash_exits_one_without_saving() {
    let mut game = TestGame::start(&[]);
    assert!(rcon(&game, "crash").unwrap().starts_with("Crashing the server"));
    assert_eq!(game.wait_exit(WAIT).code(), Some(1));
    assert_eq!(game.level_dat()["save_count"], 0);
}

#[test]
fn sigterm_and_sigint_save_and_a_restart_finds_the_old_world() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = TestGame::spawn(&[], dir.path());
    assert!(first.wait_for_line("Done (", WAIT));
    let created_at_ms = first.level_dat()["created_at_ms"].as_u64().unwrap();
    first.signal("TERM");
    assert_eq!(first.wait_exit(WAIT).code(), Some(0));
    assert!(first.has_line("All chunks are saved"));
    let saved = first.level_dat();
    assert_eq!(saved["save_count"], 1);
    assert!(saved["saved_at_ms"].as_u64().unwrap() >= created_at_ms);

    let mut second = TestGame::spawn(&[], dir.path());
    assert!(second.wait_for_line("Done (", WAIT));
    assert!(second.has_line("Loaded the world"), "{}", second.log_text());
    assert!(second.has_line("(saved 1 times)"));
    assert_eq!(
        rcon(&second, "save-all").unwrap(),
        "Saving the game (this may take a moment!)Saved the game"
    );
    common::eventually("save-all to write the world", || second.level_dat()["save_count"] == 2);
    second.signal("INT");
    assert_eq!(second.wait_exit(WAIT).code(), Some(0));
    let level = second.level_dat();
    assert_eq!(
        (level["save_count"].as_u64(), level["created_at_ms"].as_u64()),
        (Some(3), Some(created_at_ms))
    );
}

#[test]
fn a_stop_during_the_boot_delay_still_saves() {
    let dir = tempfile::tempdir().unwrap();
    let mut game = TestGame::spawn(&[("TESTGAME_BOOT_DELAY_MS", "60000")], dir.path());
    assert!(game.wait_for_line("Preparing level", WAIT));
    game.signal("TERM");
    assert_eq!(game.wait_exit(WAIT).code(), Some(0));
    assert_eq!(game.level_dat()["save_count"], 1);
}

#[test]
fn without_the_eula_the_server_exits_one_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut game = TestGame::spawn(&[("EULA", "false")], dir.path());
    assert_eq!(game.wait_exit(WAIT).code(), Some(1));
    assert!(game.wait_for_line("set EULA=TRUE", WAIT), "{}", game.log_text());
    assert!(!dir.path().join("world").exists());
}

#[test]
fn an_unset_rcon_password_disables_rcon_as_vanilla_does() {
    let game = TestGame::start(&[("RCON_PASSWORD", "")]);
    assert!(game.wait_for_line("rcon disabled", WAIT));
    assert!(TcpStream::connect(("127.0.0.1", game.rcon_port)).is_err());
}

#[test]
fn bad_input_closes_that_connection_only() {
    let game = TestGame::start(&[]);
    let address = game_address(&game);
    // Garbage: a packet length too large for a handshake, then noise.
    let mut garbage = TcpStream::connect(address).unwrap();
    garbage.write_all(&[0xff, 0xff, 0x7f, 1, 2, 3]).unwrap();
    garbage.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(
        garbage.read(&mut [0u8; 16]).unwrap_or(0),
        0,
        "the server closes the connection"
    );
    // A malformed VarInt (six continuation bytes).
    let mut malformed = TcpStream::connect(address).unwrap();
    malformed.write_all(&[0x80; 6]).unwrap();
    malformed.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(malformed.read(&mut [0u8; 16]).unwrap_or(0), 0);
    // A client that never finishes its handshake holds only its own connection.
    let mut silent = TcpStream::connect(address).unwrap();
    silent.write_all(&[0x10, 0x00]).unwrap();
    let report = block_on(status_ping(address, "localhost", CLIENT_TIMEOUT)).unwrap();
    assert_eq!(report.players_online, 0);
    drop(silent);
    // A bare 0xFE (a 1.3 client) gets the oldest form of the answer.
    let mut beta = TcpStream::connect(address).unwrap();
    beta.write_all(&[0xFE]).unwrap();
    let mut answer = Vec::new();
    beta.set_read_timeout(Some(WAIT)).unwrap();
    beta.read_to_end(&mut answer).unwrap();
    let status = payperplay_mcproto::legacy::LegacyStatus::decode(&answer).unwrap();
    assert_eq!(
        (status.motd.as_str(), status.online, status.max),
        ("A Minecraft Server", 0, 20)
    );
    assert_eq!(status.protocol, -1, "the 1.3 form carries no protocol");
}

/// Logs in with mcproto's packets at `protocol`; the first packet the server answers.
async fn login(address: SocketAddr, protocol: i32, name: &str) -> (tokio::net::TcpStream, Packet) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let handshake = Handshake {
        protocol_version: protocol,
        server_address: "localhost".into(),
        server_port: address.port(),
        next_state: NextState::Login,
    };
    let mut bytes = handshake.to_packet().encode();
    bytes.extend(LoginStart { name: name.into() }.to_packet().encode());
    stream.write_all(&bytes).await.unwrap();
    let answer = read_frame(&mut stream, PACKET_BYTES_MAX).await.unwrap();
    (stream, answer)
}

#[test]
fn mcproto_login_is_refused_at_another_protocol_and_joins_at_340() {
    let game = TestGame::start(&[]);
    let address = game_address(&game);
    block_on(async {
        let (_old, refusal) = login(address, 47, "Old").await;
        assert_eq!(
            packets::login_disconnect_reason(&refusal).unwrap(),
            "Outdated client! Please use 1.12.2"
        );
        let (_new, refusal) = login(address, 765, "New").await;
        assert_eq!(
            packets::login_disconnect_reason(&refusal).unwrap(),
            "Outdated server! I'm still on 1.12.2"
        );

        let (mut stream, success) = login(address, 340, "Rusty").await;
        let success = LoginSuccess::from_packet(&success, 340).unwrap();
        assert_eq!(
            (success.uuid, success.name.as_str()),
            (packets::offline_uuid("Rusty"), "Rusty")
        );
        let join_game = read_frame(&mut stream, PACKET_BYTES_MAX).await.unwrap();
        assert_eq!(join_game.id, 0x23, "Join Game follows Login Success");
        let report = status_ping(address, "localhost", CLIENT_TIMEOUT).await.unwrap();
        assert_eq!(report.players_online, 1);
        drop(stream);
        let deadline = tokio::time::Instant::now() + WAIT;
        while status_ping(address, "localhost", CLIENT_TIMEOUT)
            .await
            .unwrap()
            .players_online
            != 0
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the count never dropped after the disconnect"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
