//! Test helpers: media made on the spot with the `ffmpeg` CLI and `espeak-ng` (real
//! files, no mocks), and a way to run one stage kind the way the engine does.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use serde_json::Value;
use vsum_engine::events::EventSink;
use vsum_engine::stage::{CheckEnv, JobCtx, Scope, StageError, StageKind, Video};

/// Runs `ffmpeg -y` quietly with `args`; panics with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("the ffmpeg CLI is installed (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Speech as a WAV file, spoken by espeak-ng.
pub fn speech(dest: &Path, text: &str) {
    let out = Command::new("espeak-ng")
        .arg("-w")
        .arg(dest)
        .arg(text)
        .output()
        .expect("espeak-ng is installed (apt-get install espeak-ng)");
    assert!(
        out.status.success(),
        "espeak-ng failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Frame rate of the generated cut videos.
pub const FPS: u32 = 25;

/// Where one source of a cut video starts, in frames, and how long it runs.
pub struct Segment {
    pub source: &'static str,
    pub frames: u32,
}

/// Four clearly different sources. Cuts fall at frames 50, 90 and 150.
pub fn segments() -> Vec<Segment> {
    vec![
        Segment {
            source: "testsrc",
            frames: 50,
        },
        Segment {
            source: "smptebars",
            frames: 40,
        },
        Segment {
            source: "color=c=red",
            frames: 60,
        },
        Segment {
            source: "mandelbrot",
            frames: 50,
        },
    ]
}

pub fn cut_frames() -> Vec<u64> {
    let mut at = 0u64;
    let mut cuts = Vec::new();
    for s in segments().iter().take(segments().len() - 1) {
        at += u64::from(s.frames);
        cuts.push(at);
    }
    cuts
}

/// Concatenates [`segments`] at `w`x`h` into `dest` with the given output options.
pub fn cut_video(dest: &Path, w: u32, h: u32, out_opts: &[&str]) {
    let segs = segments();
    let mut args: Vec<String> = Vec::new();
    for s in &segs {
        let src = if s.source.contains('=') {
            format!("{}:size={w}x{h}:rate={FPS}", s.source)
        } else {
            format!("{}=size={w}x{h}:rate={FPS}", s.source)
        };
        args.extend(["-f".into(), "lavfi".into(), "-i".into(), src]);
    }
    let mut filter = String::new();
    for (i, s) in segs.iter().enumerate() {
        filter += &format!(
            "[{i}:v]trim=end_frame={},setpts=PTS-STARTPTS,format=yuv420p[v{i}];",
            s.frames
        );
    }
    for i in 0..segs.len() {
        filter += &format!("[v{i}]");
    }
    filter += &format!("concat=n={}:v=1:a=0[out]", segs.len());
    args.extend([
        "-filter_complex".into(),
        filter,
        "-map".into(),
        "[out]".into(),
    ]);
    args.extend(out_opts.iter().map(|s| s.to_string()));
    args.push(dest.to_string_lossy().into_owned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ffmpeg(&refs);
}

/// The outcome of one job: its result and its output folder.
pub struct Job {
    pub result: Result<(), StageError>,
    pub out: tempfile::TempDir,
}

impl Job {
    pub fn ok(&self) -> &Path {
        if let Err(e) = &self.result {
            panic!("job failed: {} (hint: {:?})", e.message, e.hint);
        }
        self.out.path()
    }

    pub fn err(&self) -> &StageError {
        match &self.result {
            Ok(()) => panic!("job succeeded, expected an error"),
            Err(e) => e,
        }
    }

    pub fn json(&self, name: &str) -> Value {
        let p = self.ok().join(name);
        let text = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_slice(&text).expect("valid JSON")
    }

    pub fn has(&self, name: &str) -> bool {
        self.out.path().join(name).exists()
    }
}

/// Checks `params` like the manifest loader, then runs one job of `kind` on `video`
/// with `upstream` (stage id -> folder), as the engine's scheduler would.
pub fn run(kind: &dyn StageKind, video: &Path, params: Value, upstream: &[(&str, &Path)]) -> Job {
    let needs: Vec<(String, Scope)> = upstream
        .iter()
        .map(|(id, _)| (id.to_string(), Scope::Video))
        .collect();
    let env = CheckEnv {
        stage_id: "under_test",
        scope: Scope::Video,
        needs: &needs,
    };
    let params = kind
        .check(&params, &env)
        .unwrap_or_else(|e| panic!("params rejected: {e:?}"));
    let out = tempfile::tempdir().expect("tempdir");
    let v = Video {
        path: video.to_path_buf(),
        rel: PathBuf::from(video.file_name().expect("file name")),
        stem: video.file_stem().expect("stem").to_os_string(),
        folder: video.file_stem().expect("stem").to_os_string(),
        hash: "not-hashed-in-tests".into(),
    };
    let upstream: BTreeMap<String, PathBuf> = upstream
        .iter()
        .map(|(id, p)| (id.to_string(), p.to_path_buf()))
        .collect();
    let cancel = AtomicBool::new(false);
    let events = EventSink::new();
    let base = video.parent().expect("parent").to_path_buf();
    let mut ctx = JobCtx {
        stage_id: "under_test",
        params: &params,
        base_dir: &base,
        output_root: &base,
        out_dir: out.path(),
        video: Some(&v),
        upstream: &upstream,
        provenance: &Default::default(),
        batch: &[],
        previous: None,
        threads: 2,
        cancel: &cancel,
        resources: None,
        force_cpu: false,
        events: &events,
        cores: None,
        held_cores: 0,
    };
    let result = kind.run(&mut ctx);
    Job { result, out }
}

/// A parsed 16-bit PCM WAV: (sample rate, channels, samples per channel, samples).
pub fn read_wav(path: &Path) -> (u32, u16, usize, Vec<i16>) {
    let d = std::fs::read(path).expect("wav");
    assert_eq!(&d[0..4], b"RIFF");
    assert_eq!(&d[8..16], b"WAVEfmt ");
    let u16_at = |i: usize| u16::from_le_bytes([d[i], d[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    assert_eq!(u16_at(20), 1, "PCM");
    let channels = u16_at(22);
    let rate = u32_at(24);
    assert_eq!(u16_at(34), 16, "16-bit");
    assert_eq!(&d[36..40], b"data");
    let len = u32_at(40) as usize;
    assert_eq!(u32_at(4) as usize, 36 + len, "RIFF size");
    assert_eq!(d.len(), 44 + len, "data size matches the file");
    let samples: Vec<i16> = d[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (
        rate,
        channels,
        samples.len() / usize::from(channels),
        samples,
    )
}

/// A decoded JPEG as (width, height, RGB bytes).
pub fn read_jpeg(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    (img.width(), img.height(), img.into_raw())
}
