//! The model-free parts of OCR, kept apart so they can be tested without a model:
//! text boxes from the PP-OCR detector's probability map (DB post-processing), text
//! from the recognizer's per-step probabilities (CTC greedy decoding), the reading
//! order of the lines, and which line is a slide's title.
//!
//! Slide and screen text is horizontal, so boxes are axis-aligned rectangles: a
//! connected region of the binarized map, kept when its mean probability clears
//! `box_threshold`, grown by the DB "unclip" distance (area x ratio / perimeter) that
//! undoes the shrinking the detector was trained with.

use serde::{Deserialize, Serialize};

/// A title's letters are at least this many times as wide as the body text's.
const TITLE_SIZE_RATIO: f32 = 1.25;

/// DB post-processing settings (PaddleOCR's defaults as RapidOCR ships them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DbSettings {
    /// Probability above which a map pixel is text.
    pub threshold: f32,
    /// Mean probability a region needs to be kept.
    pub box_threshold: f32,
    pub unclip_ratio: f32,
    pub max_candidates: usize,
}

impl Default for DbSettings {
    fn default() -> Self {
        DbSettings {
            threshold: 0.3,
            box_threshold: 0.5,
            unclip_ratio: 1.6,
            max_candidates: 1000,
        }
    }
}

/// An axis-aligned box `[x1, y1, x2, y2]` in picture pixels with the detector's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    pub bbox: [f32; 4],
    pub score: f32,
}

/// Boxes from a `w` x `h` probability map, scaled to a `dest_w` x `dest_h` picture.
pub fn db_boxes(
    map: &[f32],
    w: usize,
    h: usize,
    dest_w: u32,
    dest_h: u32,
    s: &DbSettings,
) -> Vec<TextBox> {
    assert_eq!(map.len(), w * h);
    // Binarize, then dilate with a 2x2 kernel (as RapidOCR's `use_dilation`).
    let bin: Vec<bool> = map.iter().map(|&p| p > s.threshold).collect();
    let mut mask = bin.clone();
    for y in 0..h {
        for x in 0..w {
            if bin[y * w + x] {
                continue;
            }
            let left = x > 0 && bin[y * w + x - 1];
            let up = y > 0 && bin[(y - 1) * w + x];
            let diag = x > 0 && y > 0 && bin[(y - 1) * w + x - 1];
            mask[y * w + x] = left || up || diag;
        }
    }
    // 8-connected regions.
    let mut label = vec![u32::MAX; w * h];
    let mut boxes = Vec::new();
    let mut stack = Vec::new();
    let mut regions = 0usize;
    for start in 0..w * h {
        if !mask[start] || label[start] != u32::MAX {
            continue;
        }
        if regions >= s.max_candidates {
            break;
        }
        let id = regions as u32;
        regions += 1;
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
        label[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if mask[j] && label[j] == u32::MAX {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        let (bw, bh) = ((x1 - x0) as f32, (y1 - y0) as f32);
        if bw.min(bh) < 3.0 {
            continue;
        }
        // Mean probability over the rectangle (RapidOCR's "fast" score).
        let mut sum = 0f64;
        for y in y0..=y1 {
            sum += map[y * w + x0..=y * w + x1]
                .iter()
                .map(|&p| f64::from(p))
                .sum::<f64>();
        }
        let score = (sum / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64) as f32;
        if score < s.box_threshold {
            continue;
        }
        let d = bw * bh * s.unclip_ratio / (2.0 * (bw + bh));
        let (ex0, ey0, ex1, ey1) = (x0 as f32 - d, y0 as f32 - d, x1 as f32 + d, y1 as f32 + d);
        if (ex1 - ex0).min(ey1 - ey0) < 5.0 {
            continue;
        }
        let (sx, sy) = (dest_w as f32 / w as f32, dest_h as f32 / h as f32);
        let clip = |v: f32, max: u32| (v.round()).clamp(0.0, max as f32);
        let bbox = [
            clip(ex0 * sx, dest_w),
            clip(ey0 * sy, dest_h),
            clip(ex1 * sx, dest_w),
            clip(ey1 * sy, dest_h),
        ];
        if bbox[2] - bbox[0] <= 3.0 || bbox[3] - bbox[1] <= 3.0 {
            continue;
        }
        boxes.push(TextBox { bbox, score });
    }
    boxes
}

/// CTC greedy decoding of one line: `probs` is `steps` x `classes` (class 0 is the
/// blank, class k the character `chars[k - 1]`). Returns the text and the mean
/// probability of its characters (0 when empty).
pub fn ctc_decode(probs: &[f32], steps: usize, classes: usize, chars: &[String]) -> (String, f32) {
    // (character, probability) of each emitted character.
    let mut out: Vec<(&str, f32)> = Vec::new();
    let mut prev = usize::MAX;
    for t in 0..steps {
        let row = &probs[t * classes..(t + 1) * classes];
        let (best, p) = row
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |a, (i, &p)| if p > a.1 { (i, p) } else { a });
        if best != 0
            && best != prev
            && let Some(c) = chars.get(best - 1)
        {
            out.push((c.as_str(), p));
        }
        prev = best;
    }
    let text: String = out.iter().map(|o| o.0).collect();
    let conf = if out.is_empty() {
        0.0
    } else {
        out.iter().map(|o| o.1).sum::<f32>() / out.len() as f32
    };
    (text, conf)
}

/// The recognizer's character list from its `character` metadata (one per line),
/// with the space RapidOCR appends.
pub fn character_list(meta: &str) -> Vec<String> {
    // Split as Python's `str.splitlines` does (RapidOCR's reading of the list): the
    // list holds characters that Rust's `lines` would keep inside a line.
    let mut v: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut chars = meta.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                v.push(std::mem::take(&mut cur));
            }
            '\n' | '\u{b}' | '\u{c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => v.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        v.push(cur);
    }
    v.push(" ".to_string());
    v
}

