//! Asking the library: hybrid search over a `search.index` output.
//!
//! BM25 through tantivy finds passages that share the query's words (stemmed, stop
//! words out); the sentence encoder finds passages that mean the same thing in other
//! words (cosine similarity over every passage's vector). A passage's score is its
//! cosine plus a bonus for the share of the query's words it holds (and a little for its
//! BM25 rank), so an exact phrase ranks first, a paraphrase still ranks, and one shared
//! common word does not lift a passage about something else. Hits are grouped by
//! chapter (its best passage) and cut at a floor, so a query for something never said
//! returns nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::Value;
use tantivy::{Index, TantivyDocument};

use super::embed::VECTORS;
use super::index::{ANALYZER, FORMAT_VERSION, Library, TANTIVY_DIR, register_analyzer, schema};
use super::minilm::{self, Encoder};

/// Longest query taken (characters); the rest is ignored, and said so.
pub const MAX_QUERY_CHARS: usize = 1000;
/// Weight of the share of the query's words a passage holds.
const COVERAGE_WEIGHT: f32 = 0.3;
/// Weight of the BM25 score, relative to the best one.
const BM25_WEIGHT: f32 = 0.05;
/// A hit needs this cosine alone ...
const MIN_COSINE: f32 = 0.35;
/// ... or this with the query's words in it.
const MIN_COSINE_WITH_WORDS: f32 = 0.2;
/// BM25 candidates looked at.
const BM25_DEPTH: usize = 200;

/// Why a search could not run, in words for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchError {
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for SearchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

fn err(message: impl Into<String>, hint: impl Into<String>) -> SearchError {
    SearchError {
        message: message.into(),
        hint: Some(hint.into()),
    }
}

/// One hit: where in which video, and how to open it there.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub video: String,
    pub source: String,
    pub chapter: usize,
    pub chapter_title: String,
    /// Seconds from the start of the video.
    pub start: f64,
    /// `h:mm:ss` or `m:ss`.
    pub at: String,
    pub snippet: String,
    pub kind: String,
    pub score: f32,
    pub cosine: f32,
    /// The passage holds the query's words (BM25 found it).
    pub words: bool,
    /// The knowledge page at that time, relative to the output folder.
    pub page: String,
}

/// An opened library index.
pub struct Searcher {
    lib: Library,
    vectors: Vec<Vec<f32>>,
    index: Index,
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Searcher({} passages)", self.lib.passages.len())
    }
}

/// `1:02:03` or `4:05`.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn snippet(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    let cut = cut.rsplit_once(' ').map(|(a, _)| a).unwrap_or(&cut);
    format!("{cut}…")
}

impl Searcher {
    /// Opens the output folder of a `search.index` stage.
    pub fn open(dir: &Path) -> Result<Searcher, SearchError> {
        let rerun = "run the pipeline (`vsum run`) to build the search index";
        let lib_path = dir.join("library.json");
        let bytes = std::fs::read(&lib_path)
            .map_err(|e| err(format!("no search index at {} ({e})", dir.display()), rerun))?;
        let lib: Library = serde_json::from_slice(&bytes).map_err(|e| {
            err(
                format!(
                    "{} is not a search index this vsum reads: {e}",
                    lib_path.display()
                ),
                rerun,
            )
        })?;
        if lib.format != FORMAT_VERSION {
            return Err(err(
                format!(
                    "the search index in {} was written by another vsum version (format {}, this one reads {FORMAT_VERSION})",
                    dir.display(),
                    lib.format
                ),
                "rerun the pipeline (`vsum run`): the index stage rebuilds it",
            ));
        }
        let vbytes = std::fs::read(dir.join(VECTORS))
            .map_err(|e| err(format!("the search index lacks {VECTORS}: {e}"), rerun))?;
        let vectors = if lib.passages.is_empty() {
            Vec::new()
        } else {
            minilm::from_bytes(&vbytes, lib.dims)
                .filter(|v| v.len() == lib.passages.len())
                .ok_or_else(|| err(format!("{VECTORS} does not match library.json"), rerun))?
        };
        let index = Index::open_in_dir(dir.join(TANTIVY_DIR))
            .map_err(|e| err(format!("cannot open the text index: {e}"), rerun))?;
        register_analyzer(&index);
        Ok(Searcher {
            lib,
            vectors,
            index,
        })
    }

    /// The model the passages were embedded with (the query must use the same).
    pub fn model(&self) -> &str {
        &self.lib.model
    }

    pub fn videos(&self) -> usize {
        self.lib.videos.len()
    }

