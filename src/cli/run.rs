//! `vsum run`: plan, show the launch screen, run, and print the completion screen; with
//! `--watch`, again for each change to the inputs (`follow.rs`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use vsum_engine::events::{EventSink, Outcome};
use vsum_engine::run::{self, RunOptions, RunSummary};
use vsum_engine::stage::Registry;
use vsum_engine::store::{LockMode, Store};

use super::common::{
    Common, Fail, check_inputs, exit, install_ctrlc, kinds, load_alerts, load_config,
    load_manifest, open_store, override_inputs, published,
};
use super::find::ManifestArg;
use super::follow;
use super::launch;
use super::plan::plan_table;
use super::report::{self, Progress};
use super::screen;
use super::term;

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    target: ManifestArg,
    /// Threads of the CPU lane (default: config cpu_threads, 0 = one per core)
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Run only this stage and what it needs (repeatable)
    #[arg(long)]
    only: Vec<String>,
    /// Ignore the cache for this stage (repeatable)
    #[arg(long)]
    force: Vec<String>,
    /// Run on these folders or files instead of the manifest's `inputs:`
    #[arg(long, num_args = 1.., value_name = "DIR")]
    inputs: Vec<PathBuf>,
    /// Only videos whose path (relative to the manifest) or file name matches this glob
    /// (the index still covers every video with cached results)
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
    /// After the run, keep watching the inputs: new or changed videos run (once fully
    /// copied) and the index is rebuilt, until Ctrl-C
    #[arg(long, conflicts_with_all = ["dry_run", "json", "retry_failed"])]
    watch: bool,
    #[command(flatten)]
    dist: super::worker::DistArgs,
    #[command(flatten)]
    common: Common,
}

/// Videos (relative paths) with a failed, skipped or cancelled job in the last run.
fn last_failures(store: &Store) -> Result<Option<BTreeSet<PathBuf>>, Fail> {
    let Some(last) = run::past_runs(store).pop() else {
        return Err(Fail::usage(
            "error: no previous run to retry; run without --retry-failed",
        ));
    };
    let summary = run::read_summary(&last).map_err(|e| Fail::usage(format!("error: {e}")))?;
    let set: BTreeSet<PathBuf> = summary
        .jobs
        .iter()
        .filter(|j| {
            matches!(
                j.outcome,
                Outcome::Failed | Outcome::Skipped | Outcome::Cancelled
            )
        })
        .filter_map(|j| j.label.video.as_deref().map(PathBuf::from))
        .collect();
    Ok((!set.is_empty()).then_some(set))
}

/// Runs `vsum run`.
pub fn cmd(args: RunArgs, registry: Registry) -> Result<u8, Fail> {
    let RunArgs {
        target,
        jobs,
        only,
        force,
        inputs,
        videos,
        dry_run,
        retry_failed,
        yes,
        json,
        progress,
        watch,
        dist,
        common,
    } = args;
    let distributed = dist.urls()?;
    // -q: no screens and no progress; -v: the stages' logs on stderr, between plain lines.
    let progress = match progress {
        _ if term::quiet() => Progress::None,
        Progress::Auto if term::verbose() > 0 => Progress::Plain,
        p => p,
    };
    let manifest = target.resolve()?;
    let mut m = load_manifest(&manifest, &registry)?;
    let from_flag = override_inputs(&mut m, &inputs);
    check_inputs(&manifest, &m, from_flag)?;
    let alerts = load_alerts(&m, &common)?;
    let mut flags = serde_json::Map::new();
    if let Some(j) = jobs {
        flags.insert("cpu_threads".into(), j.into());
    }
    let cfg = load_config(&m, &common, flags)?;
    let registry = kinds(&m, &cfg);
    let store = open_store(&m, &cfg, LockMode::Shared)?;
    let only_videos = if retry_failed {
        match last_failures(&store)? {
            Some(v) => Some(v),
            None => {
                term::note("the last run had no failures: nothing to retry");
                return Ok(exit::OK);
            }
        }
    } else {
        None
    };
    let opts = RunOptions {
        only,
        force,
        videos,
        dry_run,
        run_id: None,
        alerts: Some(alerts),
        only_videos,
    };
    let executor: Box<dyn run::Executor> = match distributed {
        None => Box::new(
            run::LocalExecutor::new(&cfg).map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?,
        ),
        Some((nats, cache)) => distributed_executor(&dist, &nats, &cache, &store)?,
    };
    let executor = executor.as_ref();
    let batch = Batch {
        manifest: &manifest,
        m: &m,
        registry: &registry,
        cfg: &cfg,
        store: &store,
        executor,
        progress,
        json,
    };
    let Some(summary) = batch.once(&opts, !yes)? else {
        return Ok(exit::OK);
    };
    let code = summary.exit_code() as u8;
    if !watch || summary.interrupted {
        return Ok(code);
    }
    let roots = vsum_engine::discover::input_roots(&m.base_dir, &m.inputs);
    let cancel = install_ctrlc();
    follow::follow(&roots, &m.extensions, &cancel, code, |_| {
        // A new plan over every video: the cache restores what is done, the new or
        // changed videos run, and the index is rebuilt over all of them.
        Ok(batch
            .once(&opts, false)?
            .map_or(exit::OK, |s| s.exit_code() as u8))
    })
}

