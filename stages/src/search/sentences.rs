//! `text.sentences`: sentence embeddings of a video's transcript, so that its chapters
//! can follow meaning, not only shared words (`knowledge.compose` reads them).
//!
//! Splits the transcript into sentences exactly as the knowledge file does
//! (`knowledge::text::sentences`) and embeds each with the sentence encoder
//! (all-MiniLM-L6-v2, the model `text.embed` uses, kept loaded on the GPU lane across
//! videos and stages). Writes `sentences.json` (the sentences, their times, the model)
//! and `sentences.f32` (one unit vector per sentence, little-endian).

use super::embed::{Params, SentenceModel};
use super::minilm;
use crate::knowledge::text::{self, Timed};
use crate::speech::transcript::Transcript;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{
    Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, Lane, ParamError, StageError,
};

const KIND: &str = "text.sentences";
/// The vectors beside `sentences.json`.
pub const SENTENCE_VECTORS: &str = "sentences.f32";

/// A sentence of the transcript and its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedSentence {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// `sentences.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SentenceVectors {
    pub model: String,
    pub dims: usize,
    /// In the order of `sentences.f32`.
    pub sentences: Vec<TimedSentence>,
}

impl Output for SentenceVectors {
    const FILE: &'static str = "sentences.json";
}

/// The sentences of a transcript, as the knowledge file splits them.
pub fn transcript_sentences(t: &Transcript) -> Vec<text::Sentence> {
    let segments: Vec<Timed> = t
        .segments
        .iter()
        .map(|s| Timed {
            start: s.start,
            end: s.end,
            text: s.text.clone(),
        })
        .collect();
    text::sentences(&segments)
}

/// The `text.sentences` kind.
#[derive(Debug, Clone)]
pub struct SentencesStage {
    models: vsum_models::ModelsDir,
}

impl SentencesStage {
    pub fn with_models_dir(models: vsum_models::ModelsDir) -> Self {
        SentencesStage { models }
    }
}

impl SentencesStage {
    fn model<'a>(&'a self, p: &'a Params) -> SentenceModel<'a> {
        SentenceModel {
            models: &self.models,
            model: &p.model,
        }
    }
}

impl TypedStage for SentencesStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "Sentence embeddings (all-MiniLM-L6-v2) of the transcript's sentences, for chapters that follow the topic -> sentences.json + sentences.f32";

    fn default_lane(&self) -> Lane {
        Lane::Gpu
    }

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        if env.needs.is_empty() {
            return Err(vec![
                ParamError::new(
                    &[],
                    format!("stage '{}' ({KIND}) needs a transcript", env.stage_id),
                )
                .hint("add your `whisper.transcribe` stage to its `needs`"),
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

    fn doctor(&self, p: &Params, base_dir: &std::path::Path) -> Vec<Check> {
        self.model(p).doctor(base_dir)
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let t: Transcript = ctx.require_upstream("whisper.transcribe")?;
        let sentences = transcript_sentences(&t);
        let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
        let (vectors, model, dims) = self.model(p).embed(ctx, &texts, KIND)?;
        let file = SentenceVectors {
            model,
            dims,
            sentences: sentences
                .into_iter()
                .map(|s| TimedSentence {
                    start: s.start,
                    end: s.end,
                    text: s.text,
                })
                .collect(),
        };
        ctx.write_output(&file)?;
        let out = ctx.out_dir.join(SENTENCE_VECTORS);
        std::fs::write(&out, minilm::to_bytes(&vectors))
            .map_err(|e| StageError::retryable(format!("cannot write {}: {e}", out.display())))
    }
}
