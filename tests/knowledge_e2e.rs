//! End to end on generated talking videos: real ffmpeg decoding, real Whisper, real
//! knowledge files and the HTML report checked in a real browser (headless Chromium).
//!
//! Needs the models installed by `scripts/setup.sh` (`vsum models install ...`) and
//! Debian's `chromium`. Outside CI a machine without them skips loudly; in CI (env `CI`)
//! their absence fails the test.

mod common;
#[path = "../stages/tests/vision_support/mod.rs"]
mod vision_support;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const A_SENTENCES: &str =
    "The release candidate is ready for testing. Please back up the database before Friday.";
const B_SENTENCES: &str = "Welcome to the onboarding session. Today we learn the build system.";

const PIPELINE: &str = r#"
inputs: [input/]
config: {retries: 0}
stages:
  probe: {uses: media.probe}
  audio: {uses: media.audio}
  vad: {uses: audio.vad, needs: [audio]}
  transcript: {uses: whisper.transcribe, needs: [audio, vad]}
  scenes: {uses: video.scenes}
  keyframes: {uses: video.keyframes, needs: [scenes]}
  objects: {uses: yolo.detect, needs: [keyframes]}
  summary:
    uses: knowledge.compose
    needs: [probe, audio, transcript, scenes, keyframes, objects]
    with: {chapter_secs: 1}
  index:
    uses: knowledge.index
    scope: batch
    needs: [summary]
    publish: [INDEX.md, index.html]
"#;

fn summary(p: &Project, folder: &str) -> Value {
    serde_json::from_str(&p.read(&format!("output/{folder}/summary/summary.json"))).unwrap()
}

#[test]
fn talking_videos_become_knowledge_and_a_searchable_report() {
    if !tool("ffmpeg") && !required("knowledge_e2e", "ffmpeg")
        || !tool("espeak-ng") && !required("knowledge_e2e", "espeak-ng")
    {
        return;
    }
    let p = Project::new(PIPELINE, &[]);
    let input = p.path().join("input");
    // Three scenes of 4 s with speech; a silent video; a video without cuts.
    talking_video(
        &input,
        "release",
        A_SENTENCES,
        &["testsrc", "smptebars", "mandelbrot"],
        4.0,
    );
    talking_video(&input, "onboarding", B_SENTENCES, &["rgbtestsrc"], 8.0);
    talking_video(&input, "silent", "", &["testsrc2", "smptehdbars"], 3.0);
    // Known objects: the astronaut (a person) for 4 s, then the cat, with speech over them.
    let Some(photos) = vision_support::photos("knowledge_e2e") else {
        return;
    };
    let wav = p.path().join("photos.wav");
    assert!(
        Command::new("espeak-ng")
            .args(["-s", "140", "-w"])
            .arg(&wav)
            .arg("First the astronaut. Then the cat.")
            .status()
            .unwrap()
            .success()
    );
    let (a, c) = (photos.join("astronaut.png"), photos.join("chelsea.png"));
    ffmpeg(&[
        "-loop",
        "1",
        "-t",
        "4",
        "-i",
        a.to_str().unwrap(),
        "-loop",
        "1",
        "-t",
        "4",
        "-i",
        c.to_str().unwrap(),
        "-i",
        wav.to_str().unwrap(),
        "-filter_complex",
        "[0:v]scale=480:360,setsar=1,fps=25,format=yuv420p[a];[1:v]scale=480:360,setsar=1,fps=25,format=yuv420p[b];[a][b]concat=n=2:v=1:a=0[v]",
        "-map",
        "[v]",
        "-map",
        "2:a",
        "-af",
        "apad",
        "-t",
        "8",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-c:a",
        "aac",
        input.join("photos.mp4").to_str().unwrap(),
    ]);

    if p.run_with_models("knowledge_e2e").is_none() {
        return;
    }

    // The spoken sentences are in the knowledge file, chapter by chapter.
    let a = summary(&p, "release");
    let text = a["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    // Synthetic speech is hard on a tiny model: most words, not every word (the issue's
    // bar is a word error rate of 20% at most).
    let reference: Vec<String> = A_SENTENCES
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let heard = reference
        .iter()
        .filter(|w| text.contains(w.as_str()))
        .count();
    assert!(
        heard as f64 >= 0.8 * reference.len() as f64,
        "only {heard} of {} words heard: {text}",
        reference.len()
    );
    for w in ["release", "candidate", "testing", "friday"] {
        assert!(
            text.contains(w),
            "'{w}' missing from the transcript: {text}"
        );
    }
    assert!(!a["summary"].as_array().unwrap().is_empty());
    // Chapters line up with the cuts at 4 s and 8 s (within a frame).
    let starts: Vec<f64> = a["chapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["start"].as_f64().unwrap())
        .collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    for (got, want) in starts.iter().zip([0.0, 4.0, 8.0]) {
        assert!(
            (got - want).abs() <= 0.04 + 1e-9,
            "chapter starts {starts:?}"
        );
    }
    assert!(
        a["chapters"][0]["keyframe"]
            .as_str()
            .unwrap()
            .starts_with("../keyframes/")
    );
    assert!(
        p.path()
            .join("output/release/summary")
            .join(a["chapters"][1]["keyframe"].as_str().unwrap())
            .is_file()
    );
    assert!(
        p.read("output/release/summary/summary.md")
            .contains("## Chapters")
    );

    // Objects appear under the chapter where they are seen.
    let ph = summary(&p, "photos");
    let names = |i: usize| -> Vec<String> {
        ph["chapters"][i]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ph["chapters"].as_array().unwrap().len(),
        2,
        "{}",
        ph["chapters"]
    );
    assert!(
        names(0).contains(&"person".to_string()),
        "chapter 1: {:?}",
        names(0)
    );
    assert!(
        names(1).contains(&"cat".to_string()),
        "chapter 2: {:?}",
        names(1)
    );
    assert!(
        !names(0).contains(&"cat".to_string()),
        "the cat is not in chapter 1: {:?}",
        names(0)
    );

    // No audio and no cuts are stated, not crashed on.
    let silent = summary(&p, "silent");
    assert!(
        silent["notes"].to_string().contains("No audio track"),
        "{}",
        silent["notes"]
    );
    let one = summary(&p, "onboarding");
    assert!(
        one["notes"].to_string().contains("No scene cuts"),
        "{}",
        one["notes"]
    );
    assert_eq!(one["chapters"].as_array().unwrap().len(), 1);

    // The index: one row per video, and the report in a real browser.
    let index = p.read("output/INDEX.md");
    assert_eq!(
        index
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| Video"))
            .count(),
        4,
        "{index}"
    );
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| tool(b));
    let Some(browser) = browser else {
        required("knowledge_e2e", "chromium");
        return;
    };
    let html = p.path().join("output/index.html");
    let url = format!("file://{}#q=candidate", html.display());
    let profile = tempfile::tempdir().unwrap();
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let out = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=3000", "--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(r#"<div class="hit" data-video="release">"#),
        "search for a spoken word finds its video: {dom}"
    );
    assert!(!dom.contains(r#"<div class="hit" data-video="onboarding">"#));
    assert!(
        dom.to_lowercase().contains("<mark>candidate</mark>"),
        "the hit is highlighted"
    );
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    let st = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            "--window-size=1200,900",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success() && shot.is_file(),
        "screenshot: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    eprintln!("report screenshot: {}", shot.display());
}
