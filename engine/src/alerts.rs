//! Alert thresholds (`config/alerts.yaml`) and how a reading compares to them.
//!
//! Each metric has a warning and a critical level. Crossing a warning is logged and
//! shown; crossing a critical level protects the batch: low disk, high memory or a hot
//! GPU pause new jobs until the reading recovers (or `pause_timeout_minutes` passes, then
//! the run stops cleanly and a rerun resumes it); a critical error rate stops the batch.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostic, Diagnostics};
use crate::monitor::Sample;
use crate::params::typed_params;
use crate::yaml;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Threshold {
    pub warning: Option<f64>,
    pub critical: Option<f64>,
}

impl Threshold {
    const fn new(warning: f64, critical: f64) -> Self {
        Threshold {
            warning: Some(warning),
            critical: Some(critical),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// Free space on the output and cache volumes, GB (lower is worse).
    pub disk_free_gb: Threshold,
    /// Machine memory in use, percent.
    pub memory_percent: Threshold,
    /// GPU temperature, degrees C.
    pub gpu_temperature_c: Threshold,
    /// Failed videos among those with a finished job, percent (after
    /// `min_videos_for_error_rate`). A bad input (empty, corrupt, unsupported file) is
    /// that video's failure and does not count.
    pub error_rate_percent: Threshold,
    /// Failures in a row, any stage (the per-kind circuit breaker is `breaker_threshold`).
    pub consecutive_failures: Threshold,
    /// The error rate is judged only once this many videos have a finished job.
    #[serde(alias = "min_jobs_for_error_rate")]
    pub min_videos_for_error_rate: usize,
    /// How long a critical pause waits for recovery before the run stops cleanly.
    pub pause_timeout_minutes: f64,
    /// How often the machine is sampled.
    pub sample_interval_ms: u64,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            disk_free_gb: Threshold::new(50.0, 20.0),
            memory_percent: Threshold::new(80.0, 95.0),
            gpu_temperature_c: Threshold::new(80.0, 90.0),
            error_rate_percent: Threshold::new(10.0, 25.0),
            consecutive_failures: Threshold {
                warning: Some(3.0),
                critical: None,
            },
            min_videos_for_error_rate: 20,
            pause_timeout_minutes: 30.0,
            sample_interval_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

/// A metric at a level, with the words to show.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Alert {
    /// `disk:<path>`, `memory`, `gpu_temperature`, `error_rate`, `consecutive_failures`.
    pub metric: String,
    pub level: Level,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
}

fn level(t: &Threshold, value: f64, lower_is_worse: bool) -> (Level, f64) {
    let worse = |limit: f64| {
        if lower_is_worse {
            value < limit
        } else {
            value >= limit
        }
    };
    match (t.critical, t.warning) {
        (Some(c), _) if worse(c) => (Level::Critical, c),
        (_, Some(w)) if worse(w) => (Level::Warning, w),
        _ => (Level::Ok, t.warning.or(t.critical).unwrap_or(0.0)),
    }
}

const GB: f64 = 1e9;

impl Alerts {
    /// Every metric of a sample with its level (including `Ok`, so recoveries show).
    pub fn check(&self, s: &Sample) -> Vec<Alert> {
        let mut out = Vec::new();
        for d in &s.disks {
            let gb = d.free_bytes as f64 / GB;
            let (lvl, thr) = level(&self.disk_free_gb, gb, true);
            out.push(Alert {
                metric: format!("disk:{}", d.path.display()),
                level: lvl,
                value: gb,
                threshold: thr,
                message: match lvl {
                    Level::Critical => format!(
                        "disk almost full: {gb:.1} GB free for {} (critical below {thr} GB); no new job starts until space is freed",
                        d.path.display()
                    ),
                    Level::Warning => format!(
                        "disk space low: {gb:.1} GB free for {} (warning below {thr} GB); run `vsum cache gc` or free space",
                        d.path.display()
                    ),
                    Level::Ok => format!("disk space for {} is fine again ({gb:.1} GB free)", d.path.display()),
                },
            });
        }
        let (lvl, thr) = level(&self.memory_percent, s.memory_pct, false);
        out.push(Alert {
            metric: "memory".into(),
            level: lvl,
            value: s.memory_pct,
            threshold: thr,
            message: match lvl {
                Level::Critical => format!(
                    "memory {:.0}% used (critical at {thr}%); new jobs wait until running ones free memory",
                    s.memory_pct
                ),
                Level::Warning => format!("memory {:.0}% used (warning at {thr}%)", s.memory_pct),
                Level::Ok => format!("memory back to {:.0}% used", s.memory_pct),
            },
        });
        if let Some(g) = &s.gpu {
            let t = g.temperature_c as f64;
            let (lvl, thr) = level(&self.gpu_temperature_c, t, false);
            out.push(Alert {
                metric: "gpu_temperature".into(),
                level: lvl,
                value: t,
                threshold: thr,
                message: match lvl {
                    Level::Critical => format!(
                        "GPU at {t} C (critical at {thr} C); new jobs wait for it to cool down"
                    ),
                    Level::Warning => format!("GPU at {t} C (warning at {thr} C); check cooling"),
                    Level::Ok => format!("GPU back to {t} C"),
                },
            });
        }
        out
    }

    /// The error rate's level, once enough videos have a finished job.
    pub fn error_rate(&self, failed: usize, finished: usize) -> Option<Alert> {
        if finished < self.min_videos_for_error_rate.max(1) {
            return None;
        }
        let pct = failed as f64 * 100.0 / finished as f64;
        let (lvl, thr) = level(&self.error_rate_percent, pct, false);
        Some(Alert {
            metric: "error_rate".into(),
            level: lvl,
            value: pct,
            threshold: thr,
            message: match lvl {
                Level::Critical => format!(
                    "{pct:.0}% of videos failed ({failed} of {finished}; critical at {thr}%), not counting bad input files: stopping the batch so the cause can be fixed; see the failures below, then rerun"
                ),
                Level::Warning => format!(
                    "{pct:.0}% of videos failed so far ({failed} of {finished}; warning at {thr}%)"
                ),
                Level::Ok => format!("error rate back to {pct:.0}%"),
            },
        })
    }

    pub fn consecutive(&self, n: u32) -> Option<Alert> {
        let (lvl, thr) = level(&self.consecutive_failures, n as f64, false);
        (lvl != Level::Ok).then(|| Alert {
            metric: "consecutive_failures".into(),
            level: lvl,
            value: n as f64,
            threshold: thr,
            message: format!("{n} jobs failed in a row (warning at {thr})"),
        })
    }
}

/// Finds `config/alerts.yaml` like the main config: explicit, `VSUM_ALERTS`, or upward.
pub fn find_file(explicit: Option<&Path>, base_dir: &Path) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("VSUM_ALERTS") {
        return Some(PathBuf::from(p));
    }
    base_dir
        .ancestors()
        .map(|d| d.join("config").join("alerts.yaml"))
        .find(|p| p.is_file())
}

/// Loads thresholds (defaults when there is no file).
pub fn load(file: Option<&Path>) -> Result<Alerts, Diagnostics> {
    let Some(f) = file else {
        return Ok(Alerts::default());
    };
    let src = std::fs::read_to_string(f).map_err(|e| {
        Diagnostics(vec![Diagnostic::new(
            f,
            Default::default(),
            format!("cannot read alerts file: {e}"),
        )])
    })?;
    let (node, _) = yaml::parse(&src)
        .map_err(|e| Diagnostics(vec![Diagnostic::new(f, e.pos, e.headline())]))?;
    let json = if node.is_null() {
        serde_json::json!({})
    } else {
        node.to_json()
    };
    typed_params::<Alerts>(&json).map_err(|errs| {
        Diagnostics(
            errs.into_iter()
                .map(|e| {
                    Diagnostic::new(f, node.locate(&e.path), format!("alerts: {}", e.message))
                        .hint("see config/alerts.yaml in the vsum repository for the keys")
                })
                .collect(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{DiskSample, GpuSample};

    fn sample(free_gb: f64, mem: f64, temp: u32) -> Sample {
        Sample {
            at_ms: 0,
            rss_bytes: 1,
            memory_pct: mem,
            disks: vec![DiskSample {
                path: "/out".into(),
                free_bytes: (free_gb * GB) as u64,
            }],
            gpu: Some(GpuSample {
                memory_used: 0,
                memory_total: 1,
                utilization_pct: 0,
                temperature_c: temp,
            }),
        }
    }

    #[test]
    fn levels_follow_the_default_thresholds() {
        let a = Alerts::default();
        let levels = |s: &Sample| a.check(s).into_iter().map(|x| x.level).collect::<Vec<_>>();
        assert_eq!(levels(&sample(100.0, 50.0, 60)), vec![Level::Ok; 3]);
        assert_eq!(
            levels(&sample(30.0, 85.0, 85)),
            vec![Level::Warning, Level::Warning, Level::Warning]
        );
        assert_eq!(
            levels(&sample(10.0, 96.0, 95)),
            vec![Level::Critical, Level::Critical, Level::Critical]
        );
        assert_eq!(a.error_rate(3, 19), None, "too few videos to judge");
        assert_eq!(a.error_rate(1, 20).unwrap().level, Level::Ok);
        assert_eq!(a.error_rate(3, 20).unwrap().level, Level::Warning);
        assert_eq!(a.error_rate(5, 20).unwrap().level, Level::Critical);
        assert!(a.consecutive(2).is_none());
        assert_eq!(a.consecutive(3).unwrap().level, Level::Warning);
    }

    #[test]
    fn the_shipped_file_matches_the_defaults() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/alerts.yaml");
        assert_eq!(load(Some(&f)).unwrap(), Alerts::default());
    }
}
