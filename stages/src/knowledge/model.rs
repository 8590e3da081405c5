//! The knowledge file's data model: what `summary.json` holds (schema in
//! `doc/summary.schema.json`, generated from these types) and what the Markdown and
//! HTML renderings show.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bump when a field changes meaning or goes away (adding optional fields is fine).
/// 2: `processed` went (a cached file holds no wall-clock time; the run summary does).
pub const SCHEMA_VERSION: u32 = 2;

impl vsum_engine::contract::Output for Summary {
    const FILE: &'static str = "summary.json";
}

/// Everything vsum knows about one video.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub schema_version: u32,
    /// From the container's title tag, else the file name.
    pub title: String,
    /// The source file, relative to the manifest's folder.
    pub source: String,
    /// Seconds.
    pub duration: Option<f64>,
    /// `WIDTHxHEIGHT` as displayed (rotation applied).
    pub resolution: Option<String>,
    /// Spoken language (ISO 639-1) when transcribed.
    pub language: Option<String>,
    pub provenance: Provenance,
    /// What is missing and why (no audio, no speech, no cuts, no detections).
    pub notes: Vec<String>,
    /// The most representative sentences, one to three per chapter, no two alike, in
    /// spoken order.
    pub summary: Vec<Line>,
    /// Keyphrases (mostly several words), most telling first.
    pub keywords: Vec<String>,
    pub chapters: Vec<Chapter>,
    /// The whole transcript, sentence by sentence.
    pub transcript: Vec<Line>,
}

/// A sentence and when it is spoken (seconds from the start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Line {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Chapter {
    pub index: usize,
    pub start: f64,
    pub end: f64,
    pub title: String,
    /// Path of the representative picture, relative to the summary file.
    pub keyframe: Option<String>,
    /// Scene indices (from `video.scenes`) the chapter covers.
    pub scenes: Vec<usize>,
    /// What is said in the chapter (whole sentences).
    pub text: String,
    /// The same text as timed paragraphs.
    #[serde(default)]
    pub paragraphs: Vec<Line>,
    /// The chapter's own keyphrases.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// What marks the chapter's start: `topic` (the words change subject), `scene` (a
    /// visual cut), `slide`, or `length` (a long stretch split); empty for the first.
    #[serde(default)]
    pub cues: Vec<String>,
    /// Objects seen in the chapter, most salient first.
    pub objects: Vec<ObjectCount>,
    /// Text read on the chapter's slides or screens (`ocr.text`), each line once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub screen_text: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectCount {
    pub name: String,
    pub count: usize,
    pub max_confidence: f64,
}

/// How the knowledge was made: enough to reproduce or audit it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Provenance {
    pub vsum_version: String,
    pub stages: Vec<StageRecord>,
    pub models: Vec<ModelRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StageRecord {
    pub stage: String,
    pub kind: String,
    /// The stage's cache key (`vsum cache show KEY`).
    pub key: String,
    /// Tool versions the stage was keyed with (FFmpeg libraries, whisper.cpp, ...).
    pub tools: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelRecord {
    pub stage: String,
    /// Installed name when known (`whisper-tiny.en`), else the fingerprint entry.
    pub name: String,
    pub blake3: String,
    pub license: Option<String>,
}
