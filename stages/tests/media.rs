//! The media stage kinds on real files made by the `ffmpeg` CLI and `espeak-ng`: the
//! messy cases of issue 3 (empty, truncated, mislabelled, rotated, tiny, huge, odd-sized,
//! variable frame rate, damaged, every common container and codec) each give a correct
//! result or a clear error naming the file.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use common::{FPS, Job, cut_frames, cut_video, ffmpeg, read_jpeg, read_wav, run, speech};
use serde_json::{Value, json};
use vsum_engine::hash::FileHasher;
use vsum_engine::stage::{CheckEnv, KeyEnv, Scope, StageKind};
use vsum_stages::media::{AudioStage, KeyframesStage, ProbeStage, SceneStage};

/// Generated media shared by tests, made once per test process.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Remade on every run: generation changes must never meet stale files.
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("media-fixtures");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("fixture dir");
        d
    })
}

/// Makes a fixture once (by name), whichever test asks first.
fn fixture(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let p = fixtures().join(name);
    if !p.exists() {
        let tmp = fixtures().join(format!("tmp-{name}"));
        make(&tmp);
        std::fs::rename(&tmp, &p).expect("rename fixture");
    }
    p
}

/// 8 s of 320x240 H.264 at 25 fps: four sources, cuts at frames 50, 90, 150.
fn cuts_mp4() -> PathBuf {
    fixture("cuts.mp4", |p| {
        cut_video(
            p,
            320,
            240,
            &[
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-f", "mp4",
            ],
        )
    })
}

/// A talking clip: espeak-ng speech over a test pattern, AAC in MP4.
fn speech_mp4() -> PathBuf {
    fixture("speech.mp4", |p| {
        let wav = fixtures().join("speech.wav");
        speech(
            &wav,
            "The quick brown fox jumps over the lazy dog. Scene detection finds the cuts.",
        );
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
            "-i",
            wav.to_str().unwrap(),
            "-shortest",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ar",
            "44100",
            "-ac",
            "2",
            "-f",
            "mp4",
            p.to_str().unwrap(),
        ]);
    })
}

fn starts(scenes: &Value) -> Vec<u64> {
    scenes["scenes"]
        .as_array()
        .expect("scenes array")
        .iter()
        .map(|s| s["start_frame"].as_u64().expect("start_frame"))
        .collect()
}

/// Asserts scene starts are [0, cuts...] within one frame.
fn assert_cuts(scenes: &Value, expected: &[u64], what: &str) {
    let got = starts(scenes);
    let mut want = vec![0];
    want.extend_from_slice(expected);
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: scenes start at {got:?}, expected {want:?}"
    );
    for (g, w) in got.iter().zip(&want) {
        assert!(
            g.abs_diff(*w) <= 1,
            "{what}: scenes start at {got:?}, expected {want:?}"
        );
    }
}

fn probe(path: &Path) -> Value {
    run(&ProbeStage, path, json!({}), &[]).json("probe.json")
}

fn scenes(path: &Path) -> Job {
    run(&SceneStage, path, json!({}), &[])
}

fn keyframes(path: &Path, scenes_dir: &Path, params: Value) -> Job {
    run(&KeyframesStage, path, params, &[("scenes", scenes_dir)])
}

fn stream<'a>(probe: &'a Value, kind: &str) -> &'a Value {
    probe["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} stream in {probe}"))
}

fn mean_rgb(rgb: &[u8]) -> [f64; 3] {
    let n = (rgb.len() / 3) as f64;
    let mut m = [0.0; 3];
    for px in rgb.chunks_exact(3) {
        for c in 0..3 {
            m[c] += f64::from(px[c]);
        }
    }
    m.map(|x| x / n)
}

#[test]
fn scenes_finds_exactly_the_cuts_of_concatenated_sources() {
    let job = scenes(&cuts_mp4());
    let s = job.json("scenes.json");
    assert_cuts(&s, &cut_frames(), "cuts.mp4");
    assert_eq!(s["frames"], 200);
    assert_eq!(s["fps"], 25.0);
    assert_eq!(s["decode_errors"], 0);
    // What decoded it is recorded: a hardware decoder by name, or software with the
    // reason each one tried was not used.
    let decoder = &s["decoder"];
    match decoder["hardware"].as_str() {
        Some(hw) => assert!(["cuda", "vaapi"].contains(&hw), "{decoder}"),
        None if std::env::var_os("VSUM_HWACCEL").is_some() => {}
        None => {
            let notes = decoder["notes"].as_array().unwrap();
            assert_eq!(notes.len(), 2, "{decoder}");
            assert!(notes[0].as_str().unwrap().contains("cuda"), "{decoder}");
            assert!(notes[1].as_str().unwrap().contains("vaapi"), "{decoder}");
        }
    }
    assert_eq!(s["params"]["threshold"], 27.0);
    assert_eq!(s["params"]["downscale"], "auto");
    assert_eq!(s["analysis_size"], json!([256, 192]));
    let list = s["scenes"].as_array().unwrap();
    // Times follow frames, end is exclusive, scenes tile the video.
    for (i, sc) in list.iter().enumerate() {
        assert_eq!(sc["index"], i);
        let sf = sc["start_frame"].as_f64().unwrap();
        assert!(
            (sc["start"].as_f64().unwrap() - sf / f64::from(FPS)).abs() < 1e-3,
            "{sc}"
        );
        if let Some(next) = list.get(i + 1) {
            assert_eq!(sc["end_frame"], next["start_frame"]);
            assert_eq!(sc["end"], next["start"]);
            assert!(next["score"].as_f64().unwrap() >= 27.0, "cut score {next}");
        }
        assert_eq!(sc.as_object().unwrap().len(), 6, "scene fields: {sc}");
    }
    assert_eq!(list.last().unwrap()["end_frame"], 200);
    assert!((list.last().unwrap()["end"].as_f64().unwrap() - 8.0).abs() < 1e-3);
}

