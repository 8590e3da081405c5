//! Keyphrases: the multi-word terms a video is about ("database backup", "release
//! process"), not its most frequent single words ("goes, work, time").
//!
//! RAKE-style candidates (Rose et al. 2010): runs of content words between stop words and
//! punctuation, and their sub-phrases of up to [`MAX_WORDS`] words, grouped by their
//! stems so "database backups" and "database backup" count together. Each candidate is
//! scored as in C-value (Frantzi et al. 2000): its length times its occurrences that are
//! not inside a frequent longer phrase, times how specific its words are: a word spoken in every
//! part of the video ("time", "work") is generic there, one spoken in a single part is
//! topical. Deterministic: ties go to the phrase said first, then alphabetically.

use std::collections::{BTreeMap, BTreeSet};

use super::text::{self, is_stopword};

/// Longest phrase considered.
pub const MAX_WORDS: usize = 3;
/// Under this many content words a scope is short (see [`Keyphrases::top_counted`]).
const SHORT_SCOPE_WORDS: usize = 300;

/// One candidate phrase: its stems, how often it occurs, its most frequent spelling.
#[derive(Debug, Clone)]
struct Candidate {
    stems: Vec<String>,
    /// Occurrences per part (chapter or block).
    per_part: BTreeMap<usize, usize>,
    surfaces: BTreeMap<String, usize>,
    /// Where it is first said (a running count of phrase runs): equal scores rank the
    /// phrase said earlier first, as a speaker names the topic before going into it.
    first: usize,
}

impl Candidate {
    fn count(&self) -> usize {
        self.per_part.values().sum()
    }
    fn surface(&self) -> String {
        // Most frequent spelling, ties to the alphabetically first.
        let mut best: Option<(&String, usize)> = None;
        for (s, &n) in &self.surfaces {
            if best.is_none_or(|b| n > b.1) {
                best = Some((s, n));
            }
        }
        best.map(|b| b.0.clone()).unwrap_or_default()
    }
}

/// The phrases of a text split into parts (chapters, or blocks of sentences), ready to
/// rank for the whole text or for one part.
#[derive(Debug, Clone)]
pub struct Keyphrases {
    cands: BTreeMap<String, Candidate>,
    /// In how many parts each stem occurs.
    part_freq: BTreeMap<String, usize>,
    parts: usize,
    /// For each candidate, the longer candidates that contain it.
    parents: BTreeMap<String, Vec<String>>,
}

/// Words that are no stop words but never name what a video is about: when things
/// happen ("Friday", "evening"), how often, plain ordinals and fillers ("first item").
const NOT_TOPICAL: &str = "monday tuesday wednesday thursday friday saturday sunday \
    january february march april june july august september october november december \
    today tomorrow yesterday morning afternoon evening night tonight week weeks weekend \
    month months year years day days hour hours minute minutes second seconds \
    once twice first third last next good great little lot lots thing things item items \
    thanks thank okay welcome everyone";

fn topical(word: &str) -> bool {
    static SET: std::sync::LazyLock<BTreeSet<&'static str>> =
        std::sync::LazyLock::new(|| NOT_TOPICAL.split_whitespace().collect());
    !SET.contains(word)
}

fn usable(word: &str) -> bool {
    word.chars().count() >= 3
        && !is_stopword(word)
        && topical(word)
        && !word.chars().any(|c| c.is_numeric())
        && word.chars().any(char::is_alphabetic)
}

