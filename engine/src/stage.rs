//! The one trait every stage kind implements, and the registry that names them.
//!
//! A kind declares its name, an implementation version (bump it when its output
//! changes), its parameters (checked and defaulted before anything runs), its lane,
//! what joins its cache key beyond params and inputs, and how to run one job. The
//! engine knows nothing else about a kind, so adding one touches one file in `stages/`
//! and one registry line.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde_json::Value;

use crate::cores::Cores;
use crate::events::EventSink;
use crate::hash::FileHasher;
pub use crate::lane::Lane;
pub use crate::params::{ParamError, typed_params};
pub use crate::resources::Resources;

/// One job per video, or one job for the whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Video,
    Batch,
}

/// One documented parameter, shown by `vsum stages`.
#[derive(Debug, Clone, Serialize)]
pub struct ParamDoc {
    pub name: String,
    /// The type in words ("whole number", "one of: a, b"), never a Rust type name.
    pub ty: String,
    pub default: Option<String>,
    pub doc: String,
}

/// What a kind's parameter check can see of the manifest.
#[derive(Debug)]
pub struct CheckEnv<'a> {
    pub stage_id: &'a str,
    pub scope: Scope,
    /// The stages this one lists in `needs`, with their scope.
    pub needs: &'a [(String, Scope)],
}

impl CheckEnv<'_> {
    pub fn needs_stage(&self, id: &str) -> bool {
        self.needs.iter().any(|(n, _)| n == id)
    }
}

/// A source video as jobs see it.
#[derive(Debug, Clone)]
pub struct Video {
    /// Absolute path of the source file (never part of a key).
    pub path: PathBuf,
    /// Path relative to the manifest folder when below it, for display and records.
    pub rel: PathBuf,
    /// File stem, as `{stem}`.
    pub stem: OsString,
    /// Name of its folder under `output/` (the stem, disambiguated when two collide).
    pub folder: OsString,
    /// blake3 of the file's content.
    pub hash: String,
}

/// What a kind may look at when it adds to its cache key.
pub struct KeyEnv<'a> {
    pub base_dir: &'a Path,
    /// The manifest's output folder (outputs land in `<output_root>/<folder>/<stage>/`).
    /// A kind whose output depends on it (relative links) must key what it uses.
    pub output_root: &'a Path,
    pub video: Option<&'a Video>,
    pub hasher: &'a FileHasher,
}

/// What a kind adds to its fingerprint beyond params, the video and upstream outputs:
/// extra input files (by content hash) and tool or model versions.
#[derive(Debug, Clone, Default)]
pub struct KeyExtras {
    pub inputs: BTreeMap<String, String>,
    pub tools: BTreeMap<String, String>,
}

/// How an upstream output was made: for provenance records (e.g. a knowledge file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Provenance {
    pub kind: String,
    /// Its cache key.
    pub key: String,
    /// Tool and model versions from its fingerprint.
    pub tools: BTreeMap<String, String>,
}

/// A per-video upstream of a batch job.
#[derive(Debug, Clone)]
pub struct BatchItem {
    pub video: Video,
    /// Upstream stage id -> its outputs for this video (a private staged copy, as in
    /// [`JobCtx::upstream`]).
    pub upstream: BTreeMap<String, PathBuf>,
}

/// Everything one job may use while it runs.
pub struct JobCtx<'a> {
    pub stage_id: &'a str,
    /// Checked, defaulted params.
    pub params: &'a Value,
    /// The manifest's folder: relative paths in params resolve against it.
    pub base_dir: &'a Path,
    /// The manifest's output folder; this job's outputs end up in
    /// `<output_root>/<video folder>/<stage id>/` (batch: `<output_root>/<stage id>/`).
    pub output_root: &'a Path,
    /// An empty private folder: the job writes its outputs here, and only here.
    pub out_dir: &'a Path,
    pub video: Option<&'a Video>,
    /// Upstream stage id -> its outputs (per-video jobs): a private, read-only staged
    /// copy of the upstream's cache entry, not the shared output folder.
    pub upstream: &'a BTreeMap<String, PathBuf>,
    /// Upstream stage id -> how its output was made (same video, or batch to batch).
    pub provenance: &'a BTreeMap<String, Provenance>,
    /// Per-video upstreams (batch jobs).
    pub batch: &'a [BatchItem],
    /// For a kind that is [`StageKind::incremental`]: a private, read-only staged copy of
    /// this stage's last output for the same video (or batch), when the cache still
    /// holds it. A head start only: the job must give what a run without it would give
    /// (for what its consumers read), since the key does not name it.
    pub previous: Option<&'a Path>,
    /// Threads the job may use inside itself (the CPU pool shares the cores).
    pub threads: usize,
    pub cancel: &'a AtomicBool,
    /// Present on the GPU lane only.
    pub resources: Option<&'a mut Resources>,
    /// Compute on the CPU: set for a GPU kind the manifest put on `lane: cpu`, and for
    /// the one retry after a GPU out-of-memory error. A GPU kind must honour it.
    pub force_cpu: bool,
    pub events: &'a EventSink,
    /// The machine's core budget (see `cores`), when the engine runs the job. A
    /// GPU-lane job whose model computes on the CPU tops up to its `threads` with
    /// [`Cores::top_up`] before it computes.
    pub cores: Option<&'a Cores>,
    /// Cores this job already holds.
    pub held_cores: usize,
}

