//! Fitting any picture into a detector's fixed square input, and mapping boxes back.
//!
//! YOLO models are trained on letterboxed pictures: scaled to fit (keeping the aspect
//! ratio, up or down), centred, the rest padded with grey 114. The picture is sampled
//! the way Ultralytics does it (OpenCV's `INTER_LINEAR`: half-pixel centres, no
//! antialiasing), straight into the planar RGB 0..1 floats the model takes, in one pass
//! and without an intermediate image. [`Letterbox::to_original`] undoes the fit for a
//! box, so boxes come out in the original picture's pixels.

use image::RgbImage;

/// Grey level of the padding, as Ultralytics pads.
pub const PAD: u8 = 114;

/// Where a picture went inside the model's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Input pixels per original pixel.
    pub gain: f64,
    /// Left and top padding, in input pixels.
    pub pad_x: u32,
    pub pad_y: u32,
    /// The original picture's size.
    pub width: u32,
    pub height: u32,
}

impl Letterbox {
    /// The placement of a `width` x `height` picture in a `in_w` x `in_h` input.
    pub fn fit(width: u32, height: u32, in_w: u32, in_h: u32) -> Self {
        let gain = (f64::from(in_w) / f64::from(width)).min(f64::from(in_h) / f64::from(height));
        let (new_w, new_h) = Self::scaled(width, height, gain, in_w, in_h);
        let pad = |room: u32, used: u32| ((f64::from(room - used) / 2.0 - 0.1).round()) as u32;
        Letterbox {
            gain,
            pad_x: pad(in_w, new_w),
            pad_y: pad(in_h, new_h),
            width,
            height,
        }
    }

    fn scaled(width: u32, height: u32, gain: f64, in_w: u32, in_h: u32) -> (u32, u32) {
        let w = ((f64::from(width) * gain).round() as u32).clamp(1, in_w);
        let h = ((f64::from(height) * gain).round() as u32).clamp(1, in_h);
        (w, h)
    }

    /// The size of the scaled picture inside the input.
    pub fn inner(&self, in_w: u32, in_h: u32) -> (u32, u32) {
        Self::scaled(self.width, self.height, self.gain, in_w, in_h)
    }

    /// A box `[x1, y1, x2, y2]` in input pixels -> original pixels, clipped to the picture.
    pub fn to_original(&self, b: [f32; 4]) -> [f64; 4] {
        let x = |v: f32| {
            ((f64::from(v) - f64::from(self.pad_x)) / self.gain).clamp(0.0, f64::from(self.width))
        };
        let y = |v: f32| {
            ((f64::from(v) - f64::from(self.pad_y)) / self.gain).clamp(0.0, f64::from(self.height))
        };
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }
}

