//! The store's own tests: commit, lookup, materialize, verify, gc, locking.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;
use crate::config::LinkMode;
use crate::fingerprint::SCHEMA;

fn fp() -> Fingerprint {
    Fingerprint {
        schema: SCHEMA,
        kind: "command".into(),
        kind_version: 1,
        params: serde_json::json!({}),
        inputs: BTreeMap::new(),
        upstream: BTreeMap::new(),
        tools: BTreeMap::new(),
    }
}

fn commit_one(store: &Store, key: &str, content: &[u8]) -> Entry {
    let d = store.job_dir().unwrap();
    fs::write(d.join("a.txt"), content).unwrap();
    store.commit(key, &fp(), "s", None, &d, 1).unwrap()
}

#[test]
fn commit_lookup_materialize_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
    let key = "a".repeat(64);
    let e = commit_one(&store, &key, b"hello");
    let Lookup::Hit(hit) = store.lookup(&key) else {
        panic!("expected hit")
    };
    assert_eq!(hit.outputs, e.outputs);
    let out = dir.path().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("stale.txt"), b"old").unwrap();
    fs::write(out.join("mine.txt"), b"user's").unwrap();
    let stamps = store
        .materialize(
            &hit,
            dir.path(),
            &out,
            &["stale.txt".into()],
            &BTreeMap::new(),
            LinkMode::Copy,
        )
        .unwrap();
    assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"hello");
    assert!(!out.join("stale.txt").exists(), "vsum's old file goes");
    assert!(
        out.join("mine.txt").exists(),
        "a file vsum did not place stays"
    );
    assert!(!store.is_materialized(&hit, &out), "a copy, not a link");
    // Unchanged since placed: left alone. Edited: restored.
    let ino = fs::metadata(out.join("a.txt")).unwrap().ino();
    let again = store
        .materialize(&hit, dir.path(), &out, &[], &stamps, LinkMode::Copy)
        .unwrap();
    assert_eq!(fs::metadata(out.join("a.txt")).unwrap().ino(), ino);
    fs::write(out.join("a.txt"), b"edited").unwrap();
    store
        .materialize(&hit, dir.path(), &out, &[], &again, LinkMode::Copy)
        .unwrap();
    assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"hello");
    let linked = store
        .materialize(&hit, dir.path(), &out, &[], &again, LinkMode::Hardlink)
        .unwrap();
    assert!(store.is_materialized(&hit, &out));
    // Back to copies: the link matches its recorded stamp, but it is the object itself
    // (two links), so it becomes a copy of its own.
    store
        .materialize(&hit, dir.path(), &out, &[], &linked, LinkMode::Copy)
        .unwrap();
    assert!(!store.is_materialized(&hit, &out));
    assert_eq!(fs::metadata(out.join("a.txt")).unwrap().nlink(), 1);
    assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"hello");
}

#[test]
fn tampered_entry_or_missing_object_is_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
    let key = "b".repeat(64);
    let e = commit_one(&store, &key, b"hello");
    let p = store.entry_path(&key);
    let mut bytes = fs::read(&p).unwrap();
    bytes[10] ^= 1;
    fs::write(&p, &bytes).unwrap();
    assert!(matches!(store.lookup(&key), Lookup::Untrusted(_)));

    let key2 = "c".repeat(64);
    commit_one(&store, &key2, b"hello");
    fs::remove_file(store.object_path(&e.outputs["a.txt"].hash)).unwrap();
    assert!(matches!(store.lookup(&key2), Lookup::Untrusted(_)));
    assert_eq!(
        store.lookup(&key2),
        Lookup::Missing,
        "untrusted entry is removed"
    );
}

#[test]
fn verify_finds_and_evicts_corrupt_objects() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(".vsum");
    let key = "d".repeat(64);
    let e = {
        let store = Store::open(&root, LockMode::Shared).unwrap();
        commit_one(&store, &key, b"hello")
    };
    let store = Store::open(&root, LockMode::Exclusive).unwrap();
    assert!(store.verify(false).clean());
    let obj = store.object_path(&e.outputs["a.txt"].hash);
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&obj, b"jello").unwrap();
    let r = store.verify(true);
    assert_eq!(r.corrupt_objects.len(), 1);
    assert_eq!(r.bad_entries, 1);
    assert_eq!(store.lookup(&key), Lookup::Missing);
    assert!(store.verify(false).clean());
}

#[test]
fn exclusive_lock_excludes_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(".vsum");
    let _a = Store::open(&root, LockMode::Shared).unwrap();
    let _b = Store::open(&root, LockMode::Shared).unwrap();
    assert!(matches!(
        Store::open(&root, LockMode::Exclusive),
        Err(StoreError::Busy { .. })
    ));
}

