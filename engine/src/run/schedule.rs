//! The coordinator: releases each job once all it needs is done, prepares it on the
//! engine's pool (key, lookup, restore of a hit), hands misses to the executor, and
//! settles results. Its parts: [`Book`] (what is waiting, ready and done), [`Pause`]
//! (the machine watch's pause state machine), [`skip_reason`] (jobs that must not
//! start), [`release`] (a job on its way) and [`ErrorRate`] (the stop on too many
//! failures).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::executor::{Completions, Executor, Job};
use super::plan::{Keyed, Prepared, usable_upstreams};
use super::{Done, Finished, JobRecord, Msg, Shared};
use crate::alerts::Level;
use crate::events::JobLabel;
use crate::events::{Event, Outcome};
use crate::graph::{JobGraph, JobNode};
use crate::stage::Lane;
use crate::store::{Entry, Lookup};
use crate::watch::Watch;

/// Runs every job of the graph. Returns one record per job, in job order, and why the
/// batch stopped early, if it did.
pub(super) fn schedule(
    shared: &Shared,
    graph: &JobGraph,
    pool: &rayon::ThreadPool,
    executor: &dyn Executor,
) -> (Vec<JobRecord>, Option<String>) {
    let mut book = Book::new(graph);
    let (tx, rx) = unbounded::<Msg>();
    let (jobs_tx, jobs_rx) = unbounded::<Job>();
    // Dropped when the run ends: the monitor stops at once.
    let (sampling_done, sampling_stop) = crossbeam_channel::bounded::<()>(0);
    if let Some(w) = &shared.watch {
        // A first reading before any job starts: a full disk pauses the very first job.
        w.observe(shared.ms());
    }
    std::thread::scope(|scope| {
        let completions = Completions { tx: tx.clone() };
        let serving = std::thread::Builder::new()
            .name("vsum-executor".into())
            .spawn_scoped(scope, move || executor.serve(jobs_rx, completions))
            .expect("spawn the executor");
        if let Some(w) = &shared.watch {
            let stop = &sampling_stop;
            let t0 = shared.t0;
            std::thread::Builder::new()
                .name("vsum-monitor".into())
                .spawn_scoped(scope, move || w.sample_until(stop, t0))
                .expect("spawn the monitor");
        }
        pool.in_place_scope(|s| {
            let mut c = Coordinator {
                shared,
                graph,
                tx: &tx,
                jobs_tx: &jobs_tx,
                capacity: executor.capacity().max(1),
                cpu_busy: 0,
                in_flight: 0,
            };
            c.run(s, &mut book, &rx);
        });
        drop(jobs_tx);
        let _ = serving.join();
        drop(sampling_done);
    });
    (
        book.records.into_iter().flatten().collect(),
        shared.stopped(),
    )
}

/// How many cached restores may be in flight per CPU slot (see `Coordinator::run`).
const RESTORES_PER_SLOT: usize = 16;

/// What is waiting, ready and done.
struct Book {
    /// Upstreams not yet done, per job.
    waiting: Vec<usize>,
    done: Vec<Option<Done>>,
    records: Vec<Option<JobRecord>>,
    ready: VecDeque<NodeIndex>,
    finished: usize,
}

impl Book {
    fn new(graph: &JobGraph) -> Book {
        let g = &graph.graph;
        let n = g.node_count();
        let waiting: Vec<usize> = g
            .node_indices()
            .map(|i| g.neighbors_directed(i, Direction::Incoming).count())
            .collect();
        let ready = g
            .node_indices()
            .filter(|i| waiting[i.index()] == 0)
            .collect();
        Book {
            waiting,
            done: vec![None; n],
            records: vec![None; n],
            ready,
            finished: 0,
        }
    }

