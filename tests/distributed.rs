//! vsum across machines on real servers (NATS JetStream and a SeaweedFS S3, from their
//! PyPI wheels, on loopback): worker processes pull jobs, share results through S3,
//! and survive kill -9, SIGSTOP past their lease and a NATS restart; a second run from
//! an empty local store executes nothing; a deleted blob is recomputed; racing creates
//! of one entry have one winner; a real media stage gives a local run's bytes. Every
//! test is bounded in time. Built with `--features distributed`.

mod common;
#[path = "common/servers.rs"]
mod servers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Project, bin};
use serde_json::Value;
use servers::{Nats, s3};
use vsum_distributed::s3cache::Created;

/// Seconds of a worker's lease in these tests (heartbeats every third of it).
const LEASE: &str = "2";

/// A `vsum worker` process, killed when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Worker {
    fn start(nats: &Nats, prefix: &str, root: &Path, name: &str, extra: &[&str]) -> Worker {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let log = root.join(format!("{name}.log"));
        let mut cmd = Command::new(bin());
        cmd.args([
            "worker",
            "--executor",
            &nats.url(),
            "--cache",
            &s3().url(prefix),
        ])
        .args(["--lease", LEASE, "--name", name])
        .arg("--work-dir")
        .arg(&dir)
        .arg("--base-dir")
        .arg(&dir)
        .args(extra)
        .args(max_deliver(extra))
        .env("WORKER", name)
        .env("GPU_LOG", root.join(format!("{name}.gpu")))
        .env("RUNS_LOG", root.join("runs.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in s3().env() {
            cmd.env(k, v);
        }
        Worker {
            child: cmd.spawn().expect("start vsum worker"),
            log,
            name: name.to_string(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.name);
    }

    /// Waits (at most `secs`) for a line of the log containing `what`; returns it.
    fn wait_for(&self, what: &str, secs: u64) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(l) = self.log().lines().find(|l| l.contains(what)) {
                return l.to_string();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "worker {} never logged '{what}' within {secs} s:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--max-deliver 5` unless `extra` says otherwise.
fn max_deliver(extra: &[&str]) -> Vec<&'static str> {
    if extra.contains(&"--max-deliver") {
        vec![]
    } else {
        vec!["--max-deliver", "5"]
    }
}

/// `vsum run --executor ... --cache ...` in the background.
fn start_run(p: &Project, nats: &Nats, prefix: &str) -> Child {
    start_run_with(p, nats, prefix, &[])
}

fn start_run_with(p: &Project, nats: &Nats, prefix: &str, extra: &[&str]) -> Child {
    let mut cmd = Command::new(bin());
    cmd.args(["run", "pipeline.yaml", "--json", "--progress", "none"])
        .args(["--executor", &nats.url(), "--cache", &s3().url(prefix)])
        .args(["--lease", LEASE])
        .args(extra)
        .args(max_deliver(extra))
        .current_dir(p.path())
        .env_remove("VSUM_CACHE_DIR")
        .env_remove("VSUM_CONFIG")
        .env("RUNS_LOG", p.path().join("coordinator-ran-something.log"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(p.path().join("run.err")).unwrap());
    for (k, v) in s3().env() {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start vsum run")
}

/// Waits for a run (at most `secs`) and returns its exit code and JSON summary.
fn finish_run(p: &Project, mut child: Child, secs: u64) -> (i32, Value) {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the distributed run took over {secs} s; its stderr:\n{}",
                std::fs::read_to_string(p.path().join("run.err")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no summary ({e}); stderr:\n{}",
            std::fs::read_to_string(p.path().join("run.err")).unwrap_or_default()
        )
    });
    (code, summary)
}

fn run(p: &Project, nats: &Nats, prefix: &str, secs: u64) -> (i32, Value) {
    let child = start_run(p, nats, prefix);
    finish_run(p, child, secs)
}

fn counts(s: &Value) -> (u64, u64, u64, u64) {
    let c = &s["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    (n("jobs"), n("ran"), n("cached"), n("failed"))
}

fn keys(s: &Value) -> BTreeSet<String> {
    s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["key"].as_str().map(str::to_string))
        .collect()
}

fn shared(prefix: &str, dir: &str) -> Vec<String> {
    vsum_distributed::block_on(s3().cache(prefix).list(dir)).unwrap()
}

/// A test's own S3 prefix.
fn prefix(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// Three stages per video (CPU, fake GPU, CPU) and a batch index. Every stage appends
/// `<stage> <video>` to $RUNS_LOG when it runs; the fake GPU stage logs its start and
/// end (ns) to its worker's $GPU_LOG. `SLOW` seconds of sleep in the first stage.
fn manifest(slow: &str) -> String {
    r#"
inputs: [input/]
stages:
  prep:
    run: ["sh", "-c", "echo \"prep $(basename $1)\" >> \"$RUNS_LOG\"; sleep SLOW; echo \"P:$(cat \"$1\")\" > \"$2/a.txt\"", "x", "{video}", "{out}"]
  infer:
    needs: [prep]
    lane: gpu
    run: ["sh", "-c", "echo \"start $(date +%s%N) $WORKER\" >> \"$GPU_LOG\"; echo \"infer $(cat \"$1/a.txt\")\" >> \"$RUNS_LOG\"; sleep 0.05; tr a-z A-Z < \"$1/a.txt\" > \"$2/b.txt\"; echo \"end $(date +%s%N) $WORKER\" >> \"$GPU_LOG\"", "x", "{prep}", "{out}"]
  post:
    needs: [infer]
    run: ["sh", "-c", "echo \"post $(cat \"$1/b.txt\")\" >> \"$RUNS_LOG\"; rev < \"$1/b.txt\" > \"$2/c.txt\"", "x", "{infer}", "{out}"]
  index:
    scope: batch
    needs: [post]
    publish: [INDEX.txt]
    run: ["sh", "-c", "echo \"index\" >> \"$RUNS_LOG\"; echo done > \"$1/INDEX.txt\"", "x", "{out}"]
"#
    .replace("SLOW", slow)
}

fn videos(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("v{i:03}.mp4"), format!("video {i}").into_bytes()))
        .collect()
}

fn project(slow: &str, n: usize) -> Project {
    let v = videos(n);
    let files: Vec<(&str, &[u8])> = v.iter().map(|(a, b)| (a.as_str(), b.as_slice())).collect();
    Project::new(&manifest(slow), &files)
}

/// Lines of $RUNS_LOG, counted.
fn runs_log(root: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in std::fs::read_to_string(root.join("runs.log"))
        .unwrap_or_default()
        .lines()
    {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

// 7
#[test]
fn sixteen_concurrent_creates_of_one_entry_have_exactly_one_winner() {
    let prefix = prefix("race");
    let n = 16;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, prefix) = (barrier.clone(), prefix.clone());
            std::thread::spawn(move || {
                let cache = s3().cache(&prefix);
                let mut e = servers::sample_entry("one key");
                e.duration_ms = i as u64; // each racer's bytes differ
                barrier.wait();
                (
                    i,
                    vsum_distributed::block_on(cache.create_entry(&e)).unwrap(),
                )
            })
        })
        .collect();
    let results: Vec<(usize, Created)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, c)| *c == Created::Won)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let key = servers::sample_entry("one key").key;
    let stored = vsum_distributed::block_on(s3().cache(&prefix).get_entry(&key))
        .unwrap()
        .expect("the entry");
    assert_eq!(
        stored.duration_ms, winners[0] as u64,
        "the winner's entry is the one kept"
    );
    assert_eq!(shared(&prefix, "entries"), vec![key]);
}

