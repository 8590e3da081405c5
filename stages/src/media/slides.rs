//! The static-content detector behind `video.scenes` `detector: slides` (and `auto`):
//! slide changes, build-up steps and scrolls in talks, trainings and screen recordings,
//! where the HSV content detector misses a new slide on the same template.
//!
//! Frames become small grey pictures (the luma plane, area-averaged to at most
//! [`SLIDES_WIDTH`] pixels wide, which also irons out compression noise) cut into
//! 16x16 blocks. The detector keeps a *reference*: the picture as of the last change.
//! A change is a **step**: pixels that differ from the reference by more than
//! `pixel_delta` grey levels, in blocks that moved once and then held still for the
//! dwell time. When such pixels cover `min_change` of the picture, a change is reported
//! at the frame where their motion began (so a one-second transition or scroll is
//! dated at its start) and the reference becomes the current picture. What is *not* a
//! step is ignored:
//! - a region in continuous motion (a video inside the slide, a talking head) never
//!   holds still, and a block that starts moving twice within `window` frames is
//!   *busy*: it is left out and the reference follows it;
//! - a moving cursor changes a few blocks and leaves them as they were; where it parks
//!   it covers far less than `min_change`;
//! - slow drifts stay under `pixel_delta`, and whatever held still for `window` frames
//!   without making a change is taken into the reference.
//!
//! The same pass measures what `auto` needs to tell static content from camera footage:
//! how much of each picture moves from one frame to the next, and how flat the
//! pictures are (slides and screens are mostly flat colour; camera pictures are
//! textured and noisy).

use ffmpeg::format::Pixel;
use ffmpeg::frame;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

/// Widest grey picture the slide detector compares (larger frames are area-averaged).
pub const SLIDES_WIDTH: u32 = 512;
/// Block side in analysis pixels.
const BLOCK: usize = 16;
/// A block moved between two frames when at least this many of its pixels changed by
/// more than half of `pixel_delta`.
const MOTION_PIXELS: u32 = 2;
/// Flatness is sampled on every this-many-th frame.
const FLAT_EVERY: u64 = 10;

/// Settings of the slide detector, in frames where time matters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlideSettings {
    /// Grey levels (0-255) a pixel must differ from the reference by to count as changed.
    pub pixel_delta: u8,
    /// Fraction (0-1) of the picture that must change for a slide change.
    pub min_change: f64,
    /// Frames a changed block must hold still before the change is reported.
    pub dwell: u64,
    /// Frames over which two separate motions make a block busy.
    pub window: u64,
}

/// The analysis size of a `w` x `h` frame for the slide detector.
pub fn slides_size(w: u32, h: u32) -> (u32, u32) {
    if w <= SLIDES_WIDTH {
        return (w.max(1), h.max(1));
    }
    let f = f64::from(w) / f64::from(SLIDES_WIDTH);
    (SLIDES_WIDTH, ((f64::from(h) / f).round() as u32).max(1))
}

#[derive(Debug, Clone, Copy)]
struct BlockState {
    /// Last frame the block moved (negative: never).
    last_motion: i64,
    /// First frame of the block's latest motion, and of the one before.
    burst: i64,
    prev_burst: i64,
    /// It was in motion when the reference was taken: its reference is refreshed once
    /// it holds still, rather than compared.
    dirty: bool,
}

/// One frame's reading, for stats and for `auto`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SlideScore {
    /// Fraction of the picture changed against the reference in settled blocks.
    pub changed: f64,
    /// Fraction of blocks that moved since the previous frame.
    pub moving: f64,
}

/// The slide detector. Feed it grey pictures of one fixed size.
#[derive(Debug, Clone)]
pub struct SlideDetector {
    s: SlideSettings,
    w: usize,
    h: usize,
    bw: usize,
    /// Each block as it was when it last moved: motion is measured against it, so a
    /// slow drift adds up to motion instead of slipping under the per-frame threshold.
    anchor: Vec<u8>,
    last: Vec<u8>,
    reference: Vec<u8>,
    blocks: Vec<BlockState>,
    frame: i64,
    last_cut: i64,
    /// (moving fraction per frame, flat fraction per sampled frame) for `auto`.
    moving: Vec<f32>,
    flat: Vec<f32>,
}

