//! Deterministic text analytics for knowledge files: sentences with timestamps from a
//! transcript, stop words and stems, TF-IDF vectors and their similarity, TextRank, and
//! the older single-word keywords.
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

/// English function words, spoken fillers and number words: never keyphrases, ignored
/// when comparing sentences.
pub const STOPWORDS: &str = "\
    a about above actually after again ago all almost already also always am an and another \
    any anyone anything anyway are around as at basically be because been before being \
    below between billion both but by can can't come comes coming could couldn't did didn't \
    do does doesn't doing don't done down during each eight eighteen eighty eleven else \
    enough even every everyone everything few fifteen fifty finally first five for forty four \
    fourteen from further get go goes going gonna good got great guess guys had has have \
    having he her here hers hey him his how hundred i i'd i'll i'm i've if in into is isn't \
    it it's its just kind know last let let's like look looks lot lots made make makes \
    making many may maybe me mean might million more most much must my need needs next nine \
    nineteen ninety no nor not nothing now of off oh ok okay on once one only or other our \
    ours out over own please quite rather really right said same say see seven seventeen \
    seventy she should six sixteen sixty so some something still such sure take takes talk \
    ten than thank thanks that that's the their them then there there's these they they're \
    thing things think thirteen thirty this those though thousand three through to today \
    together told too took twelve twenty two uh um under until up us use used uses using \
    very want was way we we'd we'll we're we've well were what whatever when where which \
    while who whom why will with won't would yeah yes yet you you'd you'll you're you've \
    your yours";

pub fn is_stopword(w: &str) -> bool {
    static SET: std::sync::LazyLock<BTreeSet<&'static str>> =
        std::sync::LazyLock::new(|| STOPWORDS.split_whitespace().collect());
    SET.contains(w)
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

/// The English (Porter 2) stem of a lower-case word: "backups" and "backup" match.
pub fn stem(word: &str) -> String {
    static STEMMER: std::sync::LazyLock<rust_stemmers::Stemmer> = std::sync::LazyLock::new(|| {
        rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English)
    });
    STEMMER.stem(word).into_owned()
}

/// Stems of the content words of a text, in order.
pub fn content_stems(text: &str) -> Vec<String> {
    content_words(text).iter().map(|w| stem(w)).collect()
}

/// A sparse term vector: (term id, weight), sorted by term id.
pub type SparseVec = Vec<(u32, f64)>;

/// Bag-of-stems vectors with inverse document frequency weights, where the "documents"
/// are the texts given to [`TfIdf::new`] (sentences, usually). Deterministic: term ids
/// follow first appearance, sums run in id order.
#[derive(Debug, Clone, Default)]
pub struct TfIdf {
    ids: BTreeMap<String, u32>,
    idf: Vec<f64>,
    /// Each input text as an L2-normalised TF-IDF vector.
    pub vectors: Vec<SparseVec>,
}

impl TfIdf {
    pub fn new<S: AsRef<str>>(texts: &[S]) -> TfIdf {
        let mut ids: BTreeMap<String, u32> = BTreeMap::new();
        let mut df: Vec<usize> = Vec::new();
        let docs: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                let mut seen = BTreeSet::new();
                let doc: Vec<u32> = content_stems(t.as_ref())
                    .into_iter()
                    .map(|s| {
                        let next = ids.len() as u32;
                        let id = *ids.entry(s).or_insert(next);
                        if id as usize == df.len() {
                            df.push(0);
                        }
                        if seen.insert(id) {
                            df[id as usize] += 1;
                        }
                        id
                    })
                    .collect();
                doc
            })
            .collect();
        let n = texts.len() as f64;
        let idf: Vec<f64> = df
            .iter()
            .map(|&d| ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0)
            .collect();
        let mut me = TfIdf {
            ids,
            idf,
            vectors: Vec::new(),
        };
        me.vectors = docs.iter().map(|d| me.weigh(d)).collect();
        me
    }

    fn weigh(&self, terms: &[u32]) -> SparseVec {
        let mut tf: BTreeMap<u32, f64> = BTreeMap::new();
        for &t in terms {
            *tf.entry(t).or_insert(0.0) += 1.0;
        }
        let v: SparseVec = tf
            .into_iter()
            .map(|(t, c)| (t, c * self.idf[t as usize]))
            .collect();
        normalized(v)
    }

    /// Inverse document frequency of a stem (0 when never seen).
    pub fn idf_of(&self, stem: &str) -> f64 {
        self.ids.get(stem).map_or(0.0, |&i| self.idf[i as usize])
    }
}

/// Scales a vector to unit length (a zero vector stays zero).
pub fn normalized(mut v: SparseVec) -> SparseVec {
    let norm = v.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
    if norm > 0.0 {
        for (_, w) in &mut v {
            *w /= norm;
        }
    }
    v
}

/// The sum of several vectors, normalised (the centroid's direction).
pub fn centroid<'a>(vs: impl IntoIterator<Item = &'a SparseVec>) -> SparseVec {
    let mut acc: BTreeMap<u32, f64> = BTreeMap::new();
    for v in vs {
        for &(t, w) in v {
            *acc.entry(t).or_insert(0.0) += w;
        }
    }
    normalized(acc.into_iter().collect())
}

/// Cosine similarity of two vectors (dot product when both are normalised).
pub fn cosine(a: &SparseVec, b: &SparseVec) -> f64 {
    let (mut i, mut j, mut dot) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                dot += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    let na = a.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
    let nb = b.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
    if na > 0.0 && nb > 0.0 {
        dot / (na * nb)
    } else {
        0.0
    }
}

/// Jaccard overlap of two texts' content stems: 1 for the same words in any order.
pub fn word_overlap(a: &str, b: &str) -> f64 {
    set_overlap(&stem_set(a), &stem_set(b))
}

/// The content-word stems of a text, for [`set_overlap`].
pub fn stem_set(text: &str) -> BTreeSet<String> {
    content_stems(text).into_iter().collect()
}

/// [`word_overlap`] of two texts' [`stem_set`]s, computed once per text.
pub fn set_overlap(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return if a.is_empty() && b.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    a.intersection(b).count() as f64 / union as f64
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
    fn stopwords_are_sorted_and_found() {
        let s: Vec<&str> = STOPWORDS.split_whitespace().collect();
        let mut sorted = s.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(s, sorted, "sorted, each once");
        assert!(is_stopword("the") && is_stopword("we're") && !is_stopword("backup"));
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
