//! The test game server against real client libraries: `mcstatus` (status, ping, the
//! 1.6 legacy ping), the `rcon` package (Source RCON) and node-minecraft-protocol
//! (an offline-mode login that stays in the play state).

mod common;

use common::{NodePlayer, RCON_PASSWORD, TestGame, eventually, py_client, py_rcon, py_status};

#[test]
fn mcstatus_reads_status_ping_and_the_legacy_ping() {
    let game = TestGame::start(&[("MOTD", "PayPerPlay §atest"), ("MAX_PLAYERS", "7")]);
    let status = py_status(&game);
    assert_eq!(status["online"], 0);
    assert_eq!(status["max"], 7);
    assert_eq!(status["protocol"], 340);
    assert_eq!(status["version_name"], "1.12.2");
    assert_eq!(status["motd"], "PayPerPlay test");

    let (code, ping) = py_client(&["ping", "127.0.0.1", &game.port.to_string()]);
    assert_eq!(code, 0);
    assert!(ping["latency_ms"].as_f64().unwrap() >= 0.0);

    let (code, legacy) = py_client(&["legacy", "127.0.0.1", &game.port.to_string()]);
    assert_eq!(code, 0, "{legacy}");
    assert_eq!((legacy["online"].as_i64(), legacy["max"].as_i64()), (Some(0), Some(7)));
    assert_eq!(legacy["version_name"], "1.12.2");
    assert_eq!(legacy["motd"], "PayPerPlay test");
}

#[test]
fn the_advertised_protocol_follows_the_test_switch() {
    let game = TestGame::start(&[("TESTGAME_PROTOCOL", "765"), ("VERSION", "1.20.4")]);
    let status = py_status(&game);
    assert_eq!(
        (status["protocol"].as_i64(), status["version_name"].as_str()),
        (Some(765), Some("1.20.4"))
    );
}

#[test]
fn rcon_client_authenticates_lists_says_and_refuses_a_wrong_password() {
    let game = TestGame::start(&[("MAX_PLAYERS", "12")]);
    let (code, answer) = py_rcon(&game, RCON_PASSWORD, &["list", "say hello from rcon"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["answers"][0], "There are 0 of a max of 12 players online: ");
    assert_eq!(answer["answers"][1], "");
    assert!(game.wait_for_line("[Server] hello from rcon", common::WAIT));

    let (code, answer) = py_rcon(&game, "not-the-password", &["list"]);
    assert_eq!((code, answer["error"].as_str()), (3, Some("WrongPassword")));
    assert!(game.has_line("Rcon connection refused"));
}

#[test]
fn rcon_stop_saves_the_world_and_exits_zero() {
    let mut game = TestGame::start(&[]);
    assert_eq!(
        game.level_dat()["save_count"],
        0,
        "a first boot writes an unsaved world"
    );
    let (code, answer) = py_rcon(&game, RCON_PASSWORD, &["stop"]);
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["answers"][0], "Stopping the server");
    assert_eq!(game.wait_exit(common::WAIT).code(), Some(0));
    assert_eq!(game.level_dat()["save_count"], 1);
}

#[test]
fn a_logged_in_player_counts_until_they_leave() {
    let game = TestGame::start(&[("TESTGAME_KEEPALIVE_MS", "100")]);
    assert_eq!(py_status(&game)["online"], 0);

    let player = NodePlayer::connect(game.port, "Alex");
    let joined = player.expect_event("joined");
    assert_eq!(
        joined["uuid"], "36532b5e-c442-3dbb-a24c-c7e55d0f979a",
        "the offline-mode UUID of Alex"
    );
    let position = player.expect_event("position");
    assert_eq!(position["y"], 64.0);

    let status = py_status(&game);
    assert_eq!(status["online"], 1);
    assert_eq!(status["sample"], serde_json::json!(["Alex"]));
    let (_, list) = py_rcon(&game, RCON_PASSWORD, &["list", "say welcome"]);
    assert_eq!(list["answers"][0], "There are 1 of a max of 20 players online: Alex");
    assert_eq!(player.expect_event("chat")["message"], "[Server] welcome");

    // Keep-alives every 100 ms: the client answers them and stays (vanilla kicks after 30 s unanswered).
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(py_status(&game)["online"], 1);

    let left = player.leave();
    assert!(
        left["keep_alives"].as_u64().unwrap() >= 3,
        "keep-alives seen by the client: {left}"
    );
    eventually("the player count to drop to 0", || py_status(&game)["online"] == 0);
    assert!(game.wait_for_line("Alex left the game", common::WAIT));
    let (_, list) = py_rcon(&game, RCON_PASSWORD, &["list"]);
    assert_eq!(list["answers"][0], "There are 0 of a max of 20 players online: ");
}

#[test]
fn a_stop_disconnects_players_before_saving() {
    let mut game = TestGame::start(&[]);
    let player = NodePlayer::connect(game.port, "Steve");
    player.expect_event("joined");
    game.signal("TERM");
    assert_eq!(player.expect_event("kicked")["reason"], "Server closed");
    assert_eq!(game.wait_exit(common::WAIT).code(), Some(0));
    assert_eq!(game.level_dat()["save_count"], 1);
}

#[test]
fn a_full_server_refuses_the_next_login_with_a_message() {
    let game = TestGame::start(&[("MAX_PLAYERS", "1")]);
    let first = NodePlayer::connect(game.port, "First");
    first.expect_event("joined");
    let second = NodePlayer::connect(game.port, "Second");
    assert_eq!(second.expect_event("kicked")["reason"], "The server is full!");
    assert_eq!(py_status(&game)["online"], 1);
}
