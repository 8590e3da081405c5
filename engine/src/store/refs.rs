//! Refs (what vsum placed for a video and stage, and where) and the record of
//! published files; reading entries and keys for the inspection commands.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::{Entry, Ref, Store, decode_entry, open_at};
use crate::fsutil::{self, replace_atomic, write_atomic};

impl Store {
    /// A ref's path relative to `refs/` (see [`Store::refs_dir`]).
    fn ref_rel(video_id: &str, stage: &str) -> PathBuf {
        Path::new(video_id).join(stage)
    }

    fn ref_path(&self, video_id: &str, stage: &str) -> PathBuf {
        self.root.join("refs").join(Self::ref_rel(video_id, stage))
    }

    /// Remembers the key last used for a video (or `_batch`) and stage, and the files
    /// placed in which output folder. Atomic but not fsynced: the files it describes are
    /// not fsynced either, and a ref lost or torn by a power cut reads as no ref (or an
    /// unknown key), so the outputs are placed again and nothing wrong is trusted.
    pub fn set_ref(&self, video_id: &str, stage: &str, r: &Ref) -> io::Result<()> {
        let p = self.ref_path(video_id, stage);
        let bytes = serde_json::to_vec(r).map_err(io::Error::other)?;
        if fs::read(&p).ok().as_deref() == Some(bytes.as_slice()) {
            return Ok(());
        }
        replace_atomic(&p, &bytes)
    }

    /// The ref of a video and stage. Refs of older vsum versions hold a bare key.
    pub fn read_ref(&self, video_id: &str, stage: &str) -> Option<Ref> {
        let f = open_at(&self.refs_dir, Self::ref_rel(video_id, stage)).ok()?;
        fsutil::read_parsed(f, parse_ref).ok()?.ok()
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
}

/// A ref's bytes, or `Err` for a ref that is none: torn by a power cut (empty, zeros),
/// or cut short. Refs of older vsum versions hold a bare key.
fn parse_ref(bytes: &[u8]) -> Result<Ref, ()> {
    let text = std::str::from_utf8(bytes).map_err(|_| ())?.trim();
    let r: Ref = if text.starts_with('{') {
        serde_json::from_str(text).map_err(|_| ())?
    } else {
        Ref {
            key: text.to_string(),
            ..Ref::default()
        }
    };
    let is_key = r.key.len() == 64 && r.key.bytes().all(|b| b.is_ascii_hexdigit());
    if is_key { Ok(r) } else { Err(()) }
}
