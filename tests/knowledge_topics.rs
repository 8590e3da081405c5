//! A generated multi-topic talk through the real pipeline (real FFmpeg, Silero VAD and
//! Whisper tiny.en): a talking-head video with no visual cut, nine subjects of about 40 s
//! each, four voices taking turns. Its knowledge must read well: chapters near the true
//! subject changes (lexical topic shifts fused with sentence embeddings), a summary
//! without repeats, and keyphrases that name the subjects; and `vsum search` must find
//! the right video and chapter, in other words or the same.
//!
//! The talk is made once (espeak-ng + FFmpeg, about 15 s) and kept under the target
//! folder, keyed by the generator's version and the script's hash, so reruns and other
//! tests share it. Needs the models installed by `scripts/setup.sh`; without them a
//! developer machine skips loudly and CI (env `CI`) fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// Bump when the way the talk is made changes (the script's text is hashed anyway).
const GENERATOR_VERSION: u32 = 1;

/// (subject's two-word keyphrase, sentences). Each subject has its own vocabulary.
pub const TALK: &[(&str, &[&str])] = &[
    (
        "database backup",
        &[
            "Let us start with the database backup that runs every night at two.",
            "The database backup writes a full snapshot of the customer tables to cold storage.",
            "Each snapshot is encrypted and copied to a second region for safety.",
            "Last month a restore drill proved that the snapshot could be read back.",
            "The restore drill took forty minutes for the largest customer tables.",
            "We want the database backup to finish before the morning traffic arrives.",
            "The storage bill for old snapshots grows, so we delete them after ninety days.",
            "If a database backup fails, the storage team receives an alert.",
        ],
    ),
    (
        "release process",
        &[
            "Next, the release process for the mobile application.",
            "The release process begins when we cut a release branch on Monday.",
            "The release branch gets a candidate build that testers install on their phones.",
            "Testers sign off the candidate build after checking the changelog.",
            "The changelog lists every feature and every fixed crash in the release.",
            "On Thursday the release manager tags the version and submits it to the stores.",
            "The release process also needs screenshots in nine languages.",
            "A rollback plan is ready in case the new version crashes on older phones.",
        ],
    ),
    (
        "new hire",
        &[
            "Now a word about onboarding for every new hire.",
            "Each new hire gets a mentor who meets them every morning in the first week.",
            "On day one the new hire receives a laptop, a badge and a set of accounts.",
            "The onboarding checklist covers email, calendar, and the code repository.",
            "Mentors review the first pull request of their new hire carefully.",
            "By the end of the month the new hire presents a small project to the group.",
            "The onboarding survey asks what confused them during their first weeks.",
            "Last quarter every new hire rated the mentor program very highly.",
        ],
    ),
    (
        "incident response",
        &[
            "Let us talk about incident response and the pager rotation.",
            "During an outage the engineer holding the pager opens an incident channel.",
            "Incident response starts by judging the severity of the outage.",
            "A severity one outage wakes up the escalation manager immediately.",
            "After the outage is fixed, the team writes a blameless postmortem.",
            "Each postmortem lists the timeline, the root cause and the follow up tasks.",
            "Our incident response improved, and the average outage now lasts twenty minutes.",
            "The pager rotation changes every Wednesday at noon.",
        ],
    ),
    (
        "office move",
        &[
            "Then the office move to the new building downtown.",
            "The office move happens over the weekend of the twelfth.",
            "Please pack your desk into the numbered boxes before Friday evening.",
            "The movers carry the boxes, the monitors and the plants on Saturday.",
            "The new building has a garage with bicycle parking and electric chargers.",
            "Your old door keys stop working after the office move.",
            "Reception hands out the new keys and the parking cards on Monday.",
            "Each floor in the new building has a kitchen with a coffee machine.",
        ],
    ),
    (
        "password manager",
        &[
            "A reminder about security training and the password manager.",
            "Everyone must finish the phishing course in the security portal this month.",
            "Phishing emails often fake an urgent invoice or a parcel delivery.",
            "Report a suspicious email with the button in your mail client.",
            "The company password manager stores a unique password for every site.",
            "Turn on two factor login for the password manager with your phone.",
            "Never paste a password into a chat window or a shared document.",
            "The password manager can also share team passwords safely.",
        ],
    ),
    (
        "budget planning",
        &[
            "Now budget planning for the coming year.",
            "Budget planning starts with a spreadsheet from the finance department.",
            "Each department forecasts its salaries, licenses and travel costs.",
            "Finance compares the forecast with the invoices of the last four quarters.",
            "Cloud hosting costs rose by twelve percent, so finance asks for savings.",
            "Budget planning ends with a review by the chief financial officer.",
            "Please send your spreadsheet to finance before the end of October.",
            "Unused travel money does not roll over to the next fiscal year.",
        ],
    ),
    (
        "customer survey",
        &[
            "Let me share the results of the customer survey.",
            "The customer survey went to five thousand customers in September.",
            "Customers rated the checkout page four point two out of five stars.",
            "The most common complaint was slow delivery of parcels abroad.",
            "Support tickets about delivery doubled during the summer sale.",
            "Many customers asked for a dark mode in the shopping application.",
            "The next customer survey will ask about the new loyalty points.",
            "Product managers will read every comment from the customer survey.",
        ],
    ),
    (
        "team offsite",
        &[
            "Finally, the team offsite in the mountains.",
            "The team offsite takes place in a hotel near the lake in June.",
            "We travel by train, and the train tickets are already booked.",
            "On the first afternoon there is a hiking trip to the waterfall.",
            "The evening dinner at the hotel has vegetarian and vegan dishes.",
            "The second day of the team offsite is for planning workshops.",
            "Bring warm clothes, because the mountain nights are cold.",
            "Thank you all, and see you at the team offsite.",
        ],
    ),
];

