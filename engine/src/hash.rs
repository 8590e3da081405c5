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

const CHECK_SEP: &[u8] = b"\n#blake3:";

/// The stat cache's records, when its checksum holds.
fn read_checked(file: &Path) -> Option<HashMap<String, Remembered>> {
    let bytes = fs::read(file).ok()?;
    let at = bytes
        .windows(CHECK_SEP.len())
        .rposition(|w| w == CHECK_SEP)?;
    let (body, rest) = bytes.split_at(at);
    let sum = std::str::from_utf8(&rest[CHECK_SEP.len()..]).ok()?.trim();
    if blake3::hash(body).to_hex().as_str() != sum {
        return None;
    }
    serde_json::from_slice(body).ok()
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

    /// A hasher backed by a stat-cache file (a missing, unreadable or tampered file
    /// starts empty: every video is hashed again, never served another's hash).
    pub fn open(file: &Path) -> Self {
        let map = read_checked(file).unwrap_or_default();
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
        let mut merged: HashMap<String, Remembered> = read_checked(file).unwrap_or_default();
        merged.extend(
            self.map
                .lock()
                .expect("statcache")
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let mut bytes = serde_json::to_vec(&merged)?;
        let sum = blake3::hash(&bytes).to_hex();
        bytes.extend_from_slice(CHECK_SEP);
        bytes.extend_from_slice(sum.as_bytes());
        bytes.push(b'\n');
        write_atomic(file, &bytes)?;
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

    #[test]
    fn a_tampered_stat_cache_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.mp4");
        fs::write(&f, b"aaaa").unwrap();
        let cache = dir.path().join("statcache.json");
        let h = FileHasher::open(&cache);
        h.hash(&f).unwrap();
        h.save().unwrap();
        // Another video's hash written over this one's: the checksum no longer holds.
        let text = fs::read_to_string(&cache).unwrap();
        let forged = text.replace(&hash_bytes(b"aaaa"), &hash_bytes(b"other video"));
        fs::write(&cache, forged).unwrap();
        assert_eq!(
            FileHasher::open(&cache).hash(&f).unwrap(),
            hash_bytes(b"aaaa")
        );
    }
}
