//! `vsum plan`: what a run would do, each job cached or to run, and why.

use std::sync::atomic::AtomicBool;

use vsum_engine::events::{EventSink, Outcome};
use vsum_engine::run::{self, RunOptions, RunSummary};
use vsum_engine::stage::Registry;
use vsum_engine::store::LockMode;

use super::common::{
    Common, Fail, check_inputs, exit, kinds, load_config, load_manifest, open_store,
    override_inputs, print_json,
};
use super::find::ManifestArg;
use super::report::{self, Progress};

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    target: ManifestArg,
    /// Only this stage and what it needs (repeatable)
    #[arg(long)]
    only: Vec<String>,
    /// Plan for these folders or files instead of the manifest's `inputs:`
    #[arg(long, num_args = 1.., value_name = "DIR")]
    inputs: Vec<std::path::PathBuf>,
    /// Only videos matching this glob
    #[arg(long)]
    videos: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

/// Runs `vsum plan`.
pub fn cmd(args: PlanArgs, registry: &Registry) -> Result<u8, Fail> {
    let path = args.target.resolve()?;
    let mut m = load_manifest(&path, registry)?;
    let from_flag = override_inputs(&mut m, &args.inputs);
    check_inputs(&path, &m, from_flag)?;
    let cfg = load_config(&m, &args.common, Default::default())?;
    let registry = &kinds(&m, &cfg);
    let store = open_store(&m, &cfg, LockMode::Shared)?;
    let opts = RunOptions {
        only: args.only,
        force: vec![],
        videos: args.videos,
        dry_run: true,
        run_id: None,
        alerts: None,
        only_videos: None,
    };
    let events = EventSink::new();
    report::attach(&events, Progress::None, None);
    let summary = run::run(
        &m,
        registry,
        &cfg,
        &store,
        &opts,
        events,
        &AtomicBool::new(false),
    )
    .map_err(|e| Fail::usage(format!("error: {e}")))?;
    if args.json {
        print_json(&summary);
    } else {
        print!("{}", plan_table(&summary));
    }
    Ok(if summary.problems.is_empty() {
        exit::OK
    } else {
        exit::FAILED
    })
}

/// One line per job: cached, run, error or skip, and why.
pub fn plan_table(s: &RunSummary) -> String {
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
