//! Typed stage contracts: a kind declares its parameters and its outputs as Rust types,
//! and the engine does the parsing, the defaults, the docs and the upstream look-ups.
//!
//! - [`TypedStage`] is what a built-in kind implements. Its `Params` type is parsed from
//!   the manifest once per call in one place (the blanket [`StageKind`] adapter), never
//!   by the kind;
//!   the checked, defaulted value is what joins the cache key. `vsum stages` documents the
//!   params from the same type's JSON Schema (doc comments, defaults, allowed values), so
//!   defaults are written once, in the type.
//! - [`Output`] ties an output type to its file name. A producer writes it with
//!   [`JobCtx::write_output`]; a consumer reads the producer's own public type with
//!   [`JobCtx::upstream`]. A consumer names the producer's fields, so renaming one is a
//!   compile error in the consumer, not silently missing data.
//! - [`find_upstream_file`] is the one place that finds a file among a job's upstream
//!   folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::stage::{
    BatchItem, Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, Lane, ParamDoc, ParamError, StageError,
    StageKind, typed_params,
};

/// A stage kind with typed parameters. Register it with [`Registry::register`]: every
/// `TypedStage` is a [`StageKind`] through the adapter below.
pub trait TypedStage: Send + Sync + 'static {
    /// The parameters. Use `#[serde(deny_unknown_fields)]` and `#[serde(default)]` (the
    /// defaults are documented from the schema), and a doc comment on every field: it
    /// is the help text of `vsum stages`.
    type Params: DeserializeOwned + Serialize + JsonSchema + Send + Sync;
    /// The name used in `uses:` (e.g. `video.scenes`).
    const NAME: &'static str;
    /// Bump when the kind's output for the same inputs changes: it busts its cache.
    const VERSION: u32;
    /// One line for `vsum stages`.
    const SUMMARY: &'static str;
    /// Jobs get the stage's last output as [`JobCtx::previous`] (see
    /// [`StageKind::incremental`]).
    const INCREMENTAL: bool = false;

    /// The lane a stage of this kind runs on unless the manifest says otherwise.
    fn default_lane(&self) -> Lane {
        Lane::Cpu
    }
    /// A look at the raw params before they are parsed, for mistakes that deserve a
    /// better message than the type's (e.g. a string where a list belongs).
    fn check_raw(&self, _raw: &Value) -> Vec<ParamError> {
        Vec::new()
    }
    /// Checks beyond the types (ranges, needs, files) and normalizes; what it returns
    /// is keyed.
    fn validate(&self, p: Self::Params, _env: &CheckEnv) -> Result<Self::Params, Vec<ParamError>> {
        Ok(p)
    }
    /// Extra inputs and tool versions that join the key.
    fn key_extras(&self, _p: &Self::Params, _env: &KeyEnv) -> Result<KeyExtras, StageError> {
        Ok(KeyExtras::default())
    }
    /// Jobs on the GPU lane with the same group run back to back (e.g. one model).
    fn resource_group(&self, _p: &Self::Params) -> Option<String> {
        None
    }
    /// What `vsum doctor` checks for a stage with these params.
    fn doctor(&self, _p: &Self::Params, _base_dir: &Path) -> Vec<Check> {
        Vec::new()
    }
    fn run(&self, p: &Self::Params, ctx: &mut JobCtx) -> Result<(), StageError>;
}

/// Absent params are an empty mapping.
fn object(params: &Value) -> Value {
    match params {
        Value::Null => Value::Object(Default::default()),
        v => v.clone(),
    }
}

/// The checked params, parsed once per call here (a kind never parses them itself).
fn parse<K: TypedStage>(params: &Value) -> Result<K::Params, StageError> {
    typed_params(&object(params)).map_err(|e| {
        StageError::fatal(format!(
            "{}: bad params at '{}': {}",
            K::NAME,
            e[0].path.join("."),
            e[0].message
        ))
        .hint("run `vsum validate` on the manifest")
    })
}

