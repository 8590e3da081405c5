//! A small library through the real pipeline (espeak-ng speech, FFmpeg, Silero VAD,
//! Whisper tiny.en, all-MiniLM-L6-v2): the search index grows with the library instead
//! of being rebuilt, and each video knows its related videos.
//!
//! Two videos are indexed, then a third is added: only the new video is embedded and
//! only its documents are written into the index (`build.json`), and `vsum search`
//! finds all three. The cooking videos relate to each other before anything else.
//! Needs the models installed by `scripts/setup.sh`; without them a developer machine
//! skips loudly and CI (env `CI`) fails.

mod common;

use common::*;
use serde_json::Value;

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
  summary:
    uses: knowledge.compose
    needs: [probe, audio, transcript, scenes, keyframes]
  embed: {uses: text.embed, needs: [summary]}
  search: {uses: search.index, scope: batch, needs: [embed]}
  index:
    uses: knowledge.index
    scope: batch
    needs: [summary, search]
    publish: [INDEX.md, index.html, related.js]
  related: {uses: knowledge.related, needs: [search]}
"#;

/// (file stem, what is said, a query in other words that must find it).
const VIDEOS: [(&str, &str, &str); 3] = [
    (
        "bread",
        "Today we bake sourdough bread at home. Mix the flour, water and salt, then add the starter. Knead the dough for ten minutes until it is smooth. Let it rise overnight in a warm kitchen. Bake it in a hot oven for forty minutes until the crust is brown.",
        "sourdough starter and flour",
    ),
    (
        "backup",
        "The database backup runs every night at two. It writes a full snapshot of the customer tables to cold storage. Each snapshot is encrypted and copied to a second region. Once a month we restore a snapshot to prove that the backup works.",
        "encrypted copies of the customer data",
    ),
    (
        "pizza",
        "Tonight we make pizza from scratch. Stretch the dough into a thin round base and spread tomato sauce over it. Add mozzarella cheese, fresh basil and a little olive oil. Bake the pizza in a very hot oven for eight minutes until the cheese melts.",
        "mozzarella and basil on a tomato base",
    ),
];

fn add_video(p: &Project, i: usize) {
    let (name, text, _) = VIDEOS[i];
    let secs = text.split_whitespace().count() as f64 / 2.2 + 2.0;
    talking_video(
        &p.path().join("input"),
        name,
        text,
        &[["smptebars", "rgbtestsrc", "testsrc"][i]],
        secs,
    );
}