#[test]
fn scenes_same_cut_list_with_and_without_the_loop_filter() {
    // Pictures need the full decode, so the fast one is without them.
    let fast = run(&SceneStage, &cuts_mp4(), json!({"pictures": false}), &[]).json("scenes.json");
    let full = run(
        &SceneStage,
        &cuts_mp4(),
        json!({"fast_decode": false, "pictures": false}),
        &[],
    )
    .json("scenes.json");
    let with_pictures = scenes(&cuts_mp4()).json("scenes.json");
    assert_eq!(starts(&fast), starts(&full));
    assert_eq!(starts(&fast), starts(&with_pictures));
}

#[test]
fn fast_decode_keeps_the_cut_list_on_codecs_that_decode_small() {
    // At 640x480 the analysis size is 256x192: MJPEG and MPEG-4 decode at half size.
    for (name, opts) in [
        (
            "lowres-mjpeg.avi",
            [
                "-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p", "-f", "avi",
            ],
        ),
        (
            "lowres-mpeg4.mov",
            [
                "-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p", "-f", "mov",
            ],
        ),
    ] {
        let path = fixture(name, |p| cut_video(p, 640, 480, &opts));
        let fast = run(&SceneStage, &path, json!({"pictures": false}), &[]).json("scenes.json");
        let exact = run(&SceneStage, &path, json!({"fast_decode": false}), &[]).json("scenes.json");
        assert_cuts(&fast, &cut_frames(), name);
        assert_eq!(starts(&fast), starts(&exact), "{name}");
        assert_eq!(fast["analysis_size"], json!([256, 192]), "{name}");
        assert_eq!(exact["analysis_size"], json!([256, 192]), "{name}");
        assert_eq!(fast["decoded_size"], json!([320, 240]), "{name}");
        assert_eq!(exact["decoded_size"], json!([640, 480]), "{name}");
        // Scores stay close to the full decode's.
        for (a, b) in fast["scenes"]
            .as_array()
            .unwrap()
            .iter()
            .zip(exact["scenes"].as_array().unwrap())
        {
            let (a, b) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
            assert!((a - b).abs() < 3.0, "{name}: score {a} vs {b}");
        }
    }
}

#[test]
fn scenes_split_at_max_scene_len_and_params_change_results() {
    let s = run(&SceneStage, &cuts_mp4(), json!({"max_scene_len": 1.0}), &[]).json("scenes.json");
    let list = s["scenes"].as_array().unwrap();
    let st = starts(&s);
    for c in cut_frames() {
        assert!(
            st.iter().any(|x| x.abs_diff(c) <= 1),
            "cut {c} kept: {st:?}"
        );
    }
    for sc in list {
        let len = sc["end"].as_f64().unwrap() - sc["start"].as_f64().unwrap();
        assert!(len <= 1.0 + 1e-6, "scene longer than max_scene_len: {sc}");
    }
    assert_eq!(list.last().unwrap()["end_frame"], 200);
    // The stats file has every frame's score; cuts are where it jumps.
    let job = run(&SceneStage, &cuts_mp4(), json!({"stats": true}), &[]);
    let csv = std::fs::read_to_string(job.ok().join("stats.csv")).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert!(csv.starts_with("frame,time,content_val,delta_hue,delta_sat,delta_lum\n"));
    assert_eq!(rows.len(), 200);
    for c in cut_frames() {
        assert!(
            rows[c as usize][2] >= 27.0,
            "score at cut {c}: {:?}",
            rows[c as usize]
        );
    }
    // A threshold above every score finds no cut: one scene.
    let one = run(&SceneStage, &cuts_mp4(), json!({"threshold": 200}), &[]).json("scenes.json");
    assert_eq!(starts(&one), vec![0]);
}

