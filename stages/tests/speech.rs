//! Speech stages on real models and real (synthetic) speech: espeak-ng speaks known
//! sentences, `audio.vad` and `whisper.transcribe` (with the tiny.en model converted by
//! `vsum models install`) must find and transcribe them; silence and tones must give
//! nothing; subtitles must parse back; a 10-video batch through the engine must load
//! the model once. Tests that need models skip loudly without them, and fail in CI.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::*;
use vsum_engine::config::Config;
use vsum_engine::events::{Event, EventSink};
use vsum_engine::run::{self, RunOptions};
use vsum_engine::stage::{CheckEnv, Resources, Scope, StageKind};
use vsum_engine::store::{LockMode, Store};
use vsum_models::ModelsManifest;
use vsum_stages::speech::transcript::Transcript;
use vsum_stages::speech::vad::VadFile;

const SENTENCES: [&str; 5] = [
    "Please remember to bring your laptop to the meeting tomorrow.",
    "We will review the quarterly budget on Friday afternoon.",
    "Machine learning models can transcribe speech into text.",
    "Thank you for watching this video.",
    "The weather today is sunny with a light breeze.",
];

/// A folder holding `audio.wav` made of `samples`.
fn audio_dir(root: &Path, name: &str, samples: &[i16]) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    write_wav(&d.join("audio.wav"), samples);
    d
}

fn transcript(out: &Path) -> Transcript {
    serde_json::from_slice(&std::fs::read(out.join("transcript.json")).unwrap()).unwrap()
}

fn vad_file(out: &Path) -> VadFile {
    serde_json::from_slice(&std::fs::read(out.join("vad.json")).unwrap()).unwrap()
}

fn assert_well_formed(t: &Transcript) {
    let mut prev = 0.0;
    for s in &t.segments {
        assert!(
            s.start >= prev && s.end >= s.start && s.end <= t.duration + 1e-9,
            "times not monotonic/in range: {t:#?}"
        );
        prev = s.end;
    }
}

#[test]
fn transcribes_known_sentences_with_low_word_error_rate() {
    if !ready("transcribes_known_sentences_with_low_word_error_rate") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (samples, _) = sentences(tmp.path(), &SENTENCES, 0.5, 0.8);
    let audio = audio_dir(tmp.path(), "audio", &samples);
    let reference = SENTENCES.join(" ");
    let (out, r) = run_stage(
        &whisper(),
        json!({}),
        &[("audio", &audio)],
        tmp.path(),
        None,
    );
    r.unwrap();
    let t = transcript(out.path());
    let w = wer(&reference, &t.text());
    eprintln!("WER {w:.3}: {}", t.text());
    assert!(w <= 0.20, "word error rate {w:.2} > 0.20: {:?}", t.text());
    // The encoder's large products go through ggml's BLAS backend to vsum's own
    // cblas_sgemm (speech/blas.rs): a build without it is several times slower.
    assert!(
        vsum_stages::speech::blas::products() > 0,
        "whisper.cpp never called vsum's cblas_sgemm: is ggml-blas missing from the build?"
    );
    assert_eq!(t.language.as_deref(), Some("en"));
    assert_eq!(t.model, "whisper-tiny.en");
    assert!(!t.vad);
    assert_well_formed(&t);
    for s in &t.segments {
        assert!(
            s.avg_logprob < 0.0 && (0.0..=1.0).contains(&s.no_speech_prob),
            "{s:?}"
        );
    }
    let txt = std::fs::read_to_string(out.path().join("transcript.txt")).unwrap();
    assert!(wer(&reference, &txt) <= 0.20, "{txt}");
}

