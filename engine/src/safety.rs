//! Guards that keep vsum's writes and deletes inside what it owns.
//!
//! vsum deletes or overwrites only files it created: never an input, never the
//! manifest's folder, never through a symlink. These checks run before anything is
//! written: the output folder must be a folder of its own (not `/`, not `$HOME`, not the
//! manifest's folder, an input or the cache, nor above any of them), and a path below
//! the output folder is only written or cleaned when no folder on the way is a symlink.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::fsutil::normalize;

/// The real location of `path` as far as it exists: the longest existing ancestor is
/// resolved through symlinks, the rest is appended lexically. Lets two spellings of one
/// folder (`./out`, a symlink to it) compare equal before the folder exists.
pub fn resolve(path: &Path) -> PathBuf {
    let abs = normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

/// The folder an `inputs:` entry reads from: the entry itself, or for a glob the
/// literal folders before its first wildcard.
pub fn input_root(base_dir: &Path, input: &str) -> PathBuf {
    let is_glob = |s: &str| s.contains(['*', '?', '[']);
    if !is_glob(input) {
        return base_dir.join(input);
    }
    let literal: PathBuf = Path::new(input)
        .components()
        .take_while(|c| !is_glob(&c.as_os_str().to_string_lossy()))
        .collect();
    base_dir.join(literal)
}

/// Why `output` may not be the output folder, if it may not. `cache` is checked when
/// known (it comes from the config, after the manifest).
pub fn output_problem(
    output: &Path,
    base_dir: &Path,
    inputs: &[String],
    cache: Option<&Path>,
) -> Option<String> {
    let out = resolve(output);
    if out.parent().is_none() {
        return Some(format!(
            "the output folder {} is the root of the filesystem",
            out.display()
        ));
    }
    let base = resolve(base_dir);
    if base.starts_with(&out) {
        return Some(format!(
            "the output folder {} {} the manifest's folder {}",
            out.display(),
            if base == out { "is" } else { "is above" },
            base.display()
        ));
    }
    for input in inputs {
        let root = resolve(&input_root(base_dir, input));
        if root.starts_with(&out) {
            return Some(format!(
                "the output folder {} {} the input '{input}' ({})",
                out.display(),
                if root == out { "is" } else { "contains" },
                root.display()
            ));
        }
    }
    if let Some(cache) = cache {
        let cache = resolve(cache);
        if cache.starts_with(&out) || out.starts_with(&cache) {
            return Some(format!(
                "the output folder {} {} the cache {}",
                out.display(),
                if cache == out {
                    "is"
                } else if cache.starts_with(&out) {
                    "contains"
                } else {
                    "is inside"
                },
                cache.display()
            ));
        }
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        let home = resolve(Path::new(&home));
        if home.starts_with(&out) {
            return Some(format!(
                "the output folder {} is your home folder{}",
                out.display(),
                if home == out { "" } else { " or above it" }
            ));
        }
    }
    None
}

/// The hint for an [`output_problem`].
pub const OUTPUT_HINT: &str = "vsum replaces and removes files in its output folder: give `output:` a folder of its own, e.g. `output: output/`";

/// Fails when `path`, or a folder between `root` (excluded) and it, is a symlink:
/// vsum never writes or deletes through one. Components that do not exist yet pass.
pub fn no_symlink_below(root: &Path, path: &Path) -> io::Result<()> {
    checked_metadata(root, path).map(|_| ())
}

/// [`no_symlink_below`], and the metadata of `path` itself when it exists (what the
/// check read anyway: a caller need not stat it again).
pub fn checked_metadata(root: &Path, path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    let rel = path.strip_prefix(root).map_err(|_| {
        io::Error::other(format!(
            "{} is not inside {}",
            path.display(),
            root.display()
        ))
    })?;
    let mut cur = root.to_path_buf();
    let mut last = None;
    for c in rel.components() {
        match c {
            Component::Normal(name) => cur.push(name),
            _ => {
                return Err(io::Error::other(format!(
                    "{} is not a plain path below {}",
                    path.display(),
                    root.display()
                )));
            }
        }
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "{} is a symlink, which vsum never writes or deletes through; remove the link (vsum recreates the folder)",
                    cur.display()
                )));
            }
            Ok(md) => last = Some(md),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(last)
}

/// Is `rel` a plain relative path (no `..`, no root), safe to join below a folder?
pub fn plain_relative(rel: &str) -> bool {
    let p = Path::new(rel);
    !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_may_not_hold_the_manifest_inputs_or_cache() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("proj");
        std::fs::create_dir_all(base.join("videos")).unwrap();
        let inputs = vec!["videos/".to_string()];
        let ok =
            |o: &str, cache: Option<&Path>| output_problem(&base.join(o), &base, &inputs, cache);
        assert_eq!(ok("output", Some(&base.join(".vsum"))), None);
        assert!(ok(".", None).unwrap().contains("manifest's folder"));
        assert!(ok("..", None).unwrap().contains("above"));
        assert!(ok("videos", None).unwrap().contains("is the input"));
        assert!(ok("/", None).unwrap().contains("root"));
        assert!(
            ok(".vsum", Some(&base.join(".vsum")))
                .unwrap()
                .contains("cache")
        );
        assert!(
            ok(".vsum/x", Some(&base.join(".vsum")))
                .unwrap()
                .contains("inside")
        );
        let glob = vec!["media/*.mp4".to_string()];
        assert!(output_problem(&base.join("media"), &base, &glob, None).is_some());
    }

    #[test]
    fn symlinks_below_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("a/link")).unwrap();
        assert!(no_symlink_below(&root, &root.join("a/b/c")).is_ok());
        assert!(no_symlink_below(&root, &root.join("a/link")).is_err());
        assert!(no_symlink_below(&root, &root.join("a/link/x")).is_err());
    }
}
