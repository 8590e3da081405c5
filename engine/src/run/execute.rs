//! Running one job that missed the cache, wherever an executor placed it: claim its
//! key, stage its upstream outputs privately, run the stage with retries (and one CPU
//! retry after a GPU out-of-memory error), commit to the store, and place the outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::plan::Keyed;
use super::{Finished, JobRecord, Shared};
use crate::events::{Event, JobLabel, Outcome};
use crate::stage::{BatchItem, JobCtx, Lane, Resources, StageError};
use crate::store::{Lookup, Store};

impl Shared<'_> {
    /// Runs a missed job with retries, commits and places its outputs.
    pub(super) fn run_job(&self, p: Keyed, mut resources: Option<&mut Resources>) -> Finished {
        let st = self.stage(p.job);
        let kind = self.registry.get(&st.kind).expect("validated kind");
        let retries = st.retries.unwrap_or(self.config.retries);
        let video = p.job.video.map(|v| &self.videos[v]);
        let start = self.ms();
        let not_run = |outcome, error: Option<String>| {
            let mut r = self.record(p.label.clone(), outcome, start);
            r.key = Some(p.key.clone());
            r.error = error;
            Finished::bare(p.node, r)
        };
        // Why the job must not start now (Ctrl-C, a stopped batch, an open breaker):
        // asked on arrival, and again once its cores are free, which can take long.
        let refused = || {
            let stopped = self.stopped();
            if self.cancelled() || stopped.is_some() {
                return Some(not_run(
                    Outcome::Cancelled,
                    stopped.map(|why| format!("not started: {why}")),
                ));
            }
            self.breakers
                .is_open(st)
                .then(|| not_run(Outcome::Skipped, Some(self.breakers.message(st))))
        };
        if let Some(fin) = refused() {
            return fin;
        }
        // One process at a time works on a key: another run sharing the cache that is
        // already on it is waited for, and its result reused.
        let claim = match self.store.claim(&p.key, self.cancel) {
            Ok(c) => c,
            Err(_) if self.cancelled() => return not_run(Outcome::Cancelled, None),
            Err(_) => None, // no claim (e.g. a read-only cache): run unclaimed, as before
        };
        // Looked up again once claimed, whether or not we waited: the plan's miss may be
        // stale, as another run can have claimed, made and released the key in between.
        // A job forced with --force runs anyway, unless another run made it meanwhile.
        let forced = self.force.contains(&st.id);
        if claim.as_ref().is_some_and(|c| c.waited || !forced)
            && let Lookup::Hit(entry) = self.store.lookup(&p.key)
        {
            let mut r = self.record(p.label.clone(), Outcome::Cached, start);
            r.key = Some(p.key.clone());
            r.notes
                .push("made meanwhile by another run sharing the cache".into());
            let digest = self.publish(p.job, &entry, &mut r, None);
            r.end_ms = self.ms();
            return Finished {
                tools: entry.fingerprint.tools.clone(),
                digest,
                ..Finished::bare(p.node, r)
            };
        }
        let gpu_lane = st.lane == Lane::Gpu;
        let threads = if gpu_lane {
            self.config.threads()
        } else {
            self.job_threads
        };
        // Cores for the job: a CPU-lane job its share; a GPU-lane job one, topped up by
        // the stage when its model computes on the CPU.
        // They are given back once the stage has computed: storing and placing the
        // outputs overlap the next job's work (the local executor has twice as many
        // threads as jobs at a time for that).
        let held_cores = if gpu_lane { 1 } else { self.job_threads };
        // A kind made for the GPU that the manifest put on the CPU lane computes on the
        // CPU: it is told so from the first attempt.
        let mut force_cpu = !gpu_lane && kind.default_lane() == Lane::Gpu;
        let mut notes = Vec::new();
        if force_cpu {
            notes.push("a GPU kind on `lane: cpu`: computed on the CPU".to_string());
        }
        // An incremental kind starts from the output its stage made last time (the ref's
        // entry), when the cache still holds it and it is not this very key.
        let previous = if kind.incremental() {
            self.store
                .read_ref(&self.ref_id(p.job), &st.id)
                .map(|r| r.key)
                .filter(|k| *k != p.key)
        } else {
            None
        };
        let mut attempt = 0;
        // The cores of an attempt that failed for good, held until its failure is
        // counted: the next job of the stage must see the breaker it may open.
        let mut failed_cores = None;
        let outcome = loop {
            attempt += 1;
            let cores = if gpu_lane {
                self.cores.gpu(held_cores)
            } else {
                self.cores.cpu(held_cores)
            };
            if attempt == 1
                && let Some(fin) = refused()
            {
                return fin;
            }
            tracing::debug!(job = %p.label.describe(), attempt, "job started");
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
            let staged = match Staged::new(self.store, &p.sources, previous.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&job_dir);
                    break Err(StageError::retryable(format!(
                        "cannot stage the upstream outputs from the cache: {e}"
                    ))
                    .hint("`vsum cache verify` finds and drops damaged entries; a rerun then recomputes them"));
                }
            };
            // The job reads its upstream from its private staged copy of the cache
            // entries, never from the shared output folder another run may overwrite.
            let upstream = staged.redirect(&p.upstream);
            let batch: Vec<BatchItem> = p
                .batch
                .iter()
                .map(|b| BatchItem {
                    video: b.video.clone(),
                    upstream: staged.redirect(&b.upstream),
                })
                .collect();
            let mut ctx = JobCtx {
                stage_id: &st.id,
                params: &st.params,
                base_dir: &self.manifest.base_dir,
                output_root: &self.output_dir,
                out_dir: &job_dir,
                video,
                upstream: &upstream,
                provenance: &p.provenance,
                batch: &batch,
                previous: staged.previous.as_deref(),
                threads,
                cancel: self.cancel,
                resources: resources.as_deref_mut(),
                force_cpu,
                events: &self.events,
                cores: Some(&self.cores),
                held_cores,
            };
            let ran = kind.run(&mut ctx);
            if ran.is_ok() {
                drop(cores);
            } else {
                failed_cores = Some(cores);
            }
            let result = ran.and_then(|()| {
                if self.cancelled() {
                    return Err(StageError::cancelled());
                }
                let video_name = video.map(|v| v.rel.to_string_lossy().into_owned());
                self.store
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
                    })
            });
            drop(staged);
            match result {
                Ok(entry) => break Ok((entry, job_dir)),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&job_dir);
                    if e.cancelled || self.cancelled() {
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
                        failed_cores = None;
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
                        failed_cores = None;
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
        record.notes = notes;
        // A bad video says nothing about the stage or the machine: it neither opens nor
        // resets a breaker.
        if !outcome.as_ref().is_err_and(|e| e.bad_input) {
            let ok = outcome.is_ok() || outcome.as_ref().is_err_and(|e| e.cancelled);
            self.breakers.count(st, ok, &self.events);
        }
        drop(failed_cores);
        let digest = match outcome {
            Ok((entry, job_dir)) => {
                let digest = self.publish(p.job, &entry, &mut record, Some(&job_dir));
                // Gone when it became the output folder; else its copies are stored.
                let _ = std::fs::remove_dir_all(&job_dir);
                digest
            }
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
            tools: p.fingerprint.tools.clone(),
            digest,
            ..Finished::bare(p.node, record)
        }
    }

    /// A job another executor ran and committed into the store: its outputs placed.
    /// With `cached`, the entry was already made (by a shared cache): the job is
    /// reported cached, with that note.
    pub(super) fn collect(&self, p: Keyed, cached: Option<&str>) -> Finished {
        let start = self.ms();
        let st = self.stage(p.job);
        let outcome = if cached.is_some() {
            Outcome::Cached
        } else {
            Outcome::Ran
        };
        let mut r = self.record(p.label.clone(), outcome, start);
        r.key = Some(p.key.clone());
        r.attempts = u32::from(cached.is_none());
        r.notes.extend(cached.map(str::to_string));
        let entry = match self.store.lookup(&p.key) {
            Lookup::Hit(entry) => entry,
            Lookup::Missing => {
                return self.fail(
                    p,
                    StageError::retryable(
                        "the executor reported the job done, but the cache has no entry for it",
                    ),
                );
            }
            Lookup::Untrusted(why) => {
                return self.fail(
                    p,
                    StageError::retryable(format!("the executor reported the job done, but {why}")),
                );
            }
        };
        self.breakers.count(st, true, &self.events);
        let digest = self.publish(p.job, &entry, &mut r, None);
        r.end_ms = self.ms();
        Finished {
            tools: entry.fingerprint.tools.clone(),
            digest,
            ..Finished::bare(p.node, r)
        }
    }

    /// A job that could not run: failed with `e`, counted toward its breaker.
    pub(super) fn fail(&self, p: Keyed, e: StageError) -> Finished {
        let st = self.stage(p.job);
        let mut r = self.record(p.label.clone(), Outcome::Failed, self.ms());
        r.key = Some(p.key.clone());
        r.error = Some(e.message);
        r.hint = e.hint;
        r.bad_input = e.bad_input;
        if !r.bad_input {
            self.breakers.count(st, false, &self.events);
        }
        Finished::bare(p.node, r)
    }

    /// Runs one job's work; a panic (a bug in vsum or a stage) becomes that job's
    /// failure instead of a lost job that the coordinator would wait for forever.
    pub(super) fn guarded(
        &self,
        node: petgraph::graph::NodeIndex,
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
                let mut r: JobRecord = self.record(label, Outcome::Failed, self.ms());
                r.error = Some(format!("internal error in vsum: {what}"));
                r.hint = Some(
                    "this is a bug: please report it with the run log; the rest of the batch went on"
                        .into(),
                );
                Some(Finished::bare(node, r))
            }
        }
    }
}