#[test]
fn every_container_and_codec_gives_the_same_cuts() {
    let cases: &[(&str, &[&str], &str, &str)] = &[
        (
            "mp4",
            &[
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ],
            "h264",
            "mov,mp4,m4a,3gp,3g2,mj2",
        ),
        (
            "mkv",
            &[
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ],
            "h264",
            "matroska,webm",
        ),
        (
            "webm",
            &[
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-b:v",
                "400k",
            ],
            "vp9",
            "matroska,webm",
        ),
        (
            "mov",
            &["-c:v", "mpeg4", "-q:v", "3"],
            "mpeg4",
            "mov,mp4,m4a,3gp,3g2,mj2",
        ),
        (
            "avi",
            &["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"],
            "mjpeg",
            "avi",
        ),
    ];
    for (ext, opts, codec, container) in cases {
        let path = fixture(&format!("codec-{codec}.{ext}"), |p| {
            let mut o = opts.to_vec();
            o.extend(["-f", if *ext == "mkv" { "matroska" } else { ext }]);
            cut_video(p, 160, 120, &o)
        });
        let pr = probe(&path);
        assert_eq!(pr["container"], *container, "{ext}");
        let v = stream(&pr, "video");
        assert_eq!(v["codec"], *codec, "{ext}");
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(160), Some(120)),
            "{ext}"
        );
        let sj = scenes(&path);
        let s = sj.json("scenes.json");
        assert_cuts(&s, &cut_frames(), &format!("{codec} in {ext}"));
        assert_eq!(s["frames"], 200, "{ext}");
        let k = keyframes(&path, sj.ok(), json!({})).json("keyframes.json");
        assert_eq!(k["keyframes"].as_array().unwrap().len(), 4, "{ext}: {k}");
    }
}

#[test]
fn probe_describes_streams() {
    let p = probe(&speech_mp4());
    assert_eq!(p["file"], "speech.mp4");
    assert!(p["duration"].as_f64().unwrap() > 2.0);
    assert!(p["size"].as_u64().unwrap() > 1000);
    assert!(p["bit_rate"].as_i64().unwrap() > 0);
    assert_eq!(p["scan"], "packets");
    assert_eq!(p["decode_errors"], 0);
    let v = stream(&p, "video");
    assert_eq!(v["codec"], "h264");
    assert_eq!(v["width"], 160);
    assert_eq!(v["height"], 120);
    assert_eq!(v["fps_avg"], 25.0);
    assert_eq!(v["fps_real"], 25.0);
    assert_eq!(v["rotation"], 0);
    assert_eq!(v["pixel_format"], "yuv420p");
    assert!(v["packets"].as_u64().unwrap() > 50);
    let a = stream(&p, "audio");
    assert_eq!(a["codec"], "aac");
    assert_eq!(a["sample_rate"], 44100);
    assert_eq!(a["channels"], 2);
    assert!(a["width"].is_null());
    assert_eq!(p["video_stream"], v["index"]);
    assert_eq!(p["audio_stream"], a["index"]);
}

#[test]
fn audio_of_a_talking_clip_is_16k_mono_and_as_long_as_the_stream() {
    let path = speech_mp4();
    let pr = probe(&path);
    let dur = stream(&pr, "audio")["duration"].as_f64().unwrap();
    let job = run(&AudioStage, &path, json!({}), &[]);
    let (rate, ch, n, samples) = read_wav(&job.ok().join("audio.wav"));
    assert_eq!((rate, ch), (16_000, 1));
    let secs = n as f64 / 16_000.0;
    assert!(
        (secs - dur).abs() <= 1.0 / f64::from(FPS),
        "wav {secs} s, stream {dur} s"
    );
    // Real speech, not silence.
    let rms =
        (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
    assert!(rms > 300.0, "rms {rms}");
    let meta = job.json("audio.json");
    assert_eq!(meta["has_audio"], true);
    assert_eq!(meta["file"], "audio.wav");
    assert_eq!(meta["samples"], n as u64);
    assert_eq!(meta["source"]["codec"], "aac");
    assert_eq!(meta["source"]["sample_rate"], 44100);
    assert_eq!(meta["decode_errors"], 0);

    // Other rates and channel counts.
    let job = run(
        &AudioStage,
        &path,
        json!({"sample_rate": 8000, "channels": 2}),
        &[],
    );
    let (rate, ch, n, _) = read_wav(&job.ok().join("audio.wav"));
    assert_eq!((rate, ch), (8000, 2));
    assert!((n as f64 / 8000.0 - dur).abs() <= 1.0 / f64::from(FPS));
}

#[test]
fn audio_timestamp_gaps_become_silence() {
    // 2 s of tone whose timestamps jump by 2 s after the first second (a recording
    // that dropped out): the WAV keeps the clock, with silence in the hole.
    let gap = fixture("gap.mkv", |p| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=2,asetpts='if(gte(T,1),PTS+2/TB,PTS)'",
            "-c:a",
            "libopus",
            "-f",
            "matroska",
            p.to_str().unwrap(),
        ])
    });
    let job = run(&AudioStage, &gap, json!({}), &[]);
    let meta = job.json("audio.json");
    assert!(
        (meta["duration"].as_f64().unwrap() - 4.0).abs() < 0.05,
        "{meta}"
    );
    assert!(
        (meta["gaps_filled"].as_f64().unwrap() - 2.0).abs() < 0.05,
        "{meta}"
    );
    let (_, _, n, samples) = read_wav(&job.ok().join("audio.wav"));
    assert!((n as f64 / 16_000.0 - 4.0).abs() < 0.05);
    let loud = |from: f64, to: f64| {
        let s = &samples[(from * 16_000.0) as usize..(to * 16_000.0) as usize];
        s.iter().map(|x| i64::from(*x).abs()).max().unwrap()
    };
    assert!(loud(0.2, 0.8) > 1000, "tone before the gap");
    assert_eq!(loud(1.2, 2.8), 0, "silence in the gap");
    assert!(loud(3.2, 3.8) > 1000, "tone after the gap");
}

