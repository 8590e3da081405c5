//! `knowledge.related` (per video, after the batch's `search.index`): each video's
//! related videos as files of its own, beside its knowledge file (`related.json`,
//! `related.md`), with links relative to the video's folder.
//!
//! Why a stage of its own and not a field of `summary.json`: which videos are related
//! depends on the whole library, so a knowledge file that held them would change (and be
//! recomputed) for every video each time one is added. Here only these small files change;
//! the transcript, chapters and summary stay cached.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{CheckEnv, JobCtx, ParamError, Scope, StageError};

use crate::search::index::{Related, RelatedVideo};

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {}

/// `related.json` of one video: the library's videos most like it, most similar first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VideoRelated {
    /// This video's output folder name.
    pub video: String,
    pub related: Vec<RelatedVideo>,
}

impl Output for VideoRelated {
    const FILE: &'static str = "related.json";
}

#[derive(Debug, Default)]
pub struct RelatedStage;

/// `page` (relative to the output folder) as a link from a file in
/// `<output>/<video>/<stage>/`.
fn from_stage_folder(page: &str) -> String {
    format!("../../{page}")
}

/// The library's related videos of `folder`, with links made relative to its stage folder.
pub fn for_video(all: &Related, folder: &str) -> VideoRelated {
    let related = all
        .videos
        .get(folder)
        .into_iter()
        .flatten()
        .map(|r| RelatedVideo {
            page: from_stage_folder(&r.page),
            ..r.clone()
        })
        .collect();
    VideoRelated {
        video: folder.to_string(),
        related,
    }
}

/// `related.md`: a short list a person reads beside the knowledge file.
pub fn markdown(v: &VideoRelated) -> String {
    let mut md = String::from("# Related videos\n\n");
    if v.related.is_empty() {
        md.push_str("No other video in the library is about the same things.\n");
    }
    for r in &v.related {
        let title = if r.title.trim().is_empty() {
            &r.folder
        } else {
            &r.title
        };
        md.push_str(&format!(
            "- [{}]({}) (similarity {:.2})\n",
            title.replace(['[', ']'], ""),
            r.page.replace(' ', "%20"),
            r.score
        ));
    }
    md
}

impl TypedStage for RelatedStage {
    type Params = Params;
    const NAME: &'static str = "knowledge.related";
    const VERSION: u32 = 1;
    const SUMMARY: &'static str =
        "A video's related videos (from the library's search index): related.json, related.md";

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        if env.scope != Scope::Video {
            return Err(vec![
                ParamError::new(&[], "knowledge.related runs once per video")
                    .hint("drop `scope: batch`"),
            ]);
        }
        if !env.needs.iter().any(|(_, s)| *s == Scope::Batch) {
            return Err(vec![
                ParamError::new(
                    &[],
                    "knowledge.related needs the batch's search.index stage",
                )
                .hint("add `needs: [<your search.index stage>]`"),
            ]);
        }
        Ok(p)
    }

    fn run(&self, _p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let video = ctx
            .video
            .ok_or_else(|| StageError::fatal("knowledge.related runs once per video"))?;
        let all: Related = ctx.require_upstream("search.index")?;
        let mine = for_video(&all, &video.folder.to_string_lossy());
        ctx.write_output(&mine)?;
        let path = ctx.out_dir.join("related.md");
        std::fs::write(&path, markdown(&mine))
            .map_err(|e| StageError::retryable(format!("cannot write {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib() -> Related {
        let mut r = Related::default();
        r.videos.insert(
            "bread".into(),
            vec![RelatedVideo {
                folder: "pizza".into(),
                title: "Pizza [at] home".into(),
                page: "pizza night/summary/summary.html".into(),
                score: 0.61,
            }],
        );
        r.videos.insert("backup".into(), vec![]);
        r
    }

    #[test]
    fn a_video_gets_its_own_related_videos_linked_from_its_folder() {
        let v = for_video(&lib(), "bread");
        assert_eq!(v.video, "bread");
        assert_eq!(v.related.len(), 1);
        assert_eq!(v.related[0].page, "../../pizza night/summary/summary.html");
        let md = markdown(&v);
        assert!(
            md.contains(
                "- [Pizza at home](../../pizza%20night/summary/summary.html) (similarity 0.61)"
            ),
            "{md}"
        );
    }

    #[test]
    fn a_video_without_neighbours_says_so() {
        for folder in ["backup", "not-in-the-index"] {
            let v = for_video(&lib(), folder);
            assert!(v.related.is_empty());
            assert!(markdown(&v).contains("No other video"), "{folder}");
        }
    }
}
