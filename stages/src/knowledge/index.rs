//! `knowledge.index` (`scope: batch`): the batch's front page. `INDEX.md` (a row per
//! video), `index.html` (cards with keyframes, summaries, chapter links, and search over
//! every transcript, all in one static file) and `index.json`. Keyphrases shared by
//! many videos of the batch rank last on each card. Links are relative to the top of
//! the output folder: list `publish: [INDEX.md, index.html]` so they are placed there.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vsum_engine::fsutil::normalize;
use vsum_engine::stage::{
    CheckEnv, JobCtx, ParamDoc, ParamError, Scope, StageError, StageKind, typed_params,
};

use super::model::Summary;
use super::render;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "default_title")]
    title: String,
    #[serde(default = "default_keywords")]
    keywords: usize,
}

fn default_title() -> String {
    "Video library".into()
}
fn default_keywords() -> usize {
    6
}

#[derive(Debug, Default)]
pub struct IndexStage;

/// A path under the output root, as a link from the root (`/` separators).
fn link(root: &Path, p: &Path) -> String {
    normalize(p)
        .strip_prefix(normalize(root))
        .map(|r| r.to_string_lossy().replace('\\', "/"))
        .unwrap_or_else(|_| p.to_string_lossy().into_owned())
}

impl StageKind for IndexStage {
    fn name(&self) -> &'static str {
        "knowledge.index"
    }

    fn version(&self) -> u32 {
        2
    }

    fn summary(&self) -> &'static str {
        "Batch front page: INDEX.md and a static, searchable index.html over every video's knowledge"
    }

    fn params_doc(&self) -> Vec<ParamDoc> {
        vec![
            ParamDoc {
                name: "title",
                ty: "string",
                default: Some("Video library"),
                doc: "heading of the report",
            },
            ParamDoc {
                name: "keywords",
                ty: "integer",
                default: Some("6"),
                doc: "keyphrases per video (those common in the batch last)",
            },
        ]
    }

    fn check(&self, params: &Value, env: &CheckEnv) -> Result<Value, Vec<ParamError>> {
        let p: Params = typed_params(params)?;
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
        Ok(serde_json::to_value(&p).expect("params serialize"))
    }

    fn run(&self, ctx: &mut JobCtx) -> Result<(), StageError> {
        let p: Params = serde_json::from_value(ctx.params.clone())
            .map_err(|e| StageError::fatal(e.to_string()))?;
        let root = ctx.output_root;
        // One summary per video, from whichever upstream folder has summary.json.
        let mut docs: Vec<(Summary, String, String)> = Vec::new(); // (summary, folder, summary dir link)
        for item in ctx.batch {
            for (up_stage, dir) in &item.upstream {
                let f = dir.join("summary.json");
                if !f.is_file() {
                    continue;
                }
                let s: Summary =
                    serde_json::from_str(&std::fs::read_to_string(&f).map_err(|e| {
                        StageError::retryable(format!("cannot read {}: {e}", f.display()))
                    })?)
                    .map_err(|e| {
                        StageError::fatal(format!("{} is not a knowledge file: {e}", f.display()))
                    })?;
                docs.push((
                    s,
                    item.video.folder.to_string_lossy().into_owned(),
                    // Where the summary is in the output folder (the job reads a
                    // private staged copy of it).
                    link(root, &root.join(&item.video.folder).join(up_stage)),
                ));
                break;
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
            let page = format!("{dir}/summary.html");
            let thumbs: Vec<Value> = s
                .chapters
                .iter()
                .filter_map(|ch| {
                    let k = ch.keyframe.as_ref()?;
                    Some(json!({"src": link(root, &root.join(dir).join(k)), "start": ch.start}))
                })
                .collect();
            videos.push(json!({
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
                "summary_md": format!("{dir}/summary.md"),
                "thumb": thumbs.first().map(|t| t["src"].clone()),
                "thumbs": thumbs,
            }));
            search.push(json!({
                "folder": folder,
                "title": s.title,
                "page": page,
                "lines": s.transcript.iter().map(|l| json!({"start": l.start, "text": l.text}))
                    // What the slides and screens say is searchable too, at its chapter.
                    .chain(s.chapters.iter().flat_map(|c| c.screen_text.iter().map(|t| json!({"start": c.start, "text": t}))))
                    .collect::<Vec<_>>(),
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
        write(
            "index.json",
            serde_json::to_string_pretty(&videos)
                .expect("json")
                .as_bytes(),
        )?;
        Ok(())
    }
}
