//! Topic segmentation of a transcript, for videos where the picture never changes
//! (talking heads, meetings, screen recordings of one window).
//!
//! TextTiling (Hearst 1997): at each gap between two sentences, compare a window of
//! sentences before it with a window after it. Where the talk moves to another subject
//! the similarity dips; the depth of each dip (how far it lies below the peaks on either
//! side) says how strong the shift is. Two similarities are fused when the sentence
//! embeddings are there (`text.sentences`): the lexical one (TF-IDF over stems, cosine),
//! which sees a subject's own words, and the semantic one (cosine of the windows' mean
//! sentence embeddings), which sees a paraphrase as the same subject and two subjects
//! that share common words as different. The semantic series is rescaled to the lexical
//! one's mean and spread before they are averaged, so the depth cutoff keeps its
//! meaning; without embeddings the lexical similarity decides alone.

use super::text::{self, Sentence, SparseVec, TfIdf};

/// A possible topic boundary: after sentence `after`, at `time` seconds (between the
/// two sentences), with its depth score and its strength relative to the cutoff
/// (`vote >= 1`: a boundary by Hearst's rule).
#[derive(Debug, Clone, PartialEq)]
pub struct TopicShift {
    pub after: usize,
    pub time: f64,
    pub depth: f64,
    pub vote: f64,
}

/// Words per comparison window (Hearst used blocks of 120 tokens for written text;
/// spoken topics in meetings are shorter).
const WINDOW_WORDS: usize = 45;
/// Fewest sentences for which segmentation means anything.
pub const MIN_SENTENCES: usize = 10;

/// The window size in sentences for these sentences: about [`WINDOW_WORDS`] words.
fn window(sents: &[Sentence]) -> usize {
    let words: usize = sents.iter().map(|s| text::words(&s.text).len()).sum();
    let per = (words as f64 / sents.len().max(1) as f64).max(1.0);
    ((WINDOW_WORDS as f64 / per).round() as usize).clamp(2, 6)
}

/// Lexical similarity across each gap (`n - 1` values for `n` sentences), smoothed.
pub fn gap_similarity(sents: &[Sentence]) -> Vec<f64> {
    smooth(&raw_similarity(sents))
}

/// Semantic similarity across each gap: cosine of the mean sentence embeddings of the
/// windows on either side.
fn semantic_similarity(sents: &[Sentence], vectors: &[Vec<f32>]) -> Vec<f64> {
    let n = sents.len();
    if n < 2 || vectors.len() != n {
        return Vec::new();
    }
    let w = window(sents);
    let mean = |lo: usize, hi: usize| -> Vec<f64> {
        let mut m = vec![0.0f64; vectors[0].len()];
        for v in &vectors[lo..hi] {
            for (a, b) in m.iter_mut().zip(v) {
                *a += *b as f64;
            }
        }
        m
    };
    (0..n - 1)
        .map(|g| {
            let l = mean((g + 1).saturating_sub(w), g + 1);
            let r = mean(g + 1, (g + 1 + w).min(n));
            let dot: f64 = l.iter().zip(&r).map(|(a, b)| a * b).sum();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let d = norm(&l) * norm(&r);
            if d > 0.0 { dot / d } else { 0.0 }
        })
        .collect()
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().sum::<f64>() / n;
    let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    (mean, sd)
}

/// The lexical similarity, fused with the semantic one when there are embeddings (one
/// per sentence): the semantic series rescaled to the lexical one's mean and spread,
/// then the two averaged with `SEMANTIC_WEIGHT`.
fn fused_similarity(sents: &[Sentence], vectors: Option<&[Vec<f32>]>) -> Vec<f64> {
    let lex = raw_similarity(sents);
    let sem = match vectors {
        Some(v) => semantic_similarity(sents, v),
        None => Vec::new(),
    };
    if sem.len() != lex.len() || lex.is_empty() {
        return lex;
    }
    let (lm, ls) = mean_sd(&lex);
    let (sm, ss) = mean_sd(&sem);
    if ss <= 1e-9 {
        return lex;
    }
    let scale = if ls > 1e-9 { ls / ss } else { 1.0 };
    lex.iter()
        .zip(&sem)
        .map(|(l, s)| (1.0 - SEMANTIC_WEIGHT) * l + SEMANTIC_WEIGHT * (lm + (s - sm) * scale))
        .collect()
}

