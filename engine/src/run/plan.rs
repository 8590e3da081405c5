//! Planning: every job of the batch and what the cache already holds, worked out
//! without writing anything: no use marks on entries, no removal of untrusted ones, no
//! stat-cache save. [`Plan`] is what the launch screen shows and what
//! [`execute`](super::execute()) runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::{Batch, Counts, Done, JobRecord, RunError, RunOptions, RunSummary, new_run_id};
use crate::config::Config;
use crate::discover;
use crate::events::{JobLabel, Outcome};
use crate::fingerprint::{Fingerprint, SCHEMA};
use crate::graph::{self, JobGraph, JobNode};
use crate::manifest::Manifest;
use crate::safety;
use crate::stage::{BatchItem, KeyEnv, Provenance, Registry, Scope, StageError, Video};
use crate::store::{Lookup, Store, now_secs};

/// A job whose key is known: all it takes to look it up, or to run it.
#[derive(Debug, Clone)]
pub(super) struct Keyed {
    pub(super) node: NodeIndex,
    pub(super) job: JobNode,
    pub(super) label: JobLabel,
    pub(super) fingerprint: Fingerprint,
    pub(super) key: String,
    /// Upstream stage id -> its output folder (per-video jobs).
    pub(super) upstream: BTreeMap<String, PathBuf>,
    pub(super) provenance: BTreeMap<String, Provenance>,
    pub(super) batch: Vec<BatchItem>,
    /// Each upstream output folder named above, with the cache entry it holds.
    pub(super) sources: Vec<(PathBuf, String)>,
    pub(super) group: Option<String>,
}

/// A job prepared from its upstreams' results.
pub(super) enum Prepared {
    Keyed(Box<Keyed>),
    /// This upstream has no result yet (it would run first), so no key.
    AfterUpstream(String),
    Failed(StageError),
}

/// The batch, planned: the videos, the job graph, and for every job whether it is
/// cached, must run (and why), or waits for an upstream that must run.
pub struct Plan<'a> {
    pub(super) batch: Batch<'a>,
    pub(super) graph: JobGraph,
    pub(super) opts: RunOptions,
    /// Inputs or videos that could not be read.
    pub(super) problems: Vec<String>,
    /// Untrusted cache entries met while planning (the run recomputes them).
    pub(super) warnings: Vec<String>,
    /// One record per job, in job order: cached, would run, failed or skipped.
    pub(super) records: Vec<JobRecord>,
    /// Per job (by node index): its cache hit, when planning found one.
    pub(super) hits: Vec<Option<Box<PlanHit>>>,
    pub(super) pool: rayon::ThreadPool,
    started: u64,
    plan_ms: u64,
}

impl Plan<'_> {
    /// Every job as planned, in job order.
    pub fn jobs(&self) -> &[JobRecord] {
        &self.records
    }

    pub fn counts(&self) -> Counts {
        Counts::of(&self.records)
    }

    pub fn videos(&self) -> &[Video] {
        &self.batch.videos
    }

    /// Inputs or videos that could not be read.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The plan as a dry run's summary (what `vsum plan` shows; nothing is saved).
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            run_id: self.opts.run_id.clone().unwrap_or_else(new_run_id),
            manifest: self.batch.manifest.file.to_string_lossy().into_owned(),
            started: self.started,
            wall_ms: self.plan_ms,
            dry_run: true,
            interrupted: false,
            videos: self.batch.selected_videos(),
            video_bytes: self.batch.video_bytes(),
            output_dir: self.batch.output_dir.clone(),
            cache_dir: self.batch.store.root().to_path_buf(),
            problems: self.problems.clone(),
            stopped: None,
            monitor: None,
            counts: self.counts(),
            jobs: self.records.clone(),
        }
    }
}

