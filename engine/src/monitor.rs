//! Watches the machine while a batch runs: free disk on the output and cache volumes,
//! memory, and the GPU through NVML when an NVIDIA driver is present.
//!
//! NVML is opened at run time (`libnvidia-ml.so.1`); without a driver every GPU field
//! is `None` and vsum runs in CPU mode. This is a driver query, not a media or ML
//! library, so it lives in the engine beside the scheduler that acts on it.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// What NVML says about the first GPU, or why there is none.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum GpuInfo {
    Gpu {
        name: String,
        driver: String,
        memory_total: u64,
        count: u32,
    },
    Cpu {
        reason: String,
    },
}

/// Reads the GPU's memory: `(used, total)` bytes, or `None` when it cannot tell.
pub type VramProbe = Box<dyn Fn() -> Option<(u64, u64)> + Send>;

/// One reading of one GPU.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct GpuSample {
    pub memory_used: u64,
    pub memory_total: u64,
    pub utilization_pct: u32,
    pub temperature_c: u32,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct DiskSample {
    pub path: PathBuf,
    pub free_bytes: u64,
}

/// One reading of the machine.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Sample {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    pub rss_bytes: u64,
    /// Memory in use, machine-wide, in percent.
    pub memory_pct: f64,
    pub disks: Vec<DiskSample>,
    pub gpu: Option<GpuSample>,
}

/// Free bytes for unprivileged users on the filesystem holding `path` (or its
/// nearest existing parent).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(existing).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

fn meminfo_kib(key: &str, text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Resident memory of this process, in bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| meminfo_kib("VmRSS:", &s))
        .unwrap_or(0)
        * 1024
}

/// Machine memory in use, percent (from MemAvailable).
pub fn memory_pct() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/meminfo") else {
        return 0.0;
    };
    match (
        meminfo_kib("MemTotal:", &s),
        meminfo_kib("MemAvailable:", &s),
    ) {
        (Some(t), Some(a)) if t > 0 => (t.saturating_sub(a)) as f64 * 100.0 / t as f64,
        _ => 0.0,
    }
}

/// A handle on NVML, or nothing when there is no NVIDIA driver.
pub struct Gpu {
    nvml: Option<nvml_wrapper::Nvml>,
    reason: String,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.nvml.is_some())
    }
}

impl Gpu {
    /// Opens NVML. Never fails: without a driver this is CPU mode.
    pub fn open() -> Gpu {
        if std::env::var_os("VSUM_NO_GPU").is_some() {
            return Gpu {
                nvml: None,
                reason: "VSUM_NO_GPU is set".into(),
            };
        }
        match nvml_wrapper::Nvml::init() {
            Ok(n) => match n.device_count() {
                Ok(c) if c > 0 => Gpu {
                    nvml: Some(n),
                    reason: String::new(),
                },
                _ => Gpu {
                    nvml: None,
                    reason: "NVML reports no GPU".into(),
                },
            },
            Err(e) => Gpu {
                nvml: None,
                reason: format!("no NVIDIA driver ({e})"),
            },
        }
    }

    pub fn info(&self) -> GpuInfo {
        let Some(n) = &self.nvml else {
            return GpuInfo::Cpu {
                reason: self.reason.clone(),
            };
        };
        let dev = n.device_by_index(0);
        GpuInfo::Gpu {
            name: dev
                .as_ref()
                .ok()
                .and_then(|d| d.name().ok())
                .unwrap_or_else(|| "unknown".into()),
            driver: n.sys_driver_version().unwrap_or_default(),
            memory_total: dev
                .as_ref()
                .ok()
                .and_then(|d| d.memory_info().ok())
                .map(|m| m.total)
                .unwrap_or(0),
            count: n.device_count().unwrap_or(0),
        }
    }

    /// A reader of the GPU's used and total memory for the model cache
    /// ([`crate::resources::Resources::with_vram`]), or `None` in CPU mode.
    pub fn vram_probe(self) -> Option<VramProbe> {
        self.nvml.as_ref()?;
        Some(Box::new(move || {
            self.sample().map(|s| (s.memory_used, s.memory_total))
        }))
    }

    pub fn sample(&self) -> Option<GpuSample> {
        let d = self.nvml.as_ref()?.device_by_index(0).ok()?;
        let m = d.memory_info().ok()?;
        Some(GpuSample {
            memory_used: m.used,
            memory_total: m.total,
            utilization_pct: d.utilization_rates().map(|u| u.gpu).unwrap_or(0),
            temperature_c: d
                .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
                .unwrap_or(0),
        })
    }
}

/// Takes one reading of the machine.
pub fn sample(gpu: &Gpu, paths: &[PathBuf], at_ms: u64) -> Sample {
    let mut disks: Vec<DiskSample> = Vec::new();
    for p in paths {
        if let Some(free) = free_bytes(p) {
            disks.push(DiskSample {
                path: p.clone(),
                free_bytes: free,
            });
        }
    }
    Sample {
        at_ms,
        rss_bytes: rss_bytes(),
        memory_pct: memory_pct(),
        disks,
        gpu: gpu.sample(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible_and_gpu_absence_is_cpu_mode() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample(&Gpu::open(), &[dir.path().join("not/yet/made")], 5);
        assert_eq!(s.at_ms, 5);
        assert!(s.rss_bytes > 0);
        assert!(s.memory_pct > 0.0 && s.memory_pct <= 100.0);
        assert_eq!(
            s.disks.len(),
            1,
            "a missing folder is measured on its parent"
        );
        assert!(s.disks[0].free_bytes > 0);
        let g = Gpu {
            nvml: None,
            reason: "test".into(),
        };
        assert_eq!(
            g.info(),
            GpuInfo::Cpu {
                reason: "test".into()
            }
        );
        assert!(g.sample().is_none());
    }
}
