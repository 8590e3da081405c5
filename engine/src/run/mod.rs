//! Runs a batch in two steps: [`plan()`] works out every job and what the cache already
//! holds, writing nothing; [`execute()`] runs exactly that plan through an
//! [`Executor`]. [`run()`] is the two in one.
//!
//! Planning discovers and hashes the videos, builds the job graph, and keys every job
//! whose upstreams are cached: a hit is `cached`, a miss `would run` with the reason. A
//! job below a miss cannot be keyed yet (its key includes its upstream's outputs), so
//! the plan says it runs after that upstream.
//!
//! Executing, a single coordinator (the calling thread, [`schedule`]) releases the
//! plan's jobs, each once all it needs is done. A released job is prepared on the
//! engine's own pool: its key is worked out again from what its upstreams produced and
//! what its inputs hold now (an input edited since planning is never cached under the
//! planned key), looked up, and a hit is restored without running. A miss goes to the executor, which decides where and
//! when it runs: [`LocalExecutor`] runs CPU-lane jobs on a rayon pool and GPU-lane jobs
//! on one GPU-lane thread that keeps models loaded. Results come back to the
//! coordinator, which skips the dependents of failures (that video only), opens a
//! circuit breaker after repeated failures of one kind, and stops releasing jobs on
//! cancellation. Planning, keys and the cache stay on this side of the seam, so another
//! executor (remote workers) only decides where jobs run.

mod breaker;
mod durations;
mod execute;
mod executor;
mod gpu_lane;
mod outputs;
mod plan;
mod remote;
mod schedule;
mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use crossbeam_channel::Receiver;
pub use durations::stage_means;
pub use executor::{Completions, Executor, Job, JobDone, LocalExecutor};
pub use plan::{Plan, plan};
pub use remote::{RemoteBatchItem, RemoteJob, RemoteUpstream, RemoteVideo, WorkerEnv, run_remote};
pub use summary::{Counts, JobRecord, RunSummary};

use crate::alerts::Alerts;
use crate::config::Config;
use crate::discover::video_id;
use crate::events::{Event, EventSink, JobLabel, Outcome};
use crate::fsutil::write_atomic;
use crate::graph::JobNode;
use crate::hash::FileHasher;
use crate::manifest::{Manifest, StageSpec};
use crate::safety;
use crate::stage::{Registry, Video};
use crate::store::{Store, now_secs};
use crate::watch::Watch;

/// What to run and how.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run only these stages (and what they need).
    pub only: Vec<String>,
    /// Ignore the cache for these stages.
    pub force: Vec<String>,
    /// Only videos whose relative path (or file name) matches this glob.
    pub videos: Option<String>,
    /// Plan only: look everything up, run nothing, write nothing.
    pub dry_run: bool,
    /// Id for the run summary (and the caller's log file); made up when absent.
    pub run_id: Option<String>,
    /// Watch the machine and act on these thresholds; `None` = no monitoring.
    pub alerts: Option<Alerts>,
    /// Only videos (paths relative to the manifest), e.g. last run's failures.
    pub only_videos: Option<BTreeSet<PathBuf>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("bad --videos pattern '{0}': {1}")]
    BadGlob(String, String),
    #[error("unknown stage '{0}' in --only/--force; stages are: {1}")]
    UnknownStage(String, String),
    #[error("cannot start the CPU pool: {0}")]
    Pool(String),
    #[error("unsafe output folder: {0}; {hint}", hint = safety::OUTPUT_HINT)]
    UnsafeOutput(String),
    #[error(
        "another vsum run is writing into {0}; wait for it to finish, or give this manifest another `output:`"
    )]
    OutputBusy(PathBuf),
    #[error("cannot use the output folder {0}: {1}")]
    Output(PathBuf, std::io::Error),
}

/// Runs (or, with `dry_run`, plans) the batch: [`plan()`], then [`execute()`] on a
/// [`LocalExecutor`].
pub fn run(
    manifest: &Manifest,
    registry: &Registry,
    config: &Config,
    store: &Store,
    opts: &RunOptions,
    events: EventSink,
    cancel: &AtomicBool,
) -> Result<RunSummary, RunError> {
    let plan = plan(manifest, registry, config, store, opts)?;
    let executor = LocalExecutor::new(config)?;
    execute(plan, &executor, events, cancel)
}