#[test]
fn video_without_audio_is_recorded_not_failed() {
    let job = run(&AudioStage, &cuts_mp4(), json!({}), &[]);
    let meta = job.json("audio.json");
    assert_eq!(meta["has_audio"], false);
    assert_eq!(meta["reason"], "no audio stream");
    assert!(!job.has("audio.wav"));
}

#[test]
fn audio_only_files() {
    let m4a = fixture("voice.m4a", |p| {
        let wav = fixtures().join("voice.wav");
        speech(&wav, "An audio only file has no pictures.");
        ffmpeg(&[
            "-i",
            wav.to_str().unwrap(),
            "-c:a",
            "aac",
            "-f",
            "ipod",
            p.to_str().unwrap(),
        ]);
    });
    let pr = probe(&m4a);
    assert!(pr["video_stream"].is_null());
    assert_eq!(stream(&pr, "audio")["codec"], "aac");
    let dur = stream(&pr, "audio")["duration"].as_f64().unwrap();
    let job = run(&AudioStage, &m4a, json!({}), &[]);
    let (_, _, n, _) = read_wav(&job.ok().join("audio.wav"));
    assert!((n as f64 / 16_000.0 - dur).abs() <= 1.0 / f64::from(FPS));
    // Plain WAV (raw PCM, no channel layout) as input too.
    let wav = fixtures().join("voice.wav");
    let job = run(&AudioStage, &wav, json!({}), &[]);
    let (rate, ch, n, _) = read_wav(&job.ok().join("audio.wav"));
    assert_eq!((rate, ch), (16_000, 1));
    assert!(n > 16_000);
    // Picture stages say clearly that there is no video.
    {
        let kind = &SceneStage as &dyn StageKind;
        let job = run(kind, &m4a, json!({}), &[]);
        let e = job.err();
        assert!(
            e.message.contains("voice.m4a") && e.message.contains("no video stream"),
            "{}",
            e.message
        );
        assert!(!e.retryable);
        assert!(e.hint.is_some());
    }
}

#[test]
fn zero_byte_file_is_a_clear_error() {
    let p = fixture("empty.mp4", |p| std::fs::write(p, b"").unwrap());
    for kind in [&ProbeStage as &dyn StageKind, &AudioStage, &SceneStage] {
        let job = run(kind, &p, json!({}), &[]);
        let e = job.err();
        assert!(
            e.message.contains("empty.mp4") && e.message.contains("empty (0 bytes)"),
            "{}",
            e.message
        );
        assert!(e.hint.as_deref().unwrap().contains("re-copy"));
        assert!(!e.retryable);
    }
}

#[test]
fn text_file_named_mp4_is_a_clear_error() {
    let p = fixture("notes.mp4", |p| {
        std::fs::write(p, "<html><body>404 Not Found</body></html>\n").unwrap()
    });
    for kind in [&ProbeStage as &dyn StageKind, &AudioStage, &SceneStage] {
        let job = run(kind, &p, json!({}), &[]);
        let e = job.err();
        assert!(
            e.message.contains("notes.mp4") && e.message.contains("text file"),
            "{}",
            e.message
        );
        assert!(e.hint.is_some());
    }
}

#[test]
fn truncated_files() {
    // MP4 with its index at the end, cut in half: the index is gone.
    let full = cuts_mp4();
    let half = fixture("half.mp4", |p| {
        let d = std::fs::read(&full).unwrap();
        std::fs::write(p, &d[..d.len() / 2]).unwrap();
    });
    for kind in [&ProbeStage as &dyn StageKind, &SceneStage] {
        let job = run(kind, &half, json!({}), &[]);
        let e = job.err();
        assert!(
            e.message.contains("half.mp4") && e.message.contains("truncated"),
            "{}",
            e.message
        );
    }
    // Matroska cut in half still has its first half: a result for what is there.
    let mkv = fixture("half.mkv", |p| {
        let src = fixtures().join("cuts-for-half.mkv");
        cut_video(
            &src,
            160,
            120,
            &[
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-f", "matroska",
            ],
        );
        let d = std::fs::read(&src).unwrap();
        std::fs::write(p, &d[..d.len() / 2]).unwrap();
    });
    assert!(probe(&mkv)["streams"].as_array().unwrap().len() == 1);
    let s = scenes(&mkv).json("scenes.json");
    let frames = s["frames"].as_u64().unwrap();
    assert!(frames > 20 && frames < 200, "frames {frames}");
}

