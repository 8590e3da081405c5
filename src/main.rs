//! `vsum`: the command line. Parses arguments, loads the manifest and config, wires
//! reporters to the engine's events, and maps results to exit codes. All the work is
//! in the `vsum-engine` and `vsum-stages` crates.

mod doctor;
mod launch;
mod models_cmd;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use vsum_engine::config::{self, Config};
use vsum_engine::events::{EventSink, Outcome};
use vsum_engine::fsutil::{human_bytes, parse_age, parse_size};
use vsum_engine::graph::{self, DagFormat};
use vsum_engine::manifest::{self, Manifest, ManifestError};
use vsum_engine::run::{self, RunOptions};
use vsum_engine::stage::Registry;
use vsum_engine::store::{LockMode, Store};

use report::Progress;

/// Exit codes (documented in README and doc/manifest.md).
mod exit {
    pub const OK: u8 = 0;
    /// Some video, input or job failed; the rest of the batch completed.
    pub const FAILED: u8 = 1;
    /// Bad manifest, config or usage.
    pub const USAGE: u8 = 2;
    /// Interrupted (Ctrl-C).
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "vsum",
    version,
    about = "Turns libraries of videos into searchable knowledge, locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Config file (default: the first config/default.yaml above the manifest; env VSUM_CONFIG)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Cache folder (default: .vsum beside the manifest; env VSUM_CACHE_DIR)
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    /// Alert thresholds (default: the first config/alerts.yaml above the manifest; env VSUM_ALERTS)
    #[arg(long, global = true)]
    alerts: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline over its videos; finished jobs come from the cache
    Run {
        /// The pipeline manifest (YAML)
        manifest: PathBuf,
        /// Threads of the CPU lane (default: config cpu_threads, 0 = one per core)
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Run only this stage and what it needs (repeatable)
        #[arg(long)]
        only: Vec<String>,
        /// Ignore the cache for this stage (repeatable)
        #[arg(long)]
        force: Vec<String>,
        /// Only videos whose path (relative to the manifest) or file name matches this glob
        #[arg(long)]
        videos: Option<String>,
        /// Show what would run and why, run nothing
        #[arg(long)]
        dry_run: bool,
        /// Run only the videos that failed in the last run
        #[arg(long)]
        retry_failed: bool,
        /// Start without asking (a non-terminal never asks)
        #[arg(long, short = 'y')]
        yes: bool,
        /// Print the run summary as JSON on stdout
        #[arg(long)]
        json: bool,
        /// How to show progress on stderr
        #[arg(long, value_enum, default_value = "auto")]
        progress: Progress,
        #[command(flatten)]
        common: Common,
    },
    /// Show what a run would do: each job cached or to run, and why
    Plan {
        manifest: PathBuf,
        /// Only this stage and what it needs (repeatable)
        #[arg(long)]
        only: Vec<String>,
        /// Only videos matching this glob
        #[arg(long)]
        videos: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Print the stage graph
    Dag {
        manifest: PathBuf,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: DagArg,
    },
    /// Check a manifest and report every problem at once
    Validate {
        manifest: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// List the built-in stage kinds and their parameters
    Stages {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check that this machine can run the pipeline, and how to fix what it cannot
    Doctor {
        /// The pipeline manifest (default: pipelines/summarize.yaml when present)
        manifest: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Past runs (summaries under the cache)
    Runs {
        #[command(subcommand)]
        command: RunsCmd,
        /// Manifest whose cache to read (env VSUM_MANIFEST)
        #[arg(long, short = 'm', global = true, env = "VSUM_MANIFEST")]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Inspect and maintain the cache
    Cache {
        /// Manifest whose cache to use (env VSUM_MANIFEST)
        #[arg(long, short = 'm', global = true, env = "VSUM_MANIFEST")]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: CacheCmd,
    },
    /// Install, list and verify the models stages use
    Models {
        #[command(subcommand)]
        command: models_cmd::ModelsCmd,
    },
}

#[derive(Subcommand)]
enum RunsCmd {
    /// List past runs, newest last
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one run's summary (`last` for the newest)
    Show {
        id: String,
        /// Print the full JSON summary
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DagArg {
    Dot,
    Mermaid,
    Text,
}

#[derive(Subcommand)]
enum CacheCmd {
    /// List cache entries
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one entry (key or unique key prefix) with its fingerprint
    Show { key: String },
    /// Entries, objects and sizes
    Stats {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Explain whether a video's stage is cached, and what changed if not
    Why {
        /// Video path relative to the manifest, or a glob / file name
        video: String,
        /// Stage id
        stage: String,
    },
    /// Re-hash every object; remove corrupt objects and the entries that use them
    Verify {
        /// Only report, remove nothing
        #[arg(long)]
        report_only: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove old or excess entries and unreferenced objects
    Gc {
        /// Keep at most this much output (e.g. 50G, 500M)
        #[arg(long)]
        max_size: Option<String>,
        /// Remove entries not used for this long (e.g. 30d, 12h)
        #[arg(long)]
        older_than: Option<String>,
    },
}

/// An error that maps to an exit code.
struct Fail(u8, String);

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Fail(exit::USAGE, format!("{e:#}"))
    }
}

/// `vsum stages | head -1`: when the reader goes away, printing fails with a broken
/// pipe. Rust ignores SIGPIPE and `println!` panics on that error; like other command
/// line tools, vsum then just stops, quietly (exit 0: the reader chose to stop).
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload_as_str().unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(exit::OK as i32);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, msg)) => {
            eprintln!("{msg}");
            ExitCode::from(code)
        }
    }
}

fn load_manifest(path: &Path, registry: &Registry) -> Result<Manifest, Fail> {
    manifest::load(path, registry).map_err(|e| match e {
        ManifestError::Invalid(d) => Fail(exit::USAGE, d.to_string()),
        other => Fail(exit::USAGE, format!("error: {other}")),
    })
}

fn load_config(
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

fn load_alerts(m: &Manifest, common: &Common) -> Result<vsum_engine::alerts::Alerts, Fail> {
    let file = vsum_engine::alerts::find_file(common.alerts.as_deref(), &m.base_dir);
    vsum_engine::alerts::load(file.as_deref()).map_err(|d| Fail(exit::USAGE, d.to_string()))
}

/// Videos (relative paths) with a failed, skipped or cancelled job in the last run.
fn last_failures(store: &Store) -> Result<Option<std::collections::BTreeSet<PathBuf>>, Fail> {
    let Some(last) = run::past_runs(store).pop() else {
        return Err(Fail(
            exit::USAGE,
            "error: no previous run to retry; run without --retry-failed".into(),
        ));
    };
    let text = std::fs::read_to_string(&last).map_err(|e| {
        Fail(
            exit::USAGE,
            format!("error: cannot read {}: {e}", last.display()),
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Fail(
            exit::USAGE,
            format!("error: {} is not a run summary: {e}", last.display()),
        )
    })?;
    let set: std::collections::BTreeSet<PathBuf> = v["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| {
            matches!(
                j["outcome"].as_str(),
                Some("failed" | "skipped" | "cancelled")
            )
        })
        .filter_map(|j| j["video"].as_str().map(PathBuf::from))
        .collect();
    Ok((!set.is_empty()).then_some(set))
}

/// The cache a `cache` or `runs` command works on: beside the manifest (`-m`), or the
/// folder named by `--cache-dir`. Returns the manifest and config when there is one.
fn open_cache(
    registry: &Registry,
    manifest: Option<&Path>,
    common: &Common,
    mode: LockMode,
) -> Result<(Option<(Manifest, Config)>, Store), Fail> {
    match (manifest, &common.cache_dir) {
        (Some(path), _) => {
            let m = load_manifest(path, registry)?;
            let cfg = load_config(&m, common, Default::default())?;
            let store = open_store(&m, &cfg, mode)?;
            Ok((Some((m, cfg)), store))
        }
        (None, Some(dir)) => {
            let store =
                Store::open(dir, mode).map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
            Ok((None, store))
        }
        (None, None) => Err(Fail(
            exit::USAGE,
            "error: which cache? pass -m MANIFEST (its cache is beside it) or --cache-dir DIR"
                .into(),
        )),
    }
}

fn open_store(m: &Manifest, cfg: &Config, mode: LockMode) -> Result<Store, Fail> {
    Store::open(&cfg.cache_path(&m.base_dir), mode)
        .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))
}

fn install_ctrlc() -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if c.swap(true, Ordering::SeqCst) {
            // Second Ctrl-C: leave now. Nothing half-written is ever trusted.
            std::process::exit(exit::INTERRUPTED as i32);
        }
        eprintln!("\nstopping: letting in-flight jobs stop (Ctrl-C again to quit now)");
    });
    cancel
}