/// The adapter to the engine's object-safe [`StageKind`]: every typed kind is one.
impl<K: TypedStage> StageKind for K {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn version(&self) -> u32 {
        K::VERSION
    }
    fn summary(&self) -> &'static str {
        K::SUMMARY
    }
    fn default_lane(&self) -> Lane {
        TypedStage::default_lane(self)
    }
    fn params_doc(&self) -> Vec<ParamDoc> {
        params_doc::<K::Params>()
    }
    fn check(&self, params: &Value, env: &CheckEnv) -> Result<Value, Vec<ParamError>> {
        let early = TypedStage::check_raw(self, params);
        if !early.is_empty() {
            return Err(early);
        }
        let p: K::Params = typed_params(&object(params))?;
        let p = TypedStage::validate(self, p, env)?;
        serde_json::to_value(&p).map_err(|e| vec![ParamError::new(&[], e.to_string())])
    }
    fn key_extras(&self, params: &Value, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        TypedStage::key_extras(self, &parse::<K>(params)?, env)
    }
    fn resource_group(&self, params: &Value) -> Option<String> {
        TypedStage::resource_group(self, &parse::<K>(params).ok()?)
    }
    fn incremental(&self) -> bool {
        K::INCREMENTAL
    }
    fn run(&self, ctx: &mut JobCtx) -> Result<(), StageError> {
        let p = parse::<K>(ctx.params)?;
        TypedStage::run(self, &p, ctx)
    }
    fn doctor(&self, params: &Value, base_dir: &Path) -> Vec<Check> {
        match parse::<K>(params) {
            Ok(p) => TypedStage::doctor(self, &p, base_dir),
            Err(e) => vec![Check::fail(K::NAME, e.message, "fix the stage's params")],
        }
    }
}

/// A file a kind writes, tied to its type. Producers make the type public; consumers
/// read it back with [`JobCtx::upstream`].
pub trait Output: Serialize + DeserializeOwned {
    /// The file's name in the stage's output folder (e.g. `scenes.json`).
    const FILE: &'static str;
}

/// Finds `file` in the upstream folders: the first stage (by id) that has it.
pub fn find_upstream_file(upstream: &BTreeMap<String, PathBuf>, file: &str) -> Option<PathBuf> {
    upstream
        .values()
        .map(|d| d.join(file))
        .find(|p| p.is_file())
}

/// Like [`find_upstream_file`], with the id of the stage that made it.
pub fn find_upstream_with_stage<'a>(
    upstream: &'a BTreeMap<String, PathBuf>,
    file: &str,
) -> Option<(&'a str, PathBuf)> {
    upstream
        .iter()
        .map(|(s, d)| (s.as_str(), d.join(file)))
        .find(|(_, p)| p.is_file())
}

/// Reads one output file as its type. A file that does not parse is an error naming it
/// and the stage that made it.
pub fn read_output<T: Output>(path: &Path, stage: &str) -> Result<T, StageError> {
    let bytes = std::fs::read(path)
        .map_err(|e| StageError::retryable(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        StageError::fatal(format!(
            "{} from stage '{stage}' does not match what this vsum expects: {e}",
            T::FILE
        ))
        .hint("rerun that stage with --force; if it persists, report a bug")
    })
}

fn read_from<T: Output>(upstream: &BTreeMap<String, PathBuf>) -> Result<Option<T>, StageError> {
    match find_upstream_with_stage(upstream, T::FILE) {
        Some((stage, path)) => read_output(&path, stage).map(Some),
        None => Ok(None),
    }
}

impl JobCtx<'_> {
    /// The upstream output of type `T` (from whichever upstream stage wrote
    /// `T::FILE`), or `None` when no upstream stage made one.
    pub fn upstream<T: Output>(&self) -> Result<Option<T>, StageError> {
        read_from(self.upstream)
    }

    /// Like [`JobCtx::upstream`], but its absence is an error that says which kind makes it.
    pub fn require_upstream<T: Output>(&self, made_by: &str) -> Result<T, StageError> {
        self.upstream()?
            .ok_or_else(|| missing_upstream(self, T::FILE, made_by))
    }

    /// Where the upstream file `file` is; its absence is an error that says which kind
    /// makes it.
    pub fn require_upstream_file(&self, file: &str, made_by: &str) -> Result<PathBuf, StageError> {
        self.upstream_file(file)
            .ok_or_else(|| missing_upstream(self, file, made_by))
    }

    /// Where the upstream file `file` is, if an upstream stage made it.
    pub fn upstream_file(&self, file: &str) -> Option<PathBuf> {
        find_upstream_file(self.upstream, file)
    }

    /// Writes `value` as this job's `T::FILE` (pretty JSON).
    pub fn write_output<T: Output>(&self, value: &T) -> Result<(), StageError> {
        let mut json = serde_json::to_vec_pretty(value)
            .map_err(|e| StageError::fatal(format!("cannot encode {}: {e}", T::FILE)))?;
        json.push(b'\n');
        let path = self.out_dir.join(T::FILE);
        std::fs::write(&path, json)
            .map_err(|e| StageError::retryable(format!("cannot write {}: {e}", path.display())))
    }
}

