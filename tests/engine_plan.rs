//! One plan: planning (`vsum plan`, `vsum run --dry-run`) writes nothing into the cache,
//! the plan the launch screen shows is the plan that runs, and executors other than
//! the local one run it without touching planning or caching.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use common::*;
use vsum_engine::config::Config;
use vsum_engine::events::{EventSink, Outcome};
use vsum_engine::manifest;
use vsum_engine::run::{self, Completions, Executor, Job, LocalExecutor, Receiver, RunOptions};
use vsum_engine::stage::StageError;
use vsum_engine::store::{LockMode, Store};

const TWO_STAGES: &str = r#"
inputs: [input/]
stages:
  first:
    run: ["sh", "-c", "cat \"$1\" > \"$2/a.txt\"", "x", "{video}", "{out}"]
  second:
    needs: [first]
    run: ["sh", "-c", "tr a-z A-Z < \"$1/a.txt\" > \"$2/b.txt\"", "x", "{first}", "{out}"]
  index:
    scope: batch
    needs: [second]
    publish: [INDEX.txt]
    run: ["sh", "-c", "echo index > \"$1/INDEX.txt\"", "x", "{out}"]
"#;

/// Every file and folder under `root`: kind, size, modification time (ns) and, for
/// files, a content hash.
fn snapshot(root: &Path) -> BTreeMap<String, (bool, u64, i128, String)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mtime = md
                .modified()
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(-1);
            let hash = if md.is_file() {
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string()
            } else {
                String::new()
            };
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.insert(rel, (md.is_dir(), md.len(), mtime, hash));
            if md.is_dir() {
                todo.push(p);
            }
        }
    }
    out
}

fn assert_same(before: &BTreeMap<String, (bool, u64, i128, String)>, after_cmd: &str, p: &Project) {
    let after = snapshot(&p.path().join(".vsum"));
    for (k, v) in before {
        assert_eq!(after.get(k), Some(v), "{after_cmd} changed .vsum/{k}");
    }
    for k in after.keys() {
        assert!(before.contains_key(k), "{after_cmd} created .vsum/{k}");
    }
}

