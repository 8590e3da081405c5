//! The command stage: runs a user's program (`run:` argv) as a cached stage.
//!
//! The argv is executed without a shell, each element templated (`{video}`, `{stem}`,
//! `{out}`, `{<stage>}`, `{videos}`), from the manifest's folder. The job's outputs are
//! whatever it writes into `{out}` (plus its stdout when `stdout:` names a file);
//! declared `outputs:` must exist or the job fails. `deps:` lists files (scripts, models,
//! configs) whose content joins the key, so editing a script reruns the stage.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vsum_engine::contract::TypedStage;
use vsum_engine::stage::{
    Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, ParamError, Scope, StageError,
};
use vsum_engine::template::{self, Piece};

use crate::process::{ProcessGroup, StderrTail, Stop, how_it_ended, wait_for};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The argv, executed without a shell from the manifest's folder; placeholders
    /// {video} {stem} {out} {<stage>} ({videos} in batch scope).
    pub run: Vec<String>,
    /// Capture stdout into this output file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Files the command must create in {out}; a missing one fails the job.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Extra files whose content joins the cache key (scripts, configs).
    #[serde(default)]
    pub deps: Vec<String>,
    /// Extra environment variables (values are templated).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds: kill the command after this long (a retryable failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

#[derive(Debug, Default)]
pub struct CommandStage;

fn bad_out_name(name: &str) -> bool {
    let p = Path::new(name);
    name.is_empty() || p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_)))
}

impl Params {
    /// Does the argv or the environment use the placeholder `name`?
    fn uses(&self, name: &str) -> bool {
        self.run
            .iter()
            .chain(self.env.values())
            .any(|s| template::vars(s).iter().any(|v| v == name))
    }
}

impl TypedStage for CommandStage {
    type Params = Params;
    const NAME: &'static str = vsum_engine::manifest::COMMAND_KIND;
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "Runs a program (argv, no shell) on each video; its files in {out} are the outputs";

