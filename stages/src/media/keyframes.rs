//! `video.keyframes`: one representative JPEG per scene, plus `keyframes.json`, for
//! people to skim and for vision models to look at.
//!
//! It reads the scene list of an upstream `video.scenes` stage, then for each scene
//! decodes a few candidate frames around its middle (seeking when the next candidate is
//! far ahead, decoding on when it is near, and skipping non-reference pictures, which
//! are also the lower-quality ones) and keeps the sharpest one that is not black or
//! blank (variance of the Laplacian on a small grey copy). The picture is shown the
//! way a player would: non-square pixels are stretched and rotation metadata (phones)
//! applied, then it is shrunk to `max_width`.

use std::path::Path;

use ffmpeg::format::Pixel;
use ffmpeg::frame;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use image::RgbImage;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vsum_engine::contract::{Output, TypedStage};
use vsum_engine::stage::{Check, CheckEnv, JobCtx, KeyEnv, KeyExtras, ParamError, StageError};

use super::scenes::{Scene, ScenesOut};
use super::{
    DecodeOpts, FrameReader, check_cancel, ffmpeg_key_extras, io_error, job_video, open_input,
    open_video_decoder, require_video_stream, stream_rotation, warn,
};

const KIND: &str = "video.keyframes";

/// Decode on (rather than seek) when the next candidate is at most this far ahead.
const SEEK_GAP_SECS: f64 = 3.0;
/// Width of the grey copy the sharpness and blackness are measured on.
const METRIC_WIDTH: u32 = 320;
/// Mean grey level (0-255) under which a frame counts as black.
const BLACK_MEAN: f64 = 20.0;
/// Grey standard deviation under which a frame counts as blank (one flat colour).
const BLANK_STDDEV: f64 = 2.0;

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
            max_width: 1280,
            quality: 85,
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

struct Candidate {
    time: f64,
    sharpness: f64,
    blank: bool,
    image: RgbImage,
}

impl Output for KeyframesOut {
    const FILE: &'static str = "keyframes.json";
}

impl TypedStage for KeyframesStage {
    type Params = Params;
    const NAME: &'static str = KIND;
    const VERSION: u32 = 1;
    const SUMMARY: &'static str = "One sharp, non-black JPEG per scene (needs video.scenes), rotation applied -> scene_NNNN.jpg + keyframes.json";

    fn validate(&self, p: Params, env: &CheckEnv) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        if p.max_width < 16 {
            errs.push(
                ParamError::new(&["max_width"], "max_width must be at least 16").hint("e.g. 1280"),
            );
        }
        if !(1..=100).contains(&p.quality) {
            errs.push(
                ParamError::new(&["quality"], "quality must be 1..=100")
                    .hint("85 is a good default"),
            );
        }
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
        let out = extract(ctx, &video.path, p, &scenes)?;
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

/// Geometry of the pictures written: what to scale to before rotating, and the result.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    scale_w: u32,
    scale_h: u32,
    rotation: i32,
}

fn geometry(w: u32, h: u32, sar: Option<f64>, rotation: i32, max_width: u32) -> Geometry {
    let sw = f64::from(w) * sar.filter(|s| s.is_finite() && *s > 0.0).unwrap_or(1.0);
    let sh = f64::from(h);
    let swapped = rotation == 90 || rotation == 270;
    let (dw, dh) = if swapped { (sh, sw) } else { (sw, sh) };
    let f = (f64::from(max_width) / dw).min(1.0);
    let fw = ((dw * f).round() as u32).max(1);
    let fh = ((dh * f).round() as u32).max(1);
    let (scale_w, scale_h) = if swapped { (fh, fw) } else { (fw, fh) };
    Geometry {
        scale_w,
        scale_h,
        rotation,
    }
}

/// Converts frames to the grey metric copy and the RGB output picture.
struct Pictures {
    key: Option<(Pixel, u32, u32)>,
    grey: Option<scaling::Context>,
    rgb: Option<scaling::Context>,
    grey_frame: frame::Video,
    rgb_frame: frame::Video,
    geometry: Geometry,
    max_width: u32,
    rotation: i32,
}

