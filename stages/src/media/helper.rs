//! The media stages run in a helper process, `vsum-media`, so that `vsum` itself does
//! not link FFmpeg.
//!
//! FFmpeg's libraries pull in about 136 shared libraries, and loading them costs every
//! `vsum` command 30+ ms before it does anything (`vsum --version`, `vsum cache stats`, a
//! cached rerun). So the `vsum` binary registers each media kind as a [`Remote`]: params,
//! docs and checks are the kind's own (plain Rust), and only a job that runs starts the
//! helper binary, which sits beside `vsum`, links FFmpeg and runs the real kind.
//!
//! - **A job** is one helper process: the request (params, paths, the video) goes in as
//!   JSON on stdin; warnings, then the result or the error, come back as tagged JSON
//!   lines on stderr. The helper runs in its own process group, killed on cancel like a
//!   command stage's, and dies with `vsum` (a parent-death signal), so a killed run
//!   leaves no decoder behind. A decoder that crashes on a malformed file kills one helper, and
//!   the job reports it with the helper's last words; the run goes on.
//! - **Keys** need the FFmpeg library versions without starting the helper on every run:
//!   the helper's answer to `vsum-media versions` is kept in the user's cache folder,
//!   valid while the helper binary and each FFmpeg library file it loaded are the same
//!   files (size, mtime, inode). An upgraded FFmpeg is seen and asked again.
//! - **A stale helper** (one built from other sources than this `vsum`, e.g. after a
//!   `cargo run` that rebuilt only `vsum`) is refused with what to run: both binaries
//!   carry a hash of the sources they were built from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vsum_engine::contract::TypedStage;
use vsum_engine::cores::Cores;
use vsum_engine::events::{Event, EventSink};
use vsum_engine::stage::{
    Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, Lane, ParamDoc, ParamError, Provenance, Registry,
    StageError, StageKind, Video,
};

use crate::process::{ProcessGroup, StderrTail, Stop, how_it_ended, wait_for};

/// A hash of the sources both binaries were built from (see `build.rs`).
const SOURCES: &str = env!("VSUM_SOURCES_ID");
/// The helper's file name, beside `vsum`.
pub const HELPER_NAME: &str = "vsum-media";
/// Marks a protocol line on the helper's stderr (anything else is plain text).
const TAG: &str = "\u{1e}vsum-media ";

/// Registers every media kind as a [`Remote`] run by `helper`.
pub fn register_remote(reg: &mut Registry, helper: &Arc<MediaHelper>) {
    struct ByHelper<'a>(&'a mut Registry, &'a Arc<MediaHelper>);
    impl super::KindVisitor for ByHelper<'_> {
        fn kind<K: TypedStage>(&mut self, kind: K) {
            self.0.register(Remote::new(kind, self.1));
        }
    }
    super::media_kinds(&mut ByHelper(reg, helper));
}

/// A media kind whose jobs run in the helper. Everything but `run`, `key_extras` and
/// `doctor` is the kind's own; those three never touch FFmpeg in this process.
pub struct Remote<K> {
    kind: K,
    helper: Arc<MediaHelper>,
}

impl<K: TypedStage> Remote<K> {
    pub fn new(kind: K, helper: &Arc<MediaHelper>) -> Self {
        Remote {
            kind,
            helper: helper.clone(),
        }
    }
}