/// One recognized line of `ocr.json`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Line {
    /// Position in reading order (0 first).
    pub order: usize,
    /// `[x1, y1, x2, y2]` in the picture's pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub text: String,
    pub confidence: f32,
}

/// Puts lines in reading order: rows top to bottom (lines whose vertical centres are
/// within half a line height share a row), left to right within a row.
pub fn reading_order(lines: &mut [Line]) {
    lines.sort_by(|a, b| a.bbox[1].total_cmp(&b.bbox[1]));
    // Group into rows, then sort each row by x.
    let mut rows: Vec<Vec<Line>> = Vec::new();
    for l in lines.iter() {
        let c = (l.bbox[1] + l.bbox[3]) / 2.0;
        let h = l.bbox[3] - l.bbox[1];
        match rows.last_mut() {
            Some(row)
                if row.iter().any(|r| {
                    let rc = (r.bbox[1] + r.bbox[3]) / 2.0;
                    let rh = r.bbox[3] - r.bbox[1];
                    (rc - c).abs() < 0.5 * h.min(rh)
                }) =>
            {
                row.push(l.clone())
            }
            _ => rows.push(vec![l.clone()]),
        }
    }
    let mut i = 0;
    for mut row in rows {
        row.sort_by(|a, b| a.bbox[0].total_cmp(&b.bbox[0]));
        for mut l in row {
            l.order = i;
            lines[i] = l;
            i += 1;
        }
    }
}

/// How big a line's letters are: its width per character (box heights say little, as
/// the detector grows every box by a share of its own size).
fn letter_size(l: &Line) -> f32 {
    (l.bbox[2] - l.bbox[0]) / l.text.chars().count().max(1) as f32
}

