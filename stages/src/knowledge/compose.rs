//! `knowledge.compose`: one knowledge file per video (`summary.md`, `summary.json`,
//! `summary.html`) from whatever upstream stages it needs: probe, scenes, keyframes,
//! transcript, objects. Every input is optional; what is missing is stated, not fatal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vsum_engine::stage::{
    CheckEnv, JobCtx, KeyEnv, KeyExtras, ParamDoc, ParamError, StageError, StageKind, typed_params,
};

use super::model::*;
use super::render;
use super::slides;
use super::text::{self, Sentence, Timed};

/// `knowledge.compose` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Target chapter length in seconds: consecutive scenes merge up to about this long.
    #[serde(default = "default_chapter_secs")]
    pub chapter_secs: f64,
    #[serde(default = "default_summary_sentences")]
    pub summary_sentences: usize,
    #[serde(default = "default_keywords")]
    pub keywords: usize,
}

/// What compose knows about the video apart from the upstream files.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Title when the container has none (the file stem).
    pub title_fallback: String,
    /// The source, relative to the manifest's folder.
    pub source: String,
    /// RFC 3339 time of processing.
    pub processed: String,
    pub provenance: Provenance,
}

fn default_chapter_secs() -> f64 {
    120.0
}
fn default_summary_sentences() -> usize {
    5
}
fn default_keywords() -> usize {
    10
}

#[derive(Debug, Default)]
pub struct ComposeStage;

/// The upstream files compose reads, each found in whichever upstream folder has it.
#[derive(Debug, Default)]
pub struct Inputs {
    pub probe: Option<Value>,
    pub scenes: Option<Value>,
    /// keyframes.json and the id of the stage that made it (for relative links).
    pub keyframes: Option<(Value, String)>,
    pub transcript: Option<Value>,
    pub audio: Option<Value>,
    pub objects: Option<Value>,
    /// ocr.json (`ocr.text`): slide titles and screen text.
    pub ocr: Option<Value>,
}

