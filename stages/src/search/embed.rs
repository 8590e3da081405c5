//! `text.embed`: the searchable passages of a video and their sentence embeddings.
//!
//! Reads the video's knowledge file (`knowledge.compose`): each chapter's timed
//! transcript paragraphs become passages, and so does the text read on its slides or
//! screens. Writes `passages.json` (the passages, with the video's title and source)
//! and `vectors.f32` (one 384-dimension unit vector per passage, little-endian). The
//! model stays loaded on the GPU lane across videos. `search.index` gathers these.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage, find_upstream_with_stage};
use vsum_engine::stage::{
    Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, Lane, ParamError, StageError,
};
use vsum_models::catalog::FORMAT_SENTENCE;
use vsum_models::{ModelsDir, resolve};

use super::minilm::{self, Encoder};
use crate::knowledge::model::Summary;

const KIND: &str = "text.embed";
/// The vectors beside `passages.json`.
pub const VECTORS: &str = "vectors.f32";

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Installed sentence-embedding model (`vsum models install all-minilm-l6-v2`) or a
    /// sentence-transformers zip relative to the manifest.
    pub model: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            model: "all-minilm-l6-v2".into(),
        }
    }
}

/// One searchable piece of a video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// Index of its chapter in the knowledge file.
    pub chapter: usize,
    pub chapter_title: String,
    /// Seconds from the start of the video.
    pub start: f64,
    pub end: f64,
    /// `speech` (a transcript paragraph) or `screen` (text read on the chapter's slides).
    pub kind: String,
    pub text: String,
}

/// `passages.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Passages {
    /// The model that made `vectors.f32`, and its dimensions.
    pub model: String,
    pub dims: usize,
    pub title: String,
    /// The source file, relative to the manifest's folder.
    pub source: String,
    /// The stage that wrote the knowledge file (its page is `summary.html` there).
    pub knowledge_stage: String,
    pub keywords: Vec<String>,
    pub passages: Vec<Passage>,
}

impl Output for Passages {
    const FILE: &'static str = "passages.json";
}

/// The passages of a knowledge file, in time order.
pub fn passages_of(s: &Summary) -> Vec<Passage> {
    let mut out = Vec::new();
    for c in &s.chapters {
        let paragraphs: Vec<(f64, f64, &str)> = if c.paragraphs.is_empty() {
            // Older knowledge files: the chapter's text as one passage.
            vec![(c.start, c.end, c.text.as_str())]
        } else {
            c.paragraphs
                .iter()
                .map(|p| (p.start, p.end, p.text.as_str()))
                .collect()
        };
        for (start, end, text) in paragraphs {
            if !text.trim().is_empty() {
                out.push(Passage {
                    chapter: c.index,
                    chapter_title: c.title.clone(),
                    start,
                    end,
                    kind: "speech".into(),
                    text: text.trim().to_string(),
                });
            }
        }
        if !c.screen_text.is_empty() {
            out.push(Passage {
                chapter: c.index,
                chapter_title: c.title.clone(),
                start: c.start,
                end: c.end,
                kind: "screen".into(),
                text: c.screen_text.join(" · "),
            });
        }
    }
    out
}

/// The `text.embed` kind.
#[derive(Debug, Clone)]
pub struct EmbedStage {
    models: ModelsDir,
}

impl EmbedStage {
    pub fn with_models_dir(models: ModelsDir) -> Self {
        EmbedStage { models }
    }
}

/// The encoder of an installed model (or a zip path), loaded on the GPU lane once.
pub fn load_encoder(
    models: &ModelsDir,
    model: &str,
    base_dir: &Path,
) -> Result<(Encoder, String), StageError> {
    let m = resolve(models, model, base_dir, FORMAT_SENTENCE)?;
    m.verify()?;
    Ok((Encoder::load(&m.path)?, m.display()))
}

/// What the two embedding kinds (`text.embed`, `text.sentences`) share: the model
/// param's check, its part of the key, its GPU-lane group and doctor check, and
/// embedding with the model kept loaded on the lane.
pub(crate) struct SentenceModel<'a> {
    pub models: &'a ModelsDir,
    pub model: &'a str,
}