const VOICES: [&str; 4] = ["en-us", "en-us+f3", "en-gb", "en-us+m3"];
const RATE: u32 = 16_000;
/// Silence between two spoken parts (also between subjects: no pause gives a change away).
const PAUSE_SECS: f64 = 0.6;

/// The talk video and the true subject start times, made once per generator version.
fn talk() -> (PathBuf, Vec<f64>) {
    let script: String = TALK
        .iter()
        .map(|(k, s)| format!("{k}|{}", s.join(" ")))
        .collect::<Vec<_>>()
        .join("\n");
    let hash =
        blake3::hash(format!("{GENERATOR_VERSION}{VOICES:?}{PAUSE_SECS}\n{script}").as_bytes());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("test-media")
        .join(format!(
            "topics-talk-v{GENERATOR_VERSION}-{}",
            &hash.to_hex()[..12]
        ));
    let video = dir.join("talk.mp4");
    let truth = dir.join("truth.json");
    if !(video.is_file() && truth.is_file()) {
        let tmp = tempfile::tempdir_in(dir.parent().map_or(Path::new("."), |p| {
            std::fs::create_dir_all(p).unwrap();
            p
        }))
        .unwrap();
        let mut pcm: Vec<u8> = Vec::new();
        let mut starts = Vec::new();
        let silence = vec![0u8; (PAUSE_SECS * RATE as f64) as usize * 2];
        let mut part = 0;
        for (_, sentences) in TALK {
            starts.push(pcm.len() as f64 / 2.0 / RATE as f64);
            // Two speakers per subject, taking turns across the talk.
            let half = sentences.len() / 2;
            for chunk in [&sentences[..half], &sentences[half..]] {
                let wav = tmp.path().join(format!("{part}.wav"));
                let raw = tmp.path().join(format!("{part}.raw"));
                run_ok(
                    Command::new("espeak-ng")
                        .args(["-v", VOICES[part % VOICES.len()], "-s", "150", "-w"])
                        .arg(&wav)
                        .arg(chunk.join(" ")),
                );
                run_ok(
                    Command::new("ffmpeg")
                        .args(["-v", "error", "-y", "-i"])
                        .arg(&wav)
                        .args(["-f", "s16le", "-ac", "1", "-ar", &RATE.to_string()])
                        .arg(&raw),
                );
                pcm.extend(std::fs::read(&raw).unwrap());
                pcm.extend(&silence);
                std::fs::remove_file(&wav).unwrap();
                std::fs::remove_file(&raw).unwrap();
                part += 1;
            }
        }
        let raw = tmp.path().join("talk.raw");
        std::fs::write(&raw, &pcm).unwrap();
        let secs = pcm.len() as f64 / 2.0 / RATE as f64;
        // A still picture: a talking head without a single cut.
        run_ok(
            Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
                .arg(format!(
                    "color=c=0x336699:size=320x240:rate=5:duration={secs}"
                ))
                .args(["-f", "s16le", "-ac", "1", "-ar", &RATE.to_string(), "-i"])
                .arg(&raw)
                .args([
                    "-map",
                    "0:v",
                    "-map",
                    "1:a",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "ultrafast",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                    "-shortest",
                ])
                .arg(tmp.path().join("talk.mp4")),
        );
        std::fs::write(
            tmp.path().join("truth.json"),
            serde_json::to_string(&starts).unwrap(),
        )
        .unwrap();
        std::fs::remove_file(&raw).unwrap();
        // Another test process may have made it meanwhile: either copy is the same talk.
        let made = tmp.keep();
        if std::fs::rename(&made, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&made);
        }
    }
    let starts: Vec<f64> = serde_json::from_str(&std::fs::read_to_string(&truth).unwrap()).unwrap();
    (video, starts)
}