fn dispatch(cli: Cli) -> Result<u8, Fail> {
    let registry = vsum_stages::registry();
    match cli.command {
        Cmd::Run {
            manifest,
            jobs,
            only,
            force,
            videos,
            dry_run,
            retry_failed,
            yes,
            json,
            progress,
            common,
        } => {
            let m = load_manifest(&manifest, &registry)?;
            let alerts = load_alerts(&m, &common)?;
            let mut flags = serde_json::Map::new();
            if let Some(j) = jobs {
                flags.insert("cpu_threads".into(), j.into());
            }
            let cfg = load_config(&m, &common, flags)?;
            let store = open_store(&m, &cfg, LockMode::Shared)?;
            let only_videos = if retry_failed {
                match last_failures(&store)? {
                    Some(v) => Some(v),
                    None => {
                        eprintln!("the last run had no failures: nothing to retry");
                        return Ok(exit::OK);
                    }
                }
            } else {
                None
            };
            // One plan: shown on the launch screen, then executed as it is.
            let run_id = run::new_run_id();
            let opts = RunOptions {
                only,
                force,
                videos,
                dry_run,
                run_id: Some(run_id.clone()),
                alerts: Some(alerts),
                only_videos,
            };
            let plan = run::plan(&m, &registry, &cfg, &store, &opts)
                .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
            if !dry_run && progress != Progress::None && !json {
                // Screen 1: what is there, what is cached, how long, where it goes.
                eprint!("{}", launch::screen(&plan.summary(), &store, cfg.threads()));
                if !yes && !launch::confirm() {
                    eprintln!("not started");
                    return Ok(exit::OK);
                }
            }
            if !dry_run {
                store.prune_runs(cfg.keep_runs.saturating_sub(1));
            }
            let events = EventSink::new();
            report::attach(&events, progress);
            if !dry_run {
                report::attach_log(&events, &run::log_path(&store, &run_id));
            }
            let cancel = install_ctrlc();
            let executor = run::LocalExecutor::new(&cfg)
                .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
            let summary = run::execute(plan, &executor, events, &cancel)
                .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary).expect("json"));
            }
            if dry_run {
                eprint!("{}", plan_table(&summary));
            } else if progress != Progress::None {
                eprint!(
                    "{}",
                    report::completion(&summary, &manifest.display().to_string())
                );
            }
            Ok(summary.exit_code() as u8)
        }
        Cmd::Plan {
            manifest,
            only,
            videos,
            json,
            common,
        } => {
            let m = load_manifest(&manifest, &registry)?;
            let cfg = load_config(&m, &common, Default::default())?;
            let store = open_store(&m, &cfg, LockMode::Shared)?;
            let opts = RunOptions {
                only,
                force: vec![],
                videos,
                dry_run: true,
                run_id: None,
                alerts: None,
                only_videos: None,
            };
            let events = EventSink::new();
            report::attach(&events, Progress::None);
            let summary = run::run(
                &m,
                &registry,
                &cfg,
                &store,
                &opts,
                events,
                &AtomicBool::new(false),
            )
            .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary).expect("json"));
            } else {
                print!("{}", plan_table(&summary));
            }
            Ok(if summary.problems.is_empty() {
                exit::OK
            } else {
                exit::FAILED
            })
        }
        Cmd::Dag { manifest, format } => {
            let m = load_manifest(&manifest, &registry)?;
            let f = match format {
                DagArg::Dot => DagFormat::Dot,
                DagArg::Mermaid => DagFormat::Mermaid,
                DagArg::Text => DagFormat::Text,
            };
            print!("{}", graph::render(&m, f));
            Ok(exit::OK)
        }
        Cmd::Validate { manifest, common } => {
            let m = load_manifest(&manifest, &registry)?;
            load_config(&m, &common, Default::default())?;
            println!(
                "{}: ok ({} stage(s): {})",
                manifest.display(),
                m.stages.len(),
                m.stages
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(exit::OK)
        }
        Cmd::Stages { json } => {
            stages(&registry, json);
            Ok(exit::OK)
        }
        Cmd::Cache {
            manifest,
            common,
            command,
        } => cache(&registry, manifest, &common, command),
        Cmd::Doctor {
            manifest,
            json,
            common,
        } => {
            let path = manifest.or_else(|| {
                let p = PathBuf::from("pipelines/summarize.yaml");
                p.is_file().then_some(p)
            });
            let loaded = path.as_ref().map(|p| {
                let m = load_manifest(p, &registry)?;
                let cfg = load_config(&m, &common, Default::default())?;
                let alerts = load_alerts(&m, &common)?;
                Ok::<_, Fail>((m, cfg, alerts))
            });
            let (ok, err) = match loaded {
                Some(Ok(x)) => (Some(x), None),
                Some(Err(Fail(_, msg))) => (None, Some(msg)),
                None => (None, None),
            };
            let alerts = ok.as_ref().map(|x| x.2.clone()).unwrap_or_default();
            let checks =
                doctor::checks(&registry, ok.as_ref().map(|(m, c, _)| (m, c)), err, &alerts);
            if json {
                println!("{}", serde_json::to_string_pretty(&checks).expect("json"));
            } else {
                print!("{}", doctor::render(&checks));
            }
            let failed = checks
                .iter()
                .any(|c| c.status == vsum_engine::stage::CheckStatus::Fail);
            Ok(if failed { exit::FAILED } else { exit::OK })
        }
        Cmd::Runs {
            command,
            manifest,
            common,
        } => runs(&registry, manifest, &common, command),
        Cmd::Models { command } => Ok(models_cmd::run(command)?),
    }
}

