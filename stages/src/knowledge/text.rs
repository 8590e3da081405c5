//! Deterministic text analytics for knowledge files: sentences with timestamps from a
//! transcript, an extractive summary by TextRank, and keywords.
//!
//! No model and no randomness: the same transcript always gives the same summary, so
//! knowledge files are stable across reruns and machines.

use std::collections::{BTreeMap, BTreeSet};

/// A sentence of the transcript with the time it is spoken.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// A timed piece of text (a transcript segment).
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// English function words: never keywords, ignored when comparing sentences.
pub const STOPWORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as",
    "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by",
    "can", "could", "did", "do", "does", "doing", "down", "during", "each", "even", "every", "few",
    "for", "from", "further", "get", "go", "going", "got", "had", "has", "have", "having", "he",
    "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just",
    "know", "let", "like", "me", "more", "most", "my", "no", "nor", "not", "now", "of", "off",
    "ok", "okay", "on", "once", "one", "only", "or", "other", "our", "ours", "out", "over", "own",
    "please", "really", "right", "said", "same", "say", "see", "she", "should", "so", "some",
    "such", "than", "that", "the", "their", "them", "then", "there", "these", "they", "thing",
    "things", "think", "this", "those", "through", "to", "today", "too", "uh", "um", "under",
    "until", "up", "us", "very", "want", "was", "we", "well", "were", "what", "when", "where",
    "which", "while", "who", "whom", "why", "will", "with", "would", "yeah", "yes", "you", "your",
    "yours",
];

pub fn is_stopword(w: &str) -> bool {
    STOPWORDS.binary_search(&w).is_ok()
}

/// Lower-case word tokens (letters, digits and inner apostrophes).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Content words: no stopwords, no numbers, at least 3 characters.
pub fn content_words(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| w.chars().count() >= 3 && !is_stopword(w) && !w.chars().all(|c| c.is_numeric()))
        .collect()
}

/// Splits timed segments into sentences at `.`, `!`, `?`; a sentence's time spans the
/// segments it came from (interpolated by character position inside a segment).
pub fn sentences(segments: &[Timed]) -> Vec<Sentence> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut start: Option<f64> = None;
    for seg in segments {
        let t = seg.text.trim();
        if t.is_empty() {
            continue;
        }
        let n = t.chars().count().max(1) as f64;
        let at = |i: usize| seg.start + (seg.end - seg.start) * (i as f64 / n);
        let mut piece_start = 0usize;
        for (i, c) in t.chars().enumerate() {
            if start.is_none() && !c.is_whitespace() {
                start = Some(at(i));
            }
            text.push(c);
            let next_is_space = t.chars().nth(i + 1).is_none_or(char::is_whitespace);
            if matches!(c, '.' | '!' | '?') && next_is_space {
                push_sentence(
                    &mut out,
                    &mut text,
                    start.take().unwrap_or(seg.start),
                    at(i + 1),
                );
                piece_start = i + 1;
            }
        }
        let _ = piece_start;
        if !text.is_empty() {
            text.push(' ');
        }
    }
    if let Some(s) = start {
        let end = segments.last().map(|x| x.end).unwrap_or(s);
        push_sentence(&mut out, &mut text, s, end);
    }
    out
}

fn push_sentence(out: &mut Vec<Sentence>, text: &mut String, start: f64, end: f64) {
    let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.clear();
    if t.chars().any(char::is_alphanumeric) {
        out.push(Sentence {
            start,
            end: end.max(start),
            text: t,
        });
    }
}