/// For each destination index: the two source indices and the weight of the second.
fn taps(dst: u32, src: u32) -> Vec<(usize, usize, f32)> {
    let scale = f64::from(src) / f64::from(dst);
    (0..dst)
        .map(|d| {
            let s = ((f64::from(d) + 0.5) * scale - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(src as usize - 1);
            let i1 = (i0 + 1).min(src as usize - 1);
            (i0, i1, (s - i0 as f64) as f32)
        })
        .collect()
}

/// Letterboxes `img` into `out` (planar RGB, `3 * in_h * in_w` floats in 0..1).
pub fn letterbox_into(img: &RgbImage, in_w: u32, in_h: u32, out: &mut [f32]) -> Letterbox {
    let plane = (in_w * in_h) as usize;
    assert_eq!(out.len(), 3 * plane, "output buffer size");
    let lb = Letterbox::fit(img.width(), img.height(), in_w, in_h);
    let (new_w, new_h) = lb.inner(in_w, in_h);
    out.fill(f32::from(PAD) / 255.0);
    let xs = taps(new_w, img.width());
    let ys = taps(new_h, img.height());
    let src = img.as_raw();
    let stride = img.width() as usize * 3;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let mut row0 = vec![0f32; new_w as usize * 3];
    let mut row1 = vec![0f32; new_w as usize * 3];
    let mut last: [Option<usize>; 2] = [None, None];
    let sample_row = |y: usize, dst: &mut [f32]| {
        let line = &src[y * stride..(y + 1) * stride];
        for (i, &(x0, x1, fx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let a = f32::from(line[x0 * 3 + c]);
                let b = f32::from(line[x1 * 3 + c]);
                dst[i * 3 + c] = a + (b - a) * fx;
            }
        }
    };
    for (dy, &(y0, y1, fy)) in ys.iter().enumerate() {
        // Horizontal passes are shared by neighbouring output rows.
        if last[0] != Some(y0) {
            if last[1] == Some(y0) {
                std::mem::swap(&mut row0, &mut row1);
                last[0] = Some(y0);
                last[1] = None;
            } else {
                sample_row(y0, &mut row0);
                last[0] = Some(y0);
            }
        }
        if last[1] != Some(y1) {
            sample_row(y1, &mut row1);
            last[1] = Some(y1);
        }
        let base = (lb.pad_y as usize + dy) * in_w as usize + lb.pad_x as usize;
        for dx in 0..new_w as usize {
            let at = base + dx;
            let v = |c: usize| {
                let a = row0[dx * 3 + c];
                (a + (row1[dx * 3 + c] - a) * fy) / 255.0
            };
            r[at] = v(0);
            g[at] = v(1);
            b[at] = v(2);
        }
    }
    lb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_like_ultralytics() {
        // 1280x720 -> 640x360, 140 px of padding above and below.
        let lb = Letterbox::fit(1280, 720, 640, 640);
        assert_eq!((lb.gain, lb.pad_x, lb.pad_y), (0.5, 0, 140));
        // Portrait, odd padding: 451 px wide scaled by 640/600.
        let lb = Letterbox::fit(451, 600, 640, 640);
        assert_eq!(lb.inner(640, 640), (481, 640));
        assert_eq!((lb.pad_x, lb.pad_y), (79, 0), "round(159/2 - 0.1)");
        // A tiny picture is scaled up.
        let lb = Letterbox::fit(32, 16, 640, 640);
        assert_eq!((lb.gain, lb.pad_x, lb.pad_y), (20.0, 0, 160));
        // Boxes map back, clipped to the picture.
        let b = lb.to_original([20.0, 180.0, 660.0, 400.0]);
        assert_eq!(b, [1.0, 1.0, 32.0, 12.0]);
    }

    #[test]
    fn samples_into_planes_with_grey_padding() {
        // 4x2 picture: left half red, right half blue; into an 8x8 input (gain 2).
        let mut img = RgbImage::new(4, 2);
        for (x, _, p) in img.enumerate_pixels_mut() {
            *p = if x < 2 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            };
        }
        let mut out = vec![0f32; 3 * 64];
        let lb = letterbox_into(&img, 8, 8, &mut out);
        assert_eq!((lb.pad_x, lb.pad_y), (0, 2));
        let at = |c: usize, x: usize, y: usize| out[c * 64 + y * 8 + x];
        let grey = 114.0 / 255.0;
        assert_eq!(at(0, 0, 0), grey, "padding above");
        assert_eq!(at(2, 7, 7), grey, "padding below");
        assert_eq!((at(0, 0, 2), at(2, 0, 2)), (1.0, 0.0), "red at the left");
        assert_eq!((at(0, 7, 5), at(2, 7, 5)), (0.0, 1.0), "blue at the right");
        // The middle blends (OpenCV bilinear: 0.75/0.25 at the boundary).
        assert!((at(0, 3, 3) - 0.75).abs() < 1e-6, "{}", at(0, 3, 3));
        assert!((at(2, 4, 3) - 0.75).abs() < 1e-6);
    }

    #[test]
    fn same_size_is_a_copy() {
        let img = RgbImage::from_fn(5, 3, |x, y| {
            image::Rgb([(x * 50) as u8, (y * 100) as u8, 7])
        });
        let mut out = vec![0f32; 3 * 15];
        letterbox_into(&img, 5, 3, &mut out);
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                let v = out[c * 15 + (y * 5 + x) as usize];
                assert!((v - f32::from(p.0[c]) / 255.0).abs() < 1e-6);
            }
        }
    }
}
