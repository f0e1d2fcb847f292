//! Cross-crate tests live in `tests/tests/`; this library holds what they share.

use std::path::PathBuf;

pub mod ops;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A scenario file from `scenarios/`.
pub fn scenario_path(name: &str) -> PathBuf {
    repo_root().join("scenarios").join(name)
}
