//! `knowledge.index` (`scope: batch`): the batch's front page. `INDEX.md` (a row per
//! video), `index.html` (cards with keyframes, summaries, chapter links, and a search
//! over titles, keyphrases, screen text and transcripts that matches whole words, ranks
//! the videos and hides the cards without a hit; one static file, plain JS) and
//! `index.json`. Keyphrases shared by
//! many videos of the batch rank last on each card. Links are relative to the top of
//! the output folder: list `publish: [INDEX.md, index.html, related.js]` so they are
//! placed there.
//!
//! With a `search.index` stage in its `needs`, each video lists its related videos
//! (`related.json` there): on its card, in `INDEX.md` and `index.json`, and in
//! `related.js`, which each video page (written before the library exists) loads from
//! the top of the output folder to show its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::context;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vsum_engine::contract::{Output, TypedStage, find_upstream_with_stage, read_output};
use vsum_engine::fsutil::normalize;
use vsum_engine::stage::{CheckEnv, JobCtx, ParamError, Scope, StageError};

use super::compose::href;
use super::model::Summary;
use super::render;
use crate::search::index::Related;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Heading of the report.
    pub title: String,
    /// Keyphrases per video (those common in the batch last).
    pub keywords: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            title: "Video library".into(),
            keywords: 6,
        }
    }
}

#[derive(Debug, Default)]
pub struct IndexStage;

/// A path under the output root, relative to the root.
fn link(root: &Path, p: &Path) -> PathBuf {
    normalize(p)
        .strip_prefix(normalize(root))
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}