fn runs(
    registry: &Registry,
    manifest: Option<PathBuf>,
    common: &Common,
    cmd: RunsCmd,
) -> Result<u8, Fail> {
    let (_, store) = open_cache(registry, manifest.as_deref(), common, LockMode::Shared)?;
    let read = |p: &Path| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
    };
    let paths = run::past_runs(&store);
    match cmd {
        RunsCmd::Ls { json } => {
            let rows: Vec<serde_json::Value> = paths.iter().filter_map(|p| read(p)).collect();
            if json {
                let short: Vec<_> = rows
                    .iter()
                    .map(|r| serde_json::json!({"run_id": r["run_id"], "started": r["started"], "wall_ms": r["wall_ms"], "videos": r["videos"], "counts": r["counts"], "stopped": r["stopped"], "interrupted": r["interrupted"]}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&short).expect("json"));
            } else {
                println!(
                    "{:<22} {:>10} {:>7} {:>5} {:>6} {:>6} {:>8}",
                    "run", "started", "videos", "ran", "cached", "failed", "wall"
                );
                let now = vsum_engine::store::now_secs();
                for r in &rows {
                    let c = &r["counts"];
                    println!(
                        "{:<22} {:>10} {:>7} {:>5} {:>6} {:>6} {:>7.1}s",
                        r["run_id"].as_str().unwrap_or("?"),
                        ago(now.saturating_sub(r["started"].as_u64().unwrap_or(0))),
                        r["videos"].as_u64().unwrap_or(0),
                        c["ran"].as_u64().unwrap_or(0),
                        c["cached"].as_u64().unwrap_or(0),
                        c["failed"].as_u64().unwrap_or(0),
                        r["wall_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
                    );
                }
            }
            Ok(exit::OK)
        }
        RunsCmd::Show { id, json } => {
            let path = if id == "last" {
                paths.last().cloned()
            } else {
                paths
                    .iter()
                    .find(|p| {
                        p.file_stem()
                            .is_some_and(|s| s.to_string_lossy().starts_with(&id))
                    })
                    .cloned()
            };
            let Some(path) = path else {
                return Err(Fail(
                    exit::FAILED,
                    format!("error: no run '{id}'; see `vsum runs ls`"),
                ));
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Fail(exit::FAILED, format!("error: {e}")))?;
            if json {
                println!("{text}");
            } else {
                let summary: run::RunSummary = serde_json::from_str(&text)
                    .map_err(|e| Fail(exit::FAILED, format!("error: {e}")))?;
                print!("{}", report::completion(&summary, &summary.manifest));
            }
            Ok(exit::OK)
        }
    }
}