const PIPELINE: &str = r#"
inputs: [input/]
config: {retries: 0}
stages:
  probe: {uses: media.probe}
  audio: {uses: media.audio}
  vad: {uses: audio.vad, needs: [audio]}
  transcript: {uses: whisper.transcribe, needs: [audio, vad]}
  sentences: {uses: text.sentences, needs: [transcript]}
  scenes: {uses: video.scenes}
  keyframes: {uses: video.keyframes, needs: [scenes]}
  summary:
    uses: knowledge.compose
    needs: [probe, audio, transcript, sentences, scenes, keyframes]
  embed: {uses: text.embed, needs: [summary]}
  search: {uses: search.index, scope: batch, needs: [embed]}
"#;

/// A second, unrelated video in the library, so a hit must find the right one.
fn bread_video(dir: &Path) {
    let wav = dir.join("bread.wav");
    run_ok(
        Command::new("espeak-ng")
            .args(["-s", "150", "-w"])
            .arg(&wav)
            .arg("Today we bake sourdough bread at home. Mix the flour, water and salt, then add the starter. Knead the dough for ten minutes until it is smooth. Let it rise overnight in a warm kitchen. Bake it in a hot oven for forty minutes until the crust is brown."),
    );
    run_ok(
        Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "color=c=0x884422:size=320x240:rate=5",
                "-i",
            ])
            .arg(&wav)
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-shortest",
            ])
            .arg(dir.join("input/bread.mp4")),
    );
    std::fs::remove_file(&wav).unwrap();
}

/// `vsum search` in the project; returns (exit code, answer).
fn search(p: &Project, query: &str) -> (i32, Value) {
    let started = std::time::Instant::now();
    let out = p.vsum(&[
        "search",
        "-m",
        "pipeline.yaml",
        query,
        "--json",
        "--limit",
        "5",
    ]);
    eprintln!(
        "vsum search {:?}: {:.2} s",
        query.chars().take(60).collect::<String>(),
        started.elapsed().as_secs_f64()
    );
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code, v)
}

