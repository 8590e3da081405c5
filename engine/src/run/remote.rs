//! A job as a message, for executors whose workers run on other machines: what a
//! worker needs to run one job of the plan without the manifest, the videos' folder or
//! the coordinator's cache ([`RemoteJob`], made by [`Job::remote`]), and the worker's
//! side ([`run_remote`]): stage the upstream entries from its own store, run the kind
//! from the same registry, commit. Planning, keys and scheduling stay with the
//! coordinator; a worker only runs what it is sent, under the key it is sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Job;
use super::execute::Staged;
use crate::events::{EventSink, JobLabel};
use crate::fingerprint::Fingerprint;
use crate::stage::{BatchItem, JobCtx, Lane, Provenance, Registry, Resources, StageError, Video};
use crate::store::{Entry, Store};

/// Everything a worker needs to run one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteJob {
    /// The key the outputs are committed under (the fingerprint's key).
    pub key: String,
    pub label: JobLabel,
    pub fingerprint: Fingerprint,
    /// The stage's id in the manifest.
    pub stage: String,
    pub kind: String,
    pub lane: Lane,
    /// The manifest's `retries` for the stage (attempts = retries + 1).
    pub retries: u32,
    pub video: Option<RemoteVideo>,
    /// Per-video upstream outputs (cache entries).
    pub upstream: Vec<RemoteUpstream>,
    /// A batch job's per-video upstreams.
    pub batch: Vec<RemoteBatchItem>,
    pub provenance: BTreeMap<String, Provenance>,
    /// The coordinator's output folder: only for kinds that work out paths relative to
    /// it; a worker never writes there.
    pub output_root: PathBuf,
}

/// A source video, by content: the worker fetches it by `hash`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteVideo {
    /// blake3 of the file (also its blob name in a shared cache).
    pub hash: String,
    pub size: u64,
    /// The file's own name (kept: tools look at the extension).
    pub name: String,
    pub rel: PathBuf,
    pub stem: String,
    pub folder: String,
}

/// One upstream output a job reads: the stage, its output folder's name and the cache
/// entry that holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteUpstream {
    pub stage: String,
    pub folder: String,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteBatchItem {
    pub video: RemoteVideo,
    pub upstream: Vec<RemoteUpstream>,
}

impl RemoteJob {
    /// Every cache entry the job reads.
    pub fn upstream_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .upstream
            .iter()
            .chain(self.batch.iter().flat_map(|b| &b.upstream))
            .map(|u| u.key.as_str())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Refuses a message that could make a worker write outside its folders or look
    /// up a malformed key: keys and hashes are 64 hex digits, names plain file names.
    pub fn check(&self) -> Result<(), String> {
        let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0']);
        let bad = |what: String| {
            Err(format!(
                "job {}: {what} (a damaged or forged message)",
                self.label.describe()
            ))
        };
        if !hex(&self.key) {
            return bad(format!("bad key '{}'", self.key));
        }
        if let Some(k) = self.upstream_keys().into_iter().find(|k| !hex(k)) {
            return bad(format!("bad upstream key '{k}'"));
        }
        if let Some(v) = self
            .videos()
            .into_iter()
            .find(|v| !hex(&v.hash) || !plain(&v.name))
        {
            return bad(format!("bad video '{}' ({})", v.name, v.hash));
        }
        let folders = self
            .upstream
            .iter()
            .chain(self.batch.iter().flat_map(|b| &b.upstream));
        if let Some(u) = folders.into_iter().find(|u| !plain(&u.folder)) {
            return bad(format!("bad upstream folder '{}'", u.folder));
        }
        Ok(())
    }

    /// Every video the job reads.
    pub fn videos(&self) -> Vec<&RemoteVideo> {
        self.video
            .iter()
            .chain(self.batch.iter().map(|b| &b.video))
            .collect()
    }
}

fn remote_video(v: &Video) -> RemoteVideo {
    RemoteVideo {
        hash: v.hash.clone(),
        size: std::fs::metadata(&v.path).map(|m| m.len()).unwrap_or(0),
        name: v
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "video".into()),
        rel: v.rel.clone(),
        stem: v.stem.to_string_lossy().into_owned(),
        folder: v.folder.to_string_lossy().into_owned(),
    }
}