impl<K: TypedStage> StageKind for Remote<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn version(&self) -> u32 {
        K::VERSION
    }
    fn summary(&self) -> &'static str {
        K::SUMMARY
    }
    fn default_lane(&self) -> Lane {
        TypedStage::default_lane(&self.kind)
    }
    fn params_doc(&self) -> Vec<ParamDoc> {
        StageKind::params_doc(&self.kind)
    }
    fn check(&self, params: &Value, env: &CheckEnv) -> Result<Value, Vec<ParamError>> {
        StageKind::check(&self.kind, params, env)
    }
    /// The same extras as the kind run in-process: the FFmpeg versions the helper runs
    /// with, so a key does not depend on where the kind runs.
    fn key_extras(&self, _params: &Value, _env: &KeyEnv) -> Result<KeyExtras, StageError> {
        Ok(KeyExtras {
            tools: self.helper.versions()?.tools.clone(),
            ..KeyExtras::default()
        })
    }
    fn resource_group(&self, params: &Value) -> Option<String> {
        StageKind::resource_group(&self.kind, params)
    }
    fn incremental(&self) -> bool {
        K::INCREMENTAL
    }
    fn run(&self, ctx: &mut JobCtx) -> Result<(), StageError> {
        self.helper.run(K::NAME, ctx)
    }
    fn doctor(&self, _params: &Value, _base_dir: &Path) -> Vec<Check> {
        match self.helper.versions() {
            Ok(v) => vec![super::doctor_line(&v.tools)],
            Err(e) => vec![Check::fail(
                "media helper",
                e.message.clone(),
                e.hint.clone().unwrap_or_default(),
            )],
        }
    }
}

/// The helper binary as `vsum` sees it: where it is, and what it answered to
/// `versions` (asked once per process at most).
pub struct MediaHelper {
    path: PathBuf,
    versions: OnceLock<Result<Versions, StageError>>,
}

impl std::fmt::Debug for MediaHelper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaHelper")
            .field("path", &self.path)
            .finish()
    }
}

/// What the helper answers to `vsum-media versions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    /// See [`SOURCES`].
    pub sources: String,
    /// The FFmpeg library versions (they join the media stages' keys).
    pub tools: BTreeMap<String, String>,
    /// The FFmpeg library files the helper loaded: the remembered answer is good while
    /// they are the same files.
    pub libs: Vec<FileId>,
}

/// A file as it is now: a different size, mtime or inode means another file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    #[serde(with = "os_str")]
    pub path: OsString,
    pub len: u64,
    pub mtime_ns: i128,
    pub ino: u64,
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            path: path.as_os_str().to_owned(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ino: m.ino(),
        })
    }

    fn unchanged(&self) -> bool {
        FileId::of(Path::new(&self.path)).is_ok_and(|now| now == *self)
    }
}

/// The helper's answer as remembered in the user's cache folder.
#[derive(Serialize, Deserialize)]
struct Remembered {
    helper: FileId,
    versions: Versions,
}

