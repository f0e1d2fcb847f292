//! Test harness: the router on its own runtime in front of real `payperplay-testgame`
//! processes, a table [`TestBackend`] standing in for the production runtime, and the
//! real client libraries (`mcstatus` from `$PAYPERPLAY_PYTHON`, node-minecraft-protocol).

#![allow(dead_code, reason = "each test file uses a different part of the harness")]
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the wall clock")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use payperplay_router::{
    Backend, BackendError, RequestedHost, Route, RouterConfig, RouterHandle, ServerState, WakeOutcome,
};

/// Generous bound on waits for a process to do something (not a speed goal).
pub const WAIT: Duration = Duration::from_secs(30);
pub const DOMAIN: &str = "play.test";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `payperplay-testgame`, built by `cargo test --workspace` (or
/// `cargo build --release -p payperplay-testgame`) next to this test's own binary;
/// `PAYPERPLAY_TESTGAME_BIN` overrides.
pub fn testgame_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PAYPERPLAY_TESTGAME_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("payperplay-testgame");
    assert!(
        binary.is_file(),
        "{} is missing: the router's tests run the test game server; build it with \
         `cargo build --release -p payperplay-testgame` (cargo test --workspace does)",
        binary.display()
    );
    binary
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A running test game server; killed on drop.
pub struct TestGame {
    child: Child,
    pub port: u16,
    log: Arc<Log>,
    _data_dir: tempfile::TempDir,
}

impl TestGame {
    /// Starts one and waits for its Done line.
    pub fn start(env: &[(&str, &str)]) -> TestGame {
        let game = TestGame::spawn(env);
        assert!(
            game.wait_for_line("Done (", WAIT),
            "no Done line; log:\n{}",
            game.log_text()
        );
        game
    }

    /// Starts one without waiting.
    pub fn spawn(env: &[(&str, &str)]) -> TestGame {
        let data_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new(testgame_binary());
        command
            .env_clear()
            .env("EULA", "TRUE")
            .env("SERVER_IP", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env("ENABLE_RCON", "false")
            .env("TESTGAME_DATA_DIR", data_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start payperplay-testgame");
        let log = Arc::new(Log::default());
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    log.lines.lock().unwrap().push(line);
                    log.changed.notify_all();
                }
            });
        }
        TestGame {
            child,
            port,
            log,
            _data_dir: data_dir,
        }
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> bool {
        let lines = self.log.lines.lock().unwrap();
        let (lines, _) = self
            .log
            .changed
            .wait_timeout_while(lines, timeout, |lines| !lines.iter().any(|line| line.contains(needle)))
            .unwrap();
        lines.iter().any(|line| line.contains(needle))
    }
}

impl Drop for TestGame {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// The Python with `mcstatus` (the venv of scripts/start-services.sh).
pub fn python() -> PathBuf {
    let Some(python) = std::env::var_os("PAYPERPLAY_PYTHON") else {
        panic!(
            "PAYPERPLAY_PYTHON is not set: these tests drive the real Python client mcstatus from the venv \
             that scripts/start-services.sh prepares; run `bash scripts/test.sh` or \
             `source scripts/start-services.sh` first"
        );
    };
    PathBuf::from(python)
}

/// Runs `router/tests/py/router_clients.py`: its exit code and JSON answer.
pub fn mcstatus(args: &[&str]) -> (i32, serde_json::Value) {
    let script = repo_root().join("router/tests/py/router_clients.py");
    let output = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .expect("run the Python clients");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(2),
        "router_clients.py could not run: {stderr}"
    );
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!("router_clients.py {args:?} printed no JSON ({error}): {stdout}\nstderr: {stderr}")
    });
    (output.status.code().unwrap_or(-1), value)
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

/// A player logged in with node-minecraft-protocol (`testgame/tests/js/login.js`),
/// its socket to the router, its handshake naming a hostname.
pub struct NodePlayer {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<serde_json::Value>,
}

impl NodePlayer {
    pub fn connect(router: &RouterUnderTest, hostname: &str, username: &str) -> NodePlayer {
        let js_dir = repo_root().join("testgame/tests/js");
        assert!(
            js_dir.join("node_modules/minecraft-protocol").is_dir(),
            "node-minecraft-protocol is not installed in {}: run `npm ci` there (scripts/start-services.sh does)",
            js_dir.display()
        );
        let mut child = Command::new("node")
            .arg(js_dir.join("login.js"))
            .args(["127.0.0.1", &router.port().to_string(), username, hostname])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run node (Node.js 20 or later must be installed)");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (sender, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if sender.send(event).is_err() {
                    break;
                }
            }
        });
        NodePlayer { child, stdin, events }
    }

    /// The next event named `name`; panics on an earlier end of the client.
    pub fn expect_event(&self, name: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if event["event"] == name => return event,
                Ok(event)
                    if ["error", "ended", "kicked"].contains(&event["event"].as_str().unwrap_or(""))
                        && name != "ended"
                        && name != "kicked" =>
                {
                    panic!("the node client ended while waiting for {name}: {event}")
                }
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => panic!("no {name} event from the node client"),
                Err(RecvTimeoutError::Disconnected) => panic!("the node client exited before {name}"),
            }
        }
    }

    /// Leaves and waits for the client to exit.
    pub fn leave(mut self) -> serde_json::Value {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(b"leave\n").unwrap();
        drop(stdin);
        let event = self.expect_event("left");
        assert!(self.child.wait().unwrap().success());
        event
    }
}

impl Drop for NodePlayer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` until it holds or `WAIT` passes.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
