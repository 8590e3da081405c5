//! The GPU lane with stage kinds written for the test: a model loaded once and reused
//! across videos, jobs grouped by model, and the out-of-memory fallback to the CPU.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use vsum_engine::config::Config;
use vsum_engine::events::{Event, EventSink, Outcome};
use vsum_engine::manifest;
use vsum_engine::run::{self, RunOptions, RunSummary};
use vsum_engine::stage::{
    CheckEnv, JobCtx, Lane, ParamDoc, ParamError, Registry, StageError, StageKind,
};
use vsum_engine::store::{LockMode, Store};

/// "Loads" the model named by its `model` param once and writes its name per job.
/// With `oom: true` it fails for memory unless told to use the CPU.
struct FakeModel;

impl StageKind for FakeModel {
    fn name(&self) -> &'static str {
        "test.model"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "test"
    }
    fn default_lane(&self) -> Lane {
        Lane::Gpu
    }
    fn params_doc(&self) -> Vec<ParamDoc> {
        vec![]
    }
    fn check(&self, params: &Value, _: &CheckEnv) -> Result<Value, Vec<ParamError>> {
        Ok(params.clone())
    }
    fn resource_group(&self, params: &Value) -> Option<String> {
        params["model"].as_str().map(str::to_string)
    }
    fn run(&self, ctx: &mut JobCtx) -> Result<(), StageError> {
        let model = ctx.params["model"].as_str().unwrap_or("m").to_string();
        if ctx.params["oom"].as_bool() == Some(true) && !ctx.force_cpu {
            if let Some(r) = ctx.resources.as_deref_mut() {
                r.drop_resource(&model);
            }
            return Err(StageError::gpu_out_of_memory("CUDA out of memory (test)"));
        }
        let device = if ctx.force_cpu { "cpu" } else { "gpu" };
        let loaded: &mut String = ctx
            .resources
            .as_deref_mut()
            .expect("GPU-lane jobs get resources")
            .get_or_load(&model, || {
                Ok::<_, StageError>(format!("weights of {model}"))
            })?;
        std::fs::write(ctx.out_dir.join("o.txt"), format!("{loaded} on {device}"))
            .map_err(|e| StageError::fatal(e.to_string()))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(FakeModel);
    r
}

fn run_batch(dir: &Path, yaml: &str, videos: usize, cfg: Config) -> (RunSummary, Vec<Event>) {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    for i in 0..videos {
        std::fs::write(dir.join(format!("in/v{i}.mp4")), format!("video {i}")).unwrap();
    }
    let path = dir.join("m.yaml");
    std::fs::write(&path, yaml).unwrap();
    let m = manifest::load(&path, &registry()).unwrap();
    let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
    let events = EventSink::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    events.subscribe(move |e| s2.lock().unwrap().push(e.clone()));
    let summary = run::run(
        &m,
        &registry(),
        &cfg,
        &store,
        &RunOptions::default(),
        events,
        &AtomicBool::new(false),
    )
    .unwrap();
    let events = seen.lock().unwrap().clone();
    (summary, events)
}

fn loads(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ResourceLoaded { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_model_is_loaded_once_for_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "inputs: [in/]\nstages:\n  t:\n    uses: test.model\n    with: {model: tiny}\n";
    let (s, events) = run_batch(dir.path(), yaml, 10, Config::default());
    assert_eq!(s.counts.ran, 10);
    assert_eq!(loads(&events), vec!["tiny"]);
}

#[test]
fn the_lane_groups_jobs_by_model_instead_of_swapping() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "inputs: [in/]\nstages:\n  a:\n    uses: test.model\n    with: {model: A}\n  b:\n    uses: test.model\n    with: {model: B}\n";
    let cfg = Config {
        gpu_models: 1,
        ..Config::default()
    };
    let (s, events) = run_batch(dir.path(), yaml, 6, cfg);
    assert_eq!(s.counts.ran, 12);
    // Alternating would load 12 times with room for one model; grouping needs a few.
    let n = loads(&events).len();
    assert!(n <= 4, "too many model swaps: {:?}", loads(&events));
}

