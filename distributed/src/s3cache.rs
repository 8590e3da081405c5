//! The shared cache behind every machine's local store: S3-compatible object storage
//! with the local store's layout and rules. Blobs (`cas/<blake3>`) go up first and are
//! idempotent; an entry (`entries/<key>`, the local store's checksummed entry) is
//! created last with a conditional put (`PutMode::Create`, If-None-Match), so of two
//! machines that computed the same job exactly one entry wins and the other discards
//! its copy. A reader checks every blob's blake3 as it downloads: a missing or corrupt
//! blob, or an entry that fails its checksum, is a miss (recomputed), never a failed
//! run. `failures/<key>` records a job a worker gave up on.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use vsum_engine::store::{Entry, Lookup, Store, discard};

/// Above this size a blob goes up in parts (a video need not fit in memory).
const MULTIPART_ABOVE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "bad --cache '{0}': expected s3://BUCKET or s3://BUCKET/PREFIX (endpoint and credentials come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; AWS_ALLOW_HTTP=true for a plain-HTTP endpoint)"
    )]
    BadUrl(String),
    #[error("shared cache {0}: {1}")]
    Store(String, object_store::Error),
    #[error("local cache: {0}")]
    Local(String),
}

/// Why a job was given up on, as a worker recorded it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Failure {
    pub key: String,
    pub job: String,
    pub message: String,
    pub hint: Option<String>,
    pub bad_input: bool,
    /// Deliveries of the job when it was given up on.
    pub attempts: u64,
    pub worker: String,
}

/// Whether this machine's entry became the shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Won,
    /// Another machine's entry was there first; ours was discarded.
    Lost,
}

#[derive(Clone)]
pub struct S3Cache {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

impl std::fmt::Debug for S3Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Cache({})", self.url)
    }
}

impl S3Cache {
    /// Opens `s3://BUCKET[/PREFIX]`; endpoint, region and credentials from the
    /// environment (as the AWS SDKs read them).
    pub fn open(url: &str) -> Result<S3Cache, CacheError> {
        Self::open_with(url, &[])
    }

    /// [`S3Cache::open`] with settings that override the environment's, as
    /// `(name, value)` pairs named like the variables (`aws_endpoint_url`,
    /// `aws_access_key_id`, `aws_allow_http`, ...).
    pub fn open_with(url: &str, settings: &[(&str, &str)]) -> Result<S3Cache, CacheError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| CacheError::BadUrl(url.into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(CacheError::BadUrl(url.into()));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (k, v) in settings {
            let key = k.parse().map_err(|e| CacheError::Store(url.into(), e))?;
            b = b.with_config(key, *v);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            b = b.with_region("us-east-1");
        }
        let store = b.build().map_err(|e| CacheError::Store(url.into(), e))?;
        Ok(S3Cache {
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            url: url.to_string(),
        })
    }

