//! `video.keyframes`: one representative JPEG per scene, plus `keyframes.json`, for
//! people to skim and for vision models to look at.
//!
//! It reads the scene list of an upstream `video.scenes` stage. When that stage chose
//! the pictures during its own decode (`pictures: true`, the default) at this stage's
//! width and quality, they are copied and nothing is decoded. Otherwise, and for scenes
//! it has no picture for, it decodes a few candidate frames around its middle (seeking when the next candidate is
//! far ahead, decoding on when it is near, and skipping non-reference pictures, which
//! are also the lower-quality ones) and keeps the sharpest one that is not black or
//! blank (variance of the Laplacian on a small grey copy). The picture is shown the
//! way a player would: non-square pixels are stretched and rotation metadata (phones)
//! applied, then it is shrunk to `max_width`.

use std::path::Path;

use ffmpeg_next as ffmpeg;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, ParamError, StageError};

use super::pictures::{Candidate, PICTURES_DIR, Pictures, choose, write_jpeg};
use super::scenes::{Scene, ScenesOut};
use super::{
    DecodeOpts, FrameReader, check_cancel, ffmpeg_key_extras, io_error, job_video, open_input,
    open_video_decoder, require_video_stream, stream_rotation, warn,
};

const KIND: &str = "video.keyframes";

/// Decode on (rather than seek) when the next candidate is at most this far ahead.
const SEEK_GAP_SECS: f64 = 3.0;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Pixels: shrink pictures wider than this (as displayed: after rotation and pixel
    /// aspect).
    pub max_width: u32,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
    /// Frames tried around each scene's middle (35%..65% of it); the sharpest non-black
    /// one is kept.
    pub candidates: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_width: super::pictures::DEFAULT_WIDTH,
            quality: super::pictures::DEFAULT_QUALITY,
            candidates: 3,
        }
    }
}

/// The `video.keyframes` kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyframesStage;

/// `keyframes.json`: one picture per scene. Readers need only `keyframes` (scene, time,
/// file): the rest default when absent, so other tools can feed the vision stages.
///
/// Consumers read this type, not loose JSON, and name the fields they use, so renaming
/// one is a compile error in every consumer rather than data silently missing:
///
/// ```compile_fail
/// # use vsum_stages::media::KeyframesOut;
/// fn pictures(k: &KeyframesOut) -> usize {
///     k.frames.len() // the field is `keyframes`: this does not compile
/// }
/// ```
///
/// ```
/// # use vsum_stages::media::KeyframesOut;
/// fn pictures(k: &KeyframesOut) -> usize {
///     k.keyframes.len()
/// }
/// ```
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyframesOut {
    pub keyframes: Vec<KeyframeOut>,
    /// Degrees (counterclockwise) the pictures were turned, from the rotation metadata.
    #[serde(default)]
    pub rotation: i32,
    /// Scenes for which no frame could be decoded (damaged files).
    #[serde(default)]
    pub missing: Vec<usize>,
    #[serde(default)]
    pub decode_errors: u64,
    /// What decoded the video for these pictures (see `scenes.json`'s `decoder`); absent
    /// when nothing was decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<super::hwaccel::DecodeInfo>,
    /// The width limit and JPEG quality the pictures were made with (0 when unknown).
    #[serde(default)]
    pub max_width: u32,
    #[serde(default)]
    pub quality: u8,
    /// Pictures taken from `video.scenes`' own decode (its `pictures: true`) rather
    /// than decoded here again.
    #[serde(default)]
    pub from_scenes: usize,
}

/// One picture of [`KeyframesOut`].
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyframeOut {
    pub scene: usize,
    /// Seconds from the video stream's start (as in scenes.json).
    pub time: f64,
    pub file: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    /// Variance of the Laplacian of the grey picture (higher is sharper).
    #[serde(default)]
    pub sharpness: f64,
    /// True when every candidate was black or blank and this is the best of them.
    #[serde(default)]
    pub blank: bool,
}

impl Output for KeyframesOut {
    const FILE: &'static str = "keyframes.json";
}

