//! Slides and screens on a generated deck (see `deck/mod.rs`): `video.scenes` with
//! `detector: slides` finds every change (new slide on the same template, build-up
//! step, scroll) within 0.5 s and nothing while a clip plays in a region or a cursor
//! moves; `auto` picks the slides detector for the deck and the content detector for
//! camera-like footage, and says so; `ocr.text` reads the slide titles off the
//! keyframes, and `knowledge.compose` makes a chapter per slide named after it.

mod common;
mod deck;
mod vision_support;

use std::path::Path;

use common::{ffmpeg, run};
use serde_json::{Value, json};
use vsum_stages::knowledge::compose::{Inputs, Meta, Params, compose};
use vsum_stages::knowledge::model::Provenance;
use vsum_stages::media::{KeyframesStage, SceneStage};
use vsum_stages::vision::ocr::{OcrFile, OcrStage};

const OCR_MODELS: [&str; 3] = ["ppocr-det", "ppocr-rec", "onnxruntime"];

/// Scene start times after the first scene.
fn cut_times(scenes: &Value) -> Vec<f64> {
    scenes["scenes"]
        .as_array()
        .expect("scenes")
        .iter()
        .skip(1)
        .map(|s| s["start"].as_f64().expect("start"))
        .collect()
}

/// (found, missed truths, false cuts) with a tolerance in seconds.
fn score(truth: &[f64], got: &[f64], tol: f64) -> (usize, Vec<f64>, Vec<f64>) {
    let mut used = vec![false; got.len()];
    let mut missed = Vec::new();
    for &t in truth {
        let best = got
            .iter()
            .enumerate()
            .filter(|(i, g)| !used[*i] && (**g - t).abs() <= tol)
            .min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs()));
        match best {
            Some((i, _)) => used[i] = true,
            None => missed.push(t),
        }
    }
    let false_cuts: Vec<f64> = got
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(g, _)| *g)
        .collect();
    (truth.len() - missed.len(), missed, false_cuts)
}

#[test]
fn slides_detector_finds_every_change_of_the_deck_and_nothing_else() {
    let deck = deck::deck();
    let job = run(&SceneStage, &deck, json!({"detector": "slides"}), &[]);
    let scenes = job.json("scenes.json");
    let got = cut_times(&scenes);
    let truth = deck::changes();
    let (found, missed, false_cuts) = score(&truth, &got, 0.5);
    eprintln!(
        "slides detector on the deck: {found}/{} changes found within 0.5 s, missed {missed:?}, false {false_cuts:?}; cuts at {got:?}",
        truth.len()
    );
    assert!(
        missed.is_empty(),
        "missed changes at {missed:?} (cuts at {got:?})"
    );
    assert!(
        false_cuts.is_empty(),
        "false changes at {false_cuts:?} (truth {truth:?})"
    );
    let (m0, m1) = deck::MOTION;
    assert!(
        !got.iter().any(|&g| g > m0 + 0.5 && g < m1 - 0.5),
        "a change inside the clip-playing segment: {got:?}"
    );
    assert_eq!(scenes["content_type"], "static");
    assert!(scenes["detector"].as_str().unwrap().starts_with("slides"));
    // The content detector (the default) misses the slides on one template.
    let content = run(&SceneStage, &deck, json!({}), &[]).json("scenes.json");
    let (cfound, _, _) = score(&truth, &cut_times(&content), 0.5);
    eprintln!(
        "content detector on the deck: {cfound}/{} changes found",
        truth.len()
    );
    assert!(content.get("content_type").is_none());
    assert!(cfound < truth.len());
}

/// 8 s of camera-like footage: a zooming fractal with sensor noise, one hard cut.
fn footage(dest: &Path) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "mandelbrot=size=480x270:rate=25,noise=alls=25:allf=t",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=480x270:rate=25,noise=alls=25:allf=t",
        "-filter_complex",
        "[0:v]trim=end_frame=100,setpts=PTS-STARTPTS[a];[1:v]trim=end_frame=100,setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1:a=0,format=yuv420p[out]",
        "-map",
        "[out]",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        dest.to_str().unwrap(),
    ]);
}