/// Plans the batch: discovers and hashes the videos, builds the job graph, and looks up
/// every job that can be keyed. Writes nothing (the cache stays byte for byte as it was).
pub fn plan<'a>(
    manifest: &'a Manifest,
    registry: &'a Registry,
    config: &'a Config,
    store: &'a Store,
    opts: &RunOptions,
) -> Result<Plan<'a>, RunError> {
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
    let ids: Vec<&str> = manifest.stages.iter().map(|s| s.id.as_str()).collect();
    for s in opts.only.iter().chain(&opts.force) {
        if !ids.contains(&s.as_str()) {
            return Err(RunError::UnknownStage(s.clone(), ids.join(", ")));
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads())
        .thread_name(|i| format!("vsum-cpu-{i}"))
        .build()
        .map_err(|e| RunError::Pool(e.to_string()))?;
    let hasher = store.hasher();
    let (videos, background, problems) = find_videos(manifest, opts, &hasher, &pool)?;
    let selected = graph::select(manifest, &opts.only);
    let graph = JobGraph::build(manifest, videos.len(), &selected);
    let batch = Batch {
        manifest,
        registry,
        config,
        store,
        hasher,
        output_dir: manifest.output_dir(),
        videos,
        background,
        force: opts.force.iter().cloned().collect(),
    };
    let n = graph.graph.node_count();
    let mut done: Vec<Option<Done>> = vec![None; n];
    let mut records: Vec<Option<JobRecord>> = vec![None; n];
    let mut hits: Vec<Option<Box<PlanHit>>> = (0..n).map(|_| None).collect();
    let mut warnings = Vec::new();
    // Level by level (a job's upstreams sit on earlier levels), each level in parallel.
    for level in levels(&graph) {
        let planned: Vec<PlannedJob> = pool.install(|| {
            use rayon::prelude::*;
            level
                .par_iter()
                .map(|&node| batch.plan_job(&graph, node, &done, t0))
                .collect()
        });
        for (node, mut p) in level.into_iter().zip(planned) {
            hits[node.index()] = p.hit.take();
            if batch.background(graph.graph[node]) {
                // Outside the selection: only a cached result is of use (to batch stages).
                if p.done.outcome != Outcome::Cached {
                    p.done.outcome = Outcome::Skipped;
                }
                done[node.index()] = Some(p.done);
                warnings.extend(p.warning);
                continue;
            }
            done[node.index()] = Some(p.done);
            records[node.index()] = Some(p.record);
            warnings.extend(p.warning);
        }
    }
    Ok(Plan {
        batch,
        graph,
        opts: opts.clone(),
        problems,
        warnings,
        records: records.into_iter().flatten().collect(),
        hits,
        pool,
        started,
        plan_ms: t0.elapsed().as_millis() as u64,
    })
}

/// The graph's jobs by depth: every job comes after all its upstreams.
fn levels(graph: &JobGraph) -> Vec<Vec<NodeIndex>> {
    let g = &graph.graph;
    let order = petgraph::algo::toposort(g, None).expect("the job graph is acyclic");
    let mut depth = vec![0usize; g.node_count()];
    let mut levels: Vec<Vec<NodeIndex>> = Vec::new();
    for node in order {
        let d = g
            .neighbors_directed(node, Direction::Incoming)
            .map(|p| depth[p.index()] + 1)
            .max()
            .unwrap_or(0);
        depth[node.index()] = d;
        if levels.len() <= d {
            levels.resize_with(d + 1, Vec::new);
        }
        levels[d].push(node);
    }
    for level in &mut levels {
        level.sort();
    }
    levels
}

/// The videos, whether each is outside the selection, and problems.
type Found = (Vec<Video>, Vec<bool>, Vec<String>);

