//! `knowledge.compose`: one knowledge file per video (`summary.md`, `summary.json`,
//! `summary.html`) from whatever upstream stages it needs: probe, scenes, keyframes,
//! transcript, objects. Every input is optional; what is missing is stated, not fatal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{
    Output, TypedStage, find_upstream_file, find_upstream_with_stage, read_output,
};
use vsum_engine::stage::{CheckEnv, JobCtx, KeyEnv, KeyExtras, ParamError, StageError};

use super::chapters::{self, Candidate, Cue, Limits, Span};
use super::keyphrase::Keyphrases;
use super::model::*;
use super::render;
use super::segment;
use super::slides;
use super::summarize::{self, SummaryOptions};
use super::text::{self, Sentence, Timed};
use crate::media::{AudioOut, KeyframesOut, ProbeOut, ScenesOut};
use crate::search::minilm;
use crate::search::sentences::{SENTENCE_VECTORS, SentenceVectors};
use crate::speech::transcript::Transcript;
use crate::vision::ocr::OcrFile;
use crate::vision::yolo::ObjectsFile;

/// `knowledge.compose` params.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Seconds: without enough speech to find topics, consecutive scenes merge into
    /// chapters of about this long.
    pub chapter_secs: f64,
    /// Seconds: the shortest chapter when chapters follow topic shifts and cuts.
    pub min_chapter_secs: f64,
    /// Seconds: the longest chapter; longer ones split at their strongest remaining cue.
    pub max_chapter_secs: f64,
    /// Most summary bullets per chapter (MMR: relevant, never repeated); each chapter
    /// with speech gets one.
    pub summary_per_chapter: usize,
    /// Most summary bullets in all (default: one to summary_per_chapter per chapter).
    pub summary_sentences: Option<usize>,
    /// Keyphrases per video.
    pub keywords: usize,
    /// How `summary.html`'s player reaches the source video: `link` (a path relative
    /// to the page, up out of `output/` to where the source is), `copy` (the source
    /// travels inside this stage's output folder as `source.<ext>`, so a moved or
    /// shared `output/` still plays it; a hard link when it can, and the cache keeps a
    /// copy) or `none` (no player).
    pub source: SourceMode,
}

/// See [`Params::source`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    #[default]
    Link,
    Copy,
    None,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            chapter_secs: 120.0,
            min_chapter_secs: 20.0,
            max_chapter_secs: 240.0,
            summary_per_chapter: 3,
            summary_sentences: None,
            keywords: 10,
            source: SourceMode::Link,
        }
    }
}

/// What compose knows about the video apart from the upstream files.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Title when the container has none (the file stem).
    pub title_fallback: String,
    /// The source, relative to the manifest's folder.
    pub source: String,
    pub provenance: Provenance,
}

/// The compose stage kind; names models from the manifest in `models`.
#[derive(Debug, Clone)]
pub struct ComposeStage {
    models: vsum_models::ModelsDir,
}

impl ComposeStage {
    pub fn with_models_dir(models: vsum_models::ModelsDir) -> Self {
        ComposeStage { models }
    }
}

/// The upstream outputs compose reads, each as its producer's own type, found in
/// whichever upstream folder has it. Every one is optional.
#[derive(Debug, Default)]
pub struct Inputs {
    pub probe: Option<ProbeOut>,
    pub scenes: Option<ScenesOut>,
    /// keyframes.json and the id of the stage that made it (for relative links).
    pub keyframes: Option<(KeyframesOut, String)>,
    pub transcript: Option<Transcript>,
    pub audio: Option<AudioOut>,
    pub objects: Option<ObjectsFile>,
    /// ocr.json (`ocr.text`): slide titles and screen text.
    pub ocr: Option<OcrFile>,
    /// sentences.json and its vectors (`text.sentences`): topic chapters by meaning.
    pub sentences: Option<(SentenceVectors, Vec<Vec<f32>>)>,
}

