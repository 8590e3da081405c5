//! The watch over a running batch: samples the machine on its own thread, turns
//! readings into alerts on level changes only, keeps peaks and a bounded timeline for
//! the run summary, and tells the coordinator when a critical reading pauses new jobs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::alerts::{Alert, Alerts, Level};
use crate::events::{Event, EventSink};
use crate::monitor::{self, Gpu, GpuInfo, Sample};

/// Samples kept in the run summary; older ones are thinned out, never the newest.
const TIMELINE_CAP: usize = 720;

/// Highest (or, for disks, lowest) readings seen during a run.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Peaks {
    pub rss_bytes: u64,
    pub memory_pct: f64,
    pub gpu_memory_used: u64,
    pub gpu_utilization_pct: u32,
    pub gpu_temperature_c: u32,
    /// Path -> lowest free bytes.
    pub min_disk_free: BTreeMap<String, u64>,
}

/// What the run summary records of the watch.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MonitorSummary {
    pub gpu: GpuInfo,
    pub peaks: Peaks,
    pub timeline: Vec<Sample>,
    /// Every change of an alert's level, in order.
    pub alerts: Vec<Alert>,
}

#[derive(Default)]
struct State {
    levels: BTreeMap<String, Level>,
    pausing: BTreeMap<String, String>,
    peaks: Peaks,
    timeline: Vec<Sample>,
    alerts: Vec<Alert>,
}

pub struct Watch {
    pub alerts: Alerts,
    gpu: Gpu,
    paths: Vec<PathBuf>,
    events: EventSink,
    state: Mutex<State>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Watch {
    /// Watches the volumes of `paths` (output and cache folders).
    pub fn new(alerts: Alerts, paths: Vec<PathBuf>, events: EventSink) -> Watch {
        Watch {
            alerts,
            gpu: Gpu::open(),
            paths,
            events,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes a reading now; emits it and any alert whose level changed.
    pub fn observe(&self, at_ms: u64) {
        let s = monitor::sample(&self.gpu, &self.paths, at_ms);
        let alerts = self.alerts.check(&s);
        {
            let mut st = self.state.lock().expect("watch");
            let p = &mut st.peaks;
            p.rss_bytes = p.rss_bytes.max(s.rss_bytes);
            p.memory_pct = p.memory_pct.max(s.memory_pct);
            if let Some(g) = &s.gpu {
                p.gpu_memory_used = p.gpu_memory_used.max(g.memory_used);
                p.gpu_utilization_pct = p.gpu_utilization_pct.max(g.utilization_pct);
                p.gpu_temperature_c = p.gpu_temperature_c.max(g.temperature_c);
            }
            for d in &s.disks {
                let e = p
                    .min_disk_free
                    .entry(d.path.display().to_string())
                    .or_insert(u64::MAX);
                *e = (*e).min(d.free_bytes);
            }
            if st.timeline.len() >= TIMELINE_CAP {
                // Keep every other sample of the older half: bounded, still spans the run.
                let half = st.timeline.len() / 2;
                let mut i = 0;
                st.timeline.retain(|_| {
                    i += 1;
                    i > half || i % 2 == 0
                });
            }
            st.timeline.push(s.clone());
        }
        self.events.emit(Event::Sample(s));
        for a in alerts {
            self.note(a);
        }
    }

    /// Records an alert if its level changed; critical machine alerts pause new jobs.
    pub fn note(&self, alert: Alert) {
        let mut st = self.state.lock().expect("watch");
        let before = st.levels.get(&alert.metric).copied().unwrap_or(Level::Ok);
        if before == alert.level {
            return;
        }
        st.levels.insert(alert.metric.clone(), alert.level);
        let pauses = alert.metric.starts_with("disk:")
            || alert.metric == "memory"
            || alert.metric == "gpu_temperature";
        if pauses && alert.level == Level::Critical {
            st.pausing
                .insert(alert.metric.clone(), alert.message.clone());
        } else {
            st.pausing.remove(&alert.metric);
        }
        st.alerts.push(alert.clone());
        drop(st);
        self.events.emit(Event::Alert(alert));
    }

    /// Why new jobs must wait, if a critical reading says so.
    pub fn pause_reason(&self) -> Option<String> {
        self.state
            .lock()
            .expect("watch")
            .pausing
            .values()
            .next()
            .cloned()
    }

    pub fn pause_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.alerts.pause_timeout_minutes.max(0.0) * 60.0)
    }

    /// Samples every `sample_interval_ms` until `stop` is dropped (or sent on): the wait
    /// between readings ends at once then, so the end of a run never waits for it.
    pub fn sample_until(&self, stop: &crossbeam_channel::Receiver<()>, t0: Instant) {
        let every = Duration::from_millis(self.alerts.sample_interval_ms.max(50));
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
            self.observe(t0.elapsed().as_millis() as u64);
        }
    }

    pub fn summary(&self) -> MonitorSummary {
        let st = self.state.lock().expect("watch");
        MonitorSummary {
            gpu: self.gpu.info(),
            peaks: st.peaks.clone(),
            timeline: st.timeline.clone(),
            alerts: st.alerts.clone(),
        }
    }
}
