//! The HTML report in a real browser (headless Chromium), on generated talking videos
//! whose `output/` folder is moved before it is opened (the pages must not depend on
//! where it was made): the library search hides the cards without a hit and ranks the
//! rest, no page overflows a 390 px phone screen, and a timestamp seeks the player.
//!
//! Needs ffmpeg, espeak-ng, the Whisper model (`vsum models install ...`) and Debian's
//! `chromium`. Outside CI a machine without them skips loudly; in CI (env `CI`) their
//! absence fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

const RELEASE: &str =
    "The release candidate is ready for testing. Please back up the database before Friday.";
const ONBOARDING: &str = "Welcome to the onboarding session. Today we learn the build system.";
/// A long title without a space: it must wrap on a phone, not widen the page.
const LONG: &str = "testing_the_rollout_checklist_recording_final_version_two";

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
    with: {chapter_secs: 1, source: copy}
  index:
    uses: knowledge.index
    scope: batch
    needs: [summary]
    publish: [INDEX.md, index.html]
"#;

/// The report, made once for the tests of this file, its `output/` moved aside.
struct Report {
    _project: Project,
    /// Where `output/` was moved to.
    out: PathBuf,
    browser: &'static str,
}

static REPORT: OnceLock<Option<Report>> = OnceLock::new();

fn report() -> Option<&'static Report> {
    REPORT.get_or_init(make_report).as_ref()
}

fn make_report() -> Option<Report> {
    for t in ["ffmpeg", "espeak-ng"] {
        if !tool(t) && !required("report_browser", t) {
            return None;
        }
    }
    let Some(browser) = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| tool(b))
    else {
        required("report_browser", "chromium");
        return None;
    };
    // Under the target's scratch folder (the report outlives this process's statics,
    // which are never dropped); the last run's is removed first.
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for e in std::fs::read_dir(scratch).unwrap().flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with("report_browser-")
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("report_browser-")
        .tempdir_in(scratch)
        .unwrap();
    let p = Project { dir };
    p.write_manifest(PIPELINE);
    p.write_alerts("disk_free_gb: {warning: null, critical: null}\n");
    let input = p.path().join("input");
    std::fs::create_dir_all(&input).unwrap();
    talking_video(
        &input,
        "release",
        RELEASE,
        &["testsrc", "smptebars", "mandelbrot"],
        4.0,
    );
    talking_video(&input, "onboarding", ONBOARDING, &["rgbtestsrc"], 8.0);
    talking_video(&input, LONG, "", &["testsrc2", "smptehdbars"], 3.0);
    p.run_with_models("report_browser")?;
    // `source: copy`: the source travels inside the output folder.
    assert!(p.path().join("output/release/summary/source.mp4").is_file());
    // Shared: moved somewhere else, the sources left behind.
    let out = p.path().join("shared/library");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::rename(p.path().join("output"), &out).unwrap();
    std::fs::rename(p.path().join("input"), p.path().join("gone")).unwrap();
    Some(Report {
        _project: p,
        out,
        browser,
    })
}