impl Inputs {
    /// Reads the known outputs from upstream folders. A file that exists but does not
    /// parse as its type is an error naming it.
    pub fn read(upstream: &BTreeMap<String, PathBuf>) -> Result<Inputs, StageError> {
        fn get<T: Output>(up: &BTreeMap<String, PathBuf>) -> Result<Option<T>, StageError> {
            match find_upstream_with_stage(up, T::FILE) {
                Some((stage, path)) => read_output(&path, stage).map(Some),
                None => Ok(None),
            }
        }
        let keyframes = match find_upstream_with_stage(upstream, KeyframesOut::FILE) {
            Some((stage, path)) => Some((read_output(&path, stage)?, stage.to_string())),
            None => None,
        };
        let sentences = match get::<SentenceVectors>(upstream)? {
            Some(sv) => {
                let path = find_upstream_file(upstream, SENTENCE_VECTORS).ok_or_else(|| {
                    StageError::fatal(format!("sentences.json without {SENTENCE_VECTORS}"))
                        .hint("rerun its text.sentences stage with --force")
                })?;
                let bytes = std::fs::read(&path).map_err(|e| {
                    StageError::retryable(format!("cannot read {}: {e}", path.display()))
                })?;
                minilm::from_bytes(&bytes, sv.dims).map(|v| (sv, v))
            }
            None => None,
        };
        Ok(Inputs {
            sentences,
            probe: get(upstream)?,
            scenes: get(upstream)?,
            keyframes,
            transcript: get(upstream)?,
            audio: get(upstream)?,
            objects: get(upstream)?,
            ocr: get(upstream)?,
        })
    }
}

