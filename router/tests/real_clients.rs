//! The router with real clients (mcstatus, node-minecraft-protocol) in front of real
//! test game servers: pings in every state, wake-on-join with a held player, refusals.

mod common;

use std::time::Duration;

use common::{
    DOMAIN, KillOnDrop, NodePlayer, Reported, RouterUnderTest, TestBackend, TestGame, WokenGame, legacy, mcstatus,
    name, route, status,
};
use payperplay_router::{RequestedHost, RouterConfig, ServerState, WakeOutcome, WakeRefusal};

const FAVICON: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

fn host(server: &str) -> String {
    format!("{server}.{DOMAIN}")
}

#[test]
fn pings_show_every_state_and_a_running_server_answers_for_itself() {
    let game = TestGame::start(&[("MOTD", "alpha is up"), ("MAX_PLAYERS", "7")]);
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
    backend.route(
        RequestedHost::Custom("mc.alice.test".into()),
        route(
            1,
            ServerState::Running {
                address: game.address(),
            },
        ),
    );
    backend.route(
        name("bravo"),
        payperplay_router::Route {
            players_max: 12,
            favicon: Some(FAVICON.into()),
            ..route(2, ServerState::Sleeping)
        },
    );
    backend.route(name("charlie"), route(3, ServerState::Starting));
    backend.route(name("delta"), route(4, ServerState::Queued { position: 3, eta_s: 90 }));
    backend.route(name("echo"), route(5, ServerState::Stopped));
    backend.route(
        name("foxtrot"),
        payperplay_router::Route {
            balance_allows_start: false,
            ..route(6, ServerState::Sleeping)
        },
    );
    let router = RouterUnderTest::start(RouterConfig::default(), backend.clone());

    // Running: proxied, so the game server's own answer.
    for hostname in [host("alpha"), "mc.alice.test".into()] {
        let running = status(&router, &hostname);
        assert_eq!(running["motd"], "alpha is up", "{hostname}");
        assert_eq!(
            (running["online"].as_i64(), running["max"].as_i64()),
            (Some(0), Some(7))
        );
        assert_eq!(
            (running["version_name"].as_str(), running["protocol"].as_i64()),
            (Some("1.12.2"), Some(340))
        );
    }

    let sleeping = status(&router, &host("bravo"));
    assert_eq!(sleeping["motd"], "sleeping: join to start");
    assert_eq!(
        (sleeping["online"].as_i64(), sleeping["max"].as_i64()),
        (Some(0), Some(12))
    );
    assert_eq!(sleeping["favicon"], FAVICON);
    assert_eq!(sleeping["protocol"], 340, "the client's own protocol is echoed");
    assert_eq!(sleeping["version_name"], "PayPerPlay");

    assert_eq!(status(&router, &host("charlie"))["motd"], "starting: join in a moment");
    assert_eq!(
        status(&router, &host("delta"))["motd"],
        "queued: position 3, about 90 s"
    );
    assert_eq!(status(&router, &host("echo"))["motd"], "stopped: join to start");
    assert_eq!(
        status(&router, &host("foxtrot"))["motd"],
        "asleep: the owner's balance is too low to start it"
    );
    assert_eq!(
        status(&router, &host("nobody"))["motd"],
        "No server at nobody.play.test: check the address"
    );

    // The 1.6 legacy ping names the host: answered by state; a running server's figures
    // come from a status ping of the server itself.
    let running = legacy(&router, &host("alpha"));
    assert_eq!(
        (
            running["motd"].as_str(),
            running["max"].as_i64(),
            running["version_name"].as_str()
        ),
        (Some("alpha is up"), Some(7), Some("1.12.2"))
    );
    let sleeping = legacy(&router, &host("bravo"));
    assert_eq!(
        (sleeping["motd"].as_str(), sleeping["max"].as_i64()),
        (Some("sleeping: join to start"), Some(12))
    );
    assert_eq!(legacy(&router, &host("charlie"))["motd"], "starting: join in a moment");
    assert_eq!(
        legacy(&router, &host("delta"))["motd"],
        "queued: position 3, about 90 s"
    );
    assert_eq!(
        legacy(&router, &host("nobody"))["motd"],
        "No server at nobody.play.test: check the address"
    );
    // mcstatus's LegacyServer sends no hostname at all: the router says how to connect.
    let (code, hostless) = mcstatus(&["legacy", &router.port().to_string()]);
    assert_eq!(code, 0, "{hostless}");
    assert_eq!(hostless["motd"], "PayPerPlay: connect to <server>.play.test");

    assert_eq!(backend.wakes(), 0, "pings never wake a server");
}

