//! The coordinator's side: an [`Executor`] that sends the jobs the local store misses
//! to workers through the queue and takes their results from the shared cache. For
//! each job, in order: the shared cache may already hold it (then it is adopted into
//! the local store and reported cached: nothing runs); otherwise its upstream entries
//! and its videos are shared first (a worker needs nothing else: no shared
//! filesystem), the job is published (message id = key), and its entry (or a worker's
//! failure record) is waited for in the shared cache. The engine still plans, keys,
//! schedules, restores and places; the engine only releases a job once its upstreams
//! are done, so a job is published only once its upstream entries exist.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, select};
use vsum_engine::run::{Completions, Executor, Job, RemoteJob};
use vsum_engine::stage::StageError;
use vsum_engine::store::{LockMode, Store};

use crate::queue::{Queue, QueueConfig};
use crate::s3cache::{CacheError, S3Cache};

/// Where a job's result came from.
enum Found {
    /// The shared cache had it already.
    Shared,
    /// A worker ran it.
    Ran,
}

struct Ctx {
    queue: Queue,
    cache: S3Cache,
    local: Store,
    /// Videos already shared during this run.
    uploaded: Mutex<HashSet<String>>,
    run_id: String,
    /// Jobs waited for, woken early by a worker's notice (`vsum.done`); the shared
    /// cache is polled anyway, so a lost notice only costs time.
    waiters: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

/// Runs jobs on `vsum worker`s through NATS JetStream and an S3 cache.
pub struct NatsExecutor {
    rt: tokio::runtime::Runtime,
    ctx: Arc<Ctx>,
    capacity: usize,
    url: String,
}

impl NatsExecutor {
    /// Connects to the queue (`nats://HOST:PORT`) and the shared cache
    /// (`s3://BUCKET/PREFIX`); `local` is the run's own cache folder (the first level).
    pub fn connect(
        nats: &str,
        cache: &str,
        local: &Path,
        cfg: QueueConfig,
        capacity: usize,
    ) -> anyhow::Result<NatsExecutor> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("vsum-coordinator")
            .build()?;
        let cache = S3Cache::open(cache)?;
        let queue = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), Queue::connect(nats, cfg))
                .await
                .map_err(|_| anyhow::anyhow!("job queue {nats}: no server answered within 30 s"))?
                .map_err(anyhow::Error::from)
        })?;
        let local = Store::open(local, LockMode::Shared)?;
        let advisories = rt.block_on(queue.client.subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
            crate::queue::STREAM
        )))?;
        rt.spawn(given_up(advisories, queue.clone(), cache.clone()));
        let notices = rt.block_on(queue.client.subscribe(crate::queue::DONE))?;
        let ctx = Arc::new(Ctx {
            queue,
            cache,
            local,
            uploaded: Mutex::new(HashSet::new()),
            run_id: vsum_engine::run::new_run_id(),
            waiters: Mutex::new(HashMap::new()),
        });
        rt.spawn(wake_on_notices(notices, ctx.clone()));
        Ok(NatsExecutor {
            rt,
            ctx,
            capacity: capacity.max(1),
            url: nats.to_string(),
        })
    }
}

