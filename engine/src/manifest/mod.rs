//! Pipeline manifests: YAML in, a validated [`Manifest`] out, or every error at once.
//!
//! A manifest names its inputs, its output folder and its stages. A stage is either a
//! built-in kind (`uses:` + `with:`) or a command (`run:` argv, shorthand for
//! `uses: command`). Validation reports all problems together, sorted, each pointing at
//! `file:line:col` with a hint: unknown keys and kinds (did-you-mean), bad `needs`,
//! cycles (`a -> b -> a`), duplicate ids, wrong parameter types, placeholders naming
//! stages that are not needed, empty inputs.

mod checks;
mod raw_stage;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::stage::{Lane, Registry, Scope};
use crate::yaml::{self, Node, Pos};

/// Video file extensions looked for in input folders when the manifest names none.
pub const DEFAULT_EXTENSIONS: [&str; 6] = ["mp4", "mkv", "mov", "webm", "avi", "m4v"];

const TOP_KEYS: [&str; 8] = [
    "name",
    "description",
    "inputs",
    "extensions",
    "output",
    "config",
    "stages",
    "version",
];
const STAGE_KEYS: [&str; 14] = [
    "description",
    "publish",
    "uses",
    "with",
    "needs",
    "lane",
    "scope",
    "retries",
    "run",
    "stdout",
    "outputs",
    "deps",
    "env",
    "timeout",
];
/// Stage keys that are the params of a command stage.
const COMMAND_KEYS: [&str; 6] = ["run", "stdout", "outputs", "deps", "env", "timeout"];

/// Longest stage id: it names output folders and cache records, which must stay well
/// within the system's file name limit (NAME_MAX, 255 bytes).
pub const MAX_STAGE_ID: usize = 100;

/// The kind a `run:` stage uses.
pub const COMMAND_KIND: &str = "command";

#[derive(Debug, Clone)]
pub struct StageSpec {
    pub id: String,
    pub kind: String,
    /// Checked params, defaults filled in.
    pub params: Value,
    pub needs: Vec<String>,
    pub lane: Lane,
    pub scope: Scope,
    pub retries: Option<u32>,
    pub description: Option<String>,
    /// Output files of a batch stage also placed at the top of `output:`.
    pub publish: Vec<String>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file as given.
    pub file: PathBuf,
    /// Absolute folder of the manifest: relative paths in it resolve here.
    pub base_dir: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub inputs: Vec<String>,
    pub extensions: Vec<String>,
    pub output: PathBuf,
    /// `config:` overrides (merged over the config file by [`crate::config`]).
    pub config: Option<(Value, Node)>,
    /// Stages in file order.
    pub stages: Vec<StageSpec>,
}

impl Manifest {
    pub fn stage(&self, id: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// Absolute output folder.
    pub fn output_dir(&self) -> PathBuf {
        crate::fsutil::normalize(&self.base_dir.join(&self.output))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Reads and validates a manifest file.
pub fn load(path: &Path, registry: &Registry) -> Result<Manifest, ManifestError> {
    let src = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&src, path, &base_dir, registry)
}

/// Validates manifest text (`file` is used in messages only).
pub fn parse(
    src: &str,
    file: &Path,
    base_dir: &Path,
    registry: &Registry,
) -> Result<Manifest, ManifestError> {
    let mut v = Validator {
        file,
        diags: Vec::new(),
    };
    let manifest = v.manifest(src, base_dir, registry);
    if v.diags.is_empty() {
        Ok(manifest.expect("no errors means a manifest"))
    } else {
        v.diags.sort();
        v.diags.dedup();
        Err(ManifestError::Invalid(Diagnostics(v.diags)))
    }
}

struct Validator<'a> {
    file: &'a Path,
    diags: Vec<Diagnostic>,
}

struct RawStage<'n> {
    id: String,
    pos: Pos,
    node: &'n Node,
    kind: Option<String>,
    /// Params and the node their paths are relative to.
    params: Value,
    params_node: &'n Node,
    needs: Vec<(String, Pos)>,
    lane: Option<Lane>,
    scope: Scope,
    retries: Option<u32>,
    description: Option<String>,
    publish: Vec<String>,
}

impl<'a> Validator<'a> {
    fn err(&mut self, pos: Pos, msg: impl Into<String>, hint: Option<String>) {
        self.diags
            .push(Diagnostic::new(self.file, pos, msg).maybe_hint(hint));
    }