/// Opens `page` (relative to the moved output folder) in a 390 × 844 frame and runs
/// `script` there as the body of `function (w, d, done)`: `w`/`d` are the page's window
/// and document, and `done(value)` hands a value back (as JSON).
fn probe(r: &Report, page: &str, script: &str) -> Value {
    let harness = r
        .out
        .join(format!(".probe-{}.html", page.replace(['/', '.'], "-")));
    std::fs::write(
        &harness,
        format!(
            r#"<!doctype html><html><body>
<iframe id="f" src="{page}" style="width:390px;height:844px;border:0"></iframe>
<pre id="probe"></pre>
<script>
var f = document.getElementById('f');
function done(v) {{ document.getElementById('probe').textContent = JSON.stringify(v); }}
f.addEventListener('load', function () {{
  try {{ (function (w, d, done) {{ {script} }})(f.contentWindow, f.contentDocument, done); }}
  catch (e) {{ done({{ error: String(e) }}); }}
}});
</script></body></html>"#
        ),
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(r.browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // The frame and the page are both file:// pages: let one read the other.
            "--allow-file-access-from-files",
            "--autoplay-policy=no-user-gesture-required",
            "--virtual-time-budget=8000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", harness.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let body = dom
        .split_once(r#"<pre id="probe">"#)
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(b, _)| b.replace("&quot;", "\"").replace("&amp;", "&"))
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
        panic!(
            "no probe result from {page} ({e}): {body}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(v.get("error").is_none(), "{page}: {v}");
    v
}

#[test]
fn a_search_hides_the_cards_without_hits_and_ranks_the_rest() {
    let Some(r) = report() else { return };
    let v = probe(
        r,
        "index.html",
        r#"
        var box = d.getElementById('q'), out = {};
        function shown() {
          return Array.prototype.filter.call(d.querySelectorAll('.card'), function (c) {
            return c.offsetParent !== null;
          }).map(function (c) { return c.dataset.video; });
        }
        function ask(q) { box.value = q; box.dispatchEvent(new w.Event('input')); return shown(); }
        out.all = shown();
        out.candidate = ask('candidate');
        out.marks = Array.prototype.map.call(d.querySelectorAll('.card .hit mark'), function (m) { return m.textContent; });
        out.testing = ask('testing');
        out.inside = ask('andidate');
        out.two = ask('onboarding friday');
        out.cleared = ask('');
        done(out);
        "#,
    );
    let names = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap_or_else(|| panic!("{k}: {v}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let all = names("all");
    assert_eq!(all.len(), 3, "{v}");
    // A spoken word: only its video stays, the word marked in its hit.
    assert_eq!(names("candidate"), ["release"], "{v}");
    assert!(
        names("marks")
            .iter()
            .any(|m| m.eq_ignore_ascii_case("candidate")),
        "{v}"
    );
    // A title outranks a transcript: the video named after testing first, then the one
    // that says it; the third is hidden.
    assert_eq!(names("testing"), [LONG, "release"], "{v}");
    // Whole words only: the inside of a word is no hit.
    assert!(names("inside").is_empty(), "{v}");
    // Either word is a hit; each video here holds one.
    let mut two = names("two");
    two.sort();
    assert_eq!(two, ["onboarding", "release"], "{v}");
    // A cleared query shows every card again, in the library's order.
    assert_eq!(names("cleared"), all, "{v}");
}

#[test]
fn no_page_overflows_a_390_px_phone() {
    let Some(r) = report() else { return };
    let script = r#"
        done({ iw: w.innerWidth, sw: d.documentElement.scrollWidth, cw: d.documentElement.clientWidth });
    "#;
    let mut pages = vec!["index.html".to_string()];
    for v in ["release", "onboarding", LONG] {
        pages.push(format!("{v}/summary/summary.html"));
    }
    for page in &pages {
        let v = probe(r, page, script);
        assert_eq!(v["iw"], 390, "{page}: {v}");
        assert!(
            v["sw"].as_i64().unwrap() <= v["cw"].as_i64().unwrap(),
            "{page} overflows a 390 px screen: {v}"
        );
    }
}

#[test]
fn a_timestamp_seeks_the_player_and_the_page_links_back_to_the_library() {
    let Some(r) = report() else { return };
    let v = probe(
        r,
        "release/summary/summary.html",
        r#"
        var p = d.getElementById('player'), tries = 0;
        function go() {
          if (p.readyState < 1 && tries++ < 60) { setTimeout(go, 100); return; }
          var links = Array.prototype.slice.call(d.querySelectorAll('[data-t]'));
          var a = links.filter(function (l) { return parseFloat(l.dataset.t) > 3; }).pop();
          var before = p.currentTime;
          a.click();
          done({ ready: p.readyState, duration: p.duration, before: before, t: parseFloat(a.dataset.t),
                 now: p.currentTime, paused: p.paused, src: p.getAttribute('src'), poster: p.poster,
                 back: d.querySelector('a.back').href, links: links.length });
        }
        go();
        "#,
    );
    assert!(v["ready"].as_i64().unwrap() >= 1, "the source plays: {v}");
    assert_eq!(v["src"], "source.mp4", "{v}");
    assert!(v["links"].as_i64().unwrap() >= 3, "{v}");
    let (t, now) = (v["t"].as_f64().unwrap(), v["now"].as_f64().unwrap());
    assert!(v["before"].as_f64().unwrap() < 1.0, "{v}");
    assert!(
        (now - t).abs() < 0.5,
        "the player moved to {now}, not {t}: {v}"
    );
    assert_eq!(v["paused"], false, "and plays: {v}");
    let file = |url: &Value| PathBuf::from(url.as_str().unwrap().trim_start_matches("file://"));
    let poster = file(&v["poster"]);
    assert!(
        poster.starts_with(&r.out) && poster.is_file(),
        "the poster is a keyframe inside the output folder: {v}"
    );
    assert_eq!(file(&v["back"]), r.out.join("index.html"), "{v}");
}