/// The executor of `--executor nats://...`: jobs the local store misses go to workers.
#[cfg(feature = "distributed")]
fn distributed_executor(
    dist: &super::worker::DistArgs,
    nats: &str,
    cache: &str,
    store: &Store,
) -> Result<Box<dyn run::Executor>, Fail> {
    let ex = vsum_distributed::NatsExecutor::connect(nats, cache, store.root(), dist.queue(), 256)
        .map_err(|e| Fail(exit::USAGE, format!("error: {e:#}")))?;
    Ok(Box::new(ex))
}

#[cfg(not(feature = "distributed"))]
fn distributed_executor(
    _: &super::worker::DistArgs,
    nats: &str,
    _: &str,
    _: &Store,
) -> Result<Box<dyn run::Executor>, Fail> {
    Err(super::worker::no_distributed(nats))
}

/// What every run of this command shares (one, or one per change with `--watch`).
struct Batch<'a> {
    manifest: &'a std::path::Path,
    m: &'a vsum_engine::manifest::Manifest,
    registry: &'a Registry,
    cfg: &'a vsum_engine::config::Config,
    store: &'a Store,
    executor: &'a dyn run::Executor,
    progress: Progress,
    json: bool,
}

impl Batch<'_> {
    /// Plans, shows the launch screen (and asks, when `ask`), runs, and prints the
    /// result. `None`: the person said no.
    fn once(&self, opts: &RunOptions, ask: bool) -> Result<Option<RunSummary>, Fail> {
        let Batch {
            manifest,
            m,
            registry,
            cfg,
            store,
            executor,
            progress,
            json,
        } = *self;
        let dry_run = opts.dry_run;
        // One plan: shown on the launch screen, then executed as it is.
        let run_id = run::new_run_id();
        let opts = RunOptions {
            run_id: Some(run_id.clone()),
            ..opts.clone()
        };
        let plan = run::plan(m, registry, cfg, store, &opts)
            .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
        // The plan as a summary and the per-stage means, for both screens.
        let screens = (!dry_run).then(|| (plan.summary(), run::stage_means(store)));
        if let Some((planned, means)) = screens
            .as_ref()
            .filter(|_| progress != Progress::None && !json)
        {
            // Screen 1: what is there, what is cached, how long, where it goes.
            eprint!("{}", launch::screen(planned, means, cfg.threads()));
            if ask && !launch::confirm() {
                eprintln!("not started");
                return Ok(None);
            }
        }
        if !dry_run {
            store.prune_runs(cfg.keep_runs.saturating_sub(1));
        }
        let setup = screens.map(|(planned, means)| {
            let cpu_mode = matches!(
                vsum_engine::monitor::Gpu::open().info(),
                vsum_engine::monitor::GpuInfo::Cpu { .. }
            );
            screen::Setup::new(&planned, means, cfg.threads(), cpu_mode)
        });
        let events = EventSink::new();
        report::attach(&events, progress, setup);
        let log = run::log_path(store, &run_id);
        if !dry_run {
            report::attach_log(&events, &log);
        }
        let cancel = install_ctrlc();
        let summary = run::execute(plan, executor, events, &cancel)
            .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&summary).expect("json"));
        }
        if dry_run {
            eprint!("{}", plan_table(&summary));
        } else if progress != Progress::None {
            eprint!(
                "{}",
                report::completion(
                    &summary,
                    &manifest.display().to_string(),
                    &published(m),
                    Some(log.as_path())
                )
            );
        }
        Ok(Some(summary))
    }
}
