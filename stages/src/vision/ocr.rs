//! `ocr.text`: the words on each keyframe (one per scene, or per slide with
//! `video.scenes` `detector: slides|auto`), read with the PP-OCRv4 detector and
//! recognizer through ONNX Runtime on the GPU lane.
//!
//! Only the changed frames are read: the pictures `video.keyframes` wrote, never the
//! whole video. Both models are loaded once per run into the lane's resource cache.
//! Pictures of one size go through the detector together (its batch dimension is
//! dynamic); the text boxes it finds (see `textbox.rs`) are cut out, sorted by shape
//! and recognized in batches of `batch`. The angle classifier is not used: slide and
//! screen text is horizontal, and it flipped words in tests.
//!
//! Outputs: `ocr.json` (per picture: lines in reading order with box, text and
//! confidence, and the slide's title line when there is one) and `ocr.txt` (the text
//! of the whole video, picture by picture, for reading and for search).

use std::fmt::Write as _;
use std::path::PathBuf;

use image::RgbImage;
use image::imageops::FilterType;
use ort::session::Session;
use ort::value::TensorRef;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{
    Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, Lane, ParamError, StageError,
};

use super::textbox::{self, DbSettings, Line, TextBox};
use super::upstream_keyframes;
use vsum_models::catalog::FORMAT_ONNX;
use vsum_models::{ModelsDir, Resolved, onnxruntime, resolve};

const KIND: &str = "ocr.text";
/// The recognizer's input height.
const REC_HEIGHT: u32 = 48;
/// Margin added around each text box before recognition, as a share of its height.
const CROP_MARGIN: f32 = 0.15;
/// The narrowest recognizer input (PaddleOCR's 3x48x320).
const REC_MIN_WIDTH: u32 = 320;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Text detector (`vsum models install ppocr`) or a PP-OCR DB detection ONNX file.
    pub det_model: String,
    /// Text recognizer (CTC, `character` list in its metadata) or such an ONNX file.
    pub rec_model: String,
    /// Pixels: the detector sees pictures with their short side brought up to this.
    pub det_side: u32,
    /// Mean text probability (0 to 1) a detected box needs.
    pub box_threshold: f32,
    /// How far detected boxes are grown (DB unclip).
    pub unclip_ratio: f32,
    /// Lines recognized with a lower mean character probability (0 to 1) are dropped.
    pub min_confidence: f32,
    /// Text lines per recognizer call (pictures per detector call: up to 4 of one size).
    pub batch: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            det_model: "ppocr-det".into(),
            rec_model: "ppocr-rec".into(),
            det_side: 736,
            box_threshold: 0.5,
            unclip_ratio: 1.6,
            min_confidence: 0.5,
            batch: 8,
        }
    }
}

/// One picture of `ocr.json`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OcrPicture {
    pub scene: usize,
    pub time: f64,
    pub file: String,
    pub width: u32,
    pub height: u32,
    /// The title line (largest text near the top), when the picture has one.
    pub title: Option<String>,
    pub lines: Vec<Line>,
}

/// The content of `ocr.json`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OcrFile {
    pub det_model: String,
    pub rec_model: String,
    pub pictures: Vec<OcrPicture>,
}

/// Both models, loaded, kept in the GPU lane's resource cache.
pub struct OcrModels {
    det: Session,
    rec: Session,
    det_io: (String, String),
    rec_io: (String, String),
    chars: Vec<String>,
}

/// The OCR stage kind; loads its models from the folder it is given.
#[derive(Debug, Clone)]
pub struct OcrStage {
    models: ModelsDir,
}

impl OcrStage {
    /// A stage that looks for models in `dir` (tests, embedders).
    pub fn with_models_dir(dir: ModelsDir) -> Self {
        OcrStage { models: dir }
    }

    fn models_dir(&self) -> ModelsDir {
        self.models.clone()
    }
}