// 1 and 5
#[test]
fn three_workers_run_every_job_once_and_a_second_run_executes_nothing() {
    let nats = Nats::start();
    let prefix = prefix("three");
    let p = project("0", 24); // 24 x 3 + 1 = 73 jobs ... plus
    let root = p.path().to_path_buf();
    let workers: Vec<Worker> = (1..=3)
        .map(|i| {
            Worker::start(
                &nats,
                &prefix,
                &root,
                &format!("w{i}"),
                &["--gpu", "--cpu-jobs", "2"],
            )
        })
        .collect();
    let (code, s) = run(&p, &nats, &prefix, 240);
    let (jobs, ran, _, failed) = counts(&s);
    assert_eq!((code, failed), (0, 0), "{s}");
    assert_eq!((jobs, ran), (73, 73), "{s}");
    // Each job ran exactly once, somewhere.
    let log = runs_log(&root);
    assert_eq!(log.values().sum::<usize>(), 73, "{log:?}");
    assert!(log.values().all(|n| *n == 1), "a job ran twice: {log:?}");
    // Each entry exists exactly once, under the run's keys.
    let entries: BTreeSet<String> = shared(&prefix, "entries").into_iter().collect();
    assert_eq!(entries, keys(&s));
    // The fake GPU stage: on each worker (one machine each), intervals never overlap.
    let mut gpu_jobs = 0;
    for w in &workers {
        let text =
            std::fs::read_to_string(root.join(format!("{}.gpu", w.name))).unwrap_or_default();
        let mut open: Option<u128> = None;
        let mut last_end = 0u128;
        for l in text.lines() {
            let mut f = l.split_whitespace();
            let (what, t) = (
                f.next().unwrap(),
                f.next().unwrap().parse::<u128>().unwrap(),
            );
            match what {
                "start" => {
                    assert!(
                        open.is_none(),
                        "{}: a GPU job started inside another:\n{text}",
                        w.name
                    );
                    assert!(
                        t >= last_end,
                        "{}: overlapping GPU intervals:\n{text}",
                        w.name
                    );
                    open = Some(t);
                }
                _ => {
                    assert!(
                        open.take().is_some(),
                        "{}: end without start:\n{text}",
                        w.name
                    );
                    last_end = t;
                    gpu_jobs += 1;
                }
            }
        }
    }
    assert_eq!(gpu_jobs, 24);
    let busy = workers.iter().filter(|w| w.log().contains("done ")).count();
    assert!(busy >= 2, "the jobs should spread over the workers");
    assert_eq!(p.read("output/INDEX.txt"), "done\n");

    // Jobs out on the workers are in flight for the screen and the log: each started.
    let mut started = BTreeSet::new();
    for log in walk(&root.join(".vsum/logs")) {
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            let e: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            if e["event"] == "job_started" {
                started.insert(e["job"]["index"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(started.len(), 73, "jobs with a job_started event");

    // 5: the same manifest from an empty local store: every job is a hit from S3.
    std::fs::remove_dir_all(root.join(".vsum")).unwrap();
    std::fs::remove_dir_all(root.join("output")).unwrap();
    let before: Vec<String> = workers.iter().map(Worker::log).collect();
    let (code, s2) = run(&p, &nats, &prefix, 120);
    let (jobs, ran, cached, failed) = counts(&s2);
    assert_eq!((code, jobs, ran, cached, failed), (0, 73, 0, 73, 0), "{s2}");
    assert_eq!(runs_log(&root), log, "nothing ran again");
    for (w, b) in workers.iter().zip(before) {
        assert_eq!(w.log(), b, "worker {} got work", w.name);
    }
    assert_eq!(keys(&s2), keys(&s));
    assert_eq!(p.read("output/v003/post/c.txt"), "3 OEDIV:P\n");
    assert!(
        s2["jobs"][0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("shared cache")
    );
}

// 2
#[test]
fn a_worker_killed_mid_job_loses_nothing() {
    let nats = Nats::start();
    let prefix = prefix("kill");
    let p = project("3", 2);
    let root = p.path().to_path_buf();
    let a = Worker::start(&nats, &prefix, &root, "a", &["--gpu", "--cpu-jobs", "1"]);
    let child = start_run(&p, &nats, &prefix);
    let started = a.wait_for("started prep", 60);
    let job = started
        .split("started ")
        .nth(1)
        .unwrap()
        .split(" (")
        .next()
        .unwrap()
        .to_string();
    let b = Worker::start(&nats, &prefix, &root, "b", &["--gpu", "--cpu-jobs", "1"]);
    a.signal("-KILL");
    let (code, s) = finish_run(&p, child, 120);
    let (jobs, ran, _, failed) = counts(&s);
    assert_eq!((code, jobs, ran, failed), (0, 7, 7, 0), "{s}");
    assert!(
        b.log().contains(&format!("done {job}")),
        "{job} should finish on b:\n{}",
        b.log()
    );
    let entries: BTreeSet<String> = shared(&prefix, "entries").into_iter().collect();
    assert_eq!(entries, keys(&s));
    assert_eq!(p.read("output/v000/post/c.txt"), "0 OEDIV:P\n");
}

// 6
#[test]
fn a_deleted_blob_is_recomputed() {
    let nats = Nats::start();
    let prefix = prefix("blob");
    let p = project("0", 3);
    let root = p.path().to_path_buf();
    let _w = Worker::start(&nats, &prefix, &root, "w", &["--gpu", "--cpu-jobs", "2"]);
    let (code, s) = run(&p, &nats, &prefix, 120);
    assert_eq!(code, 0, "{s}");
    // The blob of `infer [v001]`'s b.txt goes.
    let hash = blake3::hash(b"P:VIDEO 1\n").to_hex().to_string();
    let cache = s3().cache(&prefix);
    assert!(vsum_distributed::block_on(cache.has_blob(&hash)).unwrap());
    vsum_distributed::block_on(cache.delete_blob(&hash)).unwrap();
    std::fs::remove_dir_all(root.join(".vsum")).unwrap();
    std::fs::remove_dir_all(root.join("output")).unwrap();
    let (code, s2) = run(&p, &nats, &prefix, 120);
    let (jobs, ran, cached, failed) = counts(&s2);
    assert_eq!((code, jobs, ran, cached, failed), (0, 10, 1, 9, 0), "{s2}");
    let recomputed: Vec<&Value> = s2["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["outcome"] == "ran")
        .collect();
    assert_eq!(recomputed[0]["stage"], "infer", "{s2}");
    assert_eq!(recomputed[0]["video"], "input/v001.mp4", "{s2}");
    assert!(vsum_distributed::block_on(cache.has_blob(&hash)).unwrap());
    assert_eq!(p.read("output/v001/infer/b.txt"), "P:VIDEO 1\n");
    assert_eq!(runs_log(&root)["infer P:video 1"], 2);
}

// 3
#[test]
fn a_worker_stopped_past_its_lease_loses_its_late_publish_cleanly() {
    let nats = Nats::start();
    let prefix = prefix("stop");
    let p = project("3", 1);
    let root = p.path().to_path_buf();
    let a = Worker::start(&nats, &prefix, &root, "a", &["--gpu", "--cpu-jobs", "1"]);
    let child = start_run(&p, &nats, &prefix);
    a.wait_for("started prep", 60);
    a.signal("-STOP");
    let b = Worker::start(&nats, &prefix, &root, "b", &["--gpu", "--cpu-jobs", "1"]);
    let (code, s) = finish_run(&p, child, 120);
    let (jobs, ran, _, failed) = counts(&s);
    assert_eq!((code, jobs, ran, failed), (0, 4, 4, 0), "{s}");
    b.wait_for("done prep [input/v000.mp4]", 5);
    a.signal("-CONT");
    a.wait_for("another worker's entry was there first", 30);
    let entries: BTreeSet<String> = shared(&prefix, "entries").into_iter().collect();
    assert_eq!(entries, keys(&s), "no duplicate or stray entry");
    assert_eq!(
        runs_log(&root)["prep v000.mp4"],
        2,
        "both ran prep; one entry kept"
    );
}

// 4
#[test]
fn restarting_nats_mid_run_loses_no_job() {
    let mut nats = Nats::start();
    let prefix = prefix("restart");
    let p = project("0.3", 8);
    let root = p.path().to_path_buf();
    let a = Worker::start(&nats, &prefix, &root, "a", &["--gpu", "--cpu-jobs", "2"]);
    let _b = Worker::start(&nats, &prefix, &root, "b", &["--gpu", "--cpu-jobs", "2"]);
    let child = start_run(&p, &nats, &prefix);
    a.wait_for("done prep", 60);
    nats.restart(Duration::from_secs(1));
    let (code, s) = finish_run(&p, child, 180);
    let (jobs, ran, _, failed) = counts(&s);
    assert_eq!((code, jobs, ran, failed), (0, 25, 25, 0), "{s}");
    let entries: BTreeSet<String> = shared(&prefix, "entries").into_iter().collect();
    assert_eq!(entries, keys(&s));
    assert_eq!(p.read("output/INDEX.txt"), "done\n");
}

// 8
#[test]
fn a_real_media_stage_through_two_workers_matches_a_local_run() {
    let nats = Nats::start();
    let prefix = prefix("media");
    let manifest = "inputs: [input/]\nstages:\n  probe:\n    uses: media.probe\n  scenes:\n    uses: video.scenes\n";
    let local = Project::new(manifest, &[]);
    for (i, src) in ["testsrc", "smptebars"].iter().enumerate() {
        let out = local.path().join(format!("input/clip{i}.mp4"));
        let ok = Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg(format!("{src}=size=96x64:rate=10:duration=2"))
            .args(["-pix_fmt", "yuv420p"])
            .arg(&out)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ffmpeg");
    }
    let dist = Project::new(manifest, &[]);
    for i in 0..2 {
        let f = format!("input/clip{i}.mp4");
        std::fs::copy(local.path().join(&f), dist.path().join(&f)).unwrap();
    }
    let (code, s) = local.run(&[]);
    assert_eq!(code, 0, "{s}");
    let root = dist.path().to_path_buf();
    let _a = Worker::start(&nats, &prefix, &root, "a", &["--cpu-jobs", "1"]);
    let _b = Worker::start(&nats, &prefix, &root, "b", &["--cpu-jobs", "1"]);
    let (code, s) = run(&dist, &nats, &prefix, 180);
    let (jobs, ran, _, failed) = counts(&s);
    assert_eq!((code, jobs, ran, failed), (0, 4, 4, 0), "{s}");
    let files = |root: &Path| -> BTreeMap<String, Vec<u8>> {
        walk(&root.join("output"))
            .into_iter()
            .map(|f| {
                let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                (rel, std::fs::read(&f).unwrap())
            })
            .collect()
    };
    let (a, b) = (files(local.path()), files(dist.path()));
    assert!(a.len() >= 4, "{:?}", a.keys());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(
            b[name] == *bytes,
            "{name} differs between the local and the distributed run"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn without_a_cache_the_executor_is_refused_clearly() {
    let p = project("0", 1);
    let out = p.vsum(&["run", "pipeline.yaml", "--executor", "nats://127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("needs --cache s3://"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn failures_are_recorded_with_the_workers_error_after_their_deliveries() {
    let nats = Nats::start();
    let prefix = prefix("fail");
    let manifest = r#"
inputs: [input/]
stages:
  missing:
    run: ["no-such-program-for-vsum"]
  flaky:
    retries: 1
    run: ["sh", "-c", "echo boom >&2; exit 3"]
"#;
    let p = Project::new(manifest, &[("v.mp4", b"v")]);
    let root = p.path().to_path_buf();
    let w = Worker::start(&nats, &prefix, &root, "w", &["--cpu-jobs", "2"]);
    let (code, s) = run(&p, &nats, &prefix, 120);
    assert_ne!(code, 0);
    let (_, _, _, failed) = counts(&s);
    assert_eq!(failed, 2, "{s}");
    let error = |stage: &str| {
        s["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["stage"] == stage)
            .unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Deterministic: given up on at once. Transient: retried, then given up on.
    assert!(error("missing").contains("not found"), "{s}");
    assert!(error("missing").contains("after 1 delivery)"), "{s}");
    assert!(error("flaky").contains("after 2 deliveries"), "{s}");
    assert!(w.log().contains("will retry flaky"), "{}", w.log());
    assert_eq!(shared(&prefix, "failures").len(), 2);
    assert!(shared(&prefix, "entries").is_empty());
}

#[test]
fn a_job_whose_workers_all_die_is_failed_once_its_deliveries_run_out() {
    let nats = Nats::start();
    let prefix = prefix("exhausted");
    let manifest = "inputs: [input/]\nstages:\n  stuck:\n    run: [\"sleep\", \"60\"]\n";
    let p = Project::new(manifest, &[("v.mp4", b"v")]);
    let root = p.path().to_path_buf();
    let two = ["--max-deliver", "2", "--cpu-jobs", "1"];
    let child = start_run_with(&p, &nats, &prefix, &two[..2]);
    for name in ["a", "b"] {
        let w = Worker::start(&nats, &prefix, &root, name, &two);
        w.wait_for("started stuck", 30);
        w.signal("-KILL");
    }
    // The server gives up on the job when it would deliver it a third time: to a
    // worker that asks for work.
    let c = Worker::start(&nats, &prefix, &root, "c", &two);
    let (code, s) = finish_run(&p, child, 60);
    assert!(!c.log().contains("started stuck"), "{}", c.log());
    assert_ne!(code, 0);
    assert_eq!(counts(&s).3, 1, "{s}");
    let error = s["jobs"][0]["error"].as_str().unwrap();
    assert!(error.contains("no worker finished the job"), "{error}");
    assert!(error.contains("after 2 deliveries"), "{error}");
}

#[test]
fn shared_gc_removes_old_entries_before_their_blobs_and_keeps_the_rest() {
    let nats = Nats::start();
    let prefix = prefix("gc");
    let p = project("0", 2);
    let root = p.path().to_path_buf();
    let _w = Worker::start(&nats, &prefix, &root, "w", &["--gpu", "--cpu-jobs", "2"]);
    let (code, s) = run(&p, &nats, &prefix, 120);
    assert_eq!(code, 0, "{s}");
    let cache = s3().cache(&prefix);
    let blobs = shared(&prefix, "cas").len();
    // A cutoff before everything: nothing goes.
    let past = std::time::SystemTime::now() - Duration::from_secs(3600);
    let r = vsum_distributed::block_on(cache.gc(past)).unwrap();
    assert_eq!((r.entries_removed, r.blobs_removed), (0, 0), "{r:?}");
    assert_eq!(r.entries_kept, 7);
    // A cutoff after everything: every entry, then every blob.
    let future = std::time::SystemTime::now() + Duration::from_secs(3600);
    let r = vsum_distributed::block_on(cache.gc(future)).unwrap();
    assert_eq!((r.entries_removed, r.blobs_removed), (7, blobs), "{r:?}");
    assert!(shared(&prefix, "entries").is_empty() && shared(&prefix, "cas").is_empty());
    // The next run from an empty local store recomputes everything, and succeeds.
    std::fs::remove_dir_all(root.join(".vsum")).unwrap();
    let (code, s) = run(&p, &nats, &prefix, 120);
    assert_eq!((code, counts(&s).1), (0, 7), "{s}");

    // The same through the CLI: `vsum cache gc --shared URL --older-than AGE`.
    std::thread::sleep(Duration::from_millis(1100));
    let mut cmd = Command::new(bin());
    cmd.args([
        "cache",
        "gc",
        "--shared",
        &s3().url(&prefix),
        "--older-than",
        "0s",
        "--json",
    ]);
    for (k, v) in s3().env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["entries_removed"], 7, "{r}");
    assert!(shared(&prefix, "entries").is_empty());
}

#[test]
fn a_restarted_coordinator_picks_up_where_it_stopped() {
    let nats = Nats::start();
    let prefix = prefix("resume");
    let p = project("1", 6);
    let root = p.path().to_path_buf();
    let a = Worker::start(&nats, &prefix, &root, "a", &["--gpu", "--cpu-jobs", "1"]);
    let _b = Worker::start(&nats, &prefix, &root, "b", &["--gpu", "--cpu-jobs", "1"]);
    let mut first = start_run(&p, &nats, &prefix);
    a.wait_for("done prep", 60);
    first.kill().unwrap();
    first.wait().unwrap();
    // Workers went on with what was queued; the rerun finds the finished jobs in S3
    // and waits for the queued ones instead of publishing them again.
    let (code, s) = run(&p, &nats, &prefix, 180);
    let (jobs, ran, cached, failed) = counts(&s);
    assert_eq!((code, jobs, failed), (0, 19, 0), "{s}");
    assert_eq!(ran + cached, 19, "{s}");
    assert!(cached >= 1, "{s}");
    let log = runs_log(&root);
    assert!(log.values().all(|n| *n == 1), "a job ran twice: {log:?}");
    assert_eq!(log.values().sum::<usize>(), 19, "{log:?}");
    let entries: BTreeSet<String> = shared(&prefix, "entries").into_iter().collect();
    assert_eq!(entries, keys(&s));
}

#[test]
fn a_large_blob_goes_up_in_parts_and_comes_back_checked() {
    let prefix = prefix("large");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.mp4");
    // 65 MiB (over the 64 MiB single-put limit), not all alike.
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut bytes = Vec::with_capacity(65 << 20);
    for i in 0..65u8 {
        bytes.extend_from_slice(&block);
        bytes.push(i);
    }
    std::fs::write(&src, &bytes).unwrap();
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let cache = s3().cache(&prefix);
    vsum_distributed::block_on(cache.put_blob(&hash, &src)).unwrap();
    let back = dir.path().join("back.mp4");
    assert!(vsum_distributed::block_on(cache.get_blob(&hash, &back)).unwrap());
    assert!(std::fs::read(&back).unwrap() == bytes);
    // Under another name it does not check out: a miss, and no file is left.
    let wrong = blake3::hash(b"something else").to_hex().to_string();
    let other = dir.path().join("other");
    std::fs::copy(&src, &other).unwrap();
    vsum_distributed::block_on(cache.put_blob(&wrong, &other)).unwrap();
    let got = dir.path().join("got");
    assert!(!vsum_distributed::block_on(cache.get_blob(&wrong, &got)).unwrap());
    assert!(!got.exists());
}