/// A job's private, read-only view of its upstream outputs: each upstream cache entry
/// staged from the store's immutable objects ([`Store::stage_entry`]) into a folder
/// under the cache's `tmp/` ([`Store::view_root`]), given back emptied when dropped
/// (gc removes what a crash leaves).
pub(super) struct Staged<'s> {
    store: &'s Store,
    root: Option<PathBuf>,
    /// Upstream output folder -> its staged copy.
    folders: BTreeMap<PathBuf, PathBuf>,
    /// The stage's last output (incremental kinds), when the cache still holds it.
    previous: Option<PathBuf>,
}

impl<'s> Staged<'s> {
    pub(super) fn new(
        store: &'s Store,
        sources: &[(PathBuf, String)],
        previous: Option<&str>,
    ) -> std::io::Result<Staged<'s>> {
        let mut staged = Staged {
            store,
            root: None,
            folders: BTreeMap::new(),
            previous: None,
        };
        if sources.is_empty() && previous.is_none() {
            return Ok(staged);
        }
        let root = store.view_root()?;
        staged.root = Some(root.clone());
        for (i, (folder, key)) in sources.iter().enumerate() {
            // The folder's own name stays (some stages name files after it).
            let name = folder.file_name().unwrap_or_default();
            let dest = root.join(i.to_string()).join(name);
            store.stage_entry(key, &dest)?;
            staged.folders.insert(folder.clone(), dest);
        }
        // Only a head start: an entry that is gone or fails its checks is no error.
        if let Some(key) = previous
            && matches!(store.peek(key), Lookup::Hit(_))
        {
            let dest = root.join("previous");
            match store.stage_entry(key, &dest) {
                Ok(()) => staged.previous = Some(dest),
                Err(_) => {
                    let _ = std::fs::remove_dir_all(&dest);
                }
            }
        }
        Ok(staged)
    }

    /// The upstream map with each folder replaced by its staged copy.
    pub(super) fn redirect(
        &self,
        upstream: &BTreeMap<String, PathBuf>,
    ) -> BTreeMap<String, PathBuf> {
        upstream
            .iter()
            .map(|(id, dir)| {
                let seen = self.folders.get(dir).unwrap_or(dir);
                (id.clone(), seen.clone())
            })
            .collect()
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if let Some(root) = self.root.take() {
            self.store.give_back_view(root);
        }
    }
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