/// Discovers every video of the inputs and hashes them (the stat cache makes a rerun
/// cheap; it is saved only by a real run), with, per video, whether the options leave
/// it out (`--videos`, `--retry-failed`): such videos are kept in the background, for
/// the batch stages. Selected videos that cannot be read become problems; others are
/// left out quietly.
fn find_videos(
    manifest: &Manifest,
    opts: &RunOptions,
    hasher: &crate::hash::FileHasher,
    pool: &rayon::ThreadPool,
) -> Result<Found, RunError> {
    let filter = match &opts.videos {
        None => None,
        Some(g) => Some(
            globset::Glob::new(g)
                .map_err(|e| RunError::BadGlob(g.clone(), e.to_string()))?
                .compile_matcher(),
        ),
    };
    let found = discover::discover(&manifest.base_dir, &manifest.inputs, &manifest.extensions);
    let mut problems = found.problems;
    let found = found.videos;
    let selected = |f: &discover::Found| {
        opts.only_videos
            .as_ref()
            .is_none_or(|only| only.contains(&f.rel))
            && filter.as_ref().is_none_or(|m| {
                m.is_match(&f.rel) || f.rel.file_name().is_some_and(|n| m.is_match(n))
            })
    };
    let reserved: Vec<&str> = manifest
        .stages
        .iter()
        .filter(|s| s.scope == Scope::Batch)
        .map(|s| s.id.as_str())
        .collect();
    let folders = discover::assign_folders(&found, &reserved);
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
    let mut background = Vec::new();
    for ((f, (stem, folder)), h) in found.into_iter().zip(folders).zip(hashed) {
        let chosen = selected(&f);
        match h {
            Ok(hash) => {
                background.push(!chosen);
                videos.push(Video {
                    path: f.path,
                    rel: f.rel,
                    stem,
                    folder,
                    hash,
                });
            }
            Err(msg) if chosen => problems.push(msg),
            Err(_) => {}
        }
    }
    Ok((videos, background, problems))
}

/// Did this upstream come out with something to build on?
pub(super) fn succeeded(done: &Option<Done>) -> bool {
    matches!(
        done.as_ref().map(|d| d.outcome),
        Some(Outcome::Ran | Outcome::Cached | Outcome::WouldRun)
    )
}

/// A job that planning found in the cache: the run restores it from this entry without
/// keying it or reading the entry again, as long as its upstreams gave the digests they
/// gave at planning (in a fully cached run they all do; an upstream that ran instead
/// may have changed, and then the job is keyed and looked up afresh).
pub(super) struct PlanHit {
    pub(super) key: String,
    /// The upstream digests its key was made from, in `usable_upstreams` order.
    pub(super) upstream: Vec<Option<String>>,
    pub(super) entry: Box<crate::store::Entry>,
    /// The entry's last use mark, as planning saw it.
    pub(super) used: Option<std::time::SystemTime>,
}

/// One job, planned.
struct PlannedJob {
    record: JobRecord,
    /// A cache hit, kept for the run (see [`PlanHit`]).
    hit: Option<Box<PlanHit>>,
    /// What it hands on to its dependents.
    done: Done,
    warning: Option<String>,
}