fn missing_upstream(ctx: &JobCtx, file: &str, made_by: &str) -> StageError {
    let listed = if ctx.upstream.is_empty() {
        "it has no upstream stages".to_string()
    } else {
        format!(
            "none of its upstream stages ({}) produced one",
            ctx.upstream.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    StageError::fatal(format!(
        "stage '{}' needs {file} from a `{made_by}` stage, but {listed}",
        ctx.stage_id
    ))
    .hint(format!(
        "add a stage with `uses: {made_by}` and list it in this stage's `needs`"
    ))
}

impl BatchItem {
    /// This video's upstream output of type `T`, if any.
    pub fn upstream<T: Output>(&self) -> Result<Option<T>, StageError> {
        read_from(&self.upstream)
    }
}

/// The docs of a params type, from its JSON Schema: one entry per field, in declaration
/// order, with a type in words, its default and its doc comment.
pub fn params_doc<T: JsonSchema>() -> Vec<ParamDoc> {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    let root = schema.as_value();
    let defs = root.get("$defs").cloned().unwrap_or(Value::Null);
    let root = deref(root, &defs);
    let required: Vec<&str> = root
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = root.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, prop)| {
            let s = deref(prop, &defs);
            // A property that refers to a definition keeps its own default and doc.
            let field = |k: &str| prop.get(k).or_else(|| s.get(k));
            let default = match field("default") {
                Some(Value::Null) | None if required.contains(&name.as_str()) => {
                    Some("required".to_string())
                }
                None | Some(Value::Null) => None,
                Some(Value::String(x)) => Some(x.clone()),
                Some(v) => Some(v.to_string()),
            };
            ParamDoc {
                name: name.clone(),
                ty: type_words(s, &defs),
                default,
                doc: field("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            }
        })
        .collect()
}

/// Follows a `$ref` into `$defs`.
fn deref<'a>(s: &'a Value, defs: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
            .map(|d| deref(d, defs))
            .unwrap_or(s),
        None => s,
    }
}

/// A schema's type in words a user reads ("whole number", "one of: a, b").
fn type_words(s: &Value, defs: &Value) -> String {
    let s = deref(s, defs);
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        let v: Vec<String> = values.iter().filter(|v| !v.is_null()).map(word).collect();
        return format!("one of: {}", v.join(", "));
    }
    if let Some(c) = s.get("const") {
        return word(c);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = s.get(key).and_then(Value::as_array) {
            let mut words: Vec<String> = alts
                .iter()
                .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                .map(|a| type_words(a, defs))
                .collect();
            words.dedup();
            let consts = alts.iter().all(|a| {
                let a = deref(a, defs);
                a.get("const").is_some() || a.get("enum").is_some()
            });
            if consts {
                let list: Vec<String> = words
                    .iter()
                    .map(|w| w.trim_start_matches("one of: ").to_string())
                    .collect();
                return format!("one of: {}", list.join(", "));
            }
            return words.join(" or ");
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    let words: Vec<String> = types
        .iter()
        .map(|t| match *t {
            "integer" => "whole number".to_string(),
            "number" => "number".to_string(),
            "boolean" => "true or false".to_string(),
            "string" => "text".to_string(),
            "array" => match s.get("items") {
                Some(items) => format!("list of {}", plural(&type_words(items, defs))),
                None => "list".to_string(),
            },
            "object" => "mapping".to_string(),
            other => other.to_string(),
        })
        .collect();
    if words.is_empty() {
        "value".to_string()
    } else {
        words.join(" or ")
    }
}

fn plural(w: &str) -> String {
    match w {
        "text" => "texts".into(),
        "true or false" => "true/false values".into(),
        "whole number" => "whole numbers".into(),
        "number" => "numbers".into(),
        "mapping" => "mappings".into(),
        other => other.to_string(),
    }
}

fn word(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Choices.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        /// Fast.
        Fast,
        /// Good.
        Good,
    }

    #[derive(Debug, Serialize, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields, default)]
    struct P {
        /// How many, at most.
        max: u32,
        /// The mode.
        mode: Mode,
        /// Optional cap.
        cap: Option<f64>,
        /// Names.
        names: Vec<String>,
    }

    impl Default for P {
        fn default() -> Self {
            P {
                max: 3,
                mode: Mode::Good,
                cap: None,
                names: vec!["a".into()],
            }
        }
    }

    #[test]
    fn docs_come_from_the_type() {
        let d = params_doc::<P>();
        let by: BTreeMap<&str, &ParamDoc> = d.iter().map(|p| (p.name.as_str(), p)).collect();
        assert_eq!(by["max"].ty, "whole number");
        assert_eq!(by["max"].default.as_deref(), Some("3"));
        assert_eq!(by["max"].doc, "How many, at most.");
        assert_eq!(by["mode"].ty, "one of: fast, good");
        assert_eq!(by["mode"].default.as_deref(), Some("good"));
        assert_eq!(by["cap"].ty, "number");
        assert_eq!(by["cap"].default, None);
        assert_eq!(by["names"].ty, "list of texts");
        assert!(
            d.iter()
                .all(|p| !p.ty.contains("u32") && !p.ty.contains("f64"))
        );
    }
}
