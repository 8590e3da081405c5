//! The content-addressed cache under `.vsum/`.
//!
//! Layout: `objects/ab/<blake3>` (read-only files, one per distinct content),
//! `entries/ab/<key>.json` (what a job produced: output name -> object, its
//! fingerprint, timings), `refs/<video-id>/<stage>` (the last key seen for a video and
//! stage, for `cache why`), `statcache.json`, `stats.json` (see `summary`),
//! `durations.json` (see `run::durations`), `runs/`, `logs/`, `tmp/`.
//!
//! A commit moves outputs into `objects/` first, makes them durable (fsync of each
//! object and of its folder), and writes the entry last, atomically (temp + rename).
//! Entries carry a checksum; an entry that fails it, or whose
//! objects are missing or of the wrong size, is never trusted. Runs hold a shared lock
//! on `.vsum/lock`; `gc` and `verify` take it exclusively, so they never pull an object
//! from under a running batch.

mod entry;
mod maintain;
mod marker;
mod place;
mod refs;
mod shared;
mod summary;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fingerprint::{Fingerprint, SCHEMA};
use crate::fsutil::{self, replace_atomic, sync_dir};
use crate::hash::{FileHasher, hash_file};

pub use entry::{Entry, Lookup, OutFile, Placed, Ref, Stamp};
use entry::{decode_entry, encode_entry};
pub use maintain::{GcDoomed, GcPlan, GcReport, Stats, VerifyReport};
use marker::claim_cache_folder;
pub use marker::{FORMAT, MARKER};
pub use place::place_file;
pub use shared::discard;

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

/// Outputs up to this size are hashed in place first, to find an object already
/// stored without copying them (larger ones are hashed once, as the stored copy).
const SMALL_OUTPUT: u64 = 1 << 20;

/// View folders kept for reuse (about the jobs that run at once).
const MAX_SPARE_VIEWS: usize = 64;

/// How fresh an entry's use mark may be and still be left as it is (see
/// [`Store::mark_used`]).
pub const USE_MARK_STEP: std::time::Duration = std::time::Duration::from_secs(3600);

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
    /// `entries/`, `objects/` and `refs/`, open: the hot look-ups name files relative
    /// to them, so the kernel walks two path components, not the whole path.
    entries_dir: OwnedFd,
    objects_dir: OwnedFd,
    refs_dir: OwnedFd,
    /// Can this process write through a hard link to a read-only object (root can)?
    /// Learned at the first staged view; then views are copies, never links.
    links_writable: std::sync::OnceLock<bool>,
    /// Set when a job's folder could not be renamed into the output folder (another
    /// filesystem): its outputs are copied from then on, without trying again.
    no_moves: std::sync::atomic::AtomicBool,
    /// Folders for jobs' staged views, given back empty by finished jobs and reused
    /// (see [`Store::view_root`]); removed with the store.
    spare_views: std::sync::Mutex<Vec<PathBuf>>,
}