    /// The best chapters for `query`, at most `limit`.
    pub fn search(
        &self,
        query: &str,
        encoder: &Encoder,
        limit: usize,
    ) -> Result<Vec<Hit>, SearchError> {
        let query: String = query.chars().take(MAX_QUERY_CHARS).collect();
        let query = query.trim();
        if query.is_empty() {
            return Err(err(
                "the query is empty",
                "ask in words, e.g. `vsum search \"rolling back a release\"`",
            ));
        }
        if self.lib.passages.is_empty() {
            return Ok(Vec::new());
        }
        let q = encoder
            .embed(&[query])
            .map_err(|e| {
                err(
                    format!("cannot embed the query: {}", e.message),
                    "check the model with `vsum doctor`",
                )
            })?
            .pop()
            .unwrap_or_default();
        let words = self.bm25(query)?;
        let best_bm = words.values().copied().fold(0.0f32, f32::max);
        let mut analyzer = self
            .index
            .tokenizers()
            .get(ANALYZER)
            .expect("registered when opened");
        let query_terms = terms(&mut analyzer, query);
        let mut best: HashMap<(usize, usize), (usize, f32, f32, bool)> = HashMap::new();
        for (id, v) in self.vectors.iter().enumerate() {
            let cos = minilm::cosine(&q, v);
            let bm = words.get(&id).copied();
            let floor = if bm.is_some() {
                MIN_COSINE_WITH_WORDS
            } else {
                MIN_COSINE
            };
            if cos < floor {
                continue;
            }
            let p = &self.lib.passages[id];
            let (share, coverage) = match bm {
                Some(b) if best_bm > 0.0 && !query_terms.is_empty() => {
                    let v = &self.lib.videos[p.video];
                    let text =
                        format!("{} {} {}", v.title, p.passage.chapter_title, p.passage.text);
                    let have = terms(&mut analyzer, &text);
                    let n = query_terms.iter().filter(|t| have.contains(*t)).count();
                    (b / best_bm, n as f32 / query_terms.len() as f32)
                }
                _ => (0.0, 0.0),
            };
            let score = cos + COVERAGE_WEIGHT * coverage + BM25_WEIGHT * share;
            let k = (p.video, p.passage.chapter);
            if best.get(&k).is_none_or(|b| score > b.1) {
                best.insert(k, (id, score, cos, bm.is_some()));
            }
        }
        let mut hits: Vec<(usize, f32, f32, bool)> = best.into_values().collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(hits
            .into_iter()
            .take(limit)
            .map(|(id, score, cosine, words)| {
                let p = &self.lib.passages[id];
                let v = &self.lib.videos[p.video];
                Hit {
                    video: v.title.clone(),
                    source: v.source.clone(),
                    chapter: p.passage.chapter,
                    chapter_title: p.passage.chapter_title.clone(),
                    start: p.passage.start,
                    at: clock(p.passage.start),
                    snippet: snippet(&p.passage.text, 240),
                    kind: p.passage.kind.clone(),
                    score: (score * 1000.0).round() / 1000.0,
                    cosine: (cosine * 1000.0).round() / 1000.0,
                    words,
                    page: format!("{}#t={}", v.page, p.passage.start.floor() as u64),
                }
            })
            .collect())
    }

    /// Passage id -> BM25 score, for the passages holding the query's words.
    pub(crate) fn bm25(&self, query: &str) -> Result<HashMap<usize, f32>, SearchError> {
        let (_, f) = schema();
        let reader = self.index.reader().map_err(|e| {
            err(
                format!("cannot read the text index: {e}"),
                "rerun the pipeline",
            )
        })?;
        let searcher = reader.searcher();
        let mut parser = QueryParser::for_index(&self.index, vec![f.title, f.chapter, f.text]);
        parser.set_field_boost(f.title, 1.5);
        parser.set_field_boost(f.chapter, 1.5);
        // Lenient: quotes, colons and brackets in a user's words are not syntax errors.
        let (q, _) = parser.parse_query_lenient(query);
        let top = searcher
            .search(&q, &TopDocs::with_limit(BM25_DEPTH).order_by_score())
            .map_err(|e| err(format!("text search failed: {e}"), "rerun the pipeline"))?;
        let ids = self.lib.passage_ids();
        let mut out = HashMap::new();
        for (score, addr) in top {
            let doc: TantivyDocument = searcher
                .doc(addr)
                .map_err(|e| err(format!("text search failed: {e}"), "rerun the pipeline"))?;
            let folder = doc.get_first(f.video).and_then(|v| v.as_str());
            let n = doc.get_first(f.passage).and_then(|v| v.as_u64());
            // A document names its video and its place among the video's passages.
            if let (Some((first, count)), Some(n)) = (folder.and_then(|x| ids.get(x)), n)
                && (n as usize) < *count
            {
                out.insert(first + n as usize, score);
            }
        }
        Ok(out)
    }
}

/// The distinct terms of `text` as the index sees them (stemmed, stop words out).
fn terms(analyzer: &mut tantivy::tokenizer::TextAnalyzer, text: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.insert(stream.token().text.clone());
    }
    out
}

/// Where a `search.index` stage's output is: `<output>/<stage id>/`.
pub fn index_dir(output_root: &Path, stage_id: &str) -> PathBuf {
    output_root.join(stage_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_and_snippet_read_well() {
        assert_eq!(clock(65.4), "1:05");
        assert_eq!(clock(3725.0), "1:02:05");
        assert_eq!(snippet("one two three", 100), "one two three");
        assert_eq!(snippet("one two three four", 9), "one two…");
    }
}
