//! Finds the videos a manifest's `inputs:` name and gives each a safe output folder.
//!
//! Inputs are folders (searched recursively for the manifest's extensions), files, or
//! globs. Problems (a missing or unreadable folder) are reported per input and the rest
//! goes on. Output folder names are file stems, made safe (never `.`/`..`/empty, never
//! containing a separator) and disambiguated with a short hash of the relative path
//! when two videos share a stem.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use crate::stage::Video;

/// A video found on disk, before hashing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub path: PathBuf,
    pub rel: PathBuf,
}

#[derive(Debug, Default)]
pub struct Discovery {
    pub videos: Vec<Found>,
    /// One message per input that could not be read, naming it and the cause.
    pub problems: Vec<String>,
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn has_ext(p: &Path, exts: &[String]) -> bool {
    p.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The folder or file each input names (a glob's folder before its first wildcard).
pub fn input_roots(base_dir: &Path, inputs: &[String]) -> Vec<PathBuf> {
    inputs.iter().map(|i| input_root(base_dir, i)).collect()
}

fn input_root(base_dir: &Path, input: &str) -> PathBuf {
    if is_glob(input) {
        let literal: PathBuf = Path::new(input)
            .components()
            .take_while(|c| !is_glob(&c.as_os_str().to_string_lossy()))
            .collect();
        base_dir.join(literal)
    } else {
        base_dir.join(input)
    }
}

/// The inputs that name nothing on disk: a folder or file that is not there, or a
/// glob whose folder (the part before its first wildcard) is not there. Each comes with
/// the path that was looked for. A run would find no video there and still succeed, so
/// `vsum validate` and `vsum run` refuse these up front.
pub fn missing_inputs(base_dir: &Path, inputs: &[String]) -> Vec<(String, PathBuf)> {
    inputs
        .iter()
        .filter_map(|input| {
            let root = input_root(base_dir, input);
            let gone = matches!(std::fs::metadata(&root), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
            gone.then(|| (input.clone(), root))
        })
        .collect()
}

/// Walks the inputs (relative to `base_dir`).
pub fn discover(base_dir: &Path, inputs: &[String], exts: &[String]) -> Discovery {
    let mut out = Discovery::default();
    let mut seen = BTreeSet::new();
    for input in inputs {
        let (root, matcher): (PathBuf, Option<GlobMatcher>) = if is_glob(input) {
            let literal: PathBuf = Path::new(input)
                .components()
                .take_while(|c| !is_glob(&c.as_os_str().to_string_lossy()))
                .collect();
            let pattern = base_dir.join(input);
            match GlobBuilder::new(&pattern.to_string_lossy())
                .literal_separator(true)
                .build()
            {
                Ok(g) => (base_dir.join(literal), Some(g.compile_matcher())),
                Err(e) => {
                    out.problems
                        .push(format!("input '{input}': bad glob pattern: {e}"));
                    continue;
                }
            }
        } else {
            (base_dir.join(input), None)
        };
        let md = match std::fs::metadata(&root) {
            Ok(m) => m,
            Err(e) => {
                out.problems.push(format!(
                    "input '{input}' ({}): {e}; check the path in `inputs:` (relative to the manifest's folder)",
                    root.display()
                ));
                continue;
            }
        };
        if md.is_file() && matcher.is_none() {
            if seen.insert(root.clone()) {
                out.videos.push(found(base_dir, root));
            }
            continue;
        }
        let before = out.videos.len();
        for item in walkdir::WalkDir::new(&root)
            .follow_links(true)
            .sort_by_file_name()
        {
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    let at = e
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    out.problems
                        .push(format!("input '{input}': cannot read {at}: {e}"));
                    continue;
                }
            };
            if !item.file_type().is_file() {
                continue;
            }
            let p = item.path();
            let ok = match &matcher {
                Some(m) => m.is_match(p),
                None => has_ext(p, exts),
            };
            if ok && seen.insert(p.to_path_buf()) {
                out.videos.push(found(base_dir, p.to_path_buf()));
            }
        }
        if out.videos.len() == before && matcher.is_none() && !md.is_dir() {
            out.problems
                .push(format!("input '{input}' is not a folder or a file"));
        }
    }
    out.videos.sort();
    out
}

fn found(base_dir: &Path, path: PathBuf) -> Found {
    let rel = path
        .strip_prefix(base_dir)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.clone());
    Found { path, rel }
}

/// Longest output folder name taken from a stem as it is; a longer stem is cut and
/// given a hash of the whole, so `<folder>-<hash>` and the files below stay well within
/// the system's file name limit (NAME_MAX, 255 bytes).
pub const MAX_FOLDER_BYTES: usize = 200;

/// A folder name from a stem: no separators, never `.`/`..`/empty, never hidden, never
/// longer than [`MAX_FOLDER_BYTES`] (+ 9 bytes of hash).
pub fn safe_folder(stem: &OsStr) -> OsString {
    let mut bytes: Vec<u8> = stem
        .as_bytes()
        .iter()
        .map(|&b| if b == b'/' || b == 0 { b'_' } else { b })
        .collect();
    if bytes.is_empty() || bytes.starts_with(b".") {
        bytes.insert(0, b'_');
    }
    if bytes.len() > MAX_FOLDER_BYTES {
        let hash = blake3::hash(stem.as_bytes()).to_hex();
        let mut cut = MAX_FOLDER_BYTES;
        // Cut on a character boundary when the name is UTF-8.
        if std::str::from_utf8(&bytes).is_ok() {
            while cut > 0 && (bytes[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
        }
        bytes.truncate(cut);
        bytes.extend_from_slice(format!("-{}", &hash[..8]).as_bytes());
    }
    OsString::from_vec(bytes)
}

/// Assigns stems and output folders; `reserved` names (batch stage ids) are avoided.
pub fn assign_folders(found: &[Found], reserved: &[&str]) -> Vec<(OsString, OsString)> {
    let stems: Vec<OsString> = found
        .iter()
        .map(|f| {
            f.path
                .file_stem()
                .map(OsStr::to_os_string)
                .unwrap_or_default()
        })
        .collect();
    let mut count: BTreeMap<OsString, usize> = BTreeMap::new();
    for s in &stems {
        *count.entry(safe_folder(s)).or_default() += 1;
    }
    found
        .iter()
        .zip(stems)
        .map(|(f, stem)| {
            let base = safe_folder(&stem);
            let clash = count[&base] > 1 || reserved.iter().any(|r| OsStr::new(r) == base);
            let folder = if clash {
                let h = blake3::hash(f.rel.as_os_str().as_bytes()).to_hex();
                let mut b = base.clone();
                b.push(format!("-{}", &h[..8]));
                b
            } else {
                base
            };
            (stem, folder)
        })
        .collect()
}

/// Stable id of a video for refs (its relative path's hash).
pub fn video_id(v: &Video) -> String {
    blake3::hash(v.rel.as_os_str().as_bytes()).to_hex()[..24].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_safe_and_unique() {
        assert_eq!(safe_folder(OsStr::new("..")), OsString::from("_.."));
        assert_eq!(safe_folder(OsStr::new("")), OsString::from("_"));
        assert_eq!(safe_folder(OsStr::new("a b")), OsString::from("a b"));
        let long = "é".repeat(150);
        let f = safe_folder(OsStr::new(&long));
        assert!(f.len() <= MAX_FOLDER_BYTES + 9, "{}", f.len());
        assert!(f.to_str().is_some(), "cut on a character boundary");
        assert_ne!(f, safe_folder(OsStr::new(&format!("{long}x"))));
        let found = vec![
            Found {
                path: "/x/a/talk.mp4".into(),
                rel: "a/talk.mp4".into(),
            },
            Found {
                path: "/x/b/talk.mp4".into(),
                rel: "b/talk.mp4".into(),
            },
            Found {
                path: "/x/b/other.mp4".into(),
                rel: "b/other.mp4".into(),
            },
            Found {
                path: "/x/index.mp4".into(),
                rel: "index.mp4".into(),
            },
        ];
        let f = assign_folders(&found, &["index"]);
        assert_ne!(f[0].1, f[1].1);
        assert!(f[0].1.to_string_lossy().starts_with("talk-"));
        assert_eq!(f[2].1, OsString::from("other"));
        assert!(f[3].1.to_string_lossy().starts_with("index-"));
    }

    #[test]
    fn finds_by_extension_and_glob_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("in/sub")).unwrap();
        for f in ["in/a.mp4", "in/sub/b.MKV", "in/notes.txt", "c.webm"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let exts: Vec<String> = crate::manifest::DEFAULT_EXTENSIONS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = discover(
            d,
            &["in/".into(), "*.webm".into(), "missing/".into()],
            &exts,
        );
        let rels: Vec<_> = r
            .videos
            .iter()
            .map(|v| v.rel.to_string_lossy().into_owned())
            .collect();
        assert_eq!(rels, vec!["c.webm", "in/a.mp4", "in/sub/b.MKV"]);
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].contains("missing/"), "{:?}", r.problems);
    }
}