/// TextRank (Mihalcea & Tarau 2004): sentences are nodes, edges weigh shared content
/// words normalised by sentence lengths, PageRank picks the central ones. Returns the
/// indices of the `k` best sentences in spoken order. Ties break by position.
pub fn textrank(sents: &[Sentence], k: usize) -> Vec<usize> {
    let n = sents.len();
    if n <= k {
        return (0..n).collect();
    }
    let bags: Vec<BTreeSet<String>> = sents
        .iter()
        .map(|s| content_words(&s.text).into_iter().collect())
        .collect();
    let mut w = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        for j in (i + 1)..n {
            let shared = bags[i].intersection(&bags[j]).count() as f64;
            let (a, b) = (bags[i].len() as f64, bags[j].len() as f64);
            if shared > 0.0 && a > 1.0 && b > 1.0 {
                let sim = shared / (a.ln() + b.ln());
                w[i][j] = sim;
                w[j][i] = sim;
            }
        }
    }
    let out_sum: Vec<f64> = w.iter().map(|r| r.iter().sum()).collect();
    let d = 0.85;
    let mut score = vec![1.0f64; n];
    for _ in 0..100 {
        let mut next = vec![1.0 - d; n];
        for (i, nx) in next.iter_mut().enumerate() {
            for j in 0..n {
                if w[j][i] > 0.0 && out_sum[j] > 0.0 {
                    *nx += d * w[j][i] / out_sum[j] * score[j];
                }
            }
        }
        let delta: f64 = next.iter().zip(&score).map(|(a, b)| (a - b).abs()).sum();
        score = next;
        if delta < 1e-9 {
            break;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    let mut best: Vec<usize> = order.into_iter().take(k).collect();
    best.sort_unstable();
    best
}

/// Content-word frequencies of a text (the per-video half of TF-IDF).
pub fn term_counts(text: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in content_words(text) {
        *m.entry(w).or_insert(0) += 1;
    }
    m
}

/// Keywords of one document: by TF-IDF against `docs` (term -> number of documents
/// containing it, out of `n_docs`), or by frequency when the batch is one document.
pub fn keywords(
    counts: &BTreeMap<String, usize>,
    docs: &BTreeMap<String, usize>,
    n_docs: usize,
    k: usize,
) -> Vec<String> {
    let mut scored: Vec<(f64, &String)> = counts
        .iter()
        .map(|(t, &c)| {
            let df = docs.get(t).copied().unwrap_or(1).max(1) as f64;
            let idf = ((1.0 + n_docs as f64) / (1.0 + df)).ln() + 1.0;
            (c as f64 * idf, t)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().take(k).map(|(_, t)| t.clone()).collect()
}

/// `m:ss` or `h:mm:ss`.
pub fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(start: f64, end: f64, text: &str) -> Timed {
        Timed {
            start,
            end,
            text: text.into(),
        }
    }

    #[test]
    fn stopwords_are_sorted_for_binary_search() {
        let mut s = STOPWORDS.to_vec();
        s.sort_unstable();
        assert_eq!(s, STOPWORDS);
    }

    #[test]
    fn sentences_split_across_and_within_segments_with_times() {
        let s = sentences(&[
            timed(0.0, 4.0, "Hello everyone. This is"),
            timed(4.0, 6.0, "the weekly sync!"),
            timed(6.0, 8.0, "Trailing words"),
        ]);
        let texts: Vec<&str> = s.iter().map(|x| x.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "Hello everyone.",
                "This is the weekly sync!",
                "Trailing words"
            ]
        );
        assert_eq!(s[0].start, 0.0);
        assert!(s[0].end > 2.0 && s[0].end < 3.0, "{:?}", s[0]);
        assert!(s[1].start > 2.0 && s[1].start < 3.0);
        assert_eq!(s[1].end, 6.0);
        assert_eq!(
            s[2],
            Sentence {
                start: 6.0,
                end: 8.0,
                text: "Trailing words".into()
            }
        );
    }

    #[test]
    fn textrank_prefers_central_sentences_and_keeps_order() {
        let s: Vec<Sentence> = [
            "The release candidate is ready for testing.",
            "Lunch was nice.",
            "Testing the release candidate starts Monday.",
            "The release notes describe testing steps for the candidate.",
            "My cat sleeps a lot.",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| Sentence {
            start: i as f64,
            end: i as f64 + 1.0,
            text: t.to_string(),
        })
        .collect();
        let best = textrank(&s, 2);
        assert_eq!(best.len(), 2);
        assert!(!best.contains(&1) && !best.contains(&4), "{best:?}");
        assert!(best.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(textrank(&s, 2), best, "deterministic");
    }

    #[test]
    fn keywords_weigh_rare_terms_in_the_batch() {
        let c = term_counts("database backup tonight, the database backup matters; meeting");
        let mut docs = BTreeMap::new();
        docs.insert("meeting".to_string(), 10);
        docs.insert("database".to_string(), 1);
        docs.insert("backup".to_string(), 1);
        let k = keywords(&c, &docs, 10, 2);
        assert_eq!(k, vec!["backup", "database"]);
        assert_eq!(clock(3725.0), "1:02:05");
        assert_eq!(clock(65.4), "1:05");
    }
}
