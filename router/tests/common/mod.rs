//! Test harness: the router on its own runtime in front of real `payperplay-testgame`
//! processes, a table [`TestBackend`] standing in for the production runtime, and the
//! real client libraries (`mcstatus` from `$PAYPERPLAY_PYTHON`, node-minecraft-protocol).
//! The test game spawner and the node client are the test game's own
//! (`payperplay_testgame::test_support`).

#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses a different part of the harness"
)]
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the wall clock")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};

use payperplay_router::{
    Backend, BackendError, RequestedHost, Route, RouterConfig, RouterHandle, ServerState, WakeOutcome,
};

pub use payperplay_testgame::test_support::{
    NodePlayer, TestGame, WAIT, eventually, free_port, python_json, repo_root, testgame_binary,
};

pub const DOMAIN: &str = "play.test";

/// A game server a wake hook starts. The hook lives in the backend, which the hook
/// itself keeps alive, so the slot is emptied (and the server killed) when this drops.
#[derive(Clone, Default)]
pub struct WokenGame(Arc<Mutex<Option<TestGame>>>);

impl WokenGame {
    pub fn put(&self, game: TestGame) {
        *self.0.lock().unwrap() = Some(game);
    }
}

/// Kills the woken game server when the test ends, however it ends.
pub struct KillOnDrop(pub WokenGame);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let game = self.0.0.lock().map(|mut slot| slot.take());
        drop(game);
    }
}

/// What the test backend was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    Wake(u64),
    Joined(u64, String),
    Left(u64, String),
}

type WakeHook = Box<dyn Fn(u64) -> WakeOutcome + Send + Sync>;

#[derive(Default)]
struct Table {
    routes: BTreeMap<RequestedHost, Route>,
    reported: Vec<Reported>,
    players: BTreeMap<u64, u32>,
}

/// The one test double: a table of routes standing in for the production runtime
/// (which answers from the core and the store). A wake calls the test's hook.
#[derive(Clone, Default)]
pub struct TestBackend {
    table: Arc<(Mutex<Table>, Condvar)>,
    wake_hook: Arc<Mutex<Option<WakeHook>>>,
}

impl TestBackend {
    pub fn route(&self, host: RequestedHost, route: Route) {
        self.table.0.lock().unwrap().routes.insert(host, route);
    }

    /// Changes the state of every route of `server_id`.
    pub fn set_state(&self, server_id: u64, state: ServerState) {
        let mut table = self.table.0.lock().unwrap();
        for route in table.routes.values_mut().filter(|route| route.server_id == server_id) {
            route.state = state.clone();
        }
    }

    pub fn on_wake(&self, hook: impl Fn(u64) -> WakeOutcome + Send + Sync + 'static) {
        *self.wake_hook.lock().unwrap() = Some(Box::new(hook));
    }

    pub fn reported(&self) -> Vec<Reported> {
        self.table.0.lock().unwrap().reported.clone()
    }

    pub fn wakes(&self) -> usize {
        self.reported()
            .iter()
            .filter(|reported| matches!(reported, Reported::Wake(_)))
            .count()
    }

    /// The player count the joins and leaves add up to (what the core would hold).
    pub fn players(&self, server_id: u64) -> u32 {
        self.table
            .0
            .lock()
            .unwrap()
            .players
            .get(&server_id)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `condition` holds on what was reported.
    pub fn wait_until(&self, what: &str, condition: impl Fn(&[Reported]) -> bool) {
        let table = self.table.0.lock().unwrap();
        let (table, timeout) = self
            .table
            .1
            .wait_timeout_while(table, WAIT, |table| !condition(&table.reported))
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "timed out waiting for {what}; reported: {:?}",
            table.reported
        );
    }

    fn report(&self, reported: Reported) {
        let mut table = self.table.0.lock().unwrap();
        match &reported {
            Reported::Joined(server_id, _) => *table.players.entry(*server_id).or_default() += 1,
            Reported::Left(server_id, _) => *table.players.entry(*server_id).or_default() -= 1,
            Reported::Wake(_) => {}
        }
        table.reported.push(reported);
        self.table.1.notify_all();
    }
}

impl Backend for TestBackend {
    async fn resolve(&self, host: &RequestedHost) -> Result<Option<Route>, BackendError> {
        Ok(self.table.0.lock().unwrap().routes.get(host).cloned())
    }

    async fn wake(&self, server_id: u64) -> Result<WakeOutcome, BackendError> {
        self.report(Reported::Wake(server_id));
        let hook = self.wake_hook.lock().unwrap();
        Ok(match hook.as_ref() {
            Some(hook) => hook(server_id),
            None => WakeOutcome::Starting,
        })
    }

    async fn player_joined(&self, server_id: u64, player: &str) {
        self.report(Reported::Joined(server_id, player.to_owned()));
    }

    async fn player_left(&self, server_id: u64, player: &str) {
        self.report(Reported::Left(server_id, player.to_owned()));
    }
}

pub fn name(name: &str) -> RequestedHost {
    RequestedHost::Name(name.to_owned())
}

pub fn route(server_id: u64, state: ServerState) -> Route {
    Route {
        server_id,
        state,
        players_max: 20,
        favicon: None,
        balance_allows_start: true,
        proxy_protocol: None,
    }
}

/// A router on its own runtime, listening on a free loopback port.
pub struct RouterUnderTest {
    pub runtime: tokio::runtime::Runtime,
    handle: Option<RouterHandle>,
    pub address: SocketAddr,
}

impl RouterUnderTest {
    pub fn start(config: RouterConfig, backend: TestBackend) -> RouterUnderTest {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = RouterConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            domain: DOMAIN.to_owned(),
            ..config
        };
        let handle = runtime.block_on(payperplay_router::start(config, backend)).unwrap();
        let address = handle.local_addr();
        RouterUnderTest {
            runtime,
            handle: Some(handle),
            address,
        }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }
}

impl Drop for RouterUnderTest {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.runtime.block_on(handle.stop());
        }
    }
}

/// Runs `router/tests/py/router_clients.py`: its exit code and JSON answer.
pub fn mcstatus(args: &[&str]) -> (i32, serde_json::Value) {
    python_json("router/tests/py/router_clients.py", args)
}

/// mcstatus status + ping through the router for `hostname`.
pub fn status(router: &RouterUnderTest, hostname: &str) -> serde_json::Value {
    let (code, value) = mcstatus(&["status", &router.port().to_string(), hostname]);
    assert_eq!(code, 0, "mcstatus status of {hostname} failed: {value}");
    value
}

/// mcstatus's parse of a 1.6 legacy ping naming `hostname`.
pub fn legacy(router: &RouterUnderTest, hostname: &str) -> serde_json::Value {
    let (code, value) = mcstatus(&["legacy16", &router.port().to_string(), hostname]);
    assert_eq!(code, 0, "legacy ping of {hostname} failed: {value}");
    value
}
