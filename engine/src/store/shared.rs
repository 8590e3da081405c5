//! What another cache in front of or behind this one needs: an entry's raw bytes and
//! objects to upload, and a way to adopt an entry made elsewhere (its objects
//! downloaded into `tmp/`, checked against their blake3, then the entry written last),
//! so a shared cache (S3, `vsum-distributed`) keeps the local store's rules.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::entry::{decode_entry, encode_entry};
use super::{Entry, Store, remove_any};
use crate::fsutil::{self, replace_atomic, sync_dir};
use crate::hash::hash_file;

impl Entry {
    /// The entry as the cache stores it (checksummed JSON), for another cache.
    pub fn encode(&self) -> Vec<u8> {
        encode_entry(self)
    }

    /// An entry from another cache: its checksum must hold and it must name `key`.
    pub fn decode(bytes: &[u8], key: &str) -> Result<Entry, String> {
        let e = decode_entry(bytes)?;
        if e.key != key {
            return Err("entry names another key".into());
        }
        Ok(e)
    }
}

impl Store {
    /// The stored (read-only) file of an object.
    pub fn object_file(&self, hash: &str) -> PathBuf {
        self.object_path(hash)
    }

    /// A fresh path under the cache's `tmp/` (same filesystem as the objects) for a
    /// download that [`Store::adopt`] then moves into place.
    pub fn tmp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!(".download-{}", fsutil::unique_suffix()))
    }

    /// The hashes of `entry`'s objects this store lacks (or holds damaged).
    pub fn missing_objects(&self, entry: &Entry) -> Vec<String> {
        let mut out: Vec<String> = entry
            .outputs
            .values()
            .filter(|o| {
                !fs::symlink_metadata(self.object_path(&o.hash))
                    .is_ok_and(|m| m.is_file() && m.len() == o.size)
            })
            .map(|o| o.hash.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Takes in an entry made elsewhere. `files` holds a downloaded copy (from
    /// [`Store::tmp_path`]) of each object [`Store::missing_objects`] named; each is
    /// hashed again (a copy that does not match is refused), made durable and read-only,
    /// and moved into `objects/`; the entry is written last.
    pub fn adopt(&self, entry: &Entry, files: BTreeMap<String, PathBuf>) -> io::Result<()> {
        let mut touched = Vec::new();
        let mut result = Ok(());
        for (hash, file) in &files {
            let stored = (|| {
                let got = hash_file(file)?;
                if got != *hash {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("downloaded object {} hashes to {}", &hash[..12], &got[..12]),
                    ));
                }
                fs::File::open(file)?.sync_all()?;
                fs::set_permissions(file, fs::Permissions::from_mode(0o444))?;
                let dest = self.object_path(hash);
                remove_any(&dest);
                let parent = dest.parent().expect("object folder");
                fs::create_dir_all(parent)?;
                fs::rename(file, &dest)?;
                touched.push(parent.to_path_buf());
                Ok(())
            })();
            if stored.is_err() {
                let _ = fs::remove_file(file);
                if result.is_ok() {
                    result = stored;
                }
            }
        }
        result?;
        for dir in touched {
            sync_dir(&dir);
        }
        self.check_objects(entry).map_err(io::Error::other)?;
        replace_atomic(&self.entry_path(&entry.key), &encode_entry(entry))
    }

    /// Whether a trusted entry for `key` is here (writes nothing).
    pub fn has(&self, key: &str) -> bool {
        matches!(self.peek(key), super::Lookup::Hit(_))
    }
}

/// Removes a download left behind (a failed adopt removes its own).
pub fn discard(path: &Path) {
    let _ = fs::remove_file(path);
}