/// The library answers questions: in other words, in the same words, and not at all
/// when nothing like it was said; odd queries get a message, never a panic.
fn search_finds_the_right_chapter(p: &Project, truth: &[f64]) {
    let subject = |name: &str| {
        let i = TALK.iter().position(|(k, _)| *k == name).unwrap();
        (truth[i], truth.get(i + 1).copied().unwrap_or(f64::MAX))
    };
    let first = |v: &Value| {
        let h = &v["hits"][0];
        (
            h["source"].as_str().unwrap_or("").to_string(),
            h["start"].as_f64().unwrap_or(-1.0),
        )
    };
    // In other words: not one word of the query is in the talk's script.
    let paraphrase = "staff phoned at midnight since servers broke";
    let script = TALK
        .iter()
        .flat_map(|(_, s)| s.iter())
        .map(|s| s.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    let said = word_set(&script);
    let shared: Vec<String> = word_set(paraphrase).intersection(&said).cloned().collect();
    assert!(shared.is_empty(), "the paraphrase shares {shared:?}");
    let (code, v) = search(p, paraphrase);
    assert_eq!(code, 0, "{v}");
    let (source, start) = first(&v);
    let (a, b) = subject("incident response");
    assert_eq!(source, "input/talk.mp4", "{v}");
    assert!(
        start >= a - 5.0 && start < b,
        "rank 1 at {start}, the subject is {a}..{b}: {v}"
    );
    // In the same words.
    let (code, v) = search(p, "the release process begins when we cut a release branch");
    assert_eq!(code, 0, "{v}");
    let (source, start) = first(&v);
    let (a, b) = subject("release process");
    assert_eq!(source, "input/talk.mp4", "{v}");
    assert!(
        start >= a - 5.0 && start < b,
        "rank 1 at {start}, the subject is {a}..{b}: {v}"
    );
    assert!(
        v["hits"][0]["page"]
            .as_str()
            .unwrap()
            .contains("summary.html#t="),
        "{v}"
    );
    // The other video, in its own words.
    let (code, v) = search(p, "how to make bread rise");
    assert_eq!(code, 0, "{v}");
    assert_eq!(first(&v).0, "input/bread.mp4", "{v}");
    // Never said: nothing above the floor, exit 1 like grep.
    let (code, v) = search(p, "quantum entanglement of penguins on jupiter");
    assert_eq!(
        (code, v["hits"].as_array().map(Vec::len)),
        (1, Some(0)),
        "{v}"
    );
    // Odd queries: a message or an answer, never a panic.
    let out = p.vsum(&["search", "-m", "pipeline.yaml", "  "]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("query is empty"), "{}", stderr(&out));
    let long = "budget ".repeat(1500);
    let (code, v) = search(p, &long);
    assert_eq!(code, 0, "a 10,000-character query: {v}");
    let (code, _) = search(p, "会议的预算是多少");
    assert!(code == 0 || code == 1, "non-Latin text: exit {code}");
}

/// Lower-case words of at least three letters: what a reader compares.
fn word_set(s: &str) -> std::collections::BTreeSet<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3)
        .map(str::to_string)
        .collect()
}