fn load_session(
    dir: &ModelsDir,
    model: &Resolved,
    threads: usize,
) -> Result<(Session, String, String), StageError> {
    model.verify()?;
    onnxruntime::library(dir)?;
    let env = onnxruntime::environment(dir)?;
    let label = model.display();
    let fail = |e: String| {
        StageError::fatal(format!(
            "{KIND}: cannot load the ONNX model {label} ({}): {e}",
            model.path.display()
        ))
        .hint("install the OCR models: `vsum models install ppocr onnxruntime`")
    };
    let builder = Session::builder(&env)
        .map_err(|e| fail(e.to_string()))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| fail(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| fail(e.to_string()))?;
    #[cfg(feature = "onnx-cuda")]
    let builder = builder
        .with_execution_providers([ort::ep::CUDA::default().build()])
        .map_err(|e| fail(e.to_string()))?;
    let mut builder = builder;
    let session = builder
        .commit_from_file(&model.path)
        .map_err(|e| fail(e.to_string()))?;
    let (Some(i), Some(o)) = (session.inputs().first(), session.outputs().first()) else {
        return Err(fail("it has no input or no output".into()));
    };
    let (i, o) = (i.name().to_string(), o.name().to_string());
    Ok((session, i, o))
}

impl OcrModels {
    fn load(
        dir: &ModelsDir,
        det: &Resolved,
        rec: &Resolved,
        threads: usize,
    ) -> Result<OcrModels, StageError> {
        let (det_s, di, dout) = load_session(dir, det, threads)?;
        let (rec_s, ri, rout) = load_session(dir, rec, threads)?;
        let chars = rec_s
            .metadata()
            .ok()
            .and_then(|m| m.custom("character"))
            .map(|c| textbox::character_list(&c))
            .filter(|c| c.len() > 1)
            .ok_or_else(|| {
                StageError::fatal(format!(
                    "{KIND}: the recognizer {} has no `character` list in its metadata",
                    rec.display()
                ))
                .hint("use the PP-OCR recognizer `vsum models install ppocr` installs")
            })?;
        let provider = if cfg!(feature = "onnx-cuda") {
            "CUDA if available, else CPU"
        } else {
            "CPU"
        };
        tracing::info!(det = %det.display(), rec = %rec.display(), characters = chars.len(), provider, "OCR models loaded");
        Ok(OcrModels {
            det: det_s,
            rec: rec_s,
            det_io: (di, dout),
            rec_io: (ri, rout),
            chars,
        })
    }

