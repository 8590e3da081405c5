//! Shared by the speech tests and the speech bench: real speech from espeak-ng, tones
//! and silence as 16 kHz mono WAVs, a way to run one stage job directly, word error
//! rate, and the rule for tests that need installed models (skip loudly on a
//! developer machine without them; fail in CI, where `scripts/setup.sh` installs them).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use serde_json::Value;
use vsum_engine::events::EventSink;
use vsum_engine::stage::{CheckEnv, JobCtx, Resources, Scope, StageError, StageKind};
use vsum_models::{ModelsDir, ModelsManifest};
use vsum_stages::speech::vad::VadStage;
use vsum_stages::speech::whisper::WhisperStage;

/// Models the speech tests use.
pub const MODELS: [&str; 3] = ["whisper-tiny.en", "silero-vad", "onnxruntime"];

/// espeak-ng settings tiny.en understands best.
pub const VOICE: [&str; 4] = ["-v", "en-us", "-s", "150"];

/// True when the models and tools are there. Otherwise: in CI (env `CI` set) the test
/// fails; elsewhere it prints a loud SKIP and returns false.
/// The models folder these tests use: `VSUM_MODELS_DIR` or the default (no config).
pub fn models() -> ModelsDir {
    ModelsDir::from_config(None)
}

/// The whisper stage, looking in [`models`].
pub fn whisper() -> WhisperStage {
    WhisperStage::with_models_dir(models())
}

/// The VAD stage, looking in [`models`].
pub fn vad() -> VadStage {
    VadStage::with_models_dir(models())
}

pub fn ready(test: &str) -> bool {
    let dir = models();
    let installed = ModelsManifest::load(&dir)
        .map(|m| m.models)
        .unwrap_or_default();
    let mut missing: Vec<String> = MODELS
        .iter()
        .filter(|m| !installed.contains_key(**m))
        .map(|m| format!("model {m}"))
        .collect();
    for tool in ["espeak-ng", "ffmpeg"] {
        if !have(tool) {
            missing.push(format!("tool {tool}"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let what = format!(
        "{test}: missing {} (models folder {}; run `cargo run -- models install {}` and `apt-get install espeak-ng ffmpeg`)",
        missing.join(", "),
        dir.root().display(),
        MODELS.join(" ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{what}");
    }
    eprintln!("SKIP {what}");
    false
}

/// Is `tool` on PATH (it could be started)?
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

fn check(cmd: &mut Command) {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Speaks `text` into a 16 kHz mono s16 WAV.
pub fn speak(text: &str, out: &Path) {
    let raw = out.with_extension("espeak.wav");
    check(
        Command::new("espeak-ng")
            .args(VOICE)
            .arg("-w")
            .arg(&raw)
            .arg(text),
    );
    check(
        Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-i"])
            .arg(&raw)
            .args(["-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le"])
            .arg(out),
    );
    let _ = std::fs::remove_file(raw);
}

/// Reads a 16 kHz mono s16 WAV.
pub fn read_wav(p: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(p).unwrap();
    assert_eq!(r.spec().sample_rate, 16_000);
    r.samples::<i16>().map(Result::unwrap).collect()
}

pub fn write_wav(p: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(p, spec).unwrap();
    for s in samples {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
}

pub fn silence(secs: f64) -> Vec<i16> {
    vec![0; (secs * 16_000.0) as usize]
}

/// A sine tone (amplitude 0..1).
pub fn tone(freq: f64, secs: f64, amp: f64) -> Vec<i16> {
    (0..(secs * 16_000.0) as usize)
        .map(|i| {
            (amp * 32767.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / 16_000.0).sin()) as i16
        })
        .collect()
}

/// Sentences spoken with pauses between them: (samples, start second of each sentence).
pub fn sentences(dir: &Path, texts: &[&str], lead: f64, pause: f64) -> (Vec<i16>, Vec<f64>) {
    let mut all = silence(lead);
    let mut starts = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let p = dir.join(format!("s{i}.wav"));
        speak(t, &p);
        starts.push(all.len() as f64 / 16_000.0);
        all.extend(read_wav(&p));
        all.extend(silence(pause));
    }
    (all, starts)
}

/// Runs one job of `kind` with `params`; `needs` are (stage id, folder) upstreams.
/// Returns the job's output folder and its result.
pub fn run_stage(
    kind: &dyn StageKind,
    params: Value,
    needs: &[(&str, &Path)],
    base_dir: &Path,
    resources: Option<&mut Resources>,
) -> (tempfile::TempDir, Result<(), StageError>) {
    let needs_env: Vec<(String, Scope)> = needs
        .iter()
        .map(|(n, _)| (n.to_string(), Scope::Video))
        .collect();
    let checked = kind
        .check(
            &params,
            &CheckEnv {
                stage_id: "t",
                scope: Scope::Video,
                needs: &needs_env,
            },
        )
        .unwrap_or_else(|e| panic!("params {params}: {e:?}"));
    let out = tempfile::tempdir().unwrap();
    let upstream: BTreeMap<String, PathBuf> = needs
        .iter()
        .map(|(n, p)| (n.to_string(), p.to_path_buf()))
        .collect();
    let events = EventSink::new();
    let cancel = AtomicBool::new(false);
    let mut ctx = JobCtx {
        stage_id: "t",
        params: &checked,
        base_dir,
        output_root: base_dir,
        out_dir: out.path(),
        video: None,
        upstream: &upstream,
        provenance: &Default::default(),
        batch: &[],
        previous: None,
        threads: 2,
        cancel: &cancel,
        resources,
        force_cpu: false,
        events: &events,
        cores: None,
        held_cores: 0,
    };
    let r = kind.run(&mut ctx);
    (out, r)
}

/// Lower-case words without punctuation (hyphens split words).
pub fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate of `hyp` against `reference` (Levenshtein over words / reference words).
pub fn wer(reference: &str, hyp: &str) -> f64 {
    let r = words(reference);
    let h = words(hyp);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}
