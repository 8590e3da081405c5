//! Cutting a speech track into the bounded pieces Whisper decodes one at a time.
//!
//! With voice activity (`vad.json`), pieces cover speech only: nearby speech segments
//! are merged (short pauses stay in, long silences and music are left out, so Whisper
//! never sees them and cannot invent text over them), and no piece is longer than the
//! chunk limit. Without it, the track is cut every chunk limit at the quietest moment
//! of the last seconds before the limit, so a cut rarely splits a word. Either way
//! memory stays flat for any track length.

use super::audio::SAMPLE_RATE;

/// A span of samples `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Groups speech spans (sorted) into chunks of at most `max_len` samples, merging
/// spans separated by at most `max_gap` samples. Longer spans are split.
pub fn from_speech(speech: &[Span], total: u64, max_len: u64, max_gap: u64) -> Vec<Span> {
    let max_len = max_len.max(1);
    let mut out: Vec<Span> = Vec::new();
    for s in speech {
        let s = Span {
            start: s.start.min(total),
            end: s.end.min(total),
        };
        if s.is_empty() {
            continue;
        }
        let mut at = s.start;
        while at < s.end {
            let piece = Span {
                start: at,
                end: (at + max_len).min(s.end),
            };
            at = piece.end;
            match out.last_mut() {
                Some(c)
                    if piece.start <= c.end + max_gap
                        && piece.end.saturating_sub(c.start) <= max_len =>
                {
                    c.end = c.end.max(piece.end);
                }
                _ => out.push(piece),
            }
        }
    }
    out
}

/// Where to cut `samples` (a window that starts a chunk): the start of the quietest
/// 100 ms frame within its last `search` samples. Returns `samples.len()` when the
/// window is shorter than that.
pub fn quiet_cut(samples: &[f32], search: usize) -> usize {
    let frame = (SAMPLE_RATE / 10) as usize;
    if samples.len() <= search || search < frame {
        return samples.len();
    }
    let from = samples.len() - search;
    let mut best = (f32::INFINITY, samples.len());
    let mut at = from;
    while at + frame <= samples.len() {
        let e: f32 = samples[at..at + frame].iter().map(|v| v * v).sum();
        if e < best.0 {
            best = (e, at + frame / 2);
        }
        at += frame / 2;
    }
    best.1
}

/// Root mean square of a span, in dBFS (-inf for digital silence).
pub fn rms_db(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return f32::NEG_INFINITY;
    }
    let ms = samples.iter().map(|v| v * v).sum::<f32>() / samples.len() as f32;
    10.0 * ms.log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(a: u64, b: u64) -> Span {
        Span { start: a, end: b }
    }

    #[test]
    fn merges_close_speech_and_splits_long() {
        let speech = [sp(0, 10), sp(12, 20), sp(40, 45), sp(50, 120)];
        let c = from_speech(&speech, 100, 30, 5);
        assert_eq!(c, vec![sp(0, 20), sp(40, 45), sp(50, 80), sp(80, 100)]);
        assert!(from_speech(&[], 100, 30, 5).is_empty());
    }

    #[test]
    fn cuts_at_the_quietest_frame() {
        let mut s = vec![0.5f32; 16_000 * 10];
        for v in &mut s[16_000 * 8..16_000 * 8 + 3200] {
            *v = 0.0;
        }
        let cut = quiet_cut(&s, 16_000 * 5);
        assert!((16_000 * 8..16_000 * 8 + 3200).contains(&cut), "{cut}");
        assert_eq!(quiet_cut(&s[..100], 16_000), 100);
        assert_eq!(rms_db(&[0.0; 10]), f32::NEG_INFINITY);
        assert!((rms_db(&[0.5; 10]) - -6.0206).abs() < 0.01);
    }
}