/// The title of a slide: the line with the biggest letters in the top third of the
/// picture (with the lines beside it on its row), when its letters are clearly bigger
/// than the body text's or nothing else is written. `None` for a screen of same-sized
/// lines (code, a document).
pub fn title(lines: &[Line], height: u32) -> Option<String> {
    let top = height as f32 / 3.0;
    let best = lines
        .iter()
        .filter(|l| l.bbox[1] < top && l.text.trim().chars().count() >= 2)
        .max_by(|a, b| letter_size(a).total_cmp(&letter_size(b)))?;
    let mut others: Vec<f32> = lines
        .iter()
        .filter(|l| !std::ptr::eq(*l, best) && l.text.trim().chars().count() >= 4)
        .map(letter_size)
        .collect();
    others.sort_by(f32::total_cmp);
    if let Some(&median) = others.get(others.len() / 2)
        && letter_size(best) < TITLE_SIZE_RATIO * median
    {
        return None;
    }
    let h = |l: &Line| l.bbox[3] - l.bbox[1];
    let c = (best.bbox[1] + best.bbox[3]) / 2.0;
    let mut row: Vec<&Line> = lines
        .iter()
        .filter(|l| {
            let lc = (l.bbox[1] + l.bbox[3]) / 2.0;
            (lc - c).abs() < 0.5 * h(best) && letter_size(l) > 0.8 * letter_size(best)
        })
        .collect();
    row.sort_by(|a, b| a.bbox[0].total_cmp(&b.bbox[0]));
    let text = row
        .iter()
        .map(|l| l.text.trim())
        .collect::<Vec<_>>()
        .join(" ");
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(x: f32, y: f32, w: f32, h: f32, text: &str) -> Line {
        Line {
            order: 0,
            bbox: [x, y, x + w, y + h],
            text: text.into(),
            confidence: 0.9,
        }
    }

    #[test]
    fn regions_of_the_map_become_unclipped_boxes() {
        let (w, h) = (40, 20);
        let mut map = vec![0f32; w * h];
        for y in 5..10 {
            for x in 4..30 {
                map[y * w + x] = 0.9;
            }
        }
        // A faint blob and a speck: dropped.
        map[15 * w + 35] = 0.9;
        for y in 14..18 {
            for x in 2..8 {
                map[y * w + x] = 0.35;
            }
        }
        let b = db_boxes(&map, w, h, 80, 40, &DbSettings::default());
        assert_eq!(b.len(), 1, "{b:?}");
        let [x1, y1, x2, y2] = b[0].bbox;
        // 26x5 region (extremes 4..=29 x 5..=9 plus the dilation), grown on every side.
        assert!(
            x1 < 8.0 && y1 < 10.0 && x2 > 58.0 && y2 > 20.0,
            "{:?}",
            b[0]
        );
        assert!(b[0].score > 0.7, "{:?}", b[0]);
    }

    #[test]
    fn ctc_collapses_repeats_and_blanks() {
        let chars: Vec<String> = ["a", "b", " "].iter().map(|s| s.to_string()).collect();
        // steps: a a blank a b b space(3) b
        let idx = [1usize, 1, 0, 1, 2, 2, 3, 2];
        let classes = 4;
        let mut probs = vec![0.0f32; idx.len() * classes];
        for (t, &i) in idx.iter().enumerate() {
            probs[t * classes + i] = 0.8;
        }
        let (text, conf) = ctc_decode(&probs, idx.len(), classes, &chars);
        assert_eq!(text, "aab b");
        assert!((conf - 0.8).abs() < 1e-6);
        assert_eq!(character_list("a\nb"), chars);
        assert_eq!(character_list("a\r\nb\n").len(), 3);
        assert_eq!(character_list("a\u{2028}b\n\u{85}c").len(), 5);
    }

    #[test]
    fn lines_read_in_rows_and_the_title_is_the_big_text_on_top() {
        let mut lines = vec![
            line(300.0, 152.0, 200.0, 30.0, "right column"),
            line(72.0, 150.0, 200.0, 30.0, "left column"),
            line(48.0, 26.0, 180.0, 50.0, "Big"),
            line(240.0, 28.0, 300.0, 48.0, "Ideas"),
            line(72.0, 214.0, 200.0, 30.0, "next line here"),
        ];
        reading_order(&mut lines);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "Big",
                "Ideas",
                "left column",
                "right column",
                "next line here"
            ]
        );
        assert!(lines.iter().enumerate().all(|(i, l)| l.order == i));
        assert_eq!(title(&lines, 540).as_deref(), Some("Big Ideas"));
        // A slide with only its title.
        let alone = [line(48.0, 26.0, 300.0, 50.0, "Thanks")];
        assert_eq!(title(&alone, 540).as_deref(), Some("Thanks"));
        // A code screen: same-sized lines, no title.
        let code: Vec<Line> = (0..10)
            .map(|i| line(40.0, 20.0 + 34.0 * i as f32, 600.0, 26.0, "let x"))
            .collect();
        assert_eq!(title(&code, 540), None);
        assert_eq!(title(&[], 540), None);
    }
}
