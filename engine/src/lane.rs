//! Where a job runs. Its own module so that events, alerts and stages can all name a
//! lane without importing each other.

use std::fmt;

use serde::Serialize;

/// Where a job runs: the shared CPU pool, or the single GPU-lane thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    Cpu,
    Gpu,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Cpu => "cpu",
            Lane::Gpu => "gpu",
        })
    }
}
