//! Run settings, layered: built-in defaults < config file < manifest `config:` <
//! environment (`VSUM_*`) < command-line flags.
//!
//! The config file is `--config`/`VSUM_CONFIG`, else the first `config/default.yaml`
//! found walking up from the manifest's folder. Relative paths resolve against the
//! manifest's folder. `models_dir`'s environment override (`VSUM_MODELS_DIR`) is
//! applied by `vsum-models`, the one place that decides the models folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics};
use crate::stage::typed_params;
use crate::yaml::{self, Node};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Cache folder (relative to the manifest's folder).
    pub cache_dir: String,
    /// Threads of the CPU lane; 0 means one per core.
    pub cpu_threads: usize,
    /// Extra attempts for a failed job whose error may be transient.
    pub retries: u32,
    /// First retry delay; doubles each attempt.
    pub retry_backoff_ms: u64,
    /// Consecutive failures of one stage kind that stop scheduling it.
    pub breaker_threshold: u32,
    /// Models the GPU lane keeps loaded at once.
    pub gpu_models: usize,
    /// Run summaries and logs kept under the cache; older ones are removed.
    pub keep_runs: usize,
    /// Default `vsum cache gc --max-size` (e.g. "200G"); none = no size limit.
    pub gc_max_size: Option<String>,
    /// Default `vsum cache gc --older-than` (e.g. "90d"); none = no age limit.
    pub gc_older_than: Option<String>,
    /// How outputs are placed in `output/`: `copy` (a reflink where the filesystem has
    /// it), so an edit never reaches the cache; `hardlink` saves space, but an edit of
    /// an output then edits the cache (objects are read-only, which guards most).
    pub link: LinkMode,
    /// Where installed models live (relative to the manifest's folder); none = the
    /// default `~/.cache/vsum/models`. `VSUM_MODELS_DIR` overrides it. The engine only
    /// carries the setting: the binary decides the folder once (`vsum-models`) and
    /// hands it to the stage kinds.
    pub models_dir: Option<PathBuf>,
}

/// How the cache places outputs in the output folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    #[default]
    Copy,
    Hardlink,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_dir: ".vsum".into(),
            cpu_threads: 0,
            retries: 1,
            retry_backoff_ms: 500,
            breaker_threshold: 3,
            gpu_models: 2,
            keep_runs: 100,
            gc_max_size: None,
            gc_older_than: None,
            link: LinkMode::Copy,
            models_dir: None,
        }
    }
}

/// Environment variables that override config keys.
pub const ENV_VARS: [(&str, &str); 5] = [
    ("VSUM_CACHE_DIR", "cache_dir"),
    ("VSUM_CPU_THREADS", "cpu_threads"),
    ("VSUM_RETRIES", "retries"),
    ("VSUM_RETRY_BACKOFF_MS", "retry_backoff_ms"),
    ("VSUM_BREAKER_THRESHOLD", "breaker_threshold"),
];

impl Config {
    /// Threads for the CPU lane.
    pub fn threads(&self) -> usize {
        if self.cpu_threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.cpu_threads
        }
    }

    /// Absolute cache folder for a manifest in `base_dir`.
    pub fn cache_path(&self, base_dir: &Path) -> PathBuf {
        crate::fsutil::normalize(&base_dir.join(&self.cache_dir))
    }

    /// The configured models folder, absolute, for a manifest in `base_dir`.
    pub fn models_path(&self, base_dir: &Path) -> Option<PathBuf> {
        self.models_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| crate::fsutil::normalize(&base_dir.join(d)))
    }
}

/// Finds the config file for a manifest folder.
pub fn find_file(explicit: Option<&Path>, base_dir: &Path) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("VSUM_CONFIG") {
        return Some(PathBuf::from(p));
    }
    base_dir
        .ancestors()
        .map(|d| d.join("config").join("default.yaml"))
        .find(|p| p.is_file())
}

