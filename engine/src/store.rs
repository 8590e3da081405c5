//! The content-addressed cache under `.vsum/`.
//!
//! Layout: `objects/ab/<blake3>` (read-only files, one per distinct content),
//! `entries/ab/<key>.json` (what a job produced: output name -> object, its
//! fingerprint, timings), `refs/<video-id>/<stage>` (the last key seen for a video and
//! stage, for `cache why`), `statcache.json`, `runs/`, `logs/`, `tmp/`.
//!
//! A commit moves outputs into `objects/` first and writes the entry last, atomically
//! (temp + fsync + rename). Entries carry a checksum; an entry that fails it, or whose
//! objects are missing or of the wrong size, is never trusted. Runs hold a shared lock
//! on `.vsum/lock`; `gc` and `verify` take it exclusively, so they never pull an object
//! from under a running batch.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::LinkMode;
use crate::fingerprint::{Fingerprint, SCHEMA, outputs_digest};
use crate::fsutil::{self, sync_dir, temp_beside, write_atomic};
use crate::hash::{FileHasher, hash_file};
use crate::safety;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the cache folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the cache {path} is locked by another vsum ({what}); wait for it to finish or use another --cache-dir"
    )]
    Busy { path: PathBuf, what: &'static str },
    #[error(
        "{path} is not a vsum cache: the folder is not empty and has no {MARKER} (found {found}); vsum removes files in its cache folder, so it will not use this one. Give --cache-dir (or `cache_dir:`) an empty or new folder"
    )]
    NotACache { path: PathBuf, found: String },
    #[error(
        "the cache {path} has format {found}, newer than this vsum understands ({FORMAT}); use the newer vsum, or another --cache-dir"
    )]
    NewerFormat { path: PathBuf, found: u32 },
}

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
fn claim_cache_folder(root: &Path) -> Result<(), StoreError> {
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

/// A held claim on a job key (released when dropped).
#[derive(Debug)]
pub struct Claim {
    _file: File,
    pub waited: bool,
}

/// How a process holds the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Runs and read-only commands: many at once.
    Shared,
    /// gc and verify: alone.
    Exclusive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutFile {
    pub hash: String,
    pub size: u64,
}

/// One cache entry: what a job with a given key produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub schema: u32,
    pub key: String,
    pub stage: String,
    pub kind: String,
    /// The video (relative path, lossy) the entry was made for; informational.
    pub video: Option<String>,
    pub outputs: BTreeMap<String, OutFile>,
    pub fingerprint: Fingerprint,
    pub duration_ms: u64,
    /// Unix seconds.
    pub created: u64,
}

impl Entry {
    pub fn digest(&self) -> String {
        outputs_digest(self.outputs.iter().map(|(k, v)| (k, &v.hash)))
    }

    pub fn size(&self) -> u64 {
        self.outputs.values().map(|o| o.size).sum()
    }
}

/// What vsum last did for a video (or `_batch`) and stage: the key, and the files it
/// placed in which output folder. Cleanup removes those files and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub key: String,
    /// Which output folder the files are in ([`Ref::folder_id`]: paths need not be UTF-8).
    #[serde(default)]
    pub dest: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
    /// Each file as placed: its object and stat stamp (an unchanged file holding the
    /// same object is not placed again).
    #[serde(default)]
    pub stamps: BTreeMap<String, Placed>,
}

/// A file vsum placed: the object it is a copy of, and its stamp right after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed(pub String, pub Stamp);

/// What a placed output looked like: size, modification time and inode. An edit or a
/// replacement changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp(pub u64, pub i64, pub u64);

impl Stamp {
    pub fn of(md: &fs::Metadata) -> Stamp {
        Stamp(
            md.len(),
            md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            md.ino(),
        )
    }
}