impl JobCtx<'_> {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Why a job failed, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct StageError {
    pub message: String,
    pub hint: Option<String>,
    /// Worth another attempt (a crash, a timeout), or not (bad input, missing tool).
    pub retryable: bool,
    pub cancelled: bool,
    /// The GPU ran out of memory: the engine retries the job once on the CPU
    /// (`JobCtx::force_cpu`). The stage should drop its model from `Resources` first.
    pub out_of_memory: bool,
    /// The video itself is the problem (unreadable, empty, corrupt, unsupported): it
    /// fails that video only, and never counts toward the error-rate stop or a circuit
    /// breaker, which are there to catch a broken machine or setup.
    pub bad_input: bool,
}

impl StageError {
    /// A failure that another attempt could fix.
    pub fn retryable(message: impl Into<String>) -> Self {
        StageError {
            message: message.into(),
            hint: None,
            retryable: true,
            cancelled: false,
            out_of_memory: false,
            bad_input: false,
        }
    }

    /// A failure that would fail again the same way.
    pub fn fatal(message: impl Into<String>) -> Self {
        StageError {
            retryable: false,
            ..Self::retryable(message)
        }
    }

    pub fn cancelled() -> Self {
        StageError {
            cancelled: true,
            ..Self::fatal("cancelled")
        }
    }

    /// The video cannot be used (see `bad_input`); never retried.
    pub fn bad_input(message: impl Into<String>) -> Self {
        StageError {
            bad_input: true,
            ..Self::fatal(message)
        }
    }

    /// The GPU ran out of memory (see `out_of_memory`).
    pub fn gpu_out_of_memory(message: impl Into<String>) -> Self {
        StageError {
            out_of_memory: true,
            ..Self::fatal(message)
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// One line of `vsum doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: CheckStatus::Warn,
            fix: Some(fix.into()),
            ..Check::ok(name, detail)
        }
    }

    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: CheckStatus::Fail,
            fix: Some(fix.into()),
            ..Check::ok(name, detail)
        }
    }
}

/// A stage kind. See the module doc.
pub trait StageKind: Send + Sync {
    /// The name used in `uses:` (e.g. `video.scenes`).
    fn name(&self) -> &'static str;
    /// Bump when the kind's output for the same inputs changes: it busts its cache.
    fn version(&self) -> u32;
    /// One line for `vsum stages`.
    fn summary(&self) -> &'static str;
    /// The lane a stage of this kind runs on unless the manifest says otherwise.
    fn default_lane(&self) -> Lane {
        Lane::Cpu
    }
    fn params_doc(&self) -> Vec<ParamDoc>;
    /// Checks params and returns them with defaults filled in (this is what is keyed).
    fn check(&self, params: &Value, env: &CheckEnv) -> Result<Value, Vec<ParamError>>;
    /// Extra inputs and tool versions that join the key.
    fn key_extras(&self, _params: &Value, _env: &KeyEnv) -> Result<KeyExtras, StageError> {
        Ok(KeyExtras::default())
    }
    /// Jobs on the GPU lane with the same group run back to back (e.g. one model).
    fn resource_group(&self, _params: &Value) -> Option<String> {
        None
    }
    /// Whether a job gets its stage's last output as [`JobCtx::previous`] (e.g. a search
    /// index that adds the new videos to the one it made before).
    fn incremental(&self) -> bool {
        false
    }
    fn run(&self, ctx: &mut JobCtx) -> Result<(), StageError>;
    /// What `vsum doctor` should check for a stage with these params (libraries,
    /// models, programs), each with a fix.
    fn doctor(&self, _params: &Value, _base_dir: &Path) -> Vec<Check> {
        Vec::new()
    }
}

/// The stage kinds a binary knows, by name.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn StageKind>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, kind: impl StageKind + 'static) -> &mut Self {
        self.kinds.insert(kind.name(), Arc::new(kind));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn StageKind>> {
        self.kinds.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn StageKind>> {
        self.kinds.values()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}