#[test]
fn a_dry_run_leaves_the_cache_byte_identical() {
    let p = Project::new(TWO_STAGES, &[("v1.mp4", b"one"), ("v2.mp4", b"two")]);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    // Something to plan: a changed stage (misses), and an entry that no longer checks
    // out (a dry run used to delete it) ...
    p.write_manifest(&TWO_STAGES.replace("tr a-z A-Z", "tr a-z B-ZA"));
    let entries = p.path().join(".vsum/entries");
    let mut all: Vec<_> = walk_files(&entries);
    all.sort();
    let tampered = &all[0];
    let mut bytes = std::fs::read(tampered).unwrap();
    bytes[20] ^= 1;
    std::fs::write(tampered, bytes).unwrap();
    // ... and entries last used long ago (a dry run used to mark them used).
    let old = SystemTime::now() - Duration::from_secs(30 * 86400);
    for e in &all {
        std::fs::File::options()
            .write(true)
            .open(e)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let before = snapshot(&p.path().join(".vsum"));

    let out = p.vsum(&["plan", "pipeline.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("to run"), "{}", stdout(&out));
    assert_same(&before, "vsum plan", &p);

    let out = p.vsum(&["run", "pipeline.yaml", "--dry-run", "--progress", "none"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same(&before, "vsum run --dry-run", &p);

    let out = p.vsum(&[
        "run",
        "pipeline.yaml",
        "--dry-run",
        "--json",
        "--progress",
        "none",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["dry_run"], true);
    assert!(s["counts"]["would_run"].as_u64().unwrap() >= 2, "{s}");
    assert_same(&before, "vsum run --dry-run --json", &p);

    // The real run then heals the tampered entry and marks what it used.
    let (code, _) = p.run(&[]);
    assert_eq!(code, 0);
    assert_ne!(snapshot(&p.path().join(".vsum")), before);
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_plan_on_the_launch_screen_is_the_plan_that_runs() {
    let p = Project::new(TWO_STAGES, &[("v1.mp4", b"one"), ("v2.mp4", b"two")]);
    let (code, _) = p.run(&[]);
    assert_eq!(code, 0);
    // `second` changes for every video (new outputs), so it and `index` run again.
    p.write_manifest(&TWO_STAGES.replace("tr a-z A-Z", "tr a-z B-ZA"));

    // Through the library: the plan's jobs and counts are the run's.
    let registry = vsum_stages::registry(&vsum_models::ModelsDir::from_config(None));
    let m = manifest::load(&p.manifest(), &registry).unwrap();
    let cfg = Config::default();
    let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
    let plan = run::plan(&m, &registry, &cfg, &store, &RunOptions::default()).unwrap();
    let shown = plan.summary();
    assert_eq!(shown.counts.cached, 2, "{:?}", shown.jobs);
    assert_eq!(shown.counts.would_run, 3, "{:?}", shown.jobs);
    let executor = LocalExecutor::new(&cfg).unwrap();
    let ran = run::execute(plan, &executor, EventSink::new(), &AtomicBool::new(false)).unwrap();
    assert_eq!(ran.counts.cached, shown.counts.cached);
    assert_eq!(ran.counts.ran, shown.counts.would_run);
    assert_eq!(ran.counts.jobs, shown.counts.jobs);
    for (planned, done) in shown.jobs.iter().zip(&ran.jobs) {
        assert_eq!(planned.label, done.label);
        let expected = match planned.outcome {
            Outcome::Cached => Outcome::Cached,
            Outcome::WouldRun => Outcome::Ran,
            other => panic!("unexpected planned outcome {other:?}"),
        };
        assert_eq!(done.outcome, expected, "{}", done.label.describe());
        if planned.outcome == Outcome::Cached {
            assert_eq!(planned.key, done.key);
        }
    }
    drop(store);

    // Through the CLI: the launch screen's counts are the saved run summary's.
    p.write_manifest(&TWO_STAGES.replace("tr a-z A-Z", "tr a-z C-ZAB"));
    let out = p.vsum(&["run", "pipeline.yaml", "--yes", "--progress", "plain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("jobs:") && l.contains("to run"))
        .unwrap_or_else(|| panic!("no launch screen: {err}"));
    let runs = p.path().join(".vsum/runs");
    let mut saved: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    saved.sort_by_key(|f| std::fs::metadata(f).unwrap().modified().unwrap());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.last().unwrap()).unwrap()).unwrap();
    let c = &s["counts"];
    assert_eq!(
        line,
        format!(
            "jobs: {} in all, {} cached, {} to run",
            c["jobs"], c["cached"], c["ran"]
        ),
        "{s}"
    );
}

/// Runs every job one at a time, on the thread `serve` is called on.
struct Serial;

impl Executor for Serial {
    fn capacity(&self) -> usize {
        1
    }
    fn serve<'r>(&self, jobs: Receiver<Job<'r>>, done: Completions) {
        for job in jobs.iter() {
            done.send(job.run_here(None));
        }
    }
}

/// Stands for remote workers sharing the store: it takes each job's result from the
/// store (where "a worker" committed it), or fails the job when told to.
struct Remote {
    fail: bool,
    seen: Mutex<Vec<String>>,
}

impl Executor for Remote {
    fn capacity(&self) -> usize {
        4
    }
    fn serve<'r>(&self, jobs: Receiver<Job<'r>>, done: Completions) {
        for job in jobs.iter() {
            self.seen.lock().unwrap().push(job.key().to_string());
            if self.fail {
                done.send(job.fail(StageError::retryable("no worker took the job")));
            } else {
                done.send(job.collect());
            }
        }
    }
}

#[test]
fn another_executor_plugs_in_without_touching_planning_or_caching() {
    let p = Project::new(TWO_STAGES, &[("v1.mp4", b"one"), ("v2.mp4", b"two")]);
    let registry = vsum_stages::registry(&vsum_models::ModelsDir::from_config(None));
    let m = manifest::load(&p.manifest(), &registry).unwrap();
    let cfg = Config::default();
    let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
    let execute = |opts: &RunOptions, executor: &dyn Executor| {
        let plan = run::plan(&m, &registry, &cfg, &store, opts).unwrap();
        run::execute(plan, executor, EventSink::new(), &AtomicBool::new(false)).unwrap()
    };

    // A serial executor runs the batch like the local one.
    let s = execute(&RunOptions::default(), &Serial);
    assert_eq!((s.counts.ran, s.counts.failed), (5, 0), "{:?}", s.jobs);
    assert_eq!(p.read("output/v1/second/b.txt"), "ONE");
    assert_eq!(p.read("output/INDEX.txt"), "index\n");

    // Jobs that ran elsewhere are collected from the store: `first` is forced (a miss),
    // its entry is there; what is downstream stays cached and never reaches the executor.
    std::fs::remove_file(p.path().join("output/v1/first/a.txt")).unwrap();
    let remote = Remote {
        fail: false,
        seen: Mutex::new(Vec::new()),
    };
    let forced = RunOptions {
        force: vec!["first".into()],
        ..Default::default()
    };
    let s = execute(&forced, &remote);
    assert_eq!((s.counts.ran, s.counts.cached), (2, 3), "{:?}", s.jobs);
    let mut ran_keys: Vec<String> = s
        .jobs
        .iter()
        .filter(|j| j.outcome == Outcome::Ran)
        .map(|j| j.key.clone().unwrap())
        .collect();
    // The two forced jobs are keyed on the pool at once and reach the executor in
    // either order: the executor saw exactly the jobs that ran, each once.
    let mut seen = remote.seen.lock().unwrap().clone();
    seen.sort();
    ran_keys.sort();
    assert_eq!(seen, ran_keys);
    assert_eq!(p.read("output/v1/first/a.txt"), "one");

    // An executor that cannot run a job fails it; its dependents are skipped.
    let remote = Remote {
        fail: true,
        seen: Mutex::new(Vec::new()),
    };
    let s = execute(&forced, &remote);
    assert_eq!((s.counts.failed, s.counts.skipped), (2, 3), "{:?}", s.jobs);
    assert!(
        s.jobs
            .iter()
            .any(|j| j.error.as_deref() == Some("no worker took the job"))
    );
}

/// A per-video stage may come after a batch stage (each video's related videos come
/// from the library's index): every video's job waits for the one batch job and reads
/// its output; adding a video reruns the batch and those jobs, and nothing else.
#[test]
fn a_per_video_stage_after_a_batch_stage_reads_the_batch_output() {
    let manifest = r#"
inputs: [input/]
output: output/
stages:
  size:
    run: ["sh", "-c", "wc -c < \"$1\" | tr -d ' ' > \"$2/n.txt\"", "x", "{video}", "{out}"]
  total:
    scope: batch
    needs: [size]
    run: ["sh", "-c", "o=$1; shift; for d in \"$@\"; do cat \"$d/n.txt\"; done | awk '{{s+=$1}} END {{print s}}' > \"$o/total.txt\"", "x", "{out}", "{size}"]
  share:
    needs: [size, total]
    run: ["sh", "-c", "echo \"$(cat \"$1/n.txt\")/$(cat \"$2/total.txt\")\" > \"$3/share.txt\"", "x", "{size}", "{total}", "{out}"]
"#;
    let p = Project::new(manifest, &[("a.mp4", b"aa"), ("b.mp4", b"bbb")]);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(p.read("output/a/share/share.txt"), "2/5\n");
    assert_eq!(p.read("output/b/share/share.txt"), "3/5\n");
    std::fs::write(p.path().join("input/c.mp4"), b"ccccc").unwrap();
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    let again: Vec<(String, String)> = ran(&s);
    assert_eq!(
        again,
        vec![
            ("share".to_string(), "input/a.mp4".to_string()),
            ("share".to_string(), "input/b.mp4".to_string()),
            ("share".to_string(), "input/c.mp4".to_string()),
            ("size".to_string(), "input/c.mp4".to_string()),
            ("total".to_string(), "[batch]".to_string()),
        ],
        "{s}"
    );
    assert_eq!(p.read("output/a/share/share.txt"), "2/10\n");
    assert_eq!(p.read("output/c/share/share.txt"), "5/10\n");
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(counts(&s).0, 0, "a rerun runs nothing: {s}");
    // A batch stage that needs a per-video stage after it is a cycle, said as one.
    p.write_manifest(&manifest.replace("needs: [size]\n", "needs: [size, share]\n"));
    let out = p.vsum(&["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cycle"), "{}", stderr(&out));
}