/// Share of the semantic similarity in the fused one.
const SEMANTIC_WEIGHT: f64 = 0.5;

/// Lexical similarity across each gap, unsmoothed.
fn raw_similarity(sents: &[Sentence]) -> Vec<f64> {
    let n = sents.len();
    if n < 2 {
        return Vec::new();
    }
    let texts: Vec<&str> = sents.iter().map(|s| s.text.as_str()).collect();
    let tfidf = TfIdf::new(&texts);
    let w = window(sents);
    let block = |lo: usize, hi: usize| -> SparseVec { text::centroid(&tfidf.vectors[lo..hi]) };
    let raw: Vec<f64> = (0..n - 1)
        .map(|g| {
            let left = block((g + 1).saturating_sub(w), g + 1);
            let right = block(g + 1, (g + 1 + w).min(n));
            text::cosine(&left, &right)
        })
        .collect();
    raw
}

/// Hearst's smoothing: a [1 2 1] moving average.
fn smooth(raw: &[f64]) -> Vec<f64> {
    (0..raw.len())
        .map(|i| {
            let a = raw[i.saturating_sub(1)];
            let c = raw[(i + 1).min(raw.len() - 1)];
            (a + 2.0 * raw[i] + c) / 4.0
        })
        .collect()
}

/// Depth of the dip at each gap: climbs to the highest similarity on each side while it
/// keeps rising, and adds the two rises. Zero where the gap is not a local minimum.
pub fn depths(sim: &[f64]) -> Vec<f64> {
    let n = sim.len();
    (0..n)
        .map(|i| {
            let lower_left = i == 0 || sim[i] <= sim[i - 1];
            let lower_right = i + 1 == n || sim[i] <= sim[i + 1];
            if !(lower_left && lower_right) || n < 3 {
                return 0.0;
            }
            let mut l = i;
            while l > 0 && sim[l - 1] >= sim[l] {
                l -= 1;
            }
            let mut r = i;
            while r + 1 < n && sim[r + 1] >= sim[r] {
                r += 1;
            }
            (sim[l] - sim[i]) + (sim[r] - sim[i])
        })
        .collect()
}

/// Topic shifts of a transcript, in time order. Every local minimum of the similarity is
/// returned with its vote (depth over Hearst's "liberal" cutoff, the mean minus one
/// standard deviation of the minima's depths), so a caller can also take the weaker ones
/// when it must split a long chapter. Minimum chapter lengths, applied by the caller,
/// keep the liberal cutoff from over-segmenting.
pub fn topic_shifts(sents: &[Sentence]) -> Vec<TopicShift> {
    topic_shifts_with(sents, None)
}

