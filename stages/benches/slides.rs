//! What slides cost: `video.scenes` with each detector and `ocr.text` on the generated
//! deck (`stages/tests/deck/mod.rs`: 44 s of 960x540 H.264, cached under the target
//! folder), as seconds per minute of video and as a share of one decode of the file
//! (`ffmpeg -i X -f null -` with the same threads). OCR is skipped (said so) when the
//! `ppocr` models and ONNX Runtime are not installed.
//!
//! Run: `cargo bench -p vsum-stages --bench slides`.

#[path = "../tests/deck/mod.rs"]
mod deck;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde_json::{Value, json};
use vsum_engine::events::EventSink;
use vsum_engine::stage::{CheckEnv, JobCtx, Scope, StageKind, Video};
use vsum_models::{ModelsDir, ModelsManifest};
use vsum_stages::media::{KeyframesStage, SceneStage};
use vsum_stages::vision::ocr::OcrStage;

const RUNS: usize = 3;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs one job of `kind` on `path` with upstream folders; returns its output folder.
fn run(
    kind: &dyn StageKind,
    path: &Path,
    params: Value,
    upstream: &[(&str, &Path)],
) -> tempfile::TempDir {
    let needs: Vec<(String, Scope)> = upstream
        .iter()
        .map(|(id, _)| (id.to_string(), Scope::Video))
        .collect();
    let env = CheckEnv {
        stage_id: "bench",
        scope: Scope::Video,
        needs: &needs,
    };
    let params = kind.check(&params, &env).expect("params");
    let out = tempfile::tempdir().expect("tempdir");
    let v = Video {
        path: path.to_path_buf(),
        rel: PathBuf::from("deck.mp4"),
        stem: "deck".into(),
        folder: "deck".into(),
        hash: "bench".into(),
    };
    let cancel = AtomicBool::new(false);
    let events = EventSink::new();
    let upstream = upstream
        .iter()
        .map(|(id, p)| (id.to_string(), p.to_path_buf()))
        .collect();
    let base = path.parent().expect("parent").to_path_buf();
    let mut ctx = JobCtx {
        stage_id: "bench",
        params: &params,
        base_dir: &base,
        output_root: &base,
        out_dir: out.path(),
        video: Some(&v),
        upstream: &upstream,
        provenance: &Default::default(),
        batch: &[],
        previous: None,
        threads: threads(),
        cancel: &cancel,
        resources: None,
        force_cpu: false,
        events: &events,
        cores: None,
        held_cores: 0,
    };
    kind.run(&mut ctx).expect("job");
    out
}

/// Best wall seconds of `RUNS` calls.
fn best<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    (best, last.expect("ran"))
}

fn main() {
    let deck = deck::deck();
    let minutes = deck::DURATION / 60.0;
    let (decode, ()) = best(|| {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-threads"])
            .arg(threads().to_string())
            .arg("-i")
            .arg(&deck)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg CLI");
        assert!(out.status.success());
    });
    println!(
        "deck: {:.0} s of {}x{} H.264 at {} fps, {} threads",
        deck::DURATION,
        deck::WIDTH,
        deck::HEIGHT,
        deck::FPS,
        threads()
    );
    println!("| step | s per minute of video | share of one decode |");
    println!("|---|---|---|");
    let row = |what: &str, secs: f64| {
        println!(
            "| {what} | {:.2} | {:.0}% |",
            secs / minutes,
            100.0 * secs / decode
        );
    };
    row("decode only (ffmpeg -f null)", decode);
    let mut scenes_dir = None;
    for det in ["content", "slides", "auto"] {
        let (secs, out) = best(|| run(&SceneStage, &deck, json!({"detector": det}), &[]));
        row(&format!("video.scenes detector: {det}"), secs);
        if det == "auto" {
            scenes_dir = Some(out);
        }
    }
    let scenes_dir = scenes_dir.expect("auto ran");
    let (secs, kf) = best(|| {
        run(
            &KeyframesStage,
            &deck,
            json!({}),
            &[("scenes", scenes_dir.path())],
        )
    });
    row("video.keyframes (one per slide)", secs);
    let installed = ModelsManifest::load(&ModelsDir::from_config(None))
        .map(|m| m.models)
        .unwrap_or_default();
    if !["ppocr-det", "ppocr-rec", "onnxruntime"]
        .iter()
        .all(|m| installed.contains_key(*m))
    {
        println!("ocr.text skipped: run `vsum models install ppocr onnxruntime`");
        return;
    }
    let pictures = std::fs::read_dir(kf.path())
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "jpg"))
            })
            .count()
        })
        .unwrap_or(0);
    let (secs, _) = best(|| {
        run(
            &OcrStage::with_models_dir(ModelsDir::from_config(None)),
            &deck,
            json!({}),
            &[("keyframes", kf.path())],
        )
    });
    row(
        &format!("ocr.text ({pictures} pictures, models loaded per run)"),
        secs,
    );
    println!(
        "ocr.text: {:.2} s per picture",
        secs / pictures.max(1) as f64
    );
}