impl Keyphrases {
    /// `parts[p]` holds the sentences of part `p`.
    pub fn new<S: AsRef<str>>(parts: &[Vec<S>]) -> Keyphrases {
        let mut cands: BTreeMap<String, Candidate> = BTreeMap::new();
        let mut part_stems: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        let mut at_run = 0;
        for (p, sentences) in parts.iter().enumerate() {
            for sentence in sentences {
                for run in runs(sentence.as_ref()) {
                    at_run += 1;
                    let stems: Vec<String> = run.iter().map(|w| text::stem(w)).collect();
                    for s in &stems {
                        part_stems.entry(s.clone()).or_default().insert(p);
                    }
                    for len in 1..=MAX_WORDS.min(run.len()) {
                        for at in 0..=(run.len() - len) {
                            let key = stems[at..at + len].join(" ");
                            let c = cands.entry(key).or_insert_with(|| Candidate {
                                stems: stems[at..at + len].to_vec(),
                                per_part: BTreeMap::new(),
                                surfaces: BTreeMap::new(),
                                first: at_run,
                            });
                            *c.per_part.entry(p).or_insert(0) += 1;
                            *c.surfaces.entry(run[at..at + len].join(" ")).or_insert(0) += 1;
                        }
                    }
                }
            }
        }
        let mut parents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, c) in &cands {
            let n = c.stems.len();
            let mut subs = BTreeSet::new();
            for len in 1..n {
                for at in 0..=(n - len) {
                    subs.insert(c.stems[at..at + len].join(" "));
                }
            }
            for sub in subs {
                parents.entry(sub).or_default().push(key.clone());
            }
        }
        Keyphrases {
            cands,
            part_freq: part_stems.into_iter().map(|(s, p)| (s, p.len())).collect(),
            parts: parts.len(),
            parents,
        }
    }

    /// How specific a stem is to a few parts: 1 when it occurs in one part, falling
    /// towards 0 as it spreads over all of them.
    fn specificity(&self, stem: &str) -> f64 {
        if self.parts <= 1 {
            return 1.0;
        }
        let df = self.part_freq.get(stem).copied().unwrap_or(1).max(1) as f64;
        let n = self.parts as f64;
        ((n + 1.0) / df).ln() / (n + 1.0).ln()
    }

    /// The `k` best phrases of the whole text (`part: None`) or of one part. A phrase must
    /// occur at least twice (in that scope) unless the scope is short (a phrase of
    /// several words) or very short (a single word); a phrase
    /// contained in, or containing, a better one is left out.
    pub fn top(&self, k: usize, part: Option<usize>) -> Vec<String> {
        self.top_counted(k, part).into_iter().map(|x| x.0).collect()
    }

    /// [`Keyphrases::top`] with each phrase's number of occurrences in the scope.
    pub fn top_counted(&self, k: usize, part: Option<usize>) -> Vec<(String, usize)> {
        let count = |c: &Candidate| match part {
            None => c.count(),
            Some(p) => c.per_part.get(&p).copied().unwrap_or(0),
        };
        let total_words: usize = self
            .cands
            .values()
            .filter(|c| c.stems.len() == 1)
            .map(count)
            .sum();
        let min_count = if total_words < 40 { 1 } else { 2 };
        // In a short scope (a one-minute clip, a short chapter) few phrases are said
        // twice: a phrase of several words said once still names a topic ("office
        // move"). Single words still need two mentions.
        let short = total_words < SHORT_SCOPE_WORDS;
        let mut scored: Vec<(f64, &str, &Candidate)> = Vec::new();
        for (key, c) in &self.cands {
            let f = count(c);
            let min = if short && c.stems.len() > 1 {
                1
            } else {
                min_count
            };
            if f < min {
                continue;
            }
            // Occurrences inside a frequent longer phrase (one word longer) are that
            // phrase's, not this one's: "process" only ever said in "release process"
            // is no keyphrase of its own. In a short scope a single word's are taken by
            // any such phrase ("new" of "new building" and "new key").
            let parent_min = if short && c.stems.len() == 1 { 1 } else { 2 };
            let nested: usize = self
                .parents
                .get(key)
                .into_iter()
                .flatten()
                .map(|k| &self.cands[k])
                .filter(|o| o.stems.len() == c.stems.len() + 1)
                .map(count)
                .filter(|&fo| fo >= parent_min)
                .sum();
            let own = f as f64 - nested as f64;
            if own <= 0.0 {
                continue;
            }
            let spec =
                c.stems.iter().map(|s| self.specificity(s)).sum::<f64>() / c.stems.len() as f64;
            let score = (1.0 + c.stems.len() as f64).log2() * own * spec;
            if score > 0.0 {
                scored.push((score, key, c));
            }
        }
        scored.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(a.2.first.cmp(&b.2.first))
                .then(a.1.cmp(b.1))
        });
        let mut chosen: Vec<&Candidate> = Vec::new();
        for (_, _, c) in scored {
            if chosen.len() >= k {
                break;
            }
            let set: BTreeSet<&String> = c.stems.iter().collect();
            let clash = chosen.iter().any(|d| {
                let other: BTreeSet<&String> = d.stems.iter().collect();
                set.is_subset(&other) || other.is_subset(&set)
            });
            if !clash {
                chosen.push(c);
            }
        }
        chosen
            .into_iter()
            .map(|c| (c.surface(), count(c)))
            .collect()
    }
}