impl MediaHelper {
    /// The helper named by `VSUM_MEDIA_HELPER`, else the one beside this executable.
    pub fn beside_current_exe() -> MediaHelper {
        let path = std::env::var_os("VSUM_MEDIA_HELPER")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(|d| d.join(HELPER_NAME)))
                    .unwrap_or_else(|| PathBuf::from(HELPER_NAME))
            });
        MediaHelper::at(path)
    }

    pub fn at(path: PathBuf) -> MediaHelper {
        MediaHelper {
            path,
            versions: OnceLock::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn missing(&self, why: impl std::fmt::Display) -> StageError {
        StageError::fatal(format!(
            "the media helper {} cannot be used: {why}",
            self.path.display()
        ))
        .hint(format!(
            "build it beside vsum: `cargo build --release` builds both `vsum` and `{HELPER_NAME}` \
             (`cargo run` builds only `vsum`); or point VSUM_MEDIA_HELPER at it"
        ))
    }

    /// The helper's versions: remembered, or asked and then remembered.
    pub fn versions(&self) -> Result<&Versions, StageError> {
        self.versions
            .get_or_init(|| self.load_versions())
            .as_ref()
            .map_err(Clone::clone)
    }

    fn load_versions(&self) -> Result<Versions, StageError> {
        let helper = FileId::of(&self.path).map_err(|e| self.missing(e))?;
        let memo = memo_path(&self.path);
        let remembered = memo
            .as_ref()
            .and_then(|m| std::fs::read(m).ok())
            .and_then(|b| serde_json::from_slice::<Remembered>(&b).ok())
            .filter(|r| r.helper == helper && r.versions.libs.iter().all(FileId::unchanged));
        let versions = match remembered {
            Some(r) => r.versions,
            None => {
                let v = self.ask_versions()?;
                if let Some(m) = &memo {
                    remember(
                        m,
                        &Remembered {
                            helper,
                            versions: v.clone(),
                        },
                    );
                }
                v
            }
        };
        if versions.sources != SOURCES {
            return Err(self.missing(format!(
                "it was built from other sources than this vsum (helper {}, vsum {SOURCES})",
                versions.sources
            )));
        }
        Ok(versions)
    }

    fn ask_versions(&self) -> Result<Versions, StageError> {
        let out = Command::new(&self.path)
            .arg("versions")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.missing(e))?;
        if !out.status.success() {
            return Err(self.missing(format!(
                "`{HELPER_NAME} versions` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| self.missing(format!("`{HELPER_NAME} versions` said something else: {e}")))
    }

    /// Runs one job of `kind` in a new helper process.
    fn run(&self, kind: &str, ctx: &mut JobCtx) -> Result<(), StageError> {
        self.versions()?;
        let request = Request::of(kind, ctx);
        let mut cmd = Command::new(&self.path);
        cmd.arg("run")
            .env("VSUM_MEDIA_PARENT", std::process::id().to_string())
            .current_dir(ctx.base_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| self.missing(e))?;
        let mut group = ProcessGroup::of(&child);
        let body = serde_json::to_vec(&request).expect("a request serializes");
        // A helper that dies before reading its request shows up below, as its exit.
        let _ = child.stdin.take().expect("piped").write_all(&body);
        let answer: std::cell::Cell<Option<Result<(), StageError>>> = Default::default();
        let events = ctx.events.clone();
        let tail = StderrTail::with_hook(child.stderr.take().expect("piped"), |line| {
            let Some(msg) = line.strip_prefix(TAG) else {
                return false;
            };
            match serde_json::from_str::<Reply>(msg) {
                Ok(Reply::Warning(message)) => events.emit(Event::Warning { message }),
                Ok(Reply::Done) => answer.set(Some(Ok(()))),
                Ok(Reply::Failed(e)) => answer.set(Some(Err(e))),
                Err(_) => return false,
            }
            true
        });
        let waited = wait_for(&mut child, tail, None, ctx);
        group.kill();
        let (status, tail) = match waited {
            Ok(done) => done,
            Err(stop) => {
                let _ = child.wait();
                return Err(match stop {
                    Stop::Cancelled => StageError::cancelled(),
                    Stop::TimedOut => unreachable!("no deadline"),
                    Stop::Failed(e) => {
                        StageError::retryable(format!("cannot wait for the media helper: {e}"))
                    }
                });
            }
        };
        let last_words = tail.finish();
        match answer.take() {
            Some(result) => result,
            None => {
                let how = how_it_ended(status);
                let said = if last_words.trim().is_empty() {
                    " without a word".to_string()
                } else {
                    format!("; its last words:\n{last_words}")
                };
                Err(StageError::retryable(format!(
                    "the media helper running {kind} {how} before it finished{said}"
                ))
                .hint(
                    "a crash in FFmpeg on this video? check it with `ffmpeg -v error -i VIDEO -f null -`",
                ))
            }
        }
    }
}

/// Where the helper's answer is remembered: `$XDG_CACHE_HOME/vsum` (else
/// `~/.cache/vsum`), one file per helper path. `None`: not remembered, asked each run.
fn memo_path(helper: &Path) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    let abs = std::fs::canonicalize(helper).ok()?;
    let id = blake3::hash(abs.as_os_str().as_encoded_bytes()).to_hex();
    Some(
        base.join("vsum")
            .join(format!("media-helper-{}.json", &id[..16])),
    )
}

/// Writes the memo under a temporary name and renames it: a reader sees the old file
/// or the new one, never half of one. A failure only means asking again next time.
fn remember(path: &Path, r: &Remembered) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    let body = serde_json::to_vec_pretty(r).expect("a memo serializes");
    if tmp.write_all(&body).is_ok() {
        let _ = tmp.persist(path);
    }
}

/// One job, as the helper gets it.
#[derive(Serialize, Deserialize)]
struct Request {
    kind: String,
    stage_id: String,
    params: Value,
    #[serde(with = "os_str")]
    base_dir: OsString,
    #[serde(with = "os_str")]
    output_root: OsString,
    #[serde(with = "os_str")]
    out_dir: OsString,
    video: Option<WireVideo>,
    #[serde(with = "os_str::map")]
    upstream: BTreeMap<String, OsString>,
    provenance: BTreeMap<String, Provenance>,
    threads: usize,
    /// The machine's core budget, for a kind that sizes its decoder by it.
    cores: Option<usize>,
    held_cores: usize,
    force_cpu: bool,
}

#[derive(Serialize, Deserialize)]
struct WireVideo {
    #[serde(with = "os_str")]
    path: OsString,
    #[serde(with = "os_str")]
    rel: OsString,
    #[serde(with = "os_str")]
    stem: OsString,
    #[serde(with = "os_str")]
    folder: OsString,
    hash: String,
}

impl Request {
    fn of(kind: &str, ctx: &JobCtx) -> Request {
        Request {
            kind: kind.to_string(),
            stage_id: ctx.stage_id.to_string(),
            params: ctx.params.clone(),
            base_dir: ctx.base_dir.into(),
            output_root: ctx.output_root.into(),
            out_dir: ctx.out_dir.into(),
            video: ctx.video.map(|v| WireVideo {
                path: v.path.clone().into(),
                rel: v.rel.clone().into(),
                stem: v.stem.clone(),
                folder: v.folder.clone(),
                hash: v.hash.clone(),
            }),
            upstream: ctx
                .upstream
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect(),
            provenance: ctx.provenance.clone(),
            threads: ctx.threads,
            cores: ctx.cores.map(Cores::total),
            held_cores: ctx.held_cores,
            force_cpu: ctx.force_cpu,
        }
    }
}

/// One protocol line from the helper.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    Warning(String),
    Done,
    Failed(StageError),
}

fn say(reply: &Reply) {
    let line = serde_json::to_string(reply).expect("a reply serializes");
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{TAG}{line}");
    let _ = err.flush();
}

/// The helper binary's `main`: `vsum-media versions` or `vsum-media run` (a request
/// on stdin). Not for people: `vsum` starts it.
pub fn helper_main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    match arg.as_str() {
        "versions" => {
            let v = Versions {
                sources: SOURCES.to_string(),
                tools: super::ffmpeg_versions(),
                libs: loaded_ffmpeg_libs(),
            };
            println!("{}", serde_json::to_string(&v).expect("versions serialize"));
            ExitCode::SUCCESS
        }
        "run" => {
            // A helper outlives nothing: when vsum dies (kill -9), so does its job.
            let _ = rustix::process::set_parent_process_death_signal(Some(
                rustix::process::Signal::KILL,
            ));
            let parent = std::env::var("VSUM_MEDIA_PARENT").ok();
            if parent.is_some_and(|p| {
                p != rustix::process::getppid()
                    .map_or(0, |p| p.as_raw_nonzero().get())
                    .to_string()
            }) {
                // The parent died before the line above took effect.
                return ExitCode::FAILURE;
            }
            let result = serve_one();
            let ok = result.is_ok();
            say(&match result {
                Ok(()) => Reply::Done,
                Err(e) => Reply::Failed(e),
            });
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        _ => {
            eprintln!(
                "{HELPER_NAME}: the media stages' helper; vsum starts it (`{HELPER_NAME} versions` prints what it runs with)"
            );
            ExitCode::from(2)
        }
    }
}

/// The FFmpeg library files this process has mapped (from `/proc/self/maps`).
fn loaded_ffmpeg_libs() -> Vec<FileId> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut paths: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or("");
            [
                "libavcodec",
                "libavformat",
                "libavutil",
                "libswscale",
                "libswresample",
                "libavfilter",
            ]
            .iter()
            .any(|l| name.starts_with(l))
        })
        .collect();
    paths.sort_unstable();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|p| FileId::of(Path::new(p)).ok())
        .collect()
}