#[test]
fn a_multi_topic_talk_gets_topic_chapters_a_summary_without_repeats_and_keyphrases() {
    if !tool("ffmpeg") && !required("knowledge_topics", "ffmpeg")
        || !tool("espeak-ng") && !required("knowledge_topics", "espeak-ng")
    {
        return;
    }
    let (video, truth) = talk();
    let p = Project::new(PIPELINE, &[]);
    std::fs::copy(&video, p.path().join("input/talk.mp4")).unwrap();
    bread_video(p.path());
    if p.run_with_models("knowledge_topics").is_none() {
        return;
    }
    let k: Value = serde_json::from_str(&p.read("output/talk/summary/summary.json")).unwrap();
    let chapters = k["chapters"].as_array().unwrap();
    let starts: Vec<f64> = chapters
        .iter()
        .map(|c| c["start"].as_f64().unwrap())
        .collect();
    let titles: Vec<&str> = chapters
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    let bullets: Vec<(f64, &str)> = k["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["start"].as_f64().unwrap(), l["text"].as_str().unwrap()))
        .collect();
    let keywords: Vec<&str> = k["keywords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    eprintln!("true subject starts: {truth:?}");
    eprintln!("chapter starts:      {starts:?}");
    eprintln!("chapter titles: {titles:#?}");
    eprintln!("keyphrases: {keywords:?}");
    eprintln!("summary: {bullets:#?}");

    // The video has no cut: the chapters come from the words.
    assert!(
        k["notes"].to_string().contains("No scene cuts"),
        "{}",
        k["notes"]
    );
    // As many chapters as subjects, give or take two.
    let n = TALK.len();
    assert!(
        (n - 2..=n + 2).contains(&chapters.len()),
        "{} chapters for {n} subjects: {starts:?}",
        chapters.len()
    );
    // Boundaries near the true changes: most changes found within 10 s, and most chapter
    // starts are at a change.
    let near = |t: f64, set: &[f64]| set.iter().any(|x| (x - t).abs() <= 10.0);
    let found = truth[1..].iter().filter(|t| near(**t, &starts)).count();
    let right = starts[1..].iter().filter(|t| near(**t, &truth)).count();
    assert!(
        found as f64 >= 0.75 * (n - 1) as f64,
        "only {found} of {} subject changes have a chapter start within 10 s: {starts:?} vs {truth:?}",
        n - 1
    );
    assert!(
        right as f64 >= 0.75 * (starts.len() - 1) as f64,
        "only {right} of {} chapter starts are at a subject change: {starts:?} vs {truth:?}",
        starts.len() - 1
    );
    // With sentence embeddings every change is found to about a second: the words say
    // where the subject changes, and where no word is shared, meaning picks the gap.
    // (Lexical alone: 6 of 8 within 1 s, mean error 1.5 s; fused: 8 of 8, 0.4 s.)
    let errors: Vec<f64> = truth[1..]
        .iter()
        .map(|t| {
            starts
                .iter()
                .map(|s| (s - t).abs())
                .fold(f64::MAX, f64::min)
        })
        .collect();
    eprintln!("boundary errors (s): {errors:.2?}");
    assert!(
        errors.iter().all(|e| *e <= 1.5),
        "a subject change more than 1.5 s from a chapter start: {errors:?}"
    );
    for c in chapters {
        let len = c["end"].as_f64().unwrap() - c["start"].as_f64().unwrap();
        assert!(
            (20.0 - 1e-6..=240.0 + 1e-6).contains(&len),
            "chapter length {len}: {c}"
        );
        let paras = c["paragraphs"].as_array().unwrap();
        assert!(
            !paras.is_empty(),
            "a chapter with speech has paragraphs: {c}"
        );
        for para in paras {
            let t = para["start"].as_f64().unwrap();
            assert!(t >= c["start"].as_f64().unwrap() - 2.0 && t < c["end"].as_f64().unwrap());
        }
    }
    assert!(
        chapters[1..]
            .iter()
            .all(|c| c["cues"].to_string().contains("topic"))
    );

    // The summary: one to three bullets per chapter, no two alike.
    let mut per_chapter = vec![0; chapters.len()];
    for (t, _) in &bullets {
        // A sentence belongs to the chapter holding its middle: it may start a little early.
        let c = starts.iter().rposition(|s| *s <= t + 2.0).unwrap_or(0);
        per_chapter[c] += 1;
    }
    assert!(
        per_chapter.iter().all(|n| (1..=3).contains(n)),
        "bullets per chapter: {per_chapter:?}"
    );
    for (i, (_, x)) in bullets.iter().enumerate() {
        for (_, y) in &bullets[i + 1..] {
            let (a, b) = (word_set(x), word_set(y));
            let jaccard = a.intersection(&b).count() as f64 / a.union(&b).count().max(1) as f64;
            assert!(
                jaccard < 0.5,
                "near-duplicate bullets ({jaccard:.2}): {x:?} / {y:?}"
            );
        }
    }

    // Keyphrases: several words, naming the subjects.
    let known: Vec<&str> = TALK.iter().map(|(k, _)| *k).collect();
    let named: Vec<&&str> = keywords
        .iter()
        .filter(|k| known.iter().any(|t| **k == *t || **k == format!("{t}s")))
        .collect();
    assert!(
        named.len() >= 3,
        "keyphrases name too few subjects: {keywords:?}"
    );
    assert!(
        keywords.iter().filter(|k| k.contains(' ')).count() * 2 >= keywords.len(),
        "mostly multi-word keyphrases: {keywords:?}"
    );
    let md = p.read("output/talk/summary/summary.md");
    assert!(md.contains("## Keyphrases"), "{md}");

    search_finds_the_right_chapter(&p, &truth);
}
