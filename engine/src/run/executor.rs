//! The executor seam: where the jobs that missed the cache run.
//!
//! The engine plans, keys, looks up and restores; an [`Executor`] only decides where
//! and when each [`Job`] it is handed runs, and reports each one back through
//! [`Completions`]. A job carries its planned node (stage, video, key, fingerprint,
//! upstream entries) and knows how to run itself in this process
//! ([`Job::run_here`]: claim the key, stage the upstream, run with retries, commit,
//! place the outputs). [`LocalExecutor`] runs CPU-lane jobs on a rayon pool and
//! GPU-lane jobs on one GPU-lane thread. Another executor (remote workers sharing the
//! store) sends [`Job::fingerprint`], [`Job::key`] and [`Job::upstream_keys`] to a
//! worker, and reports the job with [`Job::collect`] once the worker committed its
//! entry, or [`Job::fail`]; every job is reported exactly once.

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::plan::Keyed;
use super::{Finished, JobRecord, Msg, RunError, Shared};
use crate::config::Config;
use crate::events::{Event, EventSink, JobLabel};
use crate::fingerprint::Fingerprint;
use crate::stage::{Lane, Resources, StageError};

/// Runs the jobs that missed the cache.
///
/// The coordinator calls [`Executor::serve`] once per run, on a thread of its own,
/// with the channel it sends jobs on. `serve` must report every job it receives
/// exactly once through `done` (a job never reported stalls the run), and return once
/// `jobs` is closed and all its jobs are reported. Cancellation, pauses, stops and
/// circuit breakers are the engine's: [`Job::run_here`] applies them, and jobs still
/// waiting in the coordinator are never sent.
pub trait Executor: Sync {
    /// How many CPU-lane jobs to have at the executor at once; the rest wait in the
    /// coordinator, where pauses, stops and breakers still apply to them.
    fn capacity(&self) -> usize;

    fn serve<'r>(&self, jobs: Receiver<Job<'r>>, done: Completions);
}

/// A job that missed the cache, handed to an executor.
pub struct Job<'r> {
    pub(super) shared: &'r Shared<'r>,
    pub(super) keyed: Box<Keyed>,
    /// Counted against the executor's capacity (a CPU-lane job).
    pub(super) held_slot: bool,
}

impl<'r> Job<'r> {
    pub fn label(&self) -> &JobLabel {
        &self.keyed.label
    }

    pub fn lane(&self) -> Lane {
        self.shared.stage(self.keyed.job).lane
    }

    /// The cache key the job's outputs are committed under.
    pub fn key(&self) -> &str {
        &self.keyed.key
    }

    /// Jobs of one group (e.g. one model) run best back to back on a GPU.
    pub fn group(&self) -> Option<&str> {
        self.keyed.group.as_deref()
    }

    /// The run's events (for what an executor reports, and for [`Resources`]).
    pub fn events(&self) -> &EventSink {
        &self.shared.events
    }

    /// Says the job is under way, for the live screen's jobs in flight and the log: an
    /// executor that runs jobs elsewhere calls it when it hands the job out
    /// ([`Job::run_here`] says so itself).
    pub fn started(&self) {
        self.shared.events.emit(Event::JobStarted {
            job: self.keyed.label.clone(),
            attempt: 1,
            at_ms: self.shared.ms(),
        });
    }

    /// Whether the run was cancelled (Ctrl-C): an executor holding jobs elsewhere
    /// reports them now.
    pub fn cancelled(&self) -> bool {
        self.shared.cancelled()
    }

    /// Blocks while the machine watch pauses new jobs (a lane with a queue of its own
    /// calls this before each job).
    pub fn wait_while_paused(&self) {
        self.shared.wait_while_paused();
    }

    /// Runs the job here, in this process, and returns its result for [`Completions`].
    /// `resources` are the models a lane keeps loaded across jobs (GPU lane). A panic
    /// in the stage becomes the job's failure.
    pub fn run_here(self, resources: Option<&mut Resources>) -> JobDone {
        let (shared, node, label) = (self.shared, self.keyed.node, self.keyed.label.clone());
        let held_slot = self.held_slot;
        let fin = shared
            .guarded(node, label, || Some(shared.run_job(*self.keyed, resources)))
            .expect("a job always finishes");
        JobDone(Box::new(Finished { held_slot, ..fin }))
    }
}