/// Runs exactly the jobs of `plan`: cached ones are restored, the rest go to
/// `executor`. A plan made with `dry_run` runs nothing and writes nothing: it reports
/// itself as the run summary.
pub fn execute(
    plan: Plan<'_>,
    executor: &dyn Executor,
    events: EventSink,
    cancel: &AtomicBool,
) -> Result<RunSummary, RunError> {
    let run_id = plan.opts.run_id.clone().unwrap_or_else(new_run_id);
    if plan.opts.dry_run {
        let summary = plan.summary();
        events.emit(Event::RunStarted {
            run_id,
            videos: summary.videos,
            jobs: summary.counts.jobs,
        });
        for message in plan.problems.iter().chain(&plan.warnings) {
            events.emit(Event::Warning {
                message: message.clone(),
            });
        }
        for r in &summary.jobs {
            events.emit(Event::JobFinished {
                job: r.label.clone(),
                outcome: r.outcome,
                key: r.key.clone(),
                error: r.error.clone(),
                start_ms: r.start_ms,
                end_ms: r.end_ms,
            });
        }
        finished(&events, &summary);
        return Ok(summary);
    }
    let t0 = Instant::now();
    let started = now_secs();
    let batch = &plan.batch;
    // One run at a time writes into an output folder (a lock on the folder itself).
    let _output_lock = lock_output(&batch.output_dir)?;
    for p in &plan.problems {
        events.emit(Event::Warning { message: p.clone() });
    }
    events.emit(Event::RunStarted {
        run_id: run_id.clone(),
        videos: batch.selected_videos(),
        jobs: batch.selected_jobs(&plan.graph),
    });
    let threads = batch.config.threads();
    let Plan {
        batch,
        graph,
        opts,
        problems,
        pool,
        hits,
        ..
    } = plan;
    let shared = Shared {
        hits: hits.into_iter().map(Mutex::new).collect(),
        events: events.clone(),
        cancel,
        t0,
        job_threads: (threads_available() / threads).max(1),
        cores: crate::cores::Cores::new(threads_available().max(threads)),
        breakers: breaker::Breakers::new(batch.config.breaker_threshold),
        stop: Mutex::new(None),
        watch: opts.alerts.clone().map(|a| {
            Watch::new(
                a,
                vec![batch.output_dir.clone(), batch.store.root().to_path_buf()],
                events.clone(),
            )
        }),
        batch,
    };
    let (records, stopped) = schedule::schedule(&shared, &graph, &pool, executor);

    let counts = Counts::of(&records);
    let interrupted = cancel.load(Ordering::Relaxed);
    if interrupted {
        events.emit(Event::Interrupted);
    }
    let summary = RunSummary {
        run_id,
        manifest: shared.manifest.file.to_string_lossy().into_owned(),
        started,
        wall_ms: t0.elapsed().as_millis() as u64,
        dry_run: false,
        interrupted,
        videos: shared.selected_videos(),
        video_bytes: shared.video_bytes(),
        output_dir: shared.output_dir.clone(),
        cache_dir: shared.store.root().to_path_buf(),
        problems,
        stopped,
        monitor: shared.watch.as_ref().map(Watch::summary),
        counts,
        jobs: records,
    };
    if let Err(e) = shared.hasher.save() {
        events.emit(Event::Warning {
            message: format!("cannot save the stat cache: {e} (the next run re-hashes videos)"),
        });
    }
    let path = shared
        .store
        .runs_dir()
        .join(format!("{}.json", summary.run_id));
    let json = serde_json::to_vec_pretty(&summary).expect("summary serializes");
    if let Err(e) = write_atomic(&path, &json) {
        events.emit(Event::Warning {
            message: format!("cannot write the run summary {}: {e}", path.display()),
        });
    }
    durations::record(shared.store, &summary.jobs);
    finished(&events, &summary);
    Ok(summary)
}

fn finished(events: &EventSink, summary: &RunSummary) {
    let c = &summary.counts;
    events.emit(Event::RunFinished {
        ran: c.ran,
        cached: c.cached,
        failed: c.failed,
        skipped: c.skipped,
        cancelled: c.cancelled,
        wall_ms: summary.wall_ms,
    });
}

/// The batch as planned: what planning and execution both read, never change.
struct Batch<'a> {
    manifest: &'a Manifest,
    registry: &'a Registry,
    config: &'a Config,
    store: &'a Store,
    hasher: FileHasher,
    output_dir: PathBuf,
    videos: Vec<Video>,
    /// Per video: not selected (`--videos`, `--retry-failed`), planned only so that
    /// batch stages still see its cached results (a subset run never shrinks the
    /// index). Its jobs are restored when cached, never run, and never reported.
    background: Vec<bool>,
    force: BTreeSet<String>,
}

