//! `video.scenes`: cuts a video into shots, written as `scenes.json`.
//!
//! The detector is PySceneDetect's ContentDetector, re-implemented so the cut lists
//! agree with it: each frame is downscaled (to about 256 pixels wide by default), turned
//! into OpenCV-style 8-bit HSV, and scored by the mean absolute difference of H, S and V
//! from the previous frame; a score at or above `threshold` is a cut, and cuts closer
//! than `min_scene_len` frames are merged (its "flash filter", which also keeps camera
//! flashes from cutting). It runs while FFmpeg decodes with frame threads, and with
//! `fast_decode` skips the in-loop deblocking filter (it smooths block edges, which the
//! coarse downscaled HSV comparison never sees) and lets codecs that can decode straight
//! to a smaller picture (MJPEG, MPEG-1/2/4 part 2 "lowres") do so, never below the
//! analysis size, so detection runs at decode-only speed or faster.
//!
//! With `pictures` (the default) the decode is full size and only the frames no other
//! frame refers to skip deblocking (pictures are picked from the others), and the same pass
//! picks one picture per scene (see `pictures.rs`): `video.keyframes` then copies them,
//! so a video is decoded once for its cuts and its keyframes, not twice.
//!
//! Times are seconds from the video stream's start, taken from frame timestamps (so
//! variable frame rate is right); `end_frame` and `end` are exclusive: they are the next
//! scene's `start_frame` and `start`.

use std::path::Path;

use ffmpeg::format::Pixel;
use ffmpeg::frame;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, ParamError, StageError};

use super::hwaccel::DecodeInfo;
use super::pictures::Sampler;
use super::slides::{
    AutoChoice, GreyShrinker, SlideDetector, SlideScore, SlideSettings, choose, slides_size,
};
use super::{
    DecodeOpts, FrameReader, SwsPicture, check_cancel, ffmpeg_key_extras, io_error, job_video,
    open_input, open_video_decoder, rational, require_video_stream, stream_dims, stream_rotation,
    warn_damaged,
};

const KIND: &str = "video.scenes";

/// PySceneDetect's target width for automatic downscaling.
const AUTO_WIDTH: f64 = 256.0;

/// How much to shrink frames before comparing them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Downscale {
    /// Like PySceneDetect: by max(width, height) / 256 when the frame is larger.
    Auto,
    /// By this whole factor (1 = full size).
    Factor(u32),
}

impl Serialize for Downscale {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Downscale::Auto => s.serialize_str("auto"),
            Downscale::Factor(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Downscale {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::S(s)) if s == "auto" => Ok(Downscale::Auto),
            Ok(Raw::N(n)) if n >= 1 => Ok(Downscale::Factor(n)),
            _ => Err(serde::de::Error::custom(
                "downscale must be \"auto\" or a whole number >= 1",
            )),
        }
    }
}

impl JsonSchema for Downscale {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Downscale".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [{ "const": "auto" }, { "type": "integer", "minimum": 1 }]
        })
    }
}

impl Downscale {
    /// The analysis size for a `w` x `h` frame.
    pub fn target(self, w: u32, h: u32) -> (u32, u32) {
        let f = match self {
            Downscale::Auto => {
                let m = f64::from(w.max(h));
                if m < AUTO_WIDTH { 1.0 } else { m / AUTO_WIDTH }
            }
            Downscale::Factor(n) => f64::from(n),
        };
        let dim = |x: u32| ((f64::from(x) / f).round() as u32).max(1);
        (dim(w), dim(h))
    }
}

/// Seconds over which two separate motions of a block make it busy (slides detector).
const BUSY_WINDOW_SECS: f64 = 4.0;

/// Which detector cuts the video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    /// PySceneDetect's ContentDetector: camera footage, films.
    #[default]
    Content,
    /// Steps in static content: slides, build-ups, scrolls (see `slides.rs`).
    Slides,
    /// Both run in one pass; the video's motion and flatness decide which one's cuts
    /// are kept, and the choice is recorded.
    Auto,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Mean HSV change (0-255 scale) between frames that counts as a cut; lower finds
    /// more cuts.
    pub threshold: f64,
    /// Frames: cuts closer than this are merged (also ignores camera flashes).
    pub min_scene_len: u32,
    /// Shrink frames by this factor before comparing; auto = to about 256 px like
    /// PySceneDetect.
    pub downscale: Downscale,
    /// Seconds: split longer scenes into equal parts no longer than this.
    pub max_scene_len: Option<f64>,
    /// Analysis-grade decoding: skip the deblocking filter, and decode MJPEG/MPEG-1/2/4
    /// at reduced size; the downscaled comparison does not see the difference. With
    /// `pictures` on, only frames no other frame refers to skip deblocking (pictures
    /// come from the others) and the decode stays full size.
    pub fast_decode: bool,
    /// Also choose one picture per scene during this decode (the sharpest non-black
    /// frame near its middle), into `pictures/`: a `video.keyframes` stage with the same
    /// width and quality then takes them without decoding the video again.
    pub pictures: bool,
    /// Pixels: pictures wider than this are shrunk (as `video.keyframes`' `max_width`).
    pub picture_width: u32,
    /// JPEG quality of the pictures, 1 to 100 (as `video.keyframes`' `quality`).
    pub picture_quality: u8,
    /// Also write stats.csv: every frame's score and its H/S/V parts (like
    /// PySceneDetect's stats file), to tune `threshold`.
    pub stats: bool,
    /// content: PySceneDetect's ContentDetector (camera footage); slides: steps in static
    /// content (new slides on one template, build-ups, scrolls; ignores cursors and
    /// regions in motion); auto: decides per video from how much moves and how flat the
    /// pictures are, and records its choice.
    pub detector: Detector,
    /// Slides: a pixel changed when it differs from the slide by more than this many
    /// grey levels (0-255).
    pub pixel_delta: u8,
    /// Slides: percent of the picture that must change (a bullet line is about 0.5).
    pub min_change: f64,
    /// Slides: seconds a change must hold still to count (the shortest slide seen).
    pub dwell: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            threshold: 27.0,
            min_scene_len: 15,
            downscale: Downscale::Auto,
            max_scene_len: None,
            fast_decode: true,
            pictures: true,
            picture_width: super::pictures::DEFAULT_WIDTH,
            picture_quality: super::pictures::DEFAULT_QUALITY,
            stats: false,
            detector: Detector::Content,
            pixel_delta: 24,
            min_change: 0.2,
            dwell: 0.5,
        }
    }
}

