//! The models folder: where installed models live, one lock for installers, and
//! atomic file writes.
//!
//! Where the folder is gets decided once, by [`ModelsDir::from_config`]: the
//! `VSUM_MODELS_DIR` environment variable, else the config's `models_dir`, else
//! `~/.cache/vsum/models`. Callers hand the result down; nothing else reads the
//! environment. Every file lands
//! through [`AtomicFile`] (temp name in the same folder, fsync, rename, fsync the
//! folder), so a crash or a second installer never leaves a half-written model under a
//! real name. Installers hold [`ModelsDir::lock`] while they update the manifest.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use vsum_engine::fsutil::{sync_dir, temp_beside};

use super::ModelError;

/// Environment variable that overrides the config's `models_dir`.
pub const ENV_DIR: &str = "VSUM_MODELS_DIR";

/// The models folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsDir {
    root: PathBuf,
}

impl ModelsDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ModelsDir { root: root.into() }
    }

    /// The one place the models folder is decided: `VSUM_MODELS_DIR` when set and not
    /// empty, else `configured` (the config's `models_dir`, already made absolute by
    /// the caller), else `~/.cache/vsum/models`.
    pub fn from_config(configured: Option<&Path>) -> Self {
        let env = std::env::var_os(ENV_DIR).filter(|d| !d.is_empty());
        ModelsDir::new(pick(
            env.map(PathBuf::from),
            configured,
            std::env::var_os("HOME"),
        ))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file in the folder.
    pub fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join("models.json")
    }

    /// Creates the folder if needed.
    pub fn create(&self) -> Result<(), ModelError> {
        fs::create_dir_all(&self.root).map_err(|e| {
            ModelError::new(format!(
                "cannot create the models folder {}: {e}",
                self.root.display()
            ))
            .hint(format!(
                "set `models_dir` in the config (or {ENV_DIR}) to a writable folder"
            ))
        })
    }

    /// Takes the installers' lock (blocks while another installer holds it).
    pub fn lock(&self) -> Result<File, ModelError> {
        self.create()?;
        let path = self.root.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ModelError::new(format!("cannot open {}: {e}", path.display())))?;
        f.lock()
            .map_err(|e| ModelError::new(format!("cannot lock {}: {e}", path.display())))?;
        Ok(f)
    }
}

/// The environment wins over the config, the config over the default under `home`.
fn pick(
    env: Option<PathBuf>,
    configured: Option<&Path>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if let Some(d) = env {
        return d;
    }
    if let Some(d) = configured.filter(|d| !d.as_os_str().is_empty()) {
        return d.to_path_buf();
    }
    let home = home
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("vsum").join("models")
}

/// A file being written under a temporary name beside its destination; it appears
/// under the real name only on [`AtomicFile::commit`]. Dropped uncommitted, the
/// temporary file is removed. Hashes (blake3) and counts what passes through.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    hasher: blake3::Hasher,
    size: u64,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> io::Result<Self> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        let tmp = temp_beside(dest);
        let f = File::create(&tmp)?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, f)),
            hasher: blake3::Hasher::new(),
            size: 0,
        })
    }

    /// The temporary file (complete up to the last flush), for checks before commit.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes, fsyncs and renames into place; returns (blake3 hex, size).
    pub fn commit(mut self) -> io::Result<(String, u64)> {
        let out = self.out.take().expect("not committed twice");
        let f = out.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&self.tmp, &self.dest)?;
        sync_dir(self.dest.parent().unwrap_or(Path::new(".")));
        Ok((self.hasher.finalize().to_hex().to_string(), self.size))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.as_mut().expect("open").write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("open").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_beats_config_beats_default() {
        let home = Some("/home/u".into());
        let conf = Path::new("/srv/models");
        assert_eq!(
            pick(Some("/env/m".into()), Some(conf), home.clone()),
            PathBuf::from("/env/m")
        );
        assert_eq!(pick(None, Some(conf), home.clone()), conf);
        assert_eq!(
            pick(None, None, home.clone()),
            PathBuf::from("/home/u/.cache/vsum/models")
        );
        assert_eq!(
            pick(None, Some(Path::new("")), home),
            PathBuf::from("/home/u/.cache/vsum/models")
        );
    }

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.bin");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"hello").unwrap();
        assert!(!dest.exists());
        let (hash, size) = f.commit().unwrap();
        assert_eq!(size, 5);
        assert_eq!(hash, blake3::hash(b"hello").to_hex().to_string());
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp left");
    }

    #[test]
    fn dropped_atomic_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.bin");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
