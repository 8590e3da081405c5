//! What the cache holds about a job: its entry (outputs, fingerprint), the refs that
//! record what vsum placed where, and the checksummed encoding of an entry.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fingerprint::{Fingerprint, SCHEMA, outputs_digest};

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
    /// An entry exists but cannot be trusted (removed by [`Store::lookup`], left by
    /// [`Store::peek`]).
    Untrusted(String),
}

const CHECK_SEP: &[u8] = b"\n#blake3:";

pub(super) fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(e).expect("entry serializes");
    let sum = blake3::hash(&body).to_hex();
    body.extend_from_slice(CHECK_SEP);
    body.extend_from_slice(sum.as_bytes());
    body.push(b'\n');
    body
}

/// The entry's JSON, once its checksum is checked.
fn checked_body(bytes: &[u8]) -> Result<&[u8], String> {
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
    Ok(body)
}

fn schema_checked(e: Entry) -> Result<Entry, String> {
    if e.schema != SCHEMA {
        return Err(format!("schema {} (this vsum uses {SCHEMA})", e.schema));
    }
    Ok(e)
}

pub(super) fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    let body = checked_body(bytes)?;
    schema_checked(serde_json::from_slice(body).map_err(|e| e.to_string())?)
}

/// [`decode_entry`] for a restore, which needs the outputs, the key and the tools: the
/// fingerprint's params, inputs and upstream digests are skipped, not built (they are
/// most of an entry), and left empty.
pub(super) fn decode_entry_slim(bytes: &[u8]) -> Result<Entry, String> {
    #[derive(Deserialize)]
    struct SlimFingerprint {
        schema: u32,
        kind: String,
        kind_version: u32,
        tools: BTreeMap<String, String>,
    }
    #[derive(Deserialize)]
    struct SlimEntry {
        schema: u32,
        key: String,
        stage: String,
        kind: String,
        video: Option<String>,
        outputs: BTreeMap<String, OutFile>,
        fingerprint: SlimFingerprint,
        duration_ms: u64,
        created: u64,
    }
    let body = checked_body(bytes)?;
    let e: SlimEntry = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    schema_checked(Entry {
        schema: e.schema,
        key: e.key,
        stage: e.stage,
        kind: e.kind,
        video: e.video,
        outputs: e.outputs,
        fingerprint: Fingerprint {
            schema: e.fingerprint.schema,
            kind: e.fingerprint.kind,
            kind_version: e.fingerprint.kind_version,
            params: serde_json::Value::Null,
            inputs: BTreeMap::new(),
            upstream: BTreeMap::new(),
            tools: e.fingerprint.tools,
        },
        duration_ms: e.duration_ms,
        created: e.created,
    })
}
