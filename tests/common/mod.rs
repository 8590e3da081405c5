//! Shared helpers for the CLI tests: a throwaway project folder with a manifest and
//! "videos", and a way to run `vsum` in it and read its JSON run summary.
#![allow(dead_code)]

pub mod talk;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct Project {
    pub dir: tempfile::TempDir,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_vsum");

/// The binary [`Project::vsum`] runs: [`BIN`], or `VSUM_TEST_BIN` when set (a copy of
/// it, for worktrees that share one target folder and so one `target/debug/vsum`; copy
/// `vsum-media`, the media helper, beside it too).
pub fn bin() -> String {
    std::env::var("VSUM_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

impl Project {
    /// A project with `manifest` as `pipeline.yaml` and the given files under `input/`.
    pub fn new(manifest: &str, videos: &[(&str, &[u8])]) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("input")).unwrap();
        for (name, bytes) in videos {
            let p = dir.path().join("input").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let p = Project { dir };
        p.write_manifest(manifest);
        // Tests must not depend on how full this machine's disk is: disk alerts off,
        // everything else at its defaults, sampled often so monitoring is exercised.
        p.write_alerts("disk_free_gb: {warning: null, critical: null}\nsample_interval_ms: 100\n");
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifest(&self) -> PathBuf {
        self.path().join("pipeline.yaml")
    }

    pub fn write_manifest(&self, text: &str) {
        let text = text.replace("$DIR", &self.path().to_string_lossy());
        std::fs::write(self.manifest(), text).unwrap();
    }

    pub fn write_alerts(&self, text: &str) {
        std::fs::create_dir_all(self.path().join("config")).unwrap();
        std::fs::write(self.path().join("config/alerts.yaml"), text).unwrap();
    }

    pub fn vsum(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .current_dir(self.path())
            .env_remove("VSUM_CONFIG")
            .env_remove("VSUM_CACHE_DIR")
            .env_remove("VSUM_CPU_THREADS")
            .env_remove("VSUM_ALERTS")
            .env("VSUM_RETRY_BACKOFF_MS", "10")
            .output()
            .expect("run vsum")
    }

    /// `vsum run pipeline.yaml` started in the background, its output discarded (for a
    /// test that signals, kills or races it).
    pub fn spawn_run(&self) -> std::process::Child {
        Command::new(BIN)
            .args(["run", "pipeline.yaml", "--progress", "none"])
            .current_dir(self.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start vsum")
    }

    /// `vsum run pipeline.yaml --json --progress none <extra>`; returns (exit code, summary).
    pub fn run(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["run", "pipeline.yaml", "--json", "--progress", "none"];
        args.extend_from_slice(extra);
        let out = self.vsum(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON summary ({e}); stderr:\n{}\nstdout:\n{stdout}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), summary)
    }

    /// Runs the pipeline with its real models: the run summary, or `None` when a model
    /// is not installed and `test` may skip (never in CI, see [`required`]). Any other
    /// failure panics with the summary.
    pub fn run_with_models(&self, test: &str) -> Option<Value> {
        let (code, s) = self.run(&[]);
        if code != 0 {
            let missing_model = s["jobs"].as_array().unwrap().iter().any(|j| {
                j["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("vsum models install"))
            });
            if missing_model && !required(test, "a model (vsum models install ...)") {
                return None;
            }
            panic!("pipeline failed: {s}");
        }
        Some(s)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Lines appended by commands to `runs.log` (one per execution).
    pub fn executions(&self) -> Vec<String> {
        std::fs::read_to_string(self.path().join("runs.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Is a program on the `PATH`?
pub fn tool(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A missing prerequisite of `test`: in CI (env `CI`) that is a failure, since
/// `scripts/setup.sh` must install it; elsewhere a loud SKIP. Returns false.
pub fn required(test: &str, what: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing in CI: scripts/setup.sh must install it");
    }
    eprintln!("SKIP {test}: {what} is missing (run ./scripts/setup.sh)");
    false
}

/// Runs ffmpeg quietly; fails the test when it fails.
pub fn ffmpeg<S: AsRef<std::ffi::OsStr>>(args: &[S]) {
    run_ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(args),
    );
}

/// A talking video `dir/name.mp4`: espeak speech over `sources` (one lavfi source per
/// scene, each `scene_secs` long), or silent when `text` is empty.
pub fn talking_video(
    dir: &Path,
    name: &str,
    text: &str,
    sources: &[&str],
    scene_secs: f64,
) -> PathBuf {
    let out = dir.join(format!("{name}.mp4"));
    let mut args: Vec<String> = Vec::new();
    let mut filters = String::new();
    for (i, src) in sources.iter().enumerate() {
        args.extend(["-f", "lavfi", "-t"].map(String::from));
        args.push(format!("{scene_secs}"));
        args.push("-i".into());
        args.push(format!("{src}=size=320x240:rate=25"));
        filters.push_str(&format!("[{i}:v]format=yuv420p,setsar=1[v{i}];"));
    }
    let cat: String = (0..sources.len()).map(|i| format!("[v{i}]")).collect();
    filters.push_str(&format!("{cat}concat=n={}:v=1:a=0[v]", sources.len()));
    let wav = dir.join(format!("{name}.wav"));
    if !text.is_empty() {
        run_ok(
            Command::new("espeak-ng")
                .args(["-s", "140", "-w"])
                .arg(&wav)
                .arg(text),
        );
        args.extend(["-i".into(), wav.to_string_lossy().into_owned()]);
    }
    args.extend([
        "-filter_complex".into(),
        filters,
        "-map".into(),
        "[v]".into(),
    ]);
    if !text.is_empty() {
        args.extend(["-map".into(), format!("{}:a", sources.len())]);
        args.extend(["-c:a", "aac", "-af", "apad"].map(String::from));
    }
    args.extend(["-c:v", "libx264", "-preset", "veryfast", "-t"].map(String::from));
    args.push(format!("{}", scene_secs * sources.len() as f64));
    args.push(out.to_string_lossy().into_owned());
    ffmpeg(&args);
    if !text.is_empty() {
        std::fs::remove_file(&wav).unwrap();
    }
    out
}

/// Runs a command that must succeed (media generation); fails the test with its stderr.
pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn counts(summary: &Value) -> (u64, u64, u64, u64) {
    let c = &summary["counts"];
    (
        c["ran"].as_u64().unwrap(),
        c["cached"].as_u64().unwrap(),
        c["failed"].as_u64().unwrap(),
        c["skipped"].as_u64().unwrap(),
    )
}

/// Jobs of the summary as (stage, video, outcome).
pub fn jobs(summary: &Value) -> Vec<(String, String, String)> {
    summary["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["stage"].as_str().unwrap().to_string(),
                j["video"].as_str().unwrap_or("[batch]").to_string(),
                j["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn ran(summary: &Value) -> Vec<(String, String)> {
    let mut v: Vec<_> = jobs(summary)
        .into_iter()
        .filter(|(_, _, o)| o == "ran")
        .map(|(s, v, _)| (s, v))
        .collect();
    v.sort();
    v
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A two-stage per-video pipeline plus a batch index; every execution is logged.
pub const DEMO: &str = r#"
name: demo
inputs: [input/]
output: output/
stages:
  size:
    run: ["sh", "-c", "echo size {stem} >> '$DIR/runs.log'; wc -c < \"$1\"", "x", "{video}"]
    stdout: size.txt
  double:
    needs: [size]
    run: ["sh", "-c", "echo double {stem} >> '$DIR/runs.log'; cat \"$1\" \"$1\" > \"$2\"", "x", "{size}/size.txt", "{out}/double.txt"]
    outputs: [double.txt]
  index:
    scope: batch
    needs: [double]
    run: ["sh", "-c", "echo index >> '$DIR/runs.log'; for d in \"$@\"; do cat \"$d/double.txt\"; done", "x", "{videos}"]
    stdout: all.txt
"#;