#[test]
fn vad_finds_the_speech_and_whisper_decodes_only_there_with_absolute_times() {
    if !ready("vad_finds_the_speech_and_whisper_decodes_only_there_with_absolute_times") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // 6 s of silence, two sentences, 8 s of a tone, one more sentence, silence.
    let (a, _) = sentences(tmp.path(), &SENTENCES[..2], 6.0, 0.5);
    let (b, _) = sentences(tmp.path(), &SENTENCES[2..3], 0.0, 3.0);
    let mut samples = a.clone();
    let tone_start = samples.len() as f64 / 16_000.0;
    samples.extend(tone(440.0, 8.0, 0.3));
    let third = samples.len() as f64 / 16_000.0;
    samples.extend(b);
    let audio = audio_dir(tmp.path(), "audio", &samples);

    let (vad_out, r) = run_stage(&vad(), json!({}), &[("audio", &audio)], tmp.path(), None);
    r.unwrap();
    let v = vad_file(vad_out.path());
    assert!(!v.segments.is_empty());
    let first = &v.segments[0];
    assert!(
        (5.7..6.4).contains(&first.start),
        "speech starts near 6 s: {v:#?}"
    );
    for s in &v.segments {
        let in_tone = s.start > tone_start + 0.3 && s.end < third - 0.3;
        assert!(!in_tone, "a speech segment inside the tone: {s:?}");
        assert!(s.probability > 0.5);
    }
    assert!(
        v.segments.iter().any(|s| s.start >= third - 0.5),
        "the last sentence is found: {v:#?}"
    );
    assert!(
        v.speech_ratio > 0.2 && v.speech_ratio < 0.7,
        "{}",
        v.speech_ratio
    );

    let (out, r) = run_stage(
        &whisper(),
        json!({"word_timestamps": true}),
        &[("audio", &audio), ("vad", vad_out.path())],
        tmp.path(),
        None,
    );
    r.unwrap();
    let t = transcript(out.path());
    assert!(t.vad);
    assert_well_formed(&t);
    let reference = SENTENCES[..3].join(" ");
    let w = wer(&reference, &t.text());
    assert!(w <= 0.20, "WER {w:.2}: {}", t.text());
    // Absolute times: nothing before the speech, the last sentence after the tone.
    assert!(t.segments[0].start >= 5.5, "{:?}", t.segments[0]);
    let last = t.segments.last().unwrap();
    assert!(
        last.start >= third - 1.0,
        "{last:?} (third sentence at {third:.2} s)"
    );
    // Every segment lies within a VAD region (with padding tolerance).
    for s in &t.segments {
        let mid = (s.start + s.end) / 2.0;
        assert!(
            v.segments
                .iter()
                .any(|r| mid >= r.start - 0.5 && mid <= r.end + 0.5),
            "{s:?} outside speech"
        );
        let words = s.words.as_ref().expect("word timestamps");
        assert!(!words.is_empty());
        let mut prev = s.start;
        for w in words {
            assert!(
                w.start >= prev && w.end >= w.start && w.end <= s.end,
                "{w:?} in {s:?}"
            );
            assert!((0.0..=1.0).contains(&w.probability));
            prev = w.end;
        }
    }
    let all_words: Vec<String> = t
        .segments
        .iter()
        .flat_map(|s| s.words.clone().unwrap())
        .map(|w| w.text)
        .collect();
    assert!(
        wer(&reference, &all_words.join(" ")) <= 0.20,
        "{all_words:?}"
    );
}

#[test]
fn silence_noise_and_tones_give_no_text() {
    if !ready("silence_noise_and_tones_give_no_text") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Faint noise is loud enough (-46 dBFS) that Whisper really decodes it.
    let mut seed = 1u32;
    let noise: Vec<i16> = (0..16_000 * 10)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((seed >> 16) as i16) / 200
        })
        .collect();
    let chord: Vec<i16> = tone(262.0, 10.0, 0.2)
        .iter()
        .zip(tone(330.0, 10.0, 0.2))
        .zip(tone(392.0, 10.0, 0.2))
        .map(|((a, b), c)| a + b + c)
        .collect();
    let cases = [
        ("silence", silence(10.0)),
        ("noise", noise),
        ("tone", tone(440.0, 10.0, 0.5)),
        ("chord", chord),
    ];
    for (name, samples) in cases {
        let audio = audio_dir(tmp.path(), name, &samples);
        let (vad_out, r) = run_stage(&vad(), json!({}), &[("audio", &audio)], tmp.path(), None);
        r.unwrap();
        let v = vad_file(vad_out.path());
        assert!(v.segments.is_empty(), "{name}: VAD found speech: {v:#?}");
        assert_eq!(v.speech_ratio, 0.0);
        // Without VAD, Whisper itself must not invent text.
        let (out, r) = run_stage(
            &whisper(),
            json!({}),
            &[("audio", &audio)],
            tmp.path(),
            None,
        );
        r.unwrap();
        let t = transcript(out.path());
        assert!(
            t.segments.is_empty(),
            "{name}: invented text {:?}",
            t.text()
        );
        assert!(t.reason.is_some());
        assert_eq!(
            std::fs::read_to_string(out.path().join("transcript.srt")).unwrap(),
            ""
        );
        // With VAD it does not even decode.
        let (out, r) = run_stage(
            &whisper(),
            json!({}),
            &[("audio", &audio), ("vad", vad_out.path())],
            tmp.path(),
            None,
        );
        r.unwrap();
        let t = transcript(out.path());
        assert!(t.segments.is_empty());
        assert_eq!(t.reason.as_deref(), Some("audio.vad found no speech"));
    }
}