#[test]
fn corrupt_packets_are_counted_not_fatal() {
    let p = fixture("damaged.avi", |p| {
        let src = fixtures().join("damaged-src.avi");
        cut_video(
            &src,
            160,
            120,
            &[
                "-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p", "-f", "avi",
            ],
        );
        let mut d = std::fs::read(&src).unwrap();
        // Wipe the start of a few JPEG frames in the middle (SOI + headers).
        let sois: Vec<usize> = d
            .windows(3)
            .enumerate()
            .filter(|(_, w)| *w == [0xFF, 0xD8, 0xFF])
            .map(|(i, _)| i)
            .collect();
        assert!(sois.len() > 100, "{} frames found", sois.len());
        for &at in &sois[100..103] {
            for b in &mut d[at..at + 200] {
                *b = 0x00;
            }
        }
        std::fs::write(p, d).unwrap();
    });
    let sj = scenes(&p);
    let s = sj.json("scenes.json");
    assert!(s["decode_errors"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["frames"].as_u64().unwrap() >= 190);
    let pr = run(&ProbeStage, &p, json!({"decode": true}), &[]).json("probe.json");
    assert_eq!(pr["scan"], "decode");
    assert!(pr["decode_errors"].as_u64().unwrap() >= 1, "{pr}");
    let k = keyframes(&p, sj.ok(), json!({})).json("keyframes.json");
    assert_eq!(
        k["keyframes"].as_array().unwrap().len(),
        s["scenes"].as_array().unwrap().len()
    );
}

#[test]
fn rotated_phone_video_keyframes_are_turned_like_ffmpeg_shows_them() {
    // Top half white, bottom black; tagged to be shown turned by 90 degrees.
    let plain = fixture("half.mp4-src.mp4", |p| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "color=c=black:size=320x240:rate=25:duration=1,drawbox=x=0:y=0:w=320:h=120:color=white:t=fill",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mp4",
            p.to_str().unwrap(),
        ])
    });
    let rotated = fixture("rotated.mp4", |p| {
        ffmpeg(&[
            "-i",
            plain.to_str().unwrap(),
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=90",
            "-f",
            "mp4",
            p.to_str().unwrap(),
        ])
    });
    let pr = probe(&rotated);
    let rot = stream(&pr, "video")["rotation"].as_i64().unwrap();
    assert!(rot == 90 || rot == 270, "rotation {rot}");
    let sj = scenes(&rotated);
    let kj = keyframes(&rotated, sj.ok(), json!({}));
    let k = kj.json("keyframes.json");
    assert_eq!(k["rotation"], rot);
    let kf = &k["keyframes"][0];
    assert_eq!(
        (kf["width"].as_u64(), kf["height"].as_u64()),
        (Some(240), Some(320))
    );
    let (w, h, rgb) = read_jpeg(&kj.ok().join(kf["file"].as_str().unwrap()));
    assert_eq!((w, h), (240, 320));
    // The white half lands on the same side as in ffmpeg's own (autorotated) decode.
    let reference = fixtures().join("rotated-ref.jpg");
    ffmpeg(&[
        "-i",
        rotated.to_str().unwrap(),
        "-frames:v",
        "1",
        "-q:v",
        "2",
        reference.to_str().unwrap(),
    ]);
    let (rw, rh, rrgb) = read_jpeg(&reference);
    assert_eq!((rw, rh), (240, 320));
    let left_brighter = |rgb: &[u8], w: u32, h: u32| {
        let (mut l, mut r) = (0u64, 0u64);
        for y in 0..h as usize {
            for x in 0..w as usize {
                let v = u64::from(rgb[(y * w as usize + x) * 3]);
                if x < w as usize / 2 { l += v } else { r += v }
            }
        }
        l > r
    };
    assert_eq!(left_brighter(&rgb, w, h), left_brighter(&rrgb, rw, rh));
}

/// A keyframe's time is in the middle 30-70% of its scene (50 ms of slack).
fn assert_near_middle(keyframe: &Value, scene: &Value) {
    let t = keyframe["time"].as_f64().unwrap();
    let (a, b) = (
        scene["start"].as_f64().unwrap(),
        scene["end"].as_f64().unwrap(),
    );
    assert!(
        t >= a + 0.3 * (b - a) - 0.05 && t <= a + 0.7 * (b - a) + 0.05,
        "{t} not near the middle of {a}..{b}"
    );
}

