//! Knowledge output: what people (and LLMs) read. `knowledge.compose` writes one
//! knowledge file per video; `knowledge.index` writes the batch's front page.

pub mod compose;
pub mod index;
pub mod model;
pub mod render;
pub mod text;

use vsum_engine::stage::Registry;

pub fn register_knowledge(reg: &mut Registry) {
    reg.register(compose::ComposeStage);
    reg.register(index::IndexStage);
}

/// Name and license of an installed model, by its blake3 (from the models manifest).
pub fn model_name(blake3: &str) -> Option<(String, Option<String>)> {
    let dir = std::env::var_os("VSUM_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/vsum/models"))
        })?;
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("models.json")).ok()?).ok()?;
    v["models"].as_object()?.iter().find_map(|(name, m)| {
        (m["blake3"].as_str() == Some(blake3))
            .then(|| (name.clone(), m["license"].as_str().map(str::to_string)))
    })
}