/// Parses SubRip strictly: (start, end, text) per cue.
fn parse_srt(s: &str) -> Vec<(f64, f64, String)> {
    let t = |x: &str| -> f64 {
        let (hms, ms) = x
            .split_once(',')
            .expect("SRT uses a comma before milliseconds");
        let p: Vec<f64> = hms.split(':').map(|v| v.parse().unwrap()).collect();
        assert_eq!((p.len(), ms.len()), (3, 3), "{x}");
        p[0] * 3600.0 + p[1] * 60.0 + p[2] + ms.parse::<f64>().unwrap() / 1000.0
    };
    s.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .enumerate()
        .map(|(i, b)| {
            let mut lines = b.lines();
            assert_eq!(lines.next().unwrap(), (i + 1).to_string());
            let (a, z) = lines.next().unwrap().split_once(" --> ").unwrap();
            let text: Vec<&str> = lines.collect();
            assert!(!text.is_empty() && text.iter().all(|l| !l.trim().is_empty()));
            (t(a), t(z), text.join("\n"))
        })
        .collect()
}

/// Parses WebVTT strictly.
fn parse_vtt(s: &str) -> Vec<(f64, f64, String)> {
    let body = s.strip_prefix("WEBVTT\n\n").expect("WEBVTT header");
    let t = |x: &str| -> f64 {
        let (hms, ms) = x
            .split_once('.')
            .expect("VTT uses a dot before milliseconds");
        let p: Vec<f64> = hms.split(':').map(|v| v.parse().unwrap()).collect();
        p[0] * 3600.0 + p[1] * 60.0 + p[2] + ms.parse::<f64>().unwrap() / 1000.0
    };
    body.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let mut lines = b.lines();
            let (a, z) = lines.next().unwrap().split_once(" --> ").unwrap();
            let text: Vec<&str> = lines.collect();
            assert!(text.iter().all(|l| !l.contains("-->")));
            (t(a), t(z), text.join("\n"))
        })
        .collect()
}

#[test]
fn srt_and_vtt_parse_back() {
    if !ready("srt_and_vtt_parse_back") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (samples, _) = sentences(tmp.path(), &SENTENCES[..3], 1.0, 1.0);
    let audio = audio_dir(tmp.path(), "audio", &samples);
    let (out, r) = run_stage(
        &whisper(),
        json!({}),
        &[("audio", &audio)],
        tmp.path(),
        None,
    );
    r.unwrap();
    let t = transcript(out.path());
    assert!(!t.segments.is_empty());
    let srt_text = std::fs::read_to_string(out.path().join("transcript.srt")).unwrap();
    let vtt_text = std::fs::read_to_string(out.path().join("transcript.vtt")).unwrap();
    for cues in [parse_srt(&srt_text), parse_vtt(&vtt_text)] {
        assert_eq!(cues.len(), t.segments.len());
        for (c, s) in cues.iter().zip(&t.segments) {
            assert!(
                (c.0 - s.start).abs() < 0.0011 && (c.1 - s.end).abs() < 0.0011,
                "{c:?} vs {s:?}"
            );
            assert_eq!(c.2, s.text);
        }
    }
    // A third-party parser (FFmpeg's subtitle demuxers) reads both and converts each
    // into the other with the same number of cues.
    for (input, fmt, ext) in [
        ("transcript.srt", "webvtt", "vtt"),
        ("transcript.vtt", "srt", "srt"),
    ] {
        let dest = out.path().join(format!("ffmpeg.{ext}"));
        let o = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-i"])
            .arg(out.path().join(input))
            .args(["-f", fmt])
            .arg(&dest)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ffmpeg could not read {input}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = std::fs::read_to_string(&dest).unwrap();
        assert_eq!(
            text.matches(" --> ").count(),
            t.segments.len(),
            "{input} -> {ext}:\n{text}"
        );
    }
}