impl Batch<'_> {
    fn stage(&self, job: JobNode) -> &StageSpec {
        &self.manifest.stages[job.stage]
    }

    fn label(&self, node: petgraph::graph::NodeIndex, job: JobNode) -> JobLabel {
        let st = self.stage(job);
        JobLabel {
            index: node.index(),
            stage: st.id.clone(),
            kind: st.kind.clone(),
            video: job
                .video
                .map(|v| self.videos[v].rel.to_string_lossy().into_owned()),
            lane: st.lane,
        }
    }

    /// Where a job's outputs are placed for the user.
    fn out_folder(&self, job: JobNode) -> PathBuf {
        let st = self.stage(job);
        match job.video {
            Some(v) => self.output_dir.join(&self.videos[v].folder).join(&st.id),
            None => self.output_dir.join(&st.id),
        }
    }

    fn ref_id(&self, job: JobNode) -> String {
        job.video
            .map(|v| video_id(&self.videos[v]))
            .unwrap_or_else(|| "_batch".to_string())
    }

    /// Is this a job of a video outside the selection?
    fn background(&self, job: JobNode) -> bool {
        job.video.is_some_and(|v| self.background[v])
    }

    fn selected_videos(&self) -> usize {
        self.background.iter().filter(|b| !**b).count()
    }

    fn selected_jobs(&self, graph: &crate::graph::JobGraph) -> usize {
        graph
            .graph
            .node_weights()
            .filter(|j| !self.background(**j))
            .count()
    }

    fn video_bytes(&self) -> u64 {
        self.videos
            .iter()
            .zip(&self.background)
            .filter(|(_, b)| !**b)
            .filter_map(|(v, _)| std::fs::metadata(&v.path).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// What a finished upstream hands to its dependents.
#[derive(Debug, Clone)]
struct Done {
    outcome: Outcome,
    digest: Option<String>,
    key: Option<String>,
    tools: BTreeMap<String, String>,
}

/// A job's result on its way to the coordinator.
struct Finished {
    node: petgraph::graph::NodeIndex,
    record: JobRecord,
    digest: Option<String>,
    /// Held a CPU slot (a pool task, or a CPU-lane job at the executor).
    held_slot: bool,
    /// The tool and model versions in its fingerprint (for provenance downstream).
    tools: BTreeMap<String, String>,
}

impl Finished {
    fn bare(node: petgraph::graph::NodeIndex, record: JobRecord) -> Finished {
        Finished {
            node,
            record,
            digest: None,
            held_slot: false,
            tools: BTreeMap::new(),
        }
    }
}

enum Msg {
    Finished(Box<Finished>),
    /// A pool task handed its job to the GPU lane: a CPU slot is free again.
    LeftPool,
}

/// One execution's state, shared by the coordinator, the pool and the executor.
struct Shared<'a> {
    batch: Batch<'a>,
    /// Planning's cache hits by node index, each taken once by its job.
    hits: Vec<Mutex<Option<Box<plan::PlanHit>>>>,
    events: EventSink,
    cancel: &'a AtomicBool,
    t0: Instant,
    /// Threads a job may use inside itself.
    job_threads: usize,
    /// The cores both lanes share, so they never oversubscribe the machine.
    cores: crate::cores::Cores,
    /// The machine watch, when monitoring.
    watch: Option<Watch>,
    /// Why the batch stops early; once set, no job starts.
    stop: Mutex<Option<String>>,
    breakers: breaker::Breakers,
}

impl<'a> std::ops::Deref for Shared<'a> {
    type Target = Batch<'a>;

    fn deref(&self) -> &Batch<'a> {
        &self.batch
    }
}

impl Shared<'_> {
    /// Whether planning found this job cached (and its hit is not taken yet).
    fn planned_hit(&self, node: petgraph::graph::NodeIndex) -> bool {
        self.hits[node.index()].lock().expect("plan hit").is_some()
    }

    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// A bare record that started at `start_ms` and ends now.
    fn record(&self, label: JobLabel, outcome: Outcome, start_ms: u64) -> JobRecord {
        JobRecord {
            end_ms: self.ms(),
            ..JobRecord::new(label, outcome, start_ms)
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn stopped(&self) -> Option<String> {
        self.stop.lock().expect("stop").clone()
    }

    /// Stops the batch (first reason wins).
    fn stop_batch(&self, why: String) {
        let mut stop = self.stop.lock().expect("stop");
        if stop.is_none() {
            self.events.emit(Event::Stopped {
                reason: why.clone(),
            });
            *stop = Some(why);
        }
    }

    /// Holds the calling lane while a critical reading pauses new jobs.
    fn wait_while_paused(&self) {
        let Some(w) = &self.watch else { return };
        while w.pause_reason().is_some() && self.stopped().is_none() && !self.cancelled() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The log file of a run.
pub fn log_path(store: &Store, run_id: &str) -> PathBuf {
    store.logs_dir().join(format!("{run_id}.jsonl"))
}

/// Reads a run summary written under `.vsum/runs/`.
pub fn read_summary(path: &std::path::Path) -> Result<RunSummary, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a run summary: {e}", path.display()))
}

/// Reads past run summaries, newest last.
pub fn past_runs(store: &Store) -> Vec<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(store.runs_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    runs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    runs
}

/// Locks the output folder for this run (released when the returned file is dropped).
fn lock_output(dir: &std::path::Path) -> Result<std::fs::File, RunError> {
    let fail = |e| RunError::Output(dir.to_path_buf(), e);
    std::fs::create_dir_all(dir).map_err(fail)?;
    let f = std::fs::File::open(dir).map_err(fail)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(RunError::OutputBusy(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(fail(e)),
    }
}

fn threads_available() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A new run id: start time and process id (sortable, unique per machine).
pub fn new_run_id() -> String {
    format!("{}-{}", now_secs(), std::process::id())
}
