//! The marker that makes a folder a vsum cache (a `CACHEDIR.TAG`), and the check that
//! keeps vsum from adopting, and deleting in, a folder that is not one.

use std::fs;
use std::io;
use std::path::Path;

use super::StoreError;
use crate::fsutil::{self, write_atomic};

/// The marker of a vsum cache folder: a standard cache directory tag (backup tools
/// skip the folder), which also records the cache format.
pub const MARKER: &str = "CACHEDIR.TAG";
/// The cache layout this vsum writes and reads.
pub const FORMAT: u32 = 1;
const TAG_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";
/// What a cache made by vsum before it had a marker holds at its top level.
const OLD_LAYOUT: [&str; 9] = [
    "claims",
    "objects",
    "entries",
    "refs",
    "runs",
    "logs",
    "tmp",
    "lock",
    "statcache.json",
];

fn tag_text() -> String {
    format!(
        "{TAG_SIGNATURE}\n# This file is a cache directory tag created by vsum.\n# vsum-cache-format: {FORMAT}\n# Backup and sync tools that honour cache directory tags skip this folder.\n"
    )
}

/// The format a marker records (`None`: not a vsum marker).
fn marker_format(text: &str) -> Option<u32> {
    if !text.starts_with(TAG_SIGNATURE) {
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("# vsum-cache-format:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Makes sure `root` is a vsum cache before anything in it is touched: a missing or
/// empty folder becomes one, a folder with the marker is one, a cache made by an older
/// vsum (its layout, nothing else) is adopted, and any other folder is refused.
pub(super) fn claim_cache_folder(root: &Path) -> Result<(), StoreError> {
    let io_err = |source| StoreError::Io {
        path: root.to_path_buf(),
        source,
    };
    let marker = root.join(MARKER);
    match fs::read_to_string(&marker) {
        Ok(text) => {
            return match marker_format(&text) {
                Some(f) if f <= FORMAT => Ok(()),
                Some(f) => Err(StoreError::NewerFormat {
                    path: root.to_path_buf(),
                    found: f,
                }),
                None => Err(StoreError::NotACache {
                    path: root.to_path_buf(),
                    found: format!("a {MARKER} that another program wrote"),
                }),
            };
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let names: Vec<String> = match fs::read_dir(root) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // Another vsum creating this cache right now: its marker is being written.
            .filter(|n| !fsutil::is_temp(Path::new(n)))
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(e)),
    };
    let old_layout = names.iter().any(|n| n == "objects" || n == "entries")
        && names.iter().all(|n| OLD_LAYOUT.contains(&n.as_str()));
    if !names.is_empty() && !old_layout {
        let mut shown: Vec<&str> = names.iter().map(String::as_str).take(5).collect();
        shown.sort();
        let more = if names.len() > 5 { ", ..." } else { "" };
        return Err(StoreError::NotACache {
            path: root.to_path_buf(),
            found: format!("{}{more}", shown.join(", ")),
        });
    }
    write_atomic(&marker, tag_text().as_bytes()).map_err(io_err)
}