fn serve_one() -> Result<(), StageError> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .map_err(|e| StageError::retryable(format!("the media helper cannot read its job: {e}")))?;
    let r: Request = serde_json::from_slice(&body).map_err(|e| {
        StageError::fatal(format!("the media helper does not understand its job: {e}"))
    })?;
    // Fault injection for the tests: a helper that dies mid-job, as a decoder crash would.
    if std::env::var_os("VSUM_FAULT").is_some_and(|v| v == "media_helper_abort") {
        eprintln!("{HELPER_NAME}: aborting (VSUM_FAULT=media_helper_abort)");
        std::process::abort();
    }
    let mut registry = Registry::new();
    super::register_media(&mut registry);
    let kind = registry.get(&r.kind).ok_or_else(|| {
        StageError::fatal(format!("the media helper has no stage kind '{}'", r.kind))
    })?;
    let video = r.video.map(|v| Video {
        path: v.path.into(),
        rel: v.rel.into(),
        stem: v.stem,
        folder: v.folder,
        hash: v.hash,
    });
    let upstream: BTreeMap<String, PathBuf> =
        r.upstream.into_iter().map(|(k, v)| (k, v.into())).collect();
    let (base_dir, output_root, out_dir) = (
        PathBuf::from(r.base_dir),
        PathBuf::from(r.output_root),
        PathBuf::from(r.out_dir),
    );
    let events = EventSink::new();
    events.subscribe(|e| {
        if let Event::Warning { message } = e {
            say(&Reply::Warning(message.clone()));
        }
    });
    let cores = r.cores.map(Cores::new);
    // Never set: a cancelled job's helper is killed instead.
    let cancel = AtomicBool::new(false);
    let mut ctx = JobCtx {
        stage_id: &r.stage_id,
        params: &r.params,
        base_dir: &base_dir,
        output_root: &output_root,
        out_dir: &out_dir,
        video: video.as_ref(),
        upstream: &upstream,
        provenance: &r.provenance,
        batch: &[],
        previous: None,
        threads: r.threads,
        cancel: &cancel,
        resources: None,
        force_cpu: r.force_cpu,
        events: &events,
        cores: cores.as_ref(),
        held_cores: r.held_cores,
    };
    kind.run(&mut ctx)
}