/// Builds the knowledge of one video. Pure: everything it needs is passed in.
pub fn compose(inputs: &Inputs, meta: &Meta, p: &Params) -> Summary {
    let n_keywords = p.keywords;
    let title_fallback = meta.title_fallback.as_str();
    let mut notes = Vec::new();
    let probe = inputs.probe.as_ref();
    let video_stream = probe.and_then(|p| {
        let i = p.video_stream?;
        p.streams.iter().find(|s| s.index == i)
    });
    let title = probe
        .and_then(|p| p.tags.get("title"))
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .unwrap_or(title_fallback)
        .to_string();
    let resolution = video_stream.and_then(|s| {
        let (w, h) = (s.width?, s.height?);
        let rotated = matches!(s.rotation, Some(90 | 270 | -90));
        Some(if rotated {
            format!("{h}x{w}")
        } else {
            format!("{w}x{h}")
        })
    });

    // Transcript -> sentences.
    let mut segments: Vec<Timed> = Vec::new();
    let mut language = None;
    match (&inputs.transcript, &inputs.audio) {
        (Some(t), _) => {
            language = t.language.clone();
            for s in &t.segments {
                segments.push(Timed {
                    start: s.start,
                    end: s.end,
                    text: s.text.clone(),
                });
            }
            // What decoding had to do (the transcript's notes), counted by kind.
            let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
            for n in &t.notes {
                *kinds.entry(n.kind.replace('_', " ")).or_insert(0) += 1;
            }
            if !kinds.is_empty() {
                let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
                notes.push(format!(
                    "Transcription notes: {} (details in transcript.json).",
                    list.join(", ")
                ));
            }
            if !t.has_audio {
                notes.push(format!(
                    "No audio track{}.",
                    t.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            } else if segments.is_empty() {
                notes.push("No speech was detected.".into());
            }
        }
        (None, Some(a)) if !a.has_audio => notes.push(format!(
            "No audio track{}.",
            a.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        _ => notes.push("Not transcribed: the pipeline has no transcription stage.".into()),
    }
    let sentences: Vec<Sentence> = text::sentences(&segments);

    let duration = probe
        .and_then(|p| p.duration)
        .or_else(|| {
            inputs
                .scenes
                .as_ref()
                .and_then(|s| s.scenes.last().map(|x| x.end))
        })
        .or_else(|| sentences.last().map(|s| s.end));

    // Scenes -> chapters.
    let scenes: Vec<(usize, f64, f64)> = inputs
        .scenes
        .iter()
        .flat_map(|s| &s.scenes)
        .map(|s| (s.index, s.start, s.end))
        .collect();
    match (&inputs.scenes, scenes.len()) {
        (None, _) => notes.push(
            "No scene detection in this pipeline: chapters follow what is said, else time.".into(),
        ),
        (Some(_), 0 | 1) => notes.push("No scene cuts: the video is one continuous shot.".into()),
        _ => {}
    }
    // Static content: a chapter per slide, named after it (see `slides.rs`).
    let slide_spans = slides::slide_chapters(inputs.scenes.as_ref(), &scenes, inputs.ocr.as_ref());
    if slide_spans.is_some() {
        notes.push("Slides or screens: a chapter per slide, named after its title.".into());
    }
    // Sentence embeddings, when they are of these very sentences.
    let vectors = inputs.sentences.as_ref().and_then(|(sv, v)| {
        let same = sv.sentences.len() == sentences.len()
            && v.len() == sentences.len()
            && sv
                .sentences
                .iter()
                .zip(&sentences)
                .all(|(a, b)| a.text == b.text);
        same.then_some(v.as_slice())
    });
    let spans = chapter_bounds(
        &sentences,
        vectors,
        &scenes,
        slide_spans.as_deref(),
        duration.unwrap_or(0.0),
        p,
    );
    let screen = slides::screen_lines(inputs.ocr.as_ref());

    // Keyframes by scene, as links relative to this stage's folder.
    let mut keyframe_of: BTreeMap<usize, String> = BTreeMap::new();
    if let Some((k, stage)) = &inputs.keyframes {
        for kf in &k.keyframes {
            keyframe_of.insert(kf.scene, format!("../{stage}/{}", kf.file));
        }
    }

    // Objects by scene.
    let mut objects_of: BTreeMap<usize, Vec<ObjectCount>> = BTreeMap::new();
    if let Some(o) = &inputs.objects {
        for sc in &o.scenes {
            let list = sc
                .objects
                .iter()
                .map(|x| ObjectCount {
                    name: x.name.clone(),
                    count: x.count,
                    max_confidence: x.max_confidence,
                })
                .collect();
            objects_of.insert(sc.scene, list);
        }
        if objects_of.values().all(Vec::is_empty) {
            notes.push("No objects were detected.".into());
        }
    }

    // Each sentence belongs to the chapter holding its midpoint (whole sentences only).
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    let mut next = 0;
    for (ci, span) in spans.iter().enumerate() {
        let last = ci + 1 == spans.len();
        let from = next;
        while next < sentences.len() {
            let mid = (sentences[next].start + sentences[next].end) / 2.0;
            if mid < span.end || last {
                next += 1;
            } else {
                break;
            }
        }
        ranges.push(from..next);
    }
    let phrases = Keyphrases::new(
        &ranges
            .iter()
            .map(|r| {
                sentences[r.clone()]
                    .iter()
                    .map(|s| s.text.as_str())
                    .collect()
            })
            .collect::<Vec<Vec<&str>>>(),
    );

    let mut chapters = Vec::new();
    for (ci, span) in spans.iter().enumerate() {
        let (start, end) = (span.start, span.end);
        let inside = &sentences[ranges[ci].clone()];
        let text = inside
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let paragraphs = segment::paragraphs(inside, PARAGRAPH_PAUSE, PARAGRAPH_MIN, PARAGRAPH_MAX)
            .into_iter()
            .map(|r| {
                let part = &inside[r];
                Line {
                    start: round3(part[0].start),
                    end: round3(part[part.len() - 1].end),
                    text: part
                        .iter()
                        .map(|s| s.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                }
            })
            .collect();
        let counted = phrases.top_counted(5, Some(ci));
        let chapter_keywords: Vec<String> = counted.iter().map(|x| x.0.clone()).collect();
        let title = span
            .title
            .clone()
            .or_else(|| chapter_title(&counted))
            .or_else(|| central_phrase(inside, &counted))
            .or_else(|| {
                text::textrank(inside, 1)
                    .first()
                    .map(|&i| shorten(&inside[i].text, 70))
            })
            .unwrap_or_else(|| format!("Chapter {}", ci + 1));
        // Scenes the chapter overlaps.
        let scene_ids: Vec<usize> = scenes
            .iter()
            .filter(|(_, s, e)| *s < end && *e > start || (*s == start && *e == end))
            .map(|(i, _, _)| *i)
            .collect();
        let screen_text = slides::chapter_text(&screen, &scene_ids);
        let mut objects: BTreeMap<String, ObjectCount> = BTreeMap::new();
        for sid in &scene_ids {
            for o in objects_of.get(sid).into_iter().flatten() {
                let e = objects.entry(o.name.clone()).or_insert(ObjectCount {
                    name: o.name.clone(),
                    count: 0,
                    max_confidence: 0.0,
                });
                e.count += o.count;
                e.max_confidence = e.max_confidence.max(o.max_confidence);
            }
        }
        let mut objects: Vec<ObjectCount> = objects.into_values().collect();
        objects.sort_by(|a, b| {
            (b.count as f64 * b.max_confidence)
                .total_cmp(&(a.count as f64 * a.max_confidence))
                .then(a.name.cmp(&b.name))
        });
        // The keyframe of the chapter's middle scene.
        let keyframe = scene_ids
            .get(scene_ids.len() / 2)
            .and_then(|s| keyframe_of.get(s).cloned())
            .or_else(|| scene_ids.iter().find_map(|s| keyframe_of.get(s).cloned()));
        chapters.push(Chapter {
            index: ci,
            start,
            end,
            title,
            keyframe,
            scenes: scene_ids,
            text,
            paragraphs,
            keywords: chapter_keywords,
            cues: span.cues.iter().map(|c| c.as_str().to_string()).collect(),
            objects,
            screen_text,
        });
    }

    let options = SummaryOptions {
        max_per_chapter: p.summary_per_chapter.max(1),
        cap: p.summary_sentences,
        ..SummaryOptions::default()
    };
    let summary: Vec<Line> = summarize::summarize(&sentences, &ranges, &options)
        .into_iter()
        .map(|i| line(&sentences[i]))
        .collect();
    let keywords = phrases.top(n_keywords, None);

    Summary {
        schema_version: SCHEMA_VERSION,
        title,
        source: meta.source.clone(),
        duration,
        resolution,
        language,
        provenance: meta.provenance.clone(),
        notes,
        summary,
        keywords,
        chapters,
        transcript: sentences.iter().map(line).collect(),
    }
}

fn line(s: &Sentence) -> Line {
    Line {
        start: round3(s.start),
        end: round3(s.end),
        text: s.text.clone(),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.trim_end_matches(['.', '!', '?']).to_string();
    }
    let cut: String = s.chars().take(max).collect();
    let cut = cut.rsplit_once(' ').map(|(a, _)| a).unwrap_or(&cut);
    format!("{cut}…")
}

/// A paragraph closes at a pause this long (seconds) once it is [`PARAGRAPH_MIN`] long,
/// and always at [`PARAGRAPH_MAX`].
const PARAGRAPH_PAUSE: f64 = 1.0;
const PARAGRAPH_MIN: f64 = 12.0;
const PARAGRAPH_MAX: f64 = 30.0;
/// Boundary candidates closer than this are one event (a topic shift is known to about
/// a sentence; a cut to a frame).
const SNAP_SECS: f64 = 6.0;

/// The chapters of a video. With enough speech to find topics, boundary candidates from
/// every source (scene cuts, topic shifts in the transcript; slide changes plug in here)
/// go to [`chapters::fuse`]. Without it, scenes merge into chapters of about
/// `chapter_secs` ([`chapter_spans`]).
pub fn chapter_bounds(
    sentences: &[Sentence],
    vectors: Option<&[Vec<f32>]>,
    scenes: &[(usize, f64, f64)],
    slide_spans: Option<&[slides::SlideChapter]>,
    duration: f64,
    p: &Params,
) -> Vec<Span> {
    // Static content: a chapter per slide, named after its title (`slides.rs`). These
    // could also enter the fusion below as `Cue::Slide` candidates (with topic shifts
    // splitting a long slide); for now the slides decide alone.
    if let Some(list) = slide_spans {
        return list
            .iter()
            .enumerate()
            .map(|(i, (start, end, _, title))| Span {
                start: *start,
                end: *end,
                cues: if i > 0 { vec![Cue::Slide] } else { vec![] },
                title: title.as_deref().map(|t| shorten(t, 70)),
            })
            .collect();
    }
    let limits = Limits {
        min_secs: p.min_chapter_secs,
        max_secs: p.max_chapter_secs,
        snap_secs: SNAP_SECS,
    };
    // Candidates from the content: topic shifts in the transcript.
    let mut cands: Vec<Candidate> = segment::topic_shifts_with(sentences, vectors)
        .into_iter()
        .map(|sh| Candidate {
            time: sh.time,
            cue: Cue::Topic,
            vote: sh.vote,
            title: None,
        })
        .collect();
    if cands.is_empty() || duration < 2.0 * limits.min_secs {
        // Nothing but cuts to go by: scenes merge up to the target length.
        let cue = if scenes.is_empty() {
            Cue::Length
        } else {
            Cue::Scene
        };
        return chapter_spans(scenes, duration, p.chapter_secs)
            .into_iter()
            .map(|(start, end, _)| Span {
                start,
                end,
                cues: if start > 0.0 { vec![cue] } else { vec![] },
                title: None,
            })
            .collect();
    }
    // A cut is a boundary on its own when scenes are long (slides, a few shots); where
    // cuts are frequent (a vlog) it needs another cue beside it.
    let mut lens: Vec<f64> = scenes.iter().map(|(_, s, e)| e - s).collect();
    lens.sort_by(f64::total_cmp);
    let median = lens.get(lens.len() / 2).copied().unwrap_or(0.0);
    let scene_vote = if median >= limits.min_secs { 1.0 } else { 0.5 };
    for &(_, start, _) in scenes.iter().skip(1) {
        cands.push(Candidate {
            time: start,
            cue: Cue::Scene,
            vote: scene_vote,
            title: None,
        });
    }
    let pauses: Vec<f64> = sentences
        .windows(2)
        .map(|w| segment::gap_time(&w[0], &w[1]))
        .collect();
    chapters::fuse(&cands, duration, &limits, &pauses)
        .into_iter()
        .map(|s| Span {
            start: round3(s.start),
            end: round3(s.end),
            ..s
        })
        .collect()
}

/// A title from a chapter's keyphrases ("Database backup, restore drill"), when its
/// best one has several words and is said at least twice; else none (the caller falls
/// back to the chapter's most central sentence).
fn chapter_title(counted: &[(String, usize)]) -> Option<String> {
    let good = |(p, n): &&(String, usize)| *n >= 2 && p.contains(' ');
    let first = counted.first().filter(good)?;
    let mut t = capitalized(&first.0);
    if let Some(second) = counted.get(1).filter(good) {
        t.push_str(", ");
        t.push_str(&second.0);
    }
    Some(t)
}

/// A title for a chapter whose phrases are each said once: its best keyphrase of
/// several words that is said in one of its three most central sentences (TextRank),
/// so a phrase of what the chapter is about, not of an aside; none when they hold none.
fn central_phrase(inside: &[text::Sentence], counted: &[(String, usize)]) -> Option<String> {
    let central: Vec<String> = text::textrank(inside, 3)
        .into_iter()
        .map(|i| format!(" {} ", text::words(&inside[i].text).join(" ")))
        .collect();
    let phrase = counted
        .iter()
        .map(|(p, _)| p)
        .find(|p| p.contains(' ') && central.iter().any(|w| w.contains(&format!(" {p} "))))?;
    Some(capitalized(phrase))
}

fn capitalized(s: &str) -> String {
    s.chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .chain(s.chars().skip(1))
        .collect()
}

/// Merges scenes into chapters of about `target` seconds (a chapter closes once it is at
/// least `target` long). Without scenes, cuts the duration into equal windows.
pub fn chapter_spans(
    scenes: &[(usize, f64, f64)],
    duration: f64,
    target: f64,
) -> Vec<(f64, f64, Vec<usize>)> {
    let target = target.max(1.0);
    if scenes.is_empty() {
        if duration <= 0.0 {
            return vec![(0.0, 0.0, vec![])];
        }
        let n = (duration / target).ceil().max(1.0) as usize;
        let step = duration / n as f64;
        return (0..n)
            .map(|i| {
                (
                    round3(i as f64 * step),
                    round3(((i + 1) as f64 * step).min(duration)),
                    vec![],
                )
            })
            .collect();
    }
    let mut out: Vec<(f64, f64, Vec<usize>)> = Vec::new();
    let mut cur: Option<(f64, f64, Vec<usize>)> = None;
    for &(i, s, e) in scenes {
        let c = cur.get_or_insert((s, e, vec![]));
        c.1 = e;
        c.2.push(i);
        if c.1 - c.0 >= target {
            out.push(cur.take().expect("set above"));
        }
    }
    if let Some(c) = cur {
        // A short tail joins the previous chapter rather than standing alone.
        match out.last_mut() {
            Some(prev) if c.1 - c.0 < target / 3.0 => {
                prev.1 = c.1;
                prev.2.extend(c.2);
            }
            _ => out.push(c),
        }
    }
    out
}

impl TypedStage for ComposeStage {
    type Params = Params;
    const NAME: &'static str = "knowledge.compose";
    // 3: typed inputs (the container's title tag is read), no processing time.
    // 4: the page's player has a poster and seeks, a link back to the library, `source`.
    // 5: related videos (the library's related.js), chapters on sentence embeddings.
    // 6: keyphrases said once in short scopes, no calendar words; chapter titles from the
    //    central sentences' phrase; lone characters dropped from screen text.
    const VERSION: u32 = 7;
    const SUMMARY: &'static str = "One knowledge file per video: summary, chapters with keyframes, keywords, objects, transcript";

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        if env.needs.is_empty() {
            errs.push(
                ParamError::new(&[], "knowledge.compose needs upstream stages to read")
                    .hint("add `needs: [probe, scenes, keyframes, transcribe, ...]`"),
            );
        }
        if p.chapter_secs.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            errs.push(ParamError::new(
                &["chapter_secs"],
                "must be a positive number of seconds",
            ));
        }
        let (min, max) = (p.min_chapter_secs, p.max_chapter_secs);
        if !min.is_finite() || min < 0.0 {
            errs.push(ParamError::new(
                &["min_chapter_secs"],
                "must be zero or a positive number of seconds",
            ));
        } else if !max.is_finite() || max <= 0.0 || max < 2.0 * min {
            errs.push(
                ParamError::new(
                    &["max_chapter_secs"],
                    "must be positive and at least twice min_chapter_secs",
                )
                .hint("a long chapter is split in two, and each half must still be long enough"),
            );
        }
        if errs.is_empty() { Ok(p) } else { Err(errs) }
    }

    fn key_extras(&self, p: &Params, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        let mut x = KeyExtras::default();
        if let Some(v) = env.video {
            // The title falls back to the file name, and the page links to the source.
            x.inputs
                .insert("stem".into(), v.stem.to_string_lossy().into_owned());
            x.inputs
                .insert("source".into(), v.rel.to_string_lossy().into_owned());
            // The page's links: to the source (its bytes are the video's, keyed already)
            // and back to the library page at the top of the output folder.
            if let Some(href) =
                source_href(p.source, env.output_root, &v.folder, "{stage}", &v.path)
            {
                x.inputs.insert("source_href".into(), href);
            }
            x.inputs.insert(
                "library_href".into(),
                library_href(env.output_root, &v.folder, "{stage}"),
            );
        }
        Ok(x)
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let video = ctx
            .video
            .ok_or_else(|| StageError::fatal("knowledge.compose is a per-video stage"))?;
        let inputs = Inputs::read(ctx.upstream)?;
        let provenance = provenance(ctx, &self.models);
        let meta = Meta {
            title_fallback: video.stem.to_string_lossy().into_owned(),
            source: video.rel.to_string_lossy().into_owned(),
            provenance,
        };
        let summary = compose(&inputs, &meta, p);
        ctx.write_output(&summary)?;
        write(
            ctx.out_dir,
            "summary.md",
            render::summary_md(&summary)?.as_bytes(),
        )?;
        let href = source_href(
            p.source,
            ctx.output_root,
            &video.folder,
            ctx.stage_id,
            &video.path,
        );
        if let (SourceMode::Copy, Some(name)) = (p.source, &href) {
            // Into this job's own folder; a hard link costs nothing, the store copies it.
            let dest = ctx.out_dir.join(name);
            std::fs::hard_link(&video.path, &dest)
                .or_else(|_| vsum_engine::fsutil::clone_or_copy(&video.path, &dest))
                .map_err(|e| {
                    StageError::retryable(format!(
                        "cannot copy the source into the output folder: {e}"
                    ))
                })?;
        }
        let library = library_href(ctx.output_root, &video.folder, ctx.stage_id);
        write(
            ctx.out_dir,
            "summary.html",
            render::summary_html(&summary, href.as_deref(), Some(&library))?.as_bytes(),
        )?;
        Ok(())
    }
}

/// The source video as a link from this stage's output folder (keyed in `key_extras`,
/// since the page's player depends on it): up out of `output/` to the source, or the
/// copy beside the page (`source.<ext>`), or none.
fn source_href(
    mode: SourceMode,
    output_root: &Path,
    folder: &std::ffi::OsStr,
    stage: &str,
    video: &Path,
) -> Option<String> {
    match mode {
        SourceMode::None => None,
        SourceMode::Copy => Some(match video.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                format!("source.{}", ext.to_ascii_lowercase())
            }
            _ => "source".into(),
        }),
        SourceMode::Link => {
            let here = output_root.join(folder).join(stage);
            Some(href(&vsum_engine::fsutil::relative(&here, video)))
        }
    }
}

/// The library page (`index.html`, which `knowledge.index` publishes at the top of the
/// output folder) as a link from this stage's output folder.
fn library_href(output_root: &Path, folder: &std::ffi::OsStr, stage: &str) -> String {
    let here = output_root.join(folder).join(stage);
    href(&vsum_engine::fsutil::relative(
        &here,
        &output_root.join("index.html"),
    ))
}

/// A relative path as a URL path: `/` separators, each segment percent-encoded where
/// it must be (spaces, `#`, `?`, `%`), so a file name cannot break the link.
pub(super) fn href(rel: &Path) -> String {
    rel.components()
        .map(|c| {
            let seg = c.as_os_str().to_string_lossy();
            let mut out = String::with_capacity(seg.len());
            for b in seg.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StageError> {
    std::fs::write(dir.join(name), bytes)
        .map_err(|e| StageError::retryable(format!("cannot write {name}: {e}")))
}

/// Provenance from the engine's upstream records; models named from the models manifest.
fn provenance(ctx: &JobCtx, models_dir: &vsum_models::ModelsDir) -> Provenance {
    let mut stages = Vec::new();
    let mut models = Vec::new();
    let mut seen = BTreeSet::new();
    for (stage, p) in ctx.provenance {
        stages.push(StageRecord {
            stage: stage.clone(),
            kind: p.kind.clone(),
            key: p.key.clone(),
            tools: p.tools.clone(),
        });
        // A tool entry whose value is a content hash is a file the stage used: a model
        // (versions of programs and libraries are version strings).
        for (tool, hash) in &p.tools {
            if is_content_hash(hash) && seen.insert(hash.clone()) {
                let (name, license) =
                    super::model_name(models_dir, hash).unwrap_or_else(|| (tool.clone(), None));
                models.push(ModelRecord {
                    stage: stage.clone(),
                    name,
                    blake3: hash.clone(),
                    license,
                });
            }
        }
    }
    Provenance {
        vsum_version: env!("CARGO_PKG_VERSION").to_string(),
        stages,
        models,
    }
}

/// A blake3 hex digest, as model files are keyed.
fn is_content_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The current time as RFC 3339 UTC (`2026-11-27T21:15:00Z`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

/// Unix seconds to RFC 3339 UTC (proleptic Gregorian; Howard Hinnant's civil_from_days).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chapter_of_phrases_said_once_is_named_by_the_phrase_of_its_central_sentence() {
        let said = [
            "Welcome back.",
            "On Saturday the movers will pack each desk for the office move.",
            "The movers will pack the boxes.",
            "Each desk goes into boxes.",
            "The garage has bicycle parking.",
        ];
        let inside: Vec<text::Sentence> = said
            .iter()
            .enumerate()
            .map(|(i, t)| text::Sentence {
                start: i as f64 * 5.0,
                end: i as f64 * 5.0 + 5.0,
                text: t.to_string(),
            })
            .collect();
        let parts = vec![said.to_vec()];
        let counted = super::super::keyphrase::Keyphrases::new(&parts).top_counted(5, Some(0));
        // "office move" is said once: no title from repeated phrases.
        assert_eq!(chapter_title(&counted), None, "{counted:?}");
        let title = central_phrase(&inside, &counted);
        assert_eq!(title.as_deref(), Some("Office move"), "{counted:?}");
        // No phrase of several words: no title from phrases (the caller uses a sentence).
        assert_eq!(central_phrase(&inside, &[("desk".into(), 2)]), None);
    }

    #[test]
    fn dates_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_814_962), "2026-11-27T21:29:22Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn page_links_are_relative_and_url_safe() {
        use std::ffi::OsStr;
        let root = Path::new("/lib/output");
        let video = Path::new("/lib/in put/week #1.MP4");
        let folder = OsStr::new("week #1");
        let link = |mode| source_href(mode, root, folder, "summary", video);
        assert_eq!(
            link(SourceMode::Link).as_deref(),
            Some("../../../in%20put/week%20%231.MP4")
        );
        assert_eq!(link(SourceMode::Copy).as_deref(), Some("source.mp4"));
        assert_eq!(link(SourceMode::None), None);
        assert_eq!(library_href(root, folder, "summary"), "../../index.html");
    }

    #[test]
    fn scenes_merge_into_chapters_of_the_target_length() {
        let scenes: Vec<(usize, f64, f64)> = (0..10)
            .map(|i| (i, i as f64 * 30.0, (i + 1) as f64 * 30.0))
            .collect();
        let c = chapter_spans(&scenes, 300.0, 120.0);
        assert_eq!(
            c.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
            vec![(0.0, 120.0), (120.0, 240.0), (240.0, 300.0)]
        );
        assert_eq!(c[0].2, vec![0, 1, 2, 3]);
        // A short tail joins the last chapter.
        let c = chapter_spans(&scenes[..9], 270.0, 120.0);
        assert_eq!(c.last().unwrap().1, 270.0);
        assert_eq!(c.len(), 2);
        // No scenes: equal windows over the duration.
        let c = chapter_spans(&[], 250.0, 120.0);
        assert_eq!(c.len(), 3);
        assert_eq!(c[2].1, 250.0);
    }
}