    fn check_raw(&self, params: &Value) -> Vec<ParamError> {
        if let Some(Value::String(s)) = params.get("run") {
            return vec![
                ParamError::new(&["run"], "`run` must be a list (argv), not a string").hint(format!(
                    "commands run without a shell: write `run: [{}]`, or `run: [sh, -c, \"...\"]` for shell syntax",
                    s.split_whitespace()
                        .map(|w| format!("\"{w}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            ];
        }
        Vec::new()
    }

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        if p.run.is_empty() {
            errs.push(
                ParamError::new(&["run"], "`run` is empty")
                    .hint("give the program and its arguments"),
            );
        }
        let batch = env.scope == Scope::Batch;
        let per_video_needs: Vec<&str> = env
            .needs
            .iter()
            .filter(|(_, s)| *s == Scope::Video)
            .map(|(n, _)| n.as_str())
            .collect();
        let fields = p
            .run
            .iter()
            .enumerate()
            .map(|(i, s)| (vec!["run".to_string(), i.to_string()], s, true))
            .chain(
                p.env
                    .iter()
                    .map(|(k, v)| (vec!["env".to_string(), k.clone()], v, false)),
            );
        for (path, s, in_argv) in fields {
            let path_ref: Vec<&str> = path.iter().map(String::as_str).collect();
            let pieces = match template::parse(s) {
                Ok(p) => p,
                Err(e) => {
                    errs.push(ParamError::new(&path_ref, e));
                    continue;
                }
            };
            let whole = pieces.len() == 1;
            for piece in &pieces {
                let Piece::Var(v) = piece else { continue };
                let looks_like_id = v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                let problem = match v.as_str() {
                    _ if !looks_like_id => Some((
                        format!("'{{{v}}}' is not a placeholder (braces are templating here)"),
                        "for literal braces, as in shell code, write '{{' and '}}'".to_string(),
                    )),
                    "out" => None,
                    "video" | "stem" if batch => Some((
                        format!(
                            "{{{v}}} is per video; stage '{}' is `scope: batch`",
                            env.stage_id
                        ),
                        "use {videos} or {<stage>} to get one argument per video".to_string(),
                    )),
                    "video" | "stem" => None,
                    "videos" if !batch => Some((
                        "{videos} is only for `scope: batch` stages".to_string(),
                        "use {video} for this video".to_string(),
                    )),
                    "videos" if per_video_needs.len() != 1 => Some((
                        format!(
                            "{{videos}} needs exactly one per-video stage in `needs`, stage '{}' has {}",
                            env.stage_id,
                            per_video_needs.len()
                        ),
                        "use {<stage>} to name which stage's folders you want".to_string(),
                    )),
                    _ if v != "videos" && !env.needs_stage(v) => Some((
                        format!("placeholder {{{v}}} names stage '{v}', which is not in `needs`"),
                        format!(
                            "add '{v}' to `needs:` so its outputs exist before this stage runs"
                        ),
                    )),
                    _ => None,
                };
                if let Some((msg, hint)) = problem {
                    errs.push(ParamError::new(&path_ref, msg).hint(hint));
                    continue;
                }
                let expands = batch && (v == "videos" || per_video_needs.contains(&v.as_str()));
                if expands && (!whole || !in_argv) {
                    errs.push(
                        ParamError::new(&path_ref, format!("{{{v}}} expands to one argument per video, so it must stand alone as a `run` element"))
                            .hint(format!("write \"{{{v}}}\" as its own list item")),
                    );
                }
            }
        }
        for (i, o) in p.outputs.iter().enumerate() {
            if bad_out_name(o) {
                errs.push(
                    ParamError::new(
                        &["outputs", &i.to_string()],
                        format!("output '{o}' must be a relative path inside {{out}}"),
                    )
                    .hint("no absolute paths and no '..'"),
                );
            }
        }
        if let Some(s) = &p.stdout
            && bad_out_name(s)
        {
            errs.push(
                ParamError::new(
                    &["stdout"],
                    format!("stdout file '{s}' must be a relative path inside {{out}}"),
                )
                .hint("e.g. `stdout: result.txt`"),
            );
        }
        if p.timeout
            .is_some_and(|t| t.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
        {
            errs.push(ParamError::new(
                &["timeout"],
                "`timeout` must be a positive number of seconds",
            ));
        }
        if errs.is_empty() { Ok(p) } else { Err(errs) }
    }

    fn key_extras(&self, p: &Params, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        let mut x = KeyExtras::default();
        for dep in &p.deps {
            let path = env.base_dir.join(dep);
            let hash = env.hasher.hash(&path).map_err(|e| {
                StageError::fatal(format!("dep '{dep}' ({}): {e}", path.display()))
                    .hint("`deps:` paths are relative to the manifest's folder; fix the path or create the file")
            })?;
            x.inputs.insert(format!("dep:{dep}"), hash);
        }
        // A name the command can write into its outputs joins the key, so two videos
        // with the same bytes under different names never share a result that shows
        // one's name: `{stem}` by the stem, `{video}` by the path (relative to the
        // manifest's folder, so moving the whole project keeps the cache).
        if let Some(v) = env.video {
            if p.uses("stem") {
                x.inputs
                    .insert("stem".into(), v.stem.to_string_lossy().into_owned());
            }
            if p.uses("video") {
                x.inputs
                    .insert("video_path".into(), v.rel.to_string_lossy().into_owned());
            }
        }
        Ok(x)
    }

    fn doctor(&self, p: &Params, base_dir: &Path) -> Vec<Check> {
        let Some(program) = p.run.first().filter(|a| template::vars(a).is_empty()) else {
            return Vec::new();
        };
        let name = format!("program {program}");
        match find_program(program, base_dir) {
            Some(path) => vec![Check::ok(name, format!("found at {}", path.display()))],
            None => vec![Check::fail(
                name,
                "not found",
                format!(
                    "install '{program}' or fix `run:` (commands run without a shell, from the manifest's folder)"
                ),
            )],
        }
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let argv: Vec<OsString> = p
            .run
            .iter()
            .map(|a| expand(a, ctx))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let program = PathBuf::from(&argv[0]);
        let program = if program.is_relative() && program.components().count() > 1 {
            ctx.base_dir.join(program)
        } else {
            program
        };
        let shown = p.run[0].clone();
        let mut cmd = Command::new(&program);
        cmd.args(&argv[1..])
            .current_dir(ctx.base_dir)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .env("VSUM_OUT", ctx.out_dir)
            .env("VSUM_STAGE", ctx.stage_id)
            .env("VSUM_THREADS", ctx.threads.to_string());
        if let Some(v) = ctx.video {
            cmd.env("VSUM_VIDEO", &v.path);
        }
        for (k, v) in &p.env {
            let val: Vec<OsString> = expand(v, ctx)?;
            cmd.env(k, val.into_iter().next().unwrap_or_default());
        }
        match &p.stdout {
            Some(name) => {
                let f = File::create(ctx.out_dir.join(name)).map_err(|e| {
                    StageError::retryable(format!("cannot create stdout file '{name}': {e}"))
                })?;
                cmd.stdout(f);
            }
            None => {
                cmd.stdout(Stdio::null());
            }
        }
        // Its own process group: a timeout, a cancel and the end of the job kill the
        // command and everything it started, not only the direct child.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                StageError::fatal(format!("command '{shown}' not found")).hint(format!(
                    "install it or fix `run:`; commands run without a shell, from {}",
                    ctx.base_dir.display()
                ))
            }
            std::io::ErrorKind::PermissionDenied => {
                StageError::fatal(format!("command '{shown}' is not executable"))
                    .hint("check its permissions (chmod +x) or run it through its interpreter")
            }
            std::io::ErrorKind::ArgumentListTooLong => StageError::fatal(format!(
                "cannot start '{shown}': its argument list is too long for the system ({} arguments, {} bytes)",
                argv.len(),
                argv.iter().map(|a| a.len() + 1).sum::<usize>()
            ))
            .hint("{videos} and {<stage>} give one argument per video: for a batch this large, pass a folder instead and let the program list it"),
            _ => StageError::retryable(format!("cannot start '{shown}': {e}")),
        })?;
        let mut group = ProcessGroup::of(&child);
        let stderr = child.stderr.take().expect("piped");
        let deadline = p
            .timeout
            .map(|t| Instant::now() + Duration::from_secs_f64(t));
        let (status, stderr_tail) =
            match wait_for(&mut child, StderrTail::new(stderr), deadline, ctx) {
                Ok(done) => done,
                Err(stop) => {
                    group.kill();
                    let _ = child.wait();
                    return Err(match stop {
                        Stop::Cancelled => StageError::cancelled(),
                        Stop::TimedOut => StageError::retryable(format!(
                            "command '{shown}' timed out after {} s",
                            p.timeout.unwrap_or_default()
                        ))
                        .hint("raise `timeout:` or check why it hangs"),
                        Stop::Failed(e) => {
                            StageError::retryable(format!("cannot wait for '{shown}': {e}"))
                        }
                    });
                }
            };
        // What the command left running in the background ends with the job (it could
        // otherwise write into outputs after they are stored, or hold stderr open).
        group.kill();
        let stderr_tail = stderr_tail.finish();
        if !status.success() {
            let how = how_it_ended(status);
            let last = stderr_tail.lines().rev().find(|l| !l.trim().is_empty());
            let detail = match last {
                None => " (no stderr output)".to_string(),
                Some(last) => format!(": {last}\nstderr (last lines):\n{stderr_tail}"),
            };
            return Err(
                StageError::retryable(format!("command '{shown}' {how}{detail}"))
                    .hint("run the command by hand to see why; `vsum plan` shows what will run"),
            );
        }
        let missing: Vec<&String> = p
            .outputs
            .iter()
            .filter(|o| !ctx.out_dir.join(o).is_file())
            .collect();
        if !missing.is_empty() {
            let made: Vec<String> = walk_names(ctx.out_dir);
            return Err(StageError::fatal(format!(
                "command '{shown}' succeeded but did not create declared output(s) {}; it created: {}",
                missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
                if made.is_empty() { "nothing".to_string() } else { made.join(", ") }
            ))
            .hint("write outputs into {out} (e.g. \"{out}/result.txt\"), or fix `outputs:`"));
        }
        Ok(())
    }
}