impl Job<'_> {
    /// The job as a message for a worker on another machine.
    pub fn remote(&self) -> RemoteJob {
        let shared = self.shared;
        let k = &self.keyed;
        let st = shared.stage(k.job);
        let key_of = |folder: &PathBuf| {
            k.sources
                .iter()
                .find(|(f, _)| f == folder)
                .map(|(_, key)| key.clone())
                .unwrap_or_default()
        };
        let ups = |m: &BTreeMap<String, PathBuf>| -> Vec<RemoteUpstream> {
            m.iter()
                .map(|(id, folder)| RemoteUpstream {
                    stage: id.clone(),
                    folder: folder
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| id.clone()),
                    key: key_of(folder),
                })
                .collect()
        };
        RemoteJob {
            key: k.key.clone(),
            label: k.label.clone(),
            fingerprint: k.fingerprint.clone(),
            stage: st.id.clone(),
            kind: st.kind.clone(),
            lane: st.lane,
            retries: st.retries.unwrap_or(shared.config.retries),
            video: k.job.video.map(|v| remote_video(&shared.videos[v])),
            upstream: ups(&k.upstream),
            batch: k
                .batch
                .iter()
                .map(|b| RemoteBatchItem {
                    video: remote_video(&b.video),
                    upstream: ups(&b.upstream),
                })
                .collect(),
            provenance: k.provenance.clone(),
            output_root: shared.output_dir.clone(),
        }
    }

    /// Each video the job reads: its content hash and where it is on this machine (for
    /// an executor that uploads videos to where workers can fetch them).
    pub fn video_files(&self) -> Vec<(String, PathBuf)> {
        let k = &self.keyed;
        k.job
            .video
            .map(|v| &self.shared.videos[v])
            .into_iter()
            .chain(k.batch.iter().map(|b| &b.video))
            .map(|v| (v.hash.clone(), v.path.clone()))
            .collect()
    }
}

/// What a worker lends the jobs it runs.
pub struct WorkerEnv<'a> {
    pub registry: &'a Registry,
    /// The worker's own store: upstream entries are adopted into it first.
    pub store: &'a Store,
    /// Where command stages run and relative params resolve (a checkout of the
    /// manifest's folder, when stages use files from it).
    pub base_dir: &'a Path,
    pub threads: usize,
    pub cancel: &'a AtomicBool,
    pub events: &'a EventSink,
}

