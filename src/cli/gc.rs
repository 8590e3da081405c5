//! `vsum cache gc`: removes old or excess entries, safely. A size needs a unit,
//! `--dry-run` lists what would go and removes nothing, and removing more than half of
//! the cache asks first on a terminal (`--yes` skips the question; elsewhere it is
//! refused without `--yes`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use vsum_engine::fsutil::{human_bytes, parse_age, parse_size};
use vsum_engine::store::{GcPlan, Store};

use super::common::{Fail, entries, exit, print_json};
use super::find::Target;

#[derive(clap::Args)]
pub struct GcArgs {
    /// Manifest whose cache to use (or -m)
    pub manifest: Option<PathBuf>,
    /// Keep at most this much output; a unit is required (e.g. 50G, 500M, 10K, 0)
    #[arg(long)]
    max_size: Option<String>,
    /// Remove entries not used for this long (e.g. 30d, 12h); last use is kept to the
    /// hour, so an entry goes when unused for this long plus up to an hour
    #[arg(long)]
    older_than: Option<String>,
    /// List what would be removed, remove nothing
    #[arg(long)]
    dry_run: bool,
    /// Remove more than half of the cache without asking
    #[arg(long, short = 'y')]
    yes: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Collect the shared cache of distributed runs instead (s3://BUCKET/PREFIX, needs
    /// a build with the `distributed` feature): entries written before --older-than go,
    /// then the blobs no remaining entry names
    #[arg(long, value_name = "URL", requires = "older_than", conflicts_with_all = ["max_size", "dry_run"])]
    pub shared: Option<String>,
}

/// Runs `vsum cache gc --shared URL`.
pub fn shared(args: &GcArgs) -> Result<u8, Fail> {
    let url = args.shared.as_deref().expect("--shared");
    let age = args
        .older_than
        .as_deref()
        .map(|s| parse_age(s).with_context(|| format!("bad --older-than '{s}' (e.g. 30d, 12h)")))
        .transpose()?
        .expect("clap requires --older-than");
    shared_gc(url, age, args.json)
}

#[cfg(not(feature = "distributed"))]
fn shared_gc(url: &str, _: u64, _: bool) -> Result<u8, Fail> {
    Err(super::worker::no_distributed(url))
}

#[cfg(feature = "distributed")]
fn shared_gc(url: &str, age: u64, json: bool) -> Result<u8, Fail> {
    let cache =
        vsum_distributed::S3Cache::open(url).map_err(|e| Fail::usage(format!("error: {e}")))?;
    let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
    let r = vsum_distributed::block_on(cache.gc(cutoff))
        .map_err(|e| Fail(exit::USAGE, format!("error: {e}")))?;
    if json {
        print_json(&serde_json::to_value(&r).expect("json"));
    } else {
        println!(
            "shared cache {url}: removed {} and {} blob(s); kept {} and {} blob(s)",
            entries(r.entries_removed),
            r.blobs_removed,
            entries(r.entries_kept),
            r.blobs_kept
        );
    }
    Ok(exit::OK)
}

/// What gc would do (`Store::gc_plan`, the rule `Store::gc` applies), with the bytes
/// it would free.
#[derive(Serialize)]
struct Plan {
    #[serde(flatten)]
    plan: GcPlan,
    bytes_total: u64,
    bytes_freed: u64,
}

impl std::ops::Deref for Plan {
    type Target = GcPlan;
    fn deref(&self) -> &GcPlan {
        &self.plan
    }
}

impl Plan {
    fn of(store: &Store, max_size: Option<u64>, older_than: Option<u64>) -> Plan {
        let plan = store.gc_plan(max_size, older_than);
        let total = store.stats().object_bytes;
        Plan {
            bytes_freed: total.saturating_sub(plan.bytes_kept),
            bytes_total: total,
            plan,
        }
    }

    /// More than half of the entries or of the bytes would go.
    fn is_big(&self) -> bool {
        !self.remove.is_empty()
            && (self.remove.len() * 2 > self.entries_total
                || self.bytes_freed * 2 > self.bytes_total)
    }

