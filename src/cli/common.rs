//! What every command shares: exit codes, the error that carries one, the global flags,
//! and loading a manifest with its config, alerts and cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vsum_engine::config::{self, Config};
use vsum_engine::manifest::{self, Manifest, ManifestError};
use vsum_engine::stage::Registry;
use vsum_engine::store::{LockMode, Store};
use vsum_models::ModelsDir;

/// Exit codes (documented in README and doc/manifest.md).
pub mod exit {
    pub const OK: u8 = 0;
    /// Some video, input or job failed; the rest of the batch completed.
    pub const FAILED: u8 = 1;
    /// Bad manifest, config or usage.
    pub const USAGE: u8 = 2;
    /// Interrupted (Ctrl-C).
    pub const INTERRUPTED: u8 = 130;
}

/// An error that maps to an exit code.
pub struct Fail(pub u8, pub String);

impl Fail {
    /// A usage error (exit 2): bad manifest, config, flag or path.
    pub fn usage(msg: impl Into<String>) -> Fail {
        Fail(exit::USAGE, msg.into())
    }

    /// A failure of the thing asked for (exit 1).
    pub fn failed(msg: impl Into<String>) -> Fail {
        Fail(exit::FAILED, msg.into())
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Fail(exit::USAGE, format!("{e:#}"))
    }
}

/// Flags every command that reads a manifest takes.
#[derive(clap::Args, Clone, Default)]
pub struct Common {
    /// Config file (default: the first config/default.yaml above the manifest; env VSUM_CONFIG)
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Cache folder, relative to the current folder (default: `cache_dir` of the config, .vsum beside the manifest)
    #[arg(long, global = true, env = "VSUM_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Alert thresholds (default: the first config/alerts.yaml above the manifest; env VSUM_ALERTS)
    #[arg(long, global = true)]
    pub alerts: Option<PathBuf>,
}

/// Prints `v` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

pub fn load_manifest(path: &Path, registry: &Registry) -> Result<Manifest, Fail> {
    manifest::load(path, registry).map_err(|e| match e {
        ManifestError::Invalid(d) => Fail(exit::USAGE, d.to_string()),
        other => Fail(exit::USAGE, format!("error: {other}")),
    })
}

/// `--inputs DIR...`: these folders or files replace the manifest's `inputs:`
/// (relative to the current folder, like every path typed on the command line).
/// Returns whether they did.
pub fn override_inputs(m: &mut Manifest, dirs: &[PathBuf]) -> bool {
    if dirs.is_empty() {
        return false;
    }
    m.inputs = dirs
        .iter()
        .map(|d| {
            std::path::absolute(d)
                .unwrap_or_else(|_| d.clone())
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    true
}

/// Refuses (exit 2) inputs that name nothing on disk, before anything runs: a run
/// would find no video there and still report success. `from_flag`: the inputs came
/// from `--inputs`, not from the manifest's `inputs:`.
pub fn check_inputs(manifest: &Path, m: &Manifest, from_flag: bool) -> Result<(), Fail> {
    let missing = vsum_engine::discover::missing_inputs(&m.base_dir, &m.inputs);
    if missing.is_empty() {
        return Ok(());
    }
    let mut msg = String::new();
    for (input, path) in &missing {
        if from_flag {
            msg.push_str(&format!(
                "error: --inputs: no such folder or file: {}\n",
                path.display()
            ));
        } else {
            msg.push_str(&format!(
                "error: {}: input '{input}' does not exist ({})\n",
                manifest.display(),
                path.display()
            ));
        }
    }
    if from_flag {
        msg.push_str("  hint: give folders or files that exist");
    } else {
        msg.push_str(&format!(
            "  hint: create it and put videos in it, fix `inputs:` in {m} (paths are relative \
             to its folder), or run on other folders: vsum run {m} --inputs DIR...",
            m = manifest.display()
        ));
    }
    Err(Fail::usage(msg))
}

pub fn load_config(
    m: &Manifest,
    common: &Common,
    mut flags: serde_json::Map<String, serde_json::Value>,
) -> Result<Config, Fail> {
    if let Some(c) = &common.cache_dir {
        let abs = std::path::absolute(c).unwrap_or_else(|_| c.clone());
        flags.insert(
            "cache_dir".into(),
            abs.to_string_lossy().into_owned().into(),
        );
    }
    let file = config::find_file(common.config.as_deref(), &m.base_dir);
    config::resolve(file.as_deref(), &m.file, m.config.as_ref(), flags)
        .map_err(|d| Fail(exit::USAGE, d.to_string()))
}

/// The models folder for a manifest's config, decided once (`VSUM_MODELS_DIR`, else
/// `models_dir`, else the default).
pub fn models_dir(m: &Manifest, cfg: &Config) -> ModelsDir {
    ModelsDir::from_config(cfg.models_path(&m.base_dir).as_deref())
}

/// The stage kinds for running a manifest, looking for models where its config says.
/// (Parsing needs no models: any registry checks a manifest the same.)
pub fn kinds(m: &Manifest, cfg: &Config) -> Registry {
    registry(&models_dir(m, cfg))
}

/// Every stage kind, the media kinds run by the helper beside this binary: `vsum`
/// itself never loads FFmpeg (see `vsum_stages::media::helper`).
pub fn registry(models: &ModelsDir) -> Registry {
    vsum_stages::registry_with_media_helper(
        models,
        vsum_stages::media::helper::MediaHelper::beside_current_exe(),
    )
}

pub fn load_alerts(m: &Manifest, common: &Common) -> Result<vsum_engine::alerts::Alerts, Fail> {
    let file = vsum_engine::alerts::find_file(common.alerts.as_deref(), &m.base_dir);
    vsum_engine::alerts::load(file.as_deref()).map_err(|d| Fail(exit::USAGE, d.to_string()))
}

pub fn open_store(m: &Manifest, cfg: &Config, mode: LockMode) -> Result<Store, Fail> {
    Store::open(&cfg.cache_path(&m.base_dir), mode)
        .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))
}

/// The file names the manifest's batch stages publish at the top of the output folder.
pub fn published(m: &Manifest) -> Vec<String> {
    m.stages.iter().flat_map(|s| s.publish.clone()).collect()
}

/// The Ctrl-C flag, installed on first use (the same flag after that: `--watch` runs
/// many batches under one handler).
pub fn install_ctrlc() -> Arc<AtomicBool> {
    static CANCEL: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    CANCEL.get_or_init(set_ctrlc).clone()
}

fn set_ctrlc() -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if c.swap(true, Ordering::SeqCst) {
            // Second Ctrl-C: leave now. Nothing half-written is ever trusted.
            std::process::exit(exit::INTERRUPTED as i32);
        }
        let n = super::report::in_flight();
        super::screen::println(&format!(
            "\nstopping: {n} job{} in flight; they stop now and no new job starts (Ctrl-C again to quit at once)",
            if n == 1 { "" } else { "s" }
        ));
    });
    cancel
}

/// "3 entries" / "1 entry".
pub fn entries(n: usize) -> String {
    format!("{n} entr{}", if n == 1 { "y" } else { "ies" })
}

/// A human time in tables: "5m ago".
pub fn ago(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}