impl TypedStage for KeyframesStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    // 3: pictures encoded by jpeg-encoder (other bytes than image's encoder).
    const VERSION: u32 = 3;
    const SUMMARY: &'static str = "One sharp, non-black JPEG per scene (needs video.scenes), rotation applied -> scene_NNNN.jpg + keyframes.json";

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        super::pictures::check_size(
            &mut errs,
            ("max_width", p.max_width),
            ("quality", p.quality),
        );
        if !(1..=15).contains(&p.candidates) {
            errs.push(
                ParamError::new(&["candidates"], "candidates must be 1..=15")
                    .hint("3 is usually enough"),
            );
        }
        if env.needs.is_empty() {
            errs.push(
                ParamError::new(
                    &[],
                    format!(
                        "stage '{}' ({KIND}) needs the scene list of a video.scenes stage",
                        env.stage_id
                    ),
                )
                .hint(
                    "add a stage with `uses: video.scenes` and put its id in this stage's `needs`",
                ),
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
        let scenes: ScenesOut = ctx.require_upstream("video.scenes")?;
        let out = from_scenes_pass(ctx, &video.path, p, &scenes)?;
        if !out.missing.is_empty() {
            warn(
                ctx,
                format!(
                    "{}: no frame could be decoded for {} of {} scenes",
                    video.path.display(),
                    out.missing.len(),
                    scenes.scenes.len()
                ),
            );
        }
        ctx.write_output(&out)
    }
}

/// The pictures `video.scenes` already chose while it decoded (its `pictures/` folder),
/// when they were made with this stage's width and quality; only the scenes it has no
/// picture for are decoded here.
fn from_scenes_pass(
    ctx: &JobCtx,
    path: &Path,
    p: &Params,
    scenes: &ScenesOut,
) -> Result<KeyframesOut, StageError> {
    let made = ctx
        .upstream_file(ScenesOut::FILE)
        .and_then(|f| f.parent().map(|d| d.join(PICTURES_DIR)))
        .filter(|d| d.join(KeyframesOut::FILE).is_file());
    let Some(dir) = made else {
        return extract(ctx, path, p, scenes);
    };
    let index = dir.join(KeyframesOut::FILE);
    let pass: KeyframesOut =
        serde_json::from_slice(&std::fs::read(&index).map_err(|e| io_error(&index, "read", e))?)
            .map_err(|e| StageError::fatal(format!("cannot read {}: {e}", index.display())))?;
    if pass.max_width != p.max_width || pass.quality != p.quality {
        return extract(ctx, path, p, scenes);
    }
    let mut out = KeyframesOut {
        rotation: pass.rotation,
        max_width: p.max_width,
        quality: p.quality,
        decode_errors: pass.decode_errors,
        decoder: pass.decoder.clone(),
        ..Default::default()
    };
    let mut left = ScenesOut {
        scenes: Vec::new(),
        ..scenes.clone()
    };
    for s in &scenes.scenes {
        let Some(k) = pass.keyframes.iter().find(|k| k.scene == s.index) else {
            left.scenes.push(s.clone());
            continue;
        };
        let (from, to) = (dir.join(&k.file), ctx.out_dir.join(&k.file));
        std::fs::copy(&from, &to).map_err(|e| io_error(&from, "copy", e))?;
        out.keyframes.push(k.clone());
        out.from_scenes += 1;
    }
    if !left.scenes.is_empty() {
        let rest = extract(ctx, path, p, &left)?;
        out.keyframes.extend(rest.keyframes);
        out.keyframes.sort_by_key(|k| k.scene);
        out.missing = rest.missing;
        out.decode_errors += rest.decode_errors;
        out.rotation = rest.rotation;
        out.decoder = rest.decoder;
    }
    Ok(out)
}

/// Candidate times of a scene: evenly over 35%..65% of its frames, as times.
fn candidate_times(s: &Scene, n: u32) -> Vec<f64> {
    let frames = s.end_frame.saturating_sub(s.start_frame).max(1);
    let per_frame = (s.end - s.start).max(0.0) / frames as f64;
    let mut picks: Vec<u64> = (0..n)
        .map(|i| {
            let frac = if n == 1 {
                0.5
            } else {
                0.35 + 0.3 * f64::from(i) / f64::from(n - 1)
            };
            ((frac * frames as f64).floor() as u64).min(frames - 1)
        })
        .collect();
    picks.dedup();
    picks
        .iter()
        .map(|&k| s.start + k as f64 * per_frame)
        .collect()
}

