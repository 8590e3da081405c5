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
        &support::whisper(),
        json!({}),
        &[("audio", &audio)],
        tmp,
        Some(&mut resources),
    );
    r.unwrap();
    let first = t.elapsed().as_secs_f64();
    let mut decodes = Vec::new();
    let mut hyp = String::new();
    for _ in 0..REPEAT {
        let t = Instant::now();
        let (out, r) = run_stage(
            &support::whisper(),
            json!({}),
            &[("audio", &audio)],
            tmp,
            Some(&mut resources),
        );
        r.unwrap();
        decodes.push(t.elapsed().as_secs_f64());
        let text: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.path().join("transcript.json")).unwrap())
                .unwrap();
        hyp = text["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["text"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
    }
    let (best, median) = min_median(&mut decodes);
    let w = wer(&texts.join(" "), &hyp);
    println!(
        "whisper tiny.en, {secs:.0} s of espeak speech, greedy, {} threads ({REPEAT} runs: best / median):",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("  first job (model load + decode) {first:>6.2} s");
    println!(
        "  decode, model loaded            {best:>6.2} s / {median:.2} s   real-time factor {:.3} / {:.3} ({:.1}x faster than real time at best)",
        best / secs,
        median / secs,
        secs / best
    );
    println!("  word error rate                 {w:>6.3}");

    let t = Instant::now();
    let (_, r) = run_stage(&support::vad(), json!({}), &[("audio", &audio)], tmp, None);
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

/// Repetitions of each measurement; the machine is shared, so best and median are shown.
const REPEAT: usize = 3;

fn min_median(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
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

/// CPU seconds used by this process and its waited-for children (ffmpeg) so far.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14-17 (11-14 after the command name).
    f.get(11..15).map(|v| v.iter().sum::<f64>()).unwrap_or(0.0) / 100.0
}

/// What one engine run cost.
struct RunCost {
    wall: f64,
    cpu: f64,
    loads: usize,
    load_ms: u64,
}

/// One engine run over the project in `dir`.
fn engine_run(dir: &Path) -> RunCost {
    std::fs::write(dir.join("m.yaml"), MANIFEST).unwrap();
    let registry = vsum_stages::registry(&support::models());
    let m = vsum_engine::manifest::load(&dir.join("m.yaml"), &registry).unwrap();
    let cfg = Config::default();
    let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
    let events = EventSink::new();
    let loads = Arc::new(Mutex::new((0, 0)));
    let l = loads.clone();
    events.subscribe(move |e| {
        if let Event::ResourceLoaded { ms, .. } = e {
            let mut l = l.lock().unwrap();
            l.0 += 1;
            l.1 += ms;
        }
    });
    let (t, c) = (Instant::now(), cpu_secs());
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
    let (loads, load_ms) = *loads.lock().unwrap();
    RunCost {
        wall: t.elapsed().as_secs_f64(),
        cpu: cpu_secs() - c,
        loads,
        load_ms,
    }
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
    let (mut together, mut apart) = (Vec::new(), Vec::new());
    let (mut cpu_together, mut cpu_apart) = (Vec::new(), Vec::new());
    let (mut loads_together, mut loads_apart, mut ms_together, mut ms_apart) = (0, 0, 0, 0);
    // Alternate the two ways so both see the same machine load.
    for rep in 0..REPEAT {
        let one = tmp.join(format!("one-run-{rep}"));
        std::fs::create_dir_all(one.join("input")).unwrap();
        for c in &clips {
            std::fs::copy(c, one.join("input").join(c.file_name().unwrap())).unwrap();
        }
        let r = engine_run(&one);
        together.push(r.wall);
        cpu_together.push(r.cpu);
        (loads_together, ms_together) = (r.loads, r.load_ms);
        let (mut wall, mut cpu) = (0.0, 0.0);
        (loads_apart, ms_apart) = (0, 0);
        for (i, c) in clips.iter().enumerate() {
            let d = tmp.join(format!("run-{rep}-{i}"));
            std::fs::create_dir_all(d.join("input")).unwrap();
            std::fs::copy(c, d.join("input").join(c.file_name().unwrap())).unwrap();
            let r = engine_run(&d);
            wall += r.wall;
            cpu += r.cpu;
            loads_apart += r.loads;
            ms_apart += r.load_ms;
        }
        apart.push(wall);
        cpu_apart.push(cpu);
    }
    let (tb, tm) = min_median(&mut together);
    let (ab, am) = min_median(&mut apart);
    let (ctb, _) = min_median(&mut cpu_together);
    let (cab, _) = min_median(&mut cpu_apart);
    println!(
        "10 short clips (about 4 s of speech each), audio extraction + tiny.en, {REPEAT} runs (best / median wall, best CPU):"
    );
    println!(
        "  one run of 10 videos    {tb:>6.2} s / {tm:.2} s   CPU {ctb:>6.2} s   model loads: {loads_together} ({ms_together} ms)"
    );
    println!(
        "  10 single-video runs    {ab:>6.2} s / {am:.2} s   CPU {cab:>6.2} s   model loads: {loads_apart} ({ms_apart} ms)"
    );
    println!(
        "  loading once saves {} ms of model loading (plus 9 process starts in real CLI use)",
        ms_apart.saturating_sub(ms_together)
    );
}

/// The 1-minute load average: timings on a shared machine mean little without it.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    if !ready("speech bench") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    println!("load average before: {}", load());
    rtf(tmp.path());
    println!("load average: {}", load());
    batch(tmp.path());
    println!("load average after: {}", load());
}