    fn headline(&self) -> String {
        format!(
            "{} of {} and {} of {}",
            self.remove.len(),
            entries(self.entries_total),
            human_bytes(self.bytes_freed),
            human_bytes(self.bytes_total)
        )
    }
}

/// A size from a flag or the config: a bare number is refused (`50` would be 50 bytes),
/// except 0, which is nothing in any unit.
fn size_with_unit(s: &str, what: &str) -> Result<u64, Fail> {
    let t = s.trim();
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') && t.parse::<f64>().is_ok_and(|n| n != 0.0)
    {
        return Err(Fail::usage(format!(
            "error: {what} '{s}' has no unit; say {t}G, {t}M, {t}K or {t}B (a bare number would be bytes)"
        )));
    }
    parse_size(t)
        .with_context(|| format!("bad {what} '{s}' (e.g. 50G, 500M)"))
        .map_err(Fail::from)
}

/// Runs `vsum cache gc`.
pub fn cmd(args: GcArgs, target: &Target) -> Result<u8, Fail> {
    let (cfg_max, cfg_age) = target
        .manifest
        .as_ref()
        .map(|(_, c)| (c.gc_max_size.clone(), c.gc_older_than.clone()))
        .unwrap_or_default();
    let max = match (&args.max_size, &cfg_max) {
        (Some(s), _) => Some(size_with_unit(s, "--max-size")?),
        (None, Some(s)) => Some(size_with_unit(s, "gc_max_size (config)")?),
        (None, None) => None,
    };
    let age = args
        .older_than
        .or(cfg_age)
        .map(|s| parse_age(&s).with_context(|| format!("bad --older-than '{s}' (e.g. 30d, 12h)")))
        .transpose()?;
    let plan = Plan::of(&target.store, max, age);
    if args.dry_run {
        return Ok(dry_run(&plan, args.json));
    }
    if plan.is_big() && !args.yes && !confirm(&plan)? {
        super::term::note("nothing removed");
        return Ok(exit::OK);
    }
    let r = target.store.gc(max, age);
    if args.json {
        let mut v = serde_json::to_value(&r).expect("json");
        v["dry_run"] = false.into();
        print_json(&v);
    } else {
        println!(
            "removed {} and {} object(s), freed {}; kept {} ({})",
            entries(r.entries_removed),
            r.objects_removed,
            human_bytes(r.bytes_freed),
            entries(r.entries_kept),
            human_bytes(r.bytes_kept)
        );
    }
    Ok(exit::OK)
}

fn dry_run(plan: &Plan, json: bool) -> u8 {
    if json {
        let mut v = serde_json::to_value(plan).expect("json");
        v["dry_run"] = true.into();
        print_json(&v);
        return exit::OK;
    }
    let sw = plan
        .remove
        .iter()
        .map(|d| d.stage.as_deref().unwrap_or("?").chars().count())
        .max()
        .unwrap_or(0);
    for d in &plan.remove {
        println!(
            "would remove {:<12}  {:<sw$}  {:>10}  {:<20}  {}",
            &d.key[..d.key.len().min(12)],
            d.stage.as_deref().unwrap_or("?"),
            human_bytes(d.size),
            d.why,
            d.video.as_deref().unwrap_or("[batch]")
        );
    }
    println!(
        "dry run: would remove {}, freeing {}; would keep {} ({}); nothing removed",
        entries(plan.remove.len()),
        human_bytes(plan.bytes_freed),
        entries(plan.entries_kept),
        human_bytes(plan.bytes_kept)
    );
    exit::OK
}

/// Asks before removing more than half of the cache; refuses where nobody can answer.
fn confirm(plan: &Plan) -> Result<bool, Fail> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Fail::usage(format!(
            "error: gc would remove {}, more than half of the cache; refusing without a question answered\n  hint: pass --yes to go ahead, or --dry-run to see the list",
            plan.headline()
        )));
    }
    eprint!("gc would remove {}. Go ahead? [y/N] ", plan.headline());
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return Ok(false);
    }
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::size_with_unit;

    #[test]
    fn a_size_needs_a_unit_except_zero() {
        assert!(size_with_unit("50", "--max-size").is_err());
        assert!(size_with_unit("1.5", "--max-size").is_err());
        assert_eq!(size_with_unit("0", "--max-size").ok(), Some(0));
        assert_eq!(size_with_unit("2K", "--max-size").ok(), Some(2048));
        assert_eq!(size_with_unit("50B", "--max-size").ok(), Some(50));
    }
}
