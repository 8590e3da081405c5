//! Chapter boundaries from several sources, fused in one place.
//!
//! Each source proposes boundary candidates with a vote: scene cuts (`video.scenes`),
//! topic shifts in the transcript ([`super::segment`]), and any later source (slide
//! changes with their titles). Candidates closer than `snap_secs` are one event: votes
//! of different cues add up (a topic shift at a scene cut is a strong boundary), votes of
//! the same cue do not (ten quick cuts are not ten times as strong), and the event sits
//! at the most precise cue's time (slide, then scene, then topic). Events with a full
//! vote become boundaries, strongest first, never closer than `min_secs` to another; a
//! chapter still longer than `max_secs` is split at its strongest remaining candidate,
//! else at the pause nearest its middle.

use serde::{Deserialize, Serialize};

/// What proposes a boundary. Order is precision of the time, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cue {
    /// A slide change (the slide's title names the chapter).
    Slide,
    /// A visual cut.
    Scene,
    /// The words change subject.
    Topic,
    /// No cue: a long chapter split for length.
    Length,
}

impl Cue {
    pub fn as_str(self) -> &'static str {
        match self {
            Cue::Slide => "slide",
            Cue::Scene => "scene",
            Cue::Topic => "topic",
            Cue::Length => "length",
        }
    }
}

/// One source's proposal: a boundary at `time`, with `vote` (1 = enough on its own).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub time: f64,
    pub cue: Cue,
    pub vote: f64,
    /// A title for the chapter that starts here, when the source knows one.
    pub title: Option<String>,
}

/// Chapter length rules.
#[derive(Debug, Clone)]
pub struct Limits {
    pub min_secs: f64,
    pub max_secs: f64,
    /// Candidates this close are one event.
    pub snap_secs: f64,
}

/// A chapter: its time span, what marks its start, and a title if a source gave one.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub start: f64,
    pub end: f64,
    pub cues: Vec<Cue>,
    pub title: Option<String>,
}

#[derive(Debug, Clone)]
struct Event {
    time: f64,
    vote: f64,
    cues: Vec<Cue>,
    title: Option<String>,
}

fn events(cands: &[Candidate], snap: f64) -> Vec<Event> {
    let mut sorted: Vec<&Candidate> = cands.iter().filter(|c| c.time.is_finite()).collect();
    sorted.sort_by(|a, b| a.time.total_cmp(&b.time).then(a.cue.cmp(&b.cue)));
    let mut groups: Vec<Vec<&Candidate>> = Vec::new();
    for c in sorted {
        match groups.last_mut() {
            Some(g) if c.time - g[0].time <= snap => g.push(c),
            _ => groups.push(vec![c]),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            // Per cue, the strongest candidate; votes add across cues.
            let mut best: Vec<&Candidate> = Vec::new();
            for c in g {
                match best.iter_mut().find(|b| b.cue == c.cue) {
                    Some(b) if c.vote > b.vote => *b = c,
                    Some(_) => {}
                    None => best.push(c),
                }
            }
            best.sort_by(|a, b| a.cue.cmp(&b.cue).then(b.vote.total_cmp(&a.vote)));
            Event {
                time: best[0].time,
                vote: best.iter().map(|c| c.vote.max(0.0)).sum(),
                cues: best.iter().map(|c| c.cue).collect(),
                title: best.iter().find_map(|c| c.title.clone()),
            }
        })
        .collect()
}

