//! Placing a job's cached outputs where the user sees them: the stage folder (replacing
//! only what vsum placed there before, as recorded in the job's ref) and a batch
//! stage's `publish:` files at the top of the output folder (never over a file vsum did
//! not write). Both go through the store's one link-or-copy routine.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::{JobRecord, Shared};
use crate::events::{Event, Outcome};
use crate::graph::JobNode;
use crate::safety;
use crate::store::{Entry, Ref, place_file};

impl Shared<'_> {
    /// Places a finished (or cached) entry's outputs in the job's output folder,
    /// replacing only the files vsum placed there before, and publishes batch files.
    /// `fresh`, the folder the job just made them in, may itself become the output
    /// folder. Returns the outputs' digest, or `None` after recording the failure in
    /// `record`.
    pub(super) fn publish(
        &self,
        job: JobNode,
        entry: &Entry,
        record: &mut JobRecord,
        fresh: Option<&Path>,
    ) -> Option<String> {
        let dest = self.out_folder(job);
        let ref_id = self.ref_id(job);
        let stage = &self.stage(job).id;
        let old = self.store.read_ref(&ref_id, stage);
        let folder = Ref::folder_id(&dest);
        let previous: Vec<String> = match &old {
            Some(r) if r.dest.as_deref() == Some(folder.as_str()) => r.files.clone(),
            // A ref of an older vsum: what that entry placed (its outputs).
            Some(r) if r.dest.is_none() => self
                .store
                .read_entry(&r.key)
                .map(|e| e.outputs.keys().cloned().collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        // Stamps of the files as vsum placed them here: unchanged ones are not copied again.
        let stamps = match &old {
            Some(r) if r.dest.as_deref() == Some(folder.as_str()) => r.stamps.clone(),
            _ => BTreeMap::new(),
        };
        let files: Vec<String> = entry.outputs.keys().cloned().collect();
        // A new output folder is the job's own folder, renamed, holding copies of the
        // objects. The ref goes on record first, with the stamps the copies keep: a
        // crash before the rename leaves a ref whose files are missing, which the next
        // run places again.
        if let Some(job_dir) = fresh
            && self
                .store
                .movable(entry, &self.output_dir, &dest, job_dir, self.config.link)
            && let Ok(stamps) = self.store.copies_in(entry, job_dir)
        {
            let moved = Ref {
                key: entry.key.clone(),
                dest: Some(folder.clone()),
                files: files.clone(),
                stamps,
            };
            if self.store.set_ref(&ref_id, stage, &moved).is_ok()
                && self.store.move_into_place(job_dir, &dest).is_ok()
            {
                return self.published(job, &dest, record, entry);
            }
        }
        let mut placed = Ref {
            key: entry.key.clone(),
            dest: Some(folder),
            files: previous.clone(),
            stamps: BTreeMap::new(),
        };
        // On record before anything is placed: a crash midway leaves every file vsum
        // may have placed known, so a later cleanup can still remove it.
        placed
            .files
            .extend(files.iter().filter(|f| !previous.contains(f)).cloned());
        let result = (if placed.files == previous {
            Ok(())
        } else {
            self.store.set_ref(&ref_id, stage, &placed)
        })
        .and_then(|()| {
            self.store.materialize(
                entry,
                &self.output_dir,
                &dest,
                &previous,
                &stamps,
                self.config.link,
            )
        });
        match result {
            Ok(stamps) => placed.stamps = stamps,
            Err(e) => {
                record.outcome = Outcome::Failed;
                record.error = Some(format!("cannot write outputs into {}: {e}", dest.display()));
                record.hint = Some("check that the output folder is writable and has space; the result is cached, so a rerun only restores it".into());
                return None;
            }
        }
        placed.files = files;
        // Unchanged (a cached rerun, nothing moved): no need to read it again to see so.
        if old.as_ref() != Some(&placed) {
            let _ = self.store.set_ref(&ref_id, stage, &placed);
        }
        self.published(job, &dest, record, entry)
    }

    /// The end of [`Shared::publish`], once the stage folder is in place: the batch
    /// stage's `publish:` files.
    fn published(
        &self,
        job: JobNode,
        dest: &Path,
        record: &mut JobRecord,
        entry: &Entry,
    ) -> Option<String> {
        if let Err(e) = self.publish_files(job, dest) {
            record.outcome = Outcome::Failed;
            record.error = Some(e);
            record.hint = Some(
                "the stage's own outputs are in place and cached; a rerun only publishes".into(),
            );
            return None;
        }
        Some(entry.digest())
    }

    /// Copies a batch stage's `publish:` files to the top of the output folder. A file
    /// already there is replaced only when vsum wrote it (its content is what vsum last
    /// published, or a link to a cache object): the user's own INDEX.md stays.
    fn publish_files(&self, job: JobNode, dest: &Path) -> Result<(), String> {
        for name in &self.stage(job).publish {
            let src = dest.join(name);
            if !src.is_file() {
                self.events.emit(Event::Warning {
                    message: format!(
                        "stage '{}' did not produce '{name}', listed in `publish:`",
                        self.stage(job).id
                    ),
                });
                continue;
            }
            let target = self.output_dir.join(name);
            let shown = target.display();
            let fail = |e: std::io::Error| format!("cannot publish {shown}: {e}");
            safety::no_symlink_below(&self.output_dir, &target).map_err(fail)?;
            let new_hash = crate::hash::hash_file(&src).map_err(fail)?;
            match fs::symlink_metadata(&target) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(fail(e)),
                Ok(md) if !md.is_file() => {
                    return Err(format!(
                        "cannot publish {shown}: something that is not a regular file is there, and vsum did not put it there; move it away"
                    ));
                }
                Ok(_) => {
                    let cur = crate::hash::hash_file(&target).map_err(fail)?;
                    let ours = cur == new_hash
                        || self.store.published_hash(&self.output_dir, name).as_deref()
                            == Some(cur.as_str())
                        || self.store.is_object_link(&target, &cur);
                    if !ours {
                        return Err(format!(
                            "not publishing {shown}: a file vsum did not write is there, and vsum never overwrites one; move it away, or give `output:` a folder of its own"
                        ));
                    }
                    if cur == new_hash && !self.store.is_object_link(&target, &cur) {
                        self.store
                            .set_published(&self.output_dir, name, &new_hash)
                            .map_err(fail)?;
                        continue;
                    }
                }
            }
            // The same link-or-copy as the stage folder: with the default (copies), an
            // edit of the published file never reaches the cache.
            self.store
                .set_published(&self.output_dir, name, &new_hash)
                .and_then(|()| place_file(&src, &target, self.config.link))
                .map_err(fail)?;
        }
        Ok(())
    }
}
