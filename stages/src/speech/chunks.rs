//! Cutting a speech track into the windows Whisper decodes one at a time.
//!
//! Whisper sees 30 seconds at once; the reference implementations (openai-whisper's
//! `transcribe`, faster-whisper) decode long audio as a sequence of such windows, and
//! that is what keeps a long talk from drifting into a repetition loop. With voice
//! activity (`vad.json`), a [`Window`] packs whole speech regions, in order, up to the
//! window length: silence between regions is shortened to a natural pause (long
//! silences and music are left out, so Whisper never sees them and cannot invent text
//! over them), and a window is never cut inside a speech region unless one region
//! alone is longer than a window. Each window keeps the map from its own time to the
//! track's, so timestamps come back absolute. Without VAD, the track is cut every
//! window length at the quietest moment of the last seconds before the limit. Either
//! way memory stays flat for any track length.

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

/// How speech regions are packed into windows (all lengths in samples).
#[derive(Debug, Clone, Copy)]
pub struct Packing {
    /// Longest window (Whisper's 30 s at most).
    pub max_len: u64,
    /// A pause up to this long is kept whole inside a window.
    pub keep_gap: u64,
    /// Of a longer pause, this much is kept after one region and before the next.
    pub gap_pad: u64,
    /// Extra audio taken before a window's first region and after its last (VAD
    /// boundaries are tight; Whisper needs the first phoneme whole).
    pub edge_pad: u64,
    /// When a window is full, the cut goes at the longest pause among the regions
    /// that start within this much of the window's end.
    pub cut_search: u64,
}

impl Packing {
    pub fn seconds(max_len: f64) -> Packing {
        let s = |x: f64| (x * SAMPLE_RATE as f64).round() as u64;
        Packing {
            max_len: s(max_len).max(1),
            keep_gap: s(1.0),
            gap_pad: s(0.4),
            edge_pad: s(0.2),
            cut_search: s(8.0),
        }
    }
}

/// One decoding window: pieces of the track, in order, played back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub pieces: Vec<Span>,
    /// The speech inside each piece (the piece without the pause kept around it).
    pub speech: Vec<Span>,
}