impl Job<'_> {
    /// The job's fingerprint: kind, version, params, inputs, upstream digests and tool
    /// versions (what a remote worker needs to know what to compute).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.keyed.fingerprint
    }

    /// The cache entries of the job's upstreams (a worker sharing the store stages them
    /// with [`Store::stage_entry`](crate::store::Store::stage_entry)).
    pub fn upstream_keys(&self) -> impl Iterator<Item = &str> {
        self.keyed.sources.iter().map(|(_, key)| key.as_str())
    }

    /// The job ran elsewhere and committed its entry under [`Job::key`] into this
    /// store: its outputs are placed here as if it had run here. No entry means a
    /// failed job.
    pub fn collect(self) -> JobDone {
        let held_slot = self.held_slot;
        let fin = self.shared.collect(*self.keyed, None);
        JobDone(Box::new(Finished { held_slot, ..fin }))
    }

    /// The job's entry was already made (e.g. found in a shared cache behind this
    /// store, and adopted into it): its outputs are placed and the job is reported
    /// cached, with `note` saying where the entry came from.
    pub fn collect_cached(self, note: &str) -> JobDone {
        let held_slot = self.held_slot;
        let fin = self.shared.collect(*self.keyed, Some(note));
        JobDone(Box::new(Finished { held_slot, ..fin }))
    }

    /// The job could not run (e.g. no worker took it): it fails with `error`, which
    /// counts toward its circuit breaker like any failure.
    pub fn fail(self, error: StageError) -> JobDone {
        let held_slot = self.held_slot;
        let fin = self.shared.fail(*self.keyed, error);
        JobDone(Box::new(Finished { held_slot, ..fin }))
    }
}

/// A finished job, on its way back to the coordinator.
pub struct JobDone(pub(super) Box<Finished>);

impl JobDone {
    pub fn record(&self) -> &JobRecord {
        &self.0.record
    }
}

/// Where an executor reports finished jobs.
#[derive(Clone)]
pub struct Completions {
    pub(super) tx: Sender<Msg>,
}

impl Completions {
    pub fn send(&self, done: JobDone) {
        let _ = self.tx.send(Msg::Finished(done.0));
    }
}

/// Runs jobs on this machine: CPU-lane jobs on a rayon pool of twice `cpu_threads`
/// (the cores budget lets `cpu_threads` of them compute at once), GPU-lane
/// jobs one at a time on a single GPU-lane thread that keeps up to `gpu_models` models
/// loaded and prefers jobs of the model it has loaded.
pub struct LocalExecutor {
    pool: rayon::ThreadPool,
    gpu_models: usize,
}

impl LocalExecutor {
    pub fn new(config: &Config) -> Result<LocalExecutor, RunError> {
        // Twice as many threads as jobs at a time: the cores budget lets `threads`
        // jobs compute at once, and the others stage their upstream, or store and place
        // their outputs, meanwhile (file-system waits that would otherwise leave a
        // core idle between two commands).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads() * 2)
            .thread_name(|i| format!("vsum-job-{i}"))
            .build()
            .map_err(|e| RunError::Pool(e.to_string()))?;
        Ok(LocalExecutor {
            pool,
            gpu_models: config.gpu_models,
        })
    }
}

impl Executor for LocalExecutor {
    fn capacity(&self) -> usize {
        self.pool.current_num_threads() * 2
    }

    fn serve<'r>(&self, jobs: Receiver<Job<'r>>, done: Completions) {
        std::thread::scope(|scope| {
            let (gpu_tx, gpu_rx) = unbounded::<Job<'r>>();
            let lane_done = done.clone();
            let models = self.gpu_models;
            let gpu = std::thread::Builder::new()
                .name("vsum-gpu-lane".into())
                .spawn_scoped(scope, move || {
                    super::gpu_lane::run(gpu_rx, lane_done, models)
                })
                .expect("spawn the GPU lane");
            self.pool.in_place_scope(|s| {
                for job in jobs.iter() {
                    if job.lane() == Lane::Gpu {
                        let _ = gpu_tx.send(job);
                    } else {
                        let done = done.clone();
                        s.spawn(move |_| done.send(job.run_here(None)));
                    }
                }
            });
            drop(gpu_tx);
            let _ = gpu.join();
        });
    }
}