    /// Text boxes of same-sized pictures, detected in one call.
    fn detect(
        &mut self,
        pics: &[&RgbImage],
        side: u32,
        db: &DbSettings,
    ) -> Result<Vec<Vec<TextBox>>, StageError> {
        let (w, h) = (pics[0].width(), pics[0].height());
        let (rw, rh) = det_size(w, h, side);
        let plane = (rw * rh) as usize;
        let mut input = vec![0f32; pics.len() * 3 * plane];
        input
            .par_chunks_mut(3 * plane)
            .zip(pics.par_iter())
            .for_each(|(dst, img)| {
                let small = image::imageops::resize(*img, rw, rh, FilterType::Triangle);
                to_bgr_planes(&small, dst);
            });
        let shape = [pics.len(), 3, rh as usize, rw as usize];
        let fail =
            |e: ort::Error| StageError::retryable(format!("{KIND}: text detector failed: {e}"));
        let tensor = TensorRef::from_array_view((shape, input.as_slice())).map_err(fail)?;
        let outputs = self
            .det
            .run(ort::inputs![self.det_io.0.as_str() => tensor])
            .map_err(fail)?;
        let (oshape, data) = outputs[self.det_io.1.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        let (mh, mw) = match oshape[..] {
            [n, 1, mh, mw] if n as usize == pics.len() => (mh as usize, mw as usize),
            _ => {
                return Err(StageError::fatal(format!(
                    "{KIND}: the text detector gave an output of shape {oshape:?}, expected [{}, 1, H, W]",
                    pics.len()
                ))
                .hint("use the PP-OCR detector `vsum models install ppocr` installs"));
            }
        };
        Ok((0..pics.len())
            .map(|i| textbox::db_boxes(&data[i * mh * mw..(i + 1) * mh * mw], mw, mh, w, h, db))
            .collect())
    }

    /// Text of line pictures (already `REC_HEIGHT` high), in one call.
    fn recognize(&mut self, crops: &[&RgbImage]) -> Result<Vec<(String, f32)>, StageError> {
        let width = crops
            .iter()
            .map(|c| c.width())
            .max()
            .unwrap_or(REC_MIN_WIDTH)
            .max(REC_MIN_WIDTH);
        let h = REC_HEIGHT;
        let plane = (width * h) as usize;
        let mut input = vec![0f32; crops.len() * 3 * plane];
        for (dst, c) in input.chunks_mut(3 * plane).zip(crops) {
            // Left-aligned, zero (mid-grey after normalizing) padding on the right.
            for (ch, src) in [2usize, 1, 0].iter().enumerate() {
                for y in 0..h {
                    for x in 0..c.width() {
                        let v = c.get_pixel(x, y).0[*src];
                        dst[ch * plane + (y * width + x) as usize] = f32::from(v) / 127.5 - 1.0;
                    }
                }
            }
        }
        let shape = [crops.len(), 3, h as usize, width as usize];
        let fail =
            |e: ort::Error| StageError::retryable(format!("{KIND}: text recognizer failed: {e}"));
        let tensor = TensorRef::from_array_view((shape, input.as_slice())).map_err(fail)?;
        let outputs = self
            .rec
            .run(ort::inputs![self.rec_io.0.as_str() => tensor])
            .map_err(fail)?;
        let (oshape, data) = outputs[self.rec_io.1.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        let (steps, classes) = match oshape[..] {
            [n, s, c] if n as usize == crops.len() && c as usize == self.chars.len() + 1 => {
                (s as usize, c as usize)
            }
            _ => {
                return Err(StageError::fatal(format!(
                    "{KIND}: the text recognizer gave an output of shape {oshape:?}, expected [{}, steps, {}] (blank + its {} characters)",
                    crops.len(),
                    self.chars.len() + 1,
                    self.chars.len()
                ))
                .hint("use the PP-OCR recognizer `vsum models install ppocr` installs, whose character list matches its output"));
            }
        };
        Ok((0..crops.len())
            .map(|i| {
                textbox::ctc_decode(
                    &data[i * steps * classes..(i + 1) * steps * classes],
                    steps,
                    classes,
                    &self.chars,
                )
            })
            .collect())
    }
}

/// The detector's input size: the short side brought to `side` (PaddleOCR's
/// `limit_type: min`), both sides rounded to multiples of 32.
fn det_size(w: u32, h: u32, side: u32) -> (u32, u32) {
    let short = w.min(h).max(1);
    let ratio = if short < side {
        f64::from(side) / f64::from(short)
    } else {
        1.0
    };
    let r32 =
        |x: u32| ((((f64::from(x) * ratio) as u32) as f64 / 32.0).round() as u32 * 32).max(32);
    (r32(w), r32(h))
}

/// Planar B, G, R floats in -1..1 (PaddleOCR's mean 0.5, std 0.5, BGR order).
fn to_bgr_planes(img: &RgbImage, dst: &mut [f32]) {
    let plane = (img.width() * img.height()) as usize;
    for (i, px) in img.pixels().enumerate() {
        dst[i] = f32::from(px.0[2]) / 127.5 - 1.0;
        dst[plane + i] = f32::from(px.0[1]) / 127.5 - 1.0;
        dst[2 * plane + i] = f32::from(px.0[0]) / 127.5 - 1.0;
    }
}

/// A text box cut out of its picture and scaled to the recognizer's height.
fn crop_line(img: &RgbImage, b: &TextBox) -> Option<RgbImage> {
    // A margin around the detector's tight box: the recognizer reads glued words
    // ("IntroductiontoVector") from crops that leave the letters no room.
    let m = CROP_MARGIN * (b.bbox[3] - b.bbox[1]);
    let x0 = ((b.bbox[0] - m).floor().max(0.0) as u32).min(img.width().saturating_sub(1));
    let y0 = ((b.bbox[1] - m).floor().max(0.0) as u32).min(img.height().saturating_sub(1));
    let x1 = ((b.bbox[2] + m).ceil() as u32).clamp(x0 + 1, img.width());
    let y1 = ((b.bbox[3] + m).ceil() as u32).clamp(y0 + 1, img.height());
    let (w, h) = (x1 - x0, y1 - y0);
    if w < 2 || h < 2 {
        return None;
    }
    let cut = image::imageops::crop_imm(img, x0, y0, w, h).to_image();
    let rw = ((f64::from(REC_HEIGHT) * f64::from(w) / f64::from(h)).ceil() as u32).clamp(1, 4096);
    Some(image::imageops::resize(
        &cut,
        rw,
        REC_HEIGHT,
        FilterType::Triangle,
    ))
}

fn load_picture(path: &std::path::Path) -> Result<RgbImage, StageError> {
    Ok(image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| StageError::fatal(format!("{KIND}: cannot read {}: {e}", path.display())))?
        .decode()
        .map_err(|e| StageError::fatal(format!("{KIND}: cannot decode {}: {e}", path.display())))?
        .to_rgb8())
}

/// Reads every picture: detection by groups of same-sized pictures, then recognition
/// of all lines sorted by width. Returns the lines of each picture, in reading order.
fn read_all(
    m: &mut OcrModels,
    pics: &[RgbImage],
    p: &Params,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Vec<Vec<Line>>, StageError> {
    let db = DbSettings {
        box_threshold: p.box_threshold,
        unclip_ratio: p.unclip_ratio,
        ..DbSettings::default()
    };
    let batch = p.batch.max(1) as usize;
    let mut boxes: Vec<Vec<TextBox>> = vec![Vec::new(); pics.len()];
    // Same-sized pictures detect together.
    let mut order: Vec<usize> = (0..pics.len()).collect();
    order.sort_by_key(|&i| (pics[i].width(), pics[i].height()));
    let mut i = 0;
    while i < order.len() {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StageError::cancelled());
        }
        let size = (pics[order[i]].width(), pics[order[i]].height());
        let mut group = vec![order[i]];
        while group.len() < batch.min(4)
            && i + group.len() < order.len()
            && (
                pics[order[i + group.len()]].width(),
                pics[order[i + group.len()]].height(),
            ) == size
        {
            group.push(order[i + group.len()]);
        }
        let refs: Vec<&RgbImage> = group.iter().map(|&k| &pics[k]).collect();
        let found = m.detect(&refs, p.det_side, &db)?;
        for (k, b) in group.iter().zip(found) {
            boxes[*k] = b;
        }
        i += group.len();
    }
    // Every line of every picture, cut out.
    let jobs: Vec<(usize, TextBox)> = boxes
        .iter()
        .enumerate()
        .flat_map(|(pi, bs)| bs.iter().map(move |b| (pi, *b)))
        .collect();
    let crops: Vec<Option<RgbImage>> = jobs
        .par_iter()
        .map(|(pi, b)| crop_line(&pics[*pi], b))
        .collect();
    let mut idx: Vec<usize> = (0..jobs.len()).filter(|&k| crops[k].is_some()).collect();
    idx.sort_by_key(|&k| crops[k].as_ref().map_or(0, |c| c.width()));
    let mut texts: Vec<Option<(String, f32)>> = vec![None; jobs.len()];
    for chunk in idx.chunks(batch) {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StageError::cancelled());
        }
        let refs: Vec<&RgbImage> = chunk.iter().filter_map(|&k| crops[k].as_ref()).collect();
        for (&k, r) in chunk.iter().zip(m.recognize(&refs)?) {
            texts[k] = Some(r);
        }
    }
    let mut lines: Vec<Vec<Line>> = vec![Vec::new(); pics.len()];
    for ((pi, b), t) in jobs.iter().zip(texts) {
        let Some((text, conf)) = t else { continue };
        let text = text.trim().to_string();
        if text.is_empty() || conf < p.min_confidence {
            continue;
        }
        lines[*pi].push(Line {
            order: 0,
            bbox: b.bbox,
            text,
            confidence: (conf * 1000.0).round() / 1000.0,
        });
    }
    for l in &mut lines {
        textbox::reading_order(l);
    }
    Ok(lines)
}

