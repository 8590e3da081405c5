//! Turning a stage's `model:` param into a file and its content hash.
//!
//! A param is either an installed model name (looked up in `models.json`, whose blake3
//! joins the cache key without hashing the file) or a path to a model file (relative to
//! the manifest's folder; hashed once per process and remembered by stat stamp).
//! Errors say what to install or which path was tried.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vsum_engine::hash::{FileHasher, hash_file};

use super::catalog::spec;
use super::{ModelEntry, ModelError, ModelsDir, ModelsManifest, install_hint};

/// A model file a stage will use.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub path: PathBuf,
    /// The installed name, when the param was one.
    pub name: Option<String>,
    /// Its manifest entry, when installed.
    pub entry: Option<ModelEntry>,
}

impl Resolved {
    /// How to name it in messages: the installed name, else the path.
    pub fn display(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.path.display().to_string())
    }

    /// The content hash: from the manifest for installed models, else by hashing the
    /// file (remembered by `hasher`, or per process when none is given).
    pub fn blake3(&self, hasher: Option<&FileHasher>) -> Result<String, ModelError> {
        if let Some(e) = &self.entry {
            return Ok(e.blake3.clone());
        }
        let hasher = hasher.unwrap_or_else(|| process_hasher());
        hasher
            .hash(&self.path)
            .map_err(|e| ModelError::new(format!("cannot read model {}: {e}", self.path.display())))
    }

    /// Checks an installed model's file against its recorded hash (a no-op for paths).
    pub fn verify(&self) -> Result<(), ModelError> {
        match (&self.entry, &self.name) {
            (Some(e), Some(name)) => verify_entry(&self.path, name, e),
            _ => Ok(()),
        }
    }
}

fn process_hasher() -> &'static FileHasher {
    static H: OnceLock<FileHasher> = OnceLock::new();
    H.get_or_init(FileHasher::in_memory)
}

/// Does `path`'s content match `entry`? The error says how to repair it.
pub fn verify_entry(path: &Path, name: &str, entry: &ModelEntry) -> Result<(), ModelError> {
    let reinstall = format!("reinstall it: `vsum models install {name} --force`");
    let md = std::fs::metadata(path).map_err(|e| {
        ModelError::new(format!(
            "model '{name}': cannot read {}: {e}",
            path.display()
        ))
        .hint(reinstall.clone())
    })?;
    if md.len() != entry.size {
        return Err(ModelError::new(format!(
            "model '{name}' is corrupt: {} has {} bytes, {} were installed",
            path.display(),
            md.len(),
            entry.size
        ))
        .hint(reinstall));
    }
    let h = hash_file(path).map_err(|e| {
        ModelError::new(format!(
            "model '{name}': cannot read {}: {e}",
            path.display()
        ))
    })?;
    if h != entry.blake3 {
        return Err(ModelError::new(format!(
            "model '{name}' is corrupt: {} has blake3 {}…, {}… was installed",
            path.display(),
            &h[..12],
            &entry.blake3[..entry.blake3.len().min(12)]
        ))
        .hint(reinstall));
    }
    Ok(())
}

/// Does a param look like a path rather than a model name?
fn looks_like_path(s: &str) -> bool {
    s.contains('/')
        || [".bin", ".onnx", ".gguf", ".so"]
            .iter()
            .any(|x| s.ends_with(x))
        || s.contains(".so.")
}