/// The `video.scenes` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct SceneStage;

/// One scene of `scenes.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Scene {
    pub index: usize,
    /// Seconds from the video stream's start.
    pub start: f64,
    /// Exclusive: the next scene's start (the video's end for the last one).
    pub end: f64,
    pub start_frame: u64,
    /// Exclusive.
    pub end_frame: u64,
    /// The detector's score at the cut that starts this scene (0 for the first scene
    /// and for scenes made by splitting at `max_scene_len`).
    pub score: f64,
}

/// `scenes.json`. Readers need only `scenes` and `fps`: the rest default when absent,
/// so other tools (or a hand-written list) can feed `video.keyframes`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScenesOut {
    pub scenes: Vec<Scene>,
    pub fps: f64,
    #[serde(default)]
    pub detector: String,
    #[serde(default)]
    pub params: Value,
    /// Frames decoded.
    #[serde(default)]
    pub frames: u64,
    /// Seconds from the first frame to the end of the last one.
    #[serde(default)]
    pub duration: f64,
    /// Width x height of the frames compared.
    #[serde(default)]
    pub analysis_size: [u32; 2],
    /// Width x height of the pictures the decoder produced (smaller than the video's
    /// with `fast_decode` on codecs that decode at reduced size).
    #[serde(default)]
    pub decoded_size: [u32; 2],
    #[serde(default)]
    pub decode_errors: u64,
    /// What decoded the video: a hardware decoder (`cuda`, `vaapi`) or software, and
    /// why no hardware was used.
    #[serde(default)]
    pub decoder: DecodeInfo,
    /// `static` (slides, screens: cut by the slides detector) or `footage` (camera);
    /// absent when only the content detector ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// What `detector: auto` measured and chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoChoice>,
    /// Scenes given a picture in `pictures/` (with `pictures: true`).
    #[serde(default)]
    pub pictures: usize,
}

impl Output for ScenesOut {
    const FILE: &'static str = "scenes.json";
}

impl TypedStage for SceneStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    // 5: pictures encoded by jpeg-encoder (other bytes than image's encoder).
    const VERSION: u32 = 5;
    const SUMMARY: &'static str = "Finds shot cuts (PySceneDetect ContentDetector: HSV frame deltas) or slide changes (detector: slides|auto) -> scenes.json";

    fn validate(&self, p: Params, _env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        if !(p.threshold > 0.0 && p.threshold <= 255.0) {
            errs.push(
                ParamError::new(
                    &["threshold"],
                    format!("threshold {} is out of range", p.threshold),
                )
                .hint("use a number in (0, 255]; 27 matches PySceneDetect's default"),
            );
        }
        if let Some(m) = p.max_scene_len
            && !(m > 0.0 && m.is_finite())
        {
            errs.push(
                ParamError::new(
                    &["max_scene_len"],
                    "max_scene_len must be a positive number of seconds",
                )
                .hint("e.g. `max_scene_len: 60`, or leave it out to keep long scenes whole"),
            );
        }
        if !(p.min_change > 0.0 && p.min_change <= 100.0) {
            errs.push(
                ParamError::new(&["min_change"], "min_change must be a percent in (0, 100]")
                    .hint("0.2 finds a bullet appearing; raise it to ignore smaller changes"),
            );
        }
        if !(p.dwell > 0.0 && p.dwell <= 60.0) {
            errs.push(
                ParamError::new(&["dwell"], "dwell must be in (0, 60] seconds")
                    .hint("0.5 catches slides shown for half a second or more"),
            );
        }
        super::pictures::check_size(
            &mut errs,
            ("picture_width", p.picture_width),
            ("picture_quality", p.picture_quality),
        );
        if p.pixel_delta == 0 {
            errs.push(
                ParamError::new(&["pixel_delta"], "pixel_delta must be 1..=255")
                    .hint("24 ignores compression noise and background shade shifts"),
            );
        }
        if errs.is_empty() { Ok(p) } else { Err(errs) }
    }

    fn key_extras(&self, _p: &Params, _env: &KeyEnv) -> Result<KeyExtras, StageError> {
        Ok(ffmpeg_key_extras())
    }

    fn doctor(&self, _p: &Params, _base_dir: &std::path::Path) -> Vec<Check> {
        super::doctor_ffmpeg()
    }

    fn run(&self, p: &Params, ctx: &mut JobCtx) -> Result<(), StageError> {
        let video = job_video(ctx, KIND)?;
        let out = detect(ctx, &video.path, p)?;
        warn_damaged(ctx, &video.path, out.decode_errors, "video");
        ctx.write_output(&out)
    }
}