/// File names in JSON: a string when they are UTF-8 (nearly always, and readable), else
/// their bytes, so that no path is ever refused or changed on the way.
mod os_str {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Text(String),
        Bytes(Vec<u8>),
    }

    fn to_wire(s: &OsString) -> Wire {
        match s.to_str() {
            Some(t) => Wire::Text(t.to_string()),
            None => Wire::Bytes(s.clone().into_vec()),
        }
    }

    fn from_wire(w: Wire) -> OsString {
        match w {
            Wire::Text(t) => t.into(),
            Wire::Bytes(b) => OsString::from_vec(b),
        }
    }

    pub fn serialize<S: Serializer>(s: &OsString, ser: S) -> Result<S::Ok, S::Error> {
        to_wire(s).serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<OsString, D::Error> {
        Wire::deserialize(de).map(from_wire)
    }

    pub mod map {
        use std::collections::BTreeMap;

        use super::*;

        pub fn serialize<S: Serializer>(
            m: &BTreeMap<String, OsString>,
            ser: S,
        ) -> Result<S::Ok, S::Error> {
            let wire: BTreeMap<&String, Wire> = m.iter().map(|(k, v)| (k, to_wire(v))).collect();
            wire.serialize(ser)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            de: D,
        ) -> Result<BTreeMap<String, OsString>, D::Error> {
            let wire = BTreeMap::<String, Wire>::deserialize(de)?;
            Ok(wire.into_iter().map(|(k, v)| (k, from_wire(v))).collect())
        }
    }
}