/// `ocr.txt`: each picture's time, title and lines.
fn plain_text(file: &OcrFile) -> String {
    let mut s = String::new();
    for p in &file.pictures {
        if p.lines.is_empty() {
            continue;
        }
        let t = p.time.max(0.0) as u64;
        let _ = writeln!(s, "[{:02}:{:02}] scene {}", t / 60, t % 60, p.scene);
        for l in &p.lines {
            let _ = writeln!(s, "{}", l.text);
        }
        s.push('\n');
    }
    s
}

impl Output for OcrFile {
    const FILE: &'static str = "ocr.json";
}

impl TypedStage for OcrStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Text on each keyframe or slide (PP-OCRv4 via ONNX Runtime, needs video.keyframes) -> ocr.json + ocr.txt";

    fn default_lane(&self) -> Lane {
        Lane::Gpu
    }

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        for (name, v) in [
            ("box_threshold", p.box_threshold),
            ("min_confidence", p.min_confidence),
        ] {
            if !(0.0..1.0).contains(&v) {
                errs.push(
                    ParamError::new(&[name], format!("`{name}` must be in [0, 1)"))
                        .hint("0.5 is the usual default"),
                );
            }
        }
        if !(32..=4096).contains(&p.det_side) {
            errs.push(
                ParamError::new(&["det_side"], "`det_side` must be 32..=4096").hint("e.g. 736"),
            );
        }
        if !(p.unclip_ratio > 0.0 && p.unclip_ratio < 10.0) {
            errs.push(ParamError::new(
                &["unclip_ratio"],
                "`unclip_ratio` must be in (0, 10)",
            ));
        }
        if !(1..=256).contains(&p.batch) {
            errs.push(ParamError::new(&["batch"], "`batch` must be 1..=256").hint("e.g. 8"));
        }
        if env.needs.is_empty() {
            errs.push(
                ParamError::new(&[], format!("stage '{}' ({KIND}) needs keyframes to read", env.stage_id))
                    .hint("add a `video.keyframes` stage (after `video.scenes`, best with `detector: auto`) to its `needs`"),
            );
        }
        if errs.is_empty() { Ok(p) } else { Err(errs) }
    }

    fn key_extras(&self, p: &Params, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        let dir = self.models_dir();
        let det = resolve(&dir, &p.det_model, env.base_dir, FORMAT_ONNX)?;
        let rec = resolve(&dir, &p.rec_model, env.base_dir, FORMAT_ONNX)?;
        let (_, ort_version) = onnxruntime::library(&dir)?;
        let mut x = KeyExtras::default();
        x.tools
            .insert("ocr_det_model".into(), det.blake3(Some(env.hasher))?);
        x.tools
            .insert("ocr_rec_model".into(), rec.blake3(Some(env.hasher))?);
        x.tools.insert("onnxruntime".into(), ort_version);
        Ok(x)
    }

    fn resource_group(&self, _p: &Params) -> Option<String> {
        Some("ocr".into())
    }

    fn doctor(&self, p: &Params, base_dir: &std::path::Path) -> Vec<Check> {
        vec![
            vsum_models::doctor_onnxruntime(&self.models),
            vsum_models::doctor_model(&self.models, &p.det_model, base_dir, FORMAT_ONNX),
            vsum_models::doctor_model(&self.models, &p.rec_model, base_dir, FORMAT_ONNX),
        ]
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let keyframes = upstream_keyframes(ctx.upstream)?;
        let paths: Vec<PathBuf> = keyframes.iter().map(|(_, p)| p.clone()).collect();
        let pics: Vec<RgbImage> = paths
            .par_iter()
            .map(|p| load_picture(p))
            .collect::<Result<_, _>>()?;
        let mut file = OcrFile {
            det_model: p.det_model.clone(),
            rec_model: p.rec_model.clone(),
            pictures: Vec::new(),
        };
        if !pics.is_empty() {
            let dir = self.models_dir();
            let det = resolve(&dir, &p.det_model, ctx.base_dir, FORMAT_ONNX)?;
            let rec = resolve(&dir, &p.rec_model, ctx.base_dir, FORMAT_ONNX)?;
            let key = format!("ocr:{}:{}", det.blake3(None)?, rec.blake3(None)?);
            let (threads, cancel) = (ctx.threads, ctx.cancel);
            let started = std::time::Instant::now();
            let mut owned = None;
            let lines = {
                let models: &mut OcrModels = match ctx.resources.as_deref_mut() {
                    Some(r) => {
                        r.get_or_load(&key, || OcrModels::load(&dir, &det, &rec, threads))?
                    }
                    None => owned.insert(OcrModels::load(&dir, &det, &rec, threads)?),
                };
                read_all(models, &pics, p, cancel)?
            };
            tracing::info!(
                pictures = pics.len(),
                ms = started.elapsed().as_millis() as u64,
                "{KIND}: read"
            );
            for (((kf, _), pic), lines) in keyframes.into_iter().zip(&pics).zip(lines) {
                file.pictures.push(OcrPicture {
                    scene: kf.scene,
                    time: kf.time,
                    file: kf.file,
                    width: pic.width(),
                    height: pic.height(),
                    title: textbox::title(&lines, pic.height()),
                    lines,
                });
            }
        }
        ctx.write_output(&file)?;
        let txt = ctx.out_dir.join("ocr.txt");
        std::fs::write(&txt, plain_text(&file))
            .map_err(|e| StageError::retryable(format!("cannot write {}: {e}", txt.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vsum_engine::stage::StageKind;

    #[test]
    fn detector_input_sizes_like_paddleocr() {
        assert_eq!(det_size(960, 540, 736), (1312, 736));
        assert_eq!(det_size(1280, 720, 736), (1312, 736));
        assert_eq!(det_size(1920, 1080, 736), (1920, 1088));
        assert_eq!(det_size(10, 10, 736), (736, 736));
    }

    #[test]
    fn params_are_checked() {
        let needs = vec![("keyframes".to_string(), vsum_engine::stage::Scope::Video)];
        let env = CheckEnv {
            stage_id: "ocr",
            scope: vsum_engine::stage::Scope::Video,
            needs: &needs,
        };
        let v = OcrStage::with_models_dir(ModelsDir::new("models"))
            .check(&serde_json::json!({}), &env)
            .unwrap();
        assert_eq!(v["det_model"], "ppocr-det");
        let e = OcrStage::with_models_dir(ModelsDir::new("models"))
            .check(
                &serde_json::json!({"min_confidence": 1.5, "batch": 0}),
                &env,
            )
            .unwrap_err();
        let paths: Vec<String> = e.iter().map(|e| e.path.join(".")).collect();
        assert_eq!(paths, vec!["min_confidence", "batch"]);
        let none = CheckEnv { needs: &[], ..env };
        assert!(
            OcrStage::with_models_dir(ModelsDir::new("models"))
                .check(&serde_json::json!({}), &none)
                .is_err()
        );
    }
}
