//! Helpers the simulator's integration tests share (each test crate uses a subset).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `payperplay-sim` binary of this build.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_payperplay-sim"))
}

/// A file in the repository's `scenarios/` folder.
pub fn scenario_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
}

/// A temp folder for one test of this process, removed if it existed (not created).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("payperplay-sim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
