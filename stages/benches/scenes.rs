//! Media stage speed against the physical limit and the reference implementation.
//!
//! Generates (once, cached under the target folder) about 60 s of 720p H.264 made of
//! twelve different sources with a cut every 5 s, then prints one side-by-side table:
//! FFmpeg decoding alone (`ffmpeg -i X -f null -`), our `video.scenes` (default: full
//! decode choosing the keyframe pictures on the way; `pictures: false` with its fast
//! decoding; and neither), and PySceneDetect's ContentDetector when
//! `$PYTHON` (default `python3`) can import `scenedetect` and `cv2`, with frames per
//! second, the ratio to decode-only and the cut lists' agreement (precision, recall, F1
//! within one frame), on the H.264 file and an MPEG-4 part 2 copy. Then `video.keyframes`
//! time, the whole media pass (probe + scenes + keyframes) as a multiple of one decode
//! (pictures taken in the scenes decode, against keyframes seeking on their own), and
//! `media.audio` speed in multiples of real time.
//!
//! Run: `cargo bench -p vsum-stages --bench scenes` (set `PYTHON=/path/to/venv/bin/python`
//! to include PySceneDetect: `pip install scenedetect opencv-python-headless`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vsum_engine::events::EventSink;
use vsum_engine::stage::{CheckEnv, JobCtx, Scope, StageKind, Video};
use vsum_stages::media::{AudioStage, KeyframesStage, ProbeStage, SceneStage};

const SEGMENT_FRAMES: u32 = 125;
const RUNS: usize = 3;

/// Twelve visually different sources (lavfi), each becomes one 5 s scene.
const SOURCES: &[&str] = &[
    "testsrc2=size=1280x720:rate=25",
    "smptehdbars=size=1280x720:rate=25",
    "life=size=1280x720:rate=25:mold=10:ratio=0.1:life_color=#00ff00:death_color=#c83232",
    "mandelbrot=size=320x180:rate=25",
    "testsrc2=size=1280x720:rate=25,hue=h=120",
    "rgbtestsrc=size=1280x720:rate=25",
    "cellauto=size=1280x720:rate=25:rule=110",
    "testsrc=size=1280x720:rate=25",
    "color=c=navy:size=1280x720:rate=25,noise=alls=30:allf=t",
    "smptebars=size=1280x720:rate=25",
    "testsrc2=size=1280x720:rate=25,negate",
    "yuvtestsrc=size=1280x720:rate=25",
];

fn ffmpeg(args: &[String]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg CLI");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_video(dest: &Path) {
    let mut args: Vec<String> = Vec::new();
    for s in SOURCES {
        args.extend(["-f".into(), "lavfi".into(), "-i".into(), (*s).into()]);
    }
    let mut filter = String::new();
    for i in 0..SOURCES.len() {
        filter += &format!(
            "[{i}:v]trim=end_frame={SEGMENT_FRAMES},setpts=PTS-STARTPTS,scale=1280:720,setsar=1,format=yuv420p[v{i}];"
        );
    }
    for i in 0..SOURCES.len() {
        filter += &format!("[v{i}]");
    }
    filter += &format!("concat=n={}:v=1:a=0[out]", SOURCES.len());
    args.extend([
        "-filter_complex".into(),
        filter,
        "-map".into(),
        "[out]".into(),
    ]);
    for a in [
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "250", "-f", "mp4",
    ] {
        args.push(a.into());
    }
    args.push(dest.to_string_lossy().into_owned());
    ffmpeg(&args);
}

fn make_audio(dest: &Path) {
    let args: Vec<String> = [
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000:duration=600",
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=sample_rate=48000:duration=600:amplitude=0.05",
        "-filter_complex",
        "[0][1]amerge=inputs=2[a]",
        "-map",
        "[a]",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-f",
        "ipod",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dest.to_string_lossy().into_owned()])
    .collect();
    ffmpeg(&args);
}

/// CPU seconds (user + system) of this process and of its waited-for children, from
/// /proc (Linux); zeros elsewhere.
fn cpu_secs() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the ")" that ends the command name: utime is the 12th, stime 13th,
    // cutime 14th, cstime 15th (1-based, counting from the state field).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0; // USER_HZ on Linux
    ((f[11] + f[12]) / tick, (f[13] + f[14]) / tick)
}

/// Wall and CPU time of one measured run (best of the rounds).
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: f64,
}

impl Timing {
    fn none() -> Self {
        Timing {
            wall: Duration::MAX,
            cpu: f64::MAX,
        }
    }

