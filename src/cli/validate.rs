//! `vsum validate` and `vsum dag`: check a manifest, draw its stage graph.

use serde_json::json;
use vsum_engine::graph::{self, DagFormat};
use vsum_engine::stage::Registry;

use super::common::{Common, Fail, check_inputs, exit, load_config, load_manifest, print_json};
use super::find::ManifestArg;

#[derive(clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    target: ManifestArg,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

/// Runs `vsum validate`: every problem at once (exit 2), or a one-line ok. Inputs
/// that are not on disk are a problem too.
pub fn validate(args: ValidateArgs, registry: &Registry) -> Result<u8, Fail> {
    let path = args.target.resolve()?;
    let m = load_manifest(&path, registry)?;
    load_config(&m, &args.common, Default::default())?;
    check_inputs(&path, &m, false)?;
    let ids: Vec<&str> = m.stages.iter().map(|s| s.id.as_str()).collect();
    if args.json {
        print_json(&json!({
            "manifest": path, "ok": true, "name": m.name,
            "stages": m.stages.iter().map(|s| json!({
                "id": s.id, "kind": s.kind, "needs": s.needs, "lane": s.lane,
                "scope": s.scope, "publish": s.publish,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "{}: ok ({} stage(s): {})",
            path.display(),
            m.stages.len(),
            ids.join(", ")
        );
    }
    Ok(exit::OK)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DagArg {
    Dot,
    Mermaid,
    Text,
    /// Stages and their edges as JSON
    Json,
}

#[derive(clap::Args)]
pub struct DagArgs {
    #[command(flatten)]
    target: ManifestArg,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    format: DagArg,
    /// Print JSON (the same as --format json)
    #[arg(long)]
    json: bool,
}

/// Runs `vsum dag`.
pub fn dag(args: DagArgs, registry: &Registry) -> Result<u8, Fail> {
    let m = load_manifest(&args.target.resolve()?, registry)?;
    let f = match args.format {
        _ if args.json => None,
        DagArg::Json => None,
        DagArg::Dot => Some(DagFormat::Dot),
        DagArg::Mermaid => Some(DagFormat::Mermaid),
        DagArg::Text => Some(DagFormat::Text),
    };
    match f {
        Some(f) => print!("{}", graph::render(&m, f)),
        None => print_json(&json!({
            "stages": m.stages.iter().map(|s| json!({
                "id": s.id, "kind": s.kind, "lane": s.lane, "scope": s.scope,
            })).collect::<Vec<_>>(),
            "edges": m.stages.iter().flat_map(|s| s.needs.iter().map(|n| json!({
                "from": n, "to": s.id,
            }))).collect::<Vec<_>>(),
        })),
    }
    Ok(exit::OK)
}
