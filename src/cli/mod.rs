//! The command line: one file per command, parsed with clap. Shared flags, loading and
//! exit codes are in `common.rs`; finding the manifest and the cache in `find.rs`.

mod cache;
mod common;
mod completions;
mod doctor;
mod find;
mod follow;
mod gc;
mod launch;
mod man;
mod models;
mod plan;
mod report;
mod run;
mod runs;
mod screen;
mod search;
mod stages;
mod term;
mod validate;
mod worker;

use clap::{Parser, Subcommand};

pub use common::exit;
use common::{Fail, exit::USAGE};

#[derive(Parser)]
#[command(
    name = "vsum",
    version,
    about = "Turns libraries of videos into searchable knowledge, locally",
    after_help = "The manifest is the argument (or -m), else env VSUM_MANIFEST, else the only \
                  *.yaml with `stages:` in this folder, its pipelines/, or a parent folder."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    global: term::Global,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline over its videos; finished jobs come from the cache
    Run(run::RunArgs),
    /// Run jobs of distributed runs on this machine (`vsum run --executor nats://...`)
    Worker(worker::WorkerArgs),
    /// Show what a run would do: each job cached or to run, and why
    Plan(plan::PlanArgs),
    /// Print the stage graph
    Dag(validate::DagArgs),
    /// Check a manifest and report every problem at once
    Validate(validate::ValidateArgs),
    /// List the built-in stage kinds and their parameters
    Stages {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check that this machine can run the pipeline, and how to fix what it cannot
    Doctor(doctor::DoctorArgs),
    /// Ask the library: which video, chapter and time talk about QUERY
    Search(search::SearchArgs),
    /// Past runs (summaries under the cache)
    Runs(runs::RunsArgs),
    /// Inspect and maintain the cache
    Cache(cache::CacheArgs),
    /// Install, list and verify the models stages use
    Models {
        #[command(subcommand)]
        command: models::ModelsCmd,
    },
    /// Print a shell completion script (e.g. `vsum completions bash > ~/.local/share/bash-completion/completions/vsum`)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `vsum man | man -l -`, or `vsum man run` for one command
    Man {
        /// A command (default: vsum itself)
        command: Option<String>,
    },
}

/// Parses the command line and runs the command; returns the exit code.
pub fn main() -> u8 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // clap prints help and usage errors itself, before `--color` is parsed: it is told
    // the choice from a first look at the arguments.
    let matches = <Cli as clap::CommandFactory>::command()
        .color(term::clap_color(&args))
        .get_matches_from(args);
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    term::init(&cli.global);
    match dispatch(cli) {
        Ok(code) => code,
        Err(Fail(code, msg)) => {
            eprintln!("{}", term::error_text(&msg));
            code
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8, Fail> {
    let registry = common::registry(&vsum_models::ModelsDir::from_config(None));
    match cli.command {
        Cmd::Run(args) => run::cmd(args, registry),
        Cmd::Worker(args) => worker::cmd(args, registry),
        Cmd::Plan(args) => plan::cmd(args, &registry),
        Cmd::Dag(args) => validate::dag(args, &registry),
        Cmd::Validate(args) => validate::validate(args, &registry),
        Cmd::Stages { json } => {
            stages::cmd(&registry, json);
            Ok(exit::OK)
        }
        Cmd::Doctor(args) => doctor::cmd(args, &registry),
        Cmd::Search(args) => search::cmd(args, &registry),
        Cmd::Runs(args) => runs::cmd(args, &registry),
        Cmd::Cache(args) => cache::cmd(args, &registry),
        Cmd::Models { command } => models::run(command).map_err(|e| Fail(USAGE, format!("{e:#}"))),
        Cmd::Completions { shell } => {
            completions::cmd(shell);
            Ok(exit::OK)
        }
        Cmd::Man { command } => man::cmd(command),
    }
}
