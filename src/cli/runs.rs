//! `vsum runs`: past runs, from the summaries under the cache's `runs/`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::json;
use vsum_engine::run::{self, RunSummary};
use vsum_engine::stage::Registry;
use vsum_engine::store::LockMode;
use vsum_engine::time::rfc3339;

use super::common::{Common, Fail, ago, exit, load_manifest, print_json, published};
use super::find;
use super::report;

#[derive(clap::Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: RunsCmd,
    /// Manifest whose cache to read (default: env VSUM_MANIFEST, else found from here)
    #[arg(long = "manifest", short = 'm', global = true, value_name = "MANIFEST")]
    manifest_flag: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Subcommand)]
enum RunsCmd {
    /// List past runs, newest last
    Ls {
        /// Manifest whose cache to read (or -m)
        manifest: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one run's summary (`last` for the newest)
    Show {
        /// Run id (or a unique start of one), or `last`
        id: String,
        /// Manifest whose cache to read (or -m)
        manifest: Option<PathBuf>,
        /// Print the full JSON summary
        #[arg(long)]
        json: bool,
    },
    /// Show the newest run's summary (the same as `runs show last`)
    Last {
        /// Manifest whose cache to read (or -m)
        manifest: Option<PathBuf>,
        /// Print the full JSON summary
        #[arg(long)]
        json: bool,
    },
}

/// Runs `vsum runs ...`.
pub fn cmd(args: RunsArgs, registry: &Registry) -> Result<u8, Fail> {
    let (pos, id, json) = match &args.command {
        RunsCmd::Ls { manifest, json } => (manifest, None, *json),
        RunsCmd::Show { id, manifest, json } => (manifest, Some(id.as_str()), *json),
        RunsCmd::Last { manifest, json } => (manifest, Some("last"), *json),
    };
    let target = find::open_cache(
        registry,
        pos.as_deref(),
        args.manifest_flag.as_deref(),
        &args.common,
        LockMode::Shared,
        false,
    )?;
    let paths = run::past_runs(&target.store);
    let Some(id) = id else {
        ls(&paths, json);
        return Ok(exit::OK);
    };
    let path = if id == "last" {
        paths.last().cloned()
    } else {
        paths
            .iter()
            .find(|p| {
                p.file_stem()
                    .is_some_and(|s| s.to_string_lossy().starts_with(id))
            })
            .cloned()
    };
    let Some(path) = path else {
        let what = if id == "last" {
            "no runs yet".to_string()
        } else {
            format!("no run '{id}'; see `vsum runs ls`")
        };
        return Err(Fail::failed(format!("error: {what}")));
    };
    let summary = run::read_summary(&path).map_err(|e| Fail::failed(format!("error: {e}")))?;
    if json {
        print_json(&summary);
    } else {
        // The manifest's `publish:` names which index files to point at.
        let names = match &target.manifest {
            Some((m, _)) => published(m),
            None => load_manifest(Path::new(&summary.manifest), registry)
                .map(|m| published(&m))
                .unwrap_or_default(),
        };
        print!(
            "{}",
            report::completion(&summary, &summary.manifest, &names, None)
        );
    }
    Ok(exit::OK)
}

fn ls(paths: &[PathBuf], json: bool) {
    let rows: Vec<RunSummary> = paths
        .iter()
        .filter_map(|p| run::read_summary(p).ok())
        .collect();
    if json {
        let short: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"run_id": r.run_id, "started": rfc3339(r.started), "wall_ms": r.wall_ms,
                "videos": r.videos, "counts": r.counts, "stopped": r.stopped,
                "interrupted": r.interrupted})
            })
            .collect();
        print_json(&short);
        return;
    }
    println!(
        "{:<22} {:>10} {:>7} {:>5} {:>6} {:>6} {:>8}",
        "run", "started", "videos", "ran", "cached", "failed", "wall"
    );
    let now = vsum_engine::store::now_secs();
    for r in &rows {
        let c = &r.counts;
        println!(
            "{:<22} {:>10} {:>7} {:>5} {:>6} {:>6} {:>7.1}s",
            r.run_id,
            ago(now.saturating_sub(r.started)),
            r.videos,
            c.ran,
            c.cached,
            c.failed,
            r.wall_ms as f64 / 1000.0
        );
    }
}
