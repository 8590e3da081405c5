//! Mean job time per stage, for `vsum run`'s estimate: kept in `.vsum/durations.json`
//! and brought up to date as each run ends, so a run's start reads one small file
//! instead of parsing every kept run summary (100 of them by default, megabytes each
//! for a large batch).
//!
//! The file is a cache of the summaries: a missing or torn one is rebuilt from the kept
//! summaries once. Two runs ending at once may each write it; one run's jobs are then
//! left out of the means, which only an estimate reads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::summary::JobRecord;
use crate::events::Outcome;
use crate::fsutil;
use crate::store::Store;

const FILE: &str = "durations.json";
const VERSION: u32 = 1;
/// Jobs a stage's mean counts at most: later runs keep moving it (a new model, a
/// faster machine) once a stage has this many behind it.
const CAP: u64 = 1000;

/// A stage's mean duration (ms) over `n` jobs that ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Mean {
    ms: f64,
    n: u64,
}

impl Mean {
    fn add(&mut self, ms: f64) {
        self.n = (self.n + 1).min(CAP);
        self.ms += (ms - self.ms) / self.n as f64;
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Durations {
    version: u32,
    stages: BTreeMap<String, Mean>,
}

fn path(store: &Store) -> PathBuf {
    store.root().join(FILE)
}

fn add_jobs(d: &mut Durations, jobs: &[JobRecord]) {
    for j in jobs.iter().filter(|j| j.outcome == Outcome::Ran) {
        let ms = j.end_ms.saturating_sub(j.start_ms) as f64;
        d.stages.entry(j.label.stage.clone()).or_default().add(ms);
    }
}

/// The file, or (missing, torn, older) the means rebuilt from the kept run summaries,
/// oldest first.
fn load(store: &Store) -> (Durations, bool) {
    let kept = std::fs::read(path(store))
        .ok()
        .and_then(|b| serde_json::from_slice::<Durations>(&b).ok())
        .filter(|d| d.version == VERSION);
    if let Some(d) = kept {
        return (d, false);
    }
    let mut d = Durations {
        version: VERSION,
        stages: BTreeMap::new(),
    };
    for p in super::past_runs(store) {
        if let Ok(s) = super::read_summary(&p) {
            add_jobs(&mut d, &s.jobs);
        }
    }
    (d, true)
}

fn save(store: &Store, d: &Durations) {
    if let Ok(bytes) = serde_json::to_vec(d) {
        // Best effort, like the file itself: a failed write means a rebuild next time.
        let _ = fsutil::replace_atomic(&path(store), &bytes);
    }
}

/// Mean duration (ms) of the jobs that ran, per stage, over the runs of this cache.
pub fn stage_means(store: &Store) -> BTreeMap<String, f64> {
    let (d, rebuilt) = load(store);
    if rebuilt {
        save(store, &d);
    }
    d.stages.into_iter().map(|(k, m)| (k, m.ms)).collect()
}

/// Adds a finished run's jobs that ran to the means. Called after its summary is
/// written, so a rebuild from the summaries already holds them.
pub(super) fn record(store: &Store, jobs: &[JobRecord]) {
    let (mut d, rebuilt) = load(store);
    if !rebuilt {
        add_jobs(&mut d, jobs);
    }
    if rebuilt || jobs.iter().any(|j| j.outcome == Outcome::Ran) {
        save(store, &d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_mean_follows_a_change() {
        let mut m = Mean::default();
        for _ in 0..10 {
            m.add(100.0);
        }
        assert_eq!((m.ms, m.n), (100.0, 10));
        m.add(210.0);
        assert!((m.ms - 110.0).abs() < 1e-9);
        for _ in 0..5000 {
            m.add(50.0);
        }
        assert_eq!(m.n, CAP);
        assert!((m.ms - 50.0).abs() < 1.0, "{}", m.ms);
    }
}
