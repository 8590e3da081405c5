//! Manifest validation is data: each file in tests/fixtures/invalid/ is checked against
//! the `.stderr` file beside it (set UPDATE_EXPECT=1 to rewrite them after a deliberate
//! change, then review the diff).

mod common;

use std::path::Path;
use std::process::Command;

use common::{BIN, stderr, stdout};

fn check(fixture: &str) {
    let yaml = format!("tests/fixtures/invalid/{fixture}.yaml");
    let expected_path = format!("tests/fixtures/invalid/{fixture}.stderr");
    let out = Command::new(BIN)
        .args(["validate", &yaml])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "invalid manifests exit with 2");
    let got = stderr(&out);
    if std::env::var_os("UPDATE_EXPECT").is_some() || !Path::new(&expected_path).exists() {
        std::fs::write(&expected_path, &got).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    assert_eq!(got, expected, "stderr of `vsum validate {yaml}` changed");
}

#[test]
fn reports_every_error_at_once_with_positions_and_hints() {
    check("many_errors");
}

#[test]
fn cycles_are_shown_as_a_path() {
    check("cycle");
}

#[test]
fn yaml_syntax_errors_point_at_the_problem() {
    check("syntax");
}

#[test]
fn command_stage_shapes_are_checked() {
    check("command_shapes");
}

#[test]
fn every_command_that_reads_a_manifest_validates_it() {
    for cmd in ["run", "plan", "dag"] {
        let out = Command::new(BIN)
            .args([cmd, "tests/fixtures/invalid/cycle.yaml"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        assert!(
            stderr(&out).contains("stages form a cycle: a -> c -> b -> a"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_valid_manifest_validates_and_renders_its_dag() {
    let out = Command::new(BIN)
        .args(["validate", "tests/fixtures/valid/demo.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok (4 stage(s): size, double, gpu, index)"));
    let dot = Command::new(BIN)
        .args(["dag", "tests/fixtures/valid/demo.yaml", "--format", "dot"])
        .output()
        .unwrap();
    let dot = stdout(&dot);
    assert!(dot.starts_with("digraph \"demo\" {"), "{dot}");
    assert!(dot.contains("\"size\" -> \"double\";"), "{dot}");
    assert!(
        dot.contains("shape=box3d"),
        "GPU stages are drawn differently: {dot}"
    );
    let mermaid = Command::new(BIN)
        .args([
            "dag",
            "tests/fixtures/valid/demo.yaml",
            "--format",
            "mermaid",
        ])
        .output()
        .unwrap();
    assert!(
        stdout(&mermaid).contains("size --> gpu"),
        "{}",
        stdout(&mermaid)
    );
    let text = Command::new(BIN)
        .args(["dag", "tests/fixtures/valid/demo.yaml"])
        .output()
        .unwrap();
    assert!(
        stdout(&text).contains("index (command, cpu batch)  <- double"),
        "{}",
        stdout(&text)
    );
}

#[test]
fn bad_config_values_point_into_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.yaml");
    std::fs::write(
        &m,
        "inputs: [x/]\nconfig:\n  retries: many\nstages:\n  a:\n    run: [\"true\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["validate", m.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("m.yaml:3:3: config: invalid type: string \"many\""),
        "{err}"
    );
}

#[test]
fn stages_lists_kinds_and_params() {
    let out = Command::new(BIN)
        .args(["stages", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let command = v
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "command")
        .unwrap();
    assert!(
        command["params"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "deps")
    );
}
