//! Typed stage contracts as a user of the engine meets them: a new built-in kind is one
//! file and one registry line; a name a stage writes into its output never leaks from
//! one video to another with the same bytes; and a GPU stage that runs out of memory is
//! run again on the CPU by the engine, with a note in the run summary.
//!
//! That a renamed output field fails to compile in its consumers is a property of the
//! types, checked by the `compile_fail` example on `vsum_stages::media::KeyframesOut`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use common::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vsum_engine::config::Config;
use vsum_engine::contract::TypedStage;
use vsum_engine::events::{EventSink, Outcome};
use vsum_engine::manifest;
use vsum_engine::run::{self, RunOptions, RunSummary};
use vsum_engine::stage::{JobCtx, StageError, StageKind};
use vsum_engine::store::{LockMode, Store};

/// The whole of a new kind: its params, and what it does.
#[derive(Debug, Default)]
struct Shout;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct ShoutParams {
    /// Put after the shouted text.
    suffix: String,
}

impl Default for ShoutParams {
    fn default() -> Self {
        ShoutParams { suffix: "!".into() }
    }
}

impl TypedStage for Shout {
    type Params = ShoutParams;
    const NAME: &'static str = "test.shout";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Upper-cases the upstream words.txt";

    fn run(&self, p: &ShoutParams, ctx: &mut JobCtx) -> Result<(), StageError> {
        let src = ctx.require_upstream_file("words.txt", "command")?;
        let text = std::fs::read_to_string(src).map_err(|e| StageError::fatal(e.to_string()))?;
        let out = format!("{}{}", text.trim().to_uppercase(), p.suffix);
        std::fs::write(ctx.out_dir.join("shout.txt"), out)
            .map_err(|e| StageError::retryable(e.to_string()))
    }
}

fn run_in_process(dir: &Path) -> RunSummary {
    let mut registry = vsum_stages::registry(&vsum_models::ModelsDir::from_config(None));
    registry.register(Shout);
    let m = manifest::load(&dir.join("m.yaml"), &registry).unwrap();
    let cfg = Config::default();
    let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
    run::run(
        &m,
        &registry,
        &cfg,
        &store,
        &RunOptions::default(),
        EventSink::new(),
        &AtomicBool::new(false),
    )
    .unwrap()
}

#[test]
fn a_new_kind_is_one_file_and_one_registry_line_and_it_caches() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.mp4"), "not really a video").unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        r#"
inputs: [in]
stages:
  words:
    uses: command
    with:
      run: [sh, -c, "echo hello there > {out}/words.txt"]
  shout:
    uses: test.shout
    needs: [words]
    with: {suffix: "?!"}
"#,
    )
    .unwrap();
    let first = run_in_process(dir.path());
    assert_eq!(first.counts.ran, 2, "{first:?}");
    let out = std::fs::read_to_string(dir.path().join("output/a/shout/shout.txt")).unwrap();
    assert_eq!(out, "HELLO THERE?!");
    let again = run_in_process(dir.path());
    assert_eq!(again.counts.cached, 2, "{again:?}");
    assert!(
        again.jobs.iter().all(|j| j.outcome == Outcome::Cached),
        "{:?}",
        again.jobs
    );
    // Its docs come from the type: the doc comment and the default, no type names.
    let doc = Shout.params_doc();
    assert_eq!(doc[0].name, "suffix");
    assert_eq!(doc[0].doc, "Put after the shouted text.");
    assert_eq!(doc[0].default.as_deref(), Some("!"));
    assert_eq!(doc[0].ty, "text");
}

#[test]
fn two_videos_with_the_same_bytes_get_their_own_source() {
    if !tool("ffmpeg")
        && !required(
            "two_videos_with_the_same_bytes_get_their_own_source",
            "ffmpeg",
        )
    {
        return;
    }
    let p = Project::new(
        r#"
inputs: [input]
stages:
  probe:
    uses: media.probe
  named:
    uses: command
    with:
      run: [sh, -c, "echo {video} > {out}/name.txt"]
  knowledge:
    uses: knowledge.compose
    needs: [probe]
"#,
        &[],
    );
    let a = p.path().join("input/monday.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=10:duration=2",
        "-pix_fmt",
        "yuv420p",
        a.to_str().unwrap(),
    ]);
    std::fs::copy(&a, p.path().join("input/tuesday.mp4")).unwrap();
    let (code, summary) = p.run(&[]);
    assert_eq!(code, 0, "{summary}");
    for day in ["monday", "tuesday"] {
        let s: Value =
            serde_json::from_str(&p.read(&format!("output/{day}/knowledge/summary.json"))).unwrap();
        assert_eq!(s["source"], format!("input/{day}.mp4"), "{s}");
        assert_eq!(s["title"], day);
        let named = p.read(&format!("output/{day}/named/name.txt"));
        assert!(named.contains(&format!("{day}.mp4")), "{named}");
        assert!(
            s.get("processed").is_none(),
            "no wall-clock time in a cached file"
        );
    }
    // The bytes are the same, so the probe ran once and the other was a hit.
    let probes = jobs(&summary)
        .into_iter()
        .filter(|(stage, _, _)| stage == "probe")
        .map(|(_, _, outcome)| outcome)
        .collect::<Vec<_>>();
    assert_eq!(probes.len(), 2, "{probes:?}");
}

#[test]
fn whisper_out_of_memory_is_retried_on_the_cpu_and_noted_in_the_run_summary() {
    let t = "whisper_out_of_memory_is_retried_on_the_cpu_and_noted_in_the_run_summary";
    if !tool("espeak-ng") && !required(t, "espeak-ng") {
        return;
    }
    let p = Project::new(
        r#"
inputs: [input]
extensions: [wav]
stages:
  audio:
    uses: media.audio
  transcribe:
    uses: whisper.transcribe
    needs: [audio]
    with: {model: whisper-tiny.en}
"#,
        &[],
    );
    let st = Command::new("espeak-ng")
        .args(["-s", "150", "-w"])
        .arg(p.path().join("input/hello.wav"))
        .arg("The backup runs every night at nine.")
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new(BIN)
        .args(["run", "pipeline.yaml", "--json", "--progress", "none"])
        .current_dir(p.path())
        .env("VSUM_FAULT", "gpu_oom:whisper.transcribe")
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    if summary.to_string().contains("vsum models install") {
        assert!(
            std::env::var_os("CI").is_none(),
            "whisper-tiny.en is not installed in CI: {summary}"
        );
        eprintln!(
            "SKIPPED {t}: whisper-tiny.en is not installed (vsum models install whisper-tiny.en)"
        );
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{summary}\n{}", stderr(&out));
    let job = summary["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["stage"] == "transcribe")
        .unwrap();
    assert_eq!(job["outcome"], "ran", "{job}");
    let notes = job["notes"].to_string();
    assert!(notes.contains("retried on the CPU"), "{job}");
    assert!(notes.contains("injected GPU out-of-memory"), "{job}");
    let text = p
        .read("output/hello/transcribe/transcript.txt")
        .to_lowercase();
    assert!(text.contains("every night"), "{text}");
}