fn detect(ctx: &JobCtx, path: &Path, p: &Params) -> Result<ScenesOut, StageError> {
    let mut input = open_input(path)?;
    let index = require_video_stream(&input, path, KIND)?;
    let stream = input.stream(index).expect("index from this input");
    let stream_fps = rational(stream.avg_frame_rate()).or_else(|| rational(stream.rate()));
    let use_content = p.detector != Detector::Slides;
    let use_slides = p.detector != Detector::Content;
    // Compare at the size PySceneDetect would, whatever size the decoder hands out.
    let dims = stream_dims(&input, index);
    let target = dims.map(|(w, h)| p.downscale.target(w, h));
    let need = dims.map(|(w, h)| {
        let (cw, ch) = p.downscale.target(w, h);
        if use_slides {
            let (sw, sh) = slides_size(w, h);
            (cw.max(sw), ch.max(sh))
        } else {
            (cw, ch)
        }
    });
    let fast = p.fast_decode && !p.pictures;
    let opts = DecodeOpts {
        // The pictures are picked from reference frames only (see `pictures::Sampler`),
        // so with `fast_decode` the others may skip deblocking even when pictures are on.
        skip_loop_filter: match (p.fast_decode, p.pictures) {
            (false, _) => ffmpeg::Discard::Default,
            (true, true) => ffmpeg::Discard::NonReference,
            (true, false) => ffmpeg::Discard::All,
        },
        min_size: need.filter(|_| fast),
    };
    let rotation = stream_rotation(&stream);
    // FFmpeg's frame threads sleep while they wait (they never spin, unlike Whisper's
    // or ONNX Runtime's, which the core budget is for), so this one full decode of the
    // video may use every core: a core another job holds is shared by the system, and
    // an idle one (the GPU lane waiting for all of them) decodes instead of idling.
    let decode_threads = ctx.threads.max(ctx.cores.map_or(1, |c| c.total()));
    let decoding = open_video_decoder(&input, index, decode_threads, opts, path)?;
    let decoder_info = decoding.1.info.clone();
    let mut reader = FrameReader::new(&mut input, index, decoding);
    let step = 1.0 / stream_fps.unwrap_or(25.0);
    let frames_per_sec = stream_fps.unwrap_or(25.0);
    let mut sampler = if p.pictures {
        Some(Sampler::new(
            ctx.out_dir,
            frames_per_sec,
            p.picture_width,
            p.picture_quality,
            rotation,
        )?)
    } else {
        None
    };
    let settings = SlideSettings {
        pixel_delta: p.pixel_delta,
        min_change: p.min_change / 100.0,
        dwell: ((p.dwell * frames_per_sec).round() as u64).max(1),
        window: ((BUSY_WINDOW_SECS * frames_per_sec).round() as u64).max(2),
    };

    let mut detector = ContentDetector::new(p.threshold, p.min_scene_len);
    let mut shrink = Shrinker::default();
    let mut grey = GreyShrinker::default();
    let mut slides: Option<SlideDetector> = None;
    let mut slide_size = [0u32, 0];
    let mut analysis = target.map_or([0, 0], |(w, h)| [w, h]);
    let mut times: Vec<f64> = Vec::new();
    let mut scores: Vec<FrameScore> = Vec::new();
    let mut slide_scores: Vec<SlideScore> = Vec::new();
    let mut cuts: Vec<u64> = Vec::new();
    let mut slide_cuts: Vec<u64> = Vec::new();
    let mut idx = 0u64;
    let mut scale_errors = 0u64;
    let mut decoded = [0u32; 2];
    while reader.advance() {
        let f = reader.frame();
        if idx.is_multiple_of(64) {
            check_cancel(ctx)?;
        }
        if f.width() == 0 || f.height() == 0 {
            continue;
        }
        if decoded[0] == 0 {
            decoded = [f.width(), f.height()];
        }
        if analysis[0] == 0 {
            let (aw, ah) = p.downscale.target(f.width(), f.height());
            analysis = [aw, ah];
        }
        if use_slides && slide_size[0] == 0 {
            let (sw, sh) = match dims {
                Some((w, h)) => slides_size(w, h),
                None => slides_size(f.width(), f.height()),
            };
            slide_size = [sw, sh];
            slides = Some(SlideDetector::new(settings, sw as usize, sh as usize));
        }
        let fail = |e: ffmpeg::Error| {
            StageError::fatal(format!(
                "cannot convert the {}x{} {:?} frames of {}: {e}",
                f.width(),
                f.height(),
                f.format(),
                path.display()
            ))
        };
        let first = idx == 0 && times.is_empty();
        // The two detectors' pictures are made side by side (with `detector: auto`, on
        // two cores when the pool has one free; otherwise one after the other): the
        // content detector's shrink and score, and the slides detector's grey picture.
        // (`vsum` runs this in the media helper, whose pool holds no other job.)
        let (aw, ah) = (analysis[0] as usize, analysis[1] as usize);
        let (content, grey_pic) = if is_planar_yuv8(f.format()) {
            let (shrink, grey, det) = (&mut shrink.core, &mut grey.areas, &mut detector);
            let want_grey = slides.is_some();
            let content = move || {
                use_content.then(move || {
                    det.push(
                        idx,
                        shrink.planar(f, analysis[0], analysis[1]),
                        aw,
                        ah,
                        aw * 3,
                    )
                })
            };
            let grey_pic =
                move || want_grey.then(move || grey.planar(f, slide_size[0], slide_size[1]));
            // Only worth a second core when both detectors run (rayon's join costs a
            // little even when one side is empty).
            let (content, grey_pic) = if use_content && want_grey {
                rayon::join(content, grey_pic)
            } else {
                (content(), grey_pic())
            };
            (content.map(Ok), grey_pic.map(Ok))
        } else {
            let content = use_content.then(|| {
                shrink
                    .run(f, analysis[0], analysis[1])
                    .map(|bgr| detector.push(idx, bgr, aw, ah, aw * 3))
            });
            (
                content,
                slides
                    .is_some()
                    .then(|| grey.run(f, slide_size[0], slide_size[1])),
            )
        };
        let (mut score, mut cut) = (FrameScore::default(), None);
        match content {
            Some(Ok(c)) => (score, cut) = c,
            Some(Err(e)) if first => return Err(fail(e)),
            Some(Err(_)) => {
                scale_errors += 1;
                continue;
            }
            None => {}
        }
        let mut slide_score = SlideScore::default();
        let mut slide_cut = None;
        if let (Some(d), Some(g)) = (slides.as_mut(), grey_pic) {
            match g {
                Ok(g) => (slide_score, slide_cut) = d.push(g),
                Err(e) if first => return Err(fail(e)),
                Err(_) => {
                    // The content detector already took this frame: keep them aligned.
                    scale_errors += 1;
                    let last = d.last_grey().to_vec();
                    (slide_score, slide_cut) = d.push(&last);
                }
            }
        }
        let prev = times.last().copied();
        let t = reader
            .time()
            .map(|t| prev.map_or(t, |p| t.max(p)))
            .unwrap_or_else(|| prev.map_or(0.0, |p| p + step));
        times.push(t);
        scores.push(score);
        slide_scores.push(slide_score);
        if let Some(c) = cut {
            cuts.push(c);
        }
        if let Some(c) = slide_cut {
            slide_cuts.push(c);
        }
        if let Some(sm) = sampler.as_mut() {
            let (a, b) = (cut.unwrap_or(u64::MAX), slide_cut.unwrap_or(u64::MAX));
            for c in [a.min(b), a.max(b)] {
                if c != u64::MAX {
                    sm.cut(c)?;
                }
            }
            sm.offer(idx, f);
        }
        idx += 1;
    }
    let frames = idx;
    let errors = reader.errors + scale_errors;
    if frames == 0 {
        return Err(StageError::fatal(format!(
            "{KIND}: no picture could be decoded from {} ({errors} decode errors)",
            path.display()
        ))
        .hint("the video stream is empty or damaged throughout: check that it plays, re-copy it from the source"));
    }
    let first = times[0];
    let times: Vec<f64> = times.iter().map(|t| t - first).collect();
    if p.stats {
        write_stats(
            &ctx.out_dir.join("stats.csv"),
            &times,
            &scores,
            use_slides.then_some(slide_scores.as_slice()),
        )?;
    }
    let last_step = if frames >= 2 {
        let d = times[frames as usize - 1] - times[frames as usize - 2];
        if d > 0.0 { d } else { step }
    } else {
        step
    };
    let end_time = times[frames as usize - 1] + last_step;
    let fps = stream_fps.unwrap_or_else(|| frames as f64 / end_time.max(1e-9));

    let content_name = "content: mean |dH|+|dS|+|dV| / 3 (PySceneDetect ContentDetector)";
    let slides_name = "slides: settled change of the grey picture against the last slide";
    let (auto, chosen_slides) = match p.detector {
        Detector::Content => (None, false),
        Detector::Slides => (None, true),
        Detector::Auto => {
            let (moving, flat) = slides
                .as_ref()
                .map(SlideDetector::content_stats)
                .unwrap_or((1.0, 0.0));
            let c = choose(moving, flat);
            let s = c.chose == "slides";
            (Some(c), s)
        }
    };
    let mut bounds: Vec<(u64, f64)> = vec![(0, 0.0)];
    if chosen_slides {
        bounds.extend(
            slide_cuts
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| (c, slide_score_at(&slide_scores, c))),
        );
    } else {
        bounds.extend(cuts.iter().map(|&c| (c, scores[c as usize].content)));
    }
    let mut scenes = Vec::new();
    for (i, &(start, score)) in bounds.iter().enumerate() {
        let end = bounds.get(i + 1).map_or(frames, |b| b.0);
        scenes.push((start, end, score));
    }
    if let Some(max) = p.max_scene_len {
        scenes = split_long(&scenes, &times, end_time, max);
    }
    let time_of = |f: u64| times.get(f as usize).copied().unwrap_or(end_time);
    let scenes: Vec<Scene> = scenes
        .into_iter()
        .enumerate()
        .map(|(i, (s, e, score))| Scene {
            index: i,
            start: round6(time_of(s)),
            end: round6(time_of(e)),
            start_frame: s,
            end_frame: e,
            score: round3(score),
        })
        .collect();
    let pictures = match sampler {
        Some(mut sm) => {
            sm.finish(frames)?;
            sm.assign(&scenes, &times, &decoder_info)?
        }
        None => 0,
    };
    let content_type = match (p.detector, &auto) {
        (Detector::Content, _) => None,
        (Detector::Slides, _) => Some("static".to_string()),
        (Detector::Auto, Some(a)) => Some(a.content_type.clone()),
        (Detector::Auto, None) => None,
    };
    Ok(ScenesOut {
        scenes,
        fps: round3(fps),
        detector: if chosen_slides {
            slides_name
        } else {
            content_name
        }
        .to_string(),
        params: serde_json::to_value(p).unwrap_or(Value::Null),
        frames,
        duration: round6(end_time),
        analysis_size: if chosen_slides { slide_size } else { analysis },
        decoded_size: decoded,
        decode_errors: errors,
        decoder: decoder_info,
        content_type,
        auto,
        pictures,
    })
}