impl Inputs {
    /// Reads the known files from upstream folders. A file that exists but does not
    /// parse is an error naming it.
    pub fn read(upstream: &BTreeMap<String, PathBuf>) -> Result<Inputs, StageError> {
        let find = |name: &str| -> Result<Option<(Value, String)>, StageError> {
            for (stage, dir) in upstream {
                let p = dir.join(name);
                if p.is_file() {
                    let text = std::fs::read_to_string(&p).map_err(|e| {
                        StageError::retryable(format!("cannot read {}: {e}", p.display()))
                    })?;
                    let v = serde_json::from_str(&text).map_err(|e| {
                        StageError::fatal(format!(
                            "{name} from stage '{stage}' is not valid JSON: {e}"
                        ))
                        .hint("rerun that stage with --force; if it persists, report a bug")
                    })?;
                    return Ok(Some((v, stage.clone())));
                }
            }
            Ok(None)
        };
        Ok(Inputs {
            probe: find("probe.json")?.map(|x| x.0),
            scenes: find("scenes.json")?.map(|x| x.0),
            keyframes: find("keyframes.json")?,
            transcript: find("transcript.json")?.map(|x| x.0),
            audio: find("audio.json")?.map(|x| x.0),
            objects: find("objects.json")?.map(|x| x.0),
            ocr: find("ocr.json")?.map(|x| x.0),
        })
    }
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Builds the knowledge of one video. Pure: everything it needs is passed in.
pub fn compose(inputs: &Inputs, meta: &Meta, p: &Params) -> Summary {
    let (chapter_secs, summary_sentences, n_keywords) =
        (p.chapter_secs, p.summary_sentences, p.keywords);
    let title_fallback = meta.title_fallback.as_str();
    let mut notes = Vec::new();
    let probe = inputs.probe.as_ref();
    let video_stream = probe.and_then(|p| {
        let i = p["video_stream"].as_u64()?;
        p["streams"]
            .as_array()?
            .iter()
            .find(|s| s["index"].as_u64() == Some(i))
    });
    let title = probe
        .and_then(|p| p["title"].as_str().or_else(|| p["tags"]["title"].as_str()))
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(title_fallback)
        .to_string();
    let resolution = video_stream.and_then(|s| {
        let (w, h) = (s["width"].as_u64()?, s["height"].as_u64()?);
        let rotated = matches!(s["rotation"].as_i64(), Some(90 | 270 | -90));
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
            language = t["language"].as_str().map(str::to_string);
            for s in t["segments"].as_array().into_iter().flatten() {
                if let (Some(a), Some(b), Some(x)) =
                    (f(&s["start"]), f(&s["end"]), s["text"].as_str())
                {
                    segments.push(Timed {
                        start: a,
                        end: b,
                        text: x.to_string(),
                    });
                }
            }
            if t["has_audio"] == Value::Bool(false) {
                notes.push(format!(
                    "No audio track{}.",
                    t["reason"]
                        .as_str()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            } else if segments.is_empty() {
                notes.push("No speech was detected.".into());
            }
        }
        (None, Some(a)) if a["has_audio"] == Value::Bool(false) => notes.push(format!(
            "No audio track{}.",
            a["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        _ => notes.push("Not transcribed: the pipeline has no transcription stage.".into()),
    }
    let sentences: Vec<Sentence> = text::sentences(&segments);

    let duration = probe
        .and_then(|p| f(&p["duration"]))
        .or_else(|| {
            inputs
                .scenes
                .as_ref()
                .and_then(|s| s["scenes"].as_array()?.last().and_then(|x| f(&x["end"])))
        })
        .or_else(|| sentences.last().map(|s| s.end));

    // Scenes -> chapters.
    let scenes: Vec<(usize, f64, f64)> = inputs
        .scenes
        .as_ref()
        .and_then(|s| s["scenes"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["index"].as_u64()? as usize,
                f(&s["start"])?,
                f(&s["end"])?,
            ))
        })
        .collect();
    match (&inputs.scenes, scenes.len()) {
        (None, _) => {
            notes.push("No scene detection in this pipeline: chapters follow time only.".into())
        }
        (Some(_), 0 | 1) => notes.push("No scene cuts: the video is one continuous shot.".into()),
        _ => {}
    }
    // Static content: a chapter per slide, named after it (see `slides.rs`).
    let slide_spans = slides::slide_chapters(inputs.scenes.as_ref(), &scenes, inputs.ocr.as_ref());
    let spans = match &slide_spans {
        Some(c) => {
            notes.push("Slides or screens: a chapter per slide, named after its title.".into());
            c.iter().map(|x| (x.0, x.1, x.2.clone())).collect()
        }
        None => chapter_spans(&scenes, duration.unwrap_or(0.0), chapter_secs),
    };
    let screen = slides::screen_lines(inputs.ocr.as_ref());

    // Keyframes by scene, as links relative to this stage's folder.
    let mut keyframe_of: BTreeMap<usize, String> = BTreeMap::new();
    if let Some((k, stage)) = &inputs.keyframes {
        for kf in k["keyframes"].as_array().into_iter().flatten() {
            if let (Some(scene), Some(file)) = (kf["scene"].as_u64(), kf["file"].as_str()) {
                keyframe_of.insert(scene as usize, format!("../{stage}/{file}"));
            }
        }
    }

    // Objects by scene.
    let mut objects_of: BTreeMap<usize, Vec<ObjectCount>> = BTreeMap::new();
    if let Some(o) = &inputs.objects {
        for sc in o["scenes"].as_array().into_iter().flatten() {
            let Some(i) = sc["scene"].as_u64() else {
                continue;
            };
            let list = sc["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| {
                    Some(ObjectCount {
                        name: x["name"].as_str()?.to_string(),
                        count: x["count"].as_u64().unwrap_or(1) as usize,
                        max_confidence: f(&x["max_confidence"]).unwrap_or(0.0),
                    })
                })
                .collect();
            objects_of.insert(i as usize, list);
        }
        if objects_of.values().all(Vec::is_empty) {
            notes.push("No objects were detected.".into());
        }
    }

    let mut chapters = Vec::new();
    for (ci, (start, end, scene_ids)) in spans.iter().enumerate() {
        // Whole sentences only: each belongs to the chapter holding its midpoint.
        let last = ci + 1 == spans.len();
        let inside: Vec<&Sentence> = sentences
            .iter()
            .filter(|s| {
                let mid = (s.start + s.end) / 2.0;
                mid >= *start && (mid < *end || last)
            })
            .collect();
        let text = inside
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let owned: Vec<Sentence> = inside.iter().map(|s| (*s).clone()).collect();
        let slide_title = slide_spans
            .as_ref()
            .and_then(|c| c.get(ci)?.3.clone())
            .map(|t| shorten(&t, 70));
        let title = slide_title.unwrap_or_else(|| {
            text::textrank(&owned, 1)
                .first()
                .map(|&i| shorten(&owned[i].text, 70))
                .unwrap_or_else(|| format!("Chapter {}", ci + 1))
        });
        let mut objects: BTreeMap<String, ObjectCount> = BTreeMap::new();
        for sid in scene_ids {
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
            start: *start,
            end: *end,
            title,
            keyframe,
            scenes: scene_ids.clone(),
            text,
            objects,
            screen_text: slides::chapter_text(&screen, scene_ids),
        });
    }

    let summary: Vec<Line> = text::textrank(&sentences, summary_sentences)
        .into_iter()
        .map(|i| line(&sentences[i]))
        .collect();
    let all_text = sentences
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let counts = text::term_counts(&all_text);
    let keywords = text::keywords(&counts, &BTreeMap::new(), 1, n_keywords);

    Summary {
        schema_version: SCHEMA_VERSION,
        title,
        source: meta.source.clone(),
        duration,
        resolution,
        language,
        processed: meta.processed.clone(),
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

impl StageKind for ComposeStage {
    fn name(&self) -> &'static str {
        "knowledge.compose"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "One knowledge file per video: summary, chapters with keyframes, keywords, objects, transcript"
    }

    fn params_doc(&self) -> Vec<ParamDoc> {
        vec![
            ParamDoc {
                name: "chapter_secs",
                ty: "seconds",
                default: Some("120"),
                doc: "target chapter length; scenes merge up to about this long",
            },
            ParamDoc {
                name: "summary_sentences",
                ty: "integer",
                default: Some("5"),
                doc: "sentences in the extractive summary (TextRank)",
            },
            ParamDoc {
                name: "keywords",
                ty: "integer",
                default: Some("10"),
                doc: "keywords per video",
            },
        ]
    }

    fn check(&self, params: &Value, env: &CheckEnv) -> Result<Value, Vec<ParamError>> {
        let p: Params = typed_params(params)?;
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
        if errs.is_empty() {
            Ok(serde_json::to_value(&p).expect("params serialize"))
        } else {
            Err(errs)
        }
    }

    fn key_extras(&self, _params: &Value, env: &KeyEnv) -> Result<KeyExtras, StageError> {
        let mut x = KeyExtras::default();
        if let Some(v) = env.video {
            // The title falls back to the file name, and the page links to the source.
            x.inputs
                .insert("stem".into(), v.stem.to_string_lossy().into_owned());
            x.inputs
                .insert("source".into(), v.rel.to_string_lossy().into_owned());
            x.inputs.insert(
                "source_href".into(),
                source_href(env.output_root, &v.folder, "{stage}", &v.path),
            );
        }
        Ok(x)
    }

    fn run(&self, ctx: &mut JobCtx) -> Result<(), StageError> {
        let p: Params = serde_json::from_value(ctx.params.clone())
            .map_err(|e| StageError::fatal(e.to_string()))?;
        let video = ctx
            .video
            .ok_or_else(|| StageError::fatal("knowledge.compose is a per-video stage"))?;
        let inputs = Inputs::read(ctx.upstream)?;
        let provenance = provenance(ctx);
        let meta = Meta {
            title_fallback: video.stem.to_string_lossy().into_owned(),
            source: video.rel.to_string_lossy().into_owned(),
            processed: now_rfc3339(),
            provenance,
        };
        let summary = compose(&inputs, &meta, &p);
        write(
            ctx.out_dir,
            "summary.json",
            serde_json::to_string_pretty(&summary)
                .expect("json")
                .as_bytes(),
        )?;
        write(
            ctx.out_dir,
            "summary.md",
            render::summary_md(&summary)?.as_bytes(),
        )?;
        let source_href = source_href(ctx.output_root, &video.folder, ctx.stage_id, &video.path);
        write(
            ctx.out_dir,
            "summary.html",
            render::summary_html(&summary, Some(&source_href))?.as_bytes(),
        )?;
        Ok(())
    }
}

/// The source video as a link from this stage's output folder (keyed in `key_extras`,
/// since the page's player depends on it).
fn source_href(output_root: &Path, folder: &std::ffi::OsStr, stage: &str, video: &Path) -> String {
    let here = output_root.join(folder).join(stage);
    vsum_engine::fsutil::relative(&here, video)
        .to_string_lossy()
        .into_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StageError> {
    std::fs::write(dir.join(name), bytes)
        .map_err(|e| StageError::retryable(format!("cannot write {name}: {e}")))
}

/// Provenance from the engine's upstream records; models named from the models manifest.
fn provenance(ctx: &JobCtx) -> Provenance {
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
        for (tool, hash) in &p.tools {
            if tool.contains("model") && seen.insert(hash.clone()) {
                let (name, license) =
                    super::model_name(hash).unwrap_or_else(|| (tool.clone(), None));
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
    fn dates_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_814_962), "2026-11-27T21:29:22Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
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