    fn manifest(&mut self, src: &str, base_dir: &Path, registry: &Registry) -> Option<Manifest> {
        let (root, dups) = match yaml::parse(src) {
            Ok(r) => r,
            Err(e) => {
                let hint = if e.limit {
                    "vsum bounds what a YAML file may hold, so a hostile file cannot exhaust the machine"
                } else {
                    "check indentation, quoting and unclosed brackets at or before this point"
                };
                self.err(e.pos, e.headline(), Some(hint.into()));
                return None;
            }
        };
        for d in dups {
            self.err(
                d.pos,
                format!(
                    "duplicate key '{}' (first defined at line {})",
                    d.key, d.first.line
                ),
                Some("ids and keys must be unique: rename or remove one".into()),
            );
        }
        let Some(top) = root.as_map() else {
            self.err(
                root.pos,
                format!("a manifest is a mapping, found {}", root.type_name()),
                Some("start with `name:`, `inputs:`, `output:` and `stages:`".into()),
            );
            return None;
        };
        let get = |k: &str| top.iter().find(|(key, _, _)| key == k);
        for (k, pos, _) in top {
            if !TOP_KEYS.contains(&k.as_str()) {
                self.err(
                    *pos,
                    format!("unknown top-level key '{k}'"),
                    did_you_mean(k, TOP_KEYS)
                        .or(Some(format!("allowed keys: {}", TOP_KEYS.join(", ")))),
                );
            }
        }

        let name = match get("name") {
            Some((_, _, n)) => self.string(n, "name").unwrap_or_default(),
            None => self
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let description = get("description").and_then(|(_, _, n)| self.string(n, "description"));

        let inputs = match get("inputs") {
            None => {
                self.err(
                    root.pos,
                    "the manifest has no `inputs:`",
                    Some("add `inputs: [videos/]` (folders, files or globs)".into()),
                );
                Vec::new()
            }
            Some((_, pos, n)) => {
                let list = self.string_list(n, "inputs");
                if list.is_empty() && n.as_seq().is_some_and(|s| s.is_empty()) || n.is_null() {
                    self.err(
                        *pos,
                        "`inputs:` is empty",
                        Some(
                            "list at least one folder, file or glob, e.g. `inputs: [videos/]`"
                                .into(),
                        ),
                    );
                }
                list
            }
        };
        let extensions = match get("extensions") {
            None => DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            Some((_, _, n)) => self
                .string_list(n, "extensions")
                .into_iter()
                .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
        };
        let output = match get("output") {
            None => PathBuf::from("output"),
            Some((_, _, n)) => PathBuf::from(self.string(n, "output").unwrap_or_default()),
        };
        let output_pos = get("output").map_or(root.pos, |(_, p, _)| *p);
        if let Some(why) =
            crate::safety::output_problem(&base_dir.join(&output), base_dir, &inputs, None)
        {
            self.err(
                output_pos,
                format!("unsafe `output:`: {why}"),
                Some(crate::safety::OUTPUT_HINT.into()),
            );
        }
        let config = get("config").map(|(_, _, n)| {
            if n.as_map().is_none() && !n.is_null() {
                self.err(
                    n.pos,
                    format!("`config:` must be a mapping, found {}", n.type_name()),
                    None,
                );
            }
            (n.to_json(), n.clone())
        });

        let mut raw = Vec::new();
        match get("stages") {
            None => self.err(
                root.pos,
                "the manifest has no `stages:`",
                Some("add `stages:` with at least one stage".into()),
            ),
            Some((_, pos, n)) => match n.as_map() {
                Some([]) => self.err(
                    *pos,
                    "`stages:` is empty",
                    Some("add at least one stage".into()),
                ),
                Some(entries) => {
                    for (id, pos, node) in entries {
                        if let Some(r) = self.stage(id, *pos, node) {
                            raw.push(r);
                        }
                    }
                }
                None if n.is_null() => self.err(
                    *pos,
                    "`stages:` is empty",
                    Some("add at least one stage".into()),
                ),
                None => self.err(
                    n.pos,
                    format!(
                        "`stages:` must be a mapping of stage id to stage, found {}",
                        n.type_name()
                    ),
                    None,
                ),
            },
        }

        self.check_needs(&raw);
        self.check_cycles(&raw);
        let stages = self.check_kinds(&raw, registry);
        if !self.diags.is_empty() {
            return None;
        }
        Some(Manifest {
            file: self.file.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            name,
            description,
            inputs,
            extensions,
            output,
            config: config.filter(|(v, _)| !v.is_null()),
            stages,
        })
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match n.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.err(
                    n.pos,
                    format!("`{what}` must be a string, found {}", n.type_name()),
                    None,
                );
                None
            }
        }
    }

    fn string_list(&mut self, n: &Node, what: &str) -> Vec<String> {
        if let Some(s) = n.as_str() {
            return vec![s.to_string()];
        }
        if n.is_null() {
            return Vec::new();
        }
        match n.as_seq() {
            Some(items) => items
                .iter()
                .filter_map(|i| self.string(i, &format!("{what}[]")))
                .collect(),
            None => {
                self.err(
                    n.pos,
                    format!(
                        "`{what}` must be a list of strings, found {}",
                        n.type_name()
                    ),
                    None,
                );
                Vec::new()
            }
        }
    }
}