#[test]
fn gc_drops_unreferenced_objects_and_respects_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(".vsum");
    let store = Store::open(&root, LockMode::Exclusive).unwrap();
    commit_one(&store, &"e".repeat(64), b"0123456789");
    commit_one(&store, &"f".repeat(64), b"abcdefghij");
    let r = store.gc(None, None);
    assert_eq!((r.entries_removed, r.objects_removed), (0, 0));
    let r = store.gc(Some(15), None);
    assert_eq!(r.entries_removed, 1);
    assert_eq!(r.objects_removed, 1);
    assert_eq!(store.keys("").len(), 1);
}

#[test]
fn placing_a_hard_link_over_a_link_to_the_same_file_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("object");
    fs::write(&src, b"same").unwrap();
    let target = dir.path().join("out.txt");
    fs::hard_link(&src, &target).unwrap();
    place_file(&src, &target, LinkMode::Hardlink).unwrap();
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "a temporary file was left: {names:?}");
    assert_eq!(fs::read(&target).unwrap(), b"same");
}

/// Sets an entry's use mark (its mtime) to `t`.
fn set_use_mark(entry: &Path, t: std::time::SystemTime) {
    let f = File::options().write(true).open(entry).unwrap();
    f.set_modified(t).unwrap();
}

#[test]
fn peek_writes_nothing_where_lookup_marks_use_and_removes_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
    let key = "c".repeat(64);
    commit_one(&store, &key, b"hello");
    let entry = store.entry_path(&key);
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    set_use_mark(&entry, old);
    assert!(matches!(store.peek(&key), Lookup::Hit(_)));
    assert_eq!(fs::metadata(&entry).unwrap().modified().unwrap(), old);
    assert!(matches!(store.lookup(&key), Lookup::Hit(_)));
    assert_ne!(fs::metadata(&entry).unwrap().modified().unwrap(), old);
    // A mark younger than the step is left as it is; an older one is renewed.
    let recent = std::time::SystemTime::now() - USE_MARK_STEP / 2;
    set_use_mark(&entry, recent);
    assert!(matches!(store.lookup(&key), Lookup::Hit(_)));
    assert_eq!(fs::metadata(&entry).unwrap().modified().unwrap(), recent);
    let stale = std::time::SystemTime::now() - USE_MARK_STEP * 2;
    set_use_mark(&entry, stale);
    assert!(matches!(store.lookup(&key), Lookup::Hit(_)));
    assert!(fs::metadata(&entry).unwrap().modified().unwrap() > recent);

    let mut bytes = fs::read(&entry).unwrap();
    bytes[10] ^= 1;
    fs::write(&entry, &bytes).unwrap();
    assert!(matches!(store.peek(&key), Lookup::Untrusted(_)));
    assert!(entry.exists(), "peek removed an untrusted entry");
    assert!(matches!(store.lookup(&key), Lookup::Untrusted(_)));
    assert!(!entry.exists());
}

#[test]
fn a_staged_entry_is_a_read_only_view_that_cannot_reach_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
    let key = "d".repeat(64);
    commit_one(&store, &key, b"upstream");
    let view = store.job_dir().unwrap().join("up");
    store.stage_entry(&key, &view).unwrap();
    let staged = view.join("a.txt");
    assert_eq!(fs::read(&staged).unwrap(), b"upstream");
    assert_eq!(
        fs::metadata(&staged).unwrap().permissions().mode() & 0o777,
        0o444
    );
    // Whoever may write to it anyway (root) writes into a copy, never into the object.
    let _ = fs::write(&staged, b"scribbled");
    assert!(matches!(store.lookup(&key), Lookup::Hit(_)));
    assert!(store.verify(false).clean());
}

#[test]
fn a_ref_or_entry_torn_by_a_power_cut_is_no_ref_and_a_miss() {
    // Refs and entries are renamed into place without fsyncs: after a power cut they may
    // be empty or zero-filled. Neither may be trusted, nor break the next run.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
    let key = "c".repeat(64);
    commit_one(&store, &key, b"x");
    let r = Ref {
        key: key.clone(),
        ..Ref::default()
    };
    store.set_ref("v", "s", &r).unwrap();
    assert_eq!(store.read_ref("v", "s"), Some(r));
    let ref_file = store.root().join("refs/v/s");
    for torn in [&b""[..], &[0u8; 40][..], b"{\"key\":\"\"}", b"{\"ke"] {
        fs::write(&ref_file, torn).unwrap();
        assert_eq!(store.read_ref("v", "s"), None, "{torn:?}");
    }
    let entry = store.entry_path(&key);
    let len = fs::metadata(&entry).unwrap().len() as usize;
    fs::set_permissions(&entry, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&entry, vec![0u8; len]).unwrap();
    assert!(matches!(store.lookup(&key), Lookup::Untrusted(_)));
    assert!(matches!(store.lookup(&key), Lookup::Missing));
}

