//! `cache stats` without reading the whole cache: each folder's sums (files, bytes,
//! entries by stage) are remembered in `stats.json` and reused while the folder's
//! timestamps are unchanged, so only folders that changed since the last call are read.
//!
//! A folder's mtime moves whenever a name in it is added, removed or renamed over, and
//! the cache only ever changes objects, entries, claims and refs that way (temp file,
//! then rename; objects are immutable). Two rules keep the reuse exact:
//! - A folder whose mtime is within [`SETTLE`] of the moment it was read is not
//!   remembered (git's "racy index" rule): a change in the same timestamp tick would
//!   leave its mtime as it was.
//! - A folder holding a write in progress (a [`fsutil::is_temp`] name) is not
//!   remembered: that file may still grow.
//!
//! `runs/`, `logs/`, `tmp/` and the cache's top level hold files that grow in place,
//! so they are always read. The file is a cache of a cache: a missing, torn or
//! foreign `stats.json` only means a full read, and nothing else ever reads it.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::entry::decode_entry;
use crate::fsutil;

/// The summary's file, at the cache's top level.
pub(super) const FILE: &str = "stats.json";
const VERSION: u32 = 1;
/// How old a folder's last change must be before its sums are remembered.
const SETTLE: Duration = Duration::from_secs(2);
/// Top-level folders whose files only change by rename: their sums can be remembered.
const REMEMBERED: [&str; 4] = ["objects", "entries", "claims", "refs"];

/// What identifies a folder's state: mtime and ctime (ns) and inode.
type Stamp = (i64, i64, u64);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Folder {
    stamp: Stamp,
    /// Regular files directly in the folder, and their bytes.
    files: u64,
    bytes: u64,
    subdirs: Vec<String>,
    /// Entry files (`entries/ab/<key>.json`) and, for those that decode,
    /// stage -> (entries, bytes of outputs).
    #[serde(default)]
    entries: usize,
    #[serde(default)]
    stages: BTreeMap<String, (usize, u64)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    folders: HashMap<String, Folder>,
}

/// The cache's sums, as `Store::stats` reports them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Sums {
    pub entries: usize,
    pub objects: usize,
    pub object_bytes: u64,
    pub total_bytes: u64,
    pub by_stage: BTreeMap<String, (usize, u64)>,
    /// Folders read from disk this time (the rest came from `stats.json`).
    pub folders_read: usize,
}

/// Sums the cache at `root`, reusing `stats.json` where folders are unchanged (`reuse`),
/// and writes back what it learnt.
pub(super) fn sums(root: &Path, reuse: bool) -> Sums {
    let summary = root.join(FILE);
    let old = if reuse {
        fs::read(&summary)
            .ok()
            .and_then(|b| serde_json::from_slice::<Snapshot>(&b).ok())
            .filter(|s| s.version == VERSION)
            .unwrap_or_default()
    } else {
        Snapshot::default()
    };
    let mut walk = Walk {
        root,
        old: old.folders,
        new: HashMap::new(),
        learnt: false,
        sums: Sums::default(),
    };
    walk.folder("", None, 0);
    // Folders left in `old` are gone: the file must forget them too.
    if reuse && (walk.learnt || !walk.old.is_empty()) {
        let snap = Snapshot {
            version: VERSION,
            folders: walk.new,
        };
        // Best effort: a read-only cache just reads everything next time.
        if let Ok(bytes) = serde_json::to_vec(&snap) {
            let _ = fsutil::replace_atomic(&summary, &bytes);
        }
    }
    walk.sums
}

struct Walk<'a> {
    root: &'a Path,
    old: HashMap<String, Folder>,
    new: HashMap<String, Folder>,
    /// Some folder's sums were read and are to be remembered.
    learnt: bool,
    sums: Sums,
}

impl Walk<'_> {
    /// Adds the folder `rel` (under the top-level folder `top`, at `depth` below the
    /// cache's top) and everything under it to the sums.
    fn folder(&mut self, rel: &str, top: Option<&str>, depth: usize) {
        let path = self.root.join(rel);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return;
        };
        if !meta.is_dir() {
            return;
        }
        let stamp = (
            meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            meta.ino(),
        );
        let remembered = top.is_some_and(|t| REMEMBERED.contains(&t));
        let (folder, keep) = match self.old.remove(rel) {
            Some(f) if remembered && f.stamp == stamp => (f, true),
            _ => {
                let (folder, settled) = self.read(&path, stamp, top, depth);
                self.sums.folders_read += 1;
                let keep = remembered && settled;
                self.learnt |= keep;
                (folder, keep)
            }
        };
        self.add(&folder, top, depth);
        self.children(rel, &folder.subdirs, top, depth);
        if keep {
            self.new.insert(rel.to_string(), folder);
        }
    }

    fn children(&mut self, rel: &str, subdirs: &[String], top: Option<&str>, depth: usize) {
        for sub in subdirs {
            let child = if rel.is_empty() {
                sub.clone()
            } else {
                format!("{rel}/{sub}")
            };
            self.folder(&child, Some(top.unwrap_or(sub)), depth + 1);
        }
    }

    fn add(&mut self, f: &Folder, top: Option<&str>, depth: usize) {
        self.sums.total_bytes += f.bytes;
        if top == Some("objects") && depth >= 2 {
            self.sums.objects += f.files as usize;
            self.sums.object_bytes += f.bytes;
        }
        self.sums.entries += f.entries;
        for (stage, (n, b)) in &f.stages {
            let s = self.sums.by_stage.entry(stage.clone()).or_default();
            s.0 += n;
            s.1 += b;
        }
    }

    /// Reads one folder from disk; `settled` says whether its sums may be remembered.
    fn read(&self, path: &Path, stamp: Stamp, top: Option<&str>, depth: usize) -> (Folder, bool) {
        let mut f = Folder {
            stamp,
            ..Folder::default()
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let settle = SETTLE.as_nanos() as i64;
        // Any name added to or removed from the folder sets its mtime (and ctime) to the
        // current tick; mtime alone says whether that tick is over. The ctime in the
        // stamp still catches an mtime set back by hand.
        let mut settled = now - stamp.0 > settle;
        let Ok(rd) = fs::read_dir(path) else {
            return (f, false);
        };
        let shard = top == Some("entries") && depth == 2;
        for e in rd.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            let name = e.file_name();
            if kind.is_dir() {
                match name.to_str() {
                    Some(n) => f.subdirs.push(n.to_string()),
                    // Not vsum's (its names are UTF-8): its bytes still count, read
                    // afresh each time, as the summary's keys are text.
                    None => {
                        f.bytes += fsutil::dir_size(&e.path());
                        settled = false;
                    }
                }
                continue;
            }
            // The summary does not count itself: its size is only known once written.
            if !kind.is_file() || (depth == 0 && name == FILE) {
                continue;
            }
            if fsutil::is_temp(Path::new(&name)) {
                settled = false;
            }
            let Ok(m) = e.metadata() else { continue };
            f.files += 1;
            f.bytes += m.len();
            let is_key = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .is_some_and(|k| k.len() == 64);
            if shard && is_key {
                f.entries += 1;
                if let Some(entry) = fs::read(e.path()).ok().and_then(|b| decode_entry(&b).ok()) {
                    let size = entry.size();
                    let s = f.stages.entry(entry.stage).or_default();
                    s.0 += 1;
                    s.1 += size;
                }
            }
        }
        f.subdirs.sort();
        (f, settled)
    }
}