/// A slide change's score: the largest percentage of the picture seen changed in the
/// 150 frames from its start (the change is confirmed within them).
fn slide_score_at(scores: &[SlideScore], cut: u64) -> f64 {
    scores
        .iter()
        .skip(cut as usize)
        .take(150)
        .map(|s| s.changed * 100.0)
        .fold(0.0, f64::max)
}

/// Per-frame scores as CSV, with PySceneDetect's stats-file column names.
fn write_stats(
    path: &Path,
    times: &[f64],
    scores: &[FrameScore],
    slides: Option<&[SlideScore]>,
) -> Result<(), StageError> {
    use std::io::Write;
    let f = std::fs::File::create(path).map_err(|e| io_error(path, "create", e))?;
    let mut w = std::io::BufWriter::new(f);
    let mut put = || -> std::io::Result<()> {
        let extra = if slides.is_some() {
            ",slide_changed_pct,moving_blocks_pct"
        } else {
            ""
        };
        writeln!(
            w,
            "frame,time,content_val,delta_hue,delta_sat,delta_lum{extra}"
        )?;
        for (i, (t, s)) in times.iter().zip(scores).enumerate() {
            write!(
                w,
                "{i},{t:.6},{:.4},{:.4},{:.4},{:.4}",
                s.content, s.hue, s.sat, s.lum
            )?;
            match slides.and_then(|v| v.get(i)) {
                Some(x) => writeln!(w, ",{:.4},{:.2}", x.changed * 100.0, x.moving * 100.0)?,
                None => writeln!(w)?,
            }
        }
        w.flush()
    };
    put().map_err(|e| io_error(path, "write", e))
}

