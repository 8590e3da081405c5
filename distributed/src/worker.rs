//! `vsum worker`: takes jobs from the queue and runs them here with the same stage
//! registry as the coordinator. For each delivery: a job whose shared entry is already
//! whole is acked without running (a redelivery after another worker finished it);
//! otherwise its upstream entries and videos are fetched from the shared cache into
//! this worker's own store, the job runs while "in progress" acks keep its lease, its
//! outputs are committed locally, then shared (blobs first, the entry last and
//! conditional: a late worker loses cleanly), and the message is acked. A
//! deterministic failure is recorded under `failures/<key>` and the message
//! terminated; a transient one is nak'd with a delay until its deliveries run out.
//! The CPU lane runs `cpu_jobs` jobs at once; with `gpu`, one GPU lane runs one job
//! at a time on one thread that keeps its models loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use vsum_engine::events::EventSink;
use vsum_engine::run::{RemoteJob, WorkerEnv, run_remote};
use vsum_engine::stage::{Lane, Registry, Resources, StageError};
use vsum_engine::store::{Entry, LockMode, Store};

use crate::queue::{Queue, QueueConfig};
use crate::s3cache::{Created, Failure, S3Cache};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub nats: String,
    pub cache: String,
    /// This worker's own store and downloads.
    pub work_dir: PathBuf,
    /// Where command stages run (a checkout of the manifest's folder).
    pub base_dir: PathBuf,
    /// Pull GPU-lane jobs too (one at a time).
    pub gpu: bool,
    /// CPU-lane jobs at once (0: none).
    pub cpu_jobs: usize,
    /// Threads each job may use.
    pub threads: usize,
    /// Models the GPU lane keeps loaded.
    pub gpu_models: usize,
    pub queue: QueueConfig,
    /// Shown in logs and failure records.
    pub name: String,
}

/// What a worker did with one delivery (for its log).
#[derive(Debug, Clone)]
pub enum Report {
    Started {
        job: String,
        delivery: i64,
    },
    /// Ran and shared; `won` is false when another worker's entry was there first.
    Done {
        job: String,
        ms: u64,
        won: bool,
    },
    AlreadyDone {
        job: String,
    },
    Retry {
        job: String,
        error: String,
    },
    Failed {
        job: String,
        error: String,
    },
    Warning(String),
}

type Reporter = Arc<dyn Fn(Report) + Send + Sync>;

struct Worker {
    queue: Queue,
    cache: S3Cache,
    store: Arc<Store>,
    registry: Arc<Registry>,
    opts: WorkerOptions,
    cancel: Arc<AtomicBool>,
    report: Reporter,
    gpu: Option<mpsc::Sender<GpuJob>>,
}

struct GpuJob {
    job: RemoteJob,
    videos: BTreeMap<String, PathBuf>,
    reply: oneshot::Sender<Result<Entry, StageError>>,
}

/// Runs a worker until `cancel` is set (then running jobs stop and go back to the
/// queue).
pub fn run(
    opts: WorkerOptions,
    registry: Registry,
    cancel: Arc<AtomicBool>,
    report: impl Fn(Report) + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("vsum-worker")
        .build()?;
    std::fs::create_dir_all(&opts.work_dir)?;
    let store = Arc::new(Store::open(&opts.work_dir.join("cache"), LockMode::Shared)?);
    let cache = S3Cache::open(&opts.cache)?;
    let queue = rt.block_on(Queue::connect(&opts.nats, opts.queue.clone()))?;
    let registry = Arc::new(registry);
    let report: Reporter = Arc::new(report);
    let gpu = opts.gpu.then(|| {
        let (tx, rx) = mpsc::channel::<GpuJob>(1);
        let (store, registry, cancel) = (store.clone(), registry.clone(), cancel.clone());
        let (base, threads, models) = (opts.base_dir.clone(), opts.threads, opts.gpu_models);
        std::thread::Builder::new()
            .name("vsum-gpu-lane".into())
            .spawn(move || gpu_lane(rx, &store, &registry, &base, threads, models, &cancel))
            .expect("spawn the GPU lane");
        tx
    });
    let w = Arc::new(Worker {
        queue,
        cache,
        store,
        registry,
        cancel,
        report,
        gpu,
        opts,
    });
    rt.block_on(async {
        let mut lanes = Vec::new();
        for _ in 0..w.opts.cpu_jobs {
            lanes.push(tokio::spawn(w.clone().lane(Lane::Cpu)));
        }
        if w.gpu.is_some() {
            lanes.push(tokio::spawn(w.clone().lane(Lane::Gpu)));
        }
        for l in lanes {
            let _ = l.await;
        }
    });
    Ok(())
}

