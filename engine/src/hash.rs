//! Content hashing with a stat cache, so a cached rerun never re-reads gigabytes.
//!
//! A source file's blake3 is remembered against (size, mtime, ctime, inode). When all
//! four match, the remembered hash is used; anything else re-hashes the file. The stat
//! cache is a local index only: it is never part of a key.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

/// blake3 of a file's content, hex.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap(path)?;
    Ok(h.finalize().to_hex().to_string())
}

pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl Stamp {
    fn of(md: &fs::Metadata) -> Self {
        Stamp {
            size: md.len(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    stamp: Stamp,
    hash: String,
}

/// Hashes files, remembering results by stat stamp. Thread-safe.
#[derive(Debug)]
pub struct FileHasher {
    file: Option<PathBuf>,
    map: Mutex<HashMap<String, Remembered>>,
    dirty: Mutex<bool>,
}

fn path_id(path: &Path) -> String {
    blake3::hash(path.as_os_str().as_bytes()).to_hex()[..32].to_string()
}

impl FileHasher {
    /// A hasher that remembers only for its own lifetime.
    pub fn in_memory() -> Self {
        FileHasher {
            file: None,
            map: Mutex::new(HashMap::new()),
            dirty: Mutex::new(false),
        }
    }

    /// A hasher backed by a stat-cache file (a missing or unreadable file starts empty).
    pub fn open(file: &Path) -> Self {
        let map = fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        FileHasher {
            file: Some(file.to_path_buf()),
            map: Mutex::new(map),
            dirty: Mutex::new(false),
        }
    }

    /// The blake3 of `path`, from the stat cache when its stamp is unchanged.
    pub fn hash(&self, path: &Path) -> io::Result<String> {
        let abs = std::path::absolute(path)?;
        let md = fs::metadata(&abs)?;
        if !md.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let stamp = Stamp::of(&md);
        let id = path_id(&abs);
        if let Some(r) = self.map.lock().expect("statcache").get(&id)
            && r.stamp == stamp
        {
            return Ok(r.hash.clone());
        }
        let hash = hash_file(&abs)?;
        // Only remember the hash if the file did not change while we read it.
        let after = fs::metadata(&abs).map(|m| Stamp::of(&m)).ok();
        if after == Some(stamp) {
            self.map.lock().expect("statcache").insert(
                id,
                Remembered {
                    stamp,
                    hash: hash.clone(),
                },
            );
            *self.dirty.lock().expect("statcache") = true;
        }
        Ok(hash)
    }

    /// Persists the stat cache atomically (merging what another process may have saved).
    pub fn save(&self) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !*self.dirty.lock().expect("statcache") {
            return Ok(());
        }
        let mut merged: HashMap<String, Remembered> = fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        merged.extend(
            self.map
                .lock()
                .expect("statcache")
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        write_atomic(file, &serde_json::to_vec(&merged)?)?;
        *self.dirty.lock().expect("statcache") = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_file_is_rehashed_and_unchanged_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.mp4");
        fs::write(&f, b"aaaa").unwrap();
        let cache = dir.path().join("statcache.json");
        let h = FileHasher::open(&cache);
        let first = h.hash(&f).unwrap();
        assert_eq!(first, hash_bytes(b"aaaa"));
        h.save().unwrap();

        let h2 = FileHasher::open(&cache);
        assert_eq!(h2.hash(&f).unwrap(), first);
        fs::write(&f, b"bbbbb").unwrap();
        assert_eq!(h2.hash(&f).unwrap(), hash_bytes(b"bbbbb"));
    }
}
