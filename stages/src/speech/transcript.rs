//! A transcript and its renderings: `transcript.json`, `.srt`, `.vtt`, `.txt`.
//!
//! Times are seconds from the start of the video, absolute (chunk offsets already
//! added), monotonic and within the track. [`Transcript::normalize`] enforces that
//! before anything is written, so every rendering agrees.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub probability: f32,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Transcript {
    /// Language code (`en`), detected or given; `null` when nothing was decoded.
    pub language: Option<String>,
    /// Installed model name, or the model file's name.
    pub model: String,
    /// Length of the audio track in seconds.
    pub duration: f64,
    pub has_audio: bool,
    /// Why the transcript is empty, when it is for a known reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Speech regions decoded (from `vad.json`), or `false` for the whole track.
    pub vad: bool,
    pub segments: Vec<Segment>,
    /// What decoding had to do beyond the plain path (a window decoded again at a higher
    /// temperature, a repeated segment dropped, the CPU used after a GPU failure), with
    /// where it happened. Never mixed into the text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Note>,
}

impl vsum_engine::contract::Output for Transcript {
    const FILE: &'static str = "transcript.json";
}

/// One thing decoding did that a reader of the transcript should know about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// `fallback` (decoded again hotter), `repeat_dropped`, ...
    pub kind: String,
    /// Seconds from the start of the video where it happened.
    pub at: f64,
    pub detail: String,
}

/// Lowercase words of a text, punctuation dropped: what repetition is judged on.
pub fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Does `b` repeat `a`? The same words, or (for texts of three words or more) at least
/// 60% of `b`'s word trigrams already in `a`: the signature of a decoder loop, which
/// says one sentence again and again with small changes.
pub fn repeats(a: &str, b: &str) -> bool {
    let (wa, wb) = (words_of(a), words_of(b));
    if wb.is_empty() {
        return false;
    }
    if wa == wb {
        return true;
    }
    if wb.len() < 3 || wa.len() < 3 {
        return false;
    }
    let grams = |w: &[String]| -> std::collections::HashSet<String> {
        w.windows(3).map(|g| g.join(" ")).collect()
    };
    let (ga, gb) = (grams(&wa), grams(&wb));
    let shared = gb.iter().filter(|g| ga.contains(*g)).count();
    shared * 5 >= gb.len() * 3
}