    /// Records a finished job and readies the jobs that waited only for it. A job of
    /// a video outside the selection hands on its result but leaves no record.
    fn settle(&mut self, graph: &JobGraph, fin: Finished, background: bool) {
        let idx = fin.node.index();
        self.done[idx] = Some(Done {
            outcome: fin.record.outcome,
            digest: fin.digest,
            key: fin.record.key.clone(),
            tools: fin.tools,
        });
        if !background {
            self.records[idx] = Some(fin.record);
        }
        self.finished += 1;
        for succ in graph
            .graph
            .neighbors_directed(fin.node, Direction::Outgoing)
        {
            let w = &mut self.waiting[succ.index()];
            *w -= 1;
            if *w == 0 {
                self.ready.push_back(succ);
            }
        }
    }
}

/// The pause state machine: a critical machine reading pauses new jobs; it ends when
/// the reading clears, or stops the batch when it lasts too long.
#[derive(Default)]
struct Pause {
    since: Option<Instant>,
}

impl Pause {
    /// Steps the state machine; returns whether ready jobs are held back now.
    fn step(&mut self, shared: &Shared) -> bool {
        let stop = shared.stopped();
        let reason = match (&shared.watch, &stop) {
            (Some(w), None) => w.pause_reason(),
            _ => None,
        };
        match (&reason, self.since) {
            (Some(reason), None) => {
                self.since = Some(Instant::now());
                shared.events.emit(Event::Paused {
                    reason: reason.clone(),
                });
            }
            (Some(reason), Some(since)) => {
                let limit = shared
                    .watch
                    .as_ref()
                    .map(Watch::pause_timeout)
                    .unwrap_or_default();
                if since.elapsed() >= limit {
                    shared.stop_batch(format!(
                        "{reason} (waited {:.0} min); finished work is kept: free space or memory, then rerun to continue",
                        since.elapsed().as_secs_f64() / 60.0
                    ));
                }
            }
            (None, Some(_)) => {
                self.since = None;
                if stop.is_none() {
                    shared.events.emit(Event::Resumed);
                }
            }
            (None, None) => {}
        }
        // Cancelling ends a pause: waiting jobs are released, as cancelled.
        reason.is_some() && stop.is_none() && !shared.cancelled()
    }
}

/// Why a ready job must not start, if it must not: the run was cancelled or stopped,
/// its breaker is open, or its upstreams did not succeed.
fn skip_reason(
    shared: &Shared,
    graph: &JobGraph,
    node: NodeIndex,
    done: &[Option<Done>],
) -> Option<(Outcome, String)> {
    let st = shared.stage(graph.graph[node]);
    if shared.cancelled() {
        return Some((
            Outcome::Cancelled,
            "run interrupted before this job started".to_string(),
        ));
    }
    if let Some(why) = shared.stopped() {
        return Some((Outcome::Cancelled, format!("not started: {why}")));
    }
    if shared.breakers.is_open(st) {
        return Some((Outcome::Skipped, shared.breakers.message(st)));
    }
    shared
        .upstream_block(graph, node, done)
        .map(|why| (Outcome::Skipped, why))
}

/// The error-rate stop: counts videos (those with a finished job, and those with a
/// failure that is not the video's own fault; bad input never counts) and failures in
/// a row, and stops the batch on a critical rate.
#[derive(Default)]
struct ErrorRate {
    judged: BTreeSet<usize>,
    failed_videos: BTreeSet<usize>,
    failure_kinds: BTreeMap<String, usize>,
    in_a_row: u32,
    last_failure: String,
}

