//! Runs a batch: discovers videos, builds the job graph, and schedules every job.
//!
//! A single coordinator (the calling thread) releases a job once all it needs is done.
//! Each released job is planned on the rayon CPU pool: its fingerprint and key are
//! computed and the cache is looked up (a hit is restored without running). Misses of
//! CPU stages run right there; misses of GPU stages go through a crossbeam channel to
//! ONE GPU-lane thread that owns loaded models and runs its jobs one at a time, picking
//! jobs of the model it has loaded first. Results come back to the coordinator, which
//! skips the dependents of failures (that video only), opens a circuit breaker after
//! repeated failures of one kind, and stops releasing jobs on cancellation.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use petgraph::Direction;
use petgraph::graph::NodeIndex;
use serde::Serialize;

use crate::alerts::{Alerts, Level};
use crate::config::Config;
use crate::discover::{self, video_id};
use crate::events::{Event, EventSink, JobLabel, Outcome};
use crate::fingerprint::{Fingerprint, SCHEMA};
use crate::fsutil::write_atomic;
use crate::graph::{self, JobGraph, JobNode};
use crate::hash::FileHasher;
use crate::manifest::{Manifest, StageSpec};
use crate::safety;
use crate::stage::{
    BatchItem, JobCtx, KeyEnv, Lane, Provenance, Registry, Resources, Scope, StageError, Video,
};
use crate::store::{Entry, Lookup, Store, now_secs};
use crate::watch::{MonitorSummary, Watch};

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
    /// Only these videos (paths relative to the manifest), e.g. last run's failures.
    pub only_videos: Option<BTreeSet<PathBuf>>,
}

/// One job's record in the run summary.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct JobRecord {
    #[serde(flatten)]
    pub label: JobLabel,
    pub outcome: Outcome,
    pub key: Option<String>,
    /// Why it ran or would run (a miss), e.g. the fingerprint fields that changed.
    pub reason: Option<String>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub attempts: u32,
    /// The video itself was the problem (unreadable, empty, corrupt, unsupported): the
    /// failure is that video's only and does not count toward the error-rate stop or a
    /// circuit breaker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bad_input: bool,
    /// Things worth knowing about how it ran (e.g. a fallback to the CPU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Milliseconds since the run started.
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Counts {
    pub jobs: usize,
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    pub would_run: usize,
}

/// The outcome of a run, saved as `.vsum/runs/<run_id>.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub manifest: String,
    pub started: u64,
    pub wall_ms: u64,
    pub dry_run: bool,
    pub interrupted: bool,
    pub videos: usize,
    /// Total size of the videos, bytes.
    #[serde(default)]
    pub video_bytes: u64,
    pub output_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// Inputs or videos that could not be read.
    pub problems: Vec<String>,
    /// Why the batch stopped early (disk full, error rate), if it did.
    pub stopped: Option<String>,
    /// Machine readings: peaks, timeline, alerts (absent without monitoring).
    pub monitor: Option<MonitorSummary>,
    pub counts: Counts,
    pub jobs: Vec<JobRecord>,
}

impl RunSummary {
    /// 0 all good, 1 some video or input failed, 130 interrupted.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            130
        } else if self.counts.failed > 0
            || self.counts.skipped > 0
            || self.counts.cancelled > 0
            || self.stopped.is_some()
            || !self.problems.is_empty()
        {
            1
        } else {
            0
        }
    }
}

struct Shared<'a> {
    manifest: &'a Manifest,
    registry: &'a Registry,
    config: &'a Config,
    store: &'a Store,
    hasher: FileHasher,
    events: EventSink,
    cancel: &'a AtomicBool,
    t0: Instant,
    output_dir: PathBuf,
    videos: Vec<Video>,
    force: BTreeSet<String>,
    dry_run: bool,
    /// Threads a job may use inside itself.
    job_threads: usize,
    /// The cores both lanes share, so they never oversubscribe the machine.
    cores: crate::cores::Cores,
    /// The machine watch, when monitoring.
    watch: Option<Watch>,
    /// Why the batch stops early; once set, no job starts.
    stop: Mutex<Option<String>>,
    /// Circuit breakers: consecutive failures per breaker name, and the open ones.
    breakers: Mutex<(BTreeMap<String, u32>, BTreeSet<String>)>,
}

/// What a finished upstream hands to its dependents.
#[derive(Debug, Clone)]
struct Done {
    outcome: Outcome,
    digest: Option<String>,
    key: Option<String>,
    tools: BTreeMap<String, String>,
}

/// The result of planning a job: it must run, or it is already finished.
enum Plan {
    Run(Box<Planned>),
    Done(Box<Finished>),
}

/// A planned job that missed the cache.
struct Planned {
    node: NodeIndex,
    job: JobNode,
    label: JobLabel,
    fingerprint: Fingerprint,
    key: String,
    upstream: BTreeMap<String, PathBuf>,
    provenance: BTreeMap<String, Provenance>,
    batch: Vec<BatchItem>,
    group: Option<String>,
}

struct Finished {
    node: NodeIndex,
    record: JobRecord,
    digest: Option<String>,
    /// Came from a pool task that held a CPU slot (set when it is sent).
    held_slot: bool,
    /// The tool and model versions in its fingerprint (for provenance downstream).
    tools: BTreeMap<String, String>,
}

enum Msg {
    Finished(Box<Finished>),
    /// A pool task handed its job to the GPU lane: a CPU slot is free again.
    LeftPool,
}

