//! `search.index` (`scope: batch`): the library's search index, gathered from every
//! video's `text.embed` output, and kept up to date instead of rebuilt.
//!
//! Writes a tantivy full-text index of the passages (`tantivy/`: BM25 over passage
//! text, chapter titles and video titles, English stemming and stop words), all the
//! passages' vectors in one `vectors.f32`, `library.json` (the videos with a digest of
//! their passages, the passages in vector order, the model) and `build.json` (how this
//! index was made). `vsum search` reads it (see `query.rs`). `related.json` lists each
//! video's nearest videos by the similarity of their mean passage vectors (the report
//! shows them on the cards and the video pages).
//!
//! Incremental: the kind gets its last output from the cache (`JobCtx::previous`) and
//! updates a copy of that text index: the documents of a video whose passages changed
//! or that left the library are deleted by its folder term, only new and changed videos
//! are added, and the segments that held deleted documents are merged, so the BM25
//! statistics (document counts, lengths) are those of a full rebuild. An index of
//! another format, model or schema, or one that does not match its `library.json`, is
//! rebuilt from scratch, and `build.json` and a warning say why. The embeddings are
//! cached per video by `text.embed`; `vectors.f32` is their concatenation.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexWriter, TantivyDocument, Term};
use vsum_engine::contract::{Output, TypedStage, find_upstream_file};
use vsum_engine::events::Event;
use vsum_engine::stage::{CheckEnv, JobCtx, ParamError, Scope, StageError};

use super::embed::{Passage, Passages, VECTORS};
use super::minilm;

const KIND: &str = "search.index";
/// Bump when the layout of `library.json` or the index changes: `vsum search` refuses
/// an index of another version and says to rerun, and the stage rebuilds it.
pub const FORMAT_VERSION: u32 = 2;
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
    /// Its output folder: unique in the library, and its documents' term in the index.
    pub folder: String,
    pub title: String,
    /// Relative to the manifest's folder.
    pub source: String,
    /// Its knowledge page, relative to the output folder.
    pub page: String,
    /// blake3 of its `passages.json` and `vectors.f32`: same digest, same documents.
    #[serde(default)]
    pub digest: String,
    /// Where its passages start in `passages` (and `vectors.f32`), and how many.
    #[serde(default)]
    pub first: usize,
    #[serde(default)]
    pub count: usize,
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
    /// In the order of `vectors.f32`; a document of the text index names its video's
    /// folder and its place among that video's passages.
    pub passages: Vec<LibraryPassage>,
}

impl Output for Library {
    const FILE: &'static str = "library.json";
}

impl Library {
    /// Passage id of the `n`th passage of the video in `folder`.
    pub fn passage_ids(&self) -> HashMap<&str, (usize, usize)> {
        self.videos
            .iter()
            .map(|v| (v.folder.as_str(), (v.first, v.count)))
            .collect()
    }
}

/// `build.json`: how this index was made. The one output that depends on what the
/// cache held before, not only on the library (search results never do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexBuild {
    /// `previous` (updated the last index) or `scratch`.
    pub from: String,
    /// Why it was built from scratch.
    pub why: Option<String>,
    /// Videos whose documents were added (new or changed), kept, and deleted (changed
    /// or gone), by folder.
    pub added: Vec<String>,
    pub reused: Vec<String>,
    pub removed: Vec<String>,
    /// Documents written this time.
    pub added_passages: usize,
}

impl Output for IndexBuild {
    const FILE: &'static str = "build.json";
}

/// Videos about the same things as another: at most this many per video ...
pub const RELATED_MAX: usize = 5;
/// ... each at least this similar (cosine of the videos' mean passage vectors).
pub const RELATED_MIN: f32 = 0.25;

/// A video like another one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelatedVideo {
    pub folder: String,
    pub title: String,
    /// Its knowledge page, relative to the output folder.
    pub page: String,
    /// Cosine similarity of the two videos' mean passage vectors.
    pub score: f32,
}

/// `related.json`: for each video (by folder), the library's videos most like it, most
/// similar first; never the video itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Related {
    pub videos: std::collections::BTreeMap<String, Vec<RelatedVideo>>,
}

impl Output for Related {
    const FILE: &'static str = "related.json";
}

