//! Choosing and writing one picture per scene, shared by `video.keyframes` (which seeks
//! to candidates) and `video.scenes` (which samples them while it decodes the video for
//! its cuts, so that keyframes need no decode of their own).
//!
//! A candidate is scored on a small grey copy: the variance of its Laplacian (higher is
//! sharper), and whether it is black or one flat colour. The sharpest non-blank candidate
//! wins; near-ties go to the one nearest the scene's middle. A scene that spans several
//! of the scenes pass's stretches takes the picture of the one nearest its middle
//! (non-blank first). The picture is shown the way
//! a player would: non-square pixels stretched, rotation metadata (phones) applied, then
//! shrunk to a maximum width.

use std::path::Path;

use ffmpeg::format::Pixel;
use ffmpeg::frame;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use image::RgbImage;
use vsum_engine::stage::{ParamError, StageError};

use vsum_engine::contract::Output;

use super::io_error;
use super::keyframes::{KeyframeOut, KeyframesOut};
use super::scenes::Scene;

/// Width of the grey copy the sharpness and blackness are measured on.
const METRIC_WIDTH: u32 = 320;
/// Mean grey level (0-255) under which a frame counts as black.
const BLACK_MEAN: f64 = 20.0;
/// Grey standard deviation under which a frame counts as blank (one flat colour).
const BLANK_STDDEV: f64 = 2.0;

/// A frame considered for a scene's picture.
pub(super) struct Candidate {
    pub time: f64,
    pub sharpness: f64,
    pub blank: bool,
    pub image: RgbImage,
}

/// Geometry of the pictures written: what to scale to before rotating, and the result.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub scale_w: u32,
    pub scale_h: u32,
    pub rotation: i32,
}