impl Shared<'_> {
    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn stage(&self, job: JobNode) -> &StageSpec {
        &self.manifest.stages[job.stage]
    }

    fn label(&self, node: NodeIndex, job: JobNode) -> JobLabel {
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

    fn record(&self, label: JobLabel, outcome: Outcome, start_ms: u64) -> JobRecord {
        JobRecord {
            label,
            outcome,
            key: None,
            reason: None,
            error: None,
            hint: None,
            attempts: 0,
            bad_input: false,
            notes: Vec::new(),
            start_ms,
            end_ms: self.ms(),
        }
    }

    /// Computes the key and looks it up: a hit is restored here and finishes the job.
    fn plan(&self, node: NodeIndex, job: JobNode, ups: Vec<(JobNode, Done)>) -> Plan {
        let start = self.ms();
        let st = self.stage(job);
        let label = self.label(node, job);
        let kind = self.registry.get(&st.kind).expect("validated kind");
        let finish = |record: JobRecord, digest: Option<String>| Finished {
            held_slot: false,
            tools: BTreeMap::new(),
            node,
            record,
            digest,
        };

        // Upstream: per-video stage id -> folder, or per video for batch jobs.
        let mut upstream = BTreeMap::new();
        let mut up_digests = BTreeMap::new();
        let mut batch: BTreeMap<usize, BatchItem> = BTreeMap::new();
        let mut unknown_upstream = None;
        let mut provenance = BTreeMap::new();
        for (up, done) in &ups {
            let up_id = self.stage(*up).id.clone();
            if up.video == job.video {
                provenance.insert(
                    up_id.clone(),
                    Provenance {
                        kind: self.stage(*up).kind.clone(),
                        key: done.key.clone().unwrap_or_default(),
                        tools: done.tools.clone(),
                    },
                );
            }
            let Some(digest) = &done.digest else {
                unknown_upstream = Some(up_id);
                continue;
            };
            let folder = self.out_folder(*up);
            match (job.video, up.video) {
                (None, Some(v)) => {
                    let name = self.videos[v].folder.to_string_lossy().into_owned();
                    up_digests.insert(format!("{up_id}/{name}"), digest.clone());
                    batch
                        .entry(v)
                        .or_insert_with(|| BatchItem {
                            video: self.videos[v].clone(),
                            upstream: BTreeMap::new(),
                        })
                        .upstream
                        .insert(up_id, folder);
                }
                _ => {
                    up_digests.insert(up_id.clone(), digest.clone());
                    upstream.insert(up_id, folder);
                }
            }
        }
        if let Some(up) = unknown_upstream {
            // Dry run only: an upstream would run, so this key cannot be known yet.
            let mut r = self.record(label, Outcome::WouldRun, start);
            r.reason = Some(format!("upstream '{up}' would run first"));
            return Plan::Done(Box::new(finish(r, None)));
        }

        let video = job.video.map(|v| &self.videos[v]);
        let extras = match kind.key_extras(
            &st.params,
            &KeyEnv {
                base_dir: &self.manifest.base_dir,
                output_root: &self.output_dir,
                video,
                hasher: &self.hasher,
            },
        ) {
            Ok(x) => x,
            Err(e) => {
                let mut r = self.record(label, Outcome::Failed, start);
                r.error = Some(e.message);
                r.hint = e.hint;
                return Plan::Done(Box::new(finish(r, None)));
            }
        };
        let mut inputs = extras.inputs;
        if let Some(v) = video {
            inputs.insert("video".into(), v.hash.clone());
        }
        let fingerprint = Fingerprint {
            schema: SCHEMA,
            kind: st.kind.clone(),
            kind_version: kind.version(),
            params: st.params.clone(),
            inputs,
            upstream: up_digests,
            tools: extras.tools,
        };
        let key = fingerprint.key();
        let forced = self.force.contains(&st.id);
        let lookup = if forced {
            Lookup::Missing
        } else {
            self.store.lookup(&key)
        };
        let ref_id = self.ref_id(job);
        match lookup {
            Lookup::Hit(entry) => {
                // Restored the same way a finished job's outputs are published.
                let mut r = self.record(label, Outcome::Cached, start);
                r.key = Some(key);
                let digest = if self.dry_run {
                    Some(entry.digest())
                } else {
                    self.publish(job, &entry, &mut r)
                };
                r.end_ms = self.ms();
                Plan::Done(Box::new(Finished {
                    tools: entry.fingerprint.tools.clone(),
                    ..finish(r, digest)
                }))
            }
            other => {
                if let Lookup::Untrusted(why) = &other {
                    self.events.emit(Event::Warning {
                        message: format!("{}: {why}; recomputing", label.describe()),
                    });
                }
                let reason = if forced {
                    "forced with --force".to_string()
                } else {
                    self.miss_reason(&ref_id, &st.id, &fingerprint)
                };
                if self.dry_run {
                    let mut r = self.record(label, Outcome::WouldRun, start);
                    r.key = Some(key);
                    r.reason = Some(reason);
                    return Plan::Done(Box::new(finish(r, None)));
                }
                Plan::Run(Box::new(Planned {
                    node,
                    job,
                    label,
                    fingerprint,
                    key,
                    upstream,
                    provenance,
                    batch: batch.into_values().collect(),
                    group: kind.resource_group(&st.params),
                }))
            }
        }
    }

    /// Explains a miss by diffing against the last entry made for this video and stage.
    fn miss_reason(&self, ref_id: &str, stage: &str, fp: &Fingerprint) -> String {
        let Some(old_key) = self.store.get_ref(ref_id, stage) else {
            return "never run for this video".into();
        };
        match self.store.read_entry(&old_key) {
            Ok(old) => {
                let diff = fp.diff(&old.fingerprint);
                if diff.is_empty() {
                    "cached entry was removed or failed verification".into()
                } else {
                    format!("changed since last run: {}", diff.join("; "))
                }
            }
            Err(_) => "previous entry was removed (gc or verify)".into(),
        }
    }

    /// Runs a missed job with retries, commits and materializes its outputs.
    fn execute(&self, p: Planned, mut resources: Option<&mut Resources>) -> Finished {
        let st = self.stage(p.job);
        let kind = self.registry.get(&st.kind).expect("validated kind");
        let retries = st.retries.unwrap_or(self.config.retries);
        let video = p.job.video.map(|v| &self.videos[v]);
        let start = self.ms();
        let mut attempt = 0;
        let stopped = self.stopped();
        if self.cancel.load(Ordering::Relaxed) || stopped.is_some() {
            let mut r = self.record(p.label, Outcome::Cancelled, start);
            r.key = Some(p.key);
            r.error = stopped.map(|why| format!("not started: {why}"));
            return Finished {
                held_slot: false,
                tools: BTreeMap::new(),
                node: p.node,
                record: r,
                digest: None,
            };
        }
        if self.breaker_open(st) {
            let mut r = self.record(p.label, Outcome::Skipped, start);
            r.key = Some(p.key);
            r.error = Some(breaker_message(
                self.config.breaker_threshold,
                &breaker_name(st),
            ));
            return Finished {
                held_slot: false,
                tools: BTreeMap::new(),
                node: p.node,
                record: r,
                digest: None,
            };
        }
        // One process at a time works on a key: another run sharing the cache that is
        // already on it is waited for, and its result reused.
        let claim = match self.store.claim(&p.key, self.cancel) {
            Ok(c) => c,
            Err(_) if self.cancel.load(Ordering::Relaxed) => {
                let mut r = self.record(p.label, Outcome::Cancelled, start);
                r.key = Some(p.key);
                return Finished {
                    held_slot: false,
                    tools: BTreeMap::new(),
                    node: p.node,
                    record: r,
                    digest: None,
                };
            }
            Err(_) => None, // no claim (e.g. a read-only cache): run unclaimed, as before
        };
        if claim.as_ref().is_some_and(|c| c.waited)
            && let Lookup::Hit(entry) = self.store.lookup(&p.key)
        {
            let mut r = self.record(p.label.clone(), Outcome::Cached, start);
            r.key = Some(p.key.clone());
            r.notes
                .push("made meanwhile by another run sharing the cache".into());
            let digest = self.publish(p.job, &entry, &mut r);
            r.end_ms = self.ms();
            return Finished {
                held_slot: false,
                tools: entry.fingerprint.tools.clone(),
                node: p.node,
                record: r,
                digest,
            };
        }
        let threads = if st.lane == Lane::Gpu {
            self.config.threads()
        } else {
            self.job_threads
        };
        // Cores for the job: a CPU-lane job its share; a GPU-lane job one, topped up by
        // the stage when its model computes on the CPU.
        let held_cores = if st.lane == Lane::Gpu {
            1
        } else {
            self.job_threads
        };
        let _cores = if st.lane == Lane::Gpu {
            self.cores.gpu(held_cores)
        } else {
            self.cores.cpu(held_cores)
        };
        let mut force_cpu = false;
        let mut notes = Vec::new();
        let outcome = loop {
            attempt += 1;
            self.events.emit(Event::JobStarted {
                job: p.label.clone(),
                attempt,
                at_ms: self.ms(),
            });
            let began = Instant::now();
            let job_dir = match self.store.job_dir() {
                Ok(d) => d,
                Err(e) => {
                    break Err(StageError::retryable(format!(
                        "cannot create a work folder in the cache: {e}"
                    )));
                }
            };
            let mut ctx = JobCtx {
                stage_id: &st.id,
                params: &st.params,
                base_dir: &self.manifest.base_dir,
                output_root: &self.output_dir,
                out_dir: &job_dir,
                video,
                upstream: &p.upstream,
                provenance: &p.provenance,
                batch: &p.batch,
                threads,
                cancel: self.cancel,
                resources: resources.as_deref_mut(),
                force_cpu,
                events: &self.events,
                cores: Some(&self.cores),
                held_cores,
            };
            let result = kind.run(&mut ctx).and_then(|()| {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(StageError::cancelled());
                }
                let video_name = video.map(|v| v.rel.to_string_lossy().into_owned());
                let entry = self
                    .store
                    .commit(
                        &p.key,
                        &p.fingerprint,
                        &st.id,
                        video_name,
                        &job_dir,
                        began.elapsed().as_millis() as u64,
                    )
                    .map_err(|e| {
                        StageError::retryable(format!("cannot store outputs in the cache: {e}"))
                    })?;
                Ok(entry)
            });
            match result {
                Ok(entry) => break Ok(entry),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&job_dir);
                    if e.cancelled || self.cancel.load(Ordering::Relaxed) {
                        break Err(StageError::cancelled());
                    }
                    if e.out_of_memory && !force_cpu {
                        // Once per job, and it does not use up the retries.
                        force_cpu = true;
                        let note = format!("GPU out of memory ({}); retried on the CPU", e.message);
                        self.events.emit(Event::Warning {
                            message: format!("{}: {note}", p.label.describe()),
                        });
                        notes.push(note);
                        attempt -= 1;
                        continue;
                    }
                    if e.retryable && attempt <= retries {
                        let delay = self
                            .config
                            .retry_backoff_ms
                            .saturating_mul(1 << (attempt - 1).min(16));
                        self.events.emit(Event::JobRetrying {
                            job: p.label.clone(),
                            attempt,
                            error: e.message.clone(),
                            delay_ms: delay,
                        });
                        if !sleep_unless_cancelled(Duration::from_millis(delay), self.cancel) {
                            break Err(StageError::cancelled());
                        }
                        continue;
                    }
                    break Err(e);
                }
            }
        };
        drop(claim);
        let mut record = self.record(p.label.clone(), Outcome::Ran, start);
        record.key = Some(p.key.clone());
        record.attempts = attempt;
        record.reason = None;
        record.notes = notes;
        // A bad video says nothing about the stage or the machine: it neither opens nor
        // resets a breaker.
        if !outcome.as_ref().is_err_and(|e| e.bad_input) {
            self.breaker_count(
                st,
                outcome.is_ok() || outcome.as_ref().is_err_and(|e| e.cancelled),
            );
        }
        let digest = match outcome {
            Ok(entry) => self.publish(p.job, &entry, &mut record),
            Err(e) if e.cancelled => {
                record.outcome = Outcome::Cancelled;
                None
            }
            Err(e) => {
                record.outcome = Outcome::Failed;
                record.error = Some(e.message);
                record.hint = e.hint;
                record.bad_input = e.bad_input;
                None
            }
        };
        record.end_ms = self.ms();
        Finished {
            held_slot: false,
            tools: p.fingerprint.tools.clone(),
            node: p.node,
            record,
            digest,
        }
    }

    /// Copies a batch stage's `publish:` files to the top of the output folder. A file
    /// already there is replaced only when vsum wrote it (its content is what vsum last
    /// published, or a link to a cache object): the user's own INDEX.md stays.
    fn publish_files(&self, job: JobNode, dest: &std::path::Path) -> Result<(), String> {
        use std::fs;
        for name in &self.stage(job).publish {
            let src = dest.join(name);
            if !src.is_file() {
                self.events.emit(Event::Warning {
                    message: format!(
                        "stage '{}' did not produce '{name}', listed in `publish:`",
                        self.stage(job).id
                    ),
                });
                continue;
            }
            let target = self.output_dir.join(name);
            let shown = target.display();
            let fail = |e: std::io::Error| format!("cannot publish {shown}: {e}");
            safety::no_symlink_below(&self.output_dir, &target).map_err(fail)?;
            let new_hash = crate::hash::hash_file(&src).map_err(fail)?;
            match fs::symlink_metadata(&target) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(e)),
                Ok(md) if !md.is_file() => {
                    return Err(format!(
                        "cannot publish {shown}: something that is not a regular file is there, and vsum did not put it there; move it away"
                    ));
                }
                Ok(_) => {
                    let cur = crate::hash::hash_file(&target).map_err(fail)?;
                    let ours = cur == new_hash
                        || self.store.published_hash(&self.output_dir, name).as_deref()
                            == Some(cur.as_str())
                        || self.store.is_object_link(&target, &cur);
                    if !ours {
                        return Err(format!(
                            "not publishing {shown}: a file vsum did not write is there, and vsum never overwrites one; move it away, or give `output:` a folder of its own"
                        ));
                    }
                    if cur == new_hash && !self.store.is_object_link(&target, &cur) {
                        self.store
                            .set_published(&self.output_dir, name, &new_hash)
                            .map_err(fail)?;
                        continue;
                    }
                }
            }
            // A copy, not a link: an edit of the published file never reaches the cache.
            let tmp = crate::fsutil::temp_beside(&target);
            let placed = fs::copy(&src, &tmp)
                .and_then(|_| self.store.set_published(&self.output_dir, name, &new_hash))
                .and_then(|()| fs::rename(&tmp, &target));
            if let Err(e) = placed {
                let _ = fs::remove_file(&tmp);
                return Err(fail(e));
            }
        }
        Ok(())
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
        while w.pause_reason().is_some()
            && self.stopped().is_none()
            && !self.cancel.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn breaker_open(&self, st: &StageSpec) -> bool {
        self.breakers
            .lock()
            .expect("breakers")
            .1
            .contains(&breaker_name(st))
    }

    /// Counts a success (resets) or a failure; opens the breaker at the threshold.
    fn breaker_count(&self, st: &StageSpec, ok: bool) {
        let name = breaker_name(st);
        let mut b = self.breakers.lock().expect("breakers");
        let n = b.0.entry(name.clone()).or_default();
        if ok {
            *n = 0;
            return;
        }
        *n += 1;
        let n = *n;
        if n >= self.config.breaker_threshold.max(1) && b.1.insert(name.clone()) {
            drop(b);
            self.events.emit(Event::BreakerOpened {
                kind: name,
                failures: n,
            });
        }
    }

    /// Places a finished (or cached) entry's outputs in the job's output folder,
    /// replacing only the files vsum placed there before, and publishes batch files.
    fn publish(&self, job: JobNode, entry: &Entry, record: &mut JobRecord) -> Option<String> {
        let dest = self.out_folder(job);
        let ref_id = self.ref_id(job);
        let stage = &self.stage(job).id;
        let old = self.store.read_ref(&ref_id, stage);
        let folder = crate::store::Ref::folder_id(&dest);
        let previous: Vec<String> = match &old {
            Some(r) if r.dest.as_deref() == Some(folder.as_str()) => r.files.clone(),
            // A ref of an older vsum: what that entry placed (its outputs).
            Some(r) if r.dest.is_none() => self
                .store
                .read_entry(&r.key)
                .map(|e| e.outputs.keys().cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        // Stamps of the files as vsum placed them here: unchanged ones are not copied again.
        let stamps = match &old {
            Some(r) if r.dest.as_deref() == Some(folder.as_str()) => r.stamps.clone(),
            _ => BTreeMap::new(),
        };
        let files: Vec<String> = entry.outputs.keys().cloned().collect();
        let mut placed = crate::store::Ref {
            key: entry.key.clone(),
            dest: Some(folder),
            files: previous.clone(),
            stamps: BTreeMap::new(),
        };
        // On record before anything is placed: a crash midway leaves every file vsum
        // may have placed known, so a later cleanup can still remove it.
        placed
            .files
            .extend(files.iter().filter(|f| !previous.contains(f)).cloned());
        let result = (if placed.files == previous {
            Ok(())
        } else {
            self.store.set_ref(&ref_id, stage, &placed)
        })
        .and_then(|()| {
            self.store.materialize(
                entry,
                &self.output_dir,
                &dest,
                &previous,
                &stamps,
                self.config.link,
            )
        });
        match result {
            Ok(stamps) => placed.stamps = stamps,
            Err(e) => {
                record.outcome = Outcome::Failed;
                record.error = Some(format!("cannot write outputs into {}: {e}", dest.display()));
                record.hint = Some("check that the output folder is writable and has space; the result is cached, so a rerun only restores it".into());
                return None;
            }
        }
        placed.files = files;
        let _ = self.store.set_ref(&ref_id, stage, &placed);
        if let Err(e) = self.publish_files(job, &dest) {
            record.outcome = Outcome::Failed;
            record.error = Some(e);
            record.hint = Some(
                "the stage's own outputs are in place and cached; a rerun only publishes".into(),
            );
            return None;
        }
        Some(entry.digest())
    }
}

/// What a circuit breaker counts: a stage kind; each command stage counts on its own,
/// since two command stages share nothing but the name `command`.
fn breaker_name(st: &StageSpec) -> String {
    if st.kind == crate::manifest::COMMAND_KIND {
        format!("command:{}", st.id)
    } else {
        st.kind.clone()
    }
}

fn breaker_message(threshold: u32, kind: &str) -> String {
    format!(
        "circuit breaker open: {threshold} '{kind}' jobs failed in a row, so no more start in this run; fix the cause and rerun"
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn sleep_unless_cancelled(d: Duration, cancel: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    true
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

/// Runs (or, with `dry_run`, plans) the batch.
pub fn run(
    manifest: &Manifest,
    registry: &Registry,
    config: &Config,
    store: &Store,
    opts: &RunOptions,
    events: EventSink,
    cancel: &AtomicBool,
) -> Result<RunSummary, RunError> {
    let t0 = Instant::now();
    let started = now_secs();
    if let Some(why) = safety::output_problem(
        &manifest.output_dir(),
        &manifest.base_dir,
        &manifest.inputs,
        Some(store.root()),
    ) {
        return Err(RunError::UnsafeOutput(why));
    }
    // One run at a time writes into an output folder (a lock on the folder itself).
    let _output_lock = if opts.dry_run {
        None
    } else {
        Some(lock_output(&manifest.output_dir())?)
    };
    let ids: Vec<&str> = manifest.stages.iter().map(|s| s.id.as_str()).collect();
    for s in opts.only.iter().chain(&opts.force) {
        if !ids.contains(&s.as_str()) {
            return Err(RunError::UnknownStage(s.clone(), ids.join(", ")));
        }
    }
    let filter = match &opts.videos {
        None => None,
        Some(g) => Some(
            globset::Glob::new(g)
                .map_err(|e| RunError::BadGlob(g.clone(), e.to_string()))?
                .compile_matcher(),
        ),
    };
    let threads = config.threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("vsum-cpu-{i}"))
        .build()
        .map_err(|e| RunError::Pool(e.to_string()))?;

    // Discover and hash videos (the stat cache makes a rerun cheap).
    let found = discover::discover(&manifest.base_dir, &manifest.inputs, &manifest.extensions);
    let mut problems = found.problems;
    let found: Vec<_> = found
        .videos
        .into_iter()
        .filter(|f| {
            opts.only_videos
                .as_ref()
                .is_none_or(|only| only.contains(&f.rel))
        })
        .filter(|f| {
            filter.as_ref().is_none_or(|m| {
                m.is_match(&f.rel) || f.rel.file_name().is_some_and(|n| m.is_match(n))
            })
        })
        .collect();
    let reserved: Vec<&str> = manifest
        .stages
        .iter()
        .filter(|s| s.scope == Scope::Batch)
        .map(|s| s.id.as_str())
        .collect();
    let folders = discover::assign_folders(&found, &reserved);
    let hasher = store.hasher();
    let hashed: Vec<Result<String, String>> = pool.install(|| {
        use rayon::prelude::*;
        found
            .par_iter()
            .map(|f| {
                hasher.hash(&f.path).map_err(|e| {
                    format!(
                        "video {}: cannot read it ({e}); check the file's permissions, it is skipped",
                        f.rel.display()
                    )
                })
            })
            .collect()
    });
    let mut videos = Vec::new();
    for ((f, (stem, folder)), h) in found.into_iter().zip(folders).zip(hashed) {
        match h {
            Ok(hash) => videos.push(Video {
                path: f.path,
                rel: f.rel,
                stem,
                folder,
                hash,
            }),
            Err(msg) => problems.push(msg),
        }
    }
    for p in &problems {
        events.emit(Event::Warning { message: p.clone() });
    }

    let selected = graph::select(manifest, &opts.only);
    let jg = JobGraph::build(manifest, videos.len(), &selected);
    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    events.emit(Event::RunStarted {
        run_id: run_id.clone(),
        videos: videos.len(),
        jobs: jg.graph.node_count(),
    });

    let shared = Shared {
        manifest,
        registry,
        config,
        store,
        hasher,
        events: events.clone(),
        cancel,
        t0,
        output_dir: manifest.output_dir(),
        videos,
        force: opts.force.iter().cloned().collect(),
        dry_run: opts.dry_run,
        job_threads: (threads_available() / threads).max(1),
        cores: crate::cores::Cores::new(threads_available().max(threads)),
        breakers: Mutex::new((BTreeMap::new(), BTreeSet::new())),
        stop: Mutex::new(None),
        watch: opts.alerts.clone().map(|a| {
            Watch::new(
                a,
                vec![manifest.output_dir(), store.root().to_path_buf()],
                events.clone(),
            )
        }),
    };
    let (records, stopped) = schedule(&shared, &jg, &pool);

    let mut counts = Counts {
        jobs: records.len(),
        ..Default::default()
    };
    for r in &records {
        match r.outcome {
            Outcome::Ran => counts.ran += 1,
            Outcome::Cached => counts.cached += 1,
            Outcome::Failed => counts.failed += 1,
            Outcome::Skipped => counts.skipped += 1,
            Outcome::Cancelled => counts.cancelled += 1,
            Outcome::WouldRun => counts.would_run += 1,
        }
    }
    let interrupted = cancel.load(Ordering::Relaxed);
    if interrupted {
        events.emit(Event::Interrupted);
    }
    let summary = RunSummary {
        run_id,
        manifest: manifest.file.to_string_lossy().into_owned(),
        started,
        wall_ms: t0.elapsed().as_millis() as u64,
        dry_run: opts.dry_run,
        interrupted,
        videos: shared.videos.len(),
        video_bytes: shared
            .videos
            .iter()
            .filter_map(|v| std::fs::metadata(&v.path).ok())
            .map(|m| m.len())
            .sum(),
        output_dir: shared.output_dir.clone(),
        cache_dir: store.root().to_path_buf(),
        problems,
        stopped,
        monitor: shared.watch.as_ref().map(Watch::summary),
        counts: counts.clone(),
        jobs: records,
    };
    if !opts.dry_run {
        if let Err(e) = shared.hasher.save() {
            events.emit(Event::Warning {
                message: format!("cannot save the stat cache: {e} (the next run re-hashes videos)"),
            });
        }
        let path = store.runs_dir().join(format!("{}.json", summary.run_id));
        let json = serde_json::to_vec_pretty(&summary).expect("summary serializes");
        if let Err(e) = write_atomic(&path, &json) {
            events.emit(Event::Warning {
                message: format!("cannot write the run summary {}: {e}", path.display()),
            });
        }
    }
    events.emit(Event::RunFinished {
        ran: counts.ran,
        cached: counts.cached,
        failed: counts.failed,
        skipped: counts.skipped,
        cancelled: counts.cancelled,
        wall_ms: summary.wall_ms,
    });
    Ok(summary)
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

/// The coordinator loop. Returns one record per job, in job order, and why the batch
/// stopped early, if it did.
fn schedule(
    shared: &Shared,
    jg: &JobGraph,
    pool: &rayon::ThreadPool,
) -> (Vec<JobRecord>, Option<String>) {
    let g = &jg.graph;
    let n = g.node_count();
    let mut waiting: Vec<usize> = g
        .node_indices()
        .map(|i| g.neighbors_directed(i, Direction::Incoming).count())
        .collect();
    let mut done: Vec<Option<Done>> = vec![None; n];
    let mut records: Vec<Option<JobRecord>> = vec![None; n];
    let mut ready: VecDeque<NodeIndex> = g
        .node_indices()
        .filter(|i| waiting[i.index()] == 0)
        .collect();
    let mut in_flight = 0usize;
    let threshold = shared.config.breaker_threshold.max(1);

    let (tx, rx): (Sender<Msg>, Receiver<Msg>) = unbounded();
    let (gpu_tx, gpu_rx) = unbounded::<Planned>();

    let sampling_done = AtomicBool::new(false);
    if let Some(w) = &shared.watch {
        // A first reading before any job starts: a full disk pauses the very first job.
        w.observe(shared.ms());
    }
    std::thread::scope(|scope| {
        let gpu_done = tx.clone();
        let gpu = std::thread::Builder::new()
            .name("vsum-gpu-lane".into())
            .spawn_scoped(scope, move || gpu_lane(shared, gpu_rx, gpu_done))
            .expect("spawn the GPU lane");
        if let Some(w) = &shared.watch {
            let done = &sampling_done;
            let t0 = shared.t0;
            std::thread::Builder::new()
                .name("vsum-monitor".into())
                .spawn_scoped(scope, move || w.sample_until(done, t0))
                .expect("spawn the monitor");
        }

        pool.in_place_scope(|s| {
            let mut finished = 0usize;
            let mut paused_since: Option<Instant> = None;
            let mut cpu_busy = 0usize;
            let cpu_slots = pool.current_num_threads() * 2;
            // The error rate counts videos: those with a finished job, and those with a
            // failure that is not the video's own fault (bad input never counts).
            let mut judged: BTreeSet<usize> = BTreeSet::new();
            let mut failed_videos: BTreeSet<usize> = BTreeSet::new();
            let mut failure_kinds: BTreeMap<String, usize> = BTreeMap::new();
            let mut in_a_row = 0u32;
            let mut last_failure = String::new();
            while finished < n {
                let stop = shared.stopped();
                let pause = match (&shared.watch, &stop) {
                    (Some(w), None) => w.pause_reason(),
                    _ => None,
                };
                match (&pause, paused_since) {
                    (Some(reason), None) => {
                        paused_since = Some(Instant::now());
                        shared.events.emit(Event::Paused {
                            reason: reason.clone(),
                        });
                    }
                    (Some(reason), Some(since)) => {
                        let limit = shared.watch.as_ref().map(Watch::pause_timeout).unwrap_or_default();
                        if since.elapsed() >= limit {
                            let why = format!(
                                "{reason} (waited {:.0} min); finished work is kept: free space or memory, then rerun to continue",
                                since.elapsed().as_secs_f64() / 60.0
                            );
                            shared.stop_batch(why);
                        }
                    }
                    (None, Some(_)) => {
                        paused_since = None;
                        if stop.is_none() {
                            shared.events.emit(Event::Resumed);
                        }
                    }
                    (None, None) => {}
                }
                // Cancelling ends a pause: waiting jobs are released, as cancelled.
                let hold =
                    pause.is_some() && stop.is_none() && !shared.cancel.load(Ordering::Relaxed);
                // Release ready jobs, a few more than the pool can run at once: the rest
                // wait here, where pauses, stops and breakers still apply to them.
                while let Some(node) = (!hold && cpu_busy < cpu_slots)
                    .then(|| ready.pop_front())
                    .flatten()
                {
                    let job = g[node];
                    let st = shared.stage(job);
                    let preds: Vec<NodeIndex> =
                        g.neighbors_directed(node, Direction::Incoming).collect();
                    let failed_pred = preds.iter().find(|p| {
                        !matches!(
                            done[p.index()].as_ref().map(|d| d.outcome),
                            Some(Outcome::Ran | Outcome::Cached | Outcome::WouldRun)
                        )
                    });
                    let skip_reason = if shared.cancel.load(Ordering::Relaxed) {
                        Some((
                            Outcome::Cancelled,
                            "run interrupted before this job started".to_string(),
                        ))
                    } else if let Some(why) = &shared.stopped() {
                        Some((Outcome::Cancelled, format!("not started: {why}")))
                    } else if shared.breaker_open(st) {
                        Some((
                            Outcome::Skipped,
                            breaker_message(threshold, &breaker_name(st)),
                        ))
                    } else if let (Some(p), Some(_)) = (failed_pred, job.video) {
                        Some((
                            Outcome::Skipped,
                            format!("needs '{}', which did not succeed", shared.stage(g[*p]).id),
                        ))
                    } else if job.video.is_none()
                        && !preds.is_empty()
                        && preds.iter().all(|p| {
                            !matches!(
                                done[p.index()].as_ref().map(|d| d.outcome),
                                Some(Outcome::Ran | Outcome::Cached | Outcome::WouldRun)
                            )
                        })
                    {
                        Some((
                            Outcome::Skipped,
                            "no video's upstream succeeded".to_string(),
                        ))
                    } else {
                        None
                    };
                    if let Some((outcome, why)) = skip_reason {
                        let mut r = shared.record(shared.label(node, job), outcome, shared.ms());
                        r.error = Some(why);
                        let _ = tx.send(Msg::Finished(Box::new(Finished {
                            held_slot: false,
            tools: BTreeMap::new(),
                            node,
                            record: r,
                            digest: None,
                        })));
                        in_flight += 1;
                        continue;
                    }
                    // Batch jobs see only the videos whose upstream succeeded.
                    let ups: Vec<(JobNode, Done)> = preds
                        .iter()
                        .filter_map(|p| done[p.index()].clone().map(|d| (g[*p], d)))
                        .filter(|(_, d)| {
                            d.outcome != Outcome::Failed
                                && d.outcome != Outcome::Skipped
                                && d.outcome != Outcome::Cancelled
                        })
                        .collect();
                    let tx = tx.clone();
                    let gpu_tx = gpu_tx.clone();
                    in_flight += 1;
                    cpu_busy += 1;
                    s.spawn(move |_| {
                        let label = shared.label(node, job);
                        let fin = guarded(shared, node, label, || {
                            match shared.plan(node, job, ups) {
                                Plan::Done(fin) => Some(*fin),
                                Plan::Run(planned) if shared.stage(job).lane == Lane::Gpu => {
                                    let _ = tx.send(Msg::LeftPool);
                                    let _ = gpu_tx.send(*planned);
                                    None
                                }
                                Plan::Run(planned) => Some(shared.execute(*planned, None)),
                            }
                        });
                        let Some(fin) = fin else { return };
                        let _ = tx.send(Msg::Finished(Box::new(Finished {
                            held_slot: true,
                            ..fin
                        })));
                    });
                }
                if in_flight == 0 && !hold {
                    break;
                }
                let fin = match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(Msg::LeftPool) => {
                        cpu_busy -= 1;
                        continue;
                    }
                    Ok(Msg::Finished(fin)) => {
                        if fin.held_slot {
                            cpu_busy -= 1;
                        }
                        *fin
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                in_flight -= 1;
                finished += 1;
                let video = g[fin.node].video;
                let counted = match fin.record.outcome {
                    Outcome::Ran | Outcome::Cached => {
                        in_a_row = 0;
                        video.is_some_and(|v| judged.insert(v))
                    }
                    Outcome::Failed if fin.record.bad_input => false,
                    Outcome::Failed => {
                        in_a_row += 1;
                        let st = shared.stage(g[fin.node]);
                        *failure_kinds
                            .entry(format!("'{}' ({})", st.id, st.kind))
                            .or_default() += 1;
                        last_failure =
                            first_line(fin.record.error.as_deref().unwrap_or("?")).to_string();
                        video.is_some_and(|v| judged.insert(v) | failed_videos.insert(v))
                    }
                    _ => false,
                };
                if let Some(w) = &shared.watch {
                    if fin.record.outcome == Outcome::Failed
                        && !fin.record.bad_input
                        && let Some(a) = w.alerts.consecutive(in_a_row)
                    {
                        w.note(a);
                    }
                    let rate = counted
                        .then(|| w.alerts.error_rate(failed_videos.len(), judged.len()))
                        .flatten();
                    if let Some(a) = rate {
                        let critical = a.level == Level::Critical;
                        let message = match failure_kinds.iter().max_by_key(|(_, n)| **n) {
                            Some((stage, n)) if critical => format!(
                                "{}; most failures ({n}) are in stage {stage}, the last: {last_failure}",
                                a.message,
                            ),
                            _ => a.message.clone(),
                        };
                        w.note(a);
                        if critical {
                            shared.stop_batch(message);
                        }
                    }
                }
                let idx = fin.node.index();
                shared.events.emit(Event::JobFinished {
                    job: fin.record.label.clone(),
                    outcome: fin.record.outcome,
                    key: fin.record.key.clone(),
                    error: fin.record.error.clone(),
                    start_ms: fin.record.start_ms,
                    end_ms: fin.record.end_ms,
                });
                done[idx] = Some(Done {
                    outcome: fin.record.outcome,
                    digest: fin.digest,
                    key: fin.record.key.clone(),
                    tools: fin.tools,
                });
                records[idx] = Some(fin.record);
                for succ in g.neighbors_directed(fin.node, Direction::Outgoing) {
                    let w = &mut waiting[succ.index()];
                    *w -= 1;
                    if *w == 0 {
                        ready.push_back(succ);
                    }
                }
            }
        });
        drop(gpu_tx);
        let _ = gpu.join();
        sampling_done.store(true, Ordering::Relaxed);
    });
    (records.into_iter().flatten().collect(), shared.stopped())
}

/// The GPU lane: one thread, one job at a time, models kept loaded across jobs.
fn gpu_lane(shared: &Shared, rx: Receiver<Planned>, done: Sender<Msg>) {
    let mut resources = Resources::new(shared.config.gpu_models, shared.events.clone());
    // With a GPU, models are also bounded by its memory (measured per load).
    if let Some(probe) = crate::monitor::Gpu::open().vram_probe() {
        resources = resources.with_vram(probe);
    }
    let mut queue: VecDeque<Planned> = VecDeque::new();
    let mut last_group: Option<String> = None;
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(p) => queue.push_back(p),
                Err(_) => return,
            }
        }
        while let Ok(p) = rx.try_recv() {
            queue.push_back(p);
        }
        // Stay on the loaded model while jobs for it are queued.
        let pick = last_group
            .as_ref()
            .and_then(|g| queue.iter().position(|p| p.group.as_ref() == Some(g)))
            .unwrap_or(0);
        let job = queue.remove(pick).expect("non-empty queue");
        last_group = job.group.clone();
        shared.wait_while_paused();
        let fin = if shared.cancel.load(Ordering::Relaxed) {
            let mut r = shared.record(job.label.clone(), Outcome::Cancelled, shared.ms());
            r.key = Some(job.key.clone());
            Finished {
                held_slot: false,
                tools: BTreeMap::new(),
                node: job.node,
                record: r,
                digest: None,
            }
        } else {
            let (node, label) = (job.node, job.label.clone());
            guarded(shared, node, label, || {
                Some(shared.execute(job, Some(&mut resources)))
            })
            .expect("a GPU job always finishes")
        };
        let _ = done.send(Msg::Finished(Box::new(fin)));
    }
}

/// Runs one job's work; a panic (a bug in vsum or a stage) becomes that job's failure
/// instead of a lost job that the coordinator would wait for forever.
fn guarded(
    shared: &Shared,
    node: NodeIndex,
    label: JobLabel,
    work: impl FnOnce() -> Option<Finished>,
) -> Option<Finished> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(fin) => fin,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            let mut r = shared.record(label, Outcome::Failed, shared.ms());
            r.error = Some(format!("internal error in vsum: {what}"));
            r.hint = Some(
                "this is a bug: please report it with the run log; the rest of the batch went on"
                    .into(),
            );
            Some(Finished {
                held_slot: false,
                tools: BTreeMap::new(),
                node,
                record: r,
                digest: None,
            })
        }
    }
}

/// The log file of a run.
pub fn log_path(store: &Store, run_id: &str) -> PathBuf {
    store.logs_dir().join(format!("{run_id}.jsonl"))
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
