//! `models.json`: what is installed in a models folder, and where it came from.
//!
//! One entry per installed model name: its file (relative to the folder), blake3,
//! size, the registry packages it was made from (`name==version`) and their license.
//! Stages read the blake3 from here for their cache keys, so a key never needs to hash
//! a large model file; loading a model checks the file against it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vsum_engine::fsutil::write_atomic;

use super::{ModelError, ModelsDir};

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsManifest {
    pub version: u32,
    #[serde(default)]
    pub models: BTreeMap<String, ModelEntry>,
}

impl Default for ModelsManifest {
    fn default() -> Self {
        ModelsManifest {
            version: MANIFEST_VERSION,
            models: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// File name inside the models folder.
    pub file: String,
    pub blake3: String,
    pub size: u64,
    /// What the file is: `whisper-ggml`, `onnx`, `shared-library`.
    pub format: String,
    /// Registry packages it was made from, as `name==version`.
    pub sources: Vec<String>,
    pub license: String,
    /// The version of the thing itself when it has one (ONNX Runtime's), else empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

impl ModelsManifest {
    /// Reads `models.json`; a folder without one has nothing installed.
    pub fn load(dir: &ModelsDir) -> Result<Self, ModelError> {
        let path = dir.manifest_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(ModelError::new(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let m: ModelsManifest = serde_json::from_slice(&bytes).map_err(|e| {
            ModelError::new(format!(
                "{} is not a valid models manifest: {e}",
                path.display()
            ))
            .hint("delete it and reinstall the models (`vsum models install NAME`)")
        })?;
        if m.version != MANIFEST_VERSION {
            return Err(ModelError::new(format!(
                "{} has version {}, this vsum reads version {MANIFEST_VERSION}",
                path.display(),
                m.version
            ))
            .hint("reinstall the models with this vsum (`vsum models install NAME --force`)"));
        }
        Ok(m)
    }

    /// Writes `models.json` atomically. Hold [`ModelsDir::lock`] around load + save.
    pub fn save(&self, dir: &ModelsDir) -> Result<(), ModelError> {
        let mut json = serde_json::to_vec_pretty(self).expect("manifest serializes");
        json.push(b'\n');
        let path = dir.manifest_path();
        write_atomic(&path, &json)
            .map_err(|e| ModelError::new(format!("cannot write {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_manifest_is_empty_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let d = ModelsDir::new(dir.path());
        let mut m = ModelsManifest::load(&d).unwrap();
        assert!(m.models.is_empty());
        m.models.insert(
            "x".into(),
            ModelEntry {
                file: "x.bin".into(),
                blake3: "ab".into(),
                size: 3,
                format: "onnx".into(),
                sources: vec!["pkg==1.0".into()],
                license: "MIT".into(),
                version: String::new(),
            },
        );
        m.save(&d).unwrap();
        assert_eq!(ModelsManifest::load(&d).unwrap(), m);
    }

    #[test]
    fn corrupt_manifest_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let d = ModelsDir::new(dir.path());
        std::fs::write(d.manifest_path(), b"{not json").unwrap();
        let e = ModelsManifest::load(&d).unwrap_err();
        assert!(e.message.contains("models.json"), "{e}");
        assert!(e.hint.unwrap().contains("reinstall"));
    }
}