impl Executor for NatsExecutor {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn serve<'r>(&self, jobs: Receiver<Job<'r>>, done: Completions) {
        let (tx, results) = crossbeam_channel::unbounded::<(u64, Result<Found, StageError>)>();
        let mut pending: HashMap<u64, Job<'r>> = HashMap::new();
        let never = crossbeam_channel::never();
        let mut open = true;
        let mut next = 0u64;
        let tick = crossbeam_channel::tick(Duration::from_millis(200));
        // Nothing came back for a while: say so (no worker running is the usual cause).
        let quiet = Duration::from_secs(120);
        let mut last_news = std::time::Instant::now();
        while open || !pending.is_empty() {
            let incoming = if open { &jobs } else { &never };
            select! {
                recv(incoming) -> job => match job {
                    Ok(job) => {
                        // Out of this process now: in flight on the screen until it
                        // comes back (from the shared cache, a worker, or a failure).
                        job.started();
                        let spec = job.remote();
                        let videos = job.video_files();
                        let id = next;
                        next += 1;
                        pending.insert(id, job);
                        let (ctx, tx) = (self.ctx.clone(), tx.clone());
                        self.rt.spawn(async move {
                            let r = ctx.handle(spec, videos).await;
                            let _ = tx.send((id, r));
                        });
                    }
                    Err(_) => open = false,
                },
                recv(results) -> r => {
                    let (id, r) = r.expect("a sender is held");
                    last_news = std::time::Instant::now();
                    let Some(job) = pending.remove(&id) else { continue };
                    done.send(match r {
                        Ok(Found::Shared) => job.collect_cached("restored from the shared cache"),
                        Ok(Found::Ran) => job.collect(),
                        Err(e) => job.fail(e),
                    });
                }
                recv(tick) -> _ => {
                    // Ctrl-C: jobs still out are reported now; workers finish them into
                    // the shared cache, where the next run finds them.
                    if pending.values().next().is_some_and(|j| j.cancelled()) {
                        for (_, job) in pending.drain() {
                            done.send(job.fail(StageError::cancelled()));
                        }
                    }
                    if let Some(job) = pending.values().next()
                        && last_news.elapsed() >= quiet
                    {
                        last_news = std::time::Instant::now();
                        job.events().emit(vsum_engine::events::Event::Warning {
                            message: format!(
                                "no job came back from the workers for {} s ({} out on {}); is a `vsum worker` running against this queue and cache? (GPU-lane jobs need one started with --gpu)",
                                quiet.as_secs(),
                                pending.len(),
                                self.url
                            ),
                        });
                    }
                }
            }
        }
    }
}

fn transient(e: CacheError) -> StageError {
    StageError::retryable(e.to_string())
}