    fn path(&self, dir: &str, name: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(format!("{dir}/{name}"))
        } else {
            ObjPath::from(format!("{}/{dir}/{name}", self.prefix))
        }
    }

    fn err(&self, e: object_store::Error) -> CacheError {
        CacheError::Store(self.url.clone(), e)
    }

    pub fn blob_path(&self, hash: &str) -> ObjPath {
        self.path("cas", hash)
    }

    pub fn entry_path(&self, key: &str) -> ObjPath {
        self.path("entries", key)
    }

    async fn exists(&self, p: &ObjPath) -> Result<bool, CacheError> {
        match self.store.head(p).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    pub async fn has_blob(&self, hash: &str) -> Result<bool, CacheError> {
        self.exists(&self.blob_path(hash)).await
    }

    pub async fn has_entry(&self, key: &str) -> Result<bool, CacheError> {
        self.exists(&self.entry_path(key)).await
    }

    /// Uploads `file` as the blob `hash` unless it is there (content-addressed, so
    /// uploading twice is harmless).
    pub async fn put_blob(&self, hash: &str, file: &Path) -> Result<(), CacheError> {
        if self.has_blob(hash).await? {
            return Ok(());
        }
        let p = self.blob_path(hash);
        let local = |e: std::io::Error| CacheError::Local(format!("{}: {e}", file.display()));
        let size = tokio::fs::metadata(file).await.map_err(local)?.len();
        if size <= MULTIPART_ABOVE {
            let bytes = tokio::fs::read(file).await.map_err(local)?;
            self.store
                .put(&p, PutPayload::from(bytes))
                .await
                .map_err(|e| self.err(e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(&p)
            .await
            .map_err(|e| self.err(e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, 16 << 20);
        let mut f = tokio::fs::File::open(file).await.map_err(local)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            use tokio::io::AsyncReadExt;
            let n = f.read(&mut buf).await.map_err(local)?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(4).await.map_err(|e| self.err(e))?;
            w.write(&buf[..n]);
        }
        w.finish().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Downloads the blob `hash` into `dest`, checking its blake3 on the way. `false`
    /// (and no file) when the blob is missing or does not match: a miss.
    pub async fn get_blob(&self, hash: &str, dest: &Path) -> Result<bool, CacheError> {
        let res = match self.store.get(&self.blob_path(hash)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(self.err(e)),
        };
        let local = |e: std::io::Error| CacheError::Local(format!("{}: {e}", dest.display()));
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(local)?;
        }
        let mut out = std::fs::File::create(dest).map_err(local)?;
        let mut hasher = blake3::Hasher::new();
        let mut stream = res.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    discard(dest);
                    return Err(self.err(e));
                }
            };
            hasher.update(&chunk);
            if let Err(e) = out.write_all(&chunk) {
                discard(dest);
                return Err(local(e));
            }
        }
        if hasher.finalize().to_hex().as_str() != hash {
            tracing::warn!(
                blob = hash,
                "shared cache blob is corrupt: treated as a miss"
            );
            discard(dest);
            return Ok(false);
        }
        Ok(true)
    }

    /// The shared entry for `key`; `None` when absent or when it fails its checksum.
    pub async fn get_entry(&self, key: &str) -> Result<Option<Entry>, CacheError> {
        let bytes = match self.store.get(&self.entry_path(key)).await {
            Ok(r) => r.bytes().await.map_err(|e| self.err(e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        match Entry::decode(&bytes, key) {
            Ok(e) => Ok(Some(e)),
            Err(why) => {
                tracing::warn!(key, why, "shared cache entry untrusted: treated as a miss");
                Ok(None)
            }
        }
    }

    /// Creates the entry unless one exists: exactly one of racing creators wins.
    pub async fn create_entry(&self, entry: &Entry) -> Result<Created, CacheError> {
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(
                &self.entry_path(&entry.key),
                PutPayload::from(entry.encode()),
                opts,
            )
            .await
        {
            Ok(_) => Ok(Created::Won),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(Created::Lost),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Removes an entry (e.g. one whose blob is gone, before it is recomputed).
    pub async fn delete_entry(&self, key: &str) -> Result<(), CacheError> {
        match self.store.delete(&self.entry_path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    pub async fn put_failure(&self, f: &Failure) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec_pretty(f).expect("failure serializes");
        self.store
            .put(&self.path("failures", &f.key), PutPayload::from(bytes))
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn get_failure(&self, key: &str) -> Result<Option<Failure>, CacheError> {
        match self.store.get(&self.path("failures", key)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.err(e))?;
                Ok(serde_json::from_slice(&bytes).ok())
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    pub async fn delete_failure(&self, key: &str) -> Result<(), CacheError> {
        match self.store.delete(&self.path("failures", key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Deletes a blob (gc deletes entries before blobs; tests delete one to see the
    /// job recomputed).
    pub async fn delete_blob(&self, hash: &str) -> Result<(), CacheError> {
        match self.store.delete(&self.blob_path(hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Shares the local entry `key`: its blobs first, then the entry (conditional).
    pub async fn share(&self, local: &Store, key: &str) -> Result<Created, CacheError> {
        let entry = match local.peek(key) {
            Lookup::Hit(e) => e,
            Lookup::Missing => {
                return Err(CacheError::Local(format!("no entry {key} to share")));
            }
            Lookup::Untrusted(why) => return Err(CacheError::Local(why)),
        };
        let mut hashes: Vec<&String> = entry.outputs.values().map(|o| &o.hash).collect();
        hashes.sort();
        hashes.dedup();
        for h in hashes {
            self.put_blob(h, &local.object_file(h)).await?;
        }
        self.create_entry(&entry).await
    }

    /// Brings the shared entry `key` into the local store (blobs checked, entry last).
    /// `None` is a miss: no entry, an untrusted one, or a blob missing or corrupt.
    pub async fn fetch(&self, local: &Store, key: &str) -> Result<Option<Entry>, CacheError> {
        let Some(entry) = self.get_entry(key).await? else {
            return Ok(None);
        };
        let mut files = BTreeMap::new();
        for hash in local.missing_objects(&entry) {
            let tmp = local.tmp_path();
            match self.get_blob(&hash, &tmp).await {
                Ok(true) => {
                    files.insert(hash, tmp);
                }
                other => {
                    for f in files.values() {
                        discard(f);
                    }
                    if !other? {
                        tracing::warn!(
                            key,
                            blob = hash,
                            "shared entry's blob is missing or corrupt: a miss"
                        );
                    }
                    return Ok(None);
                }
            }
        }
        local
            .adopt(&entry, files)
            .map_err(|e| CacheError::Local(format!("cannot adopt entry {key}: {e}")))?;
        Ok(Some(entry))
    }
}

impl S3Cache {
    /// Whether the shared entry `key` is whole: it decodes, and every blob it names is
    /// there (sizes are checked; contents are checked by whoever downloads them).
    pub async fn complete(&self, key: &str) -> Result<bool, CacheError> {
        let Some(entry) = self.get_entry(key).await? else {
            return Ok(false);
        };
        for o in entry.outputs.values() {
            match self.store.head(&self.blob_path(&o.hash)).await {
                Ok(m) if m.size == o.size => {}
                Ok(_) | Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(true)
    }
}

impl S3Cache {
    /// The names under `dir` (`cas`, `entries` or `failures`).
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, CacheError> {
        let mut out: Vec<String> = self
            .list_meta(dir)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        out.sort();
        Ok(out)
    }
}

/// What a shared-cache gc removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub entries_removed: usize,
    pub entries_kept: usize,
    pub blobs_removed: usize,
    pub blobs_kept: usize,
}

impl S3Cache {
    /// Removes the entries (and failure records) last written before `cutoff`, then
    /// the blobs no remaining entry names that are also older than `cutoff` (a younger
    /// one may belong to an entry being made, or be a video just shared). Entries go
    /// before blobs, so a reader never trusts an entry whose blob went; and a race with
    /// a running job is harmless: an entry whose blob is gone is a miss, recomputed.
    pub async fn gc(&self, cutoff: std::time::SystemTime) -> Result<GcReport, CacheError> {
        let cutoff = cutoff
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut report = GcReport::default();
        let mut keep = std::collections::BTreeSet::new();
        for (name, modified) in self.list_meta("entries").await? {
            if modified < cutoff {
                self.delete_entry(&name).await?;
                report.entries_removed += 1;
            } else {
                report.entries_kept += 1;
                if let Some(e) = self.get_entry(&name).await? {
                    keep.extend(e.outputs.values().map(|o| o.hash.clone()));
                }
            }
        }
        for (name, modified) in self.list_meta("failures").await? {
            if modified < cutoff {
                self.delete_failure(&name).await?;
            }
        }
        for (name, modified) in self.list_meta("cas").await? {
            if keep.contains(&name) || modified >= cutoff {
                report.blobs_kept += 1;
            } else {
                self.delete_blob(&name).await?;
                report.blobs_removed += 1;
            }
        }
        Ok(report)
    }

    /// The names under `dir` with their last write (Unix seconds).
    async fn list_meta(&self, dir: &str) -> Result<Vec<(String, i64)>, CacheError> {
        let prefix = self.path(dir, "");
        let prefix = ObjPath::from(prefix.as_ref().trim_end_matches('/'));
        let mut out = Vec::new();
        let mut s = self.store.list(Some(&prefix));
        while let Some(m) = s.next().await {
            let m = m.map_err(|e| self.err(e))?;
            if let Some(name) = m.location.filename() {
                out.push((name.to_string(), m.last_modified.timestamp()));
            }
        }
        Ok(out)
    }
}