impl SlideDetector {
    pub fn new(s: SlideSettings, width: usize, height: usize) -> Self {
        let (bw, bh) = (width.div_ceil(BLOCK), height.div_ceil(BLOCK));
        SlideDetector {
            s,
            w: width,
            h: height,
            bw,
            anchor: Vec::new(),
            last: Vec::new(),
            reference: Vec::new(),
            blocks: vec![
                BlockState {
                    last_motion: i64::MIN / 2,
                    burst: i64::MIN / 2,
                    prev_burst: i64::MIN / 2,
                    dirty: true,
                };
                bw * bh
            ],
            frame: -1,
            last_cut: 0,
            moving: Vec::new(),
            flat: Vec::new(),
        }
    }

    fn block_rows(&self, b: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (bx, by) = (b % self.bw, b / self.bw);
        (
            bx * BLOCK..((bx + 1) * BLOCK).min(self.w),
            by * BLOCK..((by + 1) * BLOCK).min(self.h),
        )
    }

    fn copy_block(&mut self, b: usize, grey: &[u8], anchor: bool) {
        let (xs, ys) = self.block_rows(b);
        for y in ys {
            let r = y * self.w + xs.start..y * self.w + xs.end;
            let dst = if anchor {
                &mut self.anchor
            } else {
                &mut self.reference
            };
            dst[r.clone()].copy_from_slice(&grey[r]);
        }
    }

    /// Feeds the next frame (`w * h` grey bytes, rows packed). Returns its score and,
    /// when a change is confirmed, the frame number where it began.
    pub fn push(&mut self, grey: &[u8]) -> (SlideScore, Option<u64>) {
        assert_eq!(grey.len(), self.w * self.h, "grey frame of the set size");
        self.frame += 1;
        let t = self.frame;
        if (t as u64).is_multiple_of(FLAT_EVERY) {
            self.flat.push(flatness(grey, self.w, self.h) as f32);
        }
        if self.last.is_empty() {
            self.last = grey.to_vec();
            self.anchor = grey.to_vec();
            self.reference = grey.to_vec();
            return (SlideScore::default(), None);
        }
        self.last.copy_from_slice(grey);
        let motion_delta = (self.s.pixel_delta / 2).max(1);
        let (dwell, window) = (self.s.dwell as i64, self.s.window as i64);
        let mut moving_blocks = 0usize;
        let nb = self.blocks.len();
        let mut differ = vec![0u32; nb];
        let mut busy = vec![false; nb];
        // Pass 1: motion (against each block's anchor) and difference from the slide.
        for (b, (differ_b, busy_b)) in differ.iter_mut().zip(busy.iter_mut()).enumerate() {
            let (xs, ys) = self.block_rows(b);
            let mut moved = 0u32;
            for y in ys.clone() {
                let r = y * self.w + xs.start..y * self.w + xs.end;
                for ((&g, &p), &rf) in grey[r.clone()]
                    .iter()
                    .zip(&self.anchor[r.clone()])
                    .zip(&self.reference[r])
                {
                    moved += u32::from(g.abs_diff(p) > motion_delta);
                    *differ_b += u32::from(g.abs_diff(rf) > self.s.pixel_delta);
                }
            }
            if moved >= MOTION_PIXELS {
                self.copy_block(b, grey, true);
            }
            let st = &mut self.blocks[b];
            if moved >= MOTION_PIXELS {
                moving_blocks += 1;
                if st.last_motion < t - dwell {
                    st.prev_burst = st.burst;
                    st.burst = t;
                }
                st.last_motion = t;
            }
            // Busy: it started moving twice within the window, or it has been moving
            // without a pause for half of it (a clip, a face: no slide transition).
            let moving_long = st.last_motion > t - dwell && t - st.burst > window / 2;
            *busy_b = st.prev_burst >= t - window || moving_long;
        }
        // Pass 2: what busy regions touch is followed; settled changes elsewhere count.
        // (changed pixels, burst start) of settled blocks that differ from the slide.
        let mut changed: Vec<(u32, i64)> = Vec::new();
        for (b, &differ_b) in differ.iter().enumerate() {
            let (bx, by) = ((b % self.bw) as i64, (b / self.bw) as i64);
            let bh = nb.div_ceil(self.bw) as i64;
            let near_busy = (-1..=1).any(|dy| {
                (-1..=1).any(|dx| {
                    let (x, y) = (bx + dx, by + dy);
                    x >= 0
                        && y >= 0
                        && x < self.bw as i64
                        && y < bh
                        && busy[(y * self.bw as i64 + x) as usize]
                })
            });
            let st = &mut self.blocks[b];
            let settled = st.last_motion <= t - dwell;
            let stale = t - st.last_motion == window;
            let burst = st.burst;
            let refresh = settled && st.dirty;
            if refresh {
                st.dirty = false;
            }
            if near_busy || stale || refresh {
                // A busy region (and its rim) is followed, never counted; a small
                // change that held still for the whole window without making a slide
                // change is absorbed; a block caught moving when the reference was
                // taken gets its picture once it holds still.
                self.copy_block(b, grey, false);
            } else if settled && differ_b > 0 {
                changed.push((differ_b, burst));
            }
        }
        self.moving
            .push((moving_blocks as f64 / self.blocks.len().max(1) as f64) as f32);
        let n = (self.w * self.h).max(1) as f64;
        let total: u64 = changed.iter().map(|c| u64::from(c.0)).sum();
        let score = SlideScore {
            changed: total as f64 / n,
            moving: moving_blocks as f64 / self.blocks.len().max(1) as f64,
        };
        if score.changed < self.s.min_change || total == 0 {
            return (score, None);
        }
        // The change began where most of its changed pixels began to move.
        changed.sort_by_key(|c| c.1);
        let mut acc = 0u64;
        let mut onset = t;
        for (px, start) in &changed {
            acc += u64::from(*px);
            if acc * 2 >= total {
                onset = *start;
                break;
            }
        }
        let onset = onset.clamp(self.last_cut + 1, t);
        self.last_cut = onset;
        self.reference.copy_from_slice(grey);
        for st in &mut self.blocks {
            st.dirty = st.last_motion > t - dwell;
            if !st.dirty {
                // The motion that made this change is explained: it must not count
                // towards making the block busy when the next slide comes.
                st.burst = i64::MIN / 2;
                st.prev_burst = i64::MIN / 2;
            }
        }
        (score, Some(onset as u64))
    }

