//! A long, realistic test talk, generated once and shared by every test that needs it.
//!
//! Twelve paragraphs on twelve topics, read by four espeak-ng voices with natural
//! pauses, over a slide deck (one slide per paragraph, the topic as its title, on one
//! template): about five and a half minutes, the length at which long-form decoding and
//! chaptering go wrong. The ground truth (each paragraph's text, voice, title, start
//! and end) comes with it. Generation costs a few seconds; the result is cached under
//! the target folder, keyed by a hash of everything that shapes it, and written
//! atomically, so tests running in parallel share one copy.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One paragraph of the talk and where it is on the timeline.
#[derive(Debug, Clone)]
pub struct Paragraph {
    pub title: &'static str,
    pub text: &'static str,
    pub voice: &'static str,
    /// Seconds from the start of the video.
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Clone)]
pub struct Talk {
    pub video: PathBuf,
    pub paragraphs: Vec<Paragraph>,
    pub duration: f64,
}

impl Talk {
    /// Every word said, in order.
    pub fn text(&self) -> String {
        self.paragraphs
            .iter()
            .map(|p| p.text)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// (title, text) of each paragraph.
pub const PARAGRAPHS: [(&str, &str); 12] = [
    (
        "Welcome and goals",
        "Good morning everyone and welcome to the quarterly engineering review. Today we will walk through the way our team builds software, from the first idea to the moment a customer sees a new feature. I will talk about planning, testing, releases, and what we learned from the problems we had this year. Please write down your questions, and we will answer them at the end.",
    ),
    (
        "Planning the work",
        "Every piece of work starts with a short document. The document explains the problem, who is affected, and how we will know that the problem is solved. We keep these documents small on purpose. A change that takes more than two weeks is split into smaller steps, because small steps are easier to review, easier to test, and much easier to undo when something goes wrong.",
    ),
    (
        "Code review",
        "Before any change is merged, another engineer reads it carefully. A good review looks for mistakes, but it also asks if the change is easy to understand for the next person. We try to answer every review request within one working day. When a review turns into a long discussion, we stop writing comments and sit together in one room instead, which usually saves a lot of time.",
    ),
    (
        "Automated testing",
        "Our automated tests run on every change. Small tests check the logic of a single function, and larger tests start the entire service with a real database. When a test breaks only some of the time, we treat it like a real problem, and we never call it bad luck. Every week we fix the worst of these tests, since a test that nobody believes is worse than having no test at all.",
    ),
    (
        "Database backups",
        "Let me talk about the database. We save a full copy of the data every night and keep the copies for thirty days in a separate building. A copy which has never been restored is only a promise, so once a month we restore the latest copy into a clean machine and make sure all the data is there. Last spring this practice saved us when a disk failed during a storm.",
    ),
    (
        "The release process",
        "Releases happen every Tuesday morning. First we prepare a release candidate and give it to a small group of internal users. If the number of errors stays low for two hours, the release goes out to everyone in small steps. Each step is watched on a dashboard, and every engineer can pause the release with one button if something looks wrong.",
    ),
    (
        "Rolling back a release",
        "Sometimes a release does go wrong, and in that moment a quick reaction matters more than pride. Rolling back means putting the older release back in place while we search for the cause. We practice this regularly, so nobody needs to search for instructions in the middle of the night. The rule is simple: if in doubt, roll back first and investigate later, when customers are safe again.",
    ),
    (
        "Monitoring and alerts",
        "Monitoring tells us how the system behaves for real users. We measure response time, error rate, and how full the queues are. Alerts wake someone up only when a customer is affected right now. Everything else goes into a daily report. Too many alarms teach people to ignore them, so we delete any alert that nobody acted on during the last three months.",
    ),
    (
        "Incident response",
        "When something breaks, one person takes the role of incident leader. The leader does not fix the problem alone. Instead, the leader keeps a written timeline, decides which person does each task, and sends a short update to the support team every thirty minutes. After the incident we write a review that focuses on the system and the process, never on blaming a person.",
    ),
    (
        "Security practices",
        "Security is part of our daily work, not a separate project. Every service receives its passwords from one central place, and no password is ever stored in the source code. We install new versions of our software packages every week, and an automatic tool warns us about known problems. Twice a year an outside company tries to break into our systems, and we fix what they find before the next release.",
    ),
    (
        "Onboarding new engineers",
        "New engineers ship a small change during their first week. To make that possible, one script prepares the new laptop, and every project comes with a short guide that explains how to build it and run the tests. Each new person gets a mentor for the first month. The mentor answers questions, reviews the first changes, and introduces the new colleague to the rest of the company.",
    ),
    (
        "Summary and questions",
        "To sum up, we keep every change small, we check everything, we trust our tests, and we practice the hard parts before we really need them. In the coming months we will focus on faster builds and better documentation. Thank you all for listening. Now I would like to hear your questions, so please raise your hand and wait for the microphone.",
    ),
];

/// The four voices, used in turn.
pub const VOICES: [&str; 4] = ["en-us", "en-gb", "en-gb-x-rp", "en-us+m3"];

/// Seconds of silence before the first paragraph, and between paragraphs.
const LEAD_IN: f64 = 1.0;
const PAUSE: f64 = 1.4;
/// Words per minute for espeak-ng: a calm speaker.
const RATE: u32 = 150;

/// Where generated media lives: shared by all tests of this build.
fn media_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("media")
}

/// Samples (mono i16) and rate of a WAV file.
fn read_wav(path: &Path) -> (Vec<i16>, u32) {
    let mut r = hound::WavReader::open(path).unwrap();
    let rate = r.spec().sample_rate;
    (r.samples::<i16>().map(|s| s.unwrap()).collect(), rate)
}

/// The long talk: generated on first use, then reused.
pub fn long_talk() -> Talk {
    let key = {
        let mut h = blake3::Hasher::new();
        h.update(b"talk v1");
        for (t, x) in PARAGRAPHS {
            h.update(t.as_bytes());
            h.update(x.as_bytes());
        }
        for v in VOICES {
            h.update(v.as_bytes());
        }
        h.update(format!("{LEAD_IN} {PAUSE} {RATE}").as_bytes());
        h.finalize().to_hex()[..12].to_string()
    };
    let dir = media_dir().join(format!("talk-{key}"));
    let video = dir.join("talk.mp4");

    // Lay out the paragraphs from the (deterministic) lengths of their speech.
    let work = tempfile::tempdir_in({
        std::fs::create_dir_all(media_dir()).unwrap();
        media_dir()
    })
    .unwrap();
    let mut pcm: Vec<i16> = Vec::new();
    let mut rate = 22_050;
    let mut paragraphs = Vec::new();
    for (i, (title, text)) in PARAGRAPHS.iter().enumerate() {
        let voice = VOICES[i % VOICES.len()];
        let wav = work.path().join(format!("p{i}.wav"));
        super::run_ok(
            Command::new("espeak-ng")
                .args(["-v", voice, "-s", &RATE.to_string(), "-w"])
                .arg(&wav)
                .arg(text),
        );
        let (s, r) = read_wav(&wav);
        rate = r;
        let gap = if i == 0 { LEAD_IN } else { PAUSE };
        pcm.extend(std::iter::repeat_n(0i16, (gap * r as f64) as usize));
        let start = pcm.len() as f64 / r as f64;
        pcm.extend_from_slice(&s);
        paragraphs.push(Paragraph {
            title,
            text,
            voice,
            start,
            end: pcm.len() as f64 / r as f64,
        });
    }
    pcm.extend(std::iter::repeat_n(0i16, rate as usize));
    let duration = pcm.len() as f64 / rate as f64;
    let talk = Talk {
        video: video.clone(),
        paragraphs,
        duration,
    };
    if video.is_file() {
        return talk;
    }

    let wav = work.path().join("talk.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for s in &pcm {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();

    // The deck: one template, the topic as the title, a slide number, a shade that
    // drifts a little from slide to slide.
    let font = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";
    let mut vf = Vec::new();
    let n = talk.paragraphs.len();
    for (i, p) in talk.paragraphs.iter().enumerate() {
        let from = if i == 0 { 0.0 } else { p.start - PAUSE / 2.0 };
        let to = if i + 1 == n {
            duration + 1.0
        } else {
            talk.paragraphs[i + 1].start - PAUSE / 2.0
        };
        let enable = format!("enable='between(t,{from:.3},{to:.3})'");
        let shade = 0x30 + 2 * i as u32;
        vf.push(format!(
            "drawbox=x=0:y=0:w=iw:h=ih:color=0x{shade:02x}{shade:02x}60@1:t=fill:{enable}"
        ));
        vf.push(format!(
            "drawtext=fontfile={font}:text='{}':fontsize=34:fontcolor=white:x=40:y=40:{enable}",
            p.title.replace(['\'', ':'], " ")
        ));
        vf.push(format!(
            "drawtext=fontfile={font}:text='{} / {n}':fontsize=18:fontcolor=0xdddddd:x=w-100:y=h-40:{enable}",
            i + 1
        ));
    }
    vf.push("drawbox=x=40:y=100:w=560:h=4:color=white@1:t=fill".into());
    let tmp_video = work.path().join("talk.mp4");
    super::run_ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("color=c=0x303060:s=640x360:r=5:d={duration:.3}"))
            .arg("-i")
            .arg(&wav)
            .args(["-vf", &vf.join(",")])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "aac", "-b:a", "96k", "-shortest"])
            .arg(&tmp_video),
    );
    std::fs::create_dir_all(&dir).unwrap();
    // Atomic: a concurrent test sees the whole file or none.
    let staged = dir.join(format!(".talk.{}.mp4", std::process::id()));
    std::fs::copy(&tmp_video, &staged).unwrap();
    std::fs::rename(&staged, &video).unwrap();
    talk
}