#[test]
fn keyframes_one_picture_per_scene_from_its_middle() {
    let sj = scenes(&cuts_mp4());
    let s = sj.json("scenes.json");
    let kj = keyframes(&cuts_mp4(), sj.ok(), json!({}));
    let k = kj.json("keyframes.json");
    let list = k["keyframes"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(k["missing"], json!([]));
    for (kf, sc) in list.iter().zip(s["scenes"].as_array().unwrap()) {
        assert_eq!(kf["scene"], sc["index"]);
        assert_near_middle(kf, sc);
        let (w, h, _) = read_jpeg(&kj.ok().join(kf["file"].as_str().unwrap()));
        assert_eq!((w, h), (320, 240));
        assert_eq!(
            (kf["width"].as_u64(), kf["height"].as_u64()),
            (Some(320), Some(240))
        );
    }
    // The third scene is solid red.
    let (_, _, rgb) = read_jpeg(&kj.ok().join("scene_0002.jpg"));
    let [r, g, b] = mean_rgb(&rgb);
    assert!(r > 200.0 && g < 60.0 && b < 60.0, "mean rgb {r} {g} {b}");
    // max_width shrinks, keeping the aspect.
    let small = keyframes(&cuts_mp4(), sj.ok(), json!({"max_width": 100}));
    let (w, h, _) = read_jpeg(&small.ok().join("scene_0000.jpg"));
    assert_eq!((w, h), (100, 75));
}

#[test]
fn keyframes_come_from_the_scenes_decode_and_agree_with_seeking() {
    // `video.scenes` picks the pictures while it decodes for its cuts; keyframes with
    // the same width and quality copy them instead of decoding the video again.
    let with = scenes(&cuts_mp4());
    let without = run(&SceneStage, &cuts_mp4(), json!({"pictures": false}), &[]);
    assert_eq!(with.json("scenes.json")["pictures"], 4);
    assert!(!without.ok().join("pictures").exists());
    let pass = with.ok().join("pictures");
    let mut left: Vec<String> = std::fs::read_dir(&pass)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // Only the chosen pictures stay: no stretch files are left behind.
    assert_eq!(
        left,
        [
            "keyframes.json",
            "scene_0000.jpg",
            "scene_0001.jpg",
            "scene_0002.jpg",
            "scene_0003.jpg"
        ]
    );
    let a = keyframes(&cuts_mp4(), with.ok(), json!({}));
    let b = keyframes(&cuts_mp4(), without.ok(), json!({}));
    let (ka, kb) = (a.json("keyframes.json"), b.json("keyframes.json"));
    assert_eq!(ka["from_scenes"], 4, "{ka}");
    assert_eq!(kb["from_scenes"], 0, "{kb}");
    let s = with.json("scenes.json");
    for ((x, y), sc) in ka["keyframes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(kb["keyframes"].as_array().unwrap())
        .zip(s["scenes"].as_array().unwrap())
    {
        assert_eq!(x["scene"], y["scene"]);
        assert_near_middle(x, sc);
        let file = x["file"].as_str().unwrap();
        let (_, _, pa) = read_jpeg(&a.ok().join(file));
        let (_, _, pb) = read_jpeg(&b.ok().join(file));
        let (ma, mb) = (mean_rgb(&pa), mean_rgb(&pb));
        for c in 0..3 {
            assert!((ma[c] - mb[c]).abs() < 8.0, "{file}: {ma:?} vs {mb:?}");
        }
    }
    // Another width: the pass does not fit, so the stage decodes.
    let small = keyframes(&cuts_mp4(), with.ok(), json!({"max_width": 100}));
    assert_eq!(small.json("keyframes.json")["from_scenes"], 0);
    // Scenes split at max_scene_len have no stretch of their own: those are decoded,
    // the others copied.
    let split = run(&SceneStage, &cuts_mp4(), json!({"max_scene_len": 0.5}), &[]);
    let n = split.json("scenes.json")["scenes"]
        .as_array()
        .unwrap()
        .len();
    let k = keyframes(&cuts_mp4(), split.ok(), json!({})).json("keyframes.json");
    let copied = k["from_scenes"].as_u64().unwrap() as usize;
    assert!(copied >= 1 && copied < n, "{copied} of {n}: {k}");
    assert_eq!(k["keyframes"].as_array().unwrap().len(), n, "{k}");
    assert_eq!(k["missing"], json!([]));
}

#[test]
fn keyframes_for_one_frame_scenes_from_a_hand_written_list() {
    // Only `scenes` and `fps` are needed. Frame 1 of cuts.mp4 is a B-frame, which the
    // candidate pass skips: the fallback must still find it.
    let dir = tempfile::tempdir().unwrap();
    let scene = |i: u64, a: u64, b: u64| {
        json!({"index": i, "start": a as f64 / 25.0, "end": b as f64 / 25.0,
               "start_frame": a, "end_frame": b, "score": 0.0})
    };
    let list = json!({"fps": 25.0, "scenes": [scene(0, 0, 1), scene(1, 1, 2), scene(2, 2, 3), scene(3, 3, 50)]});
    std::fs::write(dir.path().join("scenes.json"), list.to_string()).unwrap();
    let k = keyframes(&cuts_mp4(), dir.path(), json!({})).json("keyframes.json");
    assert_eq!(k["missing"], json!([]), "{k}");
    let times: Vec<f64> = k["keyframes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["time"].as_f64().unwrap())
        .collect();
    assert_eq!(times[..3], [0.0, 0.04, 0.08], "{k}");
}

#[test]
fn keyframes_without_a_scenes_upstream_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let job = keyframes(&cuts_mp4(), empty.path(), json!({}));
    let e = job.err();
    assert!(
        e.message.contains("scenes.json") && e.message.contains("video.scenes"),
        "{}",
        e.message
    );
    assert!(e.hint.as_deref().unwrap().contains("needs"));
    // And the manifest check says so before anything runs.
    let env = CheckEnv {
        stage_id: "kf",
        scope: Scope::Video,
        needs: &[],
    };
    assert!(KeyframesStage.check(&json!({}), &env).is_err());
}

#[test]
fn odd_and_extreme_sizes() {
    // 1x1: libx264 refuses it, FFV1 takes it.
    let one = fixture("one.mkv", |p| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=1x1:rate=25:duration=1",
            "-c:v",
            "ffv1",
            "-f",
            "matroska",
            p.to_str().unwrap(),
        ])
    });
    let odd = fixture("odd.mp4", |p| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=321x241:rate=25:duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv444p",
            "-f",
            "mp4",
            p.to_str().unwrap(),
        ])
    });
    let two = fixture("two.mp4", |p| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=2x2:rate=25:duration=1",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mp4",
            p.to_str().unwrap(),
        ])
    });
    let big = fixture("big.mp4", |p| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=4000x3000:rate=25",
            "-frames:v",
            "5",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mp4",
            p.to_str().unwrap(),
        ])
    });
    for (path, w, h, kw, kh) in [
        (&one, 1, 1, 1, 1),
        (&two, 2, 2, 2, 2),
        (&odd, 321, 241, 321, 241),
        (&big, 4000, 3000, 1280, 960),
    ] {
        let pr = probe(path);
        let v = stream(&pr, "video");
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(w), Some(h)),
            "{}",
            path.display()
        );
        let sj = scenes(path);
        let s = sj.json("scenes.json");
        assert_eq!(starts(&s), vec![0], "{}", path.display());
        let kj = keyframes(path, sj.ok(), json!({}));
        let k = kj.json("keyframes.json");
        let (jw, jh, _) = read_jpeg(&kj.ok().join(k["keyframes"][0]["file"].as_str().unwrap()));
        assert_eq!(
            (u64::from(jw), u64::from(jh)),
            (kw, kh),
            "{}",
            path.display()
        );
    }
    let s = scenes(&big).json("scenes.json");
    assert_eq!(s["analysis_size"], json!([256, 192]));
}

