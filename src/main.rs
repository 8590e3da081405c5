//! `vsum`: the command line. Parses arguments, loads the manifest and config, wires
//! reporters to the engine's events, and maps results to exit codes. All the work is
//! in the `vsum-engine` and `vsum-stages` crates.

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

fn main() -> ExitCode {
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
            json,
            progress,
            common,
        } => {
            let m = load_manifest(&manifest, &registry)?;
            let mut flags = serde_json::Map::new();
            if let Some(j) = jobs {
                flags.insert("cpu_threads".into(), j.into());
            }
            let cfg = load_config(&m, &common, flags)?;
            let store = open_store(&m, &cfg, LockMode::Shared)?;
            let events = EventSink::new();
            report::attach(&events, progress);
            let run_id = run::new_run_id();
            if !dry_run {
                report::attach_log(&events, &run::log_path(&store, &run_id));
            }
            let cancel = install_ctrlc();
            let opts = RunOptions {
                only,
                force,
                videos,
                dry_run,
                run_id: Some(run_id),
            };
            let summary = run::run(&m, &registry, &cfg, &store, &opts, events, &cancel)
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
        Cmd::Models { command } => Ok(models_cmd::run(command)?),
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
    let (m, store) = match (&manifest, &common.cache_dir) {
        (Some(path), _) => {
            let m = load_manifest(path, registry)?;
            let cfg = load_config(&m, common, Default::default())?;
            let store = open_store(&m, &cfg, mode)?;
            (Some((m, cfg)), store)
        }
        (None, Some(dir)) => {
            let store =
                Store::open(dir, mode).map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
            (None, store)
        }
        (None, None) => {
            return Err(Fail(
                exit::USAGE,
                "error: which cache? pass -m MANIFEST (its cache is beside it) or --cache-dir DIR"
                    .into(),
            ));
        }
    };
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
