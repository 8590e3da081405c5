//! Speech bench: how fast Whisper tiny.en and Silero VAD run here, and what loading
//! the model once per run saves. Run with `cargo bench -p vsum-stages --bench speech`
//! (needs `vsum models install whisper-tiny.en silero-vad onnxruntime`, espeak-ng and
//! ffmpeg). Prints:
//! 1. the real-time factor (decode seconds / audio seconds) of tiny.en on 60 s of
//!    espeak speech, model load apart, and of Silero VAD on the same audio;
//! 2. a batch of 10 short clips in one engine run (one model load) against 10 separate
//!    single-clip runs (a load each), both through `vsum_engine::run::run`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;
use support::*;
use vsum_engine::config::Config;
use vsum_engine::events::{Event, EventSink};
use vsum_engine::run::{self, RunOptions};
use vsum_engine::stage::Resources;
use vsum_engine::store::{LockMode, Store};
use vsum_stages::speech::vad::VadStage;
use vsum_stages::speech::whisper::WhisperStage;

const TEXT: [&str; 6] = [
    "Please remember to bring your laptop to the meeting tomorrow.",
    "We will review the quarterly budget on Friday afternoon.",
    "Machine learning models can transcribe speech into text.",
    "Thank you for watching this video.",
    "The weather today is sunny with a light breeze.",
    "Our team shipped the new release after two weeks of testing.",
];

fn rtf(tmp: &Path) {
    let mut texts = Vec::new();
    let mut samples = Vec::new();
    while samples.len() < 60 * 16_000 {
        let i = texts.len();
        texts.push(TEXT[i % TEXT.len()]);
        let (s, _) = sentences(
            &tmp.join(format!("part{i}")).tap_dir(),
            &[TEXT[i % TEXT.len()]],
            0.0,
            0.4,
        );
        samples.extend(s);
    }
    samples.truncate(60 * 16_000);
    let audio = tmp.join("sixty");
    std::fs::create_dir_all(&audio).unwrap();
    write_wav(&audio.join("audio.wav"), &samples);
    let secs = samples.len() as f64 / 16_000.0;

    let mut resources = Resources::new(2, EventSink::new());
    let t = Instant::now();
    let (_, r) = run_stage(
        &WhisperStage,
        json!({}),
        &[("audio", &audio)],
        tmp,
        Some(&mut resources),
    );
    r.unwrap();
    let first = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (out, r) = run_stage(
        &WhisperStage,
        json!({}),
        &[("audio", &audio)],
        tmp,
        Some(&mut resources),
    );
    r.unwrap();
    let decode = t.elapsed().as_secs_f64();
    let text: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("transcript.json")).unwrap())
            .unwrap();
    let hyp: Vec<&str> = text["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let w = wer(&texts.join(" "), &hyp.join(" "));
    println!(
        "whisper tiny.en, {secs:.0} s of espeak speech, greedy, {} threads:",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("  model load + decode   {first:>7.2} s");
    println!(
        "  decode (model loaded) {decode:>7.2} s   real-time factor {:.3} ({:.1}x faster than real time)",
        decode / secs,
        secs / decode
    );
    println!(
        "  model load            {:>7.2} s",
        (first - decode).max(0.0)
    );
    println!(
        "  word error rate       {:>7.3} (the last sentence may be cut at 60 s)",
        w
    );

    let t = Instant::now();
    let (_, r) = run_stage(&VadStage, json!({}), &[("audio", &audio)], tmp, None);
    r.unwrap();
    let v = t.elapsed().as_secs_f64();
    println!(
        "silero VAD on the same audio {v:>7.2} s   real-time factor {:.4}",
        v / secs
    );
}

trait TapDir {
    fn tap_dir(self) -> Self;
}

impl TapDir for std::path::PathBuf {
    fn tap_dir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

const MANIFEST: &str = r#"name: bench
inputs: [input/]
extensions: [wav]
output: out/
stages:
  audio:
    run: [ffmpeg, -nostdin, -v, error, -i, "{video}", -ac, "1", -ar, "16000", "{out}/audio.wav"]
    outputs: [audio.wav]
  asr:
    uses: whisper.transcribe
    needs: [audio]
"#;

/// One engine run over the project in `dir`; (seconds, model loads).
fn engine_run(dir: &Path) -> (f64, usize) {
    std::fs::write(dir.join("m.yaml"), MANIFEST).unwrap();
    let registry = vsum_stages::registry();
    let m = vsum_engine::manifest::load(&dir.join("m.yaml"), &registry).unwrap();
    let cfg = Config::default();
    let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
    let events = EventSink::new();
    let loads = Arc::new(Mutex::new(0));
    let l = loads.clone();
    events.subscribe(move |e| {
        if let Event::ResourceLoaded { .. } = e {
            *l.lock().unwrap() += 1;
        }
    });
    let t = Instant::now();
    let s = run::run(
        &m,
        &registry,
        &cfg,
        &store,
        &RunOptions::default(),
        events,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(s.counts.failed, 0);
    let n = *loads.lock().unwrap();
    (t.elapsed().as_secs_f64(), n)
}

fn batch(tmp: &Path) {
    let clips: Vec<std::path::PathBuf> = (0..10)
        .map(|i| {
            let p = tmp.join(format!("clip{i:02}.wav"));
            // Distinct content per clip so no two share a cache key.
            speak(&format!("{} Clip number {i}.", TEXT[i % TEXT.len()]), &p);
            p
        })
        .collect();
    let one = tmp.join("one-run");
    std::fs::create_dir_all(one.join("input")).unwrap();
    for c in &clips {
        std::fs::copy(c, one.join("input").join(c.file_name().unwrap())).unwrap();
    }
    let (batch_s, batch_loads) = engine_run(&one);
    let mut separate = 0.0;
    let mut separate_loads = 0;
    for (i, c) in clips.iter().enumerate() {
        let d = tmp.join(format!("run{i}"));
        std::fs::create_dir_all(d.join("input")).unwrap();
        std::fs::copy(c, d.join("input").join(c.file_name().unwrap())).unwrap();
        let (s, n) = engine_run(&d);
        separate += s;
        separate_loads += n;
    }
    println!("10 short clips (about 4 s of speech each), audio extraction + tiny.en:");
    println!("  one run of 10 videos      {batch_s:>7.2} s   model loads: {batch_loads}");
    println!("  10 single-video runs      {separate:>7.2} s   model loads: {separate_loads}");
    println!(
        "  saved by loading once     {:>7.2} s ({:.0}%)",
        separate - batch_s,
        (separate - batch_s) / separate * 100.0
    );
}

fn main() {
    if !ready("speech bench") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    rtf(tmp.path());
    batch(tmp.path());
}
