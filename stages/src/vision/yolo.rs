//! `yolo.detect`: objects in each keyframe, from a YOLO detector run through ONNX
//! Runtime on the GPU lane.
//!
//! The ONNX session is created ONCE per run, on the GPU-lane thread, into the engine's
//! resource cache (keyed by the model's blake3), and reused for every video. A job reads
//! the upstream `keyframes.json` (from `video.keyframes`) and the pictures beside it; a
//! helper thread decodes and letterboxes them in parallel (rayon) while the model runs
//! on the previous batch. Models whose batch dimension is dynamic get `batch` pictures
//! per call, others one at a time. Boxes go through per-class NMS and are mapped back to
//! each picture's own pixels.
//!
//! Outputs: `detections.json` (every box of every picture) and `objects.json` (per
//! scene and per video: object names with counts and best confidence, most salient
//! first), the file the knowledge stage reads. Built with the `cuda` feature (or just
//! `onnx-cuda`) the CUDA execution provider is asked for first (ONNX Runtime falls back
//! to the CPU).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{
    Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, Lane, ParamError, StageError,
};

use super::detect::{self, Det, Thresholds};
use super::letterbox::{Letterbox, letterbox_into};
use super::upstream_keyframes;
use vsum_models::catalog::FORMAT_ONNX;
use vsum_models::{ModelsDir, Resolved, onnxruntime, resolve};

const KIND: &str = "yolo.detect";

/// Input size used when a model's input and metadata leave it open.
const DEFAULT_SIZE: u32 = 640;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Installed model (`vsum models install yolov12n`; AGPL-3.0 weights) or any
    /// YOLOv5u/v8/v11/v12 detection ONNX file relative to the manifest.
    pub model: String,
    /// Keep boxes whose class score is above this (0 to 1).
    pub confidence: f64,
    /// Per-class NMS: drop a box overlapping a better one of its class by more than this
    /// (0 to 1).
    pub iou: f64,
    /// At most this many boxes per picture.
    pub max_detections: u32,
    /// Pictures per inference call when the model's batch dimension is dynamic
    /// (fixed-batch models such as yolov12n take theirs).
    pub batch: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            model: "yolov12n".into(),
            confidence: 0.25,
            iou: 0.45,
            max_detections: 300,
            batch: 8,
        }
    }
}

/// One box in `detections.json`, in the picture's own pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxOut {
    pub class: String,
    pub class_id: usize,
    pub confidence: f64,
    /// `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f64; 4],
}

/// One picture in `detections.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageDetections {
    pub scene: usize,
    pub time: f64,
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub boxes: Vec<BoxOut>,
}

/// The content of `detections.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionsFile {
    /// The `model` param (an installed name or a path).
    pub model: String,
    /// Model input `[width, height]`.
    pub input: [u32; 2],
    /// Pictures per inference call.
    pub batch: usize,
    pub classes: usize,
    /// Where the class names came from.
    pub names_from: String,
    pub confidence: f64,
    pub iou: f64,
    pub max_detections: u32,
    pub images: Vec<ImageDetections>,
}

/// One object name with its count and best confidence (`objects.json`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectCount {
    pub name: String,
    pub count: usize,
    pub max_confidence: f64,
}

/// The objects of one scene.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SceneObjects {
    pub scene: usize,
    pub objects: Vec<ObjectCount>,
}

/// The content of `objects.json`, read by `knowledge.compose`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectsFile {
    pub scenes: Vec<SceneObjects>,
    pub video: Vec<ObjectCount>,
}

/// A loaded detector, kept in the GPU lane's resource cache.
pub struct Detector {
    session: Session,
    label: String,
    input_name: String,
    output_name: String,
    /// The model's fixed batch size, or `None` when it takes any.
    fixed_batch: Option<usize>,
    width: u32,
    height: u32,
    /// From the metadata; checked against the output once its width is known.
    names_meta: Option<String>,
    names: Vec<String>,
    names_from: &'static str,
}

/// The YOLO detection stage kind; loads its model from the folder it is given.
#[derive(Debug, Clone)]
pub struct YoloStage {
    models: ModelsDir,
}

impl YoloStage {
    /// A stage that looks for models in `dir` (tests, embedders).
    pub fn with_models_dir(dir: ModelsDir) -> Self {
        YoloStage { models: dir }
    }

