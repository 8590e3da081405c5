//! Typed events: the only way the engine tells the world what it does.
//!
//! The engine never prints. Progress bars, plain logs, the JSON log file and the run
//! summary are subscribers that receive every [`Event`] in the order it was emitted.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::lane::Lane;

/// Identifies a job in events and summaries.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct JobLabel {
    pub index: usize,
    pub stage: String,
    pub kind: String,
    /// The video's path relative to the manifest (lossy), or `None` for batch jobs.
    pub video: Option<String>,
    pub lane: Lane,
}

impl JobLabel {
    pub fn describe(&self) -> String {
        match &self.video {
            Some(v) => format!("{} [{}]", self.stage, v),
            None => format!("{} [batch]", self.stage),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ran and committed its outputs.
    Ran,
    /// Restored from the cache without running.
    Cached,
    /// Failed after its retries.
    Failed,
    /// Not run: an upstream failed, or the circuit breaker is open.
    Skipped,
    /// Not run or abandoned because the run was interrupted.
    Cancelled,
    /// Dry run: would run.
    WouldRun,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        videos: usize,
        jobs: usize,
    },
    /// A problem that does not stop the run (an unreadable input folder, a corrupt cache entry).
    Warning {
        message: String,
    },
    JobStarted {
        job: JobLabel,
        attempt: u32,
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    JobRetrying {
        job: JobLabel,
        attempt: u32,
        error: String,
        delay_ms: u64,
    },
    JobFinished {
        job: JobLabel,
        outcome: Outcome,
        key: Option<String>,
        error: Option<String>,
        start_ms: u64,
        end_ms: u64,
    },
    BreakerOpened {
        kind: String,
        failures: u32,
    },
    ResourceLoaded {
        key: String,
        ms: u64,
    },
    ResourceDropped {
        key: String,
    },
    Interrupted,
    /// A reading of the machine (see `monitor`).
    Sample(crate::monitor::Sample),
    /// An alert changed level (including back to ok).
    Alert(crate::alerts::Alert),
    /// New jobs wait: a critical reading (its message says which and what to do).
    Paused {
        reason: String,
    },
    Resumed,
    /// The batch stops early: no new job starts; finished work is kept.
    Stopped {
        reason: String,
    },
    RunFinished {
        ran: usize,
        cached: usize,
        failed: usize,
        skipped: usize,
        cancelled: usize,
        wall_ms: u64,
    },
}

type Subscriber = Arc<dyn Fn(&Event) + Send + Sync>;

/// Fans events out to subscribers. Cheap to clone; safe to use from any thread.
#[derive(Clone, Default)]
pub struct EventSink {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
}

impl EventSink {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn subscribe(&self, f: impl Fn(&Event) + Send + Sync + 'static) {
        self.subscribers
            .lock()
            .expect("subscriber list")
            .push(Arc::new(f));
    }

    pub fn emit(&self, event: Event) {
        let subs = self.subscribers.lock().expect("subscriber list").clone();
        for s in subs {
            s(&event);
        }
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}