#[test]
fn an_entry_made_elsewhere_is_adopted_only_with_matching_objects() {
    let dir = tempfile::tempdir().unwrap();
    let there = Store::open(&dir.path().join("there"), LockMode::Shared).unwrap();
    let here = Store::open(&dir.path().join("here"), LockMode::Shared).unwrap();
    let key = "b".repeat(64);
    let e = commit_one(&there, &key, b"made elsewhere");
    let bytes = fs::read(there.entry_path(&key)).unwrap();
    let got = Entry::decode(&bytes, &key).unwrap();
    assert_eq!(got, e);
    assert!(
        Entry::decode(&bytes, &"c".repeat(64)).is_err(),
        "names another key"
    );
    let missing = here.missing_objects(&got);
    assert_eq!(missing.len(), 1);
    let hash = &missing[0];

    // A download that does not hash to its name is refused; no entry appears.
    let bad = here.tmp_path();
    fs::write(&bad, b"tampered").unwrap();
    let err = here
        .adopt(&got, BTreeMap::from([(hash.clone(), bad.clone())]))
        .unwrap_err();
    assert!(err.to_string().contains("hashes to"), "{err}");
    assert!(!bad.exists());
    assert!(!here.has(&key));

    // The right bytes: the object goes in read-only, then the entry.
    let good = here.tmp_path();
    fs::copy(there.object_file(hash), &good).unwrap();
    here.adopt(&got, BTreeMap::from([(hash.clone(), good)]))
        .unwrap();
    assert!(here.has(&key));
    assert!(here.missing_objects(&got).is_empty());
    let mode = fs::metadata(here.object_file(hash))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "objects are read-only");
}

/// Sets every folder's mtime a minute back, as if the cache had been left alone.
fn settle_folders(root: &Path) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT};
    let then = now_secs() as i64 - 60;
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: then,
            tv_nsec: 0,
        },
    };
    for e in walkdir::WalkDir::new(root).into_iter().flatten() {
        if e.file_type().is_dir() {
            rustix::fs::utimensat(CWD, e.path(), &times, AtFlags::empty()).unwrap();
        }
    }
}

/// The summary's sums, and a full read's, without the count of folders read.
fn sums_both_ways(root: &Path) -> (summary::Sums, summary::Sums) {
    let mut quick = summary::sums(root, true);
    let mut full = summary::sums(root, false);
    quick.folders_read = 0;
    full.folders_read = 0;
    (quick, full)
}

#[test]
fn stats_reuse_settled_folders_and_always_match_a_full_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(".vsum");
    let store = Store::open(&root, LockMode::Exclusive).unwrap();
    for (i, stage) in ["a", "b", "a"].iter().enumerate() {
        let d = store.job_dir().unwrap();
        fs::write(d.join("out.txt"), format!("output {i}")).unwrap();
        let key = format!("{i}").repeat(64);
        store.commit(&key, &fp(), stage, None, &d, 1).unwrap();
    }
    let (quick, full) = sums_both_ways(&root);
    assert_eq!(quick, full);
    assert_eq!(full.entries, 3);
    assert_eq!(full.by_stage["a"], (2, 16));
    assert!(
        !root.join(summary::FILE).exists(),
        "folders changed just now are not remembered"
    );

    settle_folders(&root);
    let first = summary::sums(&root, true);
    let second = summary::sums(&root, true);
    assert_eq!(second.entries, 3);
    assert!(
        second.folders_read < first.folders_read,
        "settled folders come from the summary ({} read, then {})",
        first.folders_read,
        second.folders_read
    );

    // A new entry in a settled shard, a new stage: read again, and right.
    let d = store.job_dir().unwrap();
    fs::write(d.join("out.txt"), "a longer output").unwrap();
    store
        .commit(&format!("{}1", "0".repeat(63)), &fp(), "c", None, &d, 1)
        .unwrap();
    let (quick, full) = sums_both_ways(&root);
    assert_eq!(quick, full);
    assert_eq!(quick.by_stage["c"], (1, 15));

    // gc removes entries and objects from settled folders.
    settle_folders(&root);
    let _ = summary::sums(&root, true);
    let r = store.gc(Some(20), None);
    assert!(r.entries_removed > 0 && r.objects_removed > 0);
    let (quick, full) = sums_both_ways(&root);
    assert_eq!(quick, full);
    assert_eq!(quick.entries, 4 - r.entries_removed);

    // A torn or foreign summary is only a full read.
    fs::write(
        root.join(summary::FILE),
        b"{\"version\":1,\"folders\":{\"entries\":7",
    )
    .unwrap();
    let (quick, full) = sums_both_ways(&root);
    assert_eq!(quick, full);
}

