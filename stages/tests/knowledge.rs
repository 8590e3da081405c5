//! Knowledge files from fixed inputs: the Markdown is a reviewed snapshot (set
//! UPDATE_EXPECT=1 to rewrite after a deliberate change), chapters follow the cuts,
//! objects land in the right chapter, and missing inputs are stated, not fatal.

use std::path::Path;

use serde_json::json;
use vsum_stages::knowledge::compose::{Inputs, Meta, Params, compose};
use vsum_stages::knowledge::model::{Provenance, Summary};
use vsum_stages::knowledge::render;

fn v<T: serde::de::DeserializeOwned>(j: serde_json::Value) -> T {
    serde_json::from_value(j).unwrap()
}

fn check_snapshot(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_EXPECT").is_some() || !path.exists() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        got, want,
        "{name} changed; review and rerun with UPDATE_EXPECT=1 if intended"
    );
}

fn meeting() -> Inputs {
    Inputs {
        probe: Some(v(json!({"duration": 90.0, "video_stream": 0,
            "streams": [{"index": 0, "kind": "video", "width": 1280, "height": 720, "rotation": 0}]}))),
        scenes: Some(v(json!({"scenes": [
            {"index": 0, "start": 0.0, "end": 30.0},
            {"index": 1, "start": 30.0, "end": 60.0},
            {"index": 2, "start": 60.0, "end": 90.0}]}))),
        keyframes: Some((
            v(json!({"keyframes": [
            {"scene": 0, "time": 15.0, "file": "scene-000.jpg"},
            {"scene": 1, "time": 45.0, "file": "scene-001.jpg"},
            {"scene": 2, "time": 75.0, "file": "scene-002.jpg"}]})),
            "keyframes".into(),
        )),
        transcript: Some(v(json!({"language": "en", "has_audio": true, "segments": [
            {"start": 1.0, "end": 9.0, "text": "Good morning everyone. The release candidate is ready for testing."},
            {"start": 10.0, "end": 20.0, "text": "Please test the release candidate on every platform."},
            {"start": 31.0, "end": 40.0, "text": "The database backup runs tonight."},
            {"start": 41.0, "end": 58.0, "text": "Check the backup logs tomorrow morning."},
            {"start": 61.0, "end": 80.0, "text": "Finally, the release notes need a review before Friday."}]}))),
        audio: None,
        objects: Some(v(json!({"scenes": [
            {"scene": 0, "objects": [{"name": "person", "count": 2, "max_confidence": 0.9}]},
            {"scene": 1, "objects": [{"name": "laptop", "count": 1, "max_confidence": 0.7}]},
            {"scene": 2, "objects": []}]}))),
        ocr: None,
        sentences: None,
    }
}

fn build(inputs: &Inputs, chapter_secs: f64) -> Summary {
    let meta = Meta {
        title_fallback: "weekly-sync".into(),
        source: "videos/weekly-sync.mp4".into(),
        provenance: Provenance {
            vsum_version: "0.1.0".into(),
            ..Provenance::default()
        },
    };
    let params = Params {
        chapter_secs,
        summary_sentences: Some(3),
        keywords: 5,
        ..Params::default()
    };
    compose(inputs, &meta, &params)
}

#[test]
fn markdown_of_a_fixed_meeting_matches_the_snapshot() {
    let s = build(&meeting(), 30.0);
    check_snapshot("weekly-sync.md", &render::summary_md(&s).unwrap());
}

#[test]
fn chapters_follow_cuts_and_hold_their_sentences_and_objects() {
    let s = build(&meeting(), 30.0);
    assert_eq!(s.chapters.len(), 3);
    assert_eq!((s.chapters[1].start, s.chapters[1].end), (30.0, 60.0));
    assert!(
        s.chapters[1].text.contains("database backup"),
        "{:?}",
        s.chapters[1]
    );
    assert!(!s.chapters[0].text.contains("backup"));
    assert_eq!(s.chapters[0].objects[0].name, "person");
    assert_eq!(s.chapters[1].objects[0].name, "laptop");
    assert_eq!(
        s.chapters[1].keyframe.as_deref(),
        Some("../keyframes/scene-001.jpg")
    );
    assert_eq!(s.summary.len(), 3);
    assert!(
        s.summary
            .iter()
            .any(|l| l.text.contains("release candidate")),
        "{:?}",
        s.summary
    );
    assert!(
        s.keywords.contains(&"release candidate".to_string()),
        "{:?}",
        s.keywords
    );
    assert_eq!(s.resolution.as_deref(), Some("1280x720"));
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    // Longer chapters merge scenes.
    let s = build(&meeting(), 60.0);
    assert_eq!(s.chapters.len(), 2, "{:?}", s.chapters);
    assert_eq!(s.chapters[0].scenes, vec![0, 1]);
}