    /// The last picture fed (to repeat it when a frame cannot be converted).
    pub fn last_grey(&self) -> &[u8] {
        &self.last
    }

    /// Median fraction of blocks moving between frames, and mean flatness (fraction of
    /// neighbouring pixel pairs within 2 grey levels).
    pub fn content_stats(&self) -> (f64, f64) {
        let mut m = self.moving.clone();
        m.sort_by(f32::total_cmp);
        let median = m.get(m.len() / 2).copied().unwrap_or(0.0);
        let flat = if self.flat.is_empty() {
            0.0
        } else {
            self.flat.iter().map(|&x| f64::from(x)).sum::<f64>() / self.flat.len() as f64
        };
        (f64::from(median), flat)
    }
}

/// Fraction of horizontally neighbouring pixels that differ by at most 2 grey levels.
fn flatness(grey: &[u8], w: usize, h: usize) -> f64 {
    if w < 2 {
        return 1.0;
    }
    let mut flat = 0u64;
    for row in grey.chunks_exact(w).take(h) {
        flat += row.windows(2).filter(|p| p[0].abs_diff(p[1]) <= 2).count() as u64;
    }
    flat as f64 / ((w - 1) * h).max(1) as f64
}

/// What `auto` saw and chose, recorded in `scenes.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoChoice {
    /// `slides` or `content`.
    pub chose: String,
    /// `static` (slides, screens) or `footage` (camera).
    pub content_type: String,
    /// Median fraction of the picture in motion between frames.
    pub moving_median: f64,
    /// Mean fraction of flat neighbouring pixels.
    pub flat_mean: f64,
    pub why: String,
}

/// Static content moves little from frame to frame and is mostly flat colour.
pub fn choose(moving_median: f64, flat_mean: f64) -> AutoChoice {
    let still = moving_median < 0.25;
    let flat = flat_mean >= 0.45;
    let slides = still && flat;
    let why = format!(
        "{:.0}% of the picture moves in a typical frame ({} 25%), {:.0}% of neighbouring pixels are flat ({} 45%)",
        moving_median * 100.0,
        if still { "under" } else { "at or over" },
        flat_mean * 100.0,
        if flat { "at or over" } else { "under" },
    );
    AutoChoice {
        chose: if slides { "slides" } else { "content" }.into(),
        content_type: if slides { "static" } else { "footage" }.into(),
        moving_median: (moving_median * 1000.0).round() / 1000.0,
        flat_mean: (flat_mean * 1000.0).round() / 1000.0,
        why,
    }
}

/// Makes the detector's grey pictures: 8-bit planar YUV by area-averaging the luma
/// plane directly ([`GreyAreas`]); anything else through swscale.
#[derive(Default)]
pub struct GreyShrinker {
    pub areas: GreyAreas,
    sws: super::SwsPicture,
}

