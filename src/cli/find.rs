//! Finding the project from where the user stands, one rule for every command: the
//! manifest comes from the argument (positional or `-m`), else `VSUM_MANIFEST`, else the
//! only manifest in the current folder, its `pipelines/`, or a parent folder; the cache
//! comes from that manifest unless `--cache-dir`/`VSUM_CACHE_DIR` names one. Mistyped
//! paths get a suggestion, and read-only commands never create a cache.

use std::path::{Path, PathBuf};

use vsum_engine::config::Config;
use vsum_engine::manifest::Manifest;
use vsum_engine::stage::Registry;
use vsum_engine::store::{self, LockMode, Store};

use super::common::{Common, Fail, exit, load_config, load_manifest, open_store};

/// The manifest, as a positional argument or as `-m/--manifest`.
#[derive(clap::Args, Clone, Default)]
pub struct ManifestArg {
    /// The pipeline manifest (default: env VSUM_MANIFEST, else the only manifest in this
    /// folder, its pipelines/, or a parent folder)
    #[arg(value_name = "MANIFEST")]
    pub manifest: Option<PathBuf>,
    /// The pipeline manifest, as an option
    #[arg(long = "manifest", short = 'm', value_name = "MANIFEST")]
    pub flag: Option<PathBuf>,
}

impl ManifestArg {
    /// The manifest to use; an error (exit 2) when none is given or found.
    pub fn resolve(&self) -> Result<PathBuf, Fail> {
        manifest(self.manifest.as_deref(), self.flag.as_deref())?.ok_or_else(not_found)
    }
}

/// The manifest named by `pos` or `flag`, else `VSUM_MANIFEST`, else found from the
/// current folder (said on stderr). `None` when nothing is given and none is found.
pub fn manifest(pos: Option<&Path>, flag: Option<&Path>) -> Result<Option<PathBuf>, Fail> {
    let given = match (pos, flag) {
        (Some(a), Some(b)) if a != b => {
            return Err(Fail::usage(format!(
                "error: two manifests given: {} and -m {}; give one",
                a.display(),
                b.display()
            )));
        }
        (Some(p), _) | (None, Some(p)) => Some(p.to_path_buf()),
        (None, None) => std::env::var_os("VSUM_MANIFEST")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    if let Some(p) = given {
        return named(&p).map(Some);
    }
    let cwd = std::env::current_dir().map_err(|e| Fail::usage(format!("error: {e}")))?;
    let found = discover(&cwd)?;
    if let Some(p) = &found {
        super::term::note(format_args!("vsum: using manifest {}", p.display()));
    }
    Ok(found)
}

/// A manifest path the user typed: a file, or a folder holding exactly one manifest.
fn named(p: &Path) -> Result<PathBuf, Fail> {
    if p.is_dir() {
        return match manifests_in(p).as_slice() {
            [one] => {
                super::term::note(format_args!("vsum: using manifest {}", one.display()));
                Ok(one.clone())
            }
            [] => Err(Fail::usage(format!(
                "error: {} holds no manifest (a *.yaml with `stages:`)",
                p.display()
            ))),
            many => Err(several(p, many)),
        };
    }
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    let hint = suggest_manifest(p)
        .map(|s| format!("\n  hint: did you mean {}?", s.display()))
        .unwrap_or_default();
    Err(Fail::usage(format!(
        "error: no manifest {}: no such file{hint}",
        p.display()
    )))
}

fn not_found() -> Fail {
    let here = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| ".".into());
    Fail::usage(format!(
        "error: which manifest? none given, VSUM_MANIFEST is not set, and no *.yaml with \
         `stages:` is in {here}, its pipelines/ or a parent folder\n  hint: name one: \
         `vsum run pipelines/summarize.yaml` (or -m MANIFEST, or VSUM_MANIFEST)"
    ))
}

fn several(dir: &Path, many: &[PathBuf]) -> Fail {
    let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
    Fail::usage(format!(
        "error: {} manifests in {}: {}; name the one to use (or set VSUM_MANIFEST)",
        many.len(),
        dir.display(),
        names.join(", ")
    ))
}

/// The current folder, its `pipelines/`, then each parent and its `pipelines/`: the first
/// folder holding manifests decides; more than one there is an error.
fn discover(cwd: &Path) -> Result<Option<PathBuf>, Fail> {
    for dir in cwd.ancestors() {
        for d in [dir.to_path_buf(), dir.join("pipelines")] {
            match manifests_in(&d).as_slice() {
                [] => continue,
                [one] => return Ok(Some(shown(one, cwd))),
                many => {
                    let many: Vec<PathBuf> = many.iter().map(|p| shown(p, cwd)).collect();
                    return Err(several(&shown(&d, cwd), &many));
                }
            }
        }
    }
    Ok(None)
}

/// `p` relative to `cwd` when it is below it, else as it is.
fn shown(p: &Path, cwd: &Path) -> PathBuf {
    match p.strip_prefix(cwd) {
        Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
        Ok(rel) => rel.to_path_buf(),
        Err(_) => p.to_path_buf(),
    }
}

/// The `*.yaml`/`*.yml` files in `dir` with a top-level `stages:` key, sorted. Hidden
/// files (`.gitlab-ci.yml` also has `stages:`) are not manifests.
fn manifests_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && p.is_file()
                && is_manifest(p)
        })
        .collect();
    out.sort();
    out
}

fn is_manifest(p: &Path) -> bool {
    let Ok(md) = std::fs::metadata(p) else {
        return false;
    };
    // A manifest is a small text file; anything big is something else.
    md.len() < 4 << 20
        && std::fs::read_to_string(p).is_ok_and(|t| {
            t.lines().any(|l| {
                l.strip_prefix("stages:")
                    .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
            })
        })
}

