//! `vsum worker`: runs jobs that `vsum run --executor nats://...` sends, on this
//! machine, until stopped (SIGTERM or Ctrl-C: running jobs go back to the queue).
//! The work is `vsum-distributed`'s; this file only reads flags and prints what the
//! worker does, one stamped line per job. Built only with the `distributed` feature;
//! without it the command says how to get it.

use std::path::PathBuf;

use vsum_engine::stage::Registry;

use super::common::Fail;
#[cfg(feature = "distributed")]
use super::common::exit;

/// Where `--executor` and `--cache` come from, shared by `run` and `worker`.
#[derive(clap::Args, Clone, Debug)]
pub struct DistArgs {
    /// Job queue of a distributed run: nats://HOST:PORT (needs a vsum built with the
    /// `distributed` feature); `vsum run` without it runs its jobs on this machine
    #[arg(long, value_name = "URL")]
    pub executor: Option<String>,
    /// Shared cache of a distributed run: s3://BUCKET/PREFIX. Endpoint and credentials
    /// come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
    /// (AWS_ALLOW_HTTP=true for a plain-HTTP endpoint)
    #[arg(long = "cache", value_name = "URL")]
    pub shared_cache: Option<String>,
    /// Seconds a worker holds a job without saying it is still on it (the lease); the
    /// coordinator and workers must agree
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub lease: u64,
    /// Deliveries of a job before it is given up on
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_deliver: i64,
}

impl DistArgs {
    /// `Some((nats, s3))` for a distributed run; `None` for a local one.
    pub fn urls(&self) -> Result<Option<(String, String)>, Fail> {
        let Some(url) = self.executor.as_deref().filter(|u| *u != "local") else {
            if self.shared_cache.is_some() {
                return Err(Fail::usage(
                    "error: --cache names a shared cache for a distributed run; give --executor nats://HOST:PORT too",
                ));
            }
            return Ok(None);
        };
        if !url.starts_with("nats://") {
            return Err(Fail::usage(format!(
                "error: --executor '{url}' is not a job queue vsum knows; use nats://HOST:PORT (or leave it out to run here)"
            )));
        }
        if !cfg!(feature = "distributed") {
            return Err(no_distributed(url));
        }
        let Some(cache) = self.shared_cache.clone() else {
            return Err(Fail::usage(format!(
                "error: --executor {url} needs --cache s3://BUCKET/PREFIX, the cache the workers share"
            )));
        };
        Ok(Some((url.to_string(), cache)))
    }

    #[cfg(feature = "distributed")]
    pub fn queue(&self) -> vsum_distributed::QueueConfig {
        vsum_distributed::QueueConfig {
            lease: std::time::Duration::from_secs(self.lease.max(1)),
            max_deliver: self.max_deliver.max(1),
        }
    }
}

/// The error of a binary built without the feature.
pub fn no_distributed(url: &str) -> Fail {
    Fail::usage(format!(
        "error: this vsum was built without the `distributed` feature, so it cannot use {url}; build it with `cargo build --release --features distributed` (or `cargo install --path . --features distributed`)"
    ))
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    dist: DistArgs,
    /// Also take GPU-lane jobs, one at a time (one worker per GPU machine)
    #[arg(long)]
    gpu: bool,
    /// CPU-lane jobs at once (default: one per core; 0: GPU jobs only)
    #[arg(long, value_name = "N")]
    cpu_jobs: Option<usize>,
    /// Where command stages run and relative paths in params resolve: a checkout of
    /// the manifest's folder (default: the current folder)
    #[arg(long, value_name = "DIR")]
    base_dir: Option<PathBuf>,
    /// This worker's own cache and downloads (default: ~/.cache/vsum/worker)
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Name in logs and failure records (default: host name and process id)
    #[arg(long)]
    name: Option<String>,
}

/// Runs `vsum worker`.
pub fn cmd(args: WorkerArgs, registry: Registry) -> Result<u8, Fail> {
    let Some((nats, cache)) = args.dist.urls()? else {
        return Err(Fail::usage(
            "error: vsum worker needs --executor nats://HOST:PORT and --cache s3://BUCKET/PREFIX",
        ));
    };
    start(args, registry, nats, cache)
}

#[cfg(not(feature = "distributed"))]
fn start(_: WorkerArgs, _: Registry, nats: String, _: String) -> Result<u8, Fail> {
    Err(no_distributed(&nats))
}

#[cfg(feature = "distributed")]
fn start(args: WorkerArgs, registry: Registry, nats: String, cache: String) -> Result<u8, Fail> {
    use vsum_distributed::{Report, WorkerOptions};
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_jobs = args.cpu_jobs.unwrap_or(cores);
    if cpu_jobs == 0 && !args.gpu {
        return Err(Fail::usage(
            "error: --cpu-jobs 0 without --gpu leaves this worker nothing to do; give --gpu, or more CPU jobs",
        ));
    }
    let work_dir = args.work_dir.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache/vsum/worker")
    });
    let base_dir = match args.base_dir {
        Some(d) => d,
        None => std::env::current_dir().map_err(|e| Fail::usage(format!("error: {e}")))?,
    };
    let name = args.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let opts = WorkerOptions {
        nats,
        cache,
        work_dir,
        base_dir,
        gpu: args.gpu,
        cpu_jobs,
        threads: (cores / cpu_jobs.max(1)).max(1),
        gpu_models: 2,
        queue: args.dist.queue(),
        name: name.clone(),
    };
    let cancel = super::common::install_ctrlc();
    let now = || vsum_engine::time::rfc3339(vsum_engine::store::now_secs());
    eprintln!(
        "{} worker {name}: {} CPU job{} at once{}, lease {} s",
        now(),
        cpu_jobs,
        if cpu_jobs == 1 { "" } else { "s" },
        if args.gpu { ", GPU lane on" } else { "" },
        args.dist.lease
    );
    let who = name.clone();
    vsum_distributed::worker::run(opts, registry, cancel, move |r| {
        let line = match r {
            Report::Started { job, delivery } => format!("started {job} (delivery {delivery})"),
            Report::Done { job, ms, won: true } => format!("done {job} in {ms} ms"),
            Report::Done {
                job,
                ms,
                won: false,
            } => format!(
                "done {job} in {ms} ms, but another worker's entry was there first: ours discarded"
            ),
            Report::AlreadyDone { job } => format!("skipped {job}: its entry is already shared"),
            Report::Retry { job, error } => format!("will retry {job}: {error}"),
            Report::Failed { job, error } => format!("failed {job}: {error}"),
            Report::Warning(w) => format!("warning: {w}"),
        };
        eprintln!("{} worker {who}: {line}", now());
    })
    .map_err(|e| Fail(exit::USAGE, format!("error: {e:#}")))?;
    Ok(exit::OK)
}
