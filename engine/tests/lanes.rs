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
