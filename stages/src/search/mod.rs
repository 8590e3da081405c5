//! A library you can ask: sentence embeddings of every video's passages (`text.embed`)
//! and of its transcript's sentences for topic chapters (`text.sentences`),
//! one search index over the batch (`search.index`), and the hybrid query behind
//! `vsum search` (`query.rs`): BM25 through tantivy fused with embedding similarity.

pub mod embed;
pub mod index;
pub mod minilm;
pub mod query;
pub mod sentences;

use vsum_engine::stage::Registry;
use vsum_models::ModelsDir;

pub fn register_search(reg: &mut Registry, models: &ModelsDir) {
    reg.register(embed::EmbedStage::with_models_dir(models.clone()));
    reg.register(index::SearchIndexStage);
    reg.register(sentences::SentencesStage::with_models_dir(models.clone()));
}
