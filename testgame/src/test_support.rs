//! What tests of this crate and of others (the router's) need to run the test game server
//! and the real clients: `payperplay-testgame` started on free loopback ports with its own
//! data directory and its log lines collected, and a node-minecraft-protocol player.
//! Behind the `test-support` feature; tests only.

#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the wall clock")]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The RCON password every test game server gets unless a test sets another.
pub const RCON_PASSWORD: &str = "test-rcon-secret";
/// Generous bound on waits for a process to do something (not a speed goal).
pub const WAIT: Duration = Duration::from_secs(30);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The repository's root (this crate lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `payperplay-testgame`, built next to the running test's own binary (`cargo test
/// --workspace`, or `cargo build --release -p payperplay-testgame`);
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
        "{} is missing: these tests run the test game server; build it with \
         `cargo build --release -p payperplay-testgame` (cargo test --workspace does)",
        binary.display()
    );
    binary
}

#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A running test game server; killed on drop (unless it exited).
pub struct TestGame {
    child: Child,
    pub port: u16,
    pub rcon_port: u16,
    pub data_dir: PathBuf,
    log: Arc<Log>,
    exit_status: Option<ExitStatus>,
    /// The data directory when [`TestGame::start`] made it (removed on drop).
    _own_data_dir: Option<tempfile::TempDir>,
}

impl TestGame {
    /// Starts a server in a fresh data directory of its own and waits for its Done line.
    pub fn start(env: &[(&str, &str)]) -> TestGame {
        let dir = tempfile::tempdir().unwrap();
        let mut game = TestGame::spawn(env, dir.path());
        game._own_data_dir = Some(dir);
        assert!(
            game.wait_for_line("Done (", WAIT),
            "no Done line; log:\n{}",
            game.log_text()
        );
        game
    }

    /// Starts a server on `data_dir` without waiting (RCON on, with [`RCON_PASSWORD`]).
    pub fn spawn(env: &[(&str, &str)], data_dir: &Path) -> TestGame {
        let port = free_port();
        let rcon_port = free_port();
        let mut command = Command::new(testgame_binary());
        command
            .env_clear()
            .env("EULA", "TRUE")
            .env("SERVER_IP", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env("RCON_PORT", rcon_port.to_string())
            .env("RCON_PASSWORD", RCON_PASSWORD)
            .env("TESTGAME_DATA_DIR", data_dir)
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
            rcon_port,
            data_dir: data_dir.to_path_buf(),
            log,
            exit_status: None,
            _own_data_dir: None,
        }
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        self.log.lines.lock().unwrap().join("\n")
    }

    pub fn has_line(&self, needle: &str) -> bool {
        self.log.lines.lock().unwrap().iter().any(|line| line.contains(needle))
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> bool {
        let lines = self.log.lines.lock().unwrap();
        let (lines, _) = self
            .log
            .changed
            .wait_timeout_while(lines, timeout, |lines| !lines.iter().any(|line| line.contains(needle)))
            .unwrap();
        lines.iter().any(|line| line.contains(needle))
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.exit_status = Some(status);
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn level_dat(&self) -> serde_json::Value {
        let path = self.data_dir.join("world/level.dat");
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }
}

impl Drop for TestGame {
    fn drop(&mut self) {
        if self.exit_status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The Python with `mcstatus` and `rcon` (the venv of scripts/start-services.sh).
pub fn python() -> PathBuf {
    let Some(python) = std::env::var_os("PAYPERPLAY_PYTHON") else {
        panic!(
            "PAYPERPLAY_PYTHON is not set: these tests drive the real Python clients (mcstatus, rcon) \
             from the venv that scripts/start-services.sh prepares; run `bash scripts/test.sh` or \
             `source scripts/start-services.sh` first"
        );
    };
    PathBuf::from(python)
}

/// Runs the Python script `script` (relative to the repository) with `args`: its exit
/// code and the JSON it printed.
pub fn python_json(script: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let output = Command::new(python())
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .expect("run the Python clients");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(2), "{script} could not run: {stderr}");
    let value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("{script} {args:?} printed no JSON ({error}): {stdout}\nstderr: {stderr}"));
    (output.status.code().unwrap_or(-1), value)
}

/// A player logged in with node-minecraft-protocol (`testgame/tests/js/login.js`).
pub struct NodePlayer {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<serde_json::Value>,
}

impl NodePlayer {
    /// Connects to 127.0.0.1:`port`; does not wait for the join.
    pub fn connect(port: u16, username: &str) -> NodePlayer {
        NodePlayer::run(&["127.0.0.1", &port.to_string(), username])
    }

    /// Connects to 127.0.0.1:`port` with `hostname` in the handshake (a router).
    pub fn connect_via(port: u16, hostname: &str, username: &str) -> NodePlayer {
        NodePlayer::run(&["127.0.0.1", &port.to_string(), username, hostname])
    }

    fn run(args: &[&str]) -> NodePlayer {
        let js_dir = repo_root().join("testgame/tests/js");
        assert!(
            js_dir.join("node_modules/minecraft-protocol").is_dir(),
            "node-minecraft-protocol is not installed in {}: run `npm ci` there (scripts/start-services.sh does)",
            js_dir.display()
        );
        let mut child = Command::new("node")
            .arg(js_dir.join("login.js"))
            .args(args)
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

/// Polls `condition` until it holds or [`WAIT`] passes.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