/// Runs `job` on this worker: its videos are at `videos` (hash -> file) and its
/// upstream entries in `env.store`. Commits the outputs to `env.store` under the job's
/// key and returns the entry. One attempt (plus the one CPU rerun after a GPU out of
/// memory); retries are the queue's.
pub fn run_remote(
    job: &RemoteJob,
    videos: &BTreeMap<String, PathBuf>,
    env: &WorkerEnv,
    mut resources: Option<&mut Resources>,
) -> Result<Entry, StageError> {
    job.check().map_err(StageError::fatal)?;
    let hint = "install the same vsum build on the coordinator and every worker";
    let kind = env.registry.get(&job.kind).ok_or_else(|| {
        StageError::fatal(format!(
            "this worker's vsum has no stage kind '{}' (job {})",
            job.kind,
            job.label.describe()
        ))
        .hint(hint)
    })?;
    if kind.version() != job.fingerprint.kind_version {
        return Err(StageError::fatal(format!(
            "stage kind '{}' is version {} on this worker, {} on the coordinator",
            job.kind,
            kind.version(),
            job.fingerprint.kind_version
        ))
        .hint(hint));
    }
    if job.fingerprint.key() != job.key {
        return Err(StageError::fatal(format!(
            "job {}: its key does not match its fingerprint (a damaged or forged message)",
            job.label.describe()
        )));
    }
    let video_of = |v: &RemoteVideo| -> Result<Video, StageError> {
        let path = videos.get(&v.hash).ok_or_else(|| {
            StageError::retryable(format!("video {} was not fetched", v.rel.display()))
        })?;
        Ok(Video {
            path: path.clone(),
            rel: v.rel.clone(),
            stem: v.stem.clone().into(),
            folder: v.folder.clone().into(),
            hash: v.hash.clone(),
        })
    };
    let video = job.video.as_ref().map(video_of).transpose()?;
    // Stand-in folders, one per upstream output, named like the coordinator's (some
    // stages name files after the folder); each is staged from the store.
    let mut sources = Vec::new();
    let mut folder_of = |u: &RemoteUpstream| {
        let folder = PathBuf::from(sources.len().to_string()).join(&u.folder);
        sources.push((folder.clone(), u.key.clone()));
        (u.stage.clone(), folder)
    };
    let upstream: BTreeMap<String, PathBuf> = job.upstream.iter().map(&mut folder_of).collect();
    let mut batch_ups = Vec::new();
    for b in &job.batch {
        let ups: BTreeMap<String, PathBuf> = b.upstream.iter().map(&mut folder_of).collect();
        batch_ups.push((video_of(&b.video)?, ups));
    }
    let staged = Staged::new(env.store, &sources, None).map_err(|e| {
        StageError::retryable(format!(
            "cannot stage the upstream outputs of {}: {e}",
            job.label.describe()
        ))
    })?;
    let upstream = staged.redirect(&upstream);
    let batch: Vec<BatchItem> = batch_ups
        .into_iter()
        .map(|(video, ups)| BatchItem {
            video,
            upstream: staged.redirect(&ups),
        })
        .collect();
    let mut force_cpu = job.lane == Lane::Cpu && kind.default_lane() == Lane::Gpu;
    loop {
        let began = Instant::now();
        let job_dir = env.store.job_dir().map_err(|e| {
            StageError::retryable(format!("cannot create a work folder in the cache: {e}"))
        })?;
        let mut ctx = JobCtx {
            stage_id: &job.stage,
            params: &job.fingerprint.params,
            base_dir: env.base_dir,
            output_root: &job.output_root,
            out_dir: &job_dir,
            video: video.as_ref(),
            upstream: &upstream,
            provenance: &job.provenance,
            batch: &batch,
            previous: None,
            threads: env.threads,
            cancel: env.cancel,
            resources: resources.as_deref_mut(),
            force_cpu,
            events: env.events,
            cores: None,
            held_cores: env.threads,
        };
        let result = kind.run(&mut ctx).and_then(|()| {
            env.store
                .commit(
                    &job.key,
                    &job.fingerprint,
                    &job.stage,
                    job.label.video.clone(),
                    &job_dir,
                    began.elapsed().as_millis() as u64,
                )
                .map_err(|e| {
                    StageError::retryable(format!("cannot store outputs in the cache: {e}"))
                })
        });
        // Stored or failed, the work folder has served.
        let _ = std::fs::remove_dir_all(&job_dir);
        match result {
            Ok(entry) => return Ok(entry),
            Err(e) => {
                if e.out_of_memory && !force_cpu {
                    force_cpu = true;
                    continue;
                }
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::SCHEMA;

    fn job() -> RemoteJob {
        let fingerprint = Fingerprint {
            schema: SCHEMA,
            kind: "command".into(),
            kind_version: 1,
            params: serde_json::json!({}),
            inputs: BTreeMap::new(),
            upstream: BTreeMap::new(),
            tools: BTreeMap::new(),
        };
        let hash = "a".repeat(64);
        RemoteJob {
            key: fingerprint.key(),
            label: JobLabel {
                index: 0,
                stage: "s".into(),
                kind: "command".into(),
                video: Some("v.mp4".into()),
                lane: Lane::Cpu,
            },
            fingerprint,
            stage: "s".into(),
            kind: "command".into(),
            lane: Lane::Cpu,
            retries: 0,
            video: Some(RemoteVideo {
                hash: hash.clone(),
                size: 1,
                name: "v.mp4".into(),
                rel: "v.mp4".into(),
                stem: "v".into(),
                folder: "v".into(),
            }),
            upstream: vec![RemoteUpstream {
                stage: "up".into(),
                folder: "up".into(),
                key: hash,
            }],
            batch: Vec::new(),
            provenance: BTreeMap::new(),
            output_root: "/out".into(),
        }
    }

    #[test]
    fn a_message_that_could_escape_the_workers_folders_is_refused() {
        assert_eq!(job().check(), Ok(()));
        let mut j = job();
        j.video.as_mut().unwrap().name = "../../etc/passwd".into();
        assert!(j.check().unwrap_err().contains("bad video"));
        let mut j = job();
        j.upstream[0].key = "ab".into();
        assert!(j.check().unwrap_err().contains("bad upstream key"));
        let mut j = job();
        j.upstream[0].folder = "..".into();
        assert!(j.check().unwrap_err().contains("bad upstream folder"));
        let mut j = job();
        j.key = "../x".into();
        assert!(j.check().unwrap_err().contains("bad key"));
    }
}