/// [`topic_shifts`] on the lexical similarity fused with the semantic one, given one
/// sentence embedding per sentence (else lexical alone).
pub fn topic_shifts_with(sents: &[Sentence], vectors: Option<&[Vec<f32>]>) -> Vec<TopicShift> {
    if sents.len() < MIN_SENTENCES {
        return Vec::new();
    }
    // Where exactly the subject changes is where the words change (lexical); where
    // the windows share no word at all, several gaps tie, and meaning picks among them.
    let lex = raw_similarity(sents);
    let sem = vectors
        .map(|v| semantic_similarity(sents, v))
        .filter(|s| s.len() == lex.len())
        .unwrap_or_else(|| vec![0.0; lex.len()]);
    let raw = fused_similarity(sents, vectors);
    let sim = smooth(&raw);
    let d = depths(&sim);
    let minima: Vec<f64> = d.iter().copied().filter(|&x| x > 0.0).collect();
    if minima.is_empty() {
        return Vec::new();
    }
    let mean = minima.iter().sum::<f64>() / minima.len() as f64;
    let sd = (minima.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / minima.len() as f64).sqrt();
    // A floor keeps a uniformly flat talk (all dips tiny) from being cut everywhere.
    let cutoff = (mean - sd).max(0.05);
    d.iter()
        .enumerate()
        .filter(|(_, x)| **x > 0.0)
        .map(|(g, &depth)| {
            // Smoothing can move a dip by a sentence: the shift sits at the lowest
            // lexical similarity next to it, the lowest semantic one among equals.
            let at = (g.saturating_sub(1)..=(g + 1).min(raw.len() - 1))
                .min_by(|&a, &b| {
                    let lexical = if (lex[a] - lex[b]).abs() <= 1e-6 {
                        std::cmp::Ordering::Equal
                    } else {
                        lex[a].total_cmp(&lex[b])
                    };
                    lexical
                        .then(sem[a].total_cmp(&sem[b]))
                        .then(a.abs_diff(g).cmp(&b.abs_diff(g)))
                })
                .unwrap_or(g);
            TopicShift {
                after: at,
                time: gap_time(&sents[at], &sents[at + 1]),
                depth,
                vote: depth / cutoff,
            }
        })
        .collect()
}

/// The moment between two sentences: the middle of the pause, or where they touch.
pub fn gap_time(a: &Sentence, b: &Sentence) -> f64 {
    if b.start > a.end {
        (a.end + b.start) / 2.0
    } else {
        b.start
    }
}