/// Each video's related videos: the cosine similarity of the unit mean of its passage
/// vectors (what it is about as a whole) with every other video's.
pub fn related(lib: &Library, vectors: &[Vec<f32>]) -> Related {
    let means: Vec<Option<Vec<f32>>> = lib
        .videos
        .iter()
        .map(|v| {
            let vs = vectors.get(v.first..v.first + v.count)?;
            let mut m = vec![0.0f32; lib.dims];
            for x in vs {
                for (a, b) in m.iter_mut().zip(x) {
                    *a += b;
                }
            }
            let norm = m.iter().map(|x| x * x).sum::<f32>().sqrt();
            (norm > 0.0).then(|| m.iter().map(|x| x / norm).collect())
        })
        .collect();
    let mut out = Related::default();
    for (i, v) in lib.videos.iter().enumerate() {
        let Some(a) = &means[i] else { continue };
        let mut near: Vec<(f32, usize)> = means
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(j, b)| Some((minilm::cosine(a, b.as_ref()?), j)))
            .filter(|(c, _)| *c >= RELATED_MIN)
            .collect();
        near.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        near.truncate(RELATED_MAX);
        out.videos.insert(
            v.folder.clone(),
            near.into_iter()
                .map(|(c, j)| RelatedVideo {
                    folder: lib.videos[j].folder.clone(),
                    title: lib.videos[j].title.clone(),
                    page: lib.videos[j].page.clone(),
                    score: (c * 1000.0).round() / 1000.0,
                })
                .collect(),
        );
    }
    out
}

/// The index's fields.
pub struct Fields {
    /// The video's folder, untokenized: what a video's documents are deleted by.
    pub video: Field,
    /// The document's place among its video's passages.
    pub passage: Field,
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
        video: b.add_text_field("video", STRING | STORED),
        passage: b.add_u64_field("passage", INDEXED | STORED),
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

fn writer(index: &Index) -> Result<IndexWriter<TantivyDocument>, StageError> {
    index
        .writer_with_num_threads::<TantivyDocument>(1, 50_000_000)
        .map_err(tantivy_error)
}

/// Adds the documents of `lib`'s video `v`; returns how many.
fn add_video(
    writer: &IndexWriter<TantivyDocument>,
    f: &Fields,
    lib: &Library,
    v: usize,
) -> Result<usize, StageError> {
    let video = &lib.videos[v];
    for (n, p) in lib.passages[video.first..video.first + video.count]
        .iter()
        .enumerate()
    {
        let mut doc = TantivyDocument::default();
        doc.add_text(f.video, &video.folder);
        doc.add_u64(f.passage, n as u64);
        doc.add_text(f.title, &video.title);
        doc.add_text(f.chapter, &p.passage.chapter_title);
        doc.add_text(f.text, &p.passage.text);
        writer.add_document(doc).map_err(tantivy_error)?;
    }
    Ok(video.count)
}

/// Builds the text index of `lib` in `dir` from scratch.
pub fn build_text_index(dir: &Path, lib: &Library) -> Result<usize, StageError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StageError::retryable(format!("cannot create {}: {e}", dir.display())))?;
    let (schema, f) = schema();
    let index = Index::create_in_dir(dir, schema).map_err(tantivy_error)?;
    register_analyzer(&index);
    let mut writer = writer(&index)?;
    let mut added = 0;
    for v in 0..lib.videos.len() {
        added += add_video(&writer, &f, lib, v)?;
    }
    writer.commit().map_err(tantivy_error)?;
    writer.wait_merging_threads().map_err(tantivy_error)?;
    Ok(added)
}

/// Copies the files of a folder (a staged, read-only view) into `to`, writable.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            let dest = to.join(e.file_name());
            std::fs::copy(e.path(), &dest)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(())
}