#[test]
fn gpu_out_of_memory_retries_that_job_on_the_cpu_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "inputs: [in/]\nconfig: {retries: 0}\nstages:\n  t:\n    uses: test.model\n    with: {model: big, oom: true}\n";
    let (s, _) = run_batch(dir.path(), yaml, 2, Config::default());
    assert_eq!(s.counts.ran, 2, "{:?}", s.jobs);
    for j in &s.jobs {
        assert_eq!(j.outcome, Outcome::Ran);
        assert!(j.notes[0].contains("retried on the CPU"), "{:?}", j.notes);
        assert_eq!(j.attempts, 1, "the fallback does not use up retries");
    }
    let out = std::fs::read_to_string(dir.path().join("output/v0/t/o.txt")).unwrap();
    assert_eq!(out, "weights of big on cpu");
}

/// A kind made for the GPU that says which device it was told to use, and runs out of
/// GPU memory unless told to use the CPU.
struct GpuOnly;

impl StageKind for GpuOnly {
    fn name(&self) -> &'static str {
        "test.gpu_only"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "test"
    }
    fn default_lane(&self) -> Lane {
        Lane::Gpu
    }
    fn params_doc(&self) -> Vec<ParamDoc> {
        vec![]
    }
    fn check(&self, params: &Value, _: &CheckEnv) -> Result<Value, Vec<ParamError>> {
        Ok(params.clone())
    }
    fn run(&self, ctx: &mut JobCtx) -> Result<(), StageError> {
        if !ctx.force_cpu {
            return Err(StageError::gpu_out_of_memory("CUDA out of memory (test)"));
        }
        std::fs::write(ctx.out_dir.join("device.txt"), "cpu")
            .map_err(|e| StageError::fatal(e.to_string()))
    }
}

fn run_gpu_only(dir: &Path, lane: &str) -> RunSummary {
    std::fs::create_dir_all(dir.join("in")).unwrap();
    std::fs::write(dir.join("in/v0.mp4"), "video").unwrap();
    let path = dir.join("m.yaml");
    let yaml = format!(
        "inputs: [in/]\nconfig: {{retries: 0}}\nstages:\n  t:\n    uses: test.gpu_only\n{lane}"
    );
    std::fs::write(&path, yaml).unwrap();
    let mut registry = Registry::new();
    registry.register(GpuOnly);
    let m = manifest::load(&path, &registry).unwrap();
    let cfg = Config::default();
    let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
    run::run(
        &m,
        &registry,
        &cfg,
        &store,
        &RunOptions::default(),
        EventSink::new(),
        &AtomicBool::new(false),
    )
    .unwrap()
}

#[test]
fn a_gpu_kind_out_of_gpu_memory_is_retried_once_on_the_cpu_and_the_summary_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let s = run_gpu_only(dir.path(), "");
    assert_eq!(s.counts.ran, 1, "{:?}", s.jobs);
    let j = &s.jobs[0];
    assert_eq!(j.label.lane, Lane::Gpu);
    assert_eq!(j.attempts, 1);
    assert_eq!(
        j.notes,
        vec!["GPU out of memory (CUDA out of memory (test)); retried on the CPU".to_string()]
    );
    // The note is in the saved run summary too.
    let saved = std::fs::read_to_string(store_runs(dir.path()).pop().expect("a saved run summary"))
        .unwrap();
    let saved: RunSummary = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved.jobs[0].notes, j.notes);
}

#[test]
fn a_gpu_kind_placed_on_the_cpu_lane_computes_on_the_cpu_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = run_gpu_only(dir.path(), "    lane: cpu\n");
    assert_eq!(s.counts.ran, 1, "{:?}", s.jobs);
    let j = &s.jobs[0];
    assert_eq!(j.label.lane, Lane::Cpu);
    assert_eq!(j.attempts, 1);
    // It never tried the GPU (no out-of-memory note), and says where it computed.
    assert_eq!(
        j.notes,
        vec!["a GPU kind on `lane: cpu`: computed on the CPU".to_string()]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("output/v0/t/device.txt")).unwrap(),
        "cpu"
    );
}

fn store_runs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut runs: Vec<_> = std::fs::read_dir(dir.join(".vsum/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    runs
}