#[test]
fn tiny_clips() {
    let three = fixture("three.mp4", |p| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
            "-frames:v",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mp4",
            p.to_str().unwrap(),
        ])
    });
    let sj = scenes(&three);
    let s = sj.json("scenes.json");
    assert_eq!(s["frames"], 3);
    assert_eq!(s["scenes"][0]["end_frame"], 3);
    assert!((s["duration"].as_f64().unwrap() - 0.12).abs() < 1e-6);
    let k = keyframes(&three, sj.ok(), json!({})).json("keyframes.json");
    assert_eq!(k["keyframes"].as_array().unwrap().len(), 1);

    let second = fixture("second.webm", |p| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "smptebars=size=160x120:rate=25:duration=1",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-f",
            "webm",
            p.to_str().unwrap(),
        ])
    });
    let s = scenes(&second).json("scenes.json");
    assert_eq!(s["frames"], 25);
    assert_eq!(starts(&s), vec![0]);
}

#[test]
fn variable_frame_rate_times_come_from_timestamps() {
    // 2 s at 10 fps, then 2 s at 30 fps of something else: the cut is at frame 20, 2.0 s.
    let vfr = fixture("vfr.mkv", |p| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=2",
            "-f",
            "lavfi",
            "-i",
            "smptebars=size=160x120:rate=30:duration=2",
            "-filter_complex",
            "[0][1]concat=n=2:v=1",
            "-fps_mode",
            "passthrough",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "matroska",
            p.to_str().unwrap(),
        ])
    });
    let sj = scenes(&vfr);
    let s = sj.json("scenes.json");
    assert_eq!(starts(&s), vec![0, 20]);
    assert!(
        (s["scenes"][1]["start"].as_f64().unwrap() - 2.0).abs() < 0.034,
        "{s}"
    );
    assert_eq!(s["frames"], 80);
    assert!((s["duration"].as_f64().unwrap() - 4.0).abs() < 0.05, "{s}");
    let k = keyframes(&vfr, sj.ok(), json!({})).json("keyframes.json");
    let t1 = k["keyframes"][1]["time"].as_f64().unwrap();
    assert!(t1 > 2.3 && t1 < 3.7, "{k}");
}