/// Builds the effective config. `flags` holds command-line overrides as JSON.
pub fn resolve(
    file: Option<&Path>,
    manifest_file: &Path,
    manifest_config: Option<&(Value, Node)>,
    flags: serde_json::Map<String, Value>,
) -> Result<Config, Diagnostics> {
    let mut merged = serde_json::to_value(Config::default()).expect("config serializes");
    let mut layers: Vec<(PathBuf, Value, Option<Node>)> = Vec::new();
    if let Some(f) = file {
        let src = std::fs::read_to_string(f).map_err(|e| {
            Diagnostics(vec![
                Diagnostic::new(
                    f,
                    Default::default(),
                    format!("cannot read config file: {e}"),
                )
                .hint("check the path given by --config or VSUM_CONFIG"),
            ])
        })?;
        let (node, _) = yaml::parse(&src)
            .map_err(|e| Diagnostics(vec![Diagnostic::new(f, e.pos, e.headline())]))?;
        layers.push((f.to_path_buf(), node.to_json(), Some(node)));
    }
    if let Some((v, n)) = manifest_config {
        layers.push((manifest_file.to_path_buf(), v.clone(), Some(n.clone())));
    }
    let mut env = serde_json::Map::new();
    for (var, key) in ENV_VARS {
        if let Ok(v) = std::env::var(var) {
            let value = if key == "cache_dir" {
                Value::String(v)
            } else {
                v.parse::<u64>()
                    .map(Value::from)
                    .unwrap_or(Value::String(v))
            };
            env.insert(key.to_string(), value);
        }
    }
    layers.push((PathBuf::from("<environment>"), Value::Object(env), None));
    layers.push((PathBuf::from("<command line>"), Value::Object(flags), None));

    let mut diags = Vec::new();
    for (path, layer, node) in layers {
        let Value::Object(map) = layer else {
            if !layer.is_null() {
                diags.push(Diagnostic::new(
                    &path,
                    Default::default(),
                    "config must be a mapping",
                ));
            }
            continue;
        };
        // Check each layer on its own so errors point at the right file.
        let mut candidate = merged.clone();
        for (k, v) in &map {
            candidate[k] = v.clone();
        }
        match typed_params::<Config>(&candidate) {
            Ok(_) => merged = candidate,
            Err(errs) => {
                for e in errs {
                    let pos = node.as_ref().map(|n| n.locate(&e.path)).unwrap_or_default();
                    diags.push(
                        Diagnostic::new(&path, pos, format!("config: {}", e.message)).hint(
                            "keys: cache_dir, cpu_threads, retries, retry_backoff_ms, breaker_threshold, gpu_models, keep_runs, gc_max_size, gc_older_than, link, models_dir",
                        ),
                    );
                }
            }
        }
    }
    if diags.is_empty() {
        Ok(typed_params::<Config>(&merged).expect("checked layer by layer"))
    } else {
        Err(Diagnostics(diags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order_and_errors_point_into_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("default.yaml");
        std::fs::write(&f, "cpu_threads: 3\nretries: 4\n").unwrap();
        let (node, _) = yaml::parse("retries: 0\n").unwrap();
        let mut flags = serde_json::Map::new();
        flags.insert("cpu_threads".into(), Value::from(7));
        let c = resolve(
            Some(&f),
            Path::new("m.yaml"),
            Some(&(node.to_json(), node)),
            flags,
        )
        .unwrap();
        assert_eq!((c.cpu_threads, c.retries, c.breaker_threshold), (7, 0, 3));

        std::fs::write(&f, "retries: 1\nretrys: 2\n").unwrap();
        let err = resolve(Some(&f), Path::new("m.yaml"), None, Default::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("default.yaml:2:1"), "{text}");
        assert!(text.contains("retrys"), "{text}");
    }

    #[test]
    fn models_dir_is_read_and_made_absolute_against_the_manifest_folder() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("default.yaml");
        std::fs::write(&f, "models_dir: shared/models\n").unwrap();
        let c = resolve(Some(&f), Path::new("m.yaml"), None, Default::default()).unwrap();
        assert_eq!(c.models_dir.as_deref(), Some(Path::new("shared/models")));
        assert_eq!(
            c.models_path(Path::new("/data/talks")),
            Some(PathBuf::from("/data/talks/shared/models"))
        );
        assert_eq!(Config::default().models_path(Path::new("/x")), None);

        std::fs::write(&f, "models_dir: 3\n").unwrap();
        let err = resolve(Some(&f), Path::new("m.yaml"), None, Default::default()).unwrap_err();
        assert!(err.to_string().contains("default.yaml:1:"), "{err}");
    }
}