/// Opens `rel`, below the folder `dir`, for reading.
fn open_at(dir: &OwnedFd, rel: impl rustix::path::Arg) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(dir, rel, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

/// A handle on a folder, for `*at` calls only.
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
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
            entries_dir: open_dir(&root.join("entries")).map_err(io_err)?,
            objects_dir: open_dir(&root.join("objects")).map_err(io_err)?,
            refs_dir: open_dir(&root.join("refs")).map_err(io_err)?,
            links_writable: std::sync::OnceLock::new(),
            no_moves: std::sync::atomic::AtomicBool::new(false),
            spare_views: std::sync::Mutex::new(Vec::new()),
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

    /// An object's path relative to `objects/` (see [`Store::objects_dir`]).
    fn object_rel(hash: &str) -> String {
        format!("{}/{hash}", hash.get(..2).unwrap_or(hash))
    }

    fn object_path(&self, hash: &str) -> PathBuf {
        self.root.join("objects").join(Self::object_rel(hash))
    }

    /// An entry's path relative to `entries/` (see [`Store::entries_dir`]).
    fn entry_rel(key: &str) -> String {
        format!("{}/{key}.json", &key[..2])
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(Self::entry_rel(key))
    }

    /// Claims `key` for this process: waits while another process holds it (checking
    /// `cancel`), so two runs sharing the cache never compute the same job twice.
    /// `waited` says whether someone else had it. Look the key up again once claimed either
    /// way: another run may have made it between the look-up and the claim.
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

    /// A folder for one job's staged views of its upstream entries: one an earlier
    /// job gave back ([`Store::give_back_view`]) when there is one, else a new one.
    /// Reusing them keeps the folders a job stages into (`<n>/<name>`): on ext4 every
    /// folder made and removed costs later file creations a scan, for minutes.
    pub fn view_root(&self) -> io::Result<PathBuf> {
        let spare = self
            .spare_views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        match spare {
            Some(root) => Ok(root),
            None => self.job_dir(),
        }
    }

    /// Takes back a job's view folder once the job is done with it: everything staged
    /// in it is removed, the folders `<n>/<name>` stay for the next job. A folder that
    /// cannot be emptied is removed instead.
    pub fn give_back_view(&self, root: PathBuf) {
        let emptied = (|| -> io::Result<()> {
            for slot in fs::read_dir(&root)? {
                let slot = slot?;
                if !slot.file_type()?.is_dir() || slot.file_name() == "previous" {
                    remove_any(&slot.path());
                    continue;
                }
                for view in fs::read_dir(slot.path())? {
                    let view = view?;
                    if !view.file_type()?.is_dir() {
                        remove_any(&view.path());
                        continue;
                    }
                    for item in fs::read_dir(view.path())? {
                        remove_any(&item?.path());
                    }
                }
            }
            Ok(())
        })();
        let mut spare = self.spare_views.lock().unwrap_or_else(|e| e.into_inner());
        if emptied.is_ok() && spare.len() < MAX_SPARE_VIEWS {
            spare.push(root);
        } else {
            drop(spare);
            let _ = fs::remove_dir_all(&root);
        }
    }

    /// Finds a trusted entry for `key`. Checks the entry's checksum and that each
    /// object exists with its recorded size; anything else is untrusted and removed. A
    /// hit marks the entry used (its mtime, for `gc` by age; see [`Store::mark_used`]).
    pub fn lookup(&self, key: &str) -> Lookup {
        let (found, used) = self.peek_dated(key);
        let path = self.entry_path(key);
        match &found {
            Lookup::Hit(_) => self.mark_used(key, used),
            // Whatever is in an entry's place (a folder, say) is removed, so the job's
            // commit can put the entry there.
            Lookup::Untrusted(_) => remove_any(&path),
            Lookup::Missing => {}
        }
        found
    }

    /// Marks an entry as used now (its mtime): `gc` removes the least recently used.
    /// Like `relatime`, a mark less than [`USE_MARK_STEP`] old (`last`, when known) is
    /// left as it is: a rerun of many cached jobs then writes no inodes, and gc's ages
    /// are in hours and days.
    pub fn mark_used(&self, key: &str, last: Option<SystemTime>) {
        use rustix::fs::{AtFlags, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT};
        let recent = last
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < USE_MARK_STEP);
        if recent {
            return;
        }
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_NOW,
            },
        };
        // One call by path (no open and close); an entry is never a symlink.
        let _ = rustix::fs::utimensat(
            &self.entries_dir,
            Self::entry_rel(key),
            &times,
            AtFlags::SYMLINK_NOFOLLOW,
        );
    }

    /// [`Store::lookup`] that writes nothing: no use mark, and an untrusted entry stays
    /// (planning and dry runs leave the cache as they found it).
    pub fn peek(&self, key: &str) -> Lookup {
        self.peek_dated(key).0
    }

    /// [`Store::peek`], and the entry's last use mark (for [`Store::mark_used`]).
    pub fn peek_dated(&self, key: &str) -> (Lookup, Option<SystemTime>) {
        self.peek_decoded(key, decode_entry)
    }

    /// [`Store::peek_dated`] for planning: a hit's fingerprint holds only the tools (see
    /// [`entry::decode_entry_slim`]), which is all a restore reads.
    pub fn peek_for_restore(&self, key: &str) -> (Lookup, Option<SystemTime>) {
        self.peek_decoded(key, entry::decode_entry_slim)
    }

    fn peek_decoded(
        &self,
        key: &str,
        decode: fn(&[u8]) -> Result<Entry, String>,
    ) -> (Lookup, Option<SystemTime>) {
        let opened = self.open_entry(key).and_then(|f| {
            // The mark costs a stat of the open file, where a mark itself writes an inode.
            let used = f.metadata()?.modified().ok();
            Ok((fsutil::read_parsed(f, decode)?, used))
        });
        let (decoded, used) = match opened {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (Lookup::Missing, None),
            Err(e) => {
                let why = format!("cannot read entry {}: {e}", &key[..12]);
                return (Lookup::Untrusted(why), None);
            }
        };
        let verdict = match decoded {
            Ok(entry) if entry.key != key => Err("entry names another key".to_string()),
            Ok(entry) => self.check_objects(&entry).map(|()| entry),
            Err(why) => Err(why),
        };
        match verdict {
            Ok(entry) => (Lookup::Hit(Box::new(entry)), used),
            Err(why) => {
                let why = format!("cache entry {} untrusted: {why}", &key[..12]);
                (Lookup::Untrusted(why), None)
            }
        }
    }

    fn open_entry(&self, key: &str) -> io::Result<File> {
        open_at(&self.entries_dir, Self::entry_rel(key))
    }

    fn check_objects(&self, entry: &Entry) -> Result<(), String> {
        use rustix::fs::{AtFlags, FileType};
        for (name, o) in &entry.outputs {
            let rel = Self::object_rel(&o.hash);
            match rustix::fs::statat(&self.objects_dir, rel, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(m) if FileType::from_raw_mode(m.st_mode) != FileType::RegularFile => {
                    return Err(format!("object for '{name}' is not a regular file"));
                }
                Ok(m) if m.st_size as u64 == o.size => {}
                Ok(m) => {
                    return Err(format!(
                        "object for '{name}' has {} bytes, expected {}",
                        m.st_size, o.size
                    ));
                }
                Err(_) => return Err(format!("object for '{name}' is missing")),
            }
        }
        Ok(())
    }

    /// Stores a copy of every file under `job_dir` in objects/ and writes the entry. The
    /// folder stays, for the caller to place ([`Store::move_into_place`]) or remove.
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
            // A small output already stored (an unchanged JSON, a file passed through)
            // is known by its hash alone: no copy is made only to be removed.
            let size = item.metadata().map_err(io::Error::other)?.len();
            if size <= SMALL_OUTPUT {
                let hash = hash_file(item.path())?;
                let dest = self.object_path(&hash);
                if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size) {
                    touched.insert(dest.parent().expect("object folder").to_path_buf());
                    outputs.insert(rel, OutFile { hash, size });
                    continue;
                }
            }
            // The store gets a private copy (a reflink where it can), never the job's
            // file itself: a process that still holds that file open cannot reach it.
            let snap = self
                .root
                .join("tmp")
                .join(format!(".object-{}", fsutil::unique_suffix()));
            let stored = (|| {
                fsutil::clone_or_copy(item.path(), &snap)?;
                let hash = hash_file(&snap)?;
                let size = fs::metadata(&snap)?.len();
                let dest = self.object_path(&hash);
                if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == size) {
                    // Already stored; its content was fsynced before it got its name,
                    // and its folder is synced below like a new object's (the process
                    // that stored it may have died before syncing it).
                    fs::remove_file(&snap)?;
                    touched.insert(dest.parent().expect("object folder").to_path_buf());
                } else {
                    File::open(&snap)?.sync_all()?;
                    // A damaged object is replaced by the rename itself, atomically: a
                    // job storing the same content at the same time, or placing from
                    // this object, never finds it missing. Only what a rename cannot
                    // replace (a folder) is removed first.
                    if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                        remove_any(&dest);
                    }
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
        // The objects are durable (each fsynced, then their folders), so the entry may
        // be published. It is renamed into place without an fsync of its own: a process
        // crash leaves it whole, and what a power cut could leave (no entry, or a torn
        // one that fails its checksum) is never trusted; the job just runs again.
        replace_atomic(&self.entry_path(key), &encode_entry(&entry))?;
        fault_point("commit:entry-written");
        Ok(entry)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for root in self
            .spare_views
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = fs::remove_dir_all(root);
        }
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