/// Resolves a program like the command stage's spawn does: relative paths with a
/// separator against the manifest's folder, bare names on PATH.
fn find_program(program: &str, base_dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let p = Path::new(program);
    if p.components().count() > 1 || p.is_absolute() {
        let full = base_dir.join(p);
        return executable(&full).then_some(full);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|c| executable(c))
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Expands one template into one argument, or one per video for batch expansions.
fn expand(s: &str, ctx: &JobCtx) -> Result<Vec<OsString>, StageError> {
    let pieces = template::parse(s).map_err(StageError::fatal)?;
    if let [Piece::Var(v)] = pieces.as_slice()
        && ctx.video.is_none()
        && v != "out"
        && !ctx.upstream.contains_key(v)
    {
        // Batch scope: {videos} or {<stage>} -> one argument per video.
        let stage = if v == "videos" {
            ctx.batch
                .first()
                .and_then(|b| b.upstream.keys().next().cloned())
                .unwrap_or_default()
        } else {
            v.clone()
        };
        return Ok(ctx
            .batch
            .iter()
            .filter_map(|b| b.upstream.get(&stage))
            .map(|p| p.clone().into_os_string())
            .collect());
    }
    let mut out = OsString::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push(t),
            Piece::Var(v) => match v.as_str() {
                "out" => out.push(ctx.out_dir),
                "video" => out.push(
                    &ctx.video
                        .ok_or_else(|| StageError::fatal("{video} in a batch job"))?
                        .path,
                ),
                "stem" => out.push(
                    &ctx.video
                        .ok_or_else(|| StageError::fatal("{stem} in a batch job"))?
                        .stem,
                ),
                stage => match ctx.upstream.get(stage) {
                    Some(p) => out.push(p),
                    None => {
                        return Err(StageError::fatal(format!(
                            "no upstream folder for {{{stage}}}"
                        )));
                    }
                },
            },
        }
    }
    Ok(vec![out])
}
