//! `yolo.detect` on the real detector (`vsum models install yolov12n onnxruntime`) and
//! real photos (scikit-image's astronaut, cat, coffee cup and motorcycle): each photo
//! names its object; a video cut from the photos goes through `video.scenes` ->
//! `video.keyframes` -> `yolo.detect` and every scene names its object, with the model
//! loaded once for a batch of videos; boxes land on the original pixels of portrait,
//! landscape and tiny pictures; batched and one-by-one inference agree; a grey frame
//! gives nothing; a missing model or runtime, and a model of another layout, give
//! errors that say what to do. Tests that need the model skip loudly without it, and
//! fail in CI.

mod support;
mod vision_support;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use image::RgbImage;
use serde_json::{Value, json};
use vision_support::*;
use vsum_engine::config::Config;
use vsum_engine::events::{Event, EventSink};
use vsum_engine::run::{self, RunOptions};
use vsum_engine::stage::{Resources, StageError};
use vsum_models::{ModelEntry, ModelsDir, ModelsManifest, onnx};
use vsum_stages::vision::yolo::{DetectionsFile, ImageDetections, ObjectsFile, YoloStage};

const MODELS: [&str; 2] = ["yolov12n", "onnxruntime"];

fn detections(out: &Path) -> DetectionsFile {
    serde_json::from_slice(&std::fs::read(out.join("detections.json")).unwrap()).unwrap()
}

fn objects(out: &Path) -> ObjectsFile {
    serde_json::from_slice(&std::fs::read(out.join("objects.json")).unwrap()).unwrap()
}

/// Runs `yolo.detect` on a keyframes folder with a shared resource cache.
fn detect(
    stage: &YoloStage,
    params: Value,
    keyframes: &Path,
    resources: &mut Resources,
) -> (tempfile::TempDir, Result<(), StageError>) {
    support::run_stage(
        stage,
        params,
        &[("keyframes", keyframes)],
        keyframes,
        Some(resources),
    )
}

fn installed_path(name: &str) -> PathBuf {
    let dir = models_dir();
    let m = ModelsManifest::load(&dir).unwrap();
    dir.path(&m.models[name].file)
}

/// The best box of `class` in a picture.
fn best(img: &ImageDetections, class: &str) -> Option<[f64; 4]> {
    img.boxes.iter().find(|b| b.class == class).map(|b| b.bbox)
}

#[test]
fn each_photo_names_its_object() {
    if !ready("each_photo_names_its_object", &MODELS, &[]) {
        return;
    }
    let Some(dir) = photos("each_photo_names_its_object") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let imgs: Vec<(&str, RgbImage)> = PHOTOS.iter().map(|(n, _)| (*n, photo(&dir, n))).collect();
    let pics: Vec<(&str, &RgbImage)> = imgs.iter().map(|(n, i)| (*n, i)).collect();
    let kf = keyframes_dir(&tmp.path().join("kf"), &pics);
    let mut res = Resources::new(2, EventSink::new());
    let (out, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        json!({}),
        &kf,
        &mut res,
    );
    r.unwrap();
    let d = detections(out.path());
    assert_eq!(d.model, "yolov12n");
    assert_eq!((d.input, d.classes, d.batch), ([640, 640], 80, 1));
    assert_eq!(d.names_from, "model metadata");
    for ((name, class), img) in PHOTOS.iter().zip(&d.images) {
        eprintln!(
            "{name}: {:?}",
            img.boxes
                .iter()
                .map(|b| (&b.class, b.confidence))
                .collect::<Vec<_>>()
        );
        assert_eq!(img.file, format!("{name}.jpg"));
        let top = img
            .boxes
            .first()
            .unwrap_or_else(|| panic!("{name}: nothing found"));
        assert_eq!(&top.class, class, "{name}: {:?}", img.boxes);
        assert!(top.confidence >= 0.5, "{name}: {top:?}");
        let [x1, y1, x2, y2] = top.bbox;
        assert!(
            0.0 <= x1
                && x1 < x2
                && x2 <= f64::from(img.width)
                && 0.0 <= y1
                && y1 < y2
                && y2 <= f64::from(img.height),
            "{name}: box {:?} outside {}x{}",
            top.bbox,
            img.width,
            img.height
        );
        for b in &img.boxes {
            assert!(b.confidence > 0.25 && b.class_id < 80, "{b:?}");
        }
    }
    // objects.json: exactly the shape knowledge.compose reads, one entry per scene.
    let raw: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("objects.json")).unwrap()).unwrap();
    let keys: Vec<&String> = raw.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["scenes", "video"]);
    let o = objects(out.path());
    for (i, (name, class)) in PHOTOS.iter().enumerate() {
        assert_eq!(o.scenes[i].scene, i);
        assert_eq!(
            &o.scenes[i].objects[0].name, class,
            "{name}: {:?}",
            o.scenes[i]
        );
        assert!(o.video.iter().any(|v| &v.name == class));
    }
    let first = &raw["scenes"][0]["objects"][0];
    assert_eq!(
        first.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["count", "max_confidence", "name"]
    );
}