/// Updates a copy of the previous text index (in `previous`, made for `old`) into
/// `dir` for `lib`. `Err(why)` when it cannot be used: the caller rebuilds.
pub fn update_text_index(
    previous: &Path,
    old: &Library,
    dir: &Path,
    lib: &Library,
    build: &mut IndexBuild,
) -> Result<(), String> {
    if old.format != FORMAT_VERSION {
        return Err(format!(
            "the previous index was written by another vsum version (format {}, this one writes {FORMAT_VERSION})",
            old.format
        ));
    }
    if old.model != lib.model || old.dims != lib.dims {
        return Err(format!(
            "the previous index holds another model's embeddings ({})",
            old.model
        ));
    }
    copy_dir(&previous.join(TANTIVY_DIR), dir)
        .map_err(|e| format!("cannot copy the previous text index: {e}"))?;
    let index =
        Index::open_in_dir(dir).map_err(|e| format!("cannot open the previous text index: {e}"))?;
    let (schema, f) = schema();
    if index.schema() != schema {
        return Err("the previous text index has another schema".into());
    }
    register_analyzer(&index);
    let bad = |e: tantivy::TantivyError| format!("cannot update the previous text index: {e}");
    let held: HashMap<&str, &LibraryVideo> =
        old.videos.iter().map(|v| (v.folder.as_str(), v)).collect();
    let kept: HashSet<&str> = lib
        .videos
        .iter()
        .filter(|v| {
            held.get(v.folder.as_str())
                .is_some_and(|o| o.digest == v.digest)
        })
        .map(|v| v.folder.as_str())
        .collect();
    let mut writer = writer(&index).map_err(|e| e.message)?;
    let mut deleted = false;
    for v in &old.videos {
        if !kept.contains(v.folder.as_str()) {
            writer.delete_term(Term::from_field_text(f.video, &v.folder));
            build.removed.push(v.folder.clone());
            deleted = true;
        }
    }
    for (i, v) in lib.videos.iter().enumerate() {
        if kept.contains(v.folder.as_str()) {
            build.reused.push(v.folder.clone());
        } else {
            build.added_passages += add_video(&writer, &f, lib, i).map_err(|e| e.message)?;
            build.added.push(v.folder.clone());
        }
    }
    writer.commit().map_err(bad)?;
    if deleted {
        // Deleted documents still count in a segment's statistics until it is merged:
        // merge the segments that hold some, so BM25 scores are a rebuild's.
        let ids: Vec<_> = index
            .searchable_segment_metas()
            .map_err(bad)?
            .iter()
            .filter(|m| m.has_deletes())
            .map(|m| m.id())
            .collect();
        if !ids.is_empty() {
            writer.merge(&ids).wait().map_err(bad)?;
        }
    }
    writer.wait_merging_threads().map_err(bad)?;
    let docs = index
        .reader()
        .map_err(bad)?
        .searcher()
        .segment_readers()
        .iter()
        .map(|r| (r.num_docs() as usize, r.num_deleted_docs() as usize))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    if docs != (lib.passages.len(), 0) {
        return Err(format!(
            "the previous text index did not match its library.json ({} documents and {} deleted for {} passages)",
            docs.0,
            docs.1,
            lib.passages.len()
        ));
    }
    Ok(())
}

/// The library's previous index, as this job was given it.
fn previous_library(dir: &Path) -> Result<Library, String> {
    let bytes = std::fs::read(dir.join(Library::FILE))
        .map_err(|e| format!("the previous index has no {}: {e}", Library::FILE))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "the previous index's {} is not one this vsum reads: {e}",
            Library::FILE
        )
    })
}

/// The `search.index` kind.
#[derive(Debug, Default, Clone)]
pub struct SearchIndexStage;