/// The planar-YUV path of [`GreyShrinker`]: plain data, so it can run on another
/// thread (swscale's context cannot).
#[derive(Default)]
pub struct GreyAreas {
    key: Option<(u32, u32, u32, u32)>,
    xs: Vec<(usize, usize)>,
    ys: Vec<(usize, usize)>,
    out: Vec<u8>,
    /// Running column sums of the current band of rows.
    cols: Vec<u32>,
    /// `ceil(2^32 / n)` for each area size n, to divide by multiplying.
    recips: Vec<u64>,
}

fn spans(src: u32, dst: u32) -> Vec<(usize, usize)> {
    (0..dst)
        .map(|d| {
            let a = (u64::from(d) * u64::from(src) / u64::from(dst)) as usize;
            let b = ((u64::from(d + 1) * u64::from(src)).div_ceil(u64::from(dst)) as usize)
                .max(a + 1)
                .min(src as usize);
            (a, b)
        })
        .collect()
}

impl GreyShrinker {
    pub fn run(&mut self, f: &frame::Video, aw: u32, ah: u32) -> Result<&[u8], ffmpeg::Error> {
        if super::scenes::is_planar_yuv8(f.format()) {
            return Ok(self.areas.planar(f, aw, ah));
        }
        self.sws.run(
            f,
            (Pixel::GRAY8, aw, ah),
            scaling::Flags::AREA,
            1,
            &mut self.areas.out,
        )?;
        Ok(&self.areas.out)
    }
}

impl GreyAreas {
    /// The area-averaged luma of an 8-bit planar YUV frame (the caller checks the
    /// format), `aw` x `ah`.
    pub fn planar(&mut self, f: &frame::Video, aw: u32, ah: u32) -> &[u8] {
        let (w, h) = (f.width(), f.height());
        if self.key != Some((w, h, aw, ah)) {
            self.key = Some((w, h, aw, ah));
            self.xs = spans(w, aw);
            self.ys = spans(h, ah);
            let widest = self.xs.iter().map(|s| s.1 - s.0).max().unwrap_or(1);
            let tallest = self.ys.iter().map(|s| s.1 - s.0).max().unwrap_or(1);
            self.recips = (0..=(widest * tallest).min(4095))
                .map(|n| (1u64 << 32).div_ceil(n.max(1) as u64))
                .collect();
            self.out = vec![0; (aw * ah) as usize];
        }
        // Sum each band of rows column by column first (a plain add over the row, which
        // the compiler vectorises), then take each column span of the band from running
        // sums: the same sums as adding every span of every row, at a fraction of the
        // cost. Locals, not fields, in the loops: no reloads through `self`.
        let stride = f.stride(0);
        let data = f.data(0);
        let w = w as usize;
        let GreyAreas {
            xs,
            ys,
            out,
            cols,
            recips,
            ..
        } = self;
        cols.clear();
        cols.resize(w + 1, 0);
        for (&(y0, y1), out_row) in ys.iter().zip(out.chunks_exact_mut(aw as usize)) {
            let (head, sums) = cols.split_at_mut(1);
            head[0] = 0;
            sums.iter_mut().for_each(|c| *c = 0);
            for y in y0..y1 {
                let row = &data[y * stride..y * stride + w];
                for (c, &v) in sums.iter_mut().zip(row) {
                    *c += u32::from(v);
                }
            }
            // cols[x] becomes the sum of columns 0..x of the band.
            let mut run = 0u32;
            for c in sums.iter_mut() {
                run += *c;
                *c = run;
            }
            let rows = y1 - y0;
            for (o, &(x0, x1)) in out_row.iter_mut().zip(xs.iter()) {
                let n = rows * (x1 - x0);
                // The rounded mean, dividing by multiplying with ceil(2^32 / n): exact
                // while (sum + n/2) * n < 2^32, which 8-bit samples keep for n < 4096.
                let x = u64::from(cols[x1] - cols[x0]) + (n / 2) as u64;
                *o = if n < 4096 {
                    ((x * recips[n]) >> 32) as u8
                } else {
                    (x / n as u64) as u8
                };
            }
        }
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_shrinker_averages_each_area_of_the_luma_plane() {
        // Odd sizes, so spans have different widths and overlap by a pixel.
        let (w, h, aw, ah) = (1283u32, 721u32, 320u32, 180u32);
        let mut f = frame::Video::new(Pixel::YUV420P, w, h);
        let stride = f.stride(0);
        let mut x = 12345u32;
        for v in f.data_mut(0).iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *v = (x >> 16) as u8;
        }
        let mut g = GreyShrinker::default();
        let got = g.run(&f, aw, ah).unwrap().to_vec();
        let data = f.data(0);
        let (xs, ys) = (spans(w, aw), spans(h, ah));
        for (oy, &(y0, y1)) in ys.iter().enumerate() {
            for (ox, &(x0, x1)) in xs.iter().enumerate() {
                let mut sum = 0u32;
                for y in y0..y1 {
                    for x in x0..x1 {
                        sum += u32::from(data[y * stride + x]);
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)) as u32;
                assert_eq!(
                    got[oy * aw as usize + ox],
                    ((sum + n / 2) / n) as u8,
                    "({ox}, {oy})"
                );
            }
        }
    }