/// Resolves `model` (an installed name or a path relative to `base_dir`) to a file of
/// `format` (`whisper-ggml`, `onnx`, ...).
pub fn resolve(
    dir: &ModelsDir,
    model: &str,
    base_dir: &Path,
    format: &str,
) -> Result<Resolved, ModelError> {
    let as_path = base_dir.join(model);
    if looks_like_path(model) || (as_path.is_file() && spec(model).is_none()) {
        if !as_path.is_file() {
            return Err(ModelError::new(format!("model file {} does not exist", as_path.display()))
                .hint("give an installed model name (`vsum models list`) or a path relative to the manifest's folder"));
        }
        return Ok(Resolved {
            path: as_path,
            name: None,
            entry: None,
        });
    }
    let manifest = ModelsManifest::load(dir)?;
    let Some(entry) = manifest.models.get(model) else {
        return Err(match spec(model) {
            Some(_) => ModelError::new(format!(
                "model '{model}' is not installed (models folder {})",
                dir.root().display()
            ))
            .hint(format!(
                "{}; or point `models_dir` in the config (or VSUM_MODELS_DIR) at the folder that has it",
                install_hint(model)
            )),
            None => {
                let installed: Vec<&str> = manifest.models.keys().map(String::as_str).collect();
                ModelError::new(format!(
                    "unknown model '{model}': not an installed model and no file {}",
                    as_path.display()
                ))
                .hint(format!(
                    "installed: {}; `vsum models list` shows what can be installed",
                    if installed.is_empty() {
                        "none".to_string()
                    } else {
                        installed.join(", ")
                    }
                ))
            }
        });
    };
    if entry.format != format {
        return Err(ModelError::new(format!(
            "model '{model}' is a {} file; this stage needs a {format} model",
            entry.format
        )));
    }
    let path = dir.path(&entry.file);
    if !path.is_file() {
        return Err(ModelError::new(format!(
            "model '{model}' is listed in {} but {} is missing",
            dir.manifest_path().display(),
            path.display()
        ))
        .hint(format!(
            "reinstall it: `vsum models install {model} --force`"
        )));
    }
    Ok(Resolved {
        path,
        name: Some(model.to_string()),
        entry: Some(entry.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(dir: &ModelsDir, name: &str, file: &str, bytes: &[u8], format: &str) {
        std::fs::create_dir_all(dir.root()).unwrap();
        std::fs::write(dir.path(file), bytes).unwrap();
        let mut m = ModelsManifest::load(dir).unwrap();
        m.models.insert(
            name.into(),
            ModelEntry {
                file: file.into(),
                blake3: blake3::hash(bytes).to_hex().to_string(),
                size: bytes.len() as u64,
                format: format.into(),
                sources: vec![],
                license: "MIT".into(),
                version: String::new(),
            },
        );
        m.save(dir).unwrap();
    }

    #[test]
    fn names_paths_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ModelsDir::new(tmp.path().join("models"));
        let base = tmp.path();
        let e = resolve(&dir, "whisper-tiny.en", base, "whisper-ggml").unwrap_err();
        assert!(e.message.contains("not installed"), "{e}");
        assert!(
            e.hint
                .unwrap()
                .contains("vsum models install whisper-tiny.en")
        );
        let e = resolve(&dir, "whisper-huge", base, "whisper-ggml").unwrap_err();
        assert!(e.message.contains("unknown model"), "{e}");
        let e = resolve(&dir, "nope/ggml.bin", base, "whisper-ggml").unwrap_err();
        assert!(e.message.contains("does not exist"), "{e}");

        installed(
            &dir,
            "whisper-tiny.en",
            "ggml-tiny.en.bin",
            b"ggml",
            "whisper-ggml",
        );
        let r = resolve(&dir, "whisper-tiny.en", base, "whisper-ggml").unwrap();
        assert_eq!(
            r.blake3(None).unwrap(),
            blake3::hash(b"ggml").to_hex().to_string()
        );
        r.verify().unwrap();
        let e = resolve(&dir, "whisper-tiny.en", base, "onnx").unwrap_err();
        assert!(e.message.contains("needs a onnx"), "{e}");

        std::fs::write(dir.path("ggml-tiny.en.bin"), b"gguf").unwrap();
        let e = r.verify().unwrap_err();
        assert!(e.message.contains("corrupt"), "{e}");
        assert!(e.hint.unwrap().contains("--force"));

        std::fs::write(base.join("mine.bin"), b"xyz").unwrap();
        let p = resolve(&dir, "mine.bin", base, "whisper-ggml").unwrap();
        assert_eq!(p.name, None);
        assert_eq!(
            p.blake3(None).unwrap(),
            blake3::hash(b"xyz").to_hex().to_string()
        );
    }
}
