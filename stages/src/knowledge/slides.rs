//! Chapters of static content (talks, trainings, screen recordings): when
//! `video.scenes` says the video is slides or screens, its chapters follow the slide
//! changes instead of a target length, and a chapter is named after its slide's title
//! line as `ocr.text` read it. Consecutive scenes with the same title (a build-up
//! step) or with no title at all (a scrolled screen) stay one chapter. Also collects
//! the text read on each chapter's pictures for the knowledge file and the search.

use std::collections::BTreeMap;

use crate::media::ScenesOut;
use crate::vision::ocr::OcrFile;

/// A chapter made from slides: (start, end, scene indices, slide title).
pub type SlideChapter = (f64, f64, Vec<usize>, Option<String>);

/// Is this `scenes.json` of static content (cut by the slides detector)?
pub fn is_static(scenes: &ScenesOut) -> bool {
    scenes.content_type.as_deref() == Some("static")
}

/// The OCR title of each scene, from `ocr.json`.
pub fn titles(ocr: Option<&OcrFile>) -> BTreeMap<usize, String> {
    let mut out = BTreeMap::new();
    for p in ocr.into_iter().flat_map(|o| &o.pictures) {
        if let Some(t) = p.title.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            out.entry(p.scene).or_insert_with(|| t.to_string());
        }
    }
    out
}

/// The lines read on each scene's pictures, in reading order.
pub fn screen_lines(ocr: Option<&OcrFile>) -> BTreeMap<usize, Vec<String>> {
    let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for p in ocr.into_iter().flat_map(|o| &o.pictures) {
        let lines = out.entry(p.scene).or_default();
        for l in &p.lines {
            let t = l.text.trim();
            if !t.is_empty() {
                lines.push(t.to_string());
            }
        }
    }
    out
}

/// Chapters that follow the slides: `scenes` as (index, start, end). Returns `None`
/// unless the video is static content with more than one scene.
pub fn slide_chapters(
    scenes_json: Option<&ScenesOut>,
    scenes: &[(usize, f64, f64)],
    ocr: Option<&OcrFile>,
) -> Option<Vec<SlideChapter>> {
    if !scenes_json.is_some_and(is_static) || scenes.len() < 2 {
        return None;
    }
    let titles = titles(ocr);
    let mut out: Vec<SlideChapter> = Vec::new();
    for &(i, s, e) in scenes {
        let title = titles.get(&i).cloned();
        match out.last_mut() {
            Some(c) if same_slide(c.3.as_deref(), title.as_deref()) => {
                c.1 = e;
                c.2.push(i);
            }
            _ => out.push((s, e, vec![i], title)),
        }
    }
    Some(out)
}

/// A build-up step keeps its slide's title; screens without a title run together.
fn same_slide(a: Option<&str>, b: Option<&str>) -> bool {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => norm(a) == norm(b),
        _ => false,
    }
}

/// Lines of `scene_ids`, each once, first seen first.
pub fn chapter_text(lines: &BTreeMap<usize, Vec<String>>, scene_ids: &[usize]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scene_ids {
        for l in lines.get(s).into_iter().flatten() {
            // A lone letter or digit read off a photo ("D") is noise, not screen text.
            let said = l.chars().filter(|c| c.is_alphanumeric()).count();
            if said >= 2 && !out.contains(l) {
                out.push(l.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v<T: serde::de::DeserializeOwned>(j: serde_json::Value) -> T {
        serde_json::from_value(j).unwrap()
    }

    #[test]
    fn chapters_follow_slides_and_take_their_titles() {
        let scenes_json: ScenesOut = v(json!({"content_type": "static"}));
        let scenes = vec![
            (0, 0.0, 3.0),
            (1, 3.0, 6.0),
            (2, 6.0, 7.5),
            (3, 7.5, 9.0),
            (4, 9.0, 12.0),
            (5, 12.0, 14.0),
        ];
        let ocr: OcrFile = v(json!({"pictures": [
            {"scene": 0, "title": "Intro", "lines": [{"text": "Intro"}, {"text": "- a point"}]},
            {"scene": 1, "title": "Why", "lines": []},
            {"scene": 2, "title": "Build", "lines": [{"text": "- one"}]},
            {"scene": 3, "title": "build", "lines": [{"text": "- one"}, {"text": "- two"}]},
            {"scene": 4, "title": null, "lines": [{"text": "let x = 1"}]},
            {"scene": 5, "title": null, "lines": [{"text": "let y = 2"}]}
        ]}));
        let c = slide_chapters(Some(&scenes_json), &scenes, Some(&ocr)).unwrap();
        let got: Vec<(f64, f64, Vec<usize>, Option<&str>)> = c
            .iter()
            .map(|x| (x.0, x.1, x.2.clone(), x.3.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0.0, 3.0, vec![0], Some("Intro")),
                (3.0, 6.0, vec![1], Some("Why")),
                (6.0, 9.0, vec![2, 3], Some("Build")),
                (9.0, 14.0, vec![4, 5], None),
            ]
        );
        let lines = screen_lines(Some(&ocr));
        assert_eq!(chapter_text(&lines, &[2, 3]), vec!["- one", "- two"]);
        // Camera footage, or one scene: no slide chapters.
        assert!(
            slide_chapters(
                Some(&v::<ScenesOut>(json!({"content_type": "footage"}))),
                &scenes,
                None
            )
            .is_none()
        );
        assert!(slide_chapters(None, &scenes, None).is_none());
        assert!(slide_chapters(Some(&scenes_json), &scenes[..1], None).is_none());
    }

    #[test]
    fn a_lone_character_is_no_screen_text() {
        let lines: BTreeMap<usize, Vec<String>> = [
            (0, vec!["D".to_string(), "Rolling back".to_string()]),
            (
                1,
                vec![
                    "·".to_string(),
                    "Rolling back".to_string(),
                    "v2".to_string(),
                ],
            ),
        ]
        .into();
        assert_eq!(chapter_text(&lines, &[0, 1]), vec!["Rolling back", "v2"]);
    }
}