#[test]
fn gc_by_age_allows_for_use_marks_kept_to_the_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(".vsum"), LockMode::Exclusive).unwrap();
    let key = "d".repeat(64);
    commit_one(&store, &key, b"kept");
    let mark = |ago| set_use_mark(&store.entry_path(&key), std::time::SystemTime::now() - ago);
    let hour = USE_MARK_STEP;
    // Marked 1.5 h ago: it may have been used 35 minutes ago. `--older-than 1h` keeps it.
    mark(hour + hour / 2);
    assert_eq!(store.gc(None, Some(hour.as_secs())).entries_removed, 0);
    // Marked 2.5 h ago: unused for over 1.5 h at the least. It goes.
    mark(hour * 2 + hour / 2);
    assert_eq!(store.gc(None, Some(hour.as_secs())).entries_removed, 1);
}

#[test]
fn the_slim_read_for_a_restore_keeps_what_a_restore_uses() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
    let key = "b".repeat(64);
    let d = store.job_dir().unwrap();
    fs::write(d.join("a.txt"), b"hello").unwrap();
    let mut f = fp();
    f.params = serde_json::json!({"run": ["x", "{out}"]});
    f.inputs.insert("video".into(), "1".repeat(64));
    f.upstream.insert("up".into(), "2".repeat(64));
    f.tools.insert("ffmpeg".into(), "7.1".into());
    let made = store
        .commit(&key, &f, "s", Some("v.mp4".into()), &d, 1)
        .unwrap();
    let (Lookup::Hit(full), _) = store.peek_dated(&key) else {
        panic!("expected a hit")
    };
    let (Lookup::Hit(slim), _) = store.peek_for_restore(&key) else {
        panic!("expected a hit")
    };
    assert_eq!(*full, made);
    let mut expected = made.clone();
    expected.fingerprint.params = serde_json::Value::Null;
    expected.fingerprint.inputs.clear();
    expected.fingerprint.upstream.clear();
    assert_eq!(*slim, expected);
    assert_eq!(slim.digest(), made.digest());
    // A torn entry is untrusted either way.
    let path = store.entry_path(&key);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(
        store.peek_for_restore(&key).0,
        Lookup::Untrusted(_)
    ));
}

/// Jobs storing the same content at once (every video's copy of one stage's output)
/// found its object missing for a moment, while another job replaced it, and failed to
/// place their outputs from it.
#[test]
fn jobs_storing_the_same_content_at_once_never_see_the_object_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (store, root) = (&store, dir.path());
            s.spawn(move || {
                for i in 0..100 {
                    // A new content every round, stored by the four threads at once.
                    let content = format!("round {i}\n").repeat(1 + i % 3);
                    let key = format!("{t}{i:063}");
                    let e = commit_one(store, &key, content.as_bytes());
                    let out = root.join(format!("out-{t}-{i}"));
                    let placed =
                        store.materialize(&e, root, &out, &[], &BTreeMap::new(), LinkMode::Copy);
                    assert!(placed.is_ok(), "round {i}: {placed:?}");
                    assert_eq!(fs::read_to_string(out.join("a.txt")).unwrap(), content);
                }
            });
        }
    });
}

/// A view folder handed to the next job must show that job's upstream only, never what
/// an earlier job staged (or wrote) in the same place.
#[test]
fn a_reused_view_folder_shows_only_the_next_jobs_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join(".vsum"), LockMode::Shared).unwrap();
    let (first, second) = ("e".repeat(64), "f".repeat(64));
    commit_one(&store, &first, b"first");
    let d = store.job_dir().unwrap();
    fs::write(d.join("b.txt"), b"second").unwrap();
    store.commit(&second, &fp(), "s", None, &d, 1).unwrap();
    let root = store.view_root().unwrap();
    let view = root.join("0").join("up");
    store.stage_entry(&first, &view).unwrap();
    // What a job might leave behind in its view, as well as what was staged.
    fs::write(root.join("0").join("stray.txt"), b"x").unwrap();
    store.give_back_view(root.clone());
    let again = store.view_root().unwrap();
    assert_eq!(again, root, "the folder is reused");
    assert_eq!(fs::read_dir(&view).unwrap().count(), 0, "emptied");
    assert!(!root.join("0").join("stray.txt").exists());
    store.stage_entry(&second, &view).unwrap();
    let names: Vec<_> = fs::read_dir(&view)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["b.txt"]);
    assert_eq!(fs::read(view.join("b.txt")).unwrap(), b"second");
    // The store removes the folders it kept when it closes.
    store.give_back_view(again);
    drop(store);
    assert!(!root.exists());
}
