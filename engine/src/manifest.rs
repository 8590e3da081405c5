//! Pipeline manifests: YAML in, a validated [`Manifest`] out, or every error at once.
//!
//! A manifest names its inputs, its output folder and its stages. A stage is either a
//! built-in kind (`uses:` + `with:`) or a command (`run:` argv, shorthand for
//! `uses: command`). Validation reports all problems together, sorted, each pointing at
//! `file:line:col` with a hint: unknown keys and kinds (did-you-mean), bad `needs`,
//! cycles (`a -> b -> a`), duplicate ids, wrong parameter types, placeholders naming
//! stages that are not needed, empty inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use petgraph::graph::DiGraph;
use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::stage::{CheckEnv, Lane, Registry, Scope};
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

    fn stage<'n>(&mut self, id: &str, pos: Pos, node: &'n Node) -> Option<RawStage<'n>> {
        let id_ok = !id.is_empty()
            && id != "."
            && id != ".."
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !id.starts_with('.');
        if !id_ok {
            self.err(
                pos,
                format!("stage id '{id}' is not allowed"),
                Some("use letters, digits, '_', '-' and '.' (it names an output folder)".into()),
            );
        } else if id.len() > MAX_STAGE_ID {
            self.err(
                pos,
                format!(
                    "stage id '{}...' is {} characters long; at most {MAX_STAGE_ID} are allowed",
                    &id[..24],
                    id.len()
                ),
                Some("it names an output folder and cache records: shorten it".into()),
            );
        }
        if matches!(id, "video" | "stem" | "out" | "videos") {
            self.err(
                pos,
                format!("stage id '{id}' is reserved: it is a placeholder name"),
                Some("pick another id".into()),
            );
        }
        let Some(entries) = node.as_map() else {
            self.err(
                node.pos,
                format!("stage '{id}' must be a mapping, found {}", node.type_name()),
                Some("give it `run: [...]` or `uses: <kind>`".into()),
            );
            return None;
        };
        let get = |k: &str| entries.iter().find(|(key, _, _)| key == k);
        for (k, kpos, _) in entries {
            if !STAGE_KEYS.contains(&k.as_str()) {
                self.err(
                    *kpos,
                    format!("unknown key '{k}' in stage '{id}'"),
                    did_you_mean(k, STAGE_KEYS)
                        .or(Some(format!("allowed keys: {}", STAGE_KEYS.join(", ")))),
                );
            }
        }
        let has_run = get("run").is_some();
        let uses = get("uses").and_then(|(_, _, n)| self.string(n, "uses"));
        let command_keys: Vec<_> = entries
            .iter()
            .filter(|(k, _, _)| COMMAND_KEYS.contains(&k.as_str()))
            .collect();
        let (kind, params, params_node) = match (has_run, &uses) {
            (true, Some(_)) => {
                self.err(
                    pos,
                    format!("stage '{id}' has both `run:` and `uses:`"),
                    Some(
                        "a stage is either a command (`run:`) or a built-in kind (`uses:`)".into(),
                    ),
                );
                (None, Value::Null, node)
            }
            (false, None) => {
                self.err(
                    pos,
                    format!("stage '{id}' has neither `run:` nor `uses:`"),
                    Some(
                        "add `run: [program, args...]` or `uses: <kind>` (see `vsum stages`)"
                            .into(),
                    ),
                );
                (None, Value::Null, node)
            }
            (true, None) => {
                if let Some((_, wpos, _)) = get("with") {
                    self.err(
                        *wpos,
                        format!("stage '{id}' is a command: `with:` is for `uses:` stages"),
                        Some("put command settings directly in the stage (`stdout:`, `outputs:`, ...)".into()),
                    );
                }
                let params: serde_json::Map<String, Value> = command_keys
                    .iter()
                    .map(|(k, _, n)| (k.clone(), n.to_json()))
                    .collect();
                (Some(COMMAND_KIND.to_string()), Value::Object(params), node)
            }
            (false, Some(kind)) => {
                for (k, kpos, _) in &command_keys {
                    self.err(
                        *kpos,
                        format!("`{k}:` belongs to command stages; stage '{id}' uses '{kind}'"),
                        Some(format!("put parameters of '{kind}' under `with:`")),
                    );
                }
                match get("with") {
                    Some((_, _, w)) if w.is_null() => {
                        (Some(kind.clone()), Value::Object(Default::default()), w)
                    }
                    Some((_, _, w)) => (Some(kind.clone()), w.to_json(), w),
                    None => (Some(kind.clone()), Value::Object(Default::default()), node),
                }
            }
        };
        let needs = match get("needs") {
            None => Vec::new(),
            Some((_, _, n)) => {
                let items: Vec<&Node> = match (n.as_seq(), n.as_str()) {
                    (Some(s), _) => s.iter().collect(),
                    (None, Some(_)) => vec![n],
                    _ => {
                        self.err(
                            n.pos,
                            format!(
                                "`needs` must be a list of stage ids, found {}",
                                n.type_name()
                            ),
                            None,
                        );
                        Vec::new()
                    }
                };
                items
                    .into_iter()
                    .filter_map(|i| self.string(i, "needs[]").map(|s| (s, i.pos)))
                    .collect()
            }
        };
        let lane = get("lane").and_then(|(_, _, n)| match n.as_str() {
            Some("cpu") => Some(Lane::Cpu),
            Some("gpu") => Some(Lane::Gpu),
            _ => {
                self.err(
                    n.pos,
                    format!(
                        "`lane` must be cpu or gpu, found {}",
                        n.scalar_text().unwrap_or(n.type_name())
                    ),
                    None,
                );
                None
            }
        });
        let scope = match get("scope").map(|(_, _, n)| (n, n.as_str())) {
            None | Some((_, Some("video"))) => Scope::Video,
            Some((_, Some("batch"))) => Scope::Batch,
            Some((n, _)) => {
                self.err(
                    n.pos,
                    format!(
                        "`scope` must be video or batch, found {}",
                        n.scalar_text().unwrap_or(n.type_name())
                    ),
                    None,
                );
                Scope::Video
            }
        };
        let retries = get("retries").and_then(|(_, _, n)| match n.to_json().as_u64() {
            Some(r) if r <= 100 => Some(r as u32),
            _ => {
                self.err(
                    n.pos,
                    "`retries` must be a whole number from 0 to 100",
                    None,
                );
                None
            }
        });
        let description = get("description").and_then(|(_, _, n)| self.string(n, "description"));
        let publish = match get("publish") {
            None => Vec::new(),
            Some((_, kpos, n)) => {
                let list = self.string_list(n, "publish");
                if scope != Scope::Batch {
                    self.err(
                        *kpos,
                        format!("`publish:` is for batch stages; stage '{id}' is per video"),
                        Some("add `scope: batch`, or drop `publish:`".into()),
                    );
                }
                for f in &list {
                    let p = Path::new(f);
                    if f.is_empty()
                        || p.is_absolute()
                        || p.components().count() != 1
                        || f.starts_with('.')
                    {
                        self.err(
                            n.pos,
                            format!("`publish:` entry '{f}' must be a plain file name"),
                            Some("e.g. `publish: [INDEX.md]`".into()),
                        );
                    }
                }
                list
            }
        };
        Some(RawStage {
            id: id.to_string(),
            pos,
            node,
            kind,
            params,
            params_node,
            needs,
            lane,
            scope,
            retries,
            description,
            publish,
        })
    }

    fn check_needs(&mut self, raw: &[RawStage]) {
        let ids: Vec<&str> = raw.iter().map(|r| r.id.as_str()).collect();
        for r in raw {
            let mut seen = BTreeSet::new();
            for (n, pos) in &r.needs {
                if n == &r.id {
                    self.err(*pos, format!("stage '{}' needs itself", r.id), None);
                } else if !ids.contains(&n.as_str()) {
                    self.err(
                        *pos,
                        format!("stage '{}' needs '{n}', which is not a stage", r.id),
                        did_you_mean(n, ids.iter().copied())
                            .or(Some(format!("stages are: {}", ids.join(", ")))),
                    );
                } else if !seen.insert(n) {
                    self.err(
                        *pos,
                        format!("stage '{}' lists '{n}' twice in needs", r.id),
                        None,
                    );
                } else if r.scope == Scope::Video
                    && raw.iter().any(|o| &o.id == n && o.scope == Scope::Batch)
                {
                    self.err(
                        *pos,
                        format!("per-video stage '{}' cannot need batch stage '{n}'", r.id),
                        Some("make it `scope: batch` too, or drop the need".into()),
                    );
                }
            }
        }
    }

    fn check_cycles(&mut self, raw: &[RawStage]) {
        let mut g = DiGraph::<usize, ()>::new();
        let nodes: Vec<_> = (0..raw.len()).map(|i| g.add_node(i)).collect();
        let index: BTreeMap<&str, usize> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), i))
            .collect();
        for (i, r) in raw.iter().enumerate() {
            for (n, _) in &r.needs {
                if let Some(&j) = index.get(n.as_str())
                    && i != j
                {
                    g.add_edge(nodes[j], nodes[i], ());
                }
            }
        }
        for scc in petgraph::algo::tarjan_scc(&g) {
            if scc.len() < 2 {
                continue;
            }
            let members: BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
            // Walk needs inside the component from its first stage (in file order).
            let start = *members.iter().next().expect("non-empty");
            let mut path = vec![start];
            let mut cur = start;
            loop {
                let next = raw[cur]
                    .needs
                    .iter()
                    .filter_map(|(n, _)| index.get(n.as_str()).copied())
                    .filter(|j| members.contains(j))
                    .find(|j| *j == start || !path.contains(j));
                match next {
                    Some(j) if j == start => {
                        path.push(j);
                        break;
                    }
                    Some(j) => {
                        path.push(j);
                        cur = j;
                    }
                    None => break,
                }
            }
            let shown: Vec<&str> = path.iter().map(|&i| raw[i].id.as_str()).collect();
            self.err(
                raw[start].pos,
                format!("stages form a cycle: {}", shown.join(" -> ")),
                Some("`needs` must not loop back; remove one of these needs".into()),
            );
        }
    }

    fn check_kinds(&mut self, raw: &[RawStage], registry: &Registry) -> Vec<StageSpec> {
        let scopes: BTreeMap<&str, Scope> = raw.iter().map(|r| (r.id.as_str(), r.scope)).collect();
        let mut out = Vec::new();
        for r in raw {
            let Some(kind_name) = &r.kind else { continue };
            let Some(kind) = registry.get(kind_name) else {
                let pos = r
                    .node
                    .as_map()
                    .and_then(|m| m.iter().find(|(k, _, _)| k == "uses"))
                    .map(|(_, _, n)| n.pos)
                    .unwrap_or(r.pos);
                self.err(
                    pos,
                    format!("unknown stage kind '{kind_name}' in stage '{}'", r.id),
                    did_you_mean(kind_name, registry.names())
                        .or(Some("run `vsum stages` to list the built-in kinds".into())),
                );
                continue;
            };
            let needs: Vec<(String, Scope)> = r
                .needs
                .iter()
                .map(|(n, _)| {
                    (
                        n.clone(),
                        scopes.get(n.as_str()).copied().unwrap_or(Scope::Video),
                    )
                })
                .collect();
            let env = CheckEnv {
                stage_id: &r.id,
                scope: r.scope,
                needs: &needs,
            };
            match kind.check(&r.params, &env) {
                Ok(params) => out.push(StageSpec {
                    id: r.id.clone(),
                    kind: kind_name.clone(),
                    params,
                    needs: r.needs.iter().map(|(n, _)| n.clone()).collect(),
                    lane: r.lane.unwrap_or(kind.default_lane()),
                    scope: r.scope,
                    retries: r.retries,
                    description: r.description.clone(),
                    publish: r.publish.clone(),
                    pos: r.pos,
                }),
                Err(errors) => {
                    for e in errors {
                        let pos = r.params_node.locate(&e.path);
                        let at = if e.path.is_empty() {
                            String::new()
                        } else {
                            format!(" (at {})", e.path.join("."))
                        };
                        let hint = e.hint.or_else(|| {
                            Some(format!(
                                "`vsum stages` lists the parameters of '{kind_name}'"
                            ))
                        });
                        self.err(
                            pos,
                            format!("stage '{}' ({kind_name}): {}{at}", r.id, e.message),
                            hint,
                        );
                    }
                }
            }
        }
        out
    }
}
