//! Placing cached outputs in the output folder: copies (reflinks where possible) or,
//! opt-in, hard links to the read-only objects; the one link-or-copy routine that both
//! restoring a job's outputs and publishing batch files use.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::{Entry, OutFile, Placed, Stamp, Store};
use crate::config::LinkMode;
use crate::fsutil::{self, temp_beside};
use crate::safety;

impl Store {
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
        if let Some(stamps) = unchanged_copies(entry, dest, previous, placed, link) {
            return Ok(stamps);
        }
        let dest_there = safety::checked_metadata(root, dest)?.is_some_and(|m| m.is_dir());
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
        if !dest_there {
            fs::create_dir_all(dest)?;
        }
        let mut stamps = BTreeMap::new();
        for (rel, o) in &entry.outputs {
            if !safety::plain_relative(rel) {
                return Err(io::Error::other(format!(
                    "cache entry names an unsafe output path '{rel}'"
                )));
            }
            let obj = self.object_path(&o.hash);
            let target = dest.join(rel);
            let target_md = safety::checked_metadata(dest, &target)?;
            if let Some(md) = target_md {
                // Is the file there the object itself (a hard link to it)? A file with one
                // link never is, so an unchanged copy costs no look at the object.
                let is_object = || -> io::Result<bool> {
                    if md.nlink() == 1 {
                        return Ok(false);
                    }
                    let obj_md = fs::metadata(&obj)?;
                    Ok(md.ino() == obj_md.ino() && md.dev() == obj_md.dev())
                };
                let unchanged = match link {
                    LinkMode::Hardlink => is_object()?,
                    // A hard link from an older vsum becomes a copy.
                    LinkMode::Copy => as_placed(&md, rel, o, placed).is_some() && !is_object()?,
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
            place_file(&obj, &target, link)?;
            let md = fs::symlink_metadata(&target)?;
            stamps.insert(rel.clone(), Placed(o.hash.clone(), Stamp::of(&md)));
        }
        Ok(stamps)
    }

    /// Can the job's own folder become its new output folder `dest` whole (the
    /// cheapest placement: no folder made or removed, one rename)? Yes when `dest` is
    /// not there, the outputs are placed as copies, and each output in `job_dir` is a
    /// plain file.
    pub fn movable(
        &self,
        entry: &Entry,
        root: &Path,
        dest: &Path,
        job_dir: &Path,
        link: LinkMode,
    ) -> bool {
        link == LinkMode::Copy
            && !self.no_moves.load(std::sync::atomic::Ordering::Relaxed)
            && matches!(safety::checked_metadata(root, dest), Ok(None))
            && entry.outputs.keys().all(|rel| {
                safety::plain_relative(rel)
                    && fs::symlink_metadata(job_dir.join(rel)).is_ok_and(|m| m.is_file())
            })
    }

    /// Replaces each output in the job's folder with a copy of its object (0644, the
    /// user's to edit), ready to be moved into place ([`Store::move_into_place`]). Not
    /// the job's own file: a process the job left running (outside its process group)
    /// may still hold that one open and write into it later. Returns the stamps the
    /// copies keep through the move (size, mtime and inode), for the ref that must be
    /// on record before they are placed.
    pub fn copies_in(&self, entry: &Entry, job_dir: &Path) -> io::Result<BTreeMap<String, Placed>> {
        let mut stamps = BTreeMap::new();
        for (rel, o) in &entry.outputs {
            let target = job_dir.join(rel);
            let tmp = temp_beside(&target);
            let made = fsutil::clone_or_copy(&self.object_path(&o.hash), &tmp)
                .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)))
                .and_then(|()| fs::rename(&tmp, &target));
            if made.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            made?;
            let md = fs::symlink_metadata(&target)?;
            stamps.insert(rel.clone(), Placed(o.hash.clone(), Stamp::of(&md)));
        }
        Ok(stamps)
    }

    /// Renames the job's folder, made ready by [`Store::copies_in`], to `dest`. Never
    /// replaces anything at `dest`: a folder that appeared there meanwhile fails the
    /// move, and the caller places copies instead.
    pub fn move_into_place(&self, job_dir: &Path, dest: &Path) -> io::Result<()> {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p)?;
        }
        renameat_with(CWD, job_dir, CWD, dest, RenameFlags::NOREPLACE).map_err(|e| {
            if e == rustix::io::Errno::XDEV {
                self.no_moves
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            io::Error::from(e)
        })
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
}