#[test]
fn forge_suffixes_case_and_a_trailing_dot_reach_the_same_server() {
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
    let router = RouterUnderTest::start(RouterConfig::default(), backend);
    router.runtime.block_on(async {
        for typed in [
            "ALPHA.Play.Test",
            "alpha.play.test.",
            "alpha.play.test\0FML\0",
            "Alpha.play.test.\0FML2\0",
        ] {
            let report = payperplay_mcproto::status_ping(router.address, typed, common::WAIT)
                .await
                .unwrap_or_else(|error| panic!("{typed:?}: {error}"));
            assert_eq!(report.motd, "alpha is up", "{typed:?}");
        }
    });
}

#[test]
fn a_login_to_a_sleeping_server_is_held_while_it_wakes_then_joins_and_is_counted() {
    let backend = TestBackend::default();
    backend.route(name("bravo"), route(2, ServerState::Sleeping));
    let started = WokenGame::default();
    let _kill_woken_game = KillOnDrop(started.clone());
    {
        // The "platform": a wake starts a game server that boots for a second and a half,
        // and the route says Running once it answers.
        let backend_for_hook = backend.clone();
        let started = started.clone();
        backend.on_wake(move |server_id| {
            backend_for_hook.set_state(server_id, ServerState::Starting);
            let backend = backend_for_hook.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                let game = TestGame::start(&[("TESTGAME_BOOT_DELAY_MS", "1500"), ("MOTD", "bravo woke")]);
                let address = game.address();
                started.put(game);
                backend.set_state(server_id, ServerState::Running { address });
            });
            WakeOutcome::Starting
        });
    }
    let router = RouterUnderTest::start(RouterConfig::default(), backend.clone());

    let player = NodePlayer::connect(&router, &host("bravo"), "Alex");
    backend.wait_until("the wake", |reported| reported.contains(&Reported::Wake(2)));
    assert_eq!(status(&router, &host("bravo"))["motd"], "starting: join in a moment");
    let joined = player.expect_event("joined");
    assert_eq!(
        joined["uuid"], "36532b5e-c442-3dbb-a24c-c7e55d0f979a",
        "the server's login reached the client"
    );
    assert_eq!(backend.wakes(), 1, "one wake for one login");
    backend.wait_until("the join", |reported| {
        reported.contains(&Reported::Joined(2, "Alex".into()))
    });
    assert_eq!(backend.players(2), 1);

    // Through the router the running server answers for itself, with the player.
    let running = status(&router, &host("bravo"));
    assert_eq!(
        (running["motd"].as_str(), running["online"].as_i64()),
        (Some("bravo woke"), Some(1))
    );

    player.leave();
    backend.wait_until("the leave", |reported| {
        reported.contains(&Reported::Left(2, "Alex".into()))
    });
    assert_eq!(backend.players(2), 0);
    assert_eq!(
        backend.reported(),
        vec![
            Reported::Wake(2),
            Reported::Joined(2, "Alex".into()),
            Reported::Left(2, "Alex".into())
        ]
    );
}

#[test]
fn a_login_whose_owner_cannot_pay_is_refused_clearly_and_wakes_nothing() {
    let backend = TestBackend::default();
    backend.route(
        name("foxtrot"),
        payperplay_router::Route {
            balance_allows_start: false,
            ..route(6, ServerState::Sleeping)
        },
    );
    // The balance flag may be stale: a wake the platform refuses is told the same way.
    backend.route(name("golf"), route(7, ServerState::Stopped));
    backend.on_wake(|_| WakeOutcome::Refused(WakeRefusal::InsufficientBalance));
    let router = RouterUnderTest::start(RouterConfig::default(), backend.clone());

    let player = NodePlayer::connect(&router, &host("foxtrot"), "Alex");
    let kicked = player.expect_event("kicked");
    assert_eq!(
        kicked["reason"],
        "This server is asleep and its owner's balance is too low to start it. Ask the owner to top up."
    );
    assert_eq!(backend.wakes(), 0, "no wake without balance");

    let player = NodePlayer::connect(&router, &host("golf"), "Steve");
    assert!(
        player.expect_event("kicked")["reason"]
            .as_str()
            .unwrap()
            .contains("balance is too low")
    );
    assert_eq!(
        backend.reported(),
        vec![Reported::Wake(7)],
        "the refused wake joined nobody"
    );
}