fn ago(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

fn plan_table(s: &run::RunSummary) -> String {
    let mut out = String::new();
    for j in &s.jobs {
        let word = match j.outcome {
            Outcome::Cached => "cached",
            Outcome::WouldRun => "run",
            Outcome::Failed => "error",
            _ => "skip",
        };
        let why = j.reason.as_deref().or(j.error.as_deref()).unwrap_or("");
        out.push_str(&format!("{word:<7} {:<40} {why}\n", j.label.describe()));
    }
    out.push_str(&format!(
        "{} job(s): {} cached, {} to run\n",
        s.counts.jobs, s.counts.cached, s.counts.would_run
    ));
    for p in &s.problems {
        out.push_str(&format!("input problem: {p}\n"));
    }
    out
}

fn stages(registry: &Registry, json: bool) {
    if json {
        let v: Vec<_> = registry
            .kinds()
            .map(|k| {
                serde_json::json!({
                    "name": k.name(), "version": k.version(), "lane": k.default_lane(),
                    "summary": k.summary(), "params": k.params_doc(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return;
    }
    for k in registry.kinds() {
        println!(
            "{} (v{}, {} lane): {}",
            k.name(),
            k.version(),
            k.default_lane(),
            k.summary()
        );
        for p in k.params_doc() {
            let d = p
                .default
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default();
            println!("    {:<12} {:<18} {}{d}", p.name, p.ty, p.doc);
        }
    }
}

fn cache(
    registry: &Registry,
    manifest: Option<PathBuf>,
    common: &Common,
    cmd: CacheCmd,
) -> Result<u8, Fail> {
    let exclusive = matches!(
        cmd,
        CacheCmd::Gc { .. }
            | CacheCmd::Verify {
                report_only: false,
                ..
            }
    );
    let mode = if exclusive {
        LockMode::Exclusive
    } else {
        LockMode::Shared
    };
    let (m, store) = open_cache(registry, manifest.as_deref(), common, mode)?;
    match cmd {
        CacheCmd::Ls { json } => {
            let mut rows = Vec::new();
            for key in store.keys("") {
                match store.read_entry(&key) {
                    Ok(e) => rows.push(serde_json::json!({
                        "key": key, "stage": e.stage, "kind": e.kind, "video": e.video,
                        "size": e.size(), "files": e.outputs.len(), "created": e.created,
                        "last_used": store.last_used(&key),
                    })),
                    Err(why) => rows.push(serde_json::json!({"key": key, "error": why})),
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows).expect("json"));
            } else {
                println!(
                    "{:<14} {:<16} {:<10} {:>10}  video",
                    "key", "stage", "kind", "size"
                );
                for r in &rows {
                    println!(
                        "{:<14} {:<16} {:<10} {:>10}  {}",
                        &r["key"].as_str().unwrap_or("")[..12],
                        r["stage"].as_str().unwrap_or("?"),
                        r["kind"].as_str().unwrap_or("?"),
                        human_bytes(r["size"].as_u64().unwrap_or(0)),
                        r["video"].as_str().unwrap_or("[batch]")
                    );
                }
                println!(
                    "{} entr{}",
                    rows.len(),
                    if rows.len() == 1 { "y" } else { "ies" }
                );
            }
            Ok(exit::OK)
        }
        CacheCmd::Show { key } => {
            let keys = store.keys(&key);
            match keys.as_slice() {
                [k] => {
                    let e = store
                        .read_entry(k)
                        .map_err(|why| Fail(exit::FAILED, format!("error: entry {k}: {why}")))?;
                    println!("{}", serde_json::to_string_pretty(&e).expect("json"));
                    Ok(exit::OK)
                }
                [] => Err(Fail(
                    exit::FAILED,
                    format!("error: no cache entry starts with '{key}'; see `vsum cache ls`"),
                )),
                many => Err(Fail(
                    exit::USAGE,
                    format!(
                        "error: '{key}' matches {} entries; give more of the key",
                        many.len()
                    ),
                )),
            }
        }
        CacheCmd::Stats { json } => {
            let s = store.stats();
            if json {
                println!("{}", serde_json::to_string_pretty(&s).expect("json"));
            } else {
                println!("cache: {}", s.root.display());
                println!("entries: {}", s.entries);
                println!("objects: {} ({})", s.objects, human_bytes(s.object_bytes));
                println!("on disk: {}", human_bytes(s.total_bytes));
                for (stage, (n, b)) in &s.by_stage {
                    println!("  {stage:<16} {n:>6} entries {:>10}", human_bytes(*b));
                }
            }
            Ok(exit::OK)
        }
        CacheCmd::Why { video, stage } => {
            let Some((m, cfg)) = m else {
                return Err(Fail(
                    exit::USAGE,
                    "error: `cache why` needs the manifest: pass -m MANIFEST".into(),
                ));
            };
            drop(store);
            let store = open_store(&m, &cfg, LockMode::Shared)?;
            let opts = RunOptions {
                only: vec![stage.clone()],
                force: vec![],
                videos: Some(video.clone()),
                dry_run: true,
                run_id: None,
                alerts: None,
                only_videos: None,
            };
            let summary = run::run(
                &m,
                registry,
                &cfg,
                &store,
                &opts,
                EventSink::new(),
                &AtomicBool::new(false),
            )
            .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
            let hits: Vec<_> = summary
                .jobs
                .iter()
                .filter(|j| j.label.stage == stage)
                .collect();
            if hits.is_empty() {
                return Err(Fail(
                    exit::FAILED,
                    format!(
                        "error: no video matches '{video}' (give its path relative to the manifest, or its file name)"
                    ),
                ));
            }
            for j in hits {
                let key = j.key.as_deref().map(|k| &k[..16]).unwrap_or("unknown");
                match j.outcome {
                    Outcome::Cached => println!("{}: cached (key {key}…)", j.label.describe()),
                    _ => println!(
                        "{}: will run (key {key}…): {}",
                        j.label.describe(),
                        j.reason.as_deref().or(j.error.as_deref()).unwrap_or("")
                    ),
                }
            }
            Ok(exit::OK)
        }
        CacheCmd::Verify { report_only, json } => {
            let r = store.verify(!report_only);
            if json {
                println!("{}", serde_json::to_string_pretty(&r).expect("json"));
            } else {
                for p in &r.problems {
                    println!("{p}");
                }
                println!(
                    "checked {} objects and {} entries: {}",
                    r.objects_checked,
                    r.entries_checked,
                    if r.clean() {
                        "clean".to_string()
                    } else if report_only {
                        format!(
                            "{} problem(s); run without --report-only to evict them",
                            r.problems.len()
                        )
                    } else {
                        format!(
                            "{} problem(s), evicted; the next run recomputes them",
                            r.problems.len()
                        )
                    }
                );
            }
            Ok(if r.clean() { exit::OK } else { exit::FAILED })
        }
        CacheCmd::Gc {
            max_size,
            older_than,
        } => {
            let cfg_limits = m
                .as_ref()
                .map(|(_, c)| (c.gc_max_size.clone(), c.gc_older_than.clone()));
            let (cfg_max, cfg_age) = cfg_limits.unwrap_or_default();
            let max_size = max_size.or(cfg_max);
            let older_than = older_than.or(cfg_age);
            let max = max_size
                .map(|s| {
                    parse_size(&s).with_context(|| format!("bad --max-size '{s}' (e.g. 50G, 500M)"))
                })
                .transpose()?;
            let age = older_than
                .map(|s| {
                    parse_age(&s).with_context(|| format!("bad --older-than '{s}' (e.g. 30d, 12h)"))
                })
                .transpose()?;
            let r = store.gc(max, age);
            println!(
                "removed {} entr{} and {} object(s), freed {}; kept {} entr{} ({})",
                r.entries_removed,
                if r.entries_removed == 1 { "y" } else { "ies" },
                r.objects_removed,
                human_bytes(r.bytes_freed),
                r.entries_kept,
                if r.entries_kept == 1 { "y" } else { "ies" },
                human_bytes(r.bytes_kept)
            );
            Ok(exit::OK)
        }
    }
}
