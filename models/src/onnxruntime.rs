//! The ONNX Runtime shared library, loaded once per process for every ONNX stage.
//!
//! `ort` is built with `load-dynamic`: nothing is downloaded at build time and the
//! library is opened at run time with `ort::init_from`, from `VSUM_ONNXRUNTIME` when
//! set, else from the installed `onnxruntime` model (`vsum models install onnxruntime`).
//! Without either, ONNX stages fail with an error that says so (never a panic).
//! Sessions are pooled per model file so CPU-lane jobs reuse them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;

use super::{ModelError, ModelsDir, ModelsManifest, install_hint};

/// Environment variable naming an ONNX Runtime library to use instead of the installed one.
pub const ENV_LIBRARY: &str = "VSUM_ONNXRUNTIME";

/// The library to load and its version (for cache keys).
pub fn library(dir: &ModelsDir) -> Result<(PathBuf, String), ModelError> {
    if let Some(p) = std::env::var_os(ENV_LIBRARY).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let version = name
            .split_once(".so.")
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| format!("custom:{name}"));
        return Ok((p, version));
    }
    let m = ModelsManifest::load(dir)?;
    match m.models.get("onnxruntime") {
        Some(e) if dir.path(&e.file).is_file() => Ok((dir.path(&e.file), e.version.clone())),
        _ => Err(ModelError::new(format!(
            "ONNX Runtime is not installed (models folder {})",
            dir.root().display()
        ))
        .hint(format!(
            "{}; or set {ENV_LIBRARY} to a libonnxruntime.so (1.31 or newer)",
            install_hint("onnxruntime")
        ))),
    }
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
/// Failures are not remembered: installing the library fixes the next call.
pub fn environment(dir: &ModelsDir) -> Result<Environment, ModelError> {
    static ENV: Mutex<Option<Environment>> = Mutex::new(None);
    let mut slot = ENV.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(env) = slot.as_ref() {
        return Ok(env.clone());
    }
    let (path, version) = library(dir)?;
    let env = ort::init_from(&path)
        .map_err(|e| {
            ModelError::new(format!(
                "cannot load ONNX Runtime from {}: {e}",
                path.display()
            ))
            .hint(format!(
                "reinstall it: `vsum models install onnxruntime --force`, or fix {ENV_LIBRARY}"
            ))
        })?
        .with_name("vsum")
        .with_telemetry(false)
        .build()
        .map_err(|e| ModelError::new(format!("cannot start ONNX Runtime {version}: {e}")))?;
    tracing::info!(library = %path.display(), %version, "ONNX Runtime loaded");
    *slot = Some(env.clone());
    Ok(env)
}

type Pool = Mutex<HashMap<String, Vec<Session>>>;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// A session taken from the pool; it goes back when dropped.
pub struct PooledSession {
    key: String,
    session: Option<Session>,
}

impl PooledSession {
    pub fn get(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until drop")
    }
}

impl Drop for PooledSession {
    fn drop(&mut self) {
        if let Some(s) = self.session.take()
            && let Ok(mut p) = pool().lock()
        {
            p.entry(self.key.clone()).or_default().push(s);
        }
    }
}

/// A single-threaded session of the ONNX model at `path` (content hash `key`).
pub fn session(dir: &ModelsDir, path: &Path, key: &str) -> Result<PooledSession, ModelError> {
    if let Some(s) = pool()
        .lock()
        .ok()
        .and_then(|mut p| p.get_mut(key).and_then(Vec::pop))
    {
        return Ok(PooledSession {
            key: key.to_string(),
            session: Some(s),
        });
    }
    let env = environment(dir)?;
    let bad = |e: String| {
        ModelError::new(format!(
            "cannot load the ONNX model {}: {e}",
            path.display()
        ))
        .hint("is it an ONNX file? reinstall it or fix the stage's `model:`")
    };
    let session = Session::builder(&env)
        .map_err(|e| bad(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| bad(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| bad(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| bad(e.to_string()))?;
    Ok(PooledSession {
        key: key.to_string(),
        session: Some(session),
    })
}