impl Pictures {
    fn prepare(&mut self, f: &frame::Video) -> Result<(), ffmpeg::Error> {
        let key = (f.format(), f.width(), f.height());
        if self.key == Some(key) {
            return Ok(());
        }
        let sar = ffmpeg_rational(f.aspect_ratio());
        self.geometry = geometry(f.width(), f.height(), sar, self.rotation, self.max_width);
        let gw = f.width().clamp(1, METRIC_WIDTH);
        let gh =
            ((u64::from(f.height()) * u64::from(gw) / u64::from(f.width().max(1))) as u32).max(1);
        self.grey = Some(scaling::Context::get(
            f.format(),
            f.width(),
            f.height(),
            Pixel::GRAY8,
            gw,
            gh,
            scaling::Flags::AREA,
        )?);
        self.rgb = Some(scaling::Context::get(
            f.format(),
            f.width(),
            f.height(),
            Pixel::RGB24,
            self.geometry.scale_w,
            self.geometry.scale_h,
            scaling::Flags::BICUBIC | scaling::Flags::ACCURATE_RND | scaling::Flags::FULL_CHR_H_INT,
        )?);
        self.grey_frame = frame::Video::empty();
        self.rgb_frame = frame::Video::empty();
        self.key = Some(key);
        Ok(())
    }

    /// (sharpness, blank) of a frame.
    fn metrics(&mut self, f: &frame::Video) -> Result<(f64, bool), ffmpeg::Error> {
        self.prepare(f)?;
        let g = self.grey.as_mut().expect("prepared");
        g.run(f, &mut self.grey_frame)?;
        let (w, h) = (
            self.grey_frame.width() as usize,
            self.grey_frame.height() as usize,
        );
        let stride = self.grey_frame.stride(0);
        let data = self.grey_frame.data(0);
        let px = |x: usize, y: usize| f64::from(data[y * stride + x]);
        let (mut sum, mut sum2) = (0.0, 0.0);
        for y in 0..h {
            for x in 0..w {
                let v = px(x, y);
                sum += v;
                sum2 += v * v;
            }
        }
        let n = (w * h).max(1) as f64;
        let mean = sum / n;
        let std = (sum2 / n - mean * mean).max(0.0).sqrt();
        let (mut l1, mut l2, mut ln) = (0.0, 0.0, 0.0);
        for y in 1..h.saturating_sub(1) {
            for x in 1..w.saturating_sub(1) {
                let l = px(x - 1, y) + px(x + 1, y) + px(x, y - 1) + px(x, y + 1) - 4.0 * px(x, y);
                l1 += l;
                l2 += l * l;
                ln += 1.0;
            }
        }
        let sharp = if ln > 0.0 {
            l2 / ln - (l1 / ln).powi(2)
        } else {
            0.0
        };
        Ok((sharp.max(0.0), mean < BLACK_MEAN || std < BLANK_STDDEV))
    }

    fn picture(&mut self, f: &frame::Video) -> Result<RgbImage, ffmpeg::Error> {
        self.prepare(f)?;
        let s = self.rgb.as_mut().expect("prepared");
        s.run(f, &mut self.rgb_frame)?;
        let (w, h) = (self.geometry.scale_w, self.geometry.scale_h);
        let stride = self.rgb_frame.stride(0);
        let data = self.rgb_frame.data(0);
        let row = w as usize * 3;
        let mut buf = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            buf.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        let img = RgbImage::from_raw(w, h, buf).expect("buffer sized from the frame");
        // `rotation` is counterclockwise; image's rotations are clockwise.
        Ok(match self.geometry.rotation {
            90 => image::imageops::rotate270(&img),
            180 => image::imageops::rotate180(&img),
            270 => image::imageops::rotate90(&img),
            _ => img,
        })
    }
}

fn ffmpeg_rational(r: ffmpeg::Rational) -> Option<f64> {
    super::rational(r)
}