/// The manifest nearest in spelling to a path that does not exist, looked for beside it,
/// in the current folder and in their `pipelines/`.
fn suggest_manifest(p: &Path) -> Option<PathBuf> {
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
    let mut dirs = vec![PathBuf::from("."), PathBuf::from("pipelines")];
    if let Some(d) = parent {
        dirs.push(d.to_path_buf());
        dirs.push(d.join("pipelines"));
    }
    let candidates: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| manifests_in(d))
        .map(|c| c.strip_prefix("./").map(Path::to_path_buf).unwrap_or(c))
        .collect();
    closest(p, &candidates)
}

/// The candidate whose file name (or whole path) is nearest to `p`'s, if near enough.
fn closest(p: &Path, candidates: &[PathBuf]) -> Option<PathBuf> {
    let name = p.file_name()?.to_string_lossy().into_owned();
    let whole = p.to_string_lossy().into_owned();
    candidates
        .iter()
        .map(|c| {
            let cn = c.file_name().map(|n| n.to_string_lossy().into_owned());
            let by_name = cn.map_or(0.0, |cn| strsim::normalized_damerau_levenshtein(&name, &cn));
            let by_path = strsim::normalized_damerau_levenshtein(&whole, &c.to_string_lossy());
            (by_name.max(by_path), c)
        })
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.clone())
}

/// Does `dir` hold a vsum cache (the marker, or the layout of one made before it)?
pub fn is_cache(dir: &Path) -> bool {
    dir.join(store::MARKER).is_file() || dir.join("entries").is_dir()
}

/// The cache a `cache` or `runs` command works on, with the manifest and config when
/// there is one. `--cache-dir` (or `VSUM_CACHE_DIR`) names the cache; else it is the
/// manifest's. The cache must exist already: these commands never create one.
pub struct Target {
    pub manifest: Option<(Manifest, Config)>,
    pub store: Store,
}

/// Opens the cache for `cache`/`runs`. `need_manifest`: the command cannot work from a
/// cache alone (`cache why`), so the manifest is looked for even with `--cache-dir`.
pub fn open_cache(
    registry: &Registry,
    pos: Option<&Path>,
    flag: Option<&Path>,
    common: &Common,
    mode: LockMode,
    need_manifest: bool,
) -> Result<Target, Fail> {
    let explicit = pos.is_some()
        || flag.is_some()
        || std::env::var_os("VSUM_MANIFEST").is_some_and(|v| !v.is_empty());
    let path = if common.cache_dir.is_none() || explicit || need_manifest {
        manifest(pos, flag)?
    } else {
        None
    };
    let loaded = match &path {
        Some(p) => {
            let m = load_manifest(p, registry)?;
            let cfg = load_config(&m, common, Default::default())?;
            Some((m, cfg))
        }
        None => None,
    };
    let dir = match (&common.cache_dir, &loaded) {
        (Some(d), _) => std::path::absolute(d).unwrap_or_else(|_| d.clone()),
        (None, Some((m, cfg))) => cfg.cache_path(&m.base_dir),
        (None, None) if need_manifest => return Err(not_found()),
        (None, None) => {
            return Err(Fail::usage(format!(
                "{}\n  or name the cache: --cache-dir DIR (or VSUM_CACHE_DIR)",
                not_found().1
            )));
        }
    };
    if !is_cache(&dir) {
        refuse_missing(&dir, common.cache_dir.as_deref(), path.as_deref())?;
    }
    let store = match &loaded {
        Some((m, cfg)) => open_store(m, cfg, mode)?,
        None => Store::open(&dir, mode).map_err(|e| Fail::usage(format!("error: {e}")))?,
    };
    Ok(Target {
        manifest: loaded,
        store,
    })
}

/// `dir` has no vsum cache. A folder with other files in it is left to the store, which
/// explains why it will not use it; a missing or empty one is refused here, so that a
/// mistyped path never becomes a new, empty cache.
fn refuse_missing(dir: &Path, named: Option<&Path>, manifest: Option<&Path>) -> Result<(), Fail> {
    let empty = std::fs::read_dir(dir).map_or(true, |mut rd| rd.next().is_none());
    if !empty {
        return Ok(());
    }
    let Some(named) = named else {
        let m = manifest
            .map(|m| m.display().to_string())
            .unwrap_or_default();
        return Err(Fail::failed(format!(
            "error: no cache yet at {}: nothing has run with {m}\n  hint: `vsum plan {m}` shows what a run would do",
            dir.display()
        )));
    };
    let hint = suggest_cache(dir)
        .map(|s| format!("\n  hint: did you mean {}?", s.display()))
        .unwrap_or_default();
    Err(Fail(
        exit::USAGE,
        format!(
            "error: no vsum cache at {} (given by --cache-dir or VSUM_CACHE_DIR as {}): no {} there; \
             this command reads a cache and never creates one{hint}",
            dir.display(),
            named.display(),
            store::MARKER
        ),
    ))
}

/// A vsum cache beside `dir` whose name is near its name.
fn suggest_cache(dir: &Path) -> Option<PathBuf> {
    let parent = dir.parent()?;
    let caches: Vec<PathBuf> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_cache(p))
        .collect();
    closest(dir, &caches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_name_is_suggested_and_a_far_one_is_not() {
        let c = vec![
            PathBuf::from("pipelines/summarize.yaml"),
            PathBuf::from("pipelines/other.yaml"),
        ];
        assert_eq!(
            closest(Path::new("summarise.yaml"), &c),
            Some(PathBuf::from("pipelines/summarize.yaml"))
        );
        assert_eq!(closest(Path::new("zzz.yaml"), &c), None);
    }
}