/// Shrinks decoded pictures to the analysis size as packed BGR.
///
/// 8-bit planar YUV (what nearly every video decodes to) is sampled directly the way
/// OpenCV's `INTER_LINEAR` resize samples a full-size BGR picture (bilinear at mapped
/// pixel centres, which for whole factors picks single pixels), so scores match
/// PySceneDetect's even on noisy pictures, and nothing full-size is ever converted.
/// Other formats go through swscale.
#[derive(Default)]
struct Shrinker {
    core: BgrShrinker,
    sws: SwsPicture,
}

/// The planar-YUV path of [`Shrinker`]: plain data, so it can run on another thread
/// (swscale's context cannot).
#[derive(Default)]
pub(super) struct BgrShrinker {
    key: Option<(u32, u32, u32, u32)>,
    xmap: Vec<(usize, i32)>,
    ymap: Vec<(usize, i32)>,
    out: Vec<u8>,
}

/// Fixed-point weight scale of the bilinear taps (OpenCV's INTER_RESIZE_COEF_SCALE).
const COEF: i32 = 2048;

/// OpenCV's INTER_LINEAR source positions: for each destination index, the first
/// source index and the weight (of COEF) of the one after it.
fn linear_map(src: u32, dst: u32) -> Vec<(usize, i32)> {
    let scale = f64::from(src) / f64::from(dst);
    (0..dst)
        .map(|d| {
            let f = (f64::from(d) + 0.5) * scale - 0.5;
            let i = f.floor();
            let (mut i, mut w) = (i as i64, f - i);
            if i < 0 {
                (i, w) = (0, 0.0);
            }
            if i >= i64::from(src) - 1 {
                (i, w) = (i64::from(src) - 1, 0.0);
            }
            (i as usize, (w * f64::from(COEF)).round() as i32)
        })
        .collect()
}

/// Is `fmt` an 8-bit planar YUV format (whose first plane is the luma)?
pub(super) fn is_planar_yuv8(fmt: Pixel) -> bool {
    planar_yuv(fmt).is_some()
}

/// Chroma subsampling (log2 x, log2 y) and full range of the formats sampled directly.
fn planar_yuv(fmt: Pixel) -> Option<(u32, u32, bool)> {
    Some(match fmt {
        Pixel::YUV420P => (1, 1, false),
        Pixel::YUVJ420P => (1, 1, true),
        Pixel::YUV422P => (1, 0, false),
        Pixel::YUVJ422P => (1, 0, true),
        Pixel::YUV444P => (0, 0, false),
        Pixel::YUVJ444P => (0, 0, true),
        Pixel::YUV440P => (0, 1, false),
        Pixel::YUVJ440P => (0, 1, true),
        _ => return None,
    })
}

/// YUV to RGB coefficients in 1/65536: (luma gain, luma offset, V->R, U->G, V->G, U->B).
fn yuv_coefficients(full: bool, bt709: bool) -> [i32; 6] {
    let c = |x: f64| (x * 65536.0).round() as i32;
    match (full, bt709) {
        (true, false) => [c(1.0), 0, c(1.402), c(0.344136), c(0.714136), c(1.772)],
        (true, true) => [c(1.0), 0, c(1.5748), c(0.187324), c(0.468124), c(1.8556)],
        (false, false) => [
            c(1.164383),
            16,
            c(1.596027),
            c(0.391762),
            c(0.812968),
            c(2.017232),
        ],
        (false, true) => [
            c(1.164383),
            16,
            c(1.792741),
            c(0.213249),
            c(0.532909),
            c(2.112402),
        ],
    }
}

impl Shrinker {
    fn run(&mut self, f: &frame::Video, aw: u32, ah: u32) -> Result<&[u8], ffmpeg::Error> {
        if planar_yuv(f.format()).is_some() {
            return Ok(self.core.planar(f, aw, ah));
        }
        self.sws.run(
            f,
            (Pixel::BGR24, aw, ah),
            scaling::Flags::FAST_BILINEAR,
            3,
            &mut self.core.out,
        )?;
        Ok(&self.core.out)
    }
}

