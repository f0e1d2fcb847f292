//! Test harness: the shared spawner and clients (`src/test_support.rs`, the same file
//! the router's tests use through the `test-support` feature) and this crate's Python
//! clients (`mcstatus` and `rcon`).

#![allow(
    dead_code,
    unused_imports,
    reason = "each test file uses a different part of the harness"
)]

#[path = "../../src/test_support.rs"]
mod test_support;

pub use test_support::*;

/// Runs `testgame/tests/py/clients.py` and parses its JSON answer; the exit code too.
pub fn py_client(args: &[&str]) -> (i32, serde_json::Value) {
    python_json("testgame/tests/py/clients.py", args)
}

pub fn py_status(game: &TestGame) -> serde_json::Value {
    let (code, value) = py_client(&["status", "127.0.0.1", &game.port.to_string()]);
    assert_eq!(code, 0, "mcstatus status failed: {value}");
    value
}

pub fn py_rcon(game: &TestGame, password: &str, commands: &[&str]) -> (i32, serde_json::Value) {
    let port = game.rcon_port.to_string();
    let mut args = vec!["rcon", "127.0.0.1", &port, password];
    args.extend_from_slice(commands);
    py_client(&args)
}