impl Ref {
    /// A folder's id in a ref: a hash of its path's bytes.
    pub fn folder_id(dest: &Path) -> String {
        use std::os::unix::ffi::OsStrExt;
        blake3::hash(dest.as_os_str().as_bytes()).to_hex()[..32].to_string()
    }
}

/// Why a lookup did not give a trusted entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Hit(Box<Entry>),
    Missing,
    /// An entry exists but cannot be trusted (and has been removed).
    Untrusted(String),
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the cache at `root` and takes its lock.
    pub fn open(root: &Path, mode: LockMode) -> Result<Store, StoreError> {
        let io_err = |source| StoreError::Io {
            path: root.to_path_buf(),
            source,
        };
        claim_cache_folder(root)?;
        for sub in ["objects", "entries", "refs", "runs", "logs", "tmp"] {
            fs::create_dir_all(root.join(sub)).map_err(io_err)?;
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(root.join("lock"))
            .map_err(io_err)?;
        let res = match mode {
            LockMode::Shared => lock.try_lock_shared(),
            LockMode::Exclusive => lock.try_lock(),
        };
        match res {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Busy {
                    path: root.to_path_buf(),
                    what: match mode {
                        LockMode::Shared => "a gc or verify is running",
                        LockMode::Exclusive => "a run is in progress",
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        Ok(Store {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn hasher(&self) -> FileHasher {
        FileHasher::open(&self.root.join("statcache.json"))
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Keeps the newest `keep` run summaries and run logs; returns how many went.
    pub fn prune_runs(&self, keep: usize) -> usize {
        let mut removed = 0;
        for dir in [self.runs_dir(), self.logs_dir()] {
            let mut files: Vec<(SystemTime, PathBuf)> = fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect();
            files.sort();
            let excess = files.len().saturating_sub(keep);
            for (_, p) in files.into_iter().take(excess) {
                if fs::remove_file(p).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    fn object_path(&self, hash: &str) -> PathBuf {
        self.root.join("objects").join(&hash[..2]).join(hash)
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.root
            .join("entries")
            .join(&key[..2])
            .join(format!("{key}.json"))
    }

    /// Claims `key` for this process: waits while another process holds it (checking
    /// `cancel`), so two runs sharing the cache never compute the same job twice.
    /// `waited` says whether someone else had it (then look the key up again).
    pub fn claim(&self, key: &str, cancel: &AtomicBool) -> io::Result<Option<Claim>> {
        let dir = self.root.join("claims").join(&key[..2]);
        fs::create_dir_all(&dir)?;
        // Claim files are never removed while runs may hold them (only `gc`, alone).
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(key))?;
        let mut waited = false;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    return Ok(Some(Claim {
                        _file: file,
                        waited,
                    }));
                }
                Err(TryLockError::WouldBlock) => {
                    waited = true;
                    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                        return Err(io::Error::other("cancelled"));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    /// A new, empty private folder for one job's outputs (same filesystem as objects/).
    pub fn job_dir(&self) -> io::Result<PathBuf> {
        let d = self.root.join("tmp").join(fsutil::unique_suffix());
        fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Finds a trusted entry for `key`. Checks the entry's checksum and that each
    /// object exists with its recorded size; anything else is untrusted and removed.
    pub fn lookup(&self, key: &str) -> Lookup {
        let path = self.entry_path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Missing,
            Err(e) => {
                // Whatever is in an entry's place (a folder, say) is removed, so the
                // job's commit can put the entry there.
                remove_any(&path);
                return Lookup::Untrusted(format!("cannot read entry {}: {e}", &key[..12]));
            }
        };
        let verdict = match decode_entry(&bytes) {
            Ok(entry) if entry.key != key => Err("entry names another key".to_string()),
            Ok(entry) => match self.check_objects(&entry) {
                Ok(()) => Ok(entry),
                Err(why) => Err(why),
            },
            Err(why) => Err(why),
        };
        match verdict {
            Ok(entry) => {
                // Last use, for gc by age: the entry file's mtime.
                if let Ok(f) = File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Lookup::Hit(Box::new(entry))
            }
            Err(why) => {
                let _ = fs::remove_file(&path);
                Lookup::Untrusted(format!("cache entry {} untrusted: {why}", &key[..12]))
            }
        }
    }

    fn check_objects(&self, entry: &Entry) -> Result<(), String> {
        for (name, o) in &entry.outputs {
            match fs::symlink_metadata(self.object_path(&o.hash)) {
                Ok(m) if !m.is_file() => {
                    return Err(format!("object for '{name}' is not a regular file"));
                }
                Ok(m) if m.len() == o.size => {}
                Ok(m) => {
                    return Err(format!(
                        "object for '{name}' has {} bytes, expected {}",
                        m.len(),
                        o.size
                    ));
                }
                Err(_) => return Err(format!("object for '{name}' is missing")),
            }
        }
        Ok(())
    }

    /// Moves every file under `job_dir` into objects/ and writes the entry.
    pub fn commit(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        stage: &str,
        video: Option<String>,
        job_dir: &Path,
        duration_ms: u64,
    ) -> io::Result<Entry> {
        let mut outputs = BTreeMap::new();
        let mut touched = BTreeSet::new();
        for item in walkdir::WalkDir::new(job_dir).sort_by_file_name() {
            let item = item.map_err(io::Error::other)?;
            if item.file_type().is_dir() {
                continue;
            }
            let rel = item
                .path()
                .strip_prefix(job_dir)
                .map_err(io::Error::other)?
                .to_str()
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "output file name {:?} is not valid UTF-8",
                        item.path()
                    ))
                })?
                .to_string();
            if !item.file_type().is_file() {
                return Err(io::Error::other(format!(
                    "output '{rel}' is not a regular file (symlinks and devices are not cached)"
                )));
            }
            // The store gets a private copy (a reflink where it can), never the job's
            // file itself: a process that still holds that file open cannot reach it.
            let snap = self
                .root
                .join("tmp")
                .join(format!(".object-{}", fsutil::unique_suffix()));
            let stored = (|| {
                fsutil::clone_or_copy(item.path(), &snap)?;
                File::open(&snap)?.sync_all()?;
                let hash = hash_file(&snap)?;
                let size = fs::metadata(&snap)?.len();
                let dest = self.object_path(&hash);
                if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size) {
                    fs::remove_file(&snap)?;
                } else {
                    // A damaged object, or something else in its place, is replaced.
                    remove_any(&dest);
                    let parent = dest.parent().expect("object folder");
                    fs::create_dir_all(parent)?;
                    fs::set_permissions(&snap, fs::Permissions::from_mode(0o444))?;
                    fs::rename(&snap, &dest)?;
                    touched.insert(parent.to_path_buf());
                }
                Ok::<_, io::Error>((hash, size))
            })();
            if stored.is_err() {
                let _ = fs::remove_file(&snap);
            }
            let (hash, size) = stored?;
            outputs.insert(rel, OutFile { hash, size });
        }
        for dir in touched {
            sync_dir(&dir);
        }
        fault_point("commit:objects-stored");
        let entry = Entry {
            schema: SCHEMA,
            key: key.to_string(),
            stage: stage.to_string(),
            kind: fingerprint.kind.clone(),
            video,
            outputs,
            fingerprint: fingerprint.clone(),
            duration_ms,
            created: now_secs(),
        };
        write_atomic(&self.entry_path(key), &encode_entry(&entry))?;
        fault_point("commit:entry-written");
        let _ = fs::remove_dir_all(job_dir);
        Ok(entry)
    }

    /// Makes `dest` hold the entry's outputs: copies of the objects (reflinks where the
    /// filesystem has them), or hard links with [`LinkMode::Hardlink`]. A file whose stat
    /// stamp is still the one recorded when vsum placed it (`placed`) is left alone, so
    /// a cached rerun reads nothing; an edited one is restored. Of what was there
    /// before, only `previous` (the files vsum placed there last time, from the ref) may
    /// be removed: anything else in the folder is not vsum's and stays. Nothing is
    /// written or removed through a symlink between `root` (the output folder) and a
    /// file. Returns the stamps of the placed files, for the ref.
    pub fn materialize(
        &self,
        entry: &Entry,
        root: &Path,
        dest: &Path,
        previous: &[String],
        placed: &BTreeMap<String, Placed>,
        link: LinkMode,
    ) -> io::Result<BTreeMap<String, Placed>> {
        safety::no_symlink_below(root, dest)?;
        // Remove what an earlier version of the stage placed and this one does not make.
        let mut emptied = BTreeSet::new();
        for rel in previous {
            if entry.outputs.contains_key(rel) || !safety::plain_relative(rel) {
                continue;
            }
            let path = dest.join(rel);
            if safety::no_symlink_below(dest, &path).is_err() {
                continue;
            }
            // Only a regular file: a folder or a link in its place is someone else's.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())
                && fs::remove_file(&path).is_ok()
                && let Some(parent) = path.parent()
            {
                emptied.insert(parent.to_path_buf());
            }
        }
        for d in emptied.into_iter().rev() {
            // Folders vsum made for nested outputs; removing succeeds only when empty.
            let mut d = d.as_path();
            while d != dest && d.starts_with(dest) && fs::remove_dir(d).is_ok() {
                d = d.parent().unwrap_or(dest);
            }
        }
        fs::create_dir_all(dest)?;
        let mut stamps = BTreeMap::new();
        for (rel, o) in &entry.outputs {
            if !safety::plain_relative(rel) {
                return Err(io::Error::other(format!(
                    "cache entry names an unsafe output path '{rel}'"
                )));
            }
            let obj = self.object_path(&o.hash);
            let target = dest.join(rel);
            safety::no_symlink_below(dest, &target)?;
            let obj_md = fs::metadata(&obj)?;
            if let Ok(md) = fs::symlink_metadata(&target) {
                let unchanged = match link {
                    LinkMode::Hardlink => md.ino() == obj_md.ino() && md.dev() == obj_md.dev(),
                    LinkMode::Copy => {
                        md.is_file()
                            && md.len() == o.size
                            && placed.get(rel) == Some(&Placed(o.hash.clone(), Stamp::of(&md)))
                            // A hard link from an older vsum becomes a copy.
                            && !(md.ino() == obj_md.ino() && md.dev() == obj_md.dev())
                    }
                };
                if unchanged {
                    stamps.insert(rel.clone(), Placed(o.hash.clone(), Stamp::of(&md)));
                    continue;
                }
                if md.is_dir() {
                    return Err(io::Error::other(format!(
                        "{} is a folder vsum did not make, where the output '{rel}' goes; move it away",
                        target.display()
                    )));
                }
            }
            if let Some(p) = target.parent() {
                fs::create_dir_all(p)?;
            }
            let tmp = temp_beside(&target);
            let made = match link {
                LinkMode::Hardlink => {
                    fs::hard_link(&obj, &tmp).or_else(|_| fs::copy(&obj, &tmp).map(|_| ()))
                }
                LinkMode::Copy => fsutil::clone_or_copy(&obj, &tmp).and_then(|()| {
                    // The object is read-only; the user's copy is theirs to edit.
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
                }),
            };
            if let Err(e) = made.and_then(|()| fs::rename(&tmp, &target)) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            let md = fs::symlink_metadata(&target)?;
            stamps.insert(rel.clone(), Placed(o.hash.clone(), Stamp::of(&md)));
        }
        Ok(stamps)
    }

    /// Does `dest` already hold exactly these outputs as links to the objects?
    pub fn is_materialized(&self, entry: &Entry, dest: &Path) -> bool {
        entry.outputs.iter().all(|(rel, o)| {
            match (
                fs::metadata(dest.join(rel)),
                fs::metadata(self.object_path(&o.hash)),
            ) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            }
        })
    }

    /// Is `path` one of this cache's objects (a hardlink vsum placed)?
    pub fn is_object_link(&self, path: &Path, hash: &str) -> bool {
        match (
            fs::symlink_metadata(path),
            fs::metadata(self.object_path(hash)),
        ) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }

    fn ref_path(&self, video_id: &str, stage: &str) -> PathBuf {
        self.root.join("refs").join(video_id).join(stage)
    }

    /// Remembers the key last used for a video (or `_batch`) and stage, and the files
    /// placed in which output folder.
    pub fn set_ref(&self, video_id: &str, stage: &str, r: &Ref) -> io::Result<()> {
        let p = self.ref_path(video_id, stage);
        let bytes = serde_json::to_vec(r).map_err(io::Error::other)?;
        if fs::read(&p).ok().as_deref() == Some(bytes.as_slice()) {
            return Ok(());
        }
        write_atomic(&p, &bytes)
    }

    /// The ref of a video and stage. Refs of older vsum versions hold a bare key.
    pub fn read_ref(&self, video_id: &str, stage: &str) -> Option<Ref> {
        let text = fs::read_to_string(self.ref_path(video_id, stage)).ok()?;
        let text = text.trim();
        if text.starts_with('{') {
            serde_json::from_str(text).ok()
        } else {
            Some(Ref {
                key: text.to_string(),
                ..Ref::default()
            })
        }
    }

    pub fn get_ref(&self, video_id: &str, stage: &str) -> Option<String> {
        self.read_ref(video_id, stage).map(|r| r.key)
    }

    fn published_path(&self, output_dir: &Path, name: &str) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let id = blake3::hash(output_dir.as_os_str().as_bytes()).to_hex();
        self.root
            .join("refs")
            .join("_published")
            .join(&id[..16])
            .join(name)
    }

    /// The content hash of the file vsum last published as `output_dir/name`.
    pub fn published_hash(&self, output_dir: &Path, name: &str) -> Option<String> {
        fs::read_to_string(self.published_path(output_dir, name))
            .ok()
            .map(|s| s.trim().to_string())
    }

    pub fn set_published(&self, output_dir: &Path, name: &str, hash: &str) -> io::Result<()> {
        let p = self.published_path(output_dir, name);
        if fs::read_to_string(&p).ok().as_deref() == Some(hash) {
            return Ok(());
        }
        write_atomic(&p, hash.as_bytes())
    }

    /// Reads an entry without trusting checks (for inspection commands).
    pub fn read_entry(&self, key: &str) -> Result<Entry, String> {
        let bytes = fs::read(self.entry_path(key)).map_err(|e| e.to_string())?;
        decode_entry(&bytes)
    }

    /// All entry keys (optionally those starting with `prefix`).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = walkdir::WalkDir::new(self.root.join("entries"))
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?;
                name.strip_suffix(".json").map(str::to_string)
            })
            .filter(|k| k.len() == 64 && k.starts_with(prefix))
            .collect();
        keys.sort();
        keys
    }

    /// Last use of an entry (unix seconds).
    pub fn last_used(&self, key: &str) -> u64 {
        fs::metadata(self.entry_path(key))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn object_files(&self) -> Vec<(String, PathBuf, u64)> {
        walkdir::WalkDir::new(self.root.join("objects"))
            .min_depth(2)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let size = e.metadata().ok()?.len();
                Some((name, e.path().to_path_buf(), size))
            })
            .collect()
    }

    /// Anything under objects/ where a file should be that is not one (a folder, a link).
    fn misplaced_objects(&self) -> Vec<PathBuf> {
        walkdir::WalkDir::new(self.root.join("objects"))
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .flatten()
            .filter(|e| !e.file_type().is_file())
            .map(|e| e.path().to_path_buf())
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let objects = self.object_files();
        let mut by_stage: BTreeMap<String, (usize, u64)> = BTreeMap::new();
        let keys = self.keys("");
        for k in &keys {
            if let Ok(e) = self.read_entry(k) {
                let s = by_stage.entry(e.stage.clone()).or_default();
                s.0 += 1;
                s.1 += e.size();
            }
        }
        Stats {
            root: self.root.clone(),
            entries: keys.len(),
            objects: objects.len(),
            object_bytes: objects.iter().map(|o| o.2).sum(),
            total_bytes: fsutil::dir_size(&self.root),
            by_stage,
        }
    }

    /// Re-hashes every object; corrupt objects and entries are reported and, when
    /// `evict`, removed so the next run recomputes them.
    pub fn verify(&self, evict: bool) -> VerifyReport {
        let mut report = VerifyReport::default();
        for (name, path, _) in self.object_files() {
            report.objects_checked += 1;
            match hash_file(&path) {
                Ok(h) if h == name => {}
                Ok(h) => {
                    report.problems.push(format!(
                        "object {} is corrupt (content hashes to {})",
                        &name[..16.min(name.len())],
                        &h[..16]
                    ));
                    report.corrupt_objects.insert(name);
                    if evict {
                        let _ = fs::remove_file(&path);
                    }
                }
                Err(e) => report
                    .problems
                    .push(format!("object {name} unreadable: {e}")),
            }
        }
        for path in self.misplaced_objects() {
            report
                .problems
                .push(format!("{} is not a regular file", path.display()));
            if evict {
                remove_any(&path);
            }
        }
        for key in self.keys("") {
            report.entries_checked += 1;
            let path = self.entry_path(&key);
            let bad = match self.read_entry(&key) {
                Err(why) => Some(format!("entry {} is corrupt: {why}", &key[..16])),
                Ok(e) => e
                    .outputs
                    .iter()
                    .find(|(_, o)| {
                        report.corrupt_objects.contains(&o.hash)
                            || !fs::symlink_metadata(self.object_path(&o.hash))
                                .is_ok_and(|m| m.is_file())
                    })
                    .map(|(n, _)| {
                        format!(
                            "entry {} ({} [{}]) lost its output '{n}'",
                            &key[..16],
                            e.stage,
                            e.video.as_deref().unwrap_or("batch")
                        )
                    }),
            };
            if let Some(why) = bad {
                report.problems.push(why);
                report.bad_entries += 1;
                if evict {
                    remove_any(&path);
                }
            }
        }
        report.evicted = evict;
        report
    }

    /// Removes entries unused for longer than `older_than` seconds, then the least
    /// recently used until outputs fit in `max_size` bytes, then unreferenced objects
    /// and leftovers of interrupted jobs.
    pub fn gc(&self, max_size: Option<u64>, older_than: Option<u64>) -> GcReport {
        let now = now_secs();
        let mut report = GcReport::default();
        let mut live: Vec<(u64, String, Entry)> = Vec::new();
        for key in self.keys("") {
            match self.read_entry(&key) {
                Ok(e) => live.push((self.last_used(&key), key, e)),
                Err(_) => {
                    remove_any(&self.entry_path(&key));
                    report.entries_removed += 1;
                }
            }
        }
        live.sort_by_key(|e| std::cmp::Reverse(e.0)); // newest first
        let mut kept = 0usize;
        let mut kept_bytes = 0u64;
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut seen_objects: BTreeMap<String, u64> = BTreeMap::new();
        for (used, key, e) in &live {
            let too_old = older_than.is_some_and(|age| now.saturating_sub(*used) > age);
            let new_bytes: u64 = e
                .outputs
                .values()
                .filter(|o| !seen_objects.contains_key(&o.hash))
                .map(|o| o.size)
                .sum();
            let too_big = max_size.is_some_and(|max| kept_bytes + new_bytes > max);
            if too_old || too_big {
                let _ = fs::remove_file(self.entry_path(key));
                report.entries_removed += 1;
                continue;
            }
            kept += 1;
            kept_bytes += new_bytes;
            for o in e.outputs.values() {
                seen_objects.insert(o.hash.clone(), o.size);
                keep.insert(o.hash.clone());
            }
        }
        for path in self.misplaced_objects() {
            remove_any(&path);
            report.objects_removed += 1;
        }
        for (name, path, size) in self.object_files() {
            if !keep.contains(&name) {
                let _ = fs::remove_file(&path);
                report.objects_removed += 1;
                report.bytes_freed += size;
            }
        }
        if let Ok(rd) = fs::read_dir(self.root.join("tmp")) {
            for d in rd.flatten() {
                report.bytes_freed += fsutil::dir_size(&d.path());
                remove_any(&d.path());
            }
        }
        // No run holds a claim while gc has the cache to itself.
        remove_any(&self.root.join("claims"));
        report.entries_kept = kept;
        report.bytes_kept = kept_bytes;
        report
    }
}