impl Ctx {
    async fn handle(
        &self,
        job: RemoteJob,
        videos: Vec<(String, PathBuf)>,
    ) -> Result<Found, StageError> {
        let key = job.key.clone();
        // A job the queue may have seen before (its entry since lost, or a failure
        // recorded) goes under a fresh message id: the server drops the key's own id
        // as a duplicate for a while, even after the job was acked.
        let mut fresh = false;
        match self
            .cache
            .fetch(&self.local, &key)
            .await
            .map_err(transient)?
        {
            Some(_) => return Ok(Found::Shared),
            None => {
                // An entry whose blobs are gone or damaged is no entry: it goes, so
                // the recomputed one can be created.
                if self.cache.has_entry(&key).await.map_err(transient)? {
                    self.cache.delete_entry(&key).await.map_err(transient)?;
                    fresh = true;
                }
            }
        }
        for up in job.upstream_keys() {
            if !self.cache.complete(up).await.map_err(transient)? {
                self.cache.delete_entry(up).await.map_err(transient)?;
                self.cache.share(&self.local, up).await.map_err(transient)?;
            }
        }
        for (hash, path) in videos {
            if self.uploaded.lock().expect("uploaded").contains(&hash) {
                continue;
            }
            self.cache.put_blob(&hash, &path).await.map_err(transient)?;
            self.uploaded.lock().expect("uploaded").insert(hash);
        }
        // A failure recorded by an earlier run is retried.
        if self
            .cache
            .get_failure(&key)
            .await
            .map_err(transient)?
            .is_some()
        {
            self.cache.delete_failure(&key).await.map_err(transient)?;
            fresh = true;
        }
        let fresh_id = format!("{key}.{}", self.run_id);
        let mut msg_id = if fresh { fresh_id.clone() } else { key.clone() };
        let mut wait = Duration::from_millis(200);
        loop {
            match self.queue.publish(&job, &msg_id).await {
                // Dropped as a duplicate of an earlier publish: fine while that one is
                // still queued or leased; if it is gone (done, and its entry lost
                // since), the job goes again under a fresh id.
                Ok(true) if msg_id != fresh_id && !self.queue.queued(job.lane, &key).await => {
                    msg_id = fresh_id.clone();
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "publishing a job failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        self.waiters
            .lock()
            .expect("waiters")
            .insert(key.clone(), wake.clone());
        let found = self.wait_for(&key, &wake).await;
        self.waiters.lock().expect("waiters").remove(&key);
        found
    }

    /// Waits for the job's entry (or its failure record) in the shared cache.
    async fn wait_for(&self, key: &str, wake: &tokio::sync::Notify) -> Result<Found, StageError> {
        let key = key.to_string();
        let mut poll = Duration::from_millis(50);
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            // Notices wake the wait; polling is the fallback (a notice lost in a NATS
            // restart), kept slow so hundreds of waiting jobs do not flood S3.
            poll = (poll * 3 / 2).min(Duration::from_secs(5));
            match self.cache.fetch(&self.local, &key).await {
                Ok(Some(_)) => return Ok(Found::Ran),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the shared cache failed; retrying");
                    continue;
                }
            }
            match self.cache.get_failure(&key).await {
                Ok(Some(f)) => {
                    return Err(StageError {
                        message: format!(
                            "{} (on worker {}, after {} deliver{})",
                            f.message,
                            f.worker,
                            f.attempts,
                            if f.attempts == 1 { "y" } else { "ies" }
                        ),
                        hint: f.hint,
                        retryable: false,
                        cancelled: false,
                        out_of_memory: false,
                        bad_input: f.bad_input,
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reading the shared cache failed; retrying"),
            }
        }
    }
}

/// A job whose deliveries ran out without a worker recording why (each worker that
/// took it died or stalled past its lease, or was stopped): the server says so in an
/// advisory; it is recorded as failed (so the run reports it instead of waiting) and
/// removed from the stream.
async fn given_up(mut advisories: async_nats::Subscriber, queue: Queue, cache: S3Cache) {
    use futures::StreamExt;
    while let Some(m) = advisories.next().await {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
            continue;
        };
        let (Some(seq), deliveries) = (v["stream_seq"].as_u64(), v["deliveries"].as_u64()) else {
            continue;
        };
        let Ok(stream) = queue.stream().await else {
            continue;
        };
        let Ok(raw) = stream.get_raw_message(seq).await else {
            continue;
        };
        let Ok(job) = serde_json::from_slice::<RemoteJob>(&raw.payload) else {
            continue;
        };
        let recorded = matches!(cache.get_failure(&job.key).await, Ok(Some(_)));
        if !recorded && !matches!(cache.complete(&job.key).await, Ok(true)) {
            let f = crate::s3cache::Failure {
                key: job.key.clone(),
                job: job.label.describe(),
                message: "no worker finished the job: each one that took it stopped or went silent past its lease".into(),
                hint: Some("see the workers' logs (killed? out of memory?); a rerun tries the job again".into()),
                bad_input: false,
                attempts: deliveries.unwrap_or(0),
                worker: "-".into(),
            };
            if let Err(e) = cache.put_failure(&f).await {
                tracing::warn!(error = %e, "cannot record a job given up on");
            }
        }
        let _ = stream.delete_message(seq).await;
    }
}

/// Wakes the waiter of each job a worker says it finished (or gave up on).
async fn wake_on_notices(mut notices: async_nats::Subscriber, ctx: Arc<Ctx>) {
    use futures::StreamExt;
    while let Some(m) = notices.next().await {
        let Ok(key) = std::str::from_utf8(&m.payload) else {
            continue;
        };
        if let Some(w) = ctx.waiters.lock().expect("waiters").get(key) {
            w.notify_one();
        }
    }
}