fn extract(
    ctx: &JobCtx,
    path: &Path,
    p: &Params,
    scenes: &ScenesOut,
) -> Result<KeyframesOut, StageError> {
    let mut input = open_input(path)?;
    let index = require_video_stream(&input, path, KIND)?;
    let rotation = stream_rotation(&input.stream(index).expect("index from this input"));
    let decoding = open_video_decoder(&input, index, ctx.threads, DecodeOpts::default(), path)?;
    let decoder_info = decoding.1.info.clone();
    let mut reader = FrameReader::new(&mut input, index, decoding);
    // Candidates come from reference pictures only: decoding skips the rest (often half
    // the frames), and reference pictures are the better-quality ones anyway.
    reader.decoder.skip_frame(ffmpeg::Discard::NonReference);
    let half_frame = 0.5 / scenes.fps.max(1.0);
    let mut pics = Pictures::new(p.max_width, rotation);
    let mut out = KeyframesOut {
        rotation,
        max_width: p.max_width,
        quality: p.quality,
        decoder: Some(decoder_info),
        ..Default::default()
    };
    let mut cursor = Cursor {
        reader,
        cur: None,
        eof: false,
        last: 0.0,
        half_frame,
    };
    let mut convert_errors = 0u64;
    for scene in &scenes.scenes {
        check_cancel(ctx)?;
        let mut cands: Vec<Candidate> = Vec::new();
        let mut evaluated: Option<f64> = None;
        let targets = candidate_times(scene, p.candidates);
        // The candidates, then (only if none landed in the scene) its first frame, this
        // time decoding every picture (a scene can be a single non-reference frame).
        for (t, fallback) in targets
            .iter()
            .map(|&t| (t, false))
            .chain([(scene.start, true)])
        {
            if fallback && !cands.is_empty() {
                break;
            }
            if fallback {
                cursor.reader.decoder.skip_frame(ffmpeg::Discard::Default);
            }
            let found = cursor.go_to(t, fallback);
            if fallback {
                cursor
                    .reader
                    .decoder
                    .skip_frame(ffmpeg::Discard::NonReference);
            }
            let Some(c) = found else {
                continue;
            };
            let inside = c >= scene.start - half_frame && c < scene.end - half_frame * 0.5;
            if !inside || evaluated == Some(c) {
                continue;
            }
            evaluated = Some(c);
            let f = cursor.reader.frame();
            match pics
                .metrics(f)
                .and_then(|(s, b)| Ok((s, b, pics.picture(f)?)))
            {
                Ok((sharpness, blank, image)) => cands.push(Candidate {
                    time: c,
                    sharpness,
                    blank,
                    image,
                }),
                Err(_) => convert_errors += 1,
            }
        }
        let middle = (scene.start + scene.end) / 2.0;
        let Some(best) = choose(cands, middle) else {
            out.missing.push(scene.index);
            continue;
        };
        let file = format!("scene_{:04}.jpg", scene.index);
        let dest = ctx.out_dir.join(&file);
        write_jpeg(&dest, &best.image, p.quality)?;
        out.keyframes.push(KeyframeOut {
            scene: scene.index,
            time: (best.time * 1e6).round() / 1e6,
            file,
            width: best.image.width(),
            height: best.image.height(),
            sharpness: (best.sharpness * 100.0).round() / 100.0,
            blank: best.blank,
        });
    }
    out.decode_errors = cursor.reader.errors + convert_errors;
    Ok(out)
}

/// Moves through the video to requested times, seeking only when that is cheaper.
struct Cursor<'a> {
    reader: FrameReader<'a>,
    /// Time of the frame the reader holds, if any.
    cur: Option<f64>,
    eof: bool,
    last: f64,
    half_frame: f64,
}

impl Cursor<'_> {
    /// Makes the held frame the first one at (or just after) `t`; returns its time, or
    /// `None` when the video ends before. `fresh` forces a seek (to retry after a miss).
    fn go_to(&mut self, t: f64, fresh: bool) -> Option<f64> {
        let behind = self.cur.is_some_and(|c| c > t + self.half_frame);
        let far = t - self.cur.unwrap_or(0.0) > SEEK_GAP_SECS;
        if (behind || far || fresh) && self.reader.seek(t).is_ok() {
            self.cur = None;
            self.eof = false;
        }
        while self.cur.is_none_or(|c| c < t - self.half_frame) {
            if self.eof || !self.reader.advance() {
                self.eof = true;
                return None;
            }
            let c = self.reader.time().unwrap_or(self.last).max(0.0);
            self.last = c;
            self.cur = Some(c);
        }
        self.cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(start_frame: u64, end_frame: u64, fps: f64) -> Scene {
        Scene {
            index: 0,
            start: start_frame as f64 / fps,
            end: end_frame as f64 / fps,
            start_frame,
            end_frame,
            score: 0.0,
        }
    }

    #[test]
    fn candidates_stay_inside_short_scenes() {
        let s = scene(10, 11, 25.0);
        assert_eq!(candidate_times(&s, 3), vec![0.4]);
        let s = scene(0, 100, 25.0);
        let c = candidate_times(&s, 3);
        assert_eq!(c.len(), 3);
        assert!((c[1] - 2.0).abs() < 1e-9);
    }
}
