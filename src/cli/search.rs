//! `vsum search "QUERY"`: asks the library. Hybrid search (BM25 words + sentence
//! embeddings) over the index a `search.index` stage of the manifest built; each hit
//! says which video, chapter and time, with a snippet and how to open it there.

use std::path::PathBuf;

use serde::Serialize;
use vsum_engine::stage::Registry;
use vsum_stages::search::embed::load_encoder;
use vsum_stages::search::query::{Hit, MAX_QUERY_CHARS, Searcher, index_dir};

use super::common::{Common, Fail, exit, load_config, load_manifest, models_dir, print_json};
use super::find;

#[derive(clap::Args)]
pub struct SearchArgs {
    /// What to look for, in your own words
    query: String,
    /// The pipeline manifest (default: env VSUM_MANIFEST, else the only manifest in this
    /// folder, its pipelines/, or a parent folder)
    #[arg(long = "manifest", short = 'm', value_name = "MANIFEST")]
    manifest: Option<PathBuf>,
    /// At most this many hits
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Serialize)]
struct Answer<'a> {
    query: &'a str,
    videos: usize,
    hits: Vec<OpenHit>,
}

#[derive(Serialize)]
struct OpenHit {
    #[serde(flatten)]
    hit: Hit,
    /// The knowledge page at that time.
    page_path: PathBuf,
    /// The source video, to play from that time (`mpv --start=SECS PATH`).
    source_path: PathBuf,
}

/// Runs `vsum search`.
pub fn cmd(args: SearchArgs, registry: &Registry) -> Result<u8, Fail> {
    let path = find::manifest(None, args.manifest.as_deref())?.ok_or_else(|| {
        Fail::usage("error: which library? pass -m MANIFEST (no manifest found here)")
    })?;
    let m = load_manifest(&path, registry)?;
    let cfg = load_config(&m, &args.common, Default::default())?;
    let stage = m
        .stages
        .iter()
        .find(|s| s.kind == "search.index")
        .ok_or_else(|| {
            Fail::usage(format!(
                "error: {} has no search index stage\nhint: add `text.embed` and `search.index` stages (see pipelines/summarize.yaml)",
                path.display()
            ))
        })?;
    if args.query.trim().is_empty() {
        return Err(Fail::usage(
            "error: the query is empty\nhint: ask in words, e.g. vsum search \"rolling back a release\"",
        ));
    }
    if args.query.chars().count() > MAX_QUERY_CHARS {
        super::term::note(format_args!(
            "vsum: the query is long; its first {MAX_QUERY_CHARS} characters are used"
        ));
    }
    let output = m.output_dir();
    let dir = index_dir(&output, &stage.id);
    let searcher = Searcher::open(&dir).map_err(|e| Fail::failed(format!("error: {e}")))?;
    if searcher.videos() == 0 {
        return Err(Fail::failed(
            "error: the library is empty: no video has a searchable knowledge file yet\nhint: add videos to the manifest's inputs and run it",
        ));
    }
    let models = models_dir(&m, &cfg);
    let (encoder, _) = load_encoder(&models, searcher.model(), &m.base_dir).map_err(|e| {
        Fail::failed(format!(
            "error: {}{}",
            e.message,
            e.hint.map(|h| format!("\nhint: {h}")).unwrap_or_default()
        ))
    })?;
    let hits = searcher
        .search(&args.query, &encoder, args.limit.max(1))
        .map_err(|e| Fail::usage(format!("error: {e}")))?;
    let hits: Vec<OpenHit> = hits
        .into_iter()
        .map(|hit| OpenHit {
            page_path: output.join(&hit.page),
            source_path: vsum_engine::fsutil::normalize(&m.base_dir.join(&hit.source)),
            hit,
        })
        .collect();
    let found = !hits.is_empty();
    if args.json {
        print_json(&Answer {
            query: &args.query,
            videos: searcher.videos(),
            hits,
        });
    } else if hits.is_empty() {
        println!(
            "nothing in {} videos matches \"{}\"",
            searcher.videos(),
            args.query.trim()
        );
    } else {
        for (i, h) in hits.iter().enumerate() {
            let x = &h.hit;
            println!("{}. {} — {} at {}", i + 1, x.video, x.chapter_title, x.at);
            println!("   {}", x.snippet);
            println!(
                "   open: {}  |  play: mpv --start={} {}",
                h.page_path.display(),
                x.start.floor() as u64,
                h.source_path.display()
            );
        }
    }
    // Like grep: nothing found is exit 1.
    Ok(if found { exit::OK } else { exit::FAILED })
}