impl SentenceModel<'_> {
    pub fn check(&self) -> Result<(), Vec<ParamError>> {
        if self.model.trim().is_empty() {
            return Err(vec![
                ParamError::new(&["model"], "`model` is empty").hint("use all-minilm-l6-v2"),
            ]);
        }
        Ok(())
    }

    /// The model file's hash and the inference library's version.
    pub fn key_extras(&self, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        let m = resolve(self.models, self.model, env.base_dir, FORMAT_SENTENCE)?;
        let mut x = KeyExtras::default();
        x.tools
            .insert("embed_model".into(), m.blake3(Some(env.hasher))?);
        x.tools.insert("candle".into(), "0.11".into());
        Ok(x)
    }

    /// One group for both kinds: the lane runs their jobs back to back on one model.
    pub fn resource_group(&self) -> String {
        format!("embed:{}", self.model)
    }

    pub fn doctor(&self, base_dir: &Path) -> Vec<Check> {
        vec![vsum_models::doctor_model(
            self.models,
            self.model,
            base_dir,
            FORMAT_SENTENCE,
        )]
    }

    /// Unit vectors of `texts`, the model's name and its dimensions; the encoder is
    /// loaded once per lane (kept in `Resources`), or for this job alone off the lane.
    pub fn embed(
        &self,
        ctx: &mut JobCtx,
        texts: &[&str],
        kind: &str,
    ) -> Result<(Vec<Vec<f32>>, String, usize), StageError> {
        let m = resolve(self.models, self.model, ctx.base_dir, FORMAT_SENTENCE)?;
        let key = format!("embed:{}", m.blake3(None)?);
        let mut owned = None;
        let (models, model, base) = (self.models, self.model, ctx.base_dir);
        let (encoder, name) = match ctx.resources.as_deref_mut() {
            Some(r) => &*r.get_or_load(&key, || load_encoder(models, model, base))?,
            None => &*owned.insert(load_encoder(models, model, base)?),
        };
        let started = std::time::Instant::now();
        let vectors = encoder.embed(texts)?;
        tracing::info!(
            texts = texts.len(),
            ms = started.elapsed().as_millis() as u64,
            "{kind}: embedded"
        );
        Ok((vectors, name.clone(), encoder.dims))
    }
}

impl EmbedStage {
    fn model<'a>(&'a self, p: &'a Params) -> SentenceModel<'a> {
        SentenceModel {
            models: &self.models,
            model: &p.model,
        }
    }
}

impl TypedStage for EmbedStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Sentence embeddings (all-MiniLM-L6-v2) of each video's transcript paragraphs and screen text, for `vsum search` -> passages.json + vectors.f32";

    fn default_lane(&self) -> Lane {
        // The model stays loaded on the lane's thread across videos.
        Lane::Gpu
    }

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        if env.needs.is_empty() {
            return Err(vec![
                ParamError::new(
                    &[],
                    format!("stage '{}' ({KIND}) needs a knowledge file", env.stage_id),
                )
                .hint("add your `knowledge.compose` stage to its `needs`"),
            ]);
        }
        self.model(&p).check()?;
        Ok(p)
    }

    fn key_extras(&self, p: &Params, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        self.model(p).key_extras(env)
    }

    fn resource_group(&self, p: &Params) -> Option<String> {
        Some(self.model(p).resource_group())
    }

    fn doctor(&self, p: &Params, base_dir: &Path) -> Vec<Check> {
        self.model(p).doctor(base_dir)
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let (stage, path) =
            find_upstream_with_stage(ctx.upstream, Summary::FILE).ok_or_else(|| {
                StageError::fatal(format!(
                    "stage '{}' needs summary.json, and no upstream stage made one",
                    ctx.stage_id
                ))
                .hint("add your `knowledge.compose` stage to its `needs`")
            })?;
        let summary: Summary = vsum_engine::contract::read_output(&path, stage)?;
        let passages = passages_of(&summary);
        let texts: Vec<&str> = passages.iter().map(|x| x.text.as_str()).collect();
        let (vectors, model, dims) = self.model(p).embed(ctx, &texts, KIND)?;
        let file = Passages {
            model,
            dims,
            title: summary.title.clone(),
            source: summary.source.clone(),
            knowledge_stage: stage.to_string(),
            keywords: summary.keywords.clone(),
            passages,
        };
        ctx.write_output(&file)?;
        let out = ctx.out_dir.join(VECTORS);
        std::fs::write(&out, minilm::to_bytes(&vectors))
            .map_err(|e| StageError::retryable(format!("cannot write {}: {e}", out.display())))
    }
}