impl ErrorRate {
    fn observe(&mut self, shared: &Shared, job: JobNode, record: &JobRecord) {
        let video = job.video;
        let counted = match record.outcome {
            Outcome::Ran | Outcome::Cached => {
                self.in_a_row = 0;
                video.is_some_and(|v| self.judged.insert(v))
            }
            Outcome::Failed if record.bad_input => false,
            Outcome::Failed => {
                self.in_a_row += 1;
                let st = shared.stage(job);
                *self
                    .failure_kinds
                    .entry(format!("'{}' ({})", st.id, st.kind))
                    .or_default() += 1;
                self.last_failure = first_line(record.error.as_deref().unwrap_or("?")).to_string();
                video.is_some_and(|v| self.judged.insert(v) | self.failed_videos.insert(v))
            }
            _ => false,
        };
        let Some(w) = &shared.watch else { return };
        if record.outcome == Outcome::Failed
            && !record.bad_input
            && let Some(a) = w.alerts.consecutive(self.in_a_row)
        {
            w.note(a);
        }
        let rate = counted
            .then(|| {
                w.alerts
                    .error_rate(self.failed_videos.len(), self.judged.len())
            })
            .flatten();
        if let Some(a) = rate {
            let critical = a.level == Level::Critical;
            let message = match self.failure_kinds.iter().max_by_key(|(_, n)| **n) {
                Some((stage, n)) if critical => format!(
                    "{}; most failures ({n}) are in stage {stage}, the last: {}",
                    a.message, self.last_failure
                ),
                _ => a.message.clone(),
            };
            w.note(a);
            if critical {
                shared.stop_batch(message);
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The coordinator loop's state.
struct Coordinator<'c, 'r> {
    shared: &'r Shared<'r>,
    graph: &'c JobGraph,
    tx: &'c Sender<Msg>,
    jobs_tx: &'c Sender<Job<'r>>,
    /// CPU slots: jobs being prepared on the pool, or at the executor on the CPU lane.
    capacity: usize,
    cpu_busy: usize,
    in_flight: usize,
}

impl<'c, 'r> Coordinator<'c, 'r> {
    fn run<'s>(&mut self, s: &rayon::Scope<'s>, book: &mut Book, rx: &Receiver<Msg>)
    where
        'r: 's,
        'c: 's,
    {
        let n = self.graph.graph.node_count();
        let mut pause = Pause::default();
        let mut rate = ErrorRate::default();
        while book.finished < n {
            let hold = pause.step(self.shared);
            // Release ready jobs, a few more than can run at once: the rest wait here,
            // where pauses, stops and breakers still apply to them.
            while let Some(&node) = book.ready.front().filter(|_| !hold) {
                // A job planning found cached is a short restore: more of them may be on
                // the pool at once, so the pool is not idle between coordinator turns.
                let limit = if self.shared.planned_hit(node) {
                    self.capacity * RESTORES_PER_SLOT
                } else {
                    self.capacity
                };
                if self.cpu_busy >= limit {
                    break;
                }
                book.ready.pop_front();
                self.in_flight += 1;
                if let Some((outcome, why)) = skip_reason(self.shared, self.graph, node, &book.done)
                {
                    let label = self.shared.label(node, self.graph.graph[node]);
                    let mut r = self.shared.record(label, outcome, self.shared.ms());
                    r.error = Some(why);
                    let _ = self
                        .tx
                        .send(Msg::Finished(Box::new(Finished::bare(node, r))));
                    continue;
                }
                let ups = usable_upstreams(self.graph, node, &book.done);
                self.cpu_busy += 1;
                release(
                    self.shared,
                    s,
                    node,
                    self.graph.graph[node],
                    ups,
                    self.tx.clone(),
                    self.jobs_tx.clone(),
                );
            }
            if self.in_flight == 0 && !hold {
                break;
            }
            let fin = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::LeftPool) => {
                    self.cpu_busy -= 1;
                    continue;
                }
                Ok(Msg::Finished(fin)) => {
                    if fin.held_slot {
                        self.cpu_busy -= 1;
                    }
                    *fin
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.in_flight -= 1;
            let job = self.graph.graph[fin.node];
            let background = self.shared.background(job);
            if !background {
                rate.observe(self.shared, job, &fin.record);
                self.shared.events.emit(Event::JobFinished {
                    job: fin.record.label.clone(),
                    outcome: fin.record.outcome,
                    key: fin.record.key.clone(),
                    error: fin.record.error.clone(),
                    start_ms: fin.record.start_ms,
                    end_ms: fin.record.end_ms,
                });
            }
            book.settle(self.graph, fin, background);
        }
    }
}

/// Sends a released job on its way, on the pool: a hit is restored there, a miss goes
/// to the executor (a GPU-lane miss frees its CPU slot at once).
fn release<'s, 'r: 's>(
    shared: &'r Shared<'r>,
    s: &rayon::Scope<'s>,
    node: NodeIndex,
    job: JobNode,
    ups: Vec<(JobNode, Done)>,
    tx: Sender<Msg>,
    jobs_tx: Sender<Job<'r>>,
) {
    s.spawn(move |_| {
        let label = shared.label(node, job);
        let fin = shared.guarded(node, label, || {
            match restore_or_miss(shared, node, job, &ups) {
                Ok(fin) => Some(fin),
                Err(_) if shared.background(job) => {
                    // Outside the selection: never run; batch stages go without it.
                    let label = shared.label(node, job);
                    let mut r = shared.record(label, Outcome::Skipped, shared.ms());
                    r.error = Some("not selected in this run".into());
                    Some(Finished::bare(node, r))
                }
                Err(keyed) => {
                    let gpu = shared.stage(job).lane == Lane::Gpu;
                    if gpu {
                        let _ = tx.send(Msg::LeftPool);
                    }
                    let _ = jobs_tx.send(Job {
                        shared,
                        keyed,
                        held_slot: !gpu,
                    });
                    None
                }
            }
        });
        if let Some(fin) = fin {
            let _ = tx.send(Msg::Finished(Box::new(Finished {
                held_slot: true,
                ..fin
            })));
        }
    });
}

/// A hit, restored the same way a finished job's outputs are published.
fn restored(
    shared: &Shared,
    node: NodeIndex,
    job: JobNode,
    label: JobLabel,
    start: u64,
    key: String,
    entry: &Entry,
) -> Finished {
    let mut r = shared.record(label, Outcome::Cached, start);
    r.key = Some(key);
    let digest = shared.publish(job, entry, &mut r, None);
    r.end_ms = shared.ms();
    Finished {
        tools: entry.fingerprint.tools.clone(),
        digest,
        ..Finished::bare(node, r)
    }
}

/// Keys a released job and looks it up: a hit is restored here and finishes the job; a miss is returned.
fn restore_or_miss(
    shared: &Shared,
    node: NodeIndex,
    job: JobNode,
    ups: &[(JobNode, Done)],
) -> Result<Finished, Box<Keyed>> {
    let start = shared.ms();
    let label = shared.label(node, job);
    let planned = shared.hits[node.index()]
        .lock()
        .expect("plan hit")
        .take()
        .filter(|h| h.upstream.iter().eq(ups.iter().map(|(_, d)| &d.digest)));
    if let Some(hit) = planned {
        // Found at planning, from the same upstreams: the same key and entry.
        shared.store.mark_used(&hit.key, hit.used);
        return Ok(restored(
            shared, node, job, label, start, hit.key, &hit.entry,
        ));
    }
    let k = match shared.prepare(node, job, ups) {
        Prepared::Keyed(k) => k,
        Prepared::AfterUpstream(up) => {
            let mut r = shared.record(label, Outcome::Failed, start);
            r.error = Some(format!(
                "internal error in vsum: upstream '{up}' has no result"
            ));
            return Ok(Finished::bare(node, r));
        }
        Prepared::Failed(e) => {
            let mut r = shared.record(label, Outcome::Failed, start);
            r.error = Some(e.message);
            r.hint = e.hint;
            return Ok(Finished::bare(node, r));
        }
    };
    let lookup = if shared.force.contains(&shared.stage(job).id) {
        Lookup::Missing
    } else {
        shared.store.lookup(&k.key)
    };
    match lookup {
        Lookup::Hit(entry) => Ok(restored(
            shared,
            node,
            job,
            label,
            start,
            k.key.clone(),
            &entry,
        )),
        other => {
            if let Lookup::Untrusted(why) = &other {
                shared.events.emit(Event::Warning {
                    message: format!("{}: {why}; recomputing", label.describe()),
                });
            }
            Err(k)
        }
    }
}
