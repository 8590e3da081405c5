//! vsum's stage kinds. The engine knows none of them by name: the binary builds a
//! [`Registry`] here, one line per kind (or per family of kinds).

pub mod command;
pub mod knowledge;
pub mod media;
mod process;
pub mod search;
pub mod speech;
pub mod vision;

use std::sync::Arc;

use media::helper::MediaHelper;
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

/// Every built-in stage kind, all run in this process; the ones that load models look
/// in `models`. A binary that runs FFmpeg anyway (tests, benches, the media helper)
/// uses this one.
pub fn registry(models: &ModelsDir) -> Registry {
    let mut r = Registry::new();
    media::register_media(&mut r);
    register_the_rest(&mut r, models);
    r
}

/// Every built-in stage kind, with the media kinds run by the helper binary (see
/// [`media::helper`]): what `vsum` uses, so that it never loads FFmpeg itself.
pub fn registry_with_media_helper(models: &ModelsDir, helper: MediaHelper) -> Registry {
    let mut r = Registry::new();
    media::helper::register_remote(&mut r, &Arc::new(helper));
    register_the_rest(&mut r, models);
    r
}

/// The kinds that are not media kinds.
fn register_the_rest(r: &mut Registry, models: &ModelsDir) {
    r.register(command::CommandStage);
    r.register(speech::vad::VadStage::with_models_dir(models.clone()));
    r.register(speech::whisper::WhisperStage::with_models_dir(
        models.clone(),
    ));
    r.register(vision::yolo::YoloStage::with_models_dir(models.clone()));
    r.register(vision::ocr::OcrStage::with_models_dir(models.clone()));
    knowledge::register_knowledge(r, models);
    search::register_search(r, models);
}