impl Window {
    /// Samples in the window (the pieces back to back).
    pub fn len(&self) -> u64 {
        self.pieces.iter().map(Span::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the window starts on the track.
    pub fn start(&self) -> u64 {
        self.pieces.first().map_or(0, |p| p.start)
    }

    /// Where the window ends on the track.
    pub fn end(&self) -> u64 {
        self.pieces.last().map_or(0, |p| p.end)
    }

    /// Track position (samples) of an end time `at` samples into the window: a time
    /// exactly at the end of a piece stays there (it ends speech, it does not start the
    /// next piece), and an end inside the pause kept before a piece's speech ends the
    /// speech before it (the pause stands for a longer silence on the track).
    pub fn to_track_end(&self, at: u64) -> u64 {
        let mut left = at;
        for (k, p) in self.pieces.iter().enumerate() {
            if left <= p.len() {
                let t = p.start + left;
                return match self.speech.get(k) {
                    Some(s) if k > 0 && t < s.start => self.speech[k - 1].end,
                    _ => t,
                };
            }
            left -= p.len();
        }
        self.end()
    }

    /// Track position (samples) of a start time `at` samples into the window: a start
    /// inside the pause kept after a piece's speech is the start of the next piece's
    /// speech (Whisper starts a segment early, and the pause stands for a longer
    /// silence on the track).
    pub fn to_track_start(&self, at: u64) -> u64 {
        let mut left = at;
        for (k, p) in self.pieces.iter().enumerate() {
            if left < p.len() {
                let t = p.start + left;
                return match self.speech.get(k) {
                    Some(s) if k + 1 < self.pieces.len() && t >= s.end => self.speech[k + 1].start,
                    _ => t,
                };
            }
            left -= p.len();
        }
        self.end()
    }
}

/// A whole-track window list, for a track without VAD, built from cut positions.
pub fn contiguous(cuts: &[Span]) -> Vec<Window> {
    cuts.iter()
        .filter(|s| !s.is_empty())
        .map(|s| Window {
            pieces: vec![*s],
            speech: vec![*s],
        })
        .collect()
}

/// Packs speech regions (sorted, non-overlapping) of a track of `total` samples into
/// windows of at most `pk.max_len` samples. A region longer than a window is split
/// into window-sized parts (`split` picks each cut inside it, given the part).
pub fn pack(
    speech: &[Span],
    total: u64,
    pk: &Packing,
    split: &mut dyn FnMut(Span) -> u64,
) -> Vec<Window> {
    pack_between(speech, 0, total, pk, split)
}

/// [`pack`] for the part of the track from `from` to `to`: the regions are clipped to it,
/// and no window reaches outside it (padding included). This is how the rest of a track
/// is packed again once Whisper stopped inside a window (see `whisper.rs`).
pub fn pack_between(
    speech: &[Span],
    from: u64,
    to: u64,
    pk: &Packing,
    split: &mut dyn FnMut(Span) -> u64,
) -> Vec<Window> {
    let total = to;
    // Clip, drop empties, and break regions longer than a window.
    let mut regions: Vec<Span> = Vec::new();
    for s in speech {
        let mut s = Span {
            start: s.start.clamp(from, total),
            end: s.end.clamp(from, total),
        };
        if let Some(prev) = regions.last() {
            s.start = s.start.max(prev.end);
        }
        while s.len() > pk.max_len {
            let head = Span {
                start: s.start,
                end: s.start + pk.max_len,
            };
            let cut = split(head).clamp(s.start + pk.max_len / 2, s.start + pk.max_len);
            regions.push(Span {
                start: s.start,
                end: cut,
            });
            s.start = cut;
        }
        if !s.is_empty() {
            regions.push(s);
        }
    }

    // Greedy packing of whole regions, cut at the longest nearby pause.
    let mut windows: Vec<Vec<Span>> = Vec::new();
    let mut cur: Vec<Span> = Vec::new();
    let mut i = 0;
    while i < regions.len() {
        let r = regions[i];
        let mut trial = cur.clone();
        trial.push(r);
        if cur.is_empty() || packed_len(&trial, pk) <= pk.max_len {
            cur = trial;
            i += 1;
            continue;
        }
        // Full: move the regions after the longest recent pause to the next window.
        let end = cur.last().expect("non-empty").end;
        let mut best: Option<(u64, usize)> = None;
        for k in 1..=cur.len() {
            let next = if k == cur.len() { r } else { cur[k] };
            if next.start + pk.cut_search < end {
                continue;
            }
            let gap = next.start - cur[k - 1].end;
            if best.is_none_or(|(g, _)| gap >= g) {
                best = Some((gap, k));
            }
        }
        let keep = match best {
            // Cutting at the longest pause must not leave the tail too long to pack
            // with the next region; otherwise cut right here.
            Some((_, k)) if packed_len(&[&cur[k..], &[r]].concat(), pk) <= pk.max_len => k,
            _ => cur.len(),
        };
        let tail = cur.split_off(keep);
        windows.push(std::mem::replace(&mut cur, tail));
    }
    if !cur.is_empty() {
        windows.push(cur);
    }

    // Lay out the pieces: edge padding, pauses shortened.
    let n = windows.len();
    let mut out = Vec::with_capacity(n);
    for w in 0..n {
        let regions = &windows[w];
        let lo = if w == 0 {
            from
        } else {
            windows[w - 1].last().unwrap().end
        };
        let hi = if w + 1 == n {
            total
        } else {
            windows[w + 1][0].start
        };
        let speech = speech_of(regions, pk);
        let mut pieces = pieces_of(&speech, pk);
        let room = pk
            .max_len
            .saturating_sub(pieces.iter().map(Span::len).sum());
        let first = pieces.first_mut().unwrap();
        let pad_lo = pk
            .edge_pad
            .min(room / 2)
            .min(first.start.saturating_sub(lo) / 2);
        first.start -= pad_lo;
        let last = pieces.last_mut().unwrap();
        let pad_hi = pk
            .edge_pad
            .min(room / 2)
            .min(hi.saturating_sub(last.end) / 2);
        last.end += pad_hi;
        out.push(Window { pieces, speech });
    }
    out
}

/// The speech a window of these regions plays, as runs: regions whose pause is at most
/// `keep_gap` form one run, pause included.
fn speech_of(regions: &[Span], pk: &Packing) -> Vec<Span> {
    let mut speech: Vec<Span> = Vec::new();
    for r in regions {
        match speech.last_mut() {
            Some(p) if r.start - p.end <= pk.keep_gap => p.end = r.end,
            _ => speech.push(*r),
        }
    }
    speech
}

/// The pieces of track those runs become: each keeps `gap_pad` of the longer pause on
/// both sides of it, so a long pause plays shortened.
fn pieces_of(speech: &[Span], pk: &Packing) -> Vec<Span> {
    let last = speech.len().saturating_sub(1);
    speech
        .iter()
        .enumerate()
        .map(|(i, s)| Span {
            start: if i > 0 { s.start - pk.gap_pad } else { s.start },
            end: if i < last { s.end + pk.gap_pad } else { s.end },
        })
        .collect()
}

fn packed_len(regions: &[Span], pk: &Packing) -> u64 {
    pieces_of(&speech_of(regions, pk), pk)
        .iter()
        .map(Span::len)
        .sum()
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

    fn pk(max_len: u64) -> Packing {
        Packing {
            max_len,
            keep_gap: 4,
            gap_pad: 1,
            edge_pad: 1,
            cut_search: 20,
        }
    }

    /// How many windows hold the region `r` whole inside one piece.
    fn windows_holding(w: &[Window], r: Span) -> usize {
        w.iter()
            .filter(|win| {
                win.pieces
                    .iter()
                    .any(|p| p.start <= r.start && r.end <= p.end)
            })
            .count()
    }

    fn no_split(s: Span) -> u64 {
        s.end
    }

    #[test]
    fn packs_whole_regions_and_shortens_long_pauses() {
        // Two regions with a short pause, then a long pause: one window.
        let w = pack(
            &[sp(10, 20), sp(22, 30), sp(60, 70)],
            100,
            &pk(40),
            &mut no_split,
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].pieces, vec![sp(9, 31), sp(59, 71)]);
        assert!(w[0].len() <= 40);
        // Time maps back to the track across the removed silence.
        assert_eq!(w[0].to_track_start(0), 9);
        assert_eq!(w[0].to_track_start(22), 59);
        assert_eq!(w[0].to_track_start(1000), 71);
        assert_eq!(w[0].to_track_end(22), 31);
        assert_eq!(w[0].speech, vec![sp(10, 30), sp(60, 70)]);
        // A start in the pause after the first speech is the next speech's start; an
        // end in the pause before the second speech ends the first.
        assert_eq!(w[0].to_track_start(21), 60);
        assert_eq!(w[0].to_track_start(5), 14);
        assert_eq!(w[0].to_track_end(23), 60);
        assert_eq!(w[0].to_track_end(27), 64);
    }

    #[test]
    fn never_cuts_inside_a_region_and_prefers_the_longest_pause() {
        // Regions of 10; pauses of 2 (kept) and one of 3 before the 4th region.
        let speech = [sp(0, 10), sp(12, 22), sp(24, 34), sp(37, 47), sp(49, 59)];
        let w = pack(&speech, 60, &pk(40), &mut no_split);
        for win in &w {
            assert!(win.len() <= 40, "{win:?}");
        }
        // Every region lies whole inside exactly one window.
        for r in &speech {
            assert_eq!(windows_holding(&w, *r), 1, "{r:?} in {w:?}");
        }
        // The cut falls at the longest pause (34..37).
        assert_eq!(w[0].end(), 35);
        assert_eq!(w[1].start(), 36);
    }

    #[test]
    fn splits_only_regions_longer_than_a_window() {
        let mut cuts = Vec::new();
        let w = pack(&[sp(0, 100)], 100, &pk(40), &mut |s: Span| {
            cuts.push(s);
            s.end - 5
        });
        assert_eq!(cuts.len(), 2);
        assert!(w.iter().all(|x| x.len() <= 40), "{w:?}");
        assert_eq!(w.first().unwrap().start(), 0);
        assert_eq!(w.last().unwrap().end(), 100);
        assert!(pack(&[], 100, &pk(40), &mut no_split).is_empty());
    }

    #[test]
    fn the_rest_of_a_track_packs_from_where_whisper_stopped() {
        let speech = [sp(0, 10), sp(14, 30), sp(33, 50), sp(55, 70)];
        // Stopped at 20, inside the second region; the part ends at 60.
        let w = pack_between(&speech, 20, 60, &pk(25), &mut no_split);
        assert_eq!(w.first().unwrap().start(), 20, "{w:?}");
        assert_eq!(w.last().unwrap().end(), 60, "{w:?}");
        assert!(w.iter().all(|x| x.len() <= 25), "{w:?}");
        // Every bit of speech between 20 and 60 is in exactly one window.
        for r in [sp(20, 30), sp(33, 50), sp(55, 60)] {
            assert_eq!(windows_holding(&w, r), 1, "{r:?} in {w:?}");
        }
        // Nothing left after the last speech: no window.
        assert!(pack_between(&speech, 70, 80, &pk(25), &mut no_split).is_empty());
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