#[test]
fn auto_picks_slides_for_the_deck_and_content_for_footage_and_records_why() {
    let deck = deck::deck();
    let auto = run(&SceneStage, &deck, json!({"detector": "auto"}), &[]).json("scenes.json");
    let slides = run(&SceneStage, &deck, json!({"detector": "slides"}), &[]).json("scenes.json");
    assert_eq!(auto["auto"]["chose"], "slides", "{}", auto["auto"]);
    assert_eq!(auto["content_type"], "static");
    assert_eq!(cut_times(&auto), cut_times(&slides));
    assert!(auto["auto"]["why"].as_str().unwrap().contains("flat"));

    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("footage.mp4");
    footage(&clip);
    let auto = run(&SceneStage, &clip, json!({"detector": "auto"}), &[]).json("scenes.json");
    let content = run(&SceneStage, &clip, json!({}), &[]).json("scenes.json");
    eprintln!("auto on footage: {}", auto["auto"]);
    assert_eq!(auto["auto"]["chose"], "content", "{}", auto["auto"]);
    assert_eq!(auto["content_type"], "footage");
    assert_eq!(cut_times(&auto), cut_times(&content));
    assert_eq!(cut_times(&content).len(), 1, "{content}");
}

#[test]
fn slide_params_are_checked() {
    use vsum_engine::stage::{CheckEnv, Scope, StageKind};
    let env = CheckEnv {
        stage_id: "scenes",
        scope: Scope::Video,
        needs: &[],
    };
    let e = SceneStage
        .check(
            &json!({"detector": "slides", "min_change": 0, "dwell": -1}),
            &env,
        )
        .unwrap_err();
    let paths: Vec<String> = e.iter().map(|e| e.path.join(".")).collect();
    assert_eq!(paths, vec!["min_change", "dwell"]);
    let e = SceneStage
        .check(&json!({"detector": "hash"}), &env)
        .unwrap_err();
    assert!(e[0].message.contains("unknown variant"), "{e:?}");
}

/// Share of `want`'s words found in `got` (each found word counts once).
fn word_recall(want: &[String], got: &[String]) -> (usize, usize) {
    let mut pool: Vec<&String> = got.iter().collect();
    let mut hit = 0;
    for w in want {
        if let Some(i) = pool.iter().position(|g| *g == w) {
            pool.swap_remove(i);
            hit += 1;
        }
    }
    (hit, want.len())
}