impl BgrShrinker {
    /// OpenCV-style INTER_LINEAR BGR24 picture of an 8-bit planar YUV frame (see
    /// [`planar_yuv`]; the caller checks the format).
    pub(super) fn planar(&mut self, f: &frame::Video, aw: u32, ah: u32) -> &[u8] {
        let (w, h) = (f.width(), f.height());
        if self.key != Some((w, h, aw, ah)) {
            self.key = Some((w, h, aw, ah));
            self.xmap = linear_map(w, aw);
            self.ymap = linear_map(h, ah);
            self.out = vec![0; aw as usize * ah as usize * 3];
        }
        let (cx, cy, jpeg) = planar_yuv(f.format()).expect("a planar YUV frame");
        let full = jpeg || f.color_range() == ffmpeg::color::Range::JPEG;
        let bt709 = f.color_space() == ffmpeg::color::Space::BT709;
        let [gain, off, vr, ug, vg, ub] = yuv_coefficients(full, bt709);
        let (ys, us, vs) = (f.stride(0), f.stride(1), f.stride(2));
        let (yp, up, vp) = (f.data(0), f.data(1), f.data(2));
        // Interpolate Y, U and V (in 1/16 steps), then convert once per output pixel:
        // the same as converting the four taps first, but for clamping. Whole factors
        // (1280 -> 256) hit the single-tap path.
        let wmax = w as usize - 1;
        let taps: Vec<(usize, usize, usize, usize, i32)> = self
            .xmap
            .iter()
            .map(|&(x, wx)| {
                let x1 = (x + 1).min(wmax);
                (x, x1, x >> cx, x1 >> cx, wx)
            })
            .collect();
        let hmax = h as usize - 1;
        let px = |c: i32| ((c + 32768) >> 16).clamp(0, 255) as u8;
        let convert = |o: &mut [u8], y16: i32, u16: i32, v16: i32| {
            let luma = ((y16 - (off << 4)) * gain) >> 4;
            let (u, v) = (u16 - (128 << 4), v16 - (128 << 4));
            o[0] = px(luma + ((ub * u) >> 4));
            o[1] = px(luma - ((ug * u) >> 4) - ((vg * v) >> 4));
            o[2] = px(luma + ((vr * v) >> 4));
        };
        let whole_x = taps.iter().all(|t| t.4 == 0);
        let aw = aw as usize;
        for (oy, &(sy, wy)) in self.ymap.iter().enumerate() {
            let sy1 = (sy + 1).min(hmax);
            let (y0, y1) = (&yp[sy * ys..], &yp[sy1 * ys..]);
            let (u0, u1) = (&up[(sy >> cy) * us..], &up[(sy1 >> cy) * us..]);
            let (v0, v1) = (&vp[(sy >> cy) * vs..], &vp[(sy1 >> cy) * vs..]);
            let out = &mut self.out[oy * aw * 3..(oy + 1) * aw * 3];
            if whole_x && wy == 0 {
                // Whole factors both ways (1280 -> 256): one tap per pixel, no weights.
                for (o, &(x0, _, c0, _, _)) in out.chunks_exact_mut(3).zip(&taps) {
                    convert(
                        o,
                        i32::from(y0[x0]) << 4,
                        i32::from(u0[c0]) << 4,
                        i32::from(v0[c0]) << 4,
                    );
                }
                continue;
            }
            for (o, &(x0, x1, c0, c1, wx)) in out.chunks_exact_mut(3).zip(&taps) {
                let (y16, u16, v16) = if wx == 0 && wy == 0 {
                    (
                        i32::from(y0[x0]) << 4,
                        i32::from(u0[c0]) << 4,
                        i32::from(v0[c0]) << 4,
                    )
                } else {
                    let lerp = |a: u8, b: u8, c: u8, d: u8| {
                        let top = i32::from(a) * (COEF - wx) + i32::from(b) * wx;
                        let bottom = i32::from(c) * (COEF - wx) + i32::from(d) * wx;
                        (top * (COEF - wy) + bottom * wy + (1 << 17)) >> 18
                    };
                    (
                        lerp(y0[x0], y0[x1], y1[x0], y1[x1]),
                        lerp(u0[c0], u0[c1], u1[c0], u1[c1]),
                        lerp(v0[c0], v0[c1], v1[c0], v1[c1]),
                    )
                };
                convert(o, y16, u16, v16);
            }
        }
        &self.out
    }
}

