//! `search.index` (`scope: batch`): the library's search index, gathered from every
//! video's `text.embed` output.
//!
//! Writes a tantivy full-text index of the passages (`tantivy/`: BM25 over passage
//! text, chapter titles and video titles, English stemming and stop words), all the
//! passages' vectors in one `vectors.f32`, and `library.json` (the videos, the passages
//! in vector order, the model). `vsum search` reads it (see `query.rs`). The expensive
//! part, the embeddings, is cached per video by `text.embed`; only this gathering reruns
//! when a video is added.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, TantivyDocument};
use vsum_engine::contract::{Output, TypedStage, find_upstream_file};
use vsum_engine::stage::{CheckEnv, JobCtx, ParamError, Scope, StageError};

use super::embed::{Passage, Passages, VECTORS};
use super::minilm;

const KIND: &str = "search.index";
/// Bump when the layout of `library.json` or the index changes: `vsum search` refuses
/// an index of another version and says to rerun.
pub const FORMAT_VERSION: u32 = 1;
/// The tantivy index's folder.
pub const TANTIVY_DIR: &str = "tantivy";
/// The analyzer's name in the index.
pub(crate) const ANALYZER: &str = "vsum_en";

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {}

/// One video of the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LibraryVideo {
    pub folder: String,
    pub title: String,
    /// Relative to the manifest's folder.
    pub source: String,
    /// Its knowledge page, relative to the output folder.
    pub page: String,
}

/// A passage with its video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LibraryPassage {
    /// Index into `videos`.
    pub video: usize,
    #[serde(flatten)]
    pub passage: Passage,
}

/// `library.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Library {
    pub format: u32,
    pub model: String,
    pub dims: usize,
    pub videos: Vec<LibraryVideo>,
    /// In the order of `vectors.f32`; a passage's index is its id in the text index.
    pub passages: Vec<LibraryPassage>,
}

impl Output for Library {
    const FILE: &'static str = "library.json";
}

/// The index's fields.
pub struct Fields {
    pub id: Field,
    pub title: Field,
    pub chapter: Field,
    pub text: Field,
}

/// The schema of the text index.
pub fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: b.add_u64_field("id", INDEXED | STORED),
        title: b.add_text_field("title", text.clone()),
        chapter: b.add_text_field("chapter", text.clone()),
        text: b.add_text_field("text", text),
    };
    (b.build(), fields)
}

/// English words: lower case, stop words out, Snowball stems.
pub fn register_analyzer(index: &Index) {
    let mut b = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .dynamic();
    if let Some(stop) = StopWordFilter::new(Language::English) {
        b = b.filter_dynamic(stop);
    }
    index.tokenizers().register(
        ANALYZER,
        b.filter_dynamic(Stemmer::new(Language::English)).build(),
    );
}

fn tantivy_error(e: tantivy::TantivyError) -> StageError {
    StageError::retryable(format!("{KIND}: the text index: {e}"))
}

/// Builds the text index of `lib` in `dir`.
pub fn build_text_index(dir: &Path, lib: &Library) -> Result<(), StageError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StageError::retryable(format!("cannot create {}: {e}", dir.display())))?;
    let (schema, f) = schema();
    let index = Index::create_in_dir(dir, schema).map_err(tantivy_error)?;
    register_analyzer(&index);
    let mut writer = index
        .writer_with_num_threads::<TantivyDocument>(1, 50_000_000)
        .map_err(tantivy_error)?;
    for (id, p) in lib.passages.iter().enumerate() {
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.id, id as u64);
        doc.add_text(f.title, &lib.videos[p.video].title);
        doc.add_text(f.chapter, &p.passage.chapter_title);
        doc.add_text(f.text, &p.passage.text);
        writer.add_document(doc).map_err(tantivy_error)?;
    }
    writer.commit().map_err(tantivy_error)?;
    writer.wait_merging_threads().map_err(tantivy_error)?;
    Ok(())
}

/// The `search.index` kind.
#[derive(Debug, Default, Clone)]
pub struct SearchIndexStage;

impl TypedStage for SearchIndexStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    const VERSION: u32 = FORMAT_VERSION;
    const SUMMARY: &'static str = "The library's search index (BM25 text index + every passage's embedding) for `vsum search`; needs text.embed";

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        if env.scope != Scope::Batch {
            return Err(vec![
                ParamError::new(&[], format!("{KIND} runs once per batch"))
                    .hint("add `scope: batch`"),
            ]);
        }
        if !env.needs.iter().any(|(_, s)| *s == Scope::Video) {
            return Err(vec![
                ParamError::new(&[], format!("{KIND} needs the per-video text.embed stage"))
                    .hint("add `needs: [<your text.embed stage>]`"),
            ]);
        }
        Ok(p)
    }

    fn run(&self, _p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let mut lib = Library {
            format: FORMAT_VERSION,
            ..Library::default()
        };
        let mut vectors: Vec<u8> = Vec::new();
        for item in ctx.batch {
            let Some(p) = item.upstream::<Passages>()? else {
                continue;
            };
            let vpath = find_upstream_file(&item.upstream, VECTORS).ok_or_else(|| {
                StageError::fatal(format!(
                    "{}: passages.json without {VECTORS}",
                    item.video.rel.display()
                ))
                .hint("rerun its text.embed stage with --force")
            })?;
            let bytes = std::fs::read(&vpath).map_err(|e| {
                StageError::retryable(format!("cannot read {}: {e}", vpath.display()))
            })?;
            let n = minilm::from_bytes(&bytes, p.dims).map(|v| v.len());
            if n != Some(p.passages.len()) {
                return Err(StageError::fatal(format!(
                    "{}: {VECTORS} does not hold one {}-dimension vector per passage",
                    item.video.rel.display(),
                    p.dims
                ))
                .hint("rerun its text.embed stage with --force"));
            }
            if lib.model.is_empty() {
                lib.model = p.model.clone();
                lib.dims = p.dims;
            } else if lib.model != p.model || lib.dims != p.dims {
                return Err(StageError::fatal(format!(
                    "the videos were embedded with different models ({} and {})",
                    lib.model, p.model
                ))
                .hint("use one text.embed stage (one model) for the library"));
            }
            let folder = item.video.folder.to_string_lossy().into_owned();
            let video = lib.videos.len();
            lib.videos.push(LibraryVideo {
                page: format!("{folder}/{}/summary.html", p.knowledge_stage),
                folder,
                title: p.title.clone(),
                source: p.source.clone(),
            });
            lib.passages.extend(
                p.passages
                    .into_iter()
                    .map(|passage| LibraryPassage { video, passage }),
            );
            vectors.extend_from_slice(&bytes);
        }
        build_text_index(&ctx.out_dir.join(TANTIVY_DIR), &lib)?;
        let out = ctx.out_dir.join(VECTORS);
        std::fs::write(&out, &vectors)
            .map_err(|e| StageError::retryable(format!("cannot write {}: {e}", out.display())))?;
        ctx.write_output(&lib)
    }
}
