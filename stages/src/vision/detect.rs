//! From a YOLO output tensor to a short list of boxes: best class per anchor, confidence
//! threshold, per-class non-maximum suppression, and the class names a model carries.
//!
//! The layout is the one YOLOv5u, v8, v11 and v12 exports share: `[batch, 4 + classes,
//! anchors]`, rows 0-3 the box centre and size in input pixels, then one score per class
//! (no objectness). Suppression follows Ultralytics' `non_max_suppression` with
//! `agnostic=False, multi_label=False`, so results match the reference implementation.

/// One detection in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Det {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    pub class_id: usize,
    pub confidence: f32,
}

/// Detection thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Keep anchors whose best class score is above this.
    pub confidence: f32,
    /// Suppress a box overlapping a better one of its class by more than this IoU.
    pub iou: f32,
    /// At most this many boxes per image.
    pub max_detections: usize,
}

/// At most this many candidates enter suppression (Ultralytics' `max_nms`).
const MAX_NMS: usize = 30_000;

/// The detections of one image from its slice of the output (`(4 + classes) * anchors`
/// floats, channel-major), best first.
pub fn decode(out: &[f32], classes: usize, anchors: usize, t: &Thresholds) -> Vec<Det> {
    debug_assert_eq!(out.len(), (4 + classes) * anchors);
    // Best class per anchor, walking the rows in memory order.
    let mut best = vec![f32::NEG_INFINITY; anchors];
    let mut best_class = vec![0usize; anchors];
    for c in 0..classes {
        let row = &out[(4 + c) * anchors..(5 + c) * anchors];
        for (a, &s) in row.iter().enumerate() {
            if s > best[a] {
                best[a] = s;
                best_class[a] = c;
            }
        }
    }
    let mut cands: Vec<Det> = (0..anchors)
        .filter(|&a| best[a] > t.confidence)
        .map(|a| {
            let (cx, cy, w, h) = (
                out[a],
                out[anchors + a],
                out[2 * anchors + a],
                out[3 * anchors + a],
            );
            Det {
                bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                class_id: best_class[a],
                confidence: best[a],
            }
        })
        .collect();
    cands.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    cands.truncate(MAX_NMS);
    let mut keep: Vec<Det> = Vec::new();
    let mut suppressed = vec![false; cands.len()];
    for i in 0..cands.len() {
        if suppressed[i] {
            continue;
        }
        keep.push(cands[i]);
        if keep.len() == t.max_detections {
            break;
        }
        for j in i + 1..cands.len() {
            if !suppressed[j]
                && cands[j].class_id == cands[i].class_id
                && iou(&cands[i].bbox, &cands[j].bbox) > t.iou
            {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Class names from a model's `names` metadata, as Ultralytics writes it: a Python
/// dict literal `{0: 'person', 1: 'bicycle', ...}` (JSON-style double quotes and quoted
/// keys are accepted too). `None` unless the ids are exactly 0..n.
pub fn parse_names(s: &str) -> Option<Vec<String>> {
    let mut it = s.trim().chars().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::Chars>| {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
    };
    let quoted = |it: &mut std::iter::Peekable<std::str::Chars>| -> Option<String> {
        let q = it.next().filter(|c| *c == '\'' || *c == '"')?;
        let mut out = String::new();
        loop {
            match it.next()? {
                '\\' => out.push(it.next()?),
                c if c == q => return Some(out),
                c => out.push(c),
            }
        }
    };
    if it.next()? != '{' {
        return None;
    }
    let mut pairs: Vec<(usize, String)> = Vec::new();
    loop {
        skip_ws(&mut it);
        match it.peek()? {
            '}' => break,
            ',' => {
                it.next();
                continue;
            }
            _ => {}
        }
        let key = if matches!(it.peek(), Some('\'' | '"')) {
            quoted(&mut it)?
        } else {
            let mut k = String::new();
            while it.peek().is_some_and(|c| c.is_ascii_digit()) {
                k.push(it.next()?);
            }
            k
        };
        let id: usize = key.trim().parse().ok()?;
        skip_ws(&mut it);
        if it.next()? != ':' {
            return None;
        }
        skip_ws(&mut it);
        pairs.push((id, quoted(&mut it)?));
    }
    pairs.sort_by_key(|p| p.0);
    let ok = pairs.iter().enumerate().all(|(i, p)| p.0 == i);
    (ok && !pairs.is_empty()).then(|| pairs.into_iter().map(|p| p.1).collect())
}

/// The 80 COCO classes in the order YOLO models trained on COCO number them: the
/// names used when a model's metadata has none.
pub const COCO: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Names for `classes` classes: the metadata's when it has exactly that many, else
/// COCO's for 80 classes, else `class0`, `class1`, ...
pub fn class_names(metadata: Option<&str>, classes: usize) -> (Vec<String>, &'static str) {
    if let Some(names) = metadata.and_then(parse_names)
        && names.len() == classes
    {
        return (names, "model metadata");
    }
    if classes == COCO.len() {
        return (
            COCO.iter().map(|s| s.to_string()).collect(),
            "COCO (fallback)",
        );
    }
    (
        (0..classes).map(|i| format!("class{i}")).collect(),
        "numbered (no names in the model)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output with `classes` classes and the given anchors: (cx, cy, w, h, class, score).
    fn output(classes: usize, anchors: &[(f32, f32, f32, f32, usize, f32)]) -> Vec<f32> {
        let n = anchors.len();
        let mut out = vec![0f32; (4 + classes) * n];
        for (a, &(cx, cy, w, h, c, s)) in anchors.iter().enumerate() {
            out[a] = cx;
            out[n + a] = cy;
            out[2 * n + a] = w;
            out[3 * n + a] = h;
            out[(4 + c) * n + a] = s;
        }
        out
    }

    const T: Thresholds = Thresholds {
        confidence: 0.25,
        iou: 0.45,
        max_detections: 300,
    };

    #[test]
    fn nms_is_per_class() {
        let out = output(
            3,
            &[
                (50.0, 50.0, 20.0, 20.0, 0, 0.9),
                (51.0, 50.0, 20.0, 20.0, 0, 0.8), // same class, overlaps: suppressed
                (51.0, 50.0, 20.0, 20.0, 1, 0.7), // other class: kept
                (150.0, 50.0, 20.0, 20.0, 0, 0.6), // far away: kept
                (10.0, 10.0, 4.0, 4.0, 2, 0.25),  // not above the threshold
            ],
        );
        let d = decode(&out, 3, 5, &T);
        let got: Vec<(usize, f32)> = d.iter().map(|d| (d.class_id, d.confidence)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.7), (0, 0.6)]);
        assert_eq!(d[0].bbox, [40.0, 40.0, 60.0, 60.0]);
        let one = decode(
            &out,
            3,
            5,
            &Thresholds {
                max_detections: 1,
                ..T
            },
        );
        assert_eq!(one.len(), 1);
        assert!(decode(&vec![0.0; 84 * 10], 80, 10, &T).is_empty());
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn names_from_metadata_or_fallbacks() {
        assert_eq!(
            parse_names("{0: 'person', 1: \"o'clock\", 2: 'a\\'b'}").unwrap(),
            vec!["person", "o'clock", "a'b"]
        );
        assert_eq!(
            parse_names(r#"{"1": "b", "0": "a"}"#).unwrap(),
            vec!["a", "b"]
        );
        assert!(parse_names("{0: 'a', 2: 'c'}").is_none(), "gap");
        assert!(parse_names("['a', 'b']").is_none());
        assert!(parse_names("{0: 'a'").is_none());
        assert!(parse_names("{}").is_none());
        let (n, from) = class_names(Some("{0: 'x', 1: 'y'}"), 2);
        assert_eq!(
            (n, from),
            (vec!["x".to_string(), "y".to_string()], "model metadata")
        );
        let (n, from) = class_names(Some("{0: 'x'}"), 80);
        assert_eq!((n[41].as_str(), from), ("cup", "COCO (fallback)"));
        assert_eq!(class_names(None, 3).0, vec!["class0", "class1", "class2"]);
    }
}