    const W: usize = 128;
    const H: usize = 72;

    fn settings() -> SlideSettings {
        SlideSettings {
            pixel_delta: 24,
            min_change: 0.002,
            dwell: 12,
            window: 100,
        }
    }

    /// A "slide": flat background `bg` with text-like stripes in `rows` (y ranges).
    fn slide(bg: u8, marks: &[(usize, usize, usize, usize)]) -> Vec<u8> {
        let mut g = vec![bg; W * H];
        for &(x0, y0, x1, y1) in marks {
            for y in y0..y1 {
                for x in x0..x1 {
                    if (x / 2) % 2 == 0 {
                        g[y * W + x] = 240;
                    }
                }
            }
        }
        g
    }

    fn run(frames: &[Vec<u8>]) -> Vec<u64> {
        let mut d = SlideDetector::new(settings(), W, H);
        frames.iter().filter_map(|f| d.push(f).1).collect()
    }

    #[test]
    fn a_new_title_on_the_same_template_is_a_change_dated_at_its_start() {
        let a = slide(40, &[(10, 4, 60, 12), (10, 30, 100, 34)]);
        let b = slide(43, &[(10, 4, 80, 12), (10, 30, 100, 34)]);
        let mut frames = vec![a; 30];
        frames.extend(vec![b; 30]);
        assert_eq!(run(&frames), vec![30]);
    }

    #[test]
    fn a_bullet_appearing_is_a_change() {
        let a = slide(40, &[(10, 4, 60, 12)]);
        let b = slide(40, &[(10, 4, 60, 12), (10, 40, 50, 44)]);
        let mut frames = vec![a; 20];
        frames.extend(vec![b; 30]);
        assert_eq!(run(&frames), vec![20]);
    }

    #[test]
    fn a_moving_cursor_and_a_playing_region_are_not_changes() {
        let base = slide(40, &[(10, 4, 60, 12), (10, 30, 100, 34)]);
        let mut frames = Vec::new();
        for i in 0..200usize {
            let mut f = base.clone();
            // A 3x3 cursor moving right, then parked.
            let cx = 20 + i.min(60);
            for y in 50..53 {
                for x in cx..cx + 3 {
                    f[y * W + x] = 255;
                }
            }
            // A 32x16 region whose content changes every frame.
            for y in 48..64 {
                for x in 90..122 {
                    f[y * W + x] = ((x * 7 + y * 3 + i * 11) % 256) as u8;
                }
            }
            frames.push(f);
        }
        assert_eq!(run(&frames), Vec::<u64>::new());
    }

    #[test]
    fn a_scroll_is_dated_at_its_start() {
        let lines: Vec<(usize, usize, usize, usize)> =
            (0..8).map(|i| (8, 4 + i * 8, 100, 8 + i * 8)).collect();
        let mut frames = Vec::new();
        for i in 0..60usize {
            // Scroll up by 1 px per frame from frame 21 to 30.
            let off = i.clamp(20, 30) - 20;
            let shifted: Vec<_> = lines
                .iter()
                .filter(|l| l.1 >= off)
                .map(|l| (l.0, l.1 - off, l.2, l.3 - off))
                .collect();
            frames.push(slide(40, &shifted));
        }
        assert_eq!(run(&frames), vec![21]);
    }

    #[test]
    fn auto_tells_slides_from_footage() {
        assert_eq!(choose(0.02, 0.9).chose, "slides");
        assert_eq!(choose(0.6, 0.9).chose, "content");
        assert_eq!(choose(0.02, 0.2).content_type, "footage");
    }

    #[test]
    fn spans_cover_the_source() {
        assert_eq!(spans(4, 2), vec![(0, 2), (2, 4)]);
        let s = spans(960, 512);
        assert_eq!(s[0].0, 0);
        assert_eq!(s.last().unwrap().1, 960);
        assert!(s.iter().all(|(a, b)| b > a));
        assert_eq!(slides_size(960, 540), (512, 288));
        assert_eq!(slides_size(320, 240), (320, 240));
    }
}
