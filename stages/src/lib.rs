//! vsum's stage kinds. The engine knows none of them by name: the binary builds a
//! [`Registry`] here, one line per kind (or per family of kinds).

pub mod command;
pub mod knowledge;
pub mod media;
pub mod speech;
pub mod vision;

use vsum_engine::stage::{Registry, StageError};
use vsum_models::ModelsDir;

/// Fault injection for the GPU tests: `VSUM_FAULT=gpu_oom` (or `gpu_oom:<kind>`) makes
/// a GPU stage report out-of-memory whenever it would run on the GPU, so the engine's
/// retry on the CPU can be tested on a machine without one.
pub(crate) fn injected_gpu_oom(kind: &str) -> Option<StageError> {
    let v = std::env::var("VSUM_FAULT").ok()?;
    (v == "gpu_oom" || v.strip_prefix("gpu_oom:") == Some(kind)).then(|| {
        StageError::gpu_out_of_memory(format!("{kind}: injected GPU out-of-memory (VSUM_FAULT)"))
    })
}

/// Every built-in stage kind; the ones that load models look in `models`.
pub fn registry(models: &ModelsDir) -> Registry {
    let mut r = Registry::new();
    r.register(command::CommandStage);
    media::register_media(&mut r);
    r.register(speech::vad::VadStage::with_models_dir(models.clone()));
    r.register(speech::whisper::WhisperStage::with_models_dir(
        models.clone(),
    ));
    r.register(vision::yolo::YoloStage::with_models_dir(models.clone()));
    r.register(vision::ocr::OcrStage::with_models_dir(models.clone()));
    knowledge::register_knowledge(&mut r, models);
    r
}