/// A cached rerun's usual case: every output is still the copy vsum placed (one link,
/// and the size, mtime and inode the ref recorded) and nothing else of vsum's is to be
/// removed. Nothing is written then, so no path needs walking for symlinks: one
/// `lstat` per file. `None` when anything differs; `materialize` then does it all.
fn unchanged_copies(
    entry: &Entry,
    dest: &Path,
    previous: &[String],
    placed: &BTreeMap<String, Placed>,
    link: LinkMode,
) -> Option<BTreeMap<String, Placed>> {
    if link != LinkMode::Copy
        || placed.len() != entry.outputs.len()
        || previous.iter().any(|rel| !entry.outputs.contains_key(rel))
    {
        return None;
    }
    let mut stamps = BTreeMap::new();
    for (rel, o) in &entry.outputs {
        let md = fs::symlink_metadata(dest.join(rel)).ok()?;
        let now = as_placed(&md, rel, o, placed).filter(|_| md.nlink() == 1)?;
        stamps.insert(rel.clone(), now);
    }
    Some(stamps)
}

/// The stamp of `md`, the file at output `rel`'s place, when it is still the copy vsum
/// placed there: a plain file of the stored size with the size, mtime and inode the ref
/// recorded (`placed`).
fn as_placed(
    md: &fs::Metadata,
    rel: &str,
    o: &OutFile,
    placed: &BTreeMap<String, Placed>,
) -> Option<Placed> {
    let now = Placed(o.hash.clone(), Stamp::of(md));
    (md.is_file() && md.len() == o.size && placed.get(rel) == Some(&now)).then_some(now)
}

/// Puts a copy of `src` at `target` (a reflink where the filesystem has one; the copy
/// is writable, for the user to edit), or with [`LinkMode::Hardlink`] a hard link to it
/// (a copy where linking fails). Atomic: made beside `target` under a temporary name,
/// then renamed over it. A temporary file that turns out to be the very file already at
/// `target` (two hard links to one inode: rename(2) then does nothing and would leave
/// the temporary name behind) is removed instead.
pub fn place_file(src: &Path, target: &Path, link: LinkMode) -> io::Result<()> {
    let tmp = temp_beside(target);
    let made = match link {
        LinkMode::Hardlink => fs::hard_link(src, &tmp).or_else(|_| fs::copy(src, &tmp).map(|_| ())),
        LinkMode::Copy => fsutil::clone_or_copy(src, &tmp).and_then(|()| {
            // Objects are read-only; the user's copy is theirs to edit.
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
        }),
    };
    let placed = made.and_then(|()| {
        if same_file(&tmp, target) {
            fs::remove_file(&tmp)
        } else {
            fs::rename(&tmp, target)
        }
    });
    if placed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    placed
}

/// Are `a` and `b` the same file (one inode), not following a final symlink?
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

impl Store {
    /// Puts a read-only view of the entry `key`'s outputs in `dest`, a new folder (see
    /// [`stage_file`] for how each file gets there). What a job reads
    /// its upstream from, so another run rewriting the output folder cannot reach it.
    pub fn stage_entry(&self, key: &str, dest: &Path) -> io::Result<()> {
        let entry = self.read_entry(key).map_err(io::Error::other)?;
        fs::create_dir_all(dest)?;
        for (rel, o) in &entry.outputs {
            if !safety::plain_relative(rel) {
                return Err(io::Error::other(format!(
                    "cache entry names an unsafe output path '{rel}'"
                )));
            }
            let target = dest.join(rel);
            if let Some(p) = target.parent() {
                fs::create_dir_all(p)?;
            }
            self.stage_file(&self.object_path(&o.hash), &target)?;
        }
        Ok(())
    }
}

impl Store {
    /// A read-only view of the object `obj` at `target`: a hard link to the (read-only)
    /// object, which makes no file; or, where this process may write to read-only files
    /// (root) and could write through a link into the object, an independent copy (a
    /// reflink where the filesystem has them). Which of the two is learned once.
    fn stage_file(&self, obj: &Path, target: &Path) -> io::Result<()> {
        if self.links_writable.get() != Some(&true) && fs::hard_link(obj, target).is_ok() {
            let writable = *self
                .links_writable
                .get_or_init(|| rustix::fs::access(target, rustix::fs::Access::WRITE_OK).is_ok());
            if !writable {
                return Ok(());
            }
            fs::remove_file(target)?;
        }
        fsutil::clone_or_copy(obj, target)?;
        fs::set_permissions(target, fs::Permissions::from_mode(0o444))
    }
}
