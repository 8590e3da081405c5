//! vsum's stage kinds. The engine knows none of them by name: the binary builds a
//! [`Registry`] here, one line per kind (or per family of kinds).

pub mod command;
pub mod knowledge;
pub mod media;
pub mod models;
pub mod speech;
pub mod vision;

use vsum_engine::stage::Registry;

/// Every built-in stage kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(command::CommandStage);
    media::register_media(&mut r);
    r.register(speech::vad::VadStage);
    r.register(speech::whisper::WhisperStage);
    r.register(vision::yolo::YoloStage::default());
    r.register(vision::ocr::OcrStage::default());
    knowledge::register_knowledge(&mut r);
    r
}
