//! Typed stage parameters: turning a params object into a kind's struct, with errors
//! that point at the offending path. Its own module so that alerts (which parse their
//! thresholds the same way) need not import the stage trait.

use serde_json::Value;

/// A problem with a stage's parameters. `path` is relative to the params object
/// (`["run", "2"]`) so the manifest loader can point at the right line.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub path: Vec<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl ParamError {
    pub fn new(path: &[&str], message: impl Into<String>) -> Self {
        ParamError {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Deserializes params into a kind's typed struct (which should `deny_unknown_fields`),
/// turning serde's complaint into a [`ParamError`] at the offending path.
pub fn typed_params<T: serde::de::DeserializeOwned>(params: &Value) -> Result<T, Vec<ParamError>> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        vec![ParamError {
            path,
            message: e.inner().to_string(),
            hint: None,
        }]
    })
}