/// Runs of usable words between stop words and punctuation, lower-case.
fn runs(sentence: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut word = String::new();
    let flush_word = |word: &mut String, cur: &mut Vec<String>, out: &mut Vec<Vec<String>>| {
        let w = word.trim_matches('\'').to_lowercase();
        word.clear();
        if w.is_empty() {
            return;
        }
        if usable(&w) {
            cur.push(w);
        } else if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    for c in sentence.chars() {
        if c.is_alphanumeric() || c == '\'' || c == '’' {
            word.push(if c == '’' { '\'' } else { c });
        } else {
            flush_word(&mut word, &mut cur, &mut out);
            // Punctuation (not spaces or hyphens) ends a phrase.
            if !(c.is_whitespace() || c == '-' || cur.is_empty()) {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    flush_word(&mut word, &mut cur, &mut out);
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_at_stop_words_and_punctuation() {
        assert_eq!(
            runs("The nightly database backups, and the restore drill run at 2 am."),
            vec![
                vec!["nightly", "database", "backups"],
                vec!["restore", "drill", "run"]
            ]
        );
    }

    #[test]
    fn multi_word_topics_beat_common_words() {
        let parts: Vec<Vec<&str>> = vec![
            vec![
                "The database backup runs every night, so it takes time.",
                "A database backup goes to a second region.",
                "We test each database backup with a restore drill.",
                "The restore drill takes time and work.",
            ],
            vec![
                "The release process starts on Monday, which takes time.",
                "Each release process ends with release notes.",
                "The release notes list every change, which is work.",
                "The release process needs the release notes.",
            ],
            vec![
                "Onboarding new hires takes time and work.",
                "Every new hire gets a buddy and a laptop.",
                "The buddy explains the work to the new hire.",
            ],
        ];
        let k = Keyphrases::new(&parts);
        let top = k.top(5, None);
        assert!(top.contains(&"database backup".to_string()), "{top:?}");
        assert!(top.contains(&"release process".to_string()), "{top:?}");
        assert!(top.contains(&"release notes".to_string()), "{top:?}");
        assert!(
            !top.contains(&"time".to_string()) && !top.contains(&"work".to_string()),
            "{top:?}"
        );
        // "backup" alone is inside "database backup": not listed beside it.
        assert!(!top.contains(&"backup".to_string()), "{top:?}");
        // Per part: the part's own topic.
        assert_eq!(k.top(1, Some(0))[0], "database backup");
        assert!(
            k.top(2, Some(2)).contains(&"new hire".to_string()),
            "{:?}",
            k.top(2, Some(2))
        );
        // Plural and singular are one phrase.
        assert_eq!(k.top(5, None), top, "deterministic");
    }

    #[test]
    fn a_short_meeting_keeps_its_phrases_said_once() {
        // Whisper's transcript of the two-voice meeting sample (34 s).
        let parts = vec![vec![
            "Good morning everyone, first item, the day the May Smack Up failed twice last week because the disk was full.",
            "I moved the old snapshots to cold storage, so the nightly backup has room again.",
            "The restore drill is planned for Friday.",
            "Thanks, second item, the office move, the movers come on Saturday, so please pack your desk by Friday evening.",
            "The new building has bicycle parking in the garage and reception hands out the new key on Monday.",
        ]];
        let top = Keyphrases::new(&parts).top(8, None);
        for want in [
            "office move",
            "nightly backup",
            "restore drill",
            "cold storage",
        ] {
            assert!(top.contains(&want.to_string()), "{want}: {top:?}");
        }
        // Not topics: when it happens, or that something is new.
        for not in ["new", "friday", "friday evening", "item"] {
            assert!(!top.contains(&not.to_string()), "{not}: {top:?}");
        }
    }
}
