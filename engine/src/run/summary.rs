//! What a run reports: one record per job, the counts, and the summary saved as
//! `.vsum/runs/<run_id>.json` (typed, so every reader parses the same thing).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::events::{JobLabel, Outcome};
use crate::watch::MonitorSummary;

/// One job's record in the run summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

impl JobRecord {
    /// A bare record: this outcome, nothing else known yet, started and ended at `at_ms`.
    pub fn new(label: JobLabel, outcome: Outcome, at_ms: u64) -> JobRecord {
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
            start_ms: at_ms,
            end_ms: at_ms,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub jobs: usize,
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cancelled: usize,
    pub would_run: usize,
}

impl Counts {
    /// Counts these records by outcome.
    pub fn of(records: &[JobRecord]) -> Counts {
        let mut counts = Counts {
            jobs: records.len(),
            ..Default::default()
        };
        for r in records {
            match r.outcome {
                Outcome::Ran => counts.ran += 1,
                Outcome::Cached => counts.cached += 1,
                Outcome::Failed => counts.failed += 1,
                Outcome::Skipped => counts.skipped += 1,
                Outcome::Cancelled => counts.cancelled += 1,
                Outcome::WouldRun => counts.would_run += 1,
            }
        }
        counts
    }
}

/// The outcome of a run, saved as `.vsum/runs/<run_id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: String,
    pub manifest: String,
    /// Unix seconds; RFC 3339 in JSON.
    #[serde(with = "crate::time::secs")]
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