    fn models_dir(&self) -> ModelsDir {
        self.models.clone()
    }
}

fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| if *d < 0 { "?".into() } else { d.to_string() })
        .collect();
    format!("[{}]", dims.join(", "))
}

fn outlets(list: &[ort::value::Outlet]) -> String {
    list.iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => {
                format!("'{}' {} {ty}", o.name(), shape_text(shape))
            }
            other => format!("'{}' {other}", o.name()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error for a model that is not a YOLO detector of the supported layout.
fn layout_error(label: &str, what: String) -> StageError {
    StageError::fatal(format!(
        "model {label} is not a YOLO detector of the YOLOv5u/v8/v11/v12 layout: {what}"
    ))
    .hint("yolo.detect takes an ONNX model with one input [batch, 3, height, width] (RGB 0..1) and an output [batch, 4 + classes, anchors] (Ultralytics `export(format=\"onnx\")` of a detection model)")
}

impl Detector {
    /// Loads `model` into an ONNX Runtime session and checks its layout.
    fn load(
        dir: &ModelsDir,
        model: &Resolved,
        threads: usize,
        gpu: bool,
    ) -> Result<Detector, StageError> {
        model.verify()?;
        // Says what to install even when another models folder already loaded a library.
        onnxruntime::library(dir)?;
        let env = onnxruntime::environment(dir)?;
        let label = model.display();
        let hint = match &model.name {
            Some(name) => format!("reinstall it: `vsum models install {name} --force`"),
            None => "is it an ONNX file? fix the stage's `model:`".to_string(),
        };
        let fail = |e: String| {
            StageError::fatal(format!(
                "cannot load the ONNX model {label} ({}): {e}",
                model.path.display()
            ))
            .hint(hint.clone())
        };
        let builder = Session::builder(&env)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| fail(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| fail(e.to_string()))?;
        #[cfg(feature = "onnx-cuda")]
        let builder = if gpu {
            builder
                .with_execution_providers([ort::ep::CUDA::default().build()])
                .map_err(|e| fail(e.to_string()))?
        } else {
            builder
        };
        let mut builder = builder;
        let session = builder
            .commit_from_file(&model.path)
            .map_err(|e| fail(e.to_string()))?;
        let found = || {
            format!(
                "found inputs {} and outputs {}",
                outlets(session.inputs()),
                outlets(session.outputs())
            )
        };
        let (task, names_meta, imgsz) = {
            let meta = session.metadata().ok();
            let custom = |k: &str| meta.as_ref().and_then(|m| m.custom(k));
            (custom("task"), custom("names"), custom("imgsz"))
        };
        if let Some(task) = task.filter(|t| t != "detect") {
            return Err(layout_error(
                &label,
                format!("its metadata says task '{task}', not 'detect'; {}", found()),
            ));
        }
        let [input] = session.inputs() else {
            return Err(layout_error(
                &label,
                format!(
                    "it has {} inputs, not 1; {}",
                    session.inputs().len(),
                    found()
                ),
            ));
        };
        let in_shape: Vec<i64> = match input.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 4 && (shape[1] == 3 || shape[1] < 0) => shape.to_vec(),
            _ => {
                return Err(layout_error(
                    &label,
                    format!(
                        "the input is not float32 [batch, 3, height, width]; {}",
                        found()
                    ),
                ));
            }
        };
        let Some(output) = session.outputs().first() else {
            return Err(layout_error(
                &label,
                format!("it has no output; {}", found()),
            ));
        };
        let out_ok = match output.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } => {
                shape.len() == 3
                    && (shape[1] < 0 || shape[1] >= 5)
                    && (shape[1] < 0 || shape[2] < 0 || shape[1] < shape[2])
            }
            _ => false,
        };
        if !out_ok {
            return Err(layout_error(
                &label,
                format!(
                    "output '{}' is not float32 [batch, 4 + classes, anchors]; {}",
                    output.name(),
                    found()
                ),
            ));
        }
        let imgsz: Option<(u32, u32)> = imgsz.and_then(|s| {
            let v: Vec<u32> = s
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect();
            match v[..] {
                [h, w] if h > 0 && w > 0 => Some((w, h)),
                _ => None,
            }
        });
        let dim = |d: i64, fallback: u32| if d > 0 { d as u32 } else { fallback };
        let (width, height) = (
            dim(in_shape[3], imgsz.map_or(DEFAULT_SIZE, |s| s.0)),
            dim(in_shape[2], imgsz.map_or(DEFAULT_SIZE, |s| s.1)),
        );
        let (names, names_from) = match output.dtype() {
            ValueType::Tensor { shape, .. } if shape[1] > 4 => {
                detect::class_names(names_meta.as_deref(), shape[1] as usize - 4)
            }
            _ => (Vec::new(), ""),
        };
        let input_name = input.name().to_string();
        let output_name = output.name().to_string();
        let provider = if gpu && cfg!(feature = "onnx-cuda") {
            "CUDA if available, else CPU"
        } else {
            "CPU"
        };
        tracing::info!(model = %label, width, height, batch = %shape_text(&in_shape[..1]), provider, "YOLO model loaded");
        Ok(Detector {
            fixed_batch: (in_shape[0] > 0).then_some(in_shape[0] as usize),
            session,
            label,
            input_name,
            output_name,
            width,
            height,
            names_meta,
            names,
            names_from,
        })
    }

    /// Runs the model on `n` letterboxed pictures laid out in `input` (which holds the
    /// model's batch: `n` pictures, then padding when its batch is fixed and larger).
    fn infer(
        &mut self,
        input: &[f32],
        n: usize,
        t: &Thresholds,
    ) -> Result<Vec<Vec<Det>>, StageError> {
        let plane = 3 * (self.width * self.height) as usize;
        let b = input.len() / plane;
        let shape = [b, 3, self.height as usize, self.width as usize];
        let onnx = |e: ort::Error| StageError::retryable(format!("{} failed: {e}", self.label));
        let tensor = TensorRef::from_array_view((shape, input)).map_err(onnx)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| StageError::retryable(format!("{} failed: {e}", self.label)))?;
        let (out_shape, data) = outputs[self.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| {
                StageError::fatal(format!("{}: output is not float32: {e}", self.label))
            })?;
        let ok = out_shape.len() == 3
            && out_shape[0] as usize == b
            && out_shape[1] >= 5
            && out_shape[1] < out_shape[2];
        if !ok {
            return Err(layout_error(
                &self.label,
                format!(
                    "output '{}' has shape {} for an input of {}, expected [{b}, 4 + classes, anchors]",
                    self.output_name,
                    shape_text(out_shape),
                    shape_text(&shape.map(|d| d as i64)),
                ),
            ));
        }
        let classes = out_shape[1] as usize - 4;
        let anchors = out_shape[2] as usize;
        if self.names.len() != classes {
            (self.names, self.names_from) =
                detect::class_names(self.names_meta.as_deref(), classes);
        }
        let per = (4 + classes) * anchors;
        Ok((0..n)
            .map(|i| detect::decode(&data[i * per..(i + 1) * per], classes, anchors, t))
            .collect())
    }
}