/// Paragraphs of a chapter's sentences: ranges of sentence indices. The chapter is cut
/// into as few paragraphs as keep each under about `max_secs`, of even length; a pause
/// of `pause` seconds also closes a paragraph once it is `min_secs` long. A chapter reads
/// as a few timed paragraphs, not one wall of text.
pub fn paragraphs(
    sents: &[Sentence],
    pause: f64,
    min_secs: f64,
    max_secs: f64,
) -> Vec<std::ops::Range<usize>> {
    let (Some(first), Some(last)) = (sents.first(), sents.last()) else {
        return Vec::new();
    };
    let total = (last.end - first.start).max(0.0);
    let pieces = (total / max_secs.max(1.0)).ceil().max(1.0);
    let target = total / pieces;
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..sents.len() {
        let len = sents[i].end - sents[start].start;
        let is_last = i + 1 == sents.len();
        let gap = if is_last {
            0.0
        } else {
            sents[i + 1].start - sents[i].end
        };
        if is_last || len >= target || (len >= min_secs && gap >= pause) {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn talk(topics: &[&[&str]]) -> (Vec<Sentence>, Vec<usize>) {
        let mut out = Vec::new();
        let mut bounds = Vec::new();
        for t in topics {
            for s in *t {
                let at = out.len() as f64 * 4.0;
                out.push(Sentence {
                    start: at,
                    end: at + 3.5,
                    text: s.to_string(),
                });
            }
            bounds.push(out.len() - 1);
        }
        bounds.pop();
        (out, bounds)
    }

    const BACKUP: &[&str] = &[
        "The database backup starts at midnight.",
        "Each backup is copied to cold storage.",
        "Storage for the database backup costs little.",
        "A restore drill proves the backup works.",
        "The restore drill reads the database from storage.",
        "Backup alerts go to the database team.",
    ];
    const RELEASE: &[&str] = &[
        "The release process begins with a release branch.",
        "The branch gets a release candidate build.",
        "Testers sign off the release candidate.",
        "The release manager tags the branch.",
        "Release notes list each change in the candidate.",
        "The release ships on Thursday.",
    ];
    const ONBOARDING: &[&str] = &[
        "Onboarding gives every new hire a mentor.",
        "The mentor meets the new hire each morning.",
        "New hires get a laptop and accounts on day one.",
        "The onboarding checklist covers accounts and laptop setup.",
        "A mentor reviews the first pull request of the hire.",
        "Onboarding ends with a short survey for the new hire.",
    ];

    #[test]
    fn shifts_are_found_where_the_vocabulary_changes() {
        let (s, truth) = talk(&[BACKUP, RELEASE, ONBOARDING]);
        let shifts = topic_shifts(&s);
        let strong: Vec<usize> = shifts
            .iter()
            .filter(|x| x.vote >= 1.0)
            .map(|x| x.after)
            .collect();
        for t in &truth {
            assert!(
                strong.iter().any(|g| g.abs_diff(*t) <= 1),
                "true shift after sentence {t} not found: {shifts:?}"
            );
        }
        assert!(strong.len() <= 4, "too many shifts: {shifts:?}");
        let at = shifts.iter().find(|x| x.after == truth[0]).unwrap();
        assert!(
            (at.time - 23.75).abs() < 1e-9,
            "between the sentences: {at:?}"
        );
    }

    #[test]
    fn meaning_places_the_shift_where_the_words_cannot() {
        // A sentence that shares no word with either subject sits between them: the
        // lexical similarity is zero on both sides of it. Its meaning decides.
        let bridge: &[&str] = &["Thanks, that covers it for now, friends."];
        let (s, _) = talk(&[BACKUP, bridge, RELEASE]);
        let unit = |i: usize| {
            let mut v = vec![0.0f32; 4];
            v[i] = 1.0;
            v
        };
        let shift_near_bridge = |bridge_like: usize| {
            let v: Vec<Vec<f32>> = (0..s.len())
                .map(|i| match i {
                    i if i < 6 => unit(0),
                    6 => unit(bridge_like),
                    _ => unit(1),
                })
                .collect();
            let shifts = topic_shifts_with(&s, Some(&v));
            shifts
                .iter()
                .filter(|x| (4..=7).contains(&x.after))
                .max_by(|a, b| a.vote.total_cmp(&b.vote))
                .map(|x| x.after)
        };
        // Like the backup sentences: the shift comes after it; like the release ones,
        // before it (the words alone put it before it either way).
        assert_eq!(
            topic_shifts(&s)
                .iter()
                .filter(|x| x.vote >= 1.0 && (4..=7).contains(&x.after))
                .map(|x| x.after)
                .collect::<Vec<_>>(),
            vec![5]
        );
        assert_eq!(shift_near_bridge(0), Some(6));
        assert_eq!(shift_near_bridge(1), Some(5));
        // Without embeddings (or with the wrong number), the words alone decide.
        let lexical = topic_shifts(&s);
        assert_eq!(topic_shifts_with(&s, Some(&[unit(0)])), lexical);
    }

    #[test]
    fn one_topic_has_no_strong_shift_and_short_talks_are_not_segmented() {
        let (s, _) = talk(&[BACKUP, BACKUP]);
        assert!(topic_shifts(&s[..6]).is_empty(), "too few sentences");
        let d = depths(&[0.9, 0.5, 0.8, 0.7, 0.9]);
        assert!(
            (d[1] - 0.7).abs() < 1e-9 && (d[3] - 0.3).abs() < 1e-9 && d[0] == 0.0,
            "{d:?}"
        );
    }

    #[test]
    fn paragraphs_close_at_pauses_and_at_the_maximum() {
        let s: Vec<Sentence> = [
            (0.0, 5.0),
            (5.2, 12.0),
            (15.0, 20.0),
            (20.1, 30.0),
            (30.1, 46.0),
            (46.1, 50.0),
        ]
        .iter()
        .map(|&(a, b)| Sentence {
            start: a,
            end: b,
            text: "x".into(),
        })
        .collect();
        assert_eq!(paragraphs(&s, 2.0, 10.0, 30.0), vec![0..2, 2..5, 5..6]);
    }
}