fn read_json(p: &Project, rel: &str) -> Value {
    serde_json::from_str(&p.read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn ms(summary: &Value, stage: &str) -> u64 {
    let j = summary["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["stage"] == stage)
        .unwrap();
    j["end_ms"].as_u64().unwrap_or(0) - j["start_ms"].as_u64().unwrap_or(0)
}

#[test]
fn a_new_video_is_added_to_the_search_index_and_videos_know_their_related_ones() {
    if !tool("ffmpeg") && !required("search_library", "ffmpeg")
        || !tool("espeak-ng") && !required("search_library", "espeak-ng")
    {
        return;
    }
    let p = Project::new(PIPELINE, &[]);
    add_video(&p, 0);
    add_video(&p, 1);
    let Some(s) = p.run_with_models("search_library") else {
        return;
    };
    let b = read_json(&p, "output/search/build.json");
    assert_eq!(b["from"], "scratch", "{b}");
    assert_eq!(strings(&b["added"]).len(), 2, "{b}");
    eprintln!("2 videos: search.index {} ms", ms(&s, "search"));

    // A third video: embedded alone, its documents alone added to the index.
    add_video(&p, 2);
    let (code, s) = p.run(&[]);
    assert_eq!(code, 0, "{s}");
    let embedded: Vec<String> = ran(&s)
        .into_iter()
        .filter(|(st, _)| st == "embed")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(embedded, vec!["input/pizza.mp4".to_string()], "{s}");
    let b = read_json(&p, "output/search/build.json");
    eprintln!(
        "3rd video: search.index {} ms, build.json {b}",
        ms(&s, "search")
    );
    assert_eq!(b["from"], "previous", "{b}");
    assert_eq!(strings(&b["added"]), vec!["pizza"], "{b}");
    let mut reused = strings(&b["reused"]);
    reused.sort();
    assert_eq!(reused, vec!["backup", "bread"], "{b}");
    assert!(strings(&b["removed"]).is_empty(), "{b}");
    let lib = read_json(&p, "output/search/library.json");
    let pizza = lib["videos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["folder"] == "pizza")
        .unwrap();
    assert_eq!(b["added_passages"], pizza["count"], "{b} {pizza}");

    // Every video is found, the old ones and the new one, in other words.
    for (name, _, query) in VIDEOS {
        let out = p.vsum(&["search", "-m", "pipeline.yaml", query, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!(out.status.code(), Some(0), "{query}: {v} {}", stderr(&out));
        assert_eq!(
            v["hits"][0]["source"],
            format!("input/{name}.mp4"),
            "{query}: {v}"
        );
    }

    // Related videos: never the video itself, most similar first, and the two cooking
    // videos are each other's nearest.
    let related = read_json(&p, "output/search/related.json");
    eprintln!("related: {related}");
    for (name, _, _) in VIDEOS {
        let list = related["videos"][name].as_array().unwrap();
        assert!(list.iter().all(|r| r["folder"] != name), "{related}");
        let scores: Vec<f64> = list.iter().map(|r| r["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{related}");
    }
    assert_eq!(
        related["videos"]["bread"][0]["folder"], "pizza",
        "{related}"
    );
    assert_eq!(
        related["videos"]["pizza"][0]["folder"], "bread",
        "{related}"
    );
    // Each video's own related.json, beside its knowledge file, links from its folder.
    let own = read_json(&p, "output/bread/related/related.json");
    assert_eq!(own["video"], "bread", "{own}");
    assert_eq!(own["related"][0]["folder"], "pizza", "{own}");
    assert_eq!(
        own["related"][0]["page"], "../../pizza/summary/summary.html",
        "{own}"
    );
    assert!(
        p.path()
            .join("output/bread/related")
            .join(own["related"][0]["page"].as_str().unwrap())
            .is_file(),
        "the link resolves from the video's folder: {own}"
    );
    assert!(
        p.read("output/bread/related/related.md")
            .contains("](../../pizza/summary/summary.html)")
    );
    // ... and the report shows them: the cards, INDEX.md, index.json, the video pages.
    let index = read_json(&p, "output/index/index.json");
    let bread = index
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["folder"] == "bread")
        .unwrap();
    assert_eq!(bread["related"][0]["title"], pizza["title"], "{bread}");
    assert_eq!(
        bread["related"][0]["page"], "pizza/summary/summary.html",
        "{bread}"
    );
    let md = p.read("output/INDEX.md");
    assert!(md.contains("| Related |"), "{md}");
    let html = p.read("output/index.html").replace("&#x2f;", "/");
    assert!(
        html.contains(r#"Related: <a href="pizza/summary/summary.html">"#),
        "{html}"
    );
    let js = p.read("output/related.js");
    assert!(js.contains("\"bread/summary/summary.html\""), "{js}");
    let page = p
        .read("output/bread/summary/summary.html")
        .replace("&#x2f;", "/");
    assert!(
        page.contains(r#"<script src="../../related.js">"#),
        "{page}"
    );
    // The page, as a browser shows it: its related videos, linked relative to it.
    let Some(browser) = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| tool(b))
    else {
        required("search_library", "chromium");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!(
            "file://{}",
            p.path().join("output/bread/summary/summary.html").display()
        ))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let shown = dom
        .split_once(r#"<div id="related">"#)
        .map(|(_, rest)| rest.split_once("</div>").map_or(rest, |(a, _)| a))
        .unwrap_or_default();
    assert!(
        shown.contains(r#"<a href="../../pizza/summary/summary.html">pizza</a>"#),
        "the page shows no related video: {shown:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
