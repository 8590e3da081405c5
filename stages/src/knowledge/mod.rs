//! Knowledge output: what people (and LLMs) read. `knowledge.compose` writes one
//! knowledge file per video; `knowledge.index` writes the batch's front page;
//! `knowledge.related` gives each video its related videos once the library is indexed.

pub mod chapters;
pub mod compose;
pub mod index;
pub mod keyphrase;
pub mod model;
pub mod related;
pub mod render;
pub mod segment;
pub mod slides;
pub mod summarize;
pub mod text;

use vsum_engine::stage::Registry;
use vsum_models::ModelsDir;

pub fn register_knowledge(reg: &mut Registry, models: &ModelsDir) {
    reg.register(compose::ComposeStage::with_models_dir(models.clone()));
    reg.register(index::IndexStage);
    reg.register(related::RelatedStage);
}

/// Name and license of an installed model, by its blake3 (from the models manifest).
pub fn model_name(models: &ModelsDir, blake3: &str) -> Option<(String, Option<String>)> {
    let manifest = vsum_models::ModelsManifest::load(models).ok()?;
    manifest
        .models
        .into_iter()
        .find(|(_, m)| m.blake3 == blake3)
        .map(|(name, m)| (name, Some(m.license)))
}