#[test]
fn path_with_spaces_and_non_ascii_characters() {
    let dir = fixtures().join("dir with space");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("vidéo café 日本: take 1.mp4");
    if !p.exists() {
        std::fs::copy(speech_mp4(), &p).unwrap();
    }
    let pr = probe(&p);
    assert_eq!(pr["file"], "vidéo café 日本: take 1.mp4");
    let sj = scenes(&p);
    sj.ok();
    keyframes(&p, sj.ok(), json!({})).ok();
    run(&AudioStage, &p, json!({}), &[]).ok();
}

#[test]
fn cancelled_jobs_stop() {
    use std::sync::atomic::AtomicBool;
    use vsum_engine::events::EventSink;
    use vsum_engine::stage::{JobCtx, Video};
    let path = cuts_mp4();
    let params = SceneStage
        .check(
            &json!({}),
            &CheckEnv {
                stage_id: "s",
                scope: Scope::Video,
                needs: &[],
            },
        )
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let v = Video {
        path: path.clone(),
        rel: "cuts.mp4".into(),
        stem: "cuts".into(),
        folder: "cuts".into(),
        hash: "x".into(),
    };
    let cancel = AtomicBool::new(true);
    let events = EventSink::new();
    let upstream = Default::default();
    let mut ctx = JobCtx {
        stage_id: "s",
        params: &params,
        base_dir: path.parent().unwrap(),
        output_root: path.parent().unwrap(),
        out_dir: out.path(),
        video: Some(&v),
        upstream: &upstream,
        provenance: &Default::default(),
        batch: &[],
        previous: None,
        threads: 1,
        cancel: &cancel,
        resources: None,
        force_cpu: false,
        events: &events,
        cores: None,
        held_cores: 0,
    };
    let e = SceneStage.run(&mut ctx).unwrap_err();
    assert!(e.cancelled);
}

#[test]
fn params_are_checked_defaulted_and_keyed_with_ffmpeg_versions() {
    let env = CheckEnv {
        stage_id: "s",
        scope: Scope::Video,
        needs: &[("sc".to_string(), Scope::Video)],
    };
    assert_eq!(
        ProbeStage.check(&json!({}), &env).unwrap(),
        json!({"decode": false})
    );
    assert_eq!(
        AudioStage.check(&json!({}), &env).unwrap(),
        json!({"sample_rate": 16000, "channels": 1})
    );
    assert_eq!(
        SceneStage.check(&json!({}), &env).unwrap(),
        json!({"threshold": 27.0, "min_scene_len": 15, "downscale": "auto", "max_scene_len": null, "fast_decode": true,
            "pictures": true, "picture_width": 1280, "picture_quality": 85, "stats": false,
            "detector": "content", "pixel_delta": 24, "min_change": 0.2, "dwell": 0.5})
    );
    assert_eq!(
        KeyframesStage.check(&json!({}), &env).unwrap(),
        json!({"max_width": 1280, "quality": 85, "candidates": 3})
    );
    assert_eq!(
        SceneStage.check(&json!({"downscale": 2}), &env).unwrap()["downscale"],
        2
    );
    // Unknown keys and bad values point at the parameter.
    let e = SceneStage
        .check(&json!({"treshold": 30}), &env)
        .unwrap_err();
    assert!(e[0].message.contains("treshold"), "{e:?}");
    let e = SceneStage
        .check(&json!({"downscale": "big"}), &env)
        .unwrap_err();
    assert_eq!(e[0].path, vec!["downscale"]);
    let e = SceneStage
        .check(&json!({"threshold": 0}), &env)
        .unwrap_err();
    assert_eq!(e[0].path, vec!["threshold"]);
    let e = AudioStage
        .check(&json!({"sample_rate": 100}), &env)
        .unwrap_err();
    assert_eq!(e[0].path, vec!["sample_rate"]);
    // Every kind documents its params and keys the FFmpeg libraries.
    let hasher = FileHasher::in_memory();
    let kenv = KeyEnv {
        base_dir: Path::new("."),
        output_root: Path::new("output"),
        video: None,
        hasher: &hasher,
    };
    for kind in [
        &ProbeStage as &dyn StageKind,
        &AudioStage,
        &SceneStage,
        &KeyframesStage,
    ] {
        assert!(!kind.params_doc().is_empty());
        let tools = kind.key_extras(&json!({}), &kenv).unwrap().tools;
        for lib in [
            "libavcodec",
            "libavformat",
            "libavutil",
            "libswresample",
            "libswscale",
        ] {
            let v = tools
                .get(lib)
                .unwrap_or_else(|| panic!("{} lacks {lib}", kind.name()));
            assert_eq!(v.split('.').count(), 3, "{lib} {v}");
        }
    }
    let mut reg = vsum_engine::stage::Registry::new();
    vsum_stages::media::register_media(&mut reg);
    assert_eq!(
        reg.names().collect::<Vec<_>>(),
        vec![
            "media.audio",
            "media.probe",
            "video.keyframes",
            "video.scenes"
        ]
    );
}
