//! Engine overhead bench: how much the scheduler and cache cost per job, apart from
//! any real work. Prints a table; run with `cargo bench -p vsum-engine --bench engine`.
//!
//! Shapes: (1) 10,000 no-op jobs (1,000 videos x a 10-stage chain), cold then cached;
//! (2) the target case, a fully cached rerun of 100 videos x 6 stages (600 jobs);
//! (3) the same rerun at 1,000 videos, to show per-job cost and memory stay flat.

/// The allocator the `vsum` binary uses (src/main.rs), so the bench measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde_json::Value;
use vsum_engine::config::Config;
use vsum_engine::events::EventSink;
use vsum_engine::manifest;
use vsum_engine::run::{self, RunOptions};
use vsum_engine::stage::{
    CheckEnv, JobCtx, Lane, ParamDoc, ParamError, Registry, StageError, StageKind,
};
use vsum_engine::store::{LockMode, Store};

/// Writes one 16-byte file: the least a job can do and still have an output to cache.
struct Noop;

impl StageKind for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "does nothing (bench)"
    }
    fn default_lane(&self) -> Lane {
        Lane::Cpu
    }
    fn params_doc(&self) -> Vec<ParamDoc> {
        vec![]
    }
    fn check(&self, params: &Value, _env: &CheckEnv) -> Result<Value, Vec<ParamError>> {
        Ok(params.clone())
    }
    fn run(&self, ctx: &mut JobCtx) -> Result<(), StageError> {
        std::fs::write(ctx.out_dir.join("o.txt"), format!("{:>16}", ctx.stage_id))
            .map_err(|e| StageError::fatal(e.to_string()))
    }
}

fn project(dir: &Path, videos: usize, stages: usize) -> manifest::Manifest {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    for i in 0..videos {
        std::fs::write(dir.join(format!("in/v{i:05}.mp4")), format!("video {i}")).unwrap();
    }
    let mut yaml = String::from("inputs: [in/]\nstages:\n");
    for s in 0..stages {
        yaml.push_str(&format!("  s{s}:\n    uses: noop\n"));
        if s > 0 {
            yaml.push_str(&format!("    needs: [s{}]\n", s - 1));
        }
    }
    let path = dir.join("m.yaml");
    std::fs::write(&path, yaml).unwrap();
    manifest::load(&path, &registry()).unwrap()
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Noop);
    r
}

/// (wall seconds, jobs ran, jobs cached)
fn run_once(m: &manifest::Manifest, cfg: &Config) -> (f64, usize, usize) {
    let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
    let t = Instant::now();
    let s = run::run(
        m,
        &registry(),
        cfg,
        &store,
        &RunOptions::default(),
        EventSink::new(),
        &AtomicBool::new(false),
    )
    .unwrap();
    let failed: Vec<&str> = s.jobs.iter().filter_map(|j| j.error.as_deref()).collect();
    assert!(
        failed.is_empty(),
        "{} jobs failed: {failed:?}",
        failed.len()
    );
    (t.elapsed().as_secs_f64(), s.counts.ran, s.counts.cached)
}

/// A fully cached run in its two steps, timed apart: (plan seconds, execute seconds).
fn plan_then_execute(m: &manifest::Manifest, cfg: &Config) -> (f64, f64) {
    let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
    let reg = registry();
    let t = Instant::now();
    let plan = run::plan(m, &reg, cfg, &store, &RunOptions::default()).unwrap();
    let planned = t.elapsed().as_secs_f64();
    let executor = run::LocalExecutor::new(cfg).unwrap();
    let t = Instant::now();
    let s = run::execute(plan, &executor, EventSink::new(), &AtomicBool::new(false)).unwrap();
    assert_eq!(s.counts.cached, s.counts.jobs);
    (planned, t.elapsed().as_secs_f64())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn row(name: &str, jobs: usize, secs: f64, note: &str) {
    println!(
        "{name:<44} {jobs:>6} {:>9.1} {:>10.1}  {note}",
        secs * 1000.0,
        secs * 1e6 / jobs as f64
    );
}

fn main() {
    // `cargo bench` passes --bench; there is nothing to parse.
    let cfg = Config::default();
    // For a profiler: `ENGINE_BENCH_CACHED=DIR` makes the 10k-job project in DIR once
    // (cold), and on each call only runs it fully cached, ten times.
    if let Some(dir) = std::env::var_os("ENGINE_BENCH_CACHED") {
        let dir = Path::new(&dir);
        let fresh = !dir.join("m.yaml").exists();
        let m = project(dir, 1000, 10);
        if fresh {
            run_once(&m, &cfg);
        }
        for _ in 0..10 {
            let (plan, exec) = plan_then_execute(&m, &cfg);
            println!("plan {:.0} ms, execute {:.0} ms", plan * 1e3, exec * 1e3);
        }
        return;
    }
    println!(
        "{:<44} {:>6} {:>9} {:>10}  note",
        "case", "jobs", "wall ms", "us/job"
    );

    let small = tempfile::tempdir().unwrap();
    let m = project(small.path(), 100, 6);
    let (cold, ran, _) = run_once(&m, &cfg);
    row("100 videos x 6 stages, cold (all run)", ran, cold, "");
    let mut best = f64::MAX;
    for _ in 0..5 {
        let (t, _, cached) = run_once(&m, &cfg);
        assert_eq!(cached, 600);
        best = best.min(t);
    }
    row(
        "100 videos x 6 stages, fully cached (best of 5)",
        600,
        best,
        &format!(
            "target < 500 ms: {}",
            if best < 0.5 { "met" } else { "MISSED" }
        ),
    );
    let rss_small = peak_rss_kib();

    let big = tempfile::tempdir().unwrap();
    let m = project(big.path(), 1000, 10);
    let (cold, ran, _) = run_once(&m, &cfg);
    row(
        "1,000 videos x 10 stages, cold (10k no-op jobs)",
        ran,
        cold,
        "",
    );
    let mut best = (f64::MAX, 0.0, 0.0);
    for _ in 0..3 {
        let (plan, exec) = plan_then_execute(&m, &cfg);
        if plan + exec < best.0 {
            best = (plan + exec, plan, exec);
        }
    }
    row(
        "1,000 videos x 10 stages, fully cached (best of 3)",
        10_000,
        best.0,
        &format!(
            "target < 150 ms: {}; plan {:.0} ms + execute {:.0} ms",
            if best.0 < 0.15 { "met" } else { "MISSED" },
            best.1 * 1000.0,
            best.2 * 1000.0
        ),
    );
    let rss_big = peak_rss_kib();
    println!();
    println!(
        "peak RSS: {} MiB after the 600-job runs, {} MiB after the 10k-job runs ({:.1} KiB per extra job)",
        rss_small / 1024,
        rss_big / 1024,
        (rss_big.saturating_sub(rss_small)) as f64 / 9400.0
    );
}
