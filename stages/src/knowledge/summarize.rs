//! The extractive summary: a few sentences per chapter, chosen by Maximal Marginal
//! Relevance (Carbonell & Goldstein 1998) so that no two bullets say the same thing.
//!
//! TextRank alone rewards repetition: a sentence Whisper (or the speaker) repeats five
//! times is the most "central" one and wins five times. Here each chapter's relevance is
//! its similarity to the chapter's centroid built from distinct sentences only, and a
//! candidate loses what it shares with the bullets already chosen, anywhere in the video.
//! Near-duplicates (by TF-IDF cosine or by shared words) are never chosen twice.

use std::ops::Range;

use super::text::{self, Sentence, TfIdf};

/// How the summary is chosen.
#[derive(Debug, Clone)]
pub struct SummaryOptions {
    /// Most bullets from one chapter (at least one per chapter with speech).
    pub max_per_chapter: usize,
    /// Most bullets in all (`None`: one to `max_per_chapter` per chapter).
    pub cap: Option<usize>,
    /// MMR's trade-off: 1 is pure relevance, 0 pure novelty.
    pub lambda: f64,
    /// A candidate this similar (cosine of TF-IDF vectors) to a chosen bullet is a
    /// near-duplicate and never chosen.
    pub max_similarity: f64,
    /// The same for the share of content words two sentences have in common.
    pub max_overlap: f64,
}

impl Default for SummaryOptions {
    fn default() -> Self {
        SummaryOptions {
            max_per_chapter: 3,
            cap: None,
            lambda: 0.7,
            max_similarity: 0.6,
            max_overlap: 0.6,
        }
    }
}

/// Sentences with fewer content words make poor bullets ("Thank you.", "Okay, so.").
const MIN_CONTENT_WORDS: usize = 3;
/// A sentence found (or a near-duplicate of it) in at least this many chapters, and in
/// at least `FORMULA_SHARE` of them, is a formula of the speaker's and never a bullet
/// while its chapter has other sentences.
const FORMULA_MIN_CHAPTERS: usize = 3;
const FORMULA_SHARE: f64 = 0.3;
/// One bullet per this many distinct sentences in a chapter (rounded up), within
/// `1..=max_per_chapter`.
const SENTENCES_PER_BULLET: usize = 8;