#[test]
fn boxes_map_back_for_portrait_landscape_and_tiny_pictures() {
    if !ready(
        "boxes_map_back_for_portrait_landscape_and_tiny_pictures",
        &MODELS,
        &[],
    ) {
        return;
    }
    let Some(dir) = photos("boxes_map_back_for_portrait_landscape_and_tiny_pictures") else {
        return;
    };
    // The motorcycle's box stays inside its photo (741x500), so no edge clips it. Each
    // canvas (grey as the padding) holds the photo at a first place and then moved by a
    // known offset: same picture, same scale, so the box must move by that offset. The
    // offsets are multiples of 32 pixels of the model's input (its coarsest stride), so
    // the model sees the very same pixels, translated.
    let moto = photo(&dir, "motorcycle_left");
    let tiny = image::imageops::resize(&moto, 120, 81, image::imageops::FilterType::Triangle);
    let grey = [114, 114, 114];
    // (name, photo, canvas size, first place, moved place); gains 0.4, 0.4 and 8/3.
    type Case<'a> = (&'a str, &'a RgbImage, (u32, u32), (u32, u32), (u32, u32));
    let cases: [Case; 3] = [
        ("landscape", &moto, (1600, 800), (80, 80), (720, 240)),
        ("portrait", &moto, (800, 1600), (0, 80), (0, 880)),
        ("tiny", &tiny, (240, 160), (24, 24), (96, 72)),
    ];
    let mut pictures: Vec<(String, RgbImage)> = Vec::new();
    for (name, img, (w, h), (x0, y0), (x1, y1)) in &cases {
        pictures.push((
            format!("{name}-first"),
            on_canvas(img, *w, *h, *x0, *y0, grey),
        ));
        pictures.push((
            format!("{name}-moved"),
            on_canvas(img, *w, *h, *x1, *y1, grey),
        ));
    }
    pictures.push(("original".into(), moto.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let pics: Vec<(&str, &RgbImage)> = pictures.iter().map(|(n, i)| (n.as_str(), i)).collect();
    let kf = keyframes_dir(&tmp.path().join("kf"), &pics);
    let mut res = Resources::new(2, EventSink::new());
    let (out, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        json!({}),
        &kf,
        &mut res,
    );
    r.unwrap();
    let d = detections(out.path());
    let original = best(&d.images[6], "motorcycle").expect("a motorcycle in the photo");
    eprintln!("original: motorcycle at {original:?}");
    for (i, (name, img, (w, h), (x0, y0), (x1, y1))) in cases.iter().enumerate() {
        let (a, b) = (&d.images[2 * i], &d.images[2 * i + 1]);
        assert_eq!(
            (b.width, b.height),
            (*w, *h),
            "{name}: original size recorded"
        );
        let first = best(a, "motorcycle").unwrap_or_else(|| panic!("{name}: {:?}", a.boxes));
        let moved = best(b, "motorcycle").unwrap_or_else(|| panic!("{name}: {:?}", b.boxes));
        let (dx, dy) = (f64::from(x1 - x0), f64::from(y1 - y0));
        let want = [first[0] + dx, first[1] + dy, first[2] + dx, first[3] + dy];
        // Two pixels of the model's input, in the picture's pixels.
        let gain = (640.0 / f64::from(*w)).min(640.0 / f64::from(*h));
        let tol = 2.0 / gain;
        eprintln!("{name} (gain {gain:.3}): first {first:?}, moved {moved:?}, expected {want:?}");
        for k in 0..4 {
            assert!(
                (moved[k] - want[k]).abs() <= tol,
                "{name}: coordinate {k} is {} but moving the photo by ({dx}, {dy}) puts it at {} (+-{tol:.1})",
                moved[k],
                want[k]
            );
        }
        // The box sits on the photo where the photo alone has it, give or take what
        // the lower resolution costs the model (8% of the photo's width).
        let s = f64::from(img.width()) / f64::from(moto.width());
        let t = f64::from(img.width()) * 0.08;
        let offset = [*x0, *y0, *x0, *y0];
        for k in 0..4 {
            let expect = original[k] * s + f64::from(offset[k]);
            assert!(
                (first[k] - expect).abs() <= t,
                "{name}: coordinate {k} is {} on the canvas, {expect} from the photo alone (+-{t:.1})",
                first[k],
            );
        }
    }
}

#[test]
fn a_grey_frame_gives_no_detections() {
    if !ready("a_grey_frame_gives_no_detections", &MODELS, &[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let grey = RgbImage::from_pixel(1280, 720, image::Rgb([128, 128, 128]));
    let kf = keyframes_dir(&tmp.path().join("kf"), &[("grey", &grey)]);
    let mut res = Resources::new(2, EventSink::new());
    let (out, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        json!({}),
        &kf,
        &mut res,
    );
    r.unwrap();
    let d = detections(out.path());
    assert_eq!(d.images.len(), 1);
    assert!(d.images[0].boxes.is_empty(), "{:?}", d.images[0].boxes);
    assert_eq!((d.images[0].width, d.images[0].height), (1280, 720));
    let o = objects(out.path());
    assert_eq!(o.scenes.len(), 1);
    assert!(o.scenes[0].objects.is_empty() && o.video.is_empty());
    // No keyframes at all: empty outputs, no model needed.
    let empty = tmp.path().join("none");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("keyframes.json"), r#"{"keyframes": []}"#).unwrap();
    let (out, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        json!({}),
        &empty,
        &mut res,
    );
    r.unwrap();
    assert!(detections(out.path()).images.is_empty());
    assert_eq!(
        serde_json::to_value(objects(out.path())).unwrap(),
        json!({"scenes": [], "video": []})
    );
}

#[test]
fn batched_and_one_by_one_inference_agree() {
    if !ready("batched_and_one_by_one_inference_agree", &MODELS, &[]) {
        return;
    }
    let Some(dir) = photos("batched_and_one_by_one_inference_agree") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // yolov12n is exported with batch 1: the same model with a dynamic batch.
    let dynamic = tmp.path().join("yolov12n-dynamic.onnx");
    let bytes = std::fs::read(installed_path("yolov12n")).unwrap();
    std::fs::write(&dynamic, onnx::dynamic_batch(&bytes).unwrap()).unwrap();
    let imgs: Vec<(String, RgbImage)> = (0..6)
        .map(|i| {
            let (n, _) = PHOTOS[i % 4];
            let mut img = photo(&dir, n);
            if i >= 4 {
                img = image::imageops::flip_horizontal(&img);
            }
            (format!("{n}{i}"), img)
        })
        .collect();
    let pics: Vec<(&str, &RgbImage)> = imgs.iter().map(|(n, i)| (n.as_str(), i)).collect();
    let kf = keyframes_dir(&tmp.path().join("kf"), &pics);
    let mut res = Resources::new(2, EventSink::new());
    let (single, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        json!({}),
        &kf,
        &mut res,
    );
    r.unwrap();
    // Batches of 4: one full and one partial call.
    let params = json!({"model": dynamic.to_str().unwrap(), "batch": 4});
    let (batched, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        params,
        &kf,
        &mut res,
    );
    r.unwrap();
    let (a, b) = (detections(single.path()), detections(batched.path()));
    assert_eq!((a.batch, b.batch), (1, 4));
    assert_eq!(a.images.len(), 6);
    for (x, y) in a.images.iter().zip(&b.images) {
        let cx: Vec<usize> = x.boxes.iter().map(|b| b.class_id).collect();
        let cy: Vec<usize> = y.boxes.iter().map(|b| b.class_id).collect();
        assert_eq!(cx, cy, "{}", x.file);
        for (p, q) in x.boxes.iter().zip(&y.boxes) {
            assert!((p.confidence - q.confidence).abs() < 2e-3, "{p:?} {q:?}");
            for i in 0..4 {
                assert!((p.bbox[i] - q.bbox[i]).abs() < 1.0, "{p:?} {q:?}");
            }
        }
    }
}

#[test]
fn missing_model_or_runtime_says_what_to_install() {
    // No model or runtime needed: both are looked up before anything loads.
    let tmp = tempfile::tempdir().unwrap();
    let grey = RgbImage::from_pixel(64, 48, image::Rgb([128, 128, 128]));
    let kf = keyframes_dir(&tmp.path().join("kf"), &[("grey", &grey)]);
    let models = ModelsDir::new(tmp.path().join("models"));
    let stage = YoloStage::with_models_dir(models.clone());
    let mut res = Resources::new(2, EventSink::new());
    let (_, r) = detect(&stage, json!({}), &kf, &mut res);
    let e = r.unwrap_err();
    assert!(
        e.message.contains("model 'yolov12n' is not installed"),
        "{e:?}"
    );
    assert!(
        e.hint
            .as_deref()
            .unwrap()
            .contains("vsum models install yolov12n"),
        "{e:?}"
    );
    assert!(!e.retryable);
    // The model is there, the ONNX Runtime library is not.
    if std::env::var_os("VSUM_ONNXRUNTIME").is_some() {
        eprintln!("SKIP the missing-runtime half: VSUM_ONNXRUNTIME is set");
        return;
    }
    std::fs::create_dir_all(models.root()).unwrap();
    let fake = b"an onnx file";
    std::fs::write(models.path("yolov12n.onnx"), fake).unwrap();
    let mut m = ModelsManifest::default();
    m.models.insert(
        "yolov12n".into(),
        ModelEntry {
            file: "yolov12n.onnx".into(),
            blake3: blake3::hash(fake).to_hex().to_string(),
            size: fake.len() as u64,
            format: "onnx".into(),
            sources: vec!["easy-yolo==0.1.3".into()],
            license: "AGPL-3.0".into(),
            version: String::new(),
        },
    );
    m.save(&models).unwrap();
    let (_, r) = detect(&stage, json!({}), &kf, &mut res);
    let e = r.unwrap_err();
    assert!(e.message.contains("ONNX Runtime is not installed"), "{e:?}");
    assert!(
        e.hint
            .as_deref()
            .unwrap()
            .contains("vsum models install onnxruntime"),
        "{e:?}"
    );
    // And no keyframes upstream is a clear error too.
    let (_, r) = support::run_stage(
        &stage,
        json!({}),
        &[("scenes", tmp.path())],
        tmp.path(),
        None,
    );
    let e = r.unwrap_err();
    assert!(e.message.contains("keyframes.json"), "{e:?}");
}

#[test]
fn a_model_of_another_layout_is_refused_clearly() {
    if !ready(
        "a_model_of_another_layout_is_refused_clearly",
        &["silero-vad", "onnxruntime"],
        &[],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let grey = RgbImage::from_pixel(64, 48, image::Rgb([128, 128, 128]));
    let kf = keyframes_dir(&tmp.path().join("kf"), &[("grey", &grey)]);
    let silero = tmp.path().join("silero.onnx");
    std::fs::copy(installed_path("silero-vad"), &silero).unwrap();
    let mut res = Resources::new(2, EventSink::new());
    let (_, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        json!({"model": "../silero.onnx"}),
        &kf,
        &mut res,
    );
    let e = r.unwrap_err();
    eprintln!("{e:?}");
    assert!(
        e.message.contains("silero.onnx")
            && e.message.contains("is not a YOLO detector")
            && e.message.contains("'input' [?, ?]")
            && e.message.contains("'output'"),
        "{e:?}"
    );
    assert!(
        e.hint
            .as_deref()
            .unwrap()
            .contains("[batch, 4 + classes, anchors]")
    );
    assert!(!e.retryable);
    // A picture in, but boxes out in the transposed YOLOv5 layout [1, anchors, 4 + classes].
    std::fs::write(
        tmp.path().join("v5.onnx"),
        reshape_model(&[1, 3, 8, 8], &[1, 32, 6]),
    )
    .unwrap();
    let (_, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        json!({"model": "../v5.onnx"}),
        &kf,
        &mut res,
    );
    let e = r.unwrap_err();
    eprintln!("{e:?}");
    assert!(
        e.message.contains("v5.onnx is not a YOLO detector")
            && e.message
                .contains("output 'output0' is not float32 [batch, 4 + classes, anchors]")
            && e.message.contains("'output0' [1, 32, 6] f32"),
        "{e:?}"
    );
    // The right layout is accepted: 4 + 2 classes and 32 anchors whose "scores" are the
    // grey picture's values (128/255 and the padding's 114/255), all under 0.6.
    std::fs::write(
        tmp.path().join("ok.onnx"),
        reshape_model(&[1, 3, 8, 8], &[1, 6, 32]),
    )
    .unwrap();
    let (out, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        json!({"model": "../ok.onnx", "confidence": 0.6}),
        &kf,
        &mut res,
    );
    r.unwrap();
    let d = detections(out.path());
    assert_eq!((d.input, d.classes), ([8, 8], 2));
    assert_eq!(d.names_from, "numbered (no names in the model)");
    assert!(d.images[0].boxes.is_empty());
    // Not an ONNX file at all.
    std::fs::write(tmp.path().join("junk.onnx"), b"junk").unwrap();
    let (_, r) = detect(
        &YoloStage::with_models_dir(models_dir()),
        json!({"model": "../junk.onnx"}),
        &kf,
        &mut res,
    );
    let e = r.unwrap_err();
    assert!(e.message.contains("cannot load the ONNX model"), "{e:?}");
}

/// `n` videos cut from the photos (2 s each, a different order per video) in `input/`.
fn photo_videos(root: &Path, photos: &Path, n: usize) -> Vec<Vec<&'static str>> {
    std::fs::create_dir_all(root.join("input")).unwrap();
    let mut orders = Vec::new();
    for v in 0..n {
        let order: Vec<(&str, &str)> = (0..4).map(|i| PHOTOS[(i + v) % 4]).collect();
        let mut args: Vec<String> = vec![
            "-hide_banner".into(),
            "-loglevel".into(),
            "error".into(),
            "-nostdin".into(),
            "-y".into(),
        ];
        let mut filter = String::new();
        for (i, (name, _)) in order.iter().enumerate() {
            args.extend(["-loop", "1", "-t", "2", "-i"].map(String::from));
            args.push(
                photos
                    .join(format!("{name}.png"))
                    .to_string_lossy()
                    .into_owned(),
            );
            filter += &format!(
                "[{i}:v]scale=640:480:force_original_aspect_ratio=decrease,pad=640:480:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=25,format=yuv420p[v{i}];"
            );
        }
        filter += "[v0][v1][v2][v3]concat=n=4:v=1:a=0[out]";
        args.extend([
            "-filter_complex".into(),
            filter,
            "-map".into(),
            "[out]".into(),
        ]);
        args.extend(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"].map(String::from));
        args.push(
            root.join(format!("input/photos{v}.mp4"))
                .to_string_lossy()
                .into_owned(),
        );
        let out = std::process::Command::new("ffmpeg")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        orders.push(order.iter().map(|(_, class)| *class).collect());
    }
    orders
}

const PIPELINE: &str = r#"name: photos
inputs: [input/]
output: out/
stages:
  scenes:
    uses: video.scenes
  keyframes:
    uses: video.keyframes
    needs: [scenes]
  objects:
    uses: yolo.detect
    needs: [keyframes]
"#;

#[test]
fn videos_of_photos_name_each_scene_and_load_the_model_once() {
    let test = "videos_of_photos_name_each_scene_and_load_the_model_once";
    if !ready(test, &MODELS, &["ffmpeg"]) {
        return;
    }
    let Some(dir) = photos(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let orders = photo_videos(tmp.path(), &dir, 3);
    std::fs::write(tmp.path().join("m.yaml"), PIPELINE).unwrap();
    let registry = vsum_stages::registry(&models_dir());
    let m = vsum_engine::manifest::load(&tmp.path().join("m.yaml"), &registry).unwrap();
    let cfg = Config::default();
    let run_once = || {
        let store = vsum_engine::store::Store::open(
            &cfg.cache_path(&m.base_dir),
            vsum_engine::store::LockMode::Shared,
        )
        .unwrap();
        let events = EventSink::new();
        let loads = Arc::new(Mutex::new(Vec::new()));
        let l = loads.clone();
        events.subscribe(move |e| {
            if let Event::ResourceLoaded { key, .. } = e {
                l.lock().unwrap().push(key.clone());
            }
        });
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
        let loads = loads.lock().unwrap().clone();
        (s, loads)
    };
    let (s, loads) = run_once();
    assert_eq!(
        s.counts.failed,
        0,
        "{:#?}",
        s.jobs
            .iter()
            .filter(|j| j.error.is_some())
            .collect::<Vec<_>>()
    );
    assert_eq!(s.counts.ran, 9);
    assert_eq!(loads.len(), 1, "one session for the whole batch: {loads:?}");
    assert!(loads[0].starts_with("yolo:"), "{loads:?}");
    for (v, order) in orders.iter().enumerate() {
        let out = tmp.path().join(format!("out/photos{v}/objects"));
        let d = detections(&out);
        let o = objects(&out);
        assert_eq!(
            d.images.len(),
            4,
            "video {v}: one keyframe per photo: {d:#?}"
        );
        for img in &d.images {
            // Scene i shows photo i: 2 s each.
            let class = order[(img.time / 2.0) as usize];
            let scene = o.scenes.iter().find(|s| s.scene == img.scene).unwrap();
            let names: Vec<&str> = scene.objects.iter().map(|x| x.name.as_str()).collect();
            eprintln!(
                "video {v} scene {} at {:.2}s: {names:?}",
                img.scene, img.time
            );
            assert!(
                names.contains(&class),
                "video {v}, scene {} at {:.2} s should show a {class}: {:?}",
                img.scene,
                img.time,
                scene.objects
            );
        }
    }
    // A cached rerun loads nothing.
    let (s, loads) = run_once();
    assert_eq!((s.counts.cached, s.counts.ran), (9, 0));
    assert!(loads.is_empty(), "{loads:?}");
}

#[test]
fn the_cache_key_holds_the_model_hash_and_the_runtime_version() {
    use vsum_engine::hash::FileHasher;
    use vsum_engine::stage::{KeyEnv, StageKind};
    let tmp = tempfile::tempdir().unwrap();
    let models = ModelsDir::new(tmp.path().join("models"));
    std::fs::create_dir_all(models.root()).unwrap();
    let mut m = ModelsManifest::default();
    for (name, file, bytes, version) in [
        ("yolov12n", "yolov12n.onnx", &b"weights"[..], ""),
        (
            "onnxruntime",
            "libonnxruntime.so.1.32.0",
            b"library",
            "1.32.0",
        ),
    ] {
        std::fs::write(models.path(file), bytes).unwrap();
        m.models.insert(
            name.into(),
            ModelEntry {
                file: file.into(),
                blake3: blake3::hash(bytes).to_hex().to_string(),
                size: bytes.len() as u64,
                format: if name == "yolov12n" {
                    "onnx"
                } else {
                    "shared-library"
                }
                .into(),
                sources: vec![],
                license: String::new(),
                version: version.into(),
            },
        );
    }
    m.save(&models).unwrap();
    let stage = YoloStage::with_models_dir(models);
    let hasher = FileHasher::in_memory();
    let env = KeyEnv {
        base_dir: tmp.path(),
        output_root: tmp.path(),
        video: None,
        hasher: &hasher,
    };
    let params = json!({"model": "yolov12n", "confidence": 0.25, "iou": 0.45, "max_detections": 300, "batch": 8});
    let x = stage.key_extras(&params, &env).unwrap();
    if std::env::var_os("VSUM_ONNXRUNTIME").is_none() {
        assert_eq!(x.tools["onnxruntime"], "1.32.0");
    }
    assert_eq!(
        x.tools["yolo_model"],
        blake3::hash(b"weights").to_hex().to_string()
    );
    // A model given by path is hashed from its content, never keyed by its path.
    std::fs::write(tmp.path().join("mine.onnx"), b"other weights").unwrap();
    let params = json!({"model": "mine.onnx", "confidence": 0.25, "iou": 0.45, "max_detections": 300, "batch": 8});
    let x = stage.key_extras(&params, &env).unwrap();
    assert_eq!(
        x.tools["yolo_model"],
        blake3::hash(b"other weights").to_hex().to_string()
    );
    assert!(
        x.tools
            .values()
            .all(|v| !v.contains(tmp.path().to_str().unwrap()))
    );
}
