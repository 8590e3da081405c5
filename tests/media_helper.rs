//! The media stages run in `vsum-media`, so `vsum` itself never loads FFmpeg: checked on
//! the binaries' load lists, and on what a run does when the helper is missing, stale or
//! dies mid-job (that job fails with a clear error; the rest of the batch goes on).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The shared libraries a binary loads, as glibc's loader lists them (what `ldd` shows).
fn loaded(bin: &str) -> String {
    let out = Command::new(bin)
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .expect("run the binary under the loader's trace");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn vsum_does_not_load_ffmpeg_and_its_media_helper_does() {
    let vsum = loaded(BIN);
    let helper = loaded(env!("CARGO_BIN_EXE_vsum-media"));
    assert!(
        helper.contains("libavcodec"),
        "the trace must list FFmpeg for the helper (else this test sees nothing):\n{helper}"
    );
    assert!(
        !vsum.contains("libavcodec") && !vsum.contains("libavformat"),
        "vsum must not link FFmpeg:\n{vsum}"
    );
    assert!(
        vsum.lines().count() * 4 < helper.lines().count(),
        "vsum loads {} libraries, the helper {}",
        vsum.lines().count(),
        helper.lines().count()
    );
}

const PIPE: &str = r#"
inputs: [input/]
stages:
  probe:
    uses: media.probe
  words:
    run: ["sh", "-c", "echo {stem} > \"$1/stem.txt\"", "x", "{out}"]
"#;

fn project() -> Project {
    let p = Project::new(PIPE, &[]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=10:duration=1",
        "-c:v",
        "libx264",
        p.path().join("input/clip.mp4").to_str().unwrap(),
    ]);
    p
}

fn run_with(p: &Project, env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "pipeline.yaml", "--json", "--progress", "none"])
        .current_dir(p.path())
        .env_remove("VSUM_ALERTS")
        .env("VSUM_RETRY_BACKOFF_MS", "10");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let summary = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no summary ({e}): {}", stderr(&out)));
    (out.status.code().unwrap_or(-1), summary)
}

fn job<'a>(s: &'a serde_json::Value, stage: &str) -> &'a serde_json::Value {
    s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["stage"] == stage)
        .unwrap_or_else(|| panic!("no {stage} job in {s}"))
}

#[test]
fn a_helper_that_dies_mid_job_fails_that_job_clearly_and_the_batch_goes_on() {
    let p = project();
    let (code, s) = run_with(&p, &[("VSUM_FAULT", "media_helper_abort")]);
    assert_eq!(code, 1, "{s}");
    let err = job(&s, "probe")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("media helper") && err.contains("signal 6") && err.contains("aborting"),
        "the error says the helper died, how, and its last words: {err}"
    );
    assert_eq!(job(&s, "words")["outcome"], "ran", "{s}");
    // Nothing of the dead job was kept: the next run does it, and only it.
    let (code, s) = run_with(&p, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(job(&s, "probe")["outcome"], "ran", "{s}");
    assert_eq!(job(&s, "words")["outcome"], "cached", "{s}");
    assert!(p.read("output/clip/probe/probe.json").contains("h264"));
}

#[test]
fn a_missing_or_stale_helper_is_named_with_what_to_run() {
    let p = project();
    let (code, s) = run_with(&p, &[("VSUM_MEDIA_HELPER", "/nonexistent/vsum-media")]);
    assert_eq!(code, 1, "{s}");
    let probe = job(&s, "probe");
    let err = probe["error"].as_str().unwrap_or_default();
    let hint = probe["hint"].as_str().unwrap_or_default();
    assert!(err.contains("/nonexistent/vsum-media"), "{probe}");
    assert!(hint.contains("cargo build --release"), "{probe}");
    assert_eq!(job(&s, "words")["outcome"], "ran", "{s}");

    // A helper built from other sources answers with another source hash.
    let stale = p.path().join("stale-helper");
    std::fs::write(
        &stale,
        "#!/bin/sh\necho '{\"sources\":\"0000\",\"tools\":{},\"libs\":[]}'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o755)).unwrap();
    let xdg = p.path().join("xdg-cache");
    let (code, s) = run_with(
        &p,
        &[
            ("VSUM_MEDIA_HELPER", stale.to_str().unwrap()),
            ("XDG_CACHE_HOME", xdg.to_str().unwrap()),
        ],
    );
    assert_eq!(code, 1, "{s}");
    let err = job(&s, "probe")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("other sources"), "{err}");
}

/// Live `vsum-media` processes working in `dir` (a job's helper runs in the manifest's
/// folder); a dead one (a zombie) has no working folder and is not counted.
fn helpers_working_in(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains("vsum-media")
                && std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == dir)
        })
        .count()
}

#[test]
fn a_killed_vsum_takes_its_media_helper_along() {
    let p = Project::new(
        "inputs: [input/]\nstages:\n  scenes:\n    uses: video.scenes\n",
        &[],
    );
    // Long enough that its decode outlasts the checks below by far.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x360:rate=30:duration=90",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        p.path().join("input/long.mp4").to_str().unwrap(),
    ]);
    let mut vsum = p.spawn_run();
    let deadline = Instant::now() + Duration::from_secs(60);
    while helpers_working_in(p.path()) == 0 {
        assert!(Instant::now() < deadline, "no helper started");
        assert!(vsum.try_wait().unwrap().is_none(), "the run ended first");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let it get into its decode, then kill vsum as a crash or `kill -9` would.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(helpers_working_in(p.path()), 1, "the helper is decoding");
    vsum.kill().unwrap();
    vsum.wait().unwrap();
    let deadline = Instant::now() + Duration::from_millis(200);
    while helpers_working_in(p.path()) > 0 {
        assert!(
            Instant::now() < deadline,
            "a vsum-media outlived its killed vsum"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