/// Fuses candidates into chapters covering `0..duration`. `pauses` are times where a
/// forced split may fall (between sentences), used only when no candidate fits.
pub fn fuse(cands: &[Candidate], duration: f64, limits: &Limits, pauses: &[f64]) -> Vec<Span> {
    let duration = duration.max(0.0);
    let min = limits.min_secs.max(0.0);
    let evs = events(cands, limits.snap_secs.max(0.0));
    // An event at the very start only names the first chapter.
    let first_title = evs
        .iter()
        .find(|e| e.time <= limits.snap_secs)
        .and_then(|e| e.title.clone());
    let fits = |t: f64, cuts: &[(f64, Vec<Cue>, Option<String>)]| {
        t >= min && duration - t >= min && cuts.iter().all(|c| (c.0 - t).abs() >= min)
    };
    let mut cuts: Vec<(f64, Vec<Cue>, Option<String>)> = Vec::new();
    let mut order: Vec<&Event> = evs.iter().collect();
    order.sort_by(|a, b| b.vote.total_cmp(&a.vote).then(a.time.total_cmp(&b.time)));
    for e in &order {
        if e.vote >= 1.0 && fits(e.time, &cuts) {
            cuts.push((e.time, e.cues.clone(), e.title.clone()));
        }
    }
    // Split chapters that are too long, the longest first.
    if limits.max_secs > 0.0 && limits.max_secs >= 2.0 * min {
        for _ in 0..10_000 {
            let mut edges: Vec<f64> = cuts.iter().map(|c| c.0).collect();
            edges.push(0.0);
            edges.push(duration);
            edges.sort_by(f64::total_cmp);
            let Some((a, b)) = edges
                .windows(2)
                .map(|w| (w[0], w[1]))
                .filter(|(a, b)| b - a > limits.max_secs)
                .max_by(|x, y| (x.1 - x.0).total_cmp(&(y.1 - y.0)))
            else {
                break;
            };
            let inside = |t: f64| t > a && t < b;
            let by_event = order
                .iter()
                .filter(|e| inside(e.time) && e.vote > 0.0 && fits(e.time, &cuts))
                .max_by(|x, y| x.vote.total_cmp(&y.vote).then(y.time.total_cmp(&x.time)));
            let mid = (a + b) / 2.0;
            let cut = if let Some(e) = by_event {
                (e.time, e.cues.clone(), e.title.clone())
            } else if let Some(&t) = pauses
                .iter()
                .filter(|&&t| inside(t) && fits(t, &cuts))
                .min_by(|x, y| (*x - mid).abs().total_cmp(&(*y - mid).abs()))
            {
                (t, vec![Cue::Length], None)
            } else {
                (mid, vec![Cue::Length], None)
            };
            cuts.push(cut);
        }
    }
    cuts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut spans = vec![Span {
        start: 0.0,
        end: duration,
        cues: Vec::new(),
        title: first_title,
    }];
    for (t, cues, title) in cuts {
        spans.last_mut().expect("one span at least").end = t;
        spans.push(Span {
            start: t,
            end: duration,
            cues,
            title,
        });
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(time: f64, cue: Cue, vote: f64) -> Candidate {
        Candidate {
            time,
            cue,
            vote,
            title: None,
        }
    }

    const LIMITS: Limits = Limits {
        min_secs: 20.0,
        max_secs: 120.0,
        snap_secs: 5.0,
    };

    fn starts(s: &[Span]) -> Vec<f64> {
        s.iter().map(|x| x.start).collect()
    }

    #[test]
    fn a_topic_shift_at_a_cut_moves_to_the_cut_and_weak_cues_need_each_other() {
        let spans = fuse(
            &[
                c(61.0, Cue::Topic, 0.6),
                c(60.0, Cue::Scene, 0.5),
                // Quick cuts alone are not enough, however many.
                c(100.0, Cue::Scene, 0.5),
                c(102.0, Cue::Scene, 0.5),
                c(104.0, Cue::Scene, 0.5),
                // A full topic vote is.
                c(140.5, Cue::Topic, 1.3),
            ],
            200.0,
            &LIMITS,
            &[],
        );
        assert_eq!(starts(&spans), vec![0.0, 60.0, 140.5]);
        assert_eq!(spans[1].cues, vec![Cue::Scene, Cue::Topic]);
        assert_eq!(spans.last().unwrap().end, 200.0);
    }

    #[test]
    fn chapters_keep_the_minimum_length_and_the_stronger_boundary_wins() {
        let spans = fuse(
            &[
                c(30.0, Cue::Topic, 1.1),
                c(40.0, Cue::Topic, 2.0),
                c(50.0, Cue::Topic, 1.2),
                c(190.0, Cue::Topic, 3.0), // too close to the end
            ],
            200.0,
            &LIMITS,
            &[],
        );
        assert_eq!(starts(&spans), vec![0.0, 40.0, 120.0]);
        assert_eq!(spans[2].cues, vec![Cue::Length]);
    }

    #[test]
    fn long_chapters_split_at_weak_candidates_then_at_pauses() {
        let spans = fuse(&[c(90.0, Cue::Topic, 0.3)], 150.0, &LIMITS, &[]);
        assert_eq!(starts(&spans), vec![0.0, 90.0]);
        assert_eq!(spans[1].cues, vec![Cue::Topic]);
        let spans = fuse(&[], 300.0, &LIMITS, &[70.0, 148.0, 230.0]);
        assert_eq!(starts(&spans), vec![0.0, 70.0, 148.0, 230.0]);
        // Slide titles name their chapter; at zero they name the first one.
        let mut a = c(0.0, Cue::Slide, 1.0);
        a.title = Some("Intro".into());
        let mut b = c(80.0, Cue::Slide, 1.0);
        b.title = Some("Backups".into());
        let spans = fuse(&[a, b, c(82.0, Cue::Scene, 1.0)], 150.0, &LIMITS, &[]);
        assert_eq!(starts(&spans), vec![0.0, 80.0]);
        assert_eq!(spans[0].title.as_deref(), Some("Intro"));
        assert_eq!(spans[1].title.as_deref(), Some("Backups"));
        assert_eq!(spans[1].cues, vec![Cue::Slide, Cue::Scene]);
    }
}
