//! What `vsum search` costs on a large library: a synthetic library of 1,000 videos
//! (40 passages each, sentences drawn from a fixed vocabulary, random unit vectors in
//! place of real embeddings, which only change the numbers, not the work), built with
//! the `search.index` code. Prints the build time, the index's size on disk, the time to
//! open it, and the latency of a query (embedding the query with the real model, BM25,
//! cosine over every passage, fusion), as the median of 20 queries; and what adding one
//! video costs: updating a copy of the index (as `search.index` does with its previous
//! output) against building it anew.
//!
//! Run: `cargo bench -p vsum-stages --bench search` (needs `vsum models install
//! all-minilm-l6-v2`; without it, says so and times everything but the query).

use std::path::Path;
use std::time::Instant;

use vsum_models::ModelsDir;
use vsum_stages::search::embed::{Passage, VECTORS, load_encoder};
use vsum_stages::search::index::{
    FORMAT_VERSION, IndexBuild, Library, LibraryPassage, LibraryVideo, TANTIVY_DIR,
    build_text_index, update_text_index,
};
use vsum_stages::search::minilm;
use vsum_stages::search::query::Searcher;

const VIDEOS: usize = 1000;
const PASSAGES: usize = 40;
const DIMS: usize = 384;

const WORDS: &[&str] = &[
    "release",
    "branch",
    "database",
    "backup",
    "snapshot",
    "restore",
    "mentor",
    "onboarding",
    "pager",
    "outage",
    "incident",
    "postmortem",
    "budget",
    "forecast",
    "invoice",
    "survey",
    "customer",
    "delivery",
    "parcel",
    "offsite",
    "hotel",
    "train",
    "password",
    "phishing",
    "security",
    "laptop",
    "badge",
    "calendar",
    "deploy",
    "rollback",
    "server",
    "cluster",
    "kitchen",
    "office",
    "building",
    "parking",
    "meeting",
    "agenda",
    "roadmap",
    "quarter",
    "team",
    "project",
    "review",
    "design",
    "testing",
    "bug",
    "feature",
    "metric",
    "dashboard",
    "alert",
    "storage",
    "network",
    "latency",
    "cache",
    "queue",
    "worker",
    "schedule",
];

/// xorshift: the same library every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 20_001) as f32 / 10_000.0 - 1.0
    }
}

fn dir_size(p: &Path) -> u64 {
    walk(p)
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn main() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut lib = Library {
        format: FORMAT_VERSION,
        model: "all-minilm-l6-v2".into(),
        dims: DIMS,
        ..Library::default()
    };
    let mut vectors: Vec<Vec<f32>> = Vec::new();
    for v in 0..VIDEOS {
        lib.videos.push(LibraryVideo {
            folder: format!("video-{v:04}"),
            title: format!("Weekly sync {v}"),
            source: format!("videos/video-{v:04}.mp4"),
            page: format!("video-{v:04}/summary/summary.html"),
            digest: format!("{v}"),
            first: lib.passages.len(),
            count: PASSAGES,
        });
        for i in 0..PASSAGES {
            let text: Vec<&str> = (0..40)
                .map(|_| WORDS[(rng.next() % WORDS.len() as u64) as usize])
                .collect();
            lib.passages.push(LibraryPassage {
                video: v,
                passage: Passage {
                    chapter: i / 5,
                    chapter_title: format!("Chapter {}", i / 5),
                    start: i as f64 * 20.0,
                    end: i as f64 * 20.0 + 20.0,
                    kind: "speech".into(),
                    text: text.join(" "),
                },
            });
            let raw: Vec<f32> = (0..DIMS).map(|_| rng.unit()).collect();
            let n = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
            vectors.push(raw.iter().map(|x| x / n).collect());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    build_text_index(&dir.path().join(TANTIVY_DIR), &lib).unwrap();
    std::fs::write(dir.path().join(VECTORS), minilm::to_bytes(&vectors)).unwrap();
    std::fs::write(
        dir.path().join("library.json"),
        serde_json::to_vec(&lib).unwrap(),
    )
    .unwrap();
    let build = started.elapsed().as_secs_f64();
    let size = |p: &Path| dir_size(p) as f64 / 1e6;
    println!(
        "library: {VIDEOS} videos, {} passages; built in {build:.2} s",
        lib.passages.len()
    );
    println!(
        "on disk: {:.1} MB (text index {:.1} MB, vectors {:.1} MB, library.json {:.1} MB)",
        size(dir.path()),
        size(&dir.path().join(TANTIVY_DIR)),
        std::fs::metadata(dir.path().join(VECTORS)).unwrap().len() as f64 / 1e6,
        std::fs::metadata(dir.path().join("library.json"))
            .unwrap()
            .len() as f64
            / 1e6
    );
    // One more video: the previous index updated, or a new one built.
    let mut more = lib.clone();
    more.videos.push(LibraryVideo {
        folder: "video-new".into(),
        digest: "new".into(),
        first: more.passages.len(),
        count: PASSAGES,
        ..lib.videos[0].clone()
    });
    let added: Vec<LibraryPassage> = lib.passages[..PASSAGES]
        .iter()
        .map(|p| LibraryPassage {
            video: VIDEOS,
            ..p.clone()
        })
        .collect();
    more.passages.extend(added);
    let other = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut b = IndexBuild::default();
    update_text_index(
        dir.path(),
        &lib,
        &other.path().join("updated"),
        &more,
        &mut b,
    )
    .unwrap();
    let update = started.elapsed().as_secs_f64();
    let started = Instant::now();
    build_text_index(&other.path().join("rebuilt"), &more).unwrap();
    println!(
        "one video more: index updated in {:.0} ms ({} documents written), rebuilt in {:.0} ms",
        update * 1e3,
        b.added_passages,
        started.elapsed().as_secs_f64() * 1e3
    );
    let started = Instant::now();
    let searcher = Searcher::open(dir.path()).unwrap();
    println!("open: {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    let models = ModelsDir::from_config(None);
    let encoder = match load_encoder(&models, "all-minilm-l6-v2", Path::new(".")) {
        Ok((e, _)) => e,
        Err(e) => {
            println!(
                "SKIPPED the query latency: {} (vsum models install all-minilm-l6-v2)",
                e.message
            );
            return;
        }
    };
    let queries = [
        "rolling back a release",
        "who gets paged during an outage",
        "database backup and restore drill",
        "budget forecast for next quarter",
        "how new people are welcomed",
    ];
    let mut times: Vec<f64> = Vec::new();
    let mut hits = 0;
    for i in 0..20 {
        let q = queries[i % queries.len()];
        let started = Instant::now();
        hits += searcher.search(q, &encoder, 10).unwrap().len();
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "query (embed + BM25 + cosine over {} passages + fusion): median {:.0} ms, max {:.0} ms ({hits} hits in 20 queries)",
        lib.passages.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