    fn keep_best(&mut self, wall: Duration, cpu: f64) {
        self.wall = self.wall.min(wall);
        self.cpu = self.cpu.min(cpu);
    }
}

/// Runs `f` and records its wall time and CPU time (in-process or in children).
fn measure<T>(t: &mut Timing, f: impl FnOnce() -> T) -> T {
    let (s0, c0) = cpu_secs();
    let start = Instant::now();
    let r = f();
    let wall = start.elapsed();
    let (s1, c1) = cpu_secs();
    t.keep_best(wall, (s1 - s0) + (c1 - c0));
    r
}

fn run_kind(kind: &dyn StageKind, path: &Path, params: Value) -> (PathBuf, tempfile::TempDir) {
    run_with(kind, path, params, &[])
}

/// Runs one job of `kind` on `path`, with upstream stage folders.
fn run_with(
    kind: &dyn StageKind,
    path: &Path,
    params: Value,
    upstream: &[(&str, &Path)],
) -> (PathBuf, tempfile::TempDir) {
    let needs: Vec<(String, Scope)> = upstream
        .iter()
        .map(|(id, _)| (id.to_string(), Scope::Video))
        .collect();
    let env = CheckEnv {
        stage_id: "bench",
        scope: Scope::Video,
        needs: &needs,
    };
    let params = kind.check(&params, &env).expect("params");
    let out = tempfile::tempdir().expect("tempdir");
    let v = Video {
        path: path.to_path_buf(),
        rel: path.file_name().expect("name").into(),
        stem: "bench".into(),
        folder: "bench".into(),
        hash: "bench".into(),
    };
    let cancel = AtomicBool::new(false);
    let events = EventSink::new();
    let upstream = upstream
        .iter()
        .map(|(id, p)| (id.to_string(), p.to_path_buf()))
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut ctx = JobCtx {
        stage_id: "bench",
        params: &params,
        base_dir: path.parent().expect("parent"),
        output_root: path.parent().expect("parent"),
        out_dir: out.path(),
        video: Some(&v),
        upstream: &upstream,
        provenance: &Default::default(),
        batch: &[],
        previous: None,
        threads,
        cancel: &cancel,
        resources: None,
        force_cpu: false,
        events: &events,
        cores: None,
        held_cores: 0,
    };
    kind.run(&mut ctx).expect("job");
    (out.path().to_path_buf(), out)
}

fn cuts_of(scenes_json: &Path) -> (Vec<u64>, u64) {
    let v: Value =
        serde_json::from_slice(&std::fs::read(scenes_json).expect("scenes.json")).expect("json");
    let cuts = v["scenes"].as_array().expect("scenes")[1..]
        .iter()
        .map(|s| s["start_frame"].as_u64().expect("frame"))
        .collect();
    (cuts, v["frames"].as_u64().expect("frames"))
}

/// (precision, recall, F1) of `got` against `want`, matching cuts within one frame.
fn agreement(got: &[u64], want: &[u64]) -> (f64, f64, f64) {
    let mut used = vec![false; want.len()];
    let mut hits = 0usize;
    for g in got {
        if let Some(i) = (0..want.len()).find(|&i| !used[i] && want[i].abs_diff(*g) <= 1) {
            used[i] = true;
            hits += 1;
        }
    }
    let p = if got.is_empty() {
        1.0
    } else {
        hits as f64 / got.len() as f64
    };
    let r = if want.is_empty() {
        1.0
    } else {
        hits as f64 / want.len() as f64
    };
    let f = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    (p, r, f)
}

const PY: &str = r#"
import json, sys, time
from scenedetect import open_video, SceneManager, ContentDetector
v = open_video(sys.argv[1])
sm = SceneManager()
sm.add_detector(ContentDetector())
t = time.perf_counter()
c = time.process_time()
frames = sm.detect_scenes(v)
dt = time.perf_counter() - t
dc = time.process_time() - c
cuts = [c.frame_num for c in sm.get_cut_list(show_warning=False)]
print(json.dumps({"seconds": dt, "cpu": dc, "cuts": cuts, "frames": frames}))
"#;

/// One PySceneDetect run: (wall seconds, CPU seconds, cuts) of `detect_scenes` alone
/// (interpreter start and imports excluded), or `None` when it is not installed.
fn pyscenedetect(path: &Path) -> Option<(f64, f64, Vec<u64>)> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-c", PY])
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "PySceneDetect not run ({python}: {}); install it with `pip install scenedetect opencv-python-headless` and set PYTHON",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let cuts = v["cuts"]
        .as_array()?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    Some((v["seconds"].as_f64()?, v["cpu"].as_f64()?, cuts))
}