/// The GPU lane: one thread, one job at a time, models kept loaded across jobs.
fn gpu_lane(
    mut rx: mpsc::Receiver<GpuJob>,
    store: &Store,
    registry: &Registry,
    base_dir: &Path,
    threads: usize,
    models: usize,
    cancel: &AtomicBool,
) {
    let events = EventSink::new();
    let mut resources = Resources::new(models, events.clone());
    while let Some(g) = rx.blocking_recv() {
        let env = WorkerEnv {
            registry,
            store,
            base_dir,
            threads,
            cancel,
            events: &events,
        };
        let r = run_remote(&g.job, &g.videos, &env, Some(&mut resources));
        let _ = g.reply.send(r);
    }
}

impl Worker {
    /// Tells coordinators the job's result is in the shared cache.
    async fn notify(&self, key: &str) {
        let _ = self
            .queue
            .client
            .publish(crate::queue::DONE, key.to_string().into())
            .await;
    }

    fn stopping(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// One lane's loop: pull one job, handle it, again. Errors (the server restarting)
    /// are waited out.
    async fn lane(self: Arc<Self>, lane: Lane) {
        let mut consumer = None;
        while !self.stopping() {
            let c = match &consumer {
                Some(c) => c,
                None => match self.queue.consumer(lane).await {
                    Ok(c) => consumer.insert(c),
                    Err(e) => {
                        (self.report)(Report::Warning(e.to_string()));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
            };
            let batch = c
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(2))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "pull failed; waiting");
                    consumer = None;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            while let Some(msg) = batch.next().await {
                match msg {
                    Ok(msg) => self.handle(msg, lane).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "pull failed; waiting");
                        consumer = None;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        break;
                    }
                }
            }
        }
    }

    async fn handle(&self, msg: Message, lane: Lane) {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let job: RemoteJob = match serde_json::from_slice(&msg.payload) {
            Ok(j) => j,
            Err(e) => {
                (self.report)(Report::Warning(format!(
                    "dropped a message that is not a job: {e}"
                )));
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        if let Err(why) = job.check() {
            (self.report)(Report::Warning(format!("dropped a message: {why}")));
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
        let name = job.label.describe();
        if matches!(self.cache.complete(&job.key).await, Ok(true)) {
            (self.report)(Report::AlreadyDone { job: name });
            self.notify(&job.key).await;
            let _ = msg.double_ack().await;
            return;
        }
        (self.report)(Report::Started {
            job: name.clone(),
            delivery: delivered,
        });
        let msg = Arc::new(msg);
        let beat = {
            let (msg, every) = (msg.clone(), self.queue.cfg.heartbeat());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            })
        };
        let t0 = Instant::now();
        let result = self.run_job(&job, lane).await;
        beat.abort();
        match result {
            Ok(won) => {
                (self.report)(Report::Done {
                    job: name,
                    ms: t0.elapsed().as_millis() as u64,
                    won,
                });
                self.notify(&job.key).await;
                if let Err(e) = msg.double_ack().await {
                    // The lease ran out meanwhile, or the server restarted: the job
                    // comes back, finds its entry, and is acked then.
                    tracing::debug!(error = %e, "ack failed");
                }
            }
            Err(e) => {
                let limit = self.queue.cfg.max_deliver.min(i64::from(job.retries) + 1);
                if e.cancelled || (e.retryable && delivered < limit) {
                    (self.report)(Report::Retry {
                        job: name,
                        error: e.message.clone(),
                    });
                    let delay = (!e.cancelled).then(|| self.queue.cfg.backoff(delivered));
                    let _ = msg.ack_with(AckKind::Nak(delay)).await;
                    return;
                }
                (self.report)(Report::Failed {
                    job: name.clone(),
                    error: e.message.clone(),
                });
                let failure = Failure {
                    key: job.key.clone(),
                    job: name,
                    message: e.message,
                    hint: e.hint,
                    bad_input: e.bad_input,
                    attempts: delivered.max(1) as u64,
                    worker: self.opts.name.clone(),
                };
                match self.cache.put_failure(&failure).await {
                    Ok(()) => {
                        self.notify(&job.key).await;
                        let _ = msg.ack_with(AckKind::Term).await;
                    }
                    Err(e) => {
                        (self.report)(Report::Warning(format!("cannot record a failure: {e}")));
                        let _ = msg
                            .ack_with(AckKind::Nak(Some(self.queue.cfg.backoff(1))))
                            .await;
                    }
                }
            }
        }
    }

    /// Fetches what the job reads, runs it, shares the result. `Ok(won)`.
    async fn run_job(&self, job: &RemoteJob, lane: Lane) -> Result<bool, StageError> {
        let transient = |e: crate::s3cache::CacheError| StageError::retryable(e.to_string());
        for key in job.upstream_keys() {
            if self.store.has(key) {
                continue;
            }
            if self
                .cache
                .fetch(&self.store, key)
                .await
                .map_err(transient)?
                .is_none()
            {
                return Err(StageError::retryable(format!(
                    "upstream entry {} of {} is not in the shared cache (or a blob of it is damaged)",
                    &key[..12],
                    job.label.describe()
                )));
            }
        }
        let mut videos = BTreeMap::new();
        for v in job.videos() {
            let path = self
                .opts
                .work_dir
                .join("videos")
                .join(&v.hash)
                .join(&v.name);
            if !std::fs::metadata(&path).is_ok_and(|m| m.len() == v.size) {
                let tmp = self.store.tmp_path();
                if !self
                    .cache
                    .get_blob(&v.hash, &tmp)
                    .await
                    .map_err(transient)?
                {
                    return Err(StageError::retryable(format!(
                        "video {} ({}) is not in the shared cache",
                        v.rel.display(),
                        &v.hash[..12]
                    )));
                }
                let moved = std::fs::create_dir_all(path.parent().expect("folder"))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = moved {
                    vsum_engine::store::discard(&tmp);
                    return Err(StageError::retryable(format!(
                        "cannot keep video {}: {e}",
                        path.display()
                    )));
                }
            }
            videos.insert(v.hash.clone(), path);
        }
        let entry = if lane == Lane::Gpu
            && let Some(gpu) = &self.gpu
        {
            let (reply, rx) = oneshot::channel();
            let g = GpuJob {
                job: job.clone(),
                videos,
                reply,
            };
            gpu.send(g)
                .await
                .map_err(|_| StageError::retryable("the GPU lane stopped"))?;
            rx.await
                .map_err(|_| StageError::retryable("the GPU lane stopped"))??
        } else {
            let (store, registry, cancel) = (
                self.store.clone(),
                self.registry.clone(),
                self.cancel.clone(),
            );
            let (base, threads, job) = (self.opts.base_dir.clone(), self.opts.threads, job.clone());
            tokio::task::spawn_blocking(move || {
                let events = EventSink::new();
                let env = WorkerEnv {
                    registry: &registry,
                    store: &store,
                    base_dir: &base,
                    threads,
                    cancel: &cancel,
                    events: &events,
                };
                run_remote(&job, &videos, &env, None)
            })
            .await
            .map_err(|e| StageError::retryable(format!("the job panicked: {e}")))??
        };
        let created = self
            .cache
            .share(&self.store, &entry.key)
            .await
            .map_err(transient)?;
        Ok(created == Created::Won)
    }
}