/// Lowercase words without punctuation, numbers as spoken (`30` -> `thirty`): what
/// word error rate is computed on.
pub fn norm_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .flat_map(|w| match w.parse::<u32>() {
            Ok(n) if n < 100 => spoken(n),
            _ => vec![w.to_lowercase().replace('\'', "")],
        })
        .collect()
}

/// A number below 100 as words.
fn spoken(n: u32) -> Vec<String> {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    match n {
        0..=19 => vec![ONES[n as usize].to_string()],
        _ if n.is_multiple_of(10) => vec![TENS[(n / 10) as usize].to_string()],
        _ => vec![
            TENS[(n / 10) as usize].to_string(),
            ONES[(n % 10) as usize].to_string(),
        ],
    }
}

/// An alignment step between reference and hypothesis words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Match(usize, usize),
    Sub(usize, usize),
    Del(usize),
    Ins(usize),
}

/// Levenshtein alignment of two word sequences (reference, hypothesis).
pub fn align(r: &[String], h: &[String]) -> Vec<Step> {
    let (n, m) = (r.len(), h.len());
    let mut d = vec![vec![0u32; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i as u32;
    }
    for (j, v) in d[0].iter_mut().enumerate() {
        *v = j as u32;
    }
    for i in 1..=n {
        for j in 1..=m {
            let c = u32::from(r[i - 1] != h[j - 1]);
            d[i][j] = (d[i - 1][j - 1] + c)
                .min(d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1);
        }
    }
    let (mut i, mut j) = (n, m);
    let mut steps = Vec::new();
    while i > 0 || j > 0 {
        if i > 0 && j > 0 && d[i][j] == d[i - 1][j - 1] + u32::from(r[i - 1] != h[j - 1]) {
            steps.push(if r[i - 1] == h[j - 1] {
                Step::Match(i - 1, j - 1)
            } else {
                Step::Sub(i - 1, j - 1)
            });
            i -= 1;
            j -= 1;
        } else if i > 0 && d[i][j] == d[i - 1][j] + 1 {
            steps.push(Step::Del(i - 1));
            i -= 1;
        } else {
            steps.push(Step::Ins(j - 1));
            j -= 1;
        }
    }
    steps.reverse();
    steps
}

/// Word error rate of `hyp` against `reference` (normalized words).
pub fn wer(reference: &str, hyp: &str) -> f64 {
    let (r, h) = (norm_words(reference), norm_words(hyp));
    let errors = align(&r, &h)
        .iter()
        .filter(|s| !matches!(s, Step::Match(..)))
        .count();
    errors as f64 / r.len().max(1) as f64
}