#[test]
fn missing_audio_cuts_and_detections_are_stated() {
    let inputs = Inputs {
        probe: Some(v(json!({"duration": 12.0}))),
        scenes: Some(v(
            json!({"scenes": [{"index": 0, "start": 0.0, "end": 12.0}]}),
        )),
        transcript: Some(v(
            json!({"has_audio": false, "reason": "no audio stream", "segments": []}),
        )),
        objects: Some(v(json!({"scenes": [{"scene": 0, "objects": []}]}))),
        ..Inputs::default()
    };
    let s = build(&inputs, 120.0);
    assert_eq!(s.chapters.len(), 1);
    assert!(s.transcript.is_empty() && s.summary.is_empty());
    let notes = s.notes.join(" | ");
    assert!(
        notes.contains("No audio track (no audio stream)"),
        "{notes}"
    );
    assert!(notes.contains("No scene cuts"), "{notes}");
    assert!(notes.contains("No objects were detected"), "{notes}");

    // What decoding had to do reaches the reader, counted.
    let mut inputs = meeting();
    inputs.transcript.as_mut().unwrap().notes = v(json!([
        {"kind": "repeat_dropped", "at": 3.0, "detail": "x"},
        {"kind": "repeat_dropped", "at": 9.0, "detail": "y"},
        {"kind": "fallback", "at": 12.0, "detail": "z"}]));
    let decoded = build(&inputs, 30.0);
    assert!(
        decoded
            .notes
            .iter()
            .any(|n| n.contains("fallback ×1, repeat dropped ×2")),
        "{:?}",
        decoded.notes
    );
    let md = render::summary_md(&s).unwrap();
    assert!(md.contains("_No speech to summarise._"), "{md}");

    // Nothing upstream at all still gives a valid (empty) summary.
    let s = build(&Inputs::default(), 120.0);
    assert_eq!(s.chapters.len(), 1);
    assert!(s.notes.iter().any(|n| n.contains("no transcription stage")));
    render::summary_html(&s, None, None).unwrap();
}

#[test]
fn html_escapes_transcript_text() {
    let mut inputs = meeting();
    inputs.transcript = Some(v(json!({"language": "en", "has_audio": true,
        "segments": [{"start": 0.0, "end": 2.0, "text": "<script>alert(1)</script> & more."}]})));
    let html = render::summary_html(&build(&inputs, 30.0), None, None).unwrap();
    assert!(!html.contains("<script>alert(1)"), "unescaped text in HTML");
    assert!(
        html.contains("&lt;script&gt;alert(1)"),
        "escaped text is still shown"
    );
    assert!(html.contains("&amp; more."));
}

#[test]
fn the_documented_json_schema_is_current() {
    let schema = schemars::schema_for!(Summary);
    let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../doc/summary.schema.json");
    if std::env::var_os("UPDATE_EXPECT").is_some() || !path.exists() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "doc/summary.schema.json is stale: UPDATE_EXPECT=1"
    );
}