/// Indices of the summary sentences, in spoken order. `chapters` are ranges of sentence
/// indices (in order, not overlapping).
pub fn summarize(sents: &[Sentence], chapters: &[Range<usize>], o: &SummaryOptions) -> Vec<usize> {
    if sents.is_empty() {
        return Vec::new();
    }
    let texts: Vec<&str> = sents.iter().map(|s| s.text.as_str()).collect();
    let tfidf = TfIdf::new(&texts);
    let v = &tfidf.vectors;
    let n_content: Vec<usize> = texts.iter().map(|t| text::content_words(t).len()).collect();
    let stems: Vec<_> = texts.iter().map(|t| text::stem_set(t)).collect();
    let is_dup = |a: usize, b: usize| {
        // Overlap is at most the smaller set over the larger: skip what cannot be a
        // near-duplicate by words before comparing them.
        let (na, nb) = (stems[a].len(), stems[b].len());
        let may_share = na.min(nb) as f64 >= o.max_overlap * na.max(nb) as f64;
        text::cosine(&v[a], &v[b]) >= o.max_similarity
            || may_share && text::set_overlap(&stems[a], &stems[b]) >= o.max_overlap
    };

    // The speaker's formulas: a sentence said again (or nearly) in many chapters ("Let's
    // move on to the next slide", a sign-off) is how they talk, not what they say.
    let formula: Vec<bool> = if chapters.len() >= FORMULA_MIN_CHAPTERS {
        let chapter_of: Vec<Option<usize>> = (0..sents.len())
            .map(|i| chapters.iter().position(|r| r.contains(&i)))
            .collect();
        // The chapters each sentence is found in, itself or as a near-duplicate.
        let mut found: Vec<Vec<usize>> = chapter_of
            .iter()
            .map(|c| c.iter().copied().collect())
            .collect();
        for a in 0..sents.len() {
            for b in a + 1..sents.len() {
                let (ca, cb) = (chapter_of[a], chapter_of[b]);
                if ca == cb || ca.is_none() || cb.is_none() {
                    continue;
                }
                if is_dup(a, b) {
                    found[a].extend(cb);
                    found[b].extend(ca);
                }
            }
        }
        found
            .into_iter()
            .map(|mut f| {
                f.sort_unstable();
                f.dedup();
                f.len() >= FORMULA_MIN_CHAPTERS
                    && f.len() as f64 >= FORMULA_SHARE * chapters.len() as f64
            })
            .collect()
    } else {
        vec![false; sents.len()]
    };

    // (sentence, chapter, relevance, rank within its chapter)
    let mut chosen: Vec<(usize, usize, f64, usize)> = Vec::new();
    for (ci, range) in chapters.iter().enumerate() {
        let range = range.start.min(sents.len())..range.end.min(sents.len());
        // Distinct sentences: a repeat of an earlier one in the chapter is dropped.
        let mut distinct: Vec<usize> = Vec::new();
        for i in range.clone() {
            if !distinct.iter().any(|&j| is_dup(i, j)) {
                distinct.push(i);
            }
        }
        if distinct.is_empty() {
            continue;
        }
        let centre = text::centroid(distinct.iter().map(|&i| &v[i]));
        let long_enough: Vec<usize> = distinct
            .iter()
            .copied()
            .filter(|&i| n_content[i] >= MIN_CONTENT_WORDS && !formula[i])
            .collect();
        let pool = if long_enough.is_empty() {
            distinct.clone()
        } else {
            long_enough
        };
        let want = distinct
            .len()
            .div_ceil(SENTENCES_PER_BULLET)
            .clamp(1, o.max_per_chapter.max(1));
        let relevance: Vec<(usize, f64)> = pool
            .iter()
            .map(|&i| (i, text::cosine(&v[i], &centre)))
            .collect();
        for rank in 0..want {
            let mut best: Option<(f64, f64, usize)> = None; // (mmr, relevance, sentence)
            for &(i, rel) in &relevance {
                if chosen.iter().any(|c| c.0 == i || is_dup(i, c.0)) {
                    continue;
                }
                let redundancy = chosen
                    .iter()
                    .map(|c| text::cosine(&v[i], &v[c.0]))
                    .fold(0.0, f64::max);
                let mmr = o.lambda * rel - (1.0 - o.lambda) * redundancy;
                // Strictly greater: ties keep the earlier sentence.
                if best.is_none_or(|b| mmr > b.0) {
                    best = Some((mmr, rel, i));
                }
            }
            let Some((mmr, rel, i)) = best else { break };
            // Extra bullets only when they add something relevant.
            if rank > 0 && mmr <= 0.0 {
                break;
            }
            chosen.push((i, ci, rel, rank));
        }
    }
    if let Some(cap) = o.cap
        && chosen.len() > cap
    {
        // Keep each chapter's first bullet before any second one, the most relevant first.
        chosen.sort_by(|a, b| a.3.cmp(&b.3).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
        chosen.truncate(cap);
    }
    let mut out: Vec<usize> = chosen.into_iter().map(|c| c.0).collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sents(texts: &[&str]) -> Vec<Sentence> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| Sentence {
                start: i as f64 * 5.0,
                end: i as f64 * 5.0 + 4.0,
                text: t.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_repeated_sentence_is_chosen_once_and_chapters_each_get_a_bullet() {
        let s = sents(&[
            // Chapter 0: the same sentence five times (a Whisper loop), and others.
            "The database backup runs every night at two.",
            "The database backup runs every night at two.",
            "The database backup runs every night at two.",
            "the database backup runs every night at two",
            "The database backup runs every night at two!",
            "The database backup is copied to a second region.",
            "A restore test reads the database backup every week.",
            "The database backup is encrypted before it leaves the server.",
            "Old copies of the database backup are deleted after ninety days.",
            "The database backup takes forty minutes on the largest server.",
            "Alerts fire when the database backup fails.",
            "The storage team owns the database backup scripts.",
            "Nobody touches the database backup during a release.",
            "Okay.",
            // Chapter 1.
            "The release process starts with a release branch.",
            "Every release branch gets a release candidate build.",
            "The release manager signs the release candidate.",
        ]);
        let chapters = [0..14, 14..17];
        let picked = summarize(&s, &chapters, &SummaryOptions::default());
        let texts: Vec<&str> = picked.iter().map(|&i| s[i].text.as_str()).collect();
        assert_eq!(picked.iter().filter(|&&i| i < 14).count(), 2, "{texts:?}");
        assert_eq!(picked.iter().filter(|&&i| i >= 14).count(), 1, "{texts:?}");
        assert!(
            picked.iter().filter(|&&i| i < 5).count() <= 1,
            "the repeated sentence appears once at most: {texts:?}"
        );
        assert!(!picked.contains(&13), "too short for a bullet: {texts:?}");
        for (a, x) in texts.iter().enumerate() {
            for y in &texts[a + 1..] {
                assert!(
                    text::word_overlap(x, y) < 0.6,
                    "near-duplicates {x:?} {y:?}"
                );
            }
        }
        assert!(picked.windows(2).all(|w| w[0] < w[1]), "spoken order");
        assert_eq!(summarize(&s, &chapters, &SummaryOptions::default()), picked);
    }

    #[test]
    fn a_formula_said_in_most_chapters_is_never_a_bullet() {
        // Four chapters, each opening with the speaker's formula. It is as central as
        // the chapter's own sentence (they share no words), and ties go to the earlier
        // sentence: without the formula rule it would be the first chapter's bullet.
        const F: &str = "Thanks again to the whole platform team for their support.";
        let s = sents(&[
            F,
            "Our database backup runs every night in the second region.",
            F,
            "Restore drills prove the backup works before anyone needs it.",
            F,
            "Release trains leave every Tuesday once the tests pass.",
            F,
            "Feature flags let new features reach a few customers first.",
        ]);
        let chapters = vec![0..2, 2..4, 4..6, 6..8];
        let got = summarize(&s, &chapters, &SummaryOptions::default());
        assert_eq!(got, vec![1, 3, 5, 7], "{got:?}");
        // In two chapters a repeat is not yet a formula: it may still be chosen once.
        let two = summarize(&sents(&[F, F]), &[0..1, 1..2], &SummaryOptions::default());
        assert_eq!(two, vec![0]);
    }

    #[test]
    fn long_chapters_get_up_to_three_bullets_and_the_cap_keeps_one_per_chapter_first() {
        let topics = [
            ["database", "backup", "restore", "snapshot", "replica"],
            ["release", "branch", "candidate", "changelog", "tag"],
        ];
        let mut texts = Vec::new();
        for t in topics {
            for i in 0..20 {
                texts.push(format!(
                    "The {} {} needs a {} and a {} check number {i}.",
                    t[i % 5],
                    t[(i + 1) % 5],
                    t[(i + 2) % 5],
                    t[(i * 3 + 1) % 5]
                ));
            }
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let s = sents(&refs);
        let all = summarize(&s, &[0..20, 20..40], &SummaryOptions::default());
        let per = |lo: usize, hi: usize| all.iter().filter(|&&i| i >= lo && i < hi).count();
        assert!(
            (1..=3).contains(&per(0, 20)) && (1..=3).contains(&per(20, 40)),
            "{all:?}"
        );
        let capped = summarize(
            &s,
            &[0..20, 20..40],
            &SummaryOptions {
                cap: Some(2),
                ..SummaryOptions::default()
            },
        );
        assert_eq!(capped.len(), 2);
        assert!(capped[0] < 20 && capped[1] >= 20, "{capped:?}");
    }
}