impl TypedStage for SearchIndexStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    const VERSION: u32 = FORMAT_VERSION;
    const SUMMARY: &'static str = "The library's search index (BM25 text index + every passage's embedding) for `vsum search`, updated with the new and changed videos only; needs text.embed";
    const INCREMENTAL: bool = true;

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
            let read = |name: &str| -> Result<Vec<u8>, StageError> {
                let path = find_upstream_file(&item.upstream, name).ok_or_else(|| {
                    StageError::fatal(format!(
                        "{}: passages.json without {name}",
                        item.video.rel.display()
                    ))
                    .hint("rerun its text.embed stage with --force")
                })?;
                std::fs::read(&path).map_err(|e| {
                    StageError::retryable(format!("cannot read {}: {e}", path.display()))
                })
            };
            let bytes = read(VECTORS)?;
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
            let mut digest = blake3::Hasher::new();
            digest.update(&read(Passages::FILE)?);
            digest.update(&bytes);
            let folder = item.video.folder.to_string_lossy().into_owned();
            let video = lib.videos.len();
            lib.videos.push(LibraryVideo {
                page: format!("{folder}/{}/summary.html", p.knowledge_stage),
                folder,
                title: p.title.clone(),
                source: p.source.clone(),
                digest: digest.finalize().to_hex().to_string(),
                first: lib.passages.len(),
                count: p.passages.len(),
            });
            lib.passages.extend(
                p.passages
                    .into_iter()
                    .map(|passage| LibraryPassage { video, passage }),
            );
            vectors.extend_from_slice(&bytes);
        }
        let dir = ctx.out_dir.join(TANTIVY_DIR);
        let started = std::time::Instant::now();
        let mut build = IndexBuild {
            from: "previous".into(),
            ..IndexBuild::default()
        };
        let updated = match ctx.previous {
            None => Err(None),
            Some(prev) => previous_library(prev)
                .and_then(|old| update_text_index(prev, &old, &dir, &lib, &mut build))
                .map_err(Some),
        };
        if let Err(why) = updated {
            if let Some(why) = &why {
                ctx.events.emit(Event::Warning {
                    message: format!("{}: {why}; rebuilding the search index", ctx.stage_id),
                });
            }
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| {
                    StageError::retryable(format!("cannot clear {}: {e}", dir.display()))
                })?;
            }
            build = IndexBuild {
                from: "scratch".into(),
                why: Some(why.unwrap_or_else(|| "no previous index in the cache".into())),
                added: lib.videos.iter().map(|v| v.folder.clone()).collect(),
                added_passages: build_text_index(&dir, &lib)?,
                ..IndexBuild::default()
            };
        }
        tracing::info!(
            from = build.from.as_str(),
            added = build.added.len(),
            reused = build.reused.len(),
            removed = build.removed.len(),
            ms = started.elapsed().as_millis() as u64,
            "{KIND}: text index"
        );
        let out = ctx.out_dir.join(VECTORS);
        std::fs::write(&out, &vectors)
            .map_err(|e| StageError::retryable(format!("cannot write {}: {e}", out.display())))?;
        let all = minilm::from_bytes(&vectors, lib.dims).unwrap_or_default();
        ctx.write_output(&related(&lib, &all))?;
        ctx.write_output(&build)?;
        ctx.write_output(&lib)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;

    use vsum_engine::events::EventSink;
    use vsum_engine::stage::{BatchItem, StageKind, Video};

    use super::*;
    use crate::search::query::Searcher;

    const DIMS: usize = 4;

    /// A video's `text.embed` output: passages about `words`, with made-up vectors.
    fn embedded(root: &Path, folder: &str, texts: &[&str]) -> BatchItem {
        let dir = root.join(folder).join("embed");
        std::fs::create_dir_all(&dir).unwrap();
        let passages: Vec<Passage> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Passage {
                chapter: i,
                chapter_title: format!("Part {i}"),
                start: i as f64 * 30.0,
                end: i as f64 * 30.0 + 30.0,
                kind: "speech".into(),
                text: t.to_string(),
            })
            .collect();
        let vectors: Vec<Vec<f32>> = (0..texts.len())
            .map(|i| {
                let mut v = vec![0.0; DIMS];
                v[i % DIMS] = 1.0;
                v
            })
            .collect();
        let p = Passages {
            model: "test-model".into(),
            dims: DIMS,
            title: format!("About {folder}"),
            source: format!("input/{folder}.mp4"),
            knowledge_stage: "summary".into(),
            keywords: vec![],
            passages,
        };
        std::fs::write(dir.join(Passages::FILE), serde_json::to_vec(&p).unwrap()).unwrap();
        std::fs::write(dir.join(VECTORS), minilm::to_bytes(&vectors)).unwrap();
        BatchItem {
            video: Video {
                path: root.join(format!("{folder}.mp4")),
                rel: PathBuf::from(format!("input/{folder}.mp4")),
                stem: folder.into(),
                folder: folder.into(),
                hash: folder.into(),
            },
            upstream: BTreeMap::from([("embed".to_string(), dir)]),
        }
    }

    /// Runs the stage over `batch`, given `previous`; returns its output folder.
    fn index(batch: &[BatchItem], previous: Option<&Path>) -> (tempfile::TempDir, IndexBuild) {
        let out = tempfile::tempdir().unwrap();
        let events = EventSink::new();
        let cancel = AtomicBool::new(false);
        let params = serde_json::json!({});
        let mut ctx = JobCtx {
            stage_id: "search",
            params: &params,
            base_dir: out.path(),
            output_root: out.path(),
            out_dir: out.path(),
            video: None,
            upstream: &BTreeMap::new(),
            provenance: &BTreeMap::new(),
            batch,
            previous,
            threads: 1,
            cancel: &cancel,
            resources: None,
            force_cpu: false,
            events: &events,
            cores: None,
            held_cores: 0,
        };
        StageKind::run(&SearchIndexStage, &mut ctx).unwrap();
        let build: IndexBuild =
            serde_json::from_slice(&std::fs::read(out.path().join(IndexBuild::FILE)).unwrap())
                .unwrap();
        (out, build)
    }

    /// BM25 scores of `query` by (video folder, passage text): ids differ between two
    /// indexes whose videos are in another order, what they point at does not.
    fn scores(dir: &Path, query: &str) -> BTreeMap<(String, String), String> {
        let s = Searcher::open(dir).unwrap();
        let lib: Library =
            serde_json::from_slice(&std::fs::read(dir.join(Library::FILE)).unwrap()).unwrap();
        s.bm25(query)
            .unwrap()
            .into_iter()
            .map(|(id, score)| {
                let p = &lib.passages[id];
                (
                    (lib.videos[p.video].folder.clone(), p.passage.text.clone()),
                    format!("{score:.5}"),
                )
            })
            .collect()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_video_is_added_to_the_previous_index_and_scores_as_a_rebuild() {
        let root = tempfile::tempdir().unwrap();
        let bread = embedded(
            root.path(),
            "bread",
            &["knead the sourdough bread", "bake the bread in a hot oven"],
        );
        let backup = embedded(
            root.path(),
            "backup",
            &["the database backup runs at night", "restore the backup"],
        );
        let pizza = embedded(
            root.path(),
            "pizza",
            &[
                "pizza dough rises like bread dough",
                "a hot oven bakes pizza",
            ],
        );
        let (first, b) = index(&[bread.clone(), backup.clone()], None);
        assert_eq!(b.from, "scratch");
        assert_eq!(b.added, names(&["bread", "backup"]));

        // A third video: only its documents are written.
        let (second, b) = index(
            &[bread.clone(), backup.clone(), pizza.clone()],
            Some(first.path()),
        );
        assert_eq!(
            (b.from.as_str(), &b.added, &b.reused, b.added_passages),
            (
                "previous",
                &names(&["pizza"]),
                &names(&["bread", "backup"]),
                2
            ),
            "{b:?}"
        );
        let (fresh, _) = index(&[bread.clone(), backup.clone(), pizza.clone()], None);
        for q in ["bread oven", "backup", "pizza dough", "about pizza"] {
            let got = scores(second.path(), q);
            assert!(!got.is_empty(), "{q}");
            assert_eq!(got, scores(fresh.path(), q), "{q}");
        }

        // A changed video and one that left: their documents are deleted, and the
        // statistics are those of a rebuild (no deleted document counts).
        let backup2 = embedded(root.path(), "backup", &["the backup moved to noon"]);
        let (third, b) = index(&[bread.clone(), backup2.clone()], Some(second.path()));
        assert_eq!(b.added, names(&["backup"]), "{b:?}");
        assert_eq!(b.reused, names(&["bread"]), "{b:?}");
        assert_eq!(b.removed, names(&["backup", "pizza"]), "{b:?}");
        let (fresh, _) = index(&[bread, backup2], None);
        for q in ["bread oven", "backup night", "backup noon", "pizza dough"] {
            assert_eq!(scores(third.path(), q), scores(fresh.path(), q), "{q}");
        }
        assert!(scores(third.path(), "pizza").is_empty());
    }

    #[test]
    fn an_index_of_an_older_version_is_rebuilt_and_says_why() {
        let root = tempfile::tempdir().unwrap();
        let bread = embedded(root.path(), "bread", &["knead the sourdough bread"]);
        let (first, _) = index(std::slice::from_ref(&bread), None);
        // What version 1 wrote: no digests, another layout.
        let old = first.path().join(Library::FILE);
        let mut lib: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&old).unwrap()).unwrap();
        lib["format"] = 1.into();
        std::fs::write(&old, lib.to_string()).unwrap();
        let (second, b) = index(std::slice::from_ref(&bread), Some(first.path()));
        assert_eq!(b.from, "scratch");
        assert!(
            b.why
                .as_deref()
                .unwrap_or("")
                .contains("another vsum version"),
            "{b:?}"
        );
        assert_eq!(scores(second.path(), "sourdough").len(), 1);
        // Not an index at all: rebuilt too.
        let junk = tempfile::tempdir().unwrap();
        std::fs::write(junk.path().join(Library::FILE), "{not json").unwrap();
        let (_, b) = index(std::slice::from_ref(&bread), Some(junk.path()));
        assert_eq!(b.from, "scratch", "{b:?}");
    }
}