#[test]
fn the_search_data_in_the_report_is_json_that_cannot_break_out_of_its_script() {
    let ctx = minijinja::context! {
        title => "t",
        videos => Vec::<serde_json::Value>::new(),
        search => vec![json!({"folder": "a", "title": "A", "page": "a/s.html",
            "lines": [{"start": 0.0, "text": "</script><b>x</b> & y"}]})],
        total_duration => 1.0,
        version => "0",
    };
    let html = render::index_html(ctx).unwrap();
    let start = html
        .find(r#"<script id="data" type="application/json">"#)
        .unwrap();
    let rest = &html[start..];
    let body = &rest[rest.find('>').unwrap() + 1..rest.find("</script>").unwrap()];
    let v: serde_json::Value = serde_json::from_str(body).expect("valid JSON, not HTML-escaped");
    assert_eq!(v[0]["lines"][0]["text"], "</script><b>x</b> & y");
    assert!(!html.contains("</script><b>"));
}

/// A talking head (one shot) on three subjects: the chapters follow the words.
#[test]
fn a_talk_without_cuts_gets_chapters_by_topic_with_paragraphs_and_one_bullet_each() {
    let topics: [&[&str]; 3] = [
        &[
            "The database backup starts at midnight.",
            "Each database backup is copied to cold storage.",
            "Storage for the database backup costs little.",
            "A restore drill proves the database backup works.",
            "The restore drill reads the snapshot from storage.",
            "Backup alerts go to the storage team.",
            "Old snapshots leave cold storage after ninety days.",
        ],
        &[
            "The release process begins with a release branch.",
            "The release branch gets a candidate build.",
            "Testers sign off the candidate build.",
            "The release manager tags the release branch.",
            "Release notes list each change in the candidate build.",
            "The release process ends on Thursday.",
            "A rollback plan waits beside every release.",
        ],
        &[
            "Onboarding gives every new hire a mentor.",
            "The mentor meets the new hire each morning.",
            "A new hire gets a laptop and accounts on day one.",
            "The onboarding checklist covers accounts and laptop setup.",
            "A mentor reviews the first pull request of the new hire.",
            "Onboarding ends with a short survey for the new hire.",
            "Mentors share onboarding tips in a monthly meeting.",
        ],
    ];
    let mut segments = Vec::new();
    let mut truth = Vec::new();
    let mut t = 0.0;
    for topic in topics {
        truth.push(t);
        for s in topic {
            segments.push(json!({"start": t, "end": t + 4.5, "text": s}));
            t += 5.0;
        }
    }
    let inputs = Inputs {
        probe: Some(v(json!({"duration": t}))),
        scenes: Some(v(json!({"scenes": [{"index": 0, "start": 0.0, "end": t}]}))),
        transcript: Some(v(
            json!({"language": "en", "has_audio": true, "segments": segments}),
        )),
        ..Inputs::default()
    };
    let meta = Meta {
        title_fallback: "talk".into(),
        source: "talk.mp4".into(),
        provenance: Provenance::default(),
    };
    let s = compose(&inputs, &meta, &Params::default());
    let starts: Vec<f64> = s.chapters.iter().map(|c| c.start).collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    for (got, want) in starts.iter().zip(&truth) {
        assert!((got - want).abs() <= 5.0, "{starts:?} vs {truth:?}");
    }
    assert_eq!(s.chapters[1].cues, vec!["topic"]);
    assert!(
        s.chapters[0].title.starts_with("Database backup"),
        "{}",
        s.chapters[0].title
    );
    assert!(
        s.chapters[1].title.to_lowercase().contains("release"),
        "{}",
        s.chapters[1].title
    );
    assert!(s.chapters[2].keywords.contains(&"new hire".to_string()));
    // Paragraphs of at most 30 s, timed, covering the chapter's text.
    for c in &s.chapters {
        assert!(c.paragraphs.len() >= 2, "{c:?}");
        for p in &c.paragraphs {
            assert!(
                p.start >= c.start - 1.0 && p.end - p.start <= 30.0 + 5.0,
                "{p:?}"
            );
        }
        let joined: Vec<&str> = c.paragraphs.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined.join(" "), c.text);
    }
    // One bullet per chapter, each from its own chapter.
    assert_eq!(s.summary.len(), 3, "{:?}", s.summary);
    for (b, c) in s.summary.iter().zip(&s.chapters) {
        assert!(
            b.start >= c.start - 1.0 && b.start < c.end,
            "{b:?} in {c:?}"
        );
    }
    assert!(
        s.keywords.iter().take(4).any(|k| k == "database backup"),
        "{:?}",
        s.keywords
    );
    let md = render::summary_md(&s).unwrap();
    assert!(md.contains("[0:35] The release process begins"), "{md}");
}