#[test]
fn ocr_reads_the_slide_titles_and_chapters_carry_them() {
    if !vision_support::ready(
        "ocr_reads_the_slide_titles_and_chapters_carry_them",
        &OCR_MODELS,
        &["ffmpeg"],
    ) {
        return;
    }
    let deck = deck::deck();
    let scenes = run(&SceneStage, &deck, json!({"detector": "auto"}), &[]);
    let keyframes = run(
        &KeyframesStage,
        &deck,
        json!({}),
        &[("scenes", scenes.ok())],
    );
    let ocr = run(
        &OcrStage::with_models_dir(vision_support::models_dir()),
        &deck,
        json!({}),
        &[("keyframes", keyframes.ok())],
    );
    let file: OcrFile = serde_json::from_value(ocr.json("ocr.json")).unwrap();
    let text = std::fs::read_to_string(ocr.ok().join("ocr.txt")).unwrap();
    assert!(text.contains("[00:0"), "{text}");

    // Title words: each slide's title against the title line of the pictures in its span.
    let (mut hit, mut total, mut line_hit) = (0, 0, 0);
    for s in &deck::SLIDES {
        let pics: Vec<_> = file
            .pictures
            .iter()
            .filter(|p| p.time >= s.start && p.time < s.end)
            .collect();
        let titles: Vec<String> = pics
            .iter()
            .flat_map(|p| deck::words(p.title.as_deref().unwrap_or("")))
            .collect();
        let all: Vec<String> = pics
            .iter()
            .flat_map(|p| p.lines.iter().flat_map(|l| deck::words(&l.text)))
            .collect();
        let want = deck::words(s.title);
        let (h, n) = word_recall(&want, &titles);
        line_hit += word_recall(&want, &all).0;
        if h < n {
            eprintln!("slide '{}': title lines read {titles:?}", s.title);
        }
        hit += h;
        total += n;
    }
    let recall = hit as f64 / total as f64;
    eprintln!(
        "OCR title-word recall on the deck: {hit}/{total} = {:.1}% as title lines, {line_hit}/{total} anywhere on the slide",
        recall * 100.0
    );
    assert!(recall >= 0.9, "title-word recall {recall:.3} < 0.9");
    // Lines come in reading order, boxes inside the picture, bullets below the title.
    for p in &file.pictures {
        assert!(p.lines.iter().enumerate().all(|(i, l)| l.order == i));
        for l in &p.lines {
            let [x1, y1, x2, y2] = l.bbox;
            assert!(x1 < x2 && y1 < y2 && x2 <= p.width as f32 && y2 <= p.height as f32);
            assert!((0.5..=1.0).contains(&l.confidence), "{l:?}");
        }
    }
    let build = file
        .pictures
        .iter()
        .filter(|p| p.time >= deck::BUILD.1 && p.time < deck::SLIDES[deck::BUILD.0].end)
        .flat_map(|p| p.lines.iter().map(|l| l.text.clone()))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        build.contains("batches"),
        "the built-up bullet is read: {build}"
    );

    // Knowledge: a chapter per slide, named after it, with the screen text.
    fn read<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> T {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    }
    let inputs = Inputs {
        scenes: Some(read(scenes.ok(), "scenes.json")),
        keyframes: Some((read(keyframes.ok(), "keyframes.json"), "keyframes".into())),
        ocr: Some(read(ocr.ok(), "ocr.json")),
        ..Inputs::default()
    };
    let meta = Meta {
        title_fallback: "deck".into(),
        source: "deck.mp4".into(),
        provenance: Provenance::default(),
    };
    let params = Params {
        chapter_secs: 120.0,
        summary_sentences: Some(3),
        keywords: 5,
        ..Params::default()
    };
    let summary = compose(&inputs, &meta, &params);
    let norm = |s: &str| deck::words(s).join(" ");
    let mut named = 0;
    for s in &deck::SLIDES {
        let ch = summary
            .chapters
            .iter()
            .find(|c| (c.start - s.start).abs() <= 0.5);
        match ch {
            Some(c) if norm(&c.title) == norm(s.title) => named += 1,
            other => eprintln!(
                "slide '{}' at {}: chapter {:?}",
                s.title,
                s.start,
                other.map(|c| (&c.title, c.start))
            ),
        }
    }
    let titles: Vec<&str> = summary.chapters.iter().map(|c| c.title.as_str()).collect();
    eprintln!(
        "{named}/{} slides have a chapter with their title: {titles:?}",
        deck::SLIDES.len()
    );
    assert!(named >= 11, "chapters {titles:?}");
    // The build-up stays in its slide's chapter; the code screen is one chapter.
    assert_eq!(summary.chapters.len(), deck::SLIDES.len() + 1, "{titles:?}");
    let code = summary
        .chapters
        .iter()
        .find(|c| (c.start - deck::SCROLL.0).abs() <= 0.5)
        .expect("a chapter for the code screen");
    assert!(
        code.screen_text.iter().any(|l| l.contains("load_stage")),
        "{:?}",
        code.screen_text
    );
    let md = vsum_stages::knowledge::render::summary_md(&summary).unwrap();
    assert!(
        md.contains("On screen:") && md.contains("Measuring Recall"),
        "{md}"
    );
}