/// Drops every segment that repeats the segment kept before it (see [`repeats`]) and
/// returns a note for each run of drops.
pub fn drop_repeats(segments: &mut Vec<Segment>) -> Vec<Note> {
    let mut notes: Vec<Note> = Vec::new();
    let mut kept: Vec<Segment> = Vec::with_capacity(segments.len());
    let mut run: Option<(f64, f64, usize, String)> = None;
    let flush = |run: &mut Option<(f64, f64, usize, String)>, notes: &mut Vec<Note>| {
        if let Some((at, end, n, text)) = run.take() {
            notes.push(Note {
                kind: "repeat_dropped".into(),
                at: (at * 1000.0).round() / 1000.0,
                detail: format!(
                    "dropped {n} segment{} from {at:.1} s to {end:.1} s repeating \"{text}\" (a decoder loop)",
                    if n == 1 { "" } else { "s" }
                ),
            });
        }
    };
    for s in segments.drain(..) {
        match kept.last() {
            Some(prev) if repeats(&prev.text, &s.text) => {
                let r = run.get_or_insert((s.start, s.end, 0, prev.text.trim().to_string()));
                r.1 = s.end;
                r.2 += 1;
            }
            _ => {
                flush(&mut run, &mut notes);
                kept.push(s);
            }
        }
    }
    flush(&mut run, &mut notes);
    *segments = kept;
    notes
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Moves segment bounds that fall in a pause between speech regions (from VAD) onto
/// the speech: a start to where the next region begins, an end to where the region
/// before it ended. Whisper's segments follow each other without gaps (one starts where
/// the one before ended), so after a pause a segment would otherwise start in the
/// silence before its first word, and a chapter or search hit would open on silence.
/// `speech` is sorted; a bound within 0.1 s of speech stays. Word times go with their
/// segment's bounds: a word that began in the pause begins with the speech, one that
/// ended after it ends with the speech. Returns the bounds moved.
pub fn snap_to_speech(segments: &mut [Segment], speech: &[(f64, f64)]) -> usize {
    const SLACK: f64 = 0.1;
    let mut moved = 0;
    for s in segments.iter_mut() {
        // The first region that does not end before the start.
        let i = speech.partition_point(|r| r.1 + SLACK <= s.start);
        if let Some(&(a, _)) = speech.get(i)
            && a - SLACK > s.start
            && a < s.end
        {
            s.start = a;
            for w in s.words.iter_mut().flatten() {
                w.start = w.start.max(a);
                w.end = w.end.max(w.start);
            }
            moved += 1;
        }
        // The last region that starts before the end.
        let j = speech.partition_point(|r| r.0 < s.end + SLACK);
        if j > 0 {
            let b = speech[j - 1].1;
            if b + SLACK < s.end && b > s.start {
                s.end = b;
                for w in s.words.iter_mut().flatten() {
                    w.end = w.end.min(b);
                    w.start = w.start.min(w.end);
                }
                moved += 1;
            }
        }
    }
    moved
}

impl Transcript {
    /// Sorts segments and words, clamps them into [0, duration], makes them
    /// monotonic (a start never before the previous end), rounds to milliseconds and
    /// drops empty texts.
    pub fn normalize(&mut self) {
        let dur = self.duration.max(0.0);
        self.segments.retain(|s| !s.text.trim().is_empty());
        self.segments
            .sort_by(|a, b| a.start.total_cmp(&b.start).then(a.end.total_cmp(&b.end)));
        let mut prev_end = 0.0f64;
        for s in &mut self.segments {
            s.text = s.text.trim().to_string();
            s.start = round3(s.start.clamp(prev_end, dur));
            s.end = round3(s.end.clamp(s.start, dur));
            if let Some(words) = &mut s.words {
                words.retain(|w| !w.text.trim().is_empty());
                let mut wprev = s.start;
                for w in words.iter_mut() {
                    w.start = round3(w.start.clamp(wprev, s.end));
                    w.end = round3(w.end.clamp(w.start, s.end));
                    wprev = w.end;
                }
            }
            prev_end = s.end;
        }
    }

    /// SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, text, blank line.
    pub fn srt(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.segments.iter().enumerate() {
            out.push_str(&format!(
                "{}\n{} --> {}\n{}\n\n",
                i + 1,
                clock(s.start, ','),
                clock(s.end, ','),
                cue_text(&s.text)
            ));
        }
        out
    }

    /// WebVTT: `WEBVTT` header, then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues.
    pub fn vtt(&self) -> String {
        let mut out = String::from("WEBVTT\n\n");
        for s in &self.segments {
            out.push_str(&format!(
                "{} --> {}\n{}\n\n",
                clock(s.start, '.'),
                clock(s.end, '.'),
                cue_text(&s.text).replace("-->", "->")
            ));
        }
        out
    }

    /// Plain text, one segment per line (empty with a reason line when nothing was said).
    pub fn txt(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push_str(&s.text);
            out.push('\n');
        }
        out
    }

    /// All segment texts joined with spaces.
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Text of a cue: never empty lines inside (they would end the cue).
fn cue_text(t: &str) -> String {
    t.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `HH:MM:SS<sep>mmm`.
pub fn clock(secs: f64, sep: char) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: f64, end: f64, text: &str) -> Segment {
        Segment {
            start,
            end,
            text: text.into(),
            avg_logprob: -0.2,
            no_speech_prob: 0.01,
            words: None,
        }
    }

    fn t(segments: Vec<Segment>) -> Transcript {
        Transcript {
            language: Some("en".into()),
            model: "m".into(),
            duration: 10.0,
            has_audio: true,
            reason: None,
            vad: false,
            segments,
            notes: Vec::new(),
        }
    }

    #[test]
    fn repeated_segments_are_dropped_and_noted() {
        let mut segs = vec![
            seg(0.0, 4.0, "Welcome to the release review."),
            seg(
                4.0,
                8.0,
                "The National Snowchere is a great opportunity to see the world.",
            ),
            seg(
                8.0,
                12.0,
                "The National Snowchere is a great opportunity to see the world.",
            ),
            seg(
                12.0,
                16.0,
                "the national snowchere is a great opportunity to see the world!",
            ),
            seg(
                16.0,
                20.0,
                "The National Snowchere is a great chance to see the world.",
            ),
            seg(20.0, 24.0, "Now we talk about backups."),
            seg(24.0, 26.0, "Yes."),
            seg(26.0, 28.0, "Yes."),
        ];
        let notes = drop_repeats(&mut segs);
        let texts: Vec<&str> = segs.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Welcome to the release review.",
                "The National Snowchere is a great opportunity to see the world.",
                "Now we talk about backups.",
                "Yes."
            ]
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(notes[0].kind, "repeat_dropped");
        assert_eq!(notes[0].at, 8.0);
        assert!(
            notes[0].detail.contains("dropped 3 segments"),
            "{}",
            notes[0].detail
        );
        // Different sentences that share a few words are not repeats.
        assert!(!repeats(
            "Back up the database before the release.",
            "Restore the database after the release."
        ));
    }

    #[test]
    fn segments_in_a_pause_are_moved_onto_the_speech() {
        let seg = |start: f64, end: f64| Segment {
            start,
            end,
            text: "x".into(),
            ..Default::default()
        };
        // Speech 0-3 s and 5-9 s; Whisper's second segment starts where the first
        // ended (3.2 s, in the pause) and the first runs into the pause.
        let speech = [(0.0, 3.0), (5.0, 9.0)];
        let mut segs = vec![seg(0.0, 4.0), seg(4.0, 7.0), seg(7.0, 9.05)];
        let word = |start: f64, end: f64| Word {
            start,
            end,
            text: "w".into(),
            probability: 1.0,
        };
        segs[0].words = Some(vec![word(0.2, 2.0), word(2.1, 3.6)]);
        segs[1].words = Some(vec![word(4.2, 5.4), word(5.5, 6.9)]);
        assert_eq!(snap_to_speech(&mut segs, &speech), 2);
        assert_eq!((segs[0].start, segs[0].end), (0.0, 3.0));
        assert_eq!((segs[1].start, segs[1].end), (5.0, 7.0));
        // Their words move with them, inside the segment.
        let times = |s: &Segment| -> Vec<(f64, f64)> {
            s.words.iter().flatten().map(|w| (w.start, w.end)).collect()
        };
        assert_eq!(times(&segs[0]), [(0.2, 2.0), (2.1, 3.0)]);
        assert_eq!(times(&segs[1]), [(5.0, 5.4), (5.5, 6.9)]);
        // Inside the speech, or within 0.1 s of it: unchanged.
        assert_eq!((segs[2].start, segs[2].end), (7.0, 9.05));
        // A segment wholly in a pause is left alone (nothing to snap to inside it).
        let mut lone = vec![seg(3.5, 4.5)];
        assert_eq!(snap_to_speech(&mut lone, &speech), 0);
        // No regions: nothing moves.
        assert_eq!(snap_to_speech(&mut segs, &[]), 0);
    }

    #[test]
    fn normalize_makes_times_monotonic_and_bounded() {
        let mut x = t(vec![
            seg(5.0, 12.0, " later "),
            seg(1.0, 5.5, "first"),
            seg(2.0, 3.0, "  "),
        ]);
        x.normalize();
        assert_eq!(x.segments.len(), 2);
        assert_eq!((x.segments[0].start, x.segments[0].end), (1.0, 5.5));
        assert_eq!(
            (
                x.segments[1].start,
                x.segments[1].end,
                x.segments[1].text.as_str()
            ),
            (5.5, 10.0, "later")
        );
    }

    #[test]
    fn renders_srt_vtt_and_txt() {
        let mut x = t(vec![
            seg(0.0, 1.5, "Hello there."),
            seg(3661.25, 3662.0, "Bye --> now"),
        ]);
        x.duration = 4000.0;
        x.normalize();
        assert_eq!(
            x.srt(),
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:01:01,250 --> 01:01:02,000\nBye --> now\n\n"
        );
        assert_eq!(
            x.vtt(),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n01:01:01.250 --> 01:01:02.000\nBye -> now\n\n"
        );
        assert_eq!(x.txt(), "Hello there.\nBye --> now\n");
    }
}
