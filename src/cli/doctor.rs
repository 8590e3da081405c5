//! `vsum doctor`: checks that this machine can run a pipeline, and says how to fix
//! what it cannot. Each line is ok, warn or fail; any fail makes the exit code 1.

use std::collections::BTreeSet;
use std::path::Path;

use vsum_engine::alerts::Alerts;
use vsum_engine::config::Config;
use vsum_engine::fsutil::human_bytes;
use vsum_engine::manifest::Manifest;
use vsum_engine::monitor::{Gpu, GpuInfo, free_bytes};
use vsum_engine::stage::{Check, CheckStatus, Registry};
use vsum_models::{ModelsDir, ModelsManifest};

use super::common::{
    Common, Fail, exit, load_alerts, load_config, load_manifest, models_dir, print_json,
};
use super::find::{self, ManifestArg};

#[derive(clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    target: ManifestArg,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: Common,
}

/// Runs `vsum doctor`: exit 1 when any check fails.
pub fn cmd(args: DoctorArgs, registry: &Registry) -> Result<u8, Fail> {
    let path = find::manifest(args.target.manifest.as_deref(), args.target.flag.as_deref())?;
    let loaded = path.as_ref().map(|p| {
        let m = load_manifest(p, registry)?;
        let cfg = load_config(&m, &args.common, Default::default())?;
        let alerts = load_alerts(&m, &args.common)?;
        Ok::<_, Fail>((m, cfg, alerts))
    });
    let (ok, err) = match loaded {
        Some(Ok(x)) => (Some(x), None),
        Some(Err(Fail(_, msg))) => (None, Some(msg)),
        None => (None, None),
    };
    let alerts = ok.as_ref().map(|x| x.2.clone()).unwrap_or_default();
    let models = match &ok {
        Some((m, cfg, _)) => models_dir(m, cfg),
        None => ModelsDir::from_config(None),
    };
    let registry = &super::common::registry(&models);
    let mut checks = checks(
        registry,
        &models,
        ok.as_ref().map(|(m, c, _)| (m, c)),
        err,
        &alerts,
    );
    if path.is_none() {
        checks.push(Check::warn(
            "manifest",
            "none given or found here: only this machine was checked, not what a pipeline needs",
            "run doctor in a project folder, or name the manifest: `vsum doctor pipelines/summarize.yaml`",
        ));
    }
    if args.json {
        print_json(&checks);
    } else {
        print!("{}", render(&checks));
    }
    let failed = checks.iter().any(|c| c.status == CheckStatus::Fail);
    Ok(if failed { exit::FAILED } else { exit::OK })
}

/// Everything doctor checks, in display order.
pub fn checks(
    registry: &Registry,
    models: &ModelsDir,
    manifest: Option<(&Manifest, &Config)>,
    manifest_error: Option<String>,
    alerts: &Alerts,
) -> Vec<Check> {
    let mut out = vec![Check::ok("vsum", env!("CARGO_PKG_VERSION"))];
    out.push(match Gpu::open().info() {
        GpuInfo::Gpu {
            name,
            driver,
            memory_total,
            count,
        } => Check::ok(
            "gpu",
            format!(
                "{count} x {name}, driver {driver}, {} memory",
                human_bytes(memory_total)
            ),
        ),
        GpuInfo::Cpu { reason } => Check::ok(
            "gpu",
            format!("CPU mode: {reason}; GPU-lane stages run on the CPU, one at a time"),
        ),
    });
    out.push(models_folder(models));
    if let Some(e) = manifest_error {
        out.push(Check::fail(
            "manifest",
            e,
            "fix the errors above (`vsum validate M`)",
        ));
    }
    let Some((m, cfg)) = manifest else {
        return out;
    };
    out.push(Check::ok(
        "manifest",
        format!("{} is valid ({} stages)", m.file.display(), m.stages.len()),
    ));
    // What the stages need: libraries, models, programs. Same check once.
    let mut seen = BTreeSet::new();
    for st in &m.stages {
        if let Some(kind) = registry.get(&st.kind) {
            for c in kind.doctor(&st.params, &m.base_dir) {
                if seen.insert(c.name.clone()) {
                    out.push(c);
                }
            }
        }
    }
    let cache = cfg.cache_path(&m.base_dir);
    out.push(writable("cache folder", &cache));
    out.push(writable("output folder", &m.output_dir()));
    for (what, path) in [("output", m.output_dir()), ("cache", cache)] {
        out.push(disk(what, &path, alerts));
    }
    out
}

/// Which models folder the stages look in (config `models_dir`, `VSUM_MODELS_DIR` or the
/// default) and how many models it holds.
fn models_folder(models: &ModelsDir) -> Check {
    let name = "models folder";
    match ModelsManifest::load(models) {
        Ok(m) => Check::ok(
            name,
            format!("{} ({} installed)", models.root().display(), m.models.len()),
        ),
        Err(e) => Check::warn(
            name,
            format!("{}: {}", models.root().display(), e.message),
            e.hint
                .unwrap_or_else(|| "set `models_dir` in the config, or VSUM_MODELS_DIR".into()),
        ),
    }
}

fn writable(name: &str, dir: &Path) -> Check {
    let probe = dir.join(format!(".vsum-doctor-{}", std::process::id()));
    let result = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&probe, b"ok"));
    let _ = std::fs::remove_file(&probe);
    match result {
        Ok(()) => Check::ok(
            name,
            format!(
                "{} is writable ({} used)",
                dir.display(),
                human_bytes(vsum_engine::fsutil::dir_size(dir))
            ),
        ),
        Err(e) => Check::fail(
            name,
            format!("{} is not writable: {e}", dir.display()),
            "fix its permissions, or point `output:` / --cache-dir somewhere writable",
        ),
    }
}

fn disk(what: &str, path: &Path, alerts: &Alerts) -> Check {
    let name = format!("free disk ({what})");
    let Some(free) = free_bytes(path) else {
        return Check::warn(
            name,
            format!("cannot measure {}", path.display()),
            "check the path",
        );
    };
    let gb = free as f64 / 1e9;
    let detail = format!("{} free for {}", human_bytes(free), path.display());
    let fix = "free space or run `vsum cache gc --max-size SIZE`; see doc/operations.md";
    match (alerts.disk_free_gb.critical, alerts.disk_free_gb.warning) {
        (Some(c), _) if gb < c => {
            Check::fail(name, format!("{detail}: below the critical {c} GB"), fix)
        }
        (_, Some(w)) if gb < w => {
            Check::warn(name, format!("{detail}: below the warning {w} GB"), fix)
        }
        _ => Check::ok(name, detail),
    }
}

/// Renders the checks for a person.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let word = match c.status {
            CheckStatus::Ok => "ok  ",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
        };
        s.push_str(&format!("{word} {}: {}\n", c.name, c.detail));
        if let Some(f) = &c.fix {
            s.push_str(&format!("     fix: {f}\n"));
        }
    }
    let fails = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .count();
    let warns = checks
        .iter()
        .filter(|c| c.status == CheckStatus::Warn)
        .count();
    s.push_str(&format!("{fails} failed, {warns} warning(s)\n"));
    s
}