/// Removes what is at `path` inside the cache, file or folder (never following a link).
fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Fault injection for the crash tests: when `VSUM_FAULT` names this point, the process
/// dies on the spot (SIGABRT: no destructors, no cleanup), as a kill -9 or a power cut
/// would leave it.
fn fault_point(name: &str) {
    if std::env::var_os("VSUM_FAULT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}

const CHECK_SEP: &[u8] = b"\n#blake3:";

fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(e).expect("entry serializes");
    let sum = blake3::hash(&body).to_hex();
    body.extend_from_slice(CHECK_SEP);
    body.extend_from_slice(sum.as_bytes());
    body.push(b'\n');
    body
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    let at = bytes
        .windows(CHECK_SEP.len())
        .rposition(|w| w == CHECK_SEP)
        .ok_or("no checksum")?;
    let (body, rest) = bytes.split_at(at);
    let sum = std::str::from_utf8(&rest[CHECK_SEP.len()..])
        .map_err(|_| "bad checksum")?
        .trim();
    if blake3::hash(body).to_hex().as_str() != sum {
        return Err("checksum mismatch".into());
    }
    let e: Entry = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if e.schema != SCHEMA {
        return Err(format!("schema {} (this vsum uses {SCHEMA})", e.schema));
    }
    Ok(e)
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub root: PathBuf,
    pub entries: usize,
    pub objects: usize,
    pub object_bytes: u64,
    pub total_bytes: u64,
    /// Stage -> (entries, bytes of outputs).
    pub by_stage: BTreeMap<String, (usize, u64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub objects_checked: usize,
    pub entries_checked: usize,
    pub bad_entries: usize,
    pub corrupt_objects: BTreeSet<String>,
    pub problems: Vec<String>,
    pub evicted: bool,
}

impl VerifyReport {
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub entries_removed: usize,
    pub entries_kept: usize,
    pub objects_removed: usize,
    pub bytes_freed: u64,
    pub bytes_kept: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::SCHEMA;

    fn fp() -> Fingerprint {
        Fingerprint {
            schema: SCHEMA,
            kind: "command".into(),
            kind_version: 1,
            params: serde_json::json!({}),
            inputs: BTreeMap::new(),
            upstream: BTreeMap::new(),
            tools: BTreeMap::new(),
        }
    }

    fn commit_one(store: &Store, key: &str, content: &[u8]) -> Entry {
        let d = store.job_dir().unwrap();
        fs::write(d.join("a.txt"), content).unwrap();
        store.commit(key, &fp(), "s", None, &d, 1).unwrap()
    }

    #[test]
    fn commit_lookup_materialize_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
        let key = "a".repeat(64);
        let e = commit_one(&store, &key, b"hello");
        let Lookup::Hit(hit) = store.lookup(&key) else {
            panic!("expected hit")
        };
        assert_eq!(hit.outputs, e.outputs);
        let out = dir.path().join("out");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("stale.txt"), b"old").unwrap();
        fs::write(out.join("mine.txt"), b"user's").unwrap();
        let stamps = store
            .materialize(
                &hit,
                dir.path(),
                &out,
                &["stale.txt".into()],
                &BTreeMap::new(),
                LinkMode::Copy,
            )
            .unwrap();
        assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"hello");
        assert!(!out.join("stale.txt").exists(), "vsum's old file goes");
        assert!(
            out.join("mine.txt").exists(),
            "a file vsum did not place stays"
        );
        assert!(!store.is_materialized(&hit, &out), "a copy, not a link");
        // Unchanged since placed: left alone. Edited: restored.
        let ino = fs::metadata(out.join("a.txt")).unwrap().ino();
        let again = store
            .materialize(&hit, dir.path(), &out, &[], &stamps, LinkMode::Copy)
            .unwrap();
        assert_eq!(fs::metadata(out.join("a.txt")).unwrap().ino(), ino);
        fs::write(out.join("a.txt"), b"edited").unwrap();
        store
            .materialize(&hit, dir.path(), &out, &[], &again, LinkMode::Copy)
            .unwrap();
        assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"hello");
        store
            .materialize(&hit, dir.path(), &out, &[], &again, LinkMode::Hardlink)
            .unwrap();
        assert!(store.is_materialized(&hit, &out));
    }

    #[test]
    fn tampered_entry_or_missing_object_is_untrusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
        let key = "b".repeat(64);
        let e = commit_one(&store, &key, b"hello");
        let p = store.entry_path(&key);
        let mut bytes = fs::read(&p).unwrap();
        bytes[10] ^= 1;
        fs::write(&p, &bytes).unwrap();
        assert!(matches!(store.lookup(&key), Lookup::Untrusted(_)));

        let key2 = "c".repeat(64);
        commit_one(&store, &key2, b"hello");
        fs::remove_file(store.object_path(&e.outputs["a.txt"].hash)).unwrap();
        assert!(matches!(store.lookup(&key2), Lookup::Untrusted(_)));
        assert_eq!(
            store.lookup(&key2),
            Lookup::Missing,
            "untrusted entry is removed"
        );
    }

    #[test]
    fn verify_finds_and_evicts_corrupt_objects() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(".vsum");
        let key = "d".repeat(64);
        let e = {
            let store = Store::open(&root, LockMode::Shared).unwrap();
            commit_one(&store, &key, b"hello")
        };
        let store = Store::open(&root, LockMode::Exclusive).unwrap();
        assert!(store.verify(false).clean());
        let obj = store.object_path(&e.outputs["a.txt"].hash);
        fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&obj, b"jello").unwrap();
        let r = store.verify(true);
        assert_eq!(r.corrupt_objects.len(), 1);
        assert_eq!(r.bad_entries, 1);
        assert_eq!(store.lookup(&key), Lookup::Missing);
        assert!(store.verify(false).clean());
    }

    #[test]
    fn exclusive_lock_excludes_runs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(".vsum");
        let _a = Store::open(&root, LockMode::Shared).unwrap();
        let _b = Store::open(&root, LockMode::Shared).unwrap();
        assert!(matches!(
            Store::open(&root, LockMode::Exclusive),
            Err(StoreError::Busy { .. })
        ));
    }

    #[test]
    fn gc_drops_unreferenced_objects_and_respects_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(".vsum");
        let store = Store::open(&root, LockMode::Exclusive).unwrap();
        commit_one(&store, &"e".repeat(64), b"0123456789");
        commit_one(&store, &"f".repeat(64), b"abcdefghij");
        let r = store.gc(None, None);
        assert_eq!((r.entries_removed, r.objects_removed), (0, 0));
        let r = store.gc(Some(15), None);
        assert_eq!(r.entries_removed, 1);
        assert_eq!(r.objects_removed, 1);
        assert_eq!(store.keys("").len(), 1);
    }
}