pub(super) fn geometry(
    w: u32,
    h: u32,
    sar: Option<f64>,
    rotation: i32,
    max_width: u32,
) -> Geometry {
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
pub(super) struct Pictures {
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
    pub fn new(max_width: u32, rotation: i32) -> Self {
        Pictures {
            key: None,
            grey: None,
            rgb: None,
            grey_frame: frame::Video::empty(),
            rgb_frame: frame::Video::empty(),
            geometry: geometry(1, 1, None, 0, max_width),
            max_width,
            rotation,
        }
    }

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
    pub fn metrics(&mut self, f: &frame::Video) -> Result<(f64, bool), ffmpeg::Error> {
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

    pub fn picture(&mut self, f: &frame::Video) -> Result<RgbImage, ffmpeg::Error> {
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
pub(super) fn choose(cands: Vec<Candidate>, middle: f64) -> Option<Candidate> {
    let any_ok = cands.iter().any(|c| !c.blank);
    let pool: Vec<Candidate> = cands.into_iter().filter(|c| !any_ok || !c.blank).collect();
    let best = pool.iter().map(|c| c.sharpness).fold(0.0, f64::max);
    pool.into_iter()
        .filter(|c| c.sharpness >= best * 0.97)
        .min_by(|a, b| (a.time - middle).abs().total_cmp(&(b.time - middle).abs()))
}

/// Writes `img` as a baseline JPEG. `jpeg-encoder` (SIMD colour conversion and DCT) takes
/// about a fifth of the time of `image`'s own encoder, which was a third of what picking
/// and writing the scenes' pictures cost.
pub(super) fn write_jpeg(dest: &Path, img: &RgbImage, quality: u8) -> Result<(), StageError> {
    let fail = |e: jpeg_encoder::EncodingError| {
        StageError::fatal(format!("cannot encode {}: {e}", dest.display()))
    };
    let (Ok(w), Ok(h)) = (u16::try_from(img.width()), u16::try_from(img.height())) else {
        return Err(StageError::fatal(format!(
            "cannot encode {}: {}x{} is larger than JPEG allows (65,535 a side)",
            dest.display(),
            img.width(),
            img.height()
        )));
    };
    let mut bytes = Vec::with_capacity(img.as_raw().len() / 8);
    jpeg_encoder::Encoder::new(&mut bytes, quality)
        .encode(img.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(fail)?;
    std::fs::write(dest, &bytes).map_err(|e| io_error(dest, "write", e))
}

/// The picture width and JPEG quality that `video.scenes` (`picture_width`,
/// `picture_quality`) and `video.keyframes` (`max_width`, `quality`) default to:
/// keyframes copies the scenes pass's pictures only when the two agree.
pub(super) const DEFAULT_WIDTH: u32 = 1280;
pub(super) const DEFAULT_QUALITY: u8 = 85;

/// Checks a stage's picture width and JPEG quality params (named as in that stage).
pub(super) fn check_size(
    errs: &mut Vec<ParamError>,
    (width_name, width): (&str, u32),
    (quality_name, quality): (&str, u8),
) {
    let agree = "video.scenes' picture_width/picture_quality and video.keyframes' \
                 max_width/quality must agree for keyframes to reuse the scenes pass's pictures";
    if width < 16 {
        errs.push(
            ParamError::new(&[width_name], format!("{width_name} must be at least 16"))
                .hint(format!("e.g. {DEFAULT_WIDTH}; {agree}")),
        );
    }
    if !(1..=100).contains(&quality) {
        errs.push(
            ParamError::new(&[quality_name], format!("{quality_name} must be 1..=100"))
                .hint(format!("{DEFAULT_QUALITY} is a good default; {agree}")),
        );
    }
}

/// Seconds between the frames a stretch samples at first; the spacing doubles whenever
/// the stretch holds more frames than its cap.
const SAMPLE_SECS: f64 = 0.5;
/// Memory for the decoded frames one stretch holds (but at least 2 frames, for a frame
/// larger than half of it).
const HELD_BYTES: usize = 96 << 20;
/// Frames scored per stretch at most.
const MAX_SCORED: usize = 8;
/// The folder, under `video.scenes`' output, of the pictures it picked.
pub(super) const PICTURES_DIR: &str = "pictures";

/// A stretch's picture, written as a JPEG while the decode goes on.
struct Chosen {
    frame: u64,
    file: String,
    width: u32,
    height: u32,
    sharpness: f64,
    blank: bool,
}

/// Picks pictures during `video.scenes`' decode. The video is cut into stretches at
/// every cut either detector confirms; each stretch holds a few copies of its decoded
/// frames (sampled, thinned as the stretch grows, so memory stays bounded), and when the
/// stretch closes its picture is chosen among the frames near its middle and written.
/// At the end each scene takes the picture of its stretch (the one nearest its middle
/// when a scene spans several); a scene with none is left to `video.keyframes` to seek.
pub(super) struct Sampler {
    pics: Pictures,
    quality: u8,
    max_width: u32,
    rotation: i32,
    dir: std::path::PathBuf,
    base: u64,
    every: u64,
    next: u64,
    cap: usize,
    held: Vec<(u64, frame::Video)>,
    start: u64,
    chosen: Vec<Chosen>,
    errors: u64,
}

impl Sampler {
    /// `fps` sets the first sampling step; pictures go to `<out_dir>/pictures/`.
    pub fn new(
        out_dir: &Path,
        fps: f64,
        max_width: u32,
        quality: u8,
        rotation: i32,
    ) -> Result<Self, StageError> {
        let dir = out_dir.join(PICTURES_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "create", e))?;
        let base = ((SAMPLE_SECS * fps).round() as u64).max(1);
        Ok(Sampler {
            pics: Pictures::new(max_width, rotation),
            quality,
            max_width,
            rotation,
            dir,
            base,
            every: base,
            next: 0,
            cap: 0,
            held: Vec::new(),
            start: 0,
            chosen: Vec::new(),
            errors: 0,
        })
    }

    /// Offers decoded frame `idx` (frames come in order).
    pub fn offer(&mut self, idx: u64, f: &frame::Video) {
        // B-frames are skipped, like `video.keyframes`' candidates: they are the lowest
        // quality, and with `fast_decode` the ones no frame refers to are not deblocked.
        if idx < self.next || f.kind() == ffmpeg::picture::Type::B {
            return;
        }
        if self.cap == 0 {
            let bytes: usize = (0..f.planes()).map(|i| f.data(i).len()).sum();
            self.cap = (HELD_BYTES / bytes.max(1)).clamp(2, 32);
        }
        if self.held.len() == self.cap {
            // Keep every other frame and sample half as often: the stretch stays covered
            // evenly from its start, at a coarser step, and never holds more than `cap`.
            let mut i = 0;
            self.held.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.every *= 2;
            self.next = self.held.last().map_or(idx, |l| l.0) + self.every;
            if idx < self.next {
                return;
            }
        }
        self.held.push((idx, f.clone()));
        self.next = idx + self.every;
    }

    /// A detector confirmed a cut at frame `c`: the stretch before it closes. A cut
    /// before the open stretch's start (the other detector's, confirmed later) is left
    /// to the scene assignment at the end.
    pub fn cut(&mut self, c: u64) -> Result<(), StageError> {
        if c <= self.start {
            return Ok(());
        }
        let split = self.held.partition_point(|h| h.0 < c);
        let closed: Vec<(u64, frame::Video)> = self.held.drain(..split).collect();
        self.close(self.start, c, closed)?;
        self.start = c;
        self.every = self.base;
        self.next = self.held.last().map_or(c, |l| l.0 + self.every);
        Ok(())
    }

    /// The video ended after `frames` frames.
    pub fn finish(&mut self, frames: u64) -> Result<(), StageError> {
        let held = std::mem::take(&mut self.held);
        self.close(self.start, frames.max(self.start + 1), held)
    }

    fn close(
        &mut self,
        start: u64,
        end: u64,
        held: Vec<(u64, frame::Video)>,
    ) -> Result<(), StageError> {
        if held.is_empty() {
            return Ok(());
        }
        let len = (end - start) as f64;
        let within = |lo: f64, hi: f64| -> Vec<usize> {
            (0..held.len())
                .filter(|&i| {
                    let x = (held[i].0 - start) as f64;
                    x >= lo * len && x <= hi * len
                })
                .collect()
        };
        let mut pool = within(0.35, 0.65);
        if pool.is_empty() {
            pool = within(0.2, 0.8);
        }
        if pool.is_empty() {
            pool = (0..held.len()).collect();
        }
        if pool.len() > MAX_SCORED {
            let n = pool.len();
            pool = (0..MAX_SCORED).map(|k| pool[k * n / MAX_SCORED]).collect();
        }
        let mut cands = Vec::new();
        for i in pool {
            match self.pics.metrics(&held[i].1) {
                Ok((sharpness, blank)) => cands.push(Candidate {
                    time: held[i].0 as f64,
                    sharpness,
                    blank,
                    image: RgbImage::new(0, 0),
                }),
                Err(_) => self.errors += 1,
            }
        }
        let middle = (start + end) as f64 / 2.0;
        let Some(best) = choose(cands, middle) else {
            return Ok(());
        };
        let frame_idx = best.time as u64;
        let f = &held
            .iter()
            .find(|h| h.0 == frame_idx)
            .expect("a held frame")
            .1;
        let image = match self.pics.picture(f) {
            Ok(img) => img,
            Err(_) => {
                self.errors += 1;
                return Ok(());
            }
        };
        let file = format!("stretch_{start:08}.jpg");
        write_jpeg(&self.dir.join(&file), &image, self.quality)?;
        self.chosen.push(Chosen {
            frame: frame_idx,
            file,
            width: image.width(),
            height: image.height(),
            sharpness: best.sharpness,
            blank: best.blank,
        });
        Ok(())
    }

    /// Gives each scene the picture of its stretch, names it `scene_NNNN.jpg`, removes
    /// the rest and writes `pictures/keyframes.json`; returns how many scenes got one.
    /// `times[i]` is frame i's time.
    pub fn assign(
        self,
        scenes: &[Scene],
        times: &[f64],
        decoder: &super::hwaccel::DecodeInfo,
    ) -> Result<usize, StageError> {
        let mut used = vec![false; self.chosen.len()];
        let mut out = KeyframesOut {
            rotation: self.rotation,
            max_width: self.max_width,
            quality: self.quality,
            decoder: Some(decoder.clone()),
            ..Default::default()
        };
        for s in scenes {
            let inside: Vec<usize> = (0..self.chosen.len())
                .filter(|&i| (s.start_frame..s.end_frame).contains(&self.chosen[i].frame))
                .collect();
            let any_ok = inside.iter().any(|&i| !self.chosen[i].blank);
            let middle = (s.start_frame + s.end_frame) as f64 / 2.0;
            let pick = inside
                .into_iter()
                .filter(|&i| !any_ok || !self.chosen[i].blank)
                .min_by(|&a, &b| {
                    let d = |i: usize| (self.chosen[i].frame as f64 - middle).abs();
                    d(a).total_cmp(&d(b))
                });
            let Some(i) = pick else {
                out.missing.push(s.index);
                continue;
            };
            used[i] = true;
            let c = &self.chosen[i];
            let file = format!("scene_{:04}.jpg", s.index);
            let (from, to) = (self.dir.join(&c.file), self.dir.join(&file));
            std::fs::rename(&from, &to).map_err(|e| io_error(&from, "rename", e))?;
            let time = times.get(c.frame as usize).copied().unwrap_or(s.start);
            out.keyframes.push(KeyframeOut {
                scene: s.index,
                time: (time * 1e6).round() / 1e6,
                file,
                width: c.width,
                height: c.height,
                sharpness: (c.sharpness * 100.0).round() / 100.0,
                blank: c.blank,
            });
        }
        for (c, used) in self.chosen.iter().zip(&used) {
            if !used {
                let path = self.dir.join(&c.file);
                std::fs::remove_file(&path).map_err(|e| io_error(&path, "remove", e))?;
            }
        }
        out.decode_errors = self.errors;
        let n = out.keyframes.len();
        let path = self.dir.join(KeyframesOut::FILE);
        let mut json = serde_json::to_vec_pretty(&out)
            .map_err(|e| StageError::fatal(format!("cannot encode {}: {e}", path.display())))?;
        json.push(b'\n');
        std::fs::write(&path, json).map_err(|e| io_error(&path, "write", e))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Candidates as (time, sharpness, blank).
        type Cands<'a> = &'a [(f64, f64, bool)];
        // (candidates, the middle, the time that wins)
        let cases: [(Cands, f64, f64); 4] = [
            // A sharper black frame loses to a picture.
            (&[(1.0, 900.0, true), (2.0, 100.0, false)], 1.5, 2.0),
            // The sharpest wins...
            (
                &[(1.0, 100.0, false), (2.0, 500.0, false), (3.0, 90.0, false)],
                2.0,
                2.0,
            ),
            // ...near-ties go to the middle.
            (
                &[
                    (1.0, 500.0, false),
                    (2.0, 495.0, false),
                    (3.0, 499.0, false),
                ],
                2.0,
                2.0,
            ),
            // All blank: still one picture.
            (&[(1.0, 0.0, true), (2.0, 0.0, true)], 2.0, 2.0),
        ];
        for (cands, middle, wins) in cases {
            let list = cands.iter().map(|&(t, s, b)| cand(t, s, b)).collect();
            assert_eq!(choose(list, middle).unwrap().time, wins, "{cands:?}");
        }
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