/// Splits scenes longer than `max` seconds into equal parts (at frame boundaries).
fn split_long(
    scenes: &[(u64, u64, f64)],
    times: &[f64],
    end_time: f64,
    max: f64,
) -> Vec<(u64, u64, f64)> {
    let time_of = |f: u64| times.get(f as usize).copied().unwrap_or(end_time);
    let mut out = Vec::new();
    for &(s, e, score) in scenes {
        let len = time_of(e) - time_of(s);
        let parts = ((len / max).ceil() as u64).clamp(1, (e - s).max(1));
        if parts <= 1 {
            out.push((s, e, score));
            continue;
        }
        let t0 = time_of(s);
        let mut start = s;
        for k in 1..=parts {
            let end = if k == parts {
                e
            } else {
                // First frame at or after the k-th equal division.
                let target = t0 + len * k as f64 / parts as f64;
                let off = times[s as usize..e as usize].partition_point(|&t| t < target - 1e-9);
                (s + off as u64).clamp(start + 1, e)
            };
            if end > start {
                out.push((start, end, if start == s { score } else { 0.0 }));
                start = end;
            }
        }
    }
    out
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

const HSV_SHIFT: i32 = 12;

/// OpenCV's `COLOR_BGR2HSV` division tables for 8-bit images (S and H in 0..180).
struct HsvTables {
    sdiv: [i32; 256],
    hdiv: [i32; 256],
}

const fn hsv_tables() -> HsvTables {
    let mut sdiv = [0i32; 256];
    let mut hdiv = [0i32; 256];
    let mut i = 1;
    while i < 256 {
        // round((255 << 12) / i) and round((180 << 12) / (6 i)).
        let a = (255i64 << HSV_SHIFT) * 2;
        sdiv[i] = ((a + i as i64) / (2 * i as i64)) as i32;
        let b = (180i64 << HSV_SHIFT) * 2;
        hdiv[i] = ((b + 6 * i as i64) / (12 * i as i64)) as i32;
        i += 1;
    }
    HsvTables { sdiv, hdiv }
}

static TABLES: HsvTables = hsv_tables();

/// One BGR pixel to OpenCV's 8-bit HSV (H in 0..180), bit for bit.
#[inline]
pub fn bgr_to_hsv(b: u8, g: u8, r: u8) -> (u8, u8, u8) {
    let (b, g, r) = (i32::from(b), i32::from(g), i32::from(r));
    let v = b.max(g).max(r);
    let vmin = b.min(g).min(r);
    let diff = v - vmin;
    let vr = if v == r { -1 } else { 0 };
    let vg = if v == g { -1 } else { 0 };
    let s = (diff * TABLES.sdiv[v as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    let mut h = (vr & (g - b)) + (!vr & ((vg & (b - r + 2 * diff)) + (!vg & (r - g + 4 * diff))));
    h = (h * TABLES.hdiv[diff as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    if h < 0 {
        h += 180;
    }
    (h as u8, s as u8, v as u8)
}

/// PySceneDetect's flash filter in MERGE mode: a cut must come at least `length` frames
/// after the previous frame above the threshold; closer ones are merged.
#[derive(Debug, Clone)]
struct FlashFilter {
    length: u64,
    last_above: Option<u64>,
    merge_enabled: bool,
    merge_triggered: bool,
    merge_start: u64,
}

impl FlashFilter {
    fn new(length: u32) -> Self {
        FlashFilter {
            length: u64::from(length),
            last_above: None,
            merge_enabled: false,
            merge_triggered: false,
            merge_start: 0,
        }
    }

    fn filter(&mut self, frame: u64, above: bool) -> Option<u64> {
        if self.length == 0 {
            return above.then_some(frame);
        }
        let last = *self.last_above.get_or_insert(frame);
        let min_length_met = frame - last >= self.length;
        if above {
            self.last_above = Some(frame);
        }
        let last = self.last_above.expect("set above");
        if self.merge_triggered {
            if min_length_met && !above && last - self.merge_start >= self.length {
                self.merge_triggered = false;
                return Some(last);
            }
            return None;
        }
        if !above {
            return None;
        }
        if min_length_met {
            self.merge_enabled = true;
            return Some(frame);
        }
        if self.merge_enabled {
            self.merge_triggered = true;
            self.merge_start = frame;
        }
        None
    }
}

/// How much a frame differs from the one before: PySceneDetect's `content_val` and its
/// components (mean absolute difference of each HSV channel, 0-255 scale).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameScore {
    pub content: f64,
    pub hue: f64,
    pub sat: f64,
    pub lum: f64,
}

/// Scores consecutive frames and reports cuts. Feed it frames of one fixed size.
#[derive(Debug, Clone)]
pub struct ContentDetector {
    threshold: f64,
    filter: FlashFilter,
    prev: Vec<[u8; 3]>,
    cur: Vec<[u8; 3]>,
    has_prev: bool,
}

impl ContentDetector {
    pub fn new(threshold: f64, min_scene_len: u32) -> Self {
        ContentDetector {
            threshold,
            filter: FlashFilter::new(min_scene_len),
            prev: Vec::new(),
            cur: Vec::new(),
            has_prev: false,
        }
    }

    /// Feeds frame number `frame` (packed BGR rows, `stride` bytes apart). Returns its
    /// scores (0 for the first frame) and the frame a new scene starts at, if one does.
    pub fn push(
        &mut self,
        frame: u64,
        bgr: &[u8],
        width: usize,
        height: usize,
        stride: usize,
    ) -> (FrameScore, Option<u64>) {
        let n = width * height;
        self.cur.resize(n, [0; 3]);
        let mut sums = [0u64; 3];
        let compare = self.has_prev && self.prev.len() == n;
        for y in 0..height {
            let row = &bgr[y * stride..y * stride + width * 3];
            let cur = &mut self.cur[y * width..(y + 1) * width];
            for (x, px) in row.chunks_exact(3).enumerate() {
                let (h, s, v) = bgr_to_hsv(px[0], px[1], px[2]);
                cur[x] = [h, s, v];
            }
            if compare {
                let prev = &self.prev[y * width..(y + 1) * width];
                for (c, p) in cur.iter().zip(prev) {
                    sums[0] += u64::from(c[0].abs_diff(p[0]));
                    sums[1] += u64::from(c[1].abs_diff(p[1]));
                    sums[2] += u64::from(c[2].abs_diff(p[2]));
                }
            }
        }
        std::mem::swap(&mut self.prev, &mut self.cur);
        let had_prev = compare;
        self.has_prev = true;
        let score = if had_prev {
            let px = n.max(1) as f64;
            let (hue, sat, lum) = (
                sums[0] as f64 / px,
                sums[1] as f64 / px,
                sums[2] as f64 / px,
            );
            FrameScore {
                content: (hue + sat + lum) / 3.0,
                hue,
                sat,
                lum,
            }
        } else {
            FrameScore::default()
        };
        let cut = self.filter.filter(frame, score.content >= self.threshold);
        (score, cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_matches_opencv_values() {
        // Values from cv2.cvtColor(np.uint8([[[b, g, r]]]), cv2.COLOR_BGR2HSV).
        assert_eq!(bgr_to_hsv(0, 0, 255), (0, 255, 255));
        assert_eq!(bgr_to_hsv(0, 255, 0), (60, 255, 255));
        assert_eq!(bgr_to_hsv(255, 0, 0), (120, 255, 255));
        assert_eq!(bgr_to_hsv(0, 0, 0), (0, 0, 0));
        assert_eq!(bgr_to_hsv(255, 255, 255), (0, 0, 255));
        assert_eq!(bgr_to_hsv(10, 200, 100), (46, 242, 200));
        assert_eq!(bgr_to_hsv(3, 7, 250), (0, 252, 250));
        assert_eq!(bgr_to_hsv(100, 100, 101), (0, 3, 101));
    }

    #[test]
    fn flash_filter_merges_close_cuts() {
        let mut f = FlashFilter::new(15);
        let mut cuts = Vec::new();
        for frame in 0..100u64 {
            let above = matches!(frame, 20 | 25 | 60);
            if let Some(c) = f.filter(frame, above) {
                cuts.push(c);
            }
        }
        assert_eq!(cuts, vec![20, 60]);
    }

    #[test]
    fn detector_cuts_between_colours() {
        let (w, h) = (8, 4);
        let red = [0u8, 0, 255].repeat(w * h);
        let blue = [255u8, 0, 0].repeat(w * h);
        let mut d = ContentDetector::new(27.0, 15);
        let mut cuts = Vec::new();
        for i in 0..60u64 {
            let img = if i < 30 { &red } else { &blue };
            if let (_, Some(c)) = d.push(i, img, w, h, w * 3) {
                cuts.push(c);
            }
        }
        assert_eq!(cuts, vec![30]);
    }

    /// A `w`x`h` yuv420p frame of one colour.
    fn yuv_frame(fmt: Pixel, w: u32, h: u32, yuv: [u8; 3]) -> frame::Video {
        let mut f = frame::Video::new(fmt, w, h);
        for (plane, v) in yuv.iter().enumerate() {
            f.data_mut(plane).fill(*v);
        }
        f
    }

    #[test]
    fn frames_the_planar_paths_do_not_take_go_through_swscale() {
        let (w, h) = (64usize, 48usize);
        let mut f = frame::Video::new(Pixel::RGB24, w as u32, h as u32);
        let stride = f.stride(0);
        for y in 0..h {
            for x in 0..w {
                let o = y * stride + x * 3;
                f.data_mut(0)[o..o + 3].copy_from_slice(&[200, 100, 50]);
            }
        }
        let mut s = Shrinker::default();
        let bgr = s.run(&f, 16, 12).unwrap();
        assert_eq!(bgr.len(), 16 * 12 * 3);
        for px in bgr.chunks(3) {
            let near = |a: u8, b: i32| (i32::from(a) - b).abs() <= 5;
            assert!(
                near(px[0], 50) && near(px[1], 100) && near(px[2], 200),
                "{px:?}"
            );
        }
        let mut g = super::super::slides::GreyShrinker::default();
        let grey = g.run(&f, 16, 12).unwrap();
        assert_eq!(grey.len(), 16 * 12);
        // BT.601 luma of (200, 100, 50) is 124.
        assert!(
            grey.iter().all(|&v| (i32::from(v) - 124).abs() <= 4),
            "{:?}",
            &grey[..4]
        );
        // Another size makes the scaler again.
        assert_eq!(s.run(&f, 8, 6).unwrap().len(), 8 * 6 * 3);
    }

    #[test]
    fn shrinker_converts_like_swscale_bt601() {
        let mut s = Shrinker::default();
        // BT.601 limited-range red, green, blue and mid grey.
        for (yuv, bgr) in [
            ([81, 90, 240], [0, 0, 255]),
            ([145, 54, 34], [0, 255, 0]),
            ([41, 240, 110], [255, 0, 0]),
            ([126, 128, 128], [128, 128, 128]),
        ] {
            let f = yuv_frame(Pixel::YUV420P, 64, 48, yuv);
            let out = s.run(&f, 16, 12).unwrap();
            assert_eq!(out.len(), 16 * 12 * 3);
            for px in out.chunks_exact(3) {
                for k in 0..3 {
                    assert!(
                        px[k].abs_diff(bgr[k]) <= 2,
                        "{yuv:?} -> {px:?}, want {bgr:?}"
                    );
                }
            }
        }
        // Full range (JPEG) grey is the luma itself; other formats go through swscale.
        let f = yuv_frame(Pixel::YUVJ444P, 10, 10, [200, 128, 128]);
        assert!(s.run(&f, 5, 5).unwrap().iter().all(|&v| v == 200));
        let mut rgb = frame::Video::new(Pixel::RGB24, 8, 8);
        rgb.data_mut(0).fill(0);
        for px in rgb.data_mut(0).chunks_exact_mut(3) {
            px[0] = 255;
        }
        let out = s.run(&rgb, 4, 4).unwrap();
        assert!(out.chunks_exact(3).all(|p| p == [0, 0, 255]), "{out:?}");
    }

    #[test]
    fn linear_map_matches_opencv_inter_linear() {
        // Whole factors pick single pixels at the block centres.
        assert_eq!(linear_map(1280, 256)[..3], [(2, 0), (7, 0), (12, 0)]);
        // Half-way positions blend two pixels; borders clamp.
        assert_eq!(linear_map(4, 2), vec![(0, 1024), (2, 1024)]);
        assert_eq!(linear_map(3, 6)[0], (0, 0));
        assert_eq!(linear_map(3, 6)[5], (2, 0));
    }

    #[test]
    fn auto_downscale_like_pyscenedetect() {
        assert_eq!(Downscale::Auto.target(1280, 720), (256, 144));
        assert_eq!(Downscale::Auto.target(1920, 1080), (256, 144));
        assert_eq!(Downscale::Auto.target(200, 100), (200, 100));
        assert_eq!(Downscale::Factor(2).target(321, 241), (161, 121));
        assert_eq!(Downscale::Auto.target(1, 1), (1, 1));
    }

    #[test]
    fn split_long_scenes() {
        let times: Vec<f64> = (0..100).map(|i| i as f64 * 0.1).collect();
        let s = split_long(&[(0, 100, 0.0)], &times, 10.0, 4.0);
        assert_eq!(s.len(), 3);
        assert_eq!(s.first().map(|x| x.0), Some(0));
        assert_eq!(s.last().map(|x| x.1), Some(100));
        assert!(s.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