impl Batch<'_> {
    /// Plans one job whose upstreams are planned.
    fn plan_job(
        &self,
        graph: &JobGraph,
        node: NodeIndex,
        done: &[Option<Done>],
        t0: Instant,
    ) -> PlannedJob {
        let job = graph.graph[node];
        let at = t0.elapsed().as_millis() as u64;
        let mut r = JobRecord::new(self.label(node, job), Outcome::WouldRun, at);
        let mut d = Done {
            outcome: Outcome::WouldRun,
            digest: None,
            key: None,
            tools: BTreeMap::new(),
        };
        if let Some(why) = self.upstream_block(graph, node, done) {
            r.outcome = Outcome::Skipped;
            r.error = Some(why);
            d.outcome = Outcome::Skipped;
            return PlannedJob {
                hit: None,
                record: r,
                done: d,
                warning: None,
            };
        }
        let ups = usable_upstreams(graph, node, done);
        let k = match self.prepare(node, job, &ups) {
            Prepared::AfterUpstream(up) => {
                r.reason = Some(format!("upstream '{up}' would run first"));
                return PlannedJob {
                    hit: None,
                    record: r,
                    done: d,
                    warning: None,
                };
            }
            Prepared::Failed(e) => {
                r.outcome = Outcome::Failed;
                r.error = Some(e.message);
                r.hint = e.hint;
                d.outcome = Outcome::Failed;
                return PlannedJob {
                    hit: None,
                    record: r,
                    done: d,
                    warning: None,
                };
            }
            Prepared::Keyed(k) => k,
        };
        r.key = Some(k.key.clone());
        d.key = Some(k.key.clone());
        let forced = self.force.contains(&self.stage(job).id);
        let (lookup, used) = if forced {
            (Lookup::Missing, None)
        } else {
            self.store.peek_for_restore(&k.key)
        };
        let mut warning = None;
        let mut hit = None;
        match lookup {
            Lookup::Hit(entry) => {
                r.outcome = Outcome::Cached;
                d.outcome = Outcome::Cached;
                d.digest = Some(entry.digest());
                d.tools = entry.fingerprint.tools.clone();
                hit = Some(Box::new(PlanHit {
                    key: k.key.clone(),
                    upstream: ups.iter().map(|(_, u)| u.digest.clone()).collect(),
                    entry,
                    used,
                }));
            }
            other => {
                if let Lookup::Untrusted(why) = other {
                    warning = Some(format!("{}: {why}; recomputing", r.label.describe()));
                }
                r.reason = Some(if forced {
                    "forced with --force".to_string()
                } else {
                    self.miss_reason(job, &k.fingerprint)
                });
            }
        }
        r.end_ms = t0.elapsed().as_millis() as u64;
        PlannedJob {
            hit,
            record: r,
            done: d,
            warning,
        }
    }

    /// Why a job cannot start because of its upstreams, if it cannot: a per-video job
    /// needs all of its own; a batch job needs some video's.
    pub(super) fn upstream_block(
        &self,
        graph: &JobGraph,
        node: NodeIndex,
        done: &[Option<Done>],
    ) -> Option<String> {
        let g = &graph.graph;
        let mut preds = g.neighbors_directed(node, Direction::Incoming).peekable();
        if g[node].video.is_some() {
            let failed = preds.find(|p| !succeeded(&done[p.index()]))?;
            return Some(format!(
                "needs '{}', which did not succeed",
                self.stage(g[failed]).id
            ));
        }
        preds.peek()?;
        preds
            .all(|p| !succeeded(&done[p.index()]))
            .then(|| "no video's upstream succeeded".to_string())
    }

    /// Works out a job's fingerprint and key from its upstreams' results. Reads only.
    pub(super) fn prepare(
        &self,
        node: NodeIndex,
        job: JobNode,
        ups: &[(JobNode, Done)],
    ) -> Prepared {
        let st = self.stage(job);
        let kind = self.registry.get(&st.kind).expect("validated kind");
        // Upstream: per-video stage id -> folder, or per video for batch jobs.
        let mut upstream = BTreeMap::new();
        let mut up_digests = BTreeMap::new();
        let mut batch: BTreeMap<usize, BatchItem> = BTreeMap::new();
        let mut provenance = BTreeMap::new();
        let mut sources = Vec::new();
        for (up, done) in ups {
            let up_id = self.stage(*up).id.clone();
            if up.video == job.video || up.video.is_none() {
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
                return Prepared::AfterUpstream(up_id);
            };
            let folder = self.out_folder(*up);
            if let Some(key) = &done.key {
                sources.push((folder.clone(), key.clone()));
            }
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
        let video = job.video.map(|v| &self.videos[v]);
        let env = KeyEnv {
            base_dir: &self.manifest.base_dir,
            output_root: &self.output_dir,
            video,
            hasher: &self.hasher,
        };
        let extras = match kind.key_extras(&st.params, &env) {
            Ok(x) => x,
            Err(e) => return Prepared::Failed(e),
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
        Prepared::Keyed(Box::new(Keyed {
            node,
            job,
            label: self.label(node, job),
            key: fingerprint.key(),
            fingerprint,
            upstream,
            provenance,
            batch: batch.into_values().collect(),
            sources,
            group: kind.resource_group(&st.params),
        }))
    }

    /// Explains a miss by diffing against the last entry made for this video and stage.
    pub(super) fn miss_reason(&self, job: JobNode, fp: &Fingerprint) -> String {
        let stage = &self.stage(job).id;
        let Some(old_key) = self.store.get_ref(&self.ref_id(job), stage) else {
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
}

/// The upstream results a job builds on (batch jobs see only the videos whose
/// upstream succeeded).
pub(super) fn usable_upstreams(
    graph: &JobGraph,
    node: NodeIndex,
    done: &[Option<Done>],
) -> Vec<(JobNode, Done)> {
    let g = &graph.graph;
    g.neighbors_directed(node, Direction::Incoming)
        .filter_map(|p| done[p.index()].clone().map(|d| (g[p], d)))
        .filter(|(_, d)| {
            !matches!(
                d.outcome,
                Outcome::Failed | Outcome::Skipped | Outcome::Cancelled
            )
        })
        .collect()
}
