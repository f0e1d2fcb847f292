//! The `payperplay-sim` command line: outputs, exit codes, messages.

mod common;
use common::{bin, scenario_path as scenario, temp_dir};

#[test]
fn run_writes_json_and_markdown_and_exits_zero() {
    let out = temp_dir("ok");
    let output = bin()
        .args(["run", "--quiet", "--out"])
        .arg(&out)
        .arg(scenario("small-dedicated.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("outcome.json")).unwrap()).unwrap();
    assert_eq!(json["scenario"], "small-dedicated");
    assert!(json["start_wait"]["count"].as_u64().unwrap() > 100);
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## Start wait"));
}

#[test]
fn a_failed_expectation_exits_one_and_says_which() {
    let out = temp_dir("fail");
    let text = std::fs::read_to_string(scenario("small-dedicated.toml"))
        .unwrap()
        .replace("start_wait_p95_s = { max = 65 }", "start_wait_p95_s = { max = 5 }");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("strict.toml");
    std::fs::write(&path, text).unwrap();
    let output = bin()
        .args(["run", "--quiet", "--out"])
        .arg(&out)
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("start_wait_p95_s"), "{stderr}");
    assert!(stderr.contains("above the maximum 5"), "{stderr}");
}

#[test]
fn seed_override_changes_the_outcome() {
    let (a, b) = (temp_dir("seed-a"), temp_dir("seed-b"));
    for (dir, seed) in [(&a, "1"), (&b, "2")] {
        let status = bin()
            .args(["run", "--quiet", "--seed", seed, "--out"])
            .arg(dir)
            .arg(scenario("small-dedicated.toml"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert_ne!(
        std::fs::read(a.join("outcome.json")).unwrap(),
        std::fs::read(b.join("outcome.json")).unwrap()
    );
}

#[test]
fn a_bad_scenario_exits_two_with_file_and_line() {
    let out = temp_dir("bad");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("bad.toml");
    std::fs::write(&path, "name = \"x\"\nduration = \"1day\"\nbogus = 1\n").unwrap();
    let output = bin().args(["run", "--quiet"]).arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.toml:"), "{stderr}");
}