#[test]
fn a_hold_that_runs_out_says_where_the_start_stands() {
    let backend = TestBackend::default();
    backend.route(name("delta"), route(4, ServerState::Queued { position: 2, eta_s: 40 }));
    backend.route(name("hotel"), route(8, ServerState::Sleeping));
    let config = RouterConfig {
        hold_ms: 1_000,
        hold_poll_ms: 100,
        ..RouterConfig::default()
    };
    let router = RouterUnderTest::start(config, backend.clone());

    let queued = NodePlayer::connect(&router, &host("delta"), "Alex");
    assert_eq!(
        queued.expect_event("kicked")["reason"],
        "The server is starting: it waits for a machine, position 2 in the queue, about 40 s. Join again then."
    );
    assert_eq!(backend.wakes(), 0, "a queued server is not woken again");

    // A wake that stays starting: the player is told to come back.
    let sleeping = NodePlayer::connect(&router, &host("hotel"), "Steve");
    assert_eq!(
        sleeping.expect_event("kicked")["reason"],
        "The server is starting. Join again in a moment."
    );
    assert_eq!(backend.reported(), vec![Reported::Wake(8)]);

    let unknown = NodePlayer::connect(&router, &host("nobody"), "Alex");
    assert_eq!(
        unknown.expect_event("kicked")["reason"],
        "There is no server at nobody.play.test. Check the address you typed."
    );
}

#[test]
fn a_running_server_is_joined_directly_and_both_ends_see_the_session() {
    let game = TestGame::start(&[("MOTD", "india"), ("TESTGAME_KEEPALIVE_MS", "100")]);
    let backend = TestBackend::default();
    backend.route(
        name("india"),
        route(
            9,
            ServerState::Running {
                address: game.address(),
            },
        ),
    );
    let router = RouterUnderTest::start(RouterConfig::default(), backend.clone());

    let player = NodePlayer::connect(&router, &host("india"), "Alex");
    player.expect_event("joined");
    player.expect_event("position");
    assert!(game.wait_for_line("Alex joined the game", common::WAIT));
    // Keep-alives cross the router both ways for a while: the server does not time out.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(&router, &host("india"))["online"], 1);
    let left = player.leave();
    assert!(left["keep_alives"].as_u64().unwrap() >= 3, "{left}");
    assert!(game.wait_for_line("Alex left the game", common::WAIT));
    backend.wait_until("the leave", |reported| {
        reported.contains(&Reported::Left(9, "Alex".into()))
    });
    assert_eq!(backend.wakes(), 0);
}

#[test]
fn a_running_server_that_does_not_answer_gets_a_clear_ping_and_disconnect() {
    let closed_port = common::free_port();
    let backend = TestBackend::default();
    backend.route(
        name("lima"),
        route(
            12,
            ServerState::Running {
                address: std::net::SocketAddr::from(([127, 0, 0, 1], closed_port)),
            },
        ),
    );
    let router = RouterUnderTest::start(RouterConfig::default(), backend.clone());
    // mcproto's client sends the handshake and the status request in one write: the
    // request read along with the handshake must still be answered.
    let report = router
        .runtime
        .block_on(payperplay_mcproto::status_ping(
            router.address,
            &host("lima"),
            common::WAIT,
        ))
        .unwrap();
    assert_eq!(report.motd, "running, but not answering: try again in a moment");
    assert_eq!(
        status(&router, &host("lima"))["motd"],
        "running, but not answering: try again in a moment"
    );
    let player = NodePlayer::connect(&router, &host("lima"), "Alex");
    assert_eq!(
        player.expect_event("kicked")["reason"],
        "The server is running but does not answer. Try again in a moment."
    );
    assert_eq!(backend.reported(), vec![], "nobody joined, nothing woken");
}