/// A picture decoded and letterboxed, ready for the model.
struct Prepared {
    index: usize,
    data: Vec<f32>,
    lb: Letterbox,
}

/// Decodes a picture (JPEG or PNG) and letterboxes it.
fn prepare(index: usize, path: &Path, w: u32, h: u32) -> Result<Prepared, StageError> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| StageError::fatal(format!("cannot read {}: {e}", path.display())))?
        .decode()
        .map_err(|e| StageError::fatal(format!("cannot decode {}: {e}", path.display())))?
        .to_rgb8();
    if img.width() == 0 || img.height() == 0 {
        return Err(StageError::fatal(format!("{} is empty", path.display())));
    }
    let mut data = vec![0f32; 3 * (w * h) as usize];
    let lb = letterbox_into(&img, w, h, &mut data);
    Ok(Prepared { index, data, lb })
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// Most salient first: count x best confidence, then name.
fn by_salience(v: &mut [ObjectCount]) {
    v.sort_by(|a, b| {
        (b.count as f64 * b.max_confidence)
            .total_cmp(&(a.count as f64 * a.max_confidence))
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// Per-scene and per-video object counts. A scene's count of a class is the most boxes
/// of it in one of the scene's pictures (pictures of a scene show the same things); the
/// video's is the sum over scenes, as chapters sum them.
pub fn summarize(images: &[ImageDetections]) -> ObjectsFile {
    let mut scenes: BTreeMap<usize, BTreeMap<String, ObjectCount>> = BTreeMap::new();
    for img in images {
        let scene = scenes.entry(img.scene).or_default();
        let mut here: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
        for b in &img.boxes {
            let e = here.entry(&b.class).or_insert((0, 0.0));
            e.0 += 1;
            e.1 = e.1.max(b.confidence);
        }
        for (name, (count, conf)) in here {
            let e = scene.entry(name.to_string()).or_insert(ObjectCount {
                name: name.to_string(),
                count: 0,
                max_confidence: 0.0,
            });
            e.count = e.count.max(count);
            e.max_confidence = e.max_confidence.max(conf);
        }
    }
    let mut video: BTreeMap<String, ObjectCount> = BTreeMap::new();
    let scenes = scenes
        .into_iter()
        .map(|(scene, objs)| {
            let mut objects: Vec<ObjectCount> = objs.into_values().collect();
            for o in &objects {
                let e = video.entry(o.name.clone()).or_insert(ObjectCount {
                    name: o.name.clone(),
                    count: 0,
                    max_confidence: 0.0,
                });
                e.count += o.count;
                e.max_confidence = e.max_confidence.max(o.max_confidence);
            }
            by_salience(&mut objects);
            SceneObjects { scene, objects }
        })
        .collect();
    let mut video: Vec<ObjectCount> = video.into_values().collect();
    by_salience(&mut video);
    ObjectsFile { scenes, video }
}

/// Decodes and letterboxes on a helper thread (rayon inside) while `det` runs batches
/// on this thread; returns each picture's letterbox and detections, in order.
fn detect_all(
    det: &mut Detector,
    paths: &[PathBuf],
    batch: usize,
    t: &Thresholds,
    cancel: &AtomicBool,
) -> Result<Vec<(Letterbox, Vec<Det>)>, StageError> {
    let (w, h) = (det.width, det.height);
    let plane = 3 * (w * h) as usize;
    // A fixed-batch model takes exactly its batch (the last call padded with grey).
    let per_call = det.fixed_batch.unwrap_or(batch).max(1);
    // Enough pictures in flight to keep every core busy and the model fed.
    let chunk = per_call.max(rayon::current_num_threads());
    let (tx, rx) = mpsc::sync_channel::<Result<Prepared, StageError>>(chunk + per_call);
    std::thread::scope(|s| {
        s.spawn(move || {
            for (c, group) in paths.chunks(chunk).enumerate() {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let prepared: Vec<Result<Prepared, StageError>> = group
                    .par_iter()
                    .enumerate()
                    .map(|(i, p)| prepare(c * chunk + i, p, w, h))
                    .collect();
                for p in prepared {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
            }
        });
        let mut results: Vec<Option<(Letterbox, Vec<Det>)>> = vec![None; paths.len()];
        let mut pending: Vec<Prepared> = Vec::with_capacity(per_call);
        let mut input: Vec<f32> = Vec::new();
        let mut flush = |pending: &mut Vec<Prepared>| -> Result<(), StageError> {
            let n = pending.len();
            let dets = if n == 1 && per_call == 1 {
                det.infer(&pending[0].data, 1, t)?
            } else {
                let slots = if det.fixed_batch.is_some() {
                    per_call
                } else {
                    n
                };
                input.clear();
                input.resize(slots * plane, 114.0 / 255.0);
                for (i, p) in pending.iter().enumerate() {
                    input[i * plane..(i + 1) * plane].copy_from_slice(&p.data);
                }
                det.infer(&input, n, t)?
            };
            for (p, d) in pending.drain(..).zip(dets) {
                results[p.index] = Some((p.lb, d));
            }
            Ok(())
        };
        for p in rx {
            if cancel.load(Ordering::Relaxed) {
                return Err(StageError::cancelled());
            }
            pending.push(p?);
            if pending.len() == per_call {
                flush(&mut pending)?;
            }
        }
        if !pending.is_empty() {
            flush(&mut pending)?;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(StageError::cancelled());
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every picture was detected"))
            .collect())
    })
}

impl Output for DetectionsFile {
    const FILE: &'static str = "detections.json";
}

impl Output for ObjectsFile {
    const FILE: &'static str = "objects.json";
}

impl TypedStage for YoloStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Objects in each keyframe (YOLO via ONNX Runtime, needs video.keyframes) -> detections.json + objects.json";

    fn default_lane(&self) -> Lane {
        Lane::Gpu
    }

    fn validate(&self, p: Params, _env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        for (name, v, hint) in [
            ("confidence", p.confidence, "0.25 is the usual default"),
            ("iou", p.iou, "0.45 is the usual default"),
        ] {
            if !(v > 0.0 && v < 1.0) {
                errs.push(
                    ParamError::new(
                        &[name],
                        format!("`{name}` must be between 0 and 1 (exclusive)"),
                    )
                    .hint(hint),
                );
            }
        }
        if p.max_detections == 0 {
            errs.push(
                ParamError::new(&["max_detections"], "`max_detections` must be at least 1")
                    .hint("e.g. 300"),
            );
        }
        if !(1..=256).contains(&p.batch) {
            errs.push(
                ParamError::new(&["batch"], "`batch` must be between 1 and 256").hint("e.g. 8"),
            );
        }
        if p.model.trim().is_empty() {
            errs.push(ParamError::new(&["model"], "`model` is empty").hint("use yolov12n"));
        }
        if errs.is_empty() { Ok(p) } else { Err(errs) }
    }

    fn key_extras(&self, p: &Params, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        let dir = self.models_dir();
        let model = resolve(&dir, &p.model, env.base_dir, FORMAT_ONNX)?;
        let (_, ort_version) = onnxruntime::library(&dir)?;
        let mut x = KeyExtras::default();
        x.tools
            .insert("yolo_model".into(), model.blake3(Some(env.hasher))?);
        x.tools.insert("onnxruntime".into(), ort_version);
        Ok(x)
    }

    fn resource_group(&self, p: &Params) -> Option<String> {
        Some(format!("yolo:{}", p.model))
    }

    fn doctor(&self, p: &Params, base_dir: &Path) -> Vec<Check> {
        vec![
            vsum_models::doctor_onnxruntime(&self.models),
            vsum_models::doctor_model(&self.models, &p.model, base_dir, FORMAT_ONNX),
        ]
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let (cancel, threads) = (ctx.cancel, ctx.threads);
        let keyframes = upstream_keyframes(ctx.upstream)?;
        let missing: Vec<String> = keyframes
            .iter()
            .filter(|(_, p)| !p.is_file())
            .map(|(_, p)| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(StageError::fatal(format!(
                "keyframes.json names pictures that are not there: {}",
                missing.join(", ")
            )));
        }
        let t = Thresholds {
            confidence: p.confidence as f32,
            iou: p.iou as f32,
            max_detections: p.max_detections as usize,
        };
        let mut file = DetectionsFile {
            model: p.model.clone(),
            input: [0, 0],
            batch: 0,
            classes: 0,
            names_from: String::new(),
            confidence: p.confidence,
            iou: p.iou,
            max_detections: p.max_detections,
            images: Vec::new(),
        };
        if !keyframes.is_empty() {
            // The model: once per run on the GPU lane; per job elsewhere.
            let dir = self.models_dir();
            let model = resolve(&dir, &p.model, ctx.base_dir, FORMAT_ONNX)?;
            // The engine decides the device: the GPU unless this job runs on the CPU (a
            // `lane: cpu` stage, or the retry after a GPU out-of-memory error).
            let gpu = !ctx.force_cpu;
            if gpu && let Some(e) = crate::injected_gpu_oom(KIND) {
                return Err(e);
            }
            let device = if gpu { "gpu" } else { "cpu" };
            let key = format!("yolo:{}:{device}", model.blake3(None)?);
            let mut owned = None;
            let det: &mut Detector = match ctx.resources.as_deref_mut() {
                Some(r) => r.get_or_load(&key, || Detector::load(&dir, &model, threads, gpu))?,
                None => {
                    if gpu {
                        tracing::warn!(
                            "{KIND} runs outside the GPU lane: its model is loaded for every job (use `lane: gpu`)"
                        );
                    }
                    owned.insert(Detector::load(&dir, &model, threads, gpu)?)
                }
            };
            let paths: Vec<PathBuf> = keyframes.iter().map(|(_, p)| p.clone()).collect();
            let started = std::time::Instant::now();
            let found = match detect_all(det, &paths, p.batch as usize, &t, cancel) {
                Ok(f) => f,
                Err(e) if gpu && cfg!(feature = "onnx-cuda") && !e.cancelled => {
                    // A failure on the GPU (often out of memory): the session goes, and
                    // the engine runs the job once more on the CPU, noted in the run summary.
                    if let Some(r) = ctx.resources.as_deref_mut() {
                        r.drop_resource(&key);
                    }
                    return Err(StageError::gpu_out_of_memory(format!(
                        "{KIND} failed on the GPU: {}",
                        e.message
                    )));
                }
                Err(e) => return Err(e),
            };
            tracing::info!(
                pictures = paths.len(),
                ms = started.elapsed().as_millis() as u64,
                "{KIND}: detected"
            );
            file.input = [det.width, det.height];
            file.batch = det.fixed_batch.unwrap_or(p.batch as usize);
            file.classes = det.names.len();
            file.names_from = det.names_from.to_string();
            for ((kf, _), (lb, dets)) in keyframes.into_iter().zip(found) {
                let boxes = dets
                    .into_iter()
                    .map(|d| BoxOut {
                        class: det.names.get(d.class_id).cloned().unwrap_or_default(),
                        class_id: d.class_id,
                        confidence: round(f64::from(d.confidence), 4),
                        bbox: lb.to_original(d.bbox).map(|v| round(v, 1)),
                    })
                    .collect();
                file.images.push(ImageDetections {
                    scene: kf.scene,
                    time: kf.time,
                    file: kf.file,
                    width: lb.width,
                    height: lb.height,
                    boxes,
                });
            }
        }
        let objects = summarize(&file.images);
        ctx.write_output(&file)?;
        ctx.write_output(&objects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsum_engine::stage::StageKind;

    fn img(scene: usize, boxes: &[(&str, f64)]) -> ImageDetections {
        ImageDetections {
            scene,
            time: 0.0,
            file: String::new(),
            width: 10,
            height: 10,
            boxes: boxes
                .iter()
                .map(|(c, conf)| BoxOut {
                    class: c.to_string(),
                    class_id: 0,
                    confidence: *conf,
                    bbox: [0.0; 4],
                })
                .collect(),
        }
    }

    #[test]
    fn objects_are_counted_per_scene_and_video_by_salience() {
        let o = summarize(&[
            img(0, &[("person", 0.9), ("person", 0.5), ("cup", 0.95)]),
            img(0, &[("person", 0.6)]),
            img(1, &[("cat", 0.4), ("dog", 0.4)]),
            img(2, &[]),
            img(1, &[("person", 0.8)]),
        ]);
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "scenes": [
                    {"scene": 0, "objects": [
                        {"name": "person", "count": 2, "max_confidence": 0.9},
                        {"name": "cup", "count": 1, "max_confidence": 0.95}]},
                    {"scene": 1, "objects": [
                        {"name": "person", "count": 1, "max_confidence": 0.8},
                        {"name": "cat", "count": 1, "max_confidence": 0.4},
                        {"name": "dog", "count": 1, "max_confidence": 0.4}]},
                    {"scene": 2, "objects": []}
                ],
                "video": [
                    {"name": "person", "count": 3, "max_confidence": 0.9},
                    {"name": "cup", "count": 1, "max_confidence": 0.95},
                    {"name": "cat", "count": 1, "max_confidence": 0.4},
                    {"name": "dog", "count": 1, "max_confidence": 0.4}
                ]
            })
        );
    }

    #[test]
    fn params_are_checked_and_defaulted() {
        let env = CheckEnv {
            stage_id: "objects",
            scope: vsum_engine::stage::Scope::Video,
            needs: &[],
        };
        let v = YoloStage::with_models_dir(ModelsDir::new("models"))
            .check(&serde_json::json!({}), &env)
            .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model": "yolov12n", "confidence": 0.25, "iou": 0.45, "max_detections": 300, "batch": 8})
        );
        let e = YoloStage::with_models_dir(ModelsDir::new("models"))
            .check(
                &serde_json::json!({"confidence": 1.5, "iou": 0, "batch": 0}),
                &env,
            )
            .unwrap_err();
        let paths: Vec<String> = e.iter().map(|e| e.path.join(".")).collect();
        assert_eq!(paths, vec!["confidence", "iou", "batch"]);
        let e = YoloStage::with_models_dir(ModelsDir::new("models"))
            .check(&serde_json::json!({"treshold": 0.5}), &env)
            .unwrap_err();
        assert!(e[0].message.contains("unknown field"), "{e:?}");
    }
}