#[test]
fn a_video_without_audio_gets_an_empty_transcript_with_the_reason() {
    // No model is needed: nothing is decoded.
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("audio");
    std::fs::create_dir_all(&up).unwrap();
    std::fs::write(
        up.join("audio.json"),
        br#"{"has_audio": false, "reason": "the video has no audio stream"}"#,
    )
    .unwrap();
    let (out, r) = run_stage(&whisper(), json!({}), &[("audio", &up)], tmp.path(), None);
    r.unwrap();
    let t = transcript(out.path());
    assert!(!t.has_audio && t.segments.is_empty());
    assert_eq!(t.reason.as_deref(), Some("the video has no audio stream"));
    assert_eq!(
        std::fs::read_to_string(out.path().join("transcript.txt")).unwrap(),
        "[no speech: the video has no audio stream]\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("transcript.vtt")).unwrap(),
        "WEBVTT\n\n"
    );
    let (out, r) = run_stage(&vad(), json!({}), &[("audio", &up)], tmp.path(), None);
    r.unwrap();
    let v = vad_file(out.path());
    assert!(!v.has_audio && v.segments.is_empty());
    // And no upstream audio at all is a clear error.
    let empty = tmp.path().join("nothing");
    std::fs::create_dir_all(&empty).unwrap();
    let (_, r) = run_stage(
        &whisper(),
        json!({}),
        &[("probe", &empty)],
        tmp.path(),
        None,
    );
    let e = r.unwrap_err();
    assert!(
        e.message.contains("audio.wav") && e.hint.as_deref().unwrap().contains("needs"),
        "{e:?}"
    );
}

#[test]
fn unsupported_language_codes_are_refused() {
    let env = CheckEnv {
        stage_id: "asr",
        scope: Scope::Video,
        needs: &[],
    };
    for bad in ["xx", "klingon", "e n", ""] {
        let e = whisper()
            .check(&json!({"language": bad}), &env)
            .unwrap_err();
        assert_eq!(e[0].path, vec!["language"]);
        assert!(e[0].message.contains("unsupported language"), "{e:?}");
        assert!(e[0].hint.as_deref().unwrap().contains("auto"));
    }
    for good in ["auto", "en", "de", "ja"] {
        whisper().check(&json!({"language": good}), &env).unwrap();
    }
    let e = whisper()
        .check(&json!({"languag": "en"}), &env)
        .unwrap_err();
    assert!(e[0].message.contains("unknown field"), "{e:?}");
}

#[test]
fn an_english_only_model_refuses_other_languages() {
    if !ready("an_english_only_model_refuses_other_languages") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (samples, _) = sentences(tmp.path(), &SENTENCES[..1], 0.2, 0.2);
    let audio = audio_dir(tmp.path(), "audio", &samples);
    let (_, r) = run_stage(
        &whisper(),
        json!({"language": "de"}),
        &[("audio", &audio)],
        tmp.path(),
        None,
    );
    let e = r.unwrap_err();
    assert!(
        e.message.contains("English-only") && e.message.contains("'de'"),
        "{e:?}"
    );
    assert!(e.hint.unwrap().contains("whisper-base"));
}

fn installed_model_path(name: &str) -> PathBuf {
    let dir = models();
    let m = ModelsManifest::load(&dir).unwrap();
    dir.path(&m.models[name].file)
}

