//! A generated slide deck with known changes, shared by the slides tests and benches:
//! 12 slides on one template (title band, bullets, footer, a background shade that
//! shifts a little from slide to slide), a build-up step (a bullet appearing), a
//! scrolled screen of code, a slide with a clip playing in a region, and a cursor that
//! moves and parks. Made once with the `ffmpeg` CLI (drawtext, DejaVu fonts) and cached
//! under the target folder (`target/test-media/`) by a hash of the generator, so every
//! test and bench shares it and a change to the generator makes a new file.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 540;
pub const FPS: u32 = 25;
/// Seconds.
pub const DURATION: f64 = 44.0;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT_BOLD: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";
const FONT_MONO: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf";

/// One slide: shown from `start` to `end` seconds.
pub struct Slide {
    pub start: f64,
    pub end: f64,
    pub title: &'static str,
    pub bullets: &'static [&'static str],
}

pub const SLIDES: [Slide; 12] = [
    Slide {
        start: 0.0,
        end: 3.0,
        title: "Introduction to Vector Search",
        bullets: &["What a vector index stores", "Where search time goes"],
    },
    Slide {
        start: 3.0,
        end: 6.0,
        title: "Why Embeddings Matter",
        bullets: &[
            "Meaning becomes distance",
            "Similar items land close together",
        ],
    },
    Slide {
        start: 6.0,
        end: 9.0,
        title: "Building the Index",
        bullets: &[
            "Choose a distance metric",
            "Train the coarse quantizer",
            "Add vectors in batches",
        ],
    },
    Slide {
        start: 9.0,
        end: 12.0,
        title: "Query Planning Basics",
        bullets: &["Probe a few partitions", "Rerank the best candidates"],
    },
    Slide {
        start: 17.0,
        end: 23.0,
        title: "Live Demo Results",
        bullets: &["The clip plays on the right"],
    },
    Slide {
        start: 23.0,
        end: 26.0,
        title: "Measuring Recall",
        bullets: &["Compare against exact search", "Report recall at ten"],
    },
    Slide {
        start: 26.0,
        end: 29.0,
        title: "Caching Strategies",
        bullets: &["Keep hot partitions in memory", "Warm the cache at startup"],
    },
    Slide {
        start: 29.0,
        end: 32.0,
        title: "Scaling to Billions",
        bullets: &["Shard by partition", "Replicate the busy shards"],
    },
    Slide {
        start: 32.0,
        end: 35.0,
        title: "Failure Modes",
        bullets: &["Stale centroids after drift", "Skewed partitions"],
    },
    Slide {
        start: 35.0,
        end: 38.0,
        title: "Cost and Latency",
        bullets: &["Memory dominates the bill", "Tail latency needs headroom"],
    },
    Slide {
        start: 38.0,
        end: 41.0,
        title: "Lessons Learned",
        bullets: &["Measure before tuning", "Keep the pipeline simple"],
    },
    Slide {
        start: 41.0,
        end: 44.0,
        title: "Questions and Answers",
        bullets: &["Thank you for listening"],
    },
];

/// The build-up: on slide `BUILD.0` the last bullet appears at `BUILD.1` seconds.
pub const BUILD: (usize, f64) = (2, 7.5);
/// The code screen: shown from .0 to .1, scrolled from .2 for .3 seconds.
pub const SCROLL: (f64, f64, f64, f64) = (12.0, 17.0, 14.0, 0.6);
/// The clip plays in a region of the slide shown over this span (no change inside).
pub const MOTION: (f64, f64) = (17.0, 23.0);
/// A cursor moves over slide 1 from .0 for 1.5 s, then parks until .1 (no change).
pub const CURSOR: (f64, f64) = (3.5, 5.99);

/// Every change, in seconds: new slides, the build-up, entering the code screen and
/// its scroll.
pub fn changes() -> Vec<f64> {
    let mut c: Vec<f64> = SLIDES.iter().skip(1).map(|s| s.start).collect();
    c.extend([BUILD.1, SCROLL.0, SCROLL.2]);
    c.sort_by(f64::total_cmp);
    c.dedup();
    c
}

fn drawtext(
    text: &str,
    x: u32,
    y: u32,
    size: u32,
    color: &str,
    font: &str,
    enable: &str,
) -> String {
    format!(
        "drawtext=fontfile={font}:text='{text}':x={x}:y={y}:fontsize={size}:fontcolor={color}:enable='{enable}'"
    )
}