/// Times decode-only, our detector (fast and exact decoding) and PySceneDetect on one
/// video, interleaved, and prints the table. Returns decode-only's and our default's
/// best timings.
fn scenes_table(video: &Path, what: &str, truth: &[u64]) -> (Timing, Timing, Timing) {
    // Rounds interleave the contenders so a busy machine slows them alike; each keeps
    // its best round.
    let (mut t_decode, mut t_ours, mut t_fast, mut t_lf, mut t_py) = (
        Timing::none(),
        Timing::none(),
        Timing::none(),
        Timing::none(),
        Timing::none(),
    );
    let (mut ours, mut ours_fast, mut ours_lf, mut frames) =
        (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut py: Option<Vec<u64>> = None;
    let mut have_py = true;
    for round in 0..RUNS {
        eprintln!("round {}/{RUNS}", round + 1);
        measure(&mut t_decode, || {
            let st = Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
                .arg(video)
                .args(["-f", "null", "-"])
                .status()
                .expect("ffmpeg");
            assert!(st.success());
        });
        let (d, _keep) = measure(&mut t_ours, || run_kind(&SceneStage, video, json!({})));
        (ours, frames) = cuts_of(&d.join("scenes.json"));
        let (d, _keep) = measure(&mut t_fast, || {
            run_kind(&SceneStage, video, json!({"pictures": false}))
        });
        ours_fast = cuts_of(&d.join("scenes.json")).0;
        let (d, _keep) = measure(&mut t_lf, || {
            run_kind(
                &SceneStage,
                video,
                json!({"fast_decode": false, "pictures": false}),
            )
        });
        ours_lf = cuts_of(&d.join("scenes.json")).0;
        if have_py {
            match pyscenedetect(video) {
                Some((wall, cpu, cuts)) => {
                    t_py.keep_best(Duration::from_secs_f64(wall), cpu);
                    py = Some(cuts);
                }
                None => have_py = false,
            }
        }
    }

    let fps = |t: Timing| frames as f64 / t.wall.as_secs_f64();
    let ratio = |t: Timing| t_decode.wall.as_secs_f64() / t.wall.as_secs_f64();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!();
    println!(
        "video.scenes on {} ({frames} frames, {what}, {} true cuts), {threads} threads, best of {RUNS} interleaved rounds",
        video.file_name().expect("name").to_string_lossy(),
        truth.len()
    );
    println!();
    println!(
        "| run | wall s | CPU s | fps | speed vs decode-only | cuts | P / R / F1 vs PySceneDetect | F1 vs truth |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let vs_py = |c: &[u64]| match &py {
        Some(pc) => {
            let (p, r, f) = agreement(c, pc);
            format!("{p:.3} / {r:.3} / {f:.3}")
        }
        None => "n/a".into(),
    };
    let row = |name: &str, t: Timing, c: &[u64]| {
        println!(
            "| {name} | {:.2} | {:.2} | {:.0} | {:.2}x | {} | {} | {:.3} |",
            t.wall.as_secs_f64(),
            t.cpu,
            fps(t),
            ratio(t),
            c.len(),
            vs_py(c),
            agreement(c, truth).2
        );
    };
    println!(
        "| ffmpeg -i X -f null - (decode only) | {:.2} | {:.2} | {:.0} | 1.00x | - | - | - |",
        t_decode.wall.as_secs_f64(),
        t_decode.cpu,
        fps(t_decode)
    );
    row(
        "vsum video.scenes (default: pictures, full decode)",
        t_ours,
        &ours,
    );
    row(
        "vsum video.scenes (pictures: false, fast_decode)",
        t_fast,
        &ours_fast,
    );
    row(
        "vsum video.scenes (pictures: false, fast_decode: false)",
        t_lf,
        &ours_lf,
    );
    if let Some(pc) = &py {
        row(
            "PySceneDetect ContentDetector (detect_scenes only)",
            t_py,
            pc,
        );
        println!();
        println!(
            "vsum is {:.2}x as fast as PySceneDetect; fast_decode changed the cut list: {}",
            t_py.wall.as_secs_f64() / t_ours.wall.as_secs_f64(),
            ours_fast != ours_lf
        );
    }
    (t_decode, t_ours, t_fast)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-media");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let video = dir.join("scenes-720p-60s.mp4");
    if !video.exists() {
        eprintln!("generating {} ...", video.display());
        make_video(&dir.join("tmp.mp4"));
        std::fs::rename(dir.join("tmp.mp4"), &video).expect("rename");
    }
    let audio = dir.join("audio-600s.m4a");
    if !audio.exists() {
        eprintln!("generating {} ...", audio.display());
        make_audio(&dir.join("tmp.m4a"));
        std::fs::rename(dir.join("tmp.m4a"), &audio).expect("rename");
    }
    let truth: Vec<u64> = (1..SOURCES.len() as u64)
        .map(|i| i * u64::from(SEGMENT_FRAMES))
        .collect();
    let mpeg4 = dir.join("scenes-720p-60s-mpeg4.mov");
    if !mpeg4.exists() {
        let tmp = dir.join("tmp.mov");
        ffmpeg(&[
            "-i".into(),
            video.to_string_lossy().into_owned(),
            "-c:v".into(),
            "mpeg4".into(),
            "-q:v".into(),
            "4".into(),
            "-f".into(),
            "mov".into(),
            tmp.to_string_lossy().into_owned(),
        ]);
        std::fs::rename(&tmp, &mpeg4).expect("rename");
    }
    let (t_decode, t_scenes, t_fast) = scenes_table(&video, "1280x720 H.264", &truth);
    // Keyframes after scenes with pictures (copies them) and after scenes without
    // (decodes candidates itself, seeking).
    let (pass_dir, _keep) = run_kind(&SceneStage, &video, json!({}));
    let (fast_dir, _keep_fast) = run_kind(&SceneStage, &video, json!({"pictures": false}));
    let (mut t_copy, mut t_seek) = (Timing::none(), Timing::none());
    for _ in 0..RUNS {
        measure(&mut t_copy, || {
            run_with(&KeyframesStage, &video, json!({}), &[("scenes", &pass_dir)])
        });
        measure(&mut t_seek, || {
            run_with(&KeyframesStage, &video, json!({}), &[("scenes", &fast_dir)])
        });
    }
    println!();
    println!(
        "video.keyframes on the same file ({} scenes): {:.2} CPU s taking the scenes decode's pictures, {:.2} CPU s decoding 3 candidates a scene itself",
        truth.len() + 1,
        t_copy.cpu,
        t_seek.cpu
    );
    // The whole media pass a video gets (probe, scenes, keyframes) against decoding it
    // once: CPU seconds, which a busy machine disturbs less than wall time.
    let mut t_probe = Timing::none();
    for _ in 0..RUNS {
        measure(&mut t_probe, || run_kind(&ProbeStage, &video, json!({})));
    }
    let one = t_probe.cpu + t_scenes.cpu + t_copy.cpu;
    let two = t_probe.cpu + t_fast.cpu + t_seek.cpu;
    println!();
    println!(
        "media pass, one decode (default): probe {:.2} + scenes {:.2} + keyframes {:.2} = {one:.2} CPU s: {:.2}x one decode ({:.2} CPU s)",
        t_probe.cpu,
        t_scenes.cpu,
        t_copy.cpu,
        one / t_decode.cpu,
        t_decode.cpu
    );
    println!(
        "media pass, two decodes (scenes pictures: false): probe {:.2} + scenes {:.2} + keyframes {:.2} = {two:.2} CPU s: {:.2}x one decode",
        t_probe.cpu,
        t_fast.cpu,
        t_seek.cpu,
        two / t_decode.cpu
    );
    scenes_table(&mpeg4, "1280x720 MPEG-4 part 2", &truth);

    let mut t_audio = Timing::none();
    let mut dir_audio = None;
    for _ in 0..RUNS {
        dir_audio = Some(measure(&mut t_audio, || {
            run_kind(&AudioStage, &audio, json!({}))
        }));
    }
    let (dir_audio, _keep) = dir_audio.expect("ran");
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir_audio.join("audio.json")).expect("audio.json"))
            .expect("json");
    let secs = meta["duration"].as_f64().expect("duration");
    println!();
    println!(
        "media.audio: {secs:.0} s of 48 kHz stereo AAC -> 16 kHz mono WAV in {:.2} s ({:.2} CPU s) = {:.0}x real time",
        t_audio.wall.as_secs_f64(),
        t_audio.cpu,
        secs / t_audio.wall.as_secs_f64()
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!(
            "peak memory of this bench process: {}",
            line.trim_start_matches("VmHWM:").trim()
        );
    }
}