#[test]
fn corrupt_and_wrong_format_model_files_are_refused() {
    if !ready("corrupt_and_wrong_format_model_files_are_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (samples, _) = sentences(tmp.path(), &SENTENCES[..1], 0.2, 0.2);
    let audio = audio_dir(tmp.path(), "audio", &samples);
    let good = std::fs::read(installed_model_path("whisper-tiny.en")).unwrap();
    std::fs::write(tmp.path().join("truncated.bin"), &good[..good.len() / 2]).unwrap();
    std::fs::write(tmp.path().join("header-only.bin"), &good[..48]).unwrap();
    std::fs::write(
        tmp.path().join("random.bin"),
        (0..100_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::copy(
        installed_model_path("silero-vad"),
        tmp.path().join("silero.onnx"),
    )
    .unwrap();
    let cases = [
        ("truncated.bin", "not a complete ggml Whisper model"),
        ("header-only.bin", "not a complete ggml Whisper model"),
        ("random.bin", "wrong magic"),
        ("silero.onnx", "wrong magic"),
        ("missing.bin", "does not exist"),
    ];
    for (file, want) in cases {
        let mut resources = Resources::new(2, EventSink::new());
        let (_, r) = run_stage(
            &whisper(),
            json!({"model": file}),
            &[("audio", &audio)],
            tmp.path(),
            Some(&mut resources),
        );
        let e = r.unwrap_err();
        assert!(e.message.contains(want), "{file}: {e:?}");
        assert!(!e.retryable, "{file}: a bad model is not worth a retry");
    }
    // An installed model of the wrong kind.
    let (_, r) = run_stage(
        &whisper(),
        json!({"model": "silero-vad"}),
        &[("audio", &audio)],
        tmp.path(),
        None,
    );
    assert!(
        r.unwrap_err()
            .message
            .contains("needs a whisper-ggml model")
    );
    // A whole, good model given by path works.
    std::fs::write(tmp.path().join("mine.bin"), &good).unwrap();
    let (out, r) = run_stage(
        &whisper(),
        json!({"model": "mine.bin"}),
        &[("audio", &audio)],
        tmp.path(),
        None,
    );
    r.unwrap();
    assert_eq!(transcript(out.path()).model, "mine.bin");
}

fn make_videos(dir: &Path, n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir.join("input")).unwrap();
    let mut texts = Vec::new();
    for i in 0..n {
        let text = SENTENCES[i % SENTENCES.len()];
        let wav = dir.join(format!("v{i}.wav"));
        speak(text, &wav);
        let o = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                &format!("color=c=0x{:06x}:s=64x48:r=5", i * 40_000),
            ])
            .arg("-i")
            .arg(&wav)
            .args([
                "-shortest",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "aac",
            ])
            .arg(dir.join(format!("input/clip{i:02}.mp4")))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        texts.push(text.to_string());
    }
    texts
}

const BATCH_MANIFEST: &str = r#"name: batch
inputs: [input/]
output: out/
stages:
  audio:
    run: [ffmpeg, -nostdin, -v, error, -i, "{video}", -vn, -ac, "1", -ar, "16000", "{out}/audio.wav"]
    outputs: [audio.wav]
  asr:
    uses: whisper.transcribe
    needs: [audio]
"#;

#[test]
fn a_batch_of_ten_videos_loads_the_model_once() {
    if !ready("a_batch_of_ten_videos_loads_the_model_once") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let texts = make_videos(tmp.path(), 10);
    std::fs::write(tmp.path().join("m.yaml"), BATCH_MANIFEST).unwrap();
    let registry = vsum_stages::registry(&models());
    let m = vsum_engine::manifest::load(&tmp.path().join("m.yaml"), &registry).unwrap();
    let cfg = Config::default();
    let run_once = || {
        let store = Store::open(&cfg.cache_path(&m.base_dir), LockMode::Shared).unwrap();
        let events = EventSink::new();
        let loads = Arc::new(Mutex::new(Vec::new()));
        let l = loads.clone();
        events.subscribe(move |e| {
            if let Event::ResourceLoaded { key, .. } = e {
                l.lock().unwrap().push(key.clone());
            }
        });
        let s = run::run(
            &m,
            &registry,
            &cfg,
            &store,
            &RunOptions::default(),
            events,
            &AtomicBool::new(false),
        )
        .unwrap();
        let loads = loads.lock().unwrap().clone();
        (s, loads)
    };
    let (s, loads) = run_once();
    assert_eq!(
        s.counts.failed,
        0,
        "{:#?}",
        s.jobs
            .iter()
            .filter(|j| j.error.is_some())
            .collect::<Vec<_>>()
    );
    assert_eq!(s.counts.ran, 20);
    assert_eq!(loads.len(), 1, "the model loads once per run: {loads:?}");
    assert!(loads[0].starts_with("whisper:"));
    for (i, text) in texts.iter().enumerate() {
        let t: Value = serde_json::from_slice(
            &std::fs::read(
                tmp.path()
                    .join(format!("out/clip{i:02}/asr/transcript.json")),
            )
            .unwrap(),
        )
        .unwrap();
        let got: Vec<&str> = t["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["text"].as_str().unwrap())
            .collect();
        let w = wer(text, &got.join(" "));
        assert!(w <= 0.25, "clip {i}: WER {w:.2}: {got:?} for {text:?}");
    }
    // A cached rerun loads nothing.
    let (s, loads) = run_once();
    assert_eq!((s.counts.cached, s.counts.ran), (20, 0));
    assert!(loads.is_empty(), "{loads:?}");
}
