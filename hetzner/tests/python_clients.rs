//! The fake's fidelity, proven from outside: Hetzner's official Python client drives it,
//! and its answers validate against the official API description. Both run with
//! `$PAYPERPLAY_PYTHON`, the venv that `scripts/start-services.sh` builds from
//! `prod/tests/py/requirements.txt` (hcloud, jsonschema).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::FakeHetzner;

fn python() -> String {
    std::env::var("PAYPERPLAY_PYTHON").unwrap_or_else(|_| {
        panic!(
            "PAYPERPLAY_PYTHON is not set: `source scripts/start-services.sh` first (it builds the venv \
             with hcloud and jsonschema from prod/tests/py/requirements.txt)"
        )
    })
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(name)
}

/// The official API description: `$PAYPERPLAY_HETZNER_SPEC`, or
/// `shared/data/hetzner-cloud.spec.json` in the nearest folder above the repository
/// that has one (the project keeps `shared/` beside the repository).
fn spec_path() -> PathBuf {
    const RELATIVE: &str = "shared/data/hetzner-cloud.spec.json";
    if let Some(path) = std::env::var_os("PAYPERPLAY_HETZNER_SPEC").map(PathBuf::from) {
        assert!(
            path.is_file(),
            "PAYPERPLAY_HETZNER_SPEC={} is not a file",
            path.display()
        );
        return path;
    }
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .map(|dir| dir.join(RELATIVE))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the Hetzner API description ({RELATIVE}) is in no folder above {}: set PAYPERPLAY_HETZNER_SPEC",
                manifest_dir.display()
            )
        })
}

fn run(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(python())
        .args(args)
        .output()
        .expect("run the venv's python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_official_hcloud_client_creates_lists_pages_waits_handles_errors_and_deletes() {
    let fake = FakeHetzner::start();
    let stdout = run(&[
        script("hcloud_against_fake.py").as_os_str(),
        fake.base_url.as_ref(),
        common::TOKEN.as_ref(),
    ]);
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn every_answer_of_the_fake_validates_against_the_official_api_description() {
    let fake = FakeHetzner::start();
    let spec = spec_path();
    let stdout = run(&[
        script("validate_fake_against_spec.py").as_os_str(),
        fake.base_url.as_ref(),
        common::TOKEN.as_ref(),
        spec.as_os_str(),
    ]);
    println!("{stdout}");
    // Every endpoint the fake serves, with successes and the error answers.
    for expected in [
        "POST /servers 201",
        "POST /servers 409",
        "POST /servers 412",
        "POST /servers 422",
        "POST /servers 400",
        "POST /servers 503",
        "GET /servers 200",
        "GET /servers 401",
        "GET /servers 429",
        "GET /servers/{id} 200",
        "GET /servers/{id} 404",
        "GET /servers/{id} 423",
        "DELETE /servers/{id} 200",
        "DELETE /servers/{id} 404",
        "GET /actions/{id} 200",
        "GET /actions/{id} 404",
        "GET /actions 200",
        "GET /actions 422",
        "GET /server_types 200",
        "GET /server_types/{id} 200",
        "GET /locations 200",
        "GET /locations/{id} 200",
        "GET /ssh_keys 200",
        "POST /ssh_keys 201",
        "POST /ssh_keys 409",
    ] {
        assert!(
            stdout.contains(&format!("  {expected}\n")),
            "{expected} not covered:\n{stdout}"
        );
    }
}