/// Picks the sharpest non-blank candidate; near-ties go to the one nearest the middle.
fn choose(cands: Vec<Candidate>, middle: f64) -> Option<Candidate> {
    let any_ok = cands.iter().any(|c| !c.blank);
    let pool: Vec<Candidate> = cands.into_iter().filter(|c| !any_ok || !c.blank).collect();
    let best = pool.iter().map(|c| c.sharpness).fold(0.0, f64::max);
    pool.into_iter()
        .filter(|c| c.sharpness >= best * 0.97)
        .min_by(|a, b| (a.time - middle).abs().total_cmp(&(b.time - middle).abs()))
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
    let decoder = open_video_decoder(&input, index, ctx.threads, DecodeOpts::default(), path)?;
    let mut reader = FrameReader::new(&mut input, index, decoder);
    // Candidates come from reference pictures only: decoding skips the rest (often half
    // the frames), and reference pictures are the better-quality ones anyway.
    reader.decoder.skip_frame(ffmpeg::Discard::NonReference);
    let half_frame = 0.5 / scenes.fps.max(1.0);
    let mut pics = Pictures {
        key: None,
        grey: None,
        rgb: None,
        grey_frame: frame::Video::empty(),
        rgb_frame: frame::Video::empty(),
        geometry: geometry(1, 1, None, 0, p.max_width),
        max_width: p.max_width,
        rotation,
    };
    let mut out = KeyframesOut {
        keyframes: Vec::new(),
        rotation,
        missing: Vec::new(),
        decode_errors: 0,
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

fn write_jpeg(dest: &Path, img: &RgbImage, quality: u8) -> Result<(), StageError> {
    let f = std::fs::File::create(dest).map_err(|e| io_error(dest, "create", e))?;
    let mut w = std::io::BufWriter::new(f);
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, quality);
    img.write_with_encoder(enc)
        .map_err(|e| StageError::fatal(format!("cannot encode {}: {e}", dest.display())))?;
    use std::io::Write;
    w.flush().map_err(|e| io_error(dest, "write", e))
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

    fn cand(time: f64, sharpness: f64, blank: bool) -> Candidate {
        Candidate {
            time,
            sharpness,
            blank,
            image: RgbImage::new(1, 1),
        }
    }

    #[test]
    fn choose_prefers_sharp_non_black_frames_near_the_middle() {
        // A sharper black frame loses to a picture.
        let c = choose(vec![cand(1.0, 900.0, true), cand(2.0, 100.0, false)], 1.5).unwrap();
        assert_eq!(c.time, 2.0);
        // The sharpest wins...
        let c = choose(
            vec![
                cand(1.0, 100.0, false),
                cand(2.0, 500.0, false),
                cand(3.0, 90.0, false),
            ],
            2.0,
        )
        .unwrap();
        assert_eq!(c.time, 2.0);
        // ...near-ties go to the middle.
        let c = choose(
            vec![
                cand(1.0, 500.0, false),
                cand(2.0, 495.0, false),
                cand(3.0, 499.0, false),
            ],
            2.0,
        )
        .unwrap();
        assert_eq!(c.time, 2.0);
        // All blank: still one picture.
        let c = choose(vec![cand(1.0, 0.0, true), cand(2.0, 0.0, true)], 2.0).unwrap();
        assert_eq!(c.time, 2.0);
        assert!(choose(Vec::new(), 0.0).is_none());
    }

    #[test]
    fn geometry_rotates_and_shrinks() {
        let g = geometry(1920, 1080, None, 90, 640);
        // Displayed 1080x1920 -> 640 wide, 1138 high; scaled before rotating.
        assert_eq!((g.scale_w, g.scale_h), (1138, 640));
        let g = geometry(720, 480, Some(32.0 / 27.0), 0, 2000);
        assert_eq!((g.scale_w, g.scale_h), (853, 480));
        let g = geometry(1, 1, None, 0, 1280);
        assert_eq!((g.scale_w, g.scale_h), (1, 1));
    }
}
