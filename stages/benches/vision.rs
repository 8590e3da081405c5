//! Vision bench: how many pictures per second `yolo.detect` handles on the CPU, one by
//! one against batched, and against the same model in Python onnxruntime with the same
//! pre- and post-processing. Run with `cargo bench -p vsum-stages --bench vision` (needs
//! `vsum models install yolov12n onnxruntime`; `PYTHON` names an interpreter with
//! `onnxruntime numpy pillow`, default `python3`). Prints, from one run:
//! 1. decode + letterbox alone (rayon over the cores), pictures/s;
//! 2. `yolo.detect` end to end (decode, letterbox, inference, NMS, JSON) with yolov12n
//!    as shipped (batch 1) and with the same model made batch-dynamic (batch 8);
//! 3. `stages/benches/yolo_ort.py` on the same pictures with both models;
//! 4. whether both sides found the same classes in every picture.
//!
//! ONNX Runtime gets the same number of intra-op threads on both sides.

#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/vision_support/mod.rs"]
mod vision_support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use image::RgbImage;
use rayon::prelude::*;
use serde_json::{Value, json};
use vision_support::*;
use vsum_engine::events::EventSink;
use vsum_engine::stage::Resources;
use vsum_models::{ModelsManifest, onnx};
use vsum_stages::vision::letterbox::letterbox_into;
use vsum_stages::vision::yolo::{DetectionsFile, YoloStage};

/// Pictures in the bench set, and passes over it per measurement.
const PICTURES: usize = 16;
const REPEAT: usize = 2;
/// ONNX Runtime intra-op threads on both sides (`support::run_stage` gives jobs 2).
const THREADS: usize = 2;

fn pictures(dir: &Path) -> Vec<(String, RgbImage)> {
    let mut out = Vec::new();
    for i in 0..PICTURES {
        let (name, _) = PHOTOS[i % PHOTOS.len()];
        let mut img = photo(dir, name);
        // Different sizes and orientations, as keyframes of different videos come.
        match i / PHOTOS.len() {
            1 => img = image::imageops::flip_horizontal(&img),
            2 => {
                let (w, h) = (img.width() * 2, img.height() * 2);
                img = image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle);
            }
            3 => img = image::imageops::rotate90(&img),
            _ => {}
        }
        out.push((format!("{name}-{i:02}"), img));
    }
    out
}

/// Runs the stage `REPEAT` times after a warm-up (which loads the model); pictures/s.
fn stage_rate(kf: &Path, params: Value) -> (f64, DetectionsFile) {
    let mut res = Resources::new(2, EventSink::new());
    let stage = YoloStage::with_models_dir(vision_support::models_dir());
    let (_, r) = support::run_stage(&stage, params.clone(), &[("kf", kf)], kf, Some(&mut res));
    r.unwrap();
    let t = Instant::now();
    let mut last = None;
    for _ in 0..REPEAT {
        let (out, r) =
            support::run_stage(&stage, params.clone(), &[("kf", kf)], kf, Some(&mut res));
        r.unwrap();
        last = Some(out);
    }
    let secs = t.elapsed().as_secs_f64();
    let d: DetectionsFile = serde_json::from_slice(
        &std::fs::read(last.unwrap().path().join("detections.json")).unwrap(),
    )
    .unwrap();
    ((PICTURES * REPEAT) as f64 / secs, d)
}

/// `yolo_ort.py`'s JSON line, or why it did not run.
fn python(model: &Path, kf: &Path, batch: usize) -> Result<Value, String> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/yolo_ort.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(model)
        .arg(kf)
        .arg(batch.to_string())
        .arg(THREADS.to_string())
        .arg(REPEAT.to_string())
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{python}: {}",
            err.lines().last().unwrap_or("failed")
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{python}: {e}"))
}

fn main() {
    if !ready("vision bench", &["yolov12n", "onnxruntime"], &[]) {
        return;
    }
    let Some(dir) = photos("vision bench") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pics = pictures(&dir);
    let refs: Vec<(&str, &RgbImage)> = pics.iter().map(|(n, i)| (n.as_str(), i)).collect();
    let kf = keyframes_dir(&tmp.path().join("kf"), &refs);
    let models = vision_support::models_dir();
    let manifest = ModelsManifest::load(&models).unwrap();
    let model = models.path(&manifest.models["yolov12n"].file);
    let dynamic = tmp.path().join("yolov12n-dynamic.onnx");
    std::fs::write(
        &dynamic,
        onnx::dynamic_batch(&std::fs::read(&model).unwrap()).unwrap(),
    )
    .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "yolo.detect bench: {PICTURES} JPEG pictures (scikit-image photos, 300x451 to 1482x1000) x {REPEAT} passes, {cores} cores, ONNX Runtime {} with {THREADS} intra-op threads, CPU",
        manifest.models["onnxruntime"].version
    );

    // 1. Decode + letterbox alone.
    let files: Vec<_> = pics
        .iter()
        .map(|(n, _)| kf.join(format!("{n}.jpg")))
        .collect();
    let t = Instant::now();
    for _ in 0..REPEAT {
        files.par_iter().for_each(|f| {
            let img = image::open(f).unwrap().to_rgb8();
            let mut buf = vec![0f32; 3 * 640 * 640];
            letterbox_into(&img, 640, 640, &mut buf);
        });
    }
    let prep = (PICTURES * REPEAT) as f64 / t.elapsed().as_secs_f64();
    println!("  decode + letterbox only (rayon)             {prep:>7.1} pictures/s");

    // 2. The stage, end to end.
    let (single, d1) = stage_rate(&kf, json!({}));
    let (batched, d8) = stage_rate(&kf, json!({"model": dynamic.to_str().unwrap(), "batch": 8}));
    println!("  vsum yolo.detect, yolov12n (batch 1)        {single:>7.2} pictures/s");
    println!("  vsum yolo.detect, batch-dynamic, batch 8    {batched:>7.2} pictures/s");

    // 3. Python onnxruntime, same steps.
    let py1 = python(&model, &kf, 1);
    let py8 = python(&dynamic, &kf, 8);
    let mut agree = Vec::new();
    for (label, r, d) in [("batch 1", &py1, &d1), ("batch 8", &py8, &d8)] {
        match r {
            Ok(v) => {
                println!(
                    "  Python onnxruntime {}, {label:<8}         {:>7.2} pictures/s",
                    v["onnxruntime"].as_str().unwrap_or("?"),
                    v["images_per_s"].as_f64().unwrap_or(0.0)
                );
                let theirs: Vec<Vec<u64>> = serde_json::from_value(v["classes"].clone()).unwrap();
                let ours: Vec<Vec<u64>> = d
                    .images
                    .iter()
                    .map(|i| i.boxes.iter().map(|b| b.class_id as u64).collect())
                    .collect();
                let same = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
                agree.push(format!("{label}: {same}/{} pictures", ours.len()));
            }
            Err(e) => println!(
                "  Python onnxruntime, {label}: not run ({e}; pip install onnxruntime numpy pillow and set PYTHON)"
            ),
        }
    }
    if !agree.is_empty() {
        println!(
            "  same classes, in the same order, as Python: {}",
            agree.join(", ")
        );
    }
}
