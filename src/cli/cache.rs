//! `vsum cache`: inspect and maintain the cache (`gc` lives in `gc.rs`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::Subcommand;
use serde_json::json;
use vsum_engine::events::{EventSink, Outcome};
use vsum_engine::fsutil::human_bytes;
use vsum_engine::run::{self, RunOptions};
use vsum_engine::stage::Registry;
use vsum_engine::store::{LockMode, Store};
use vsum_engine::time::rfc3339;

use super::common::{Common, Fail, ago, entries, exit, kinds, print_json};
use super::find::{self, Target};
use super::gc::{self, GcArgs};

#[derive(clap::Args)]
pub struct CacheArgs {
    /// Manifest whose cache to use (default: env VSUM_MANIFEST, else found from here)
    #[arg(long = "manifest", short = 'm', global = true, value_name = "MANIFEST")]
    manifest_flag: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: CacheCmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SortBy {
    /// Most recently used first
    Time,
    /// Largest first
    Size,
    /// By stage, then video
    Stage,
}

#[derive(Subcommand)]
enum CacheCmd {
    /// List cache entries
    Ls {
        /// Manifest whose cache to use (or -m)
        manifest: Option<PathBuf>,
        /// Order of the rows
        #[arg(long, value_enum, default_value = "stage")]
        sort: SortBy,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one entry (key or unique key prefix) with its fingerprint, as JSON
    Show {
        key: String,
        /// Manifest whose cache to use (or -m)
        manifest: Option<PathBuf>,
        /// Print JSON (what `show` always prints)
        #[arg(long)]
        json: bool,
    },
    /// Entries, objects and sizes
    Stats {
        /// Manifest whose cache to use (or -m)
        manifest: Option<PathBuf>,
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
        /// Manifest whose cache to use (or -m)
        manifest: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every object; remove corrupt objects and the entries that use them
    Verify {
        /// Manifest whose cache to use (or -m)
        manifest: Option<PathBuf>,
        /// Only report, remove nothing
        #[arg(long)]
        report_only: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove old or excess entries and unreferenced objects
    Gc(GcArgs),
}

/// Runs `vsum cache ...`.
pub fn cmd(args: CacheArgs, registry: &Registry) -> Result<u8, Fail> {
    // The shared cache of distributed runs needs no local cache.
    if let CacheCmd::Gc(g) = &args.command
        && g.shared.is_some()
    {
        return gc::shared(g);
    }
    let (pos, mode, need_manifest) = match &args.command {
        CacheCmd::Ls { manifest, .. }
        | CacheCmd::Show { manifest, .. }
        | CacheCmd::Stats { manifest, .. } => (manifest, LockMode::Shared, false),
        CacheCmd::Why { manifest, .. } => (manifest, LockMode::Shared, true),
        CacheCmd::Verify {
            manifest,
            report_only,
            ..
        } => (
            manifest,
            if *report_only {
                LockMode::Shared
            } else {
                LockMode::Exclusive
            },
            false,
        ),
        CacheCmd::Gc(g) => (&g.manifest, LockMode::Exclusive, false),
    };
    let target = find::open_cache(
        registry,
        pos.as_deref(),
        args.manifest_flag.as_deref(),
        &args.common,
        mode,
        need_manifest,
    )?;
    match args.command {
        CacheCmd::Ls { sort, json, .. } => ls(&target.store, sort, json),
        CacheCmd::Show { key, .. } => show(&target.store, &key),
        CacheCmd::Stats { json, .. } => stats(&target.store, json),
        CacheCmd::Why {
            video, stage, json, ..
        } => why(target, &video, &stage, json),
        CacheCmd::Verify {
            report_only, json, ..
        } => verify(&target.store, report_only, json),
        CacheCmd::Gc(g) => gc::cmd(g, &target),
    }
}

fn ls(store: &Store, sort: SortBy, json: bool) -> Result<u8, Fail> {
    let mut rows = Vec::new();
    for key in store.keys("") {
        match store.read_entry(&key) {
            Ok(e) => rows.push(json!({
                "key": key, "stage": e.stage, "kind": e.kind, "video": e.video,
                "size": e.size(), "files": e.outputs.len(), "created": e.created,
                "last_used": store.last_used(&key),
            })),
            Err(why) => rows.push(json!({"key": key, "error": why})),
        }
    }
    let num = |r: &serde_json::Value, f: &str| r[f].as_u64().unwrap_or(0);
    match sort {
        SortBy::Time => rows.sort_by_key(|r| std::cmp::Reverse(num(r, "last_used"))),
        SortBy::Size => rows.sort_by_key(|r| std::cmp::Reverse(num(r, "size"))),
        SortBy::Stage => {}
    }
    if json {
        for r in &mut rows {
            for f in ["created", "last_used"] {
                if let Some(t) = r[f].as_u64() {
                    r[f] = rfc3339(t).into();
                }
            }
        }
        print_json(&rows);
        return Ok(exit::OK);
    }
    let text =
        |r: &serde_json::Value, f: &str, none: &str| r[f].as_str().unwrap_or(none).to_string();
    let sw = rows
        .iter()
        .map(|r| text(r, "stage", "?").chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let kw = rows
        .iter()
        .map(|r| text(r, "kind", "?").chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<12}  {:<sw$}  {:<kw$}  {:>10}  {:>9}  video",
        "key", "stage", "kind", "size", "used"
    );
    let now = vsum_engine::store::now_secs();
    for r in &rows {
        let key = text(r, "key", "");
        let used = match num(r, "last_used") {
            0 => "-".to_string(),
            t => ago(now.saturating_sub(t)),
        };
        println!(
            "{:<12}  {:<sw$}  {:<kw$}  {:>10}  {used:>9}  {}",
            &key[..key.len().min(12)],
            text(r, "stage", "?"),
            text(r, "kind", "?"),
            human_bytes(num(r, "size")),
            text(r, "video", "[batch]")
        );
    }
    println!("{}", entries(rows.len()));
    Ok(exit::OK)
}

fn show(store: &Store, key: &str) -> Result<u8, Fail> {
    match store.keys(key).as_slice() {
        [k] => {
            let e = store
                .read_entry(k)
                .map_err(|why| Fail::failed(format!("error: entry {k}: {why}")))?;
            let mut v = serde_json::to_value(&e).expect("entry serializes");
            v["created"] = rfc3339(e.created).into();
            print_json(&v);
            Ok(exit::OK)
        }
        [] => Err(Fail::failed(format!(
            "error: no cache entry starts with '{key}'; see `vsum cache ls`"
        ))),
        many => Err(Fail::usage(format!(
            "error: '{key}' matches {} entries; give more of the key",
            many.len()
        ))),
    }
}

fn stats(store: &Store, json: bool) -> Result<u8, Fail> {
    let s = store.stats();
    if json {
        print_json(&s);
    } else {
        println!("cache: {}", s.root.display());
        println!("entries: {}", s.entries);
        println!("objects: {} ({})", s.objects, human_bytes(s.object_bytes));
        println!("on disk: {}", human_bytes(s.total_bytes));
        let w = s
            .by_stage
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0);
        for (stage, (n, b)) in &s.by_stage {
            println!("  {stage:<w$}  {n:>6} entries  {:>10}", human_bytes(*b));
        }
    }
    Ok(exit::OK)
}

fn why(target: Target, video: &str, stage: &str, json: bool) -> Result<u8, Fail> {
    let Some((m, cfg)) = target.manifest else {
        return Err(Fail::usage(
            "error: `cache why` needs the manifest: pass -m MANIFEST",
        ));
    };
    let registry = &kinds(&m, &cfg);
    let opts = RunOptions {
        only: vec![stage.to_string()],
        force: vec![],
        videos: Some(video.to_string()),
        dry_run: true,
        run_id: None,
        alerts: None,
        only_videos: None,
    };
    let summary = run::run(
        &m,
        registry,
        &cfg,
        &target.store,
        &opts,
        EventSink::new(),
        &AtomicBool::new(false),
    )
    .map_err(|e| Fail::usage(format!("error: {e}")))?;
    let hits: Vec<_> = summary
        .jobs
        .iter()
        .filter(|j| j.label.stage == stage)
        .collect();
    if hits.is_empty() {
        return Err(Fail::failed(format!(
            "error: no video matches '{video}' (give its path relative to the manifest, or its file name)"
        )));
    }
    if json {
        let rows: Vec<_> = hits
            .iter()
            .map(|j| {
                json!({"stage": j.label.stage, "video": j.label.video, "key": j.key,
                    "cached": j.outcome == Outcome::Cached,
                    "reason": j.reason.as_deref().or(j.error.as_deref())})
            })
            .collect();
        print_json(&rows);
        return Ok(exit::OK);
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

fn verify(store: &Store, report_only: bool, json: bool) -> Result<u8, Fail> {
    let r = store.verify(!report_only);
    if json {
        print_json(&r);
    } else {
        for p in &r.problems {
            println!("{p}");
        }
        let n = r.problems.len();
        println!(
            "checked {} objects and {} entries: {}",
            r.objects_checked,
            r.entries_checked,
            if r.clean() {
                "clean".to_string()
            } else if report_only {
                format!("{n} problem(s); run without --report-only to evict them")
            } else {
                format!("{n} problem(s), evicted; the next run recomputes them")
            }
        );
    }
    Ok(if r.clean() { exit::OK } else { exit::FAILED })
}
