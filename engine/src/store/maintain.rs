//! Cache upkeep: statistics, `verify` (re-hash every object) and `gc` (drop old or
//! excess entries, then unreferenced objects). Both run with the cache to themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use super::{Entry, Store, now_secs, remove_any, summary};
use crate::fsutil;
use crate::hash::hash_file;

impl Store {
    fn object_files(&self) -> Vec<(String, PathBuf, u64)> {
        walkdir::WalkDir::new(self.root.join("objects"))
            .min_depth(2)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let size = e.metadata().ok()?.len();
                Some((name, e.path().to_path_buf(), size))
            })
            .collect()
    }

    /// Anything under objects/ where a file should be that is not one (a folder, a link).
    fn misplaced_objects(&self) -> Vec<PathBuf> {
        walkdir::WalkDir::new(self.root.join("objects"))
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .flatten()
            .filter(|e| !e.file_type().is_file())
            .map(|e| e.path().to_path_buf())
            .collect()
    }

    /// The cache's sums. Folders unchanged since the last call come from `stats.json`
    /// (see `summary`), so this costs a stat per folder, not a read per entry.
    pub fn stats(&self) -> Stats {
        let s = summary::sums(&self.root, true);
        Stats {
            root: self.root.clone(),
            entries: s.entries,
            objects: s.objects,
            object_bytes: s.object_bytes,
            total_bytes: s.total_bytes,
            by_stage: s.by_stage,
        }
    }

    /// Re-hashes every object; corrupt objects and entries are reported and, when
    /// `evict`, removed so the next run recomputes them.
    pub fn verify(&self, evict: bool) -> VerifyReport {
        let mut report = VerifyReport::default();
        for (name, path, _) in self.object_files() {
            report.objects_checked += 1;
            match hash_file(&path) {
                Ok(h) if h == name => {}
                Ok(h) => {
                    report.problems.push(format!(
                        "object {} is corrupt (content hashes to {})",
                        &name[..16.min(name.len())],
                        &h[..16]
                    ));
                    report.corrupt_objects.insert(name);
                    if evict {
                        let _ = fs::remove_file(&path);
                    }
                }
                Err(e) => report
                    .problems
                    .push(format!("object {name} unreadable: {e}")),
            }
        }
        for path in self.misplaced_objects() {
            report
                .problems
                .push(format!("{} is not a regular file", path.display()));
            if evict {
                remove_any(&path);
            }
        }
        for key in self.keys("") {
            report.entries_checked += 1;
            let path = self.entry_path(&key);
            let bad = match self.read_entry(&key) {
                Err(why) => Some(format!("entry {} is corrupt: {why}", &key[..16])),
                Ok(e) => e
                    .outputs
                    .iter()
                    .find(|(_, o)| {
                        report.corrupt_objects.contains(&o.hash)
                            || !fs::symlink_metadata(self.object_path(&o.hash))
                                .is_ok_and(|m| m.is_file())
                    })
                    .map(|(n, _)| {
                        format!(
                            "entry {} ({} [{}]) lost its output '{n}'",
                            &key[..16],
                            e.stage,
                            e.video.as_deref().unwrap_or("batch")
                        )
                    }),
            };
            if let Some(why) = bad {
                report.problems.push(why);
                report.bad_entries += 1;
                if evict {
                    remove_any(&path);
                }
            }
        }
        report.evicted = evict;
        report
    }

    /// What [`Store::gc`] would remove, removing nothing: unreadable entries, then
    /// entries unused for longer than `older_than` seconds, then the least recently
    /// used until the outputs fit in `max_size` bytes (`vsum cache gc --dry-run`).
    pub fn gc_plan(&self, max_size: Option<u64>, older_than: Option<u64>) -> GcPlan {
        let now = now_secs();
        let keys = self.keys("");
        let mut plan = GcPlan {
            entries_total: keys.len(),
            ..GcPlan::default()
        };
        let mut live: Vec<(u64, String, Entry)> = Vec::new();
        for key in keys {
            match self.read_entry(&key) {
                Ok(e) => live.push((self.last_used(&key), key, e)),
                Err(_) => plan.remove.push(GcDoomed {
                    key,
                    stage: None,
                    video: None,
                    size: 0,
                    last_used: 0,
                    why: "unreadable",
                }),
            }
        }
        live.sort_by_key(|e| std::cmp::Reverse(e.0)); // newest first
        for (used, key, e) in live {
            // Use marks are kept to the hour (`USE_MARK_STEP`): an entry whose mark is
            // up to that much older than its last use must not go for it.
            let step = super::USE_MARK_STEP.as_secs();
            let too_old =
                older_than.is_some_and(|age| now.saturating_sub(used) > age.saturating_add(step));
            let new_bytes: u64 = e
                .outputs
                .values()
                .filter(|o| !plan.keep_objects.contains(&o.hash))
                .map(|o| o.size)
                .sum();
            let too_big = max_size.is_some_and(|max| plan.bytes_kept + new_bytes > max);
            if too_old || too_big {
                plan.remove.push(GcDoomed {
                    size: e.size(),
                    key,
                    stage: Some(e.stage),
                    video: e.video,
                    last_used: used,
                    why: if too_old {
                        "unused too long"
                    } else {
                        "over the size limit"
                    },
                });
                continue;
            }
            plan.entries_kept += 1;
            plan.bytes_kept += new_bytes;
            plan.keep_objects
                .extend(e.outputs.values().map(|o| o.hash.clone()));
        }
        plan
    }

    /// Removes what [`Store::gc_plan`] lists, then unreferenced objects and leftovers of
    /// interrupted jobs.
    pub fn gc(&self, max_size: Option<u64>, older_than: Option<u64>) -> GcReport {
        let plan = self.gc_plan(max_size, older_than);
        let mut report = GcReport::default();
        for d in &plan.remove {
            remove_any(&self.entry_path(&d.key));
            report.entries_removed += 1;
        }
        let keep = &plan.keep_objects;
        let (kept, kept_bytes) = (plan.entries_kept, plan.bytes_kept);
        for path in self.misplaced_objects() {
            remove_any(&path);
            report.objects_removed += 1;
        }
        for (name, path, size) in self.object_files() {
            if !keep.contains(&name) {
                let _ = fs::remove_file(&path);
                report.objects_removed += 1;
                report.bytes_freed += size;
            }
        }
        if let Ok(rd) = fs::read_dir(self.root.join("tmp")) {
            for d in rd.flatten() {
                report.bytes_freed += fsutil::dir_size(&d.path());
                remove_any(&d.path());
            }
        }
        // No run holds a claim while gc has the cache to itself.
        remove_any(&self.root.join("claims"));
        report.entries_kept = kept;
        report.bytes_kept = kept_bytes;
        report
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub root: PathBuf,
    pub entries: usize,
    pub objects: usize,
    pub object_bytes: u64,
    pub total_bytes: u64,
    /// Stage -> (entries, bytes of outputs).
    pub by_stage: BTreeMap<String, (usize, u64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub objects_checked: usize,
    pub entries_checked: usize,
    pub bad_entries: usize,
    pub corrupt_objects: BTreeSet<String>,
    pub problems: Vec<String>,
    pub evicted: bool,
}

impl VerifyReport {
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One entry gc would remove, and why.
#[derive(Debug, Clone, Serialize)]
pub struct GcDoomed {
    pub key: String,
    pub stage: Option<String>,
    pub video: Option<String>,
    pub size: u64,
    pub last_used: u64,
    pub why: &'static str,
}

/// What gc would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcPlan {
    pub remove: Vec<GcDoomed>,
    pub entries_total: usize,
    pub entries_kept: usize,
    pub bytes_kept: u64,
    /// Objects the kept entries use.
    #[serde(skip)]
    pub keep_objects: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub entries_removed: usize,
    pub entries_kept: usize,
    pub objects_removed: usize,
    pub bytes_freed: u64,
    pub bytes_kept: u64,
}