/// The ffmpeg arguments that make the deck at `dest`.
fn args(dest: &Path) -> Vec<String> {
    let mut f: Vec<String> = Vec::new();
    let n = SLIDES.len();
    for (i, s) in SLIDES.iter().enumerate() {
        let en = format!("between(t,{},{}-0.001)", s.start, s.end);
        let bg = format!(
            "0x{:02x}{:02x}{:02x}",
            0x1e + (i % 3) * 2,
            0x2a + (i % 2) * 3,
            0x44 + i % 4
        );
        f.push(format!(
            "drawbox=x=0:y=0:w=iw:h=ih:color={bg}:t=fill:enable='{en}'"
        ));
        f.push(format!(
            "drawbox=x=0:y=0:w=iw:h=96:color=0x2b3b5c:t=fill:enable='{en}'"
        ));
        f.push(drawtext(s.title, 48, 26, 44, "white", FONT_BOLD, &en));
        for (j, b) in s.bullets.iter().enumerate() {
            let e = if i == BUILD.0 && j + 1 == s.bullets.len() {
                format!("between(t,{},{}-0.001)", BUILD.1, s.end)
            } else {
                en.clone()
            };
            let text = format!("- {b}");
            f.push(drawtext(
                &text,
                72,
                150 + j as u32 * 64,
                30,
                "0xdfe6f0",
                FONT,
                &e,
            ));
        }
        f.push(drawtext(
            "vsum training deck",
            48,
            500,
            18,
            "0x8899bb",
            FONT,
            &en,
        ));
        let page = format!("{} of {n}", i + 1);
        f.push(drawtext(&page, 840, 500, 18, "0x8899bb", FONT, &en));
    }
    let doc: Vec<String> = (1..40)
        .map(|k| {
            let line = format!("{k:02}  let step_{k} = load_stage {k} and check it");
            drawtext(&line, 40, 20 + (k - 1) * 34, 24, "0x202020", FONT_MONO, "1")
        })
        .collect();
    let (sa, sb, st, sd) = SCROLL;
    let crop_y = format!(
        "if(lt(t,{st}),0,if(lt(t,{}),(t-{st})/{sd}*400,400))",
        st + sd
    );
    let (ca, cb) = CURSOR;
    let graph = format!(
        "[0:v]{chain}[s0];[1:v]{doc},crop=w={WIDTH}:h={HEIGHT}:x=0:y='{crop_y}'[doc];\
         [s0][doc]overlay=0:0:enable='between(t,{sa},{sb}-0.001)'[s1];\
         [2:v]scale=400:225[clip];\
         [s1][clip]overlay=520:200:enable='between(t,{ma},{mb}-0.001)'[s2];\
         [s2][3:v]overlay=x='200+min(t-{ca},1.5)*200':y='300+min(t-{ca},1.5)*40':enable='between(t,{ca},{cb})'[out]",
        chain = f.join(","),
        doc = doc.join(","),
        ma = MOTION.0,
        mb = MOTION.1,
    );
    let d = DURATION;
    let mut a: Vec<String> = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "lavfi",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(format!(
        "color=c=0x1e2a44:size={WIDTH}x{HEIGHT}:rate={FPS}:duration={d}"
    ));
    a.extend(["-f".into(), "lavfi".into(), "-i".into()]);
    a.push(format!(
        "color=c=0xf4f4f0:size={WIDTH}x{}:rate={FPS}:duration={d}",
        HEIGHT + 420
    ));
    a.extend(["-f".into(), "lavfi".into(), "-i".into()]);
    a.push(format!("testsrc2=size=400x225:rate={FPS}:duration={d}"));
    a.extend(["-f".into(), "lavfi".into(), "-i".into()]);
    a.push(format!("color=c=white:size=12x18:rate={FPS}:duration={d}"));
    a.extend([
        "-filter_complex".into(),
        graph,
        "-map".into(),
        "[out]".into(),
    ]);
    for s in [
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-t",
    ] {
        a.push(s.into());
    }
    a.push(d.to_string());
    a.push(dest.to_string_lossy().into_owned());
    a
}

/// `target/test-media`, beside the test binaries' temporary folder.
pub fn media_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("test-media")
}

/// The deck, made on first use (about 10 s) and then shared by every test and bench.
pub fn deck() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = media_dir();
    std::fs::create_dir_all(&dir).expect("test media folder");
    let key = blake3::hash(args(Path::new("OUT")).join("\u{1f}").as_bytes()).to_hex();
    let dest = dir.join(format!("deck-{}.mp4", &key[..12]));
    if dest.is_file() {
        return dest;
    }
    let tmp = dir.join(format!(".deck-{}-{}.mp4", &key[..12], std::process::id()));
    let out = Command::new("ffmpeg")
        .args(args(&tmp))
        .output()
        .expect("the ffmpeg CLI is installed (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "making the deck failed (fonts-dejavu-core installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &dest).expect("rename the deck into place");
    dest
}

/// Words of `s`, lower case, letters and digits only.
pub fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}