impl TypedStage for IndexStage {
    type Params = Params;
    const NAME: &'static str = "knowledge.index";
    // 3: search ranks titles, keyphrases, screen text and transcripts and filters cards.
    // 4: related videos.
    const VERSION: u32 = 4;
    const SUMMARY: &'static str = "Batch front page: INDEX.md and a static, searchable index.html over every video's knowledge";

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        if env.scope != Scope::Batch {
            return Err(vec![
                ParamError::new(&[], "knowledge.index runs once per batch")
                    .hint("add `scope: batch`"),
            ]);
        }
        if !env.needs.iter().any(|(_, s)| *s == Scope::Video) {
            return Err(vec![
                ParamError::new(
                    &[],
                    "knowledge.index needs the per-video knowledge.compose stage",
                )
                .hint("add `needs: [<your knowledge.compose stage>]`"),
            ]);
        }
        Ok(p)
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let root = ctx.output_root;
        let related = ctx.upstream::<Related>()?.unwrap_or_default();
        // One summary per video, from whichever upstream folder has summary.json.
        let mut docs: Vec<(Summary, String, PathBuf)> = Vec::new(); // (summary, folder, summary dir)
        for item in ctx.batch {
            if let Some((stage, f)) = find_upstream_with_stage(&item.upstream, Summary::FILE) {
                let s: Summary = read_output(&f, stage)?;
                docs.push((
                    s,
                    item.video.folder.to_string_lossy().into_owned(),
                    // Where the summary is in the output folder (the job reads a
                    // private staged copy of it).
                    link(root, &root.join(&item.video.folder).join(stage)),
                ));
            }
        }
        if docs.is_empty() {
            return Err(StageError::fatal("no summary.json in any upstream folder")
                .hint("knowledge.index needs the knowledge.compose stage in `needs:`"));
        }
        // Each video's keyphrases, those shared by many videos of the batch last.
        let mut df: BTreeMap<String, usize> = BTreeMap::new();
        for (d, _, _) in &docs {
            for k in d.keywords.iter().collect::<std::collections::BTreeSet<_>>() {
                *df.entry(k.clone()).or_insert(0) += 1;
            }
        }
        let mut videos = Vec::new();
        let mut search = Vec::new();
        let mut total = 0.0;
        for (s, folder, dir) in &docs {
            let mut kws: Vec<&String> = s.keywords.iter().collect();
            // Stable: within the same spread, the video's own order.
            kws.sort_by_key(|k| df.get(*k).copied().unwrap_or(0));
            kws.truncate(p.keywords);
            total += s.duration.unwrap_or(0.0);
            // As links (URL paths) from the page at the top of the output folder.
            let page = href(&dir.join("summary.html"));
            let thumbs: Vec<Value> = s
                .chapters
                .iter()
                .filter_map(|ch| {
                    let k = ch.keyframe.as_ref()?;
                    Some(json!({"src": href(&link(root, &root.join(dir).join(k))), "start": ch.start}))
                })
                .collect();
            let near: Vec<Value> = related
                .videos
                .get(folder)
                .into_iter()
                .flatten()
                .map(|r| json!({"title": r.title, "folder": r.folder, "page": href(Path::new(&r.page)), "score": r.score}))
                .collect();
            videos.push(json!({
                "related": near,
                "title": s.title,
                "folder": folder,
                "duration": s.duration,
                "language": s.language,
                "chapters": s.chapters.len(),
                "chapter_list": s.chapters.iter().map(|c| json!({"start": c.start, "title": c.title})).collect::<Vec<_>>(),
                "keywords": kws,
                "notes": s.notes,
                "summary": s.summary.iter().take(3).collect::<Vec<_>>(),
                "page": page,
                "summary_md": href(&dir.join("summary.md")),
                "thumb": thumbs.first().map(|t| t["src"].clone()),
                "thumbs": thumbs,
            }));
            // What the report's search looks in, field by field (it ranks a title above a
            // keyphrase, above screen text, above what is said).
            let keys = s
                .keywords
                .iter()
                .map(|k| json!({"start": null, "text": k}))
                .chain(s.chapters.iter().flat_map(|c| {
                    c.keywords
                        .iter()
                        .map(|k| json!({"start": c.start, "text": k}))
                        .chain(
                            c.objects
                                .iter()
                                .map(|o| json!({"start": c.start, "text": o.name})),
                        )
                }))
                .collect::<Vec<_>>();
            let chapters = s
                .chapters
                .iter()
                .map(|c| json!({"start": c.start, "text": c.title}))
                .collect::<Vec<_>>();
            search.push(json!({
                "folder": folder,
                "title": s.title,
                "page": page,
                "keys": keys,
                "chapters": chapters,
                "screen": s.chapters.iter().flat_map(|c| c.screen_text.iter().map(|t| json!({"start": c.start, "text": t}))).collect::<Vec<_>>(),
                "lines": s.transcript.iter().map(|l| json!({"start": l.start, "text": l.text})).collect::<Vec<_>>(),
            }));
        }
        let ctx_j = context! {
            title => p.title,
            videos => videos,
            search => search,
            total_duration => total,
            version => env!("CARGO_PKG_VERSION"),
        };
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(ctx.out_dir.join(name), bytes)
                .map_err(|e| StageError::retryable(format!("cannot write {name}: {e}")))
        };
        write("INDEX.md", render::index_md(ctx_j.clone())?.as_bytes())?;
        write("index.html", render::index_html(ctx_j)?.as_bytes())?;
        // For the video pages: `related.js` beside `index.html`, keyed by each page's
        // path under the output folder.
        let by_page: BTreeMap<String, &Value> = videos
            .iter()
            .map(|v| {
                let page = v["page"].as_str().unwrap_or_default();
                (page.to_string(), &v["related"])
            })
            .collect();
        write(
            "related.js",
            format!(
                "// Made by vsum: each video page's related videos (knowledge.index).\nvar VSUM_RELATED = {};\n",
                serde_json::to_string(&by_page).expect("json").replace("</", "<\\/")
            )
            .as_bytes(),
        )?;
        write(
            "index.json",
            serde_json::to_string_pretty(&videos)
                .expect("json")
                .as_bytes(),
        )?;
        Ok(())
    }
}
