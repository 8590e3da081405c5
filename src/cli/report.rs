//! Reporters: subscribers that turn engine events into what a person or a script sees.
//!
//! `bar` draws the live screen (`screen.rs`), `plain` prints one line per finished job,
//! each with the wall-clock time (for logs and non-terminals), `none` stays quiet. Every mode also
//! appends each event as a JSON line to the run's log file under `.vsum/logs/`.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use vsum_engine::alerts::Level;
use vsum_engine::events::{Event, EventSink, Outcome};
use vsum_engine::run::RunSummary;
use vsum_engine::stage::Lane;

use vsum_engine::store::now_secs;
use vsum_engine::time::rfc3339;

use super::screen::{self, Setup};
use super::term;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Progress {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    Bar,
    Plain,
    None,
}

impl Progress {
    pub fn resolve(self) -> Progress {
        match self {
            Progress::Auto if std::io::stderr().is_terminal() => Progress::Bar,
            Progress::Auto => Progress::Plain,
            other => other,
        }
    }
}

pub(super) fn level_word(l: Level) -> &'static str {
    match l {
        Level::Ok => "ok",
        Level::Warning => "warning",
        Level::Critical => "CRITICAL",
    }
}

/// An outcome word padded to `width`, coloured on a colour terminal.
fn outcome_painted(o: Outcome, width: usize) -> String {
    let w = format!("{:<width$}", outcome_word(o));
    match o {
        Outcome::Ran => term::green(&w),
        Outcome::Cached => term::dim(&w),
        Outcome::Failed => term::red(&w),
        Outcome::Skipped | Outcome::Cancelled => term::yellow(&w),
        Outcome::WouldRun => w,
    }
}

fn warning(message: &str) -> String {
    format!("{} {message}", term::yellow("warning:"))
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Ran => "ran",
        Outcome::Cached => "cached",
        Outcome::Failed => "FAILED",
        Outcome::Skipped => "skipped",
        Outcome::Cancelled => "cancelled",
        Outcome::WouldRun => "would run",
    }
}

/// A pause, a resume or a stop of the whole run, in words: every reporter says these.
fn run_state(e: &Event) -> Option<String> {
    match e {
        Event::Paused { reason } => Some(format!("paused: {reason}")),
        Event::Resumed => Some("resumed: new jobs start again".into()),
        Event::Stopped { reason } => Some(format!("stopping the batch: {reason}")),
        _ => None,
    }
}

/// Subscribes the chosen reporter to `events`. `setup`: what the live screen needs
/// (without it, bars fall back to plain lines).
pub fn attach(events: &EventSink, mode: Progress, setup: Option<Setup>) {
    track_in_flight(events);
    match (mode.resolve(), setup) {
        (Progress::Bar, Some(setup)) => screen::attach(events, setup),
        (Progress::Bar | Progress::Plain, setup) => attach_plain(events, setup),
        // No progress, but still what a waiting or stopping run owes its user: a run
        // paused by a guard would otherwise sit silent for hours.
        (Progress::None | Progress::Auto, _) => events.subscribe(|e| {
            if let Event::Warning { message } = e {
                eprintln!("{}", warning(message));
            } else if let Some(line) = run_state(e) {
                eprintln!("vsum: {line}");
            }
        }),
    }
}

/// The jobs in flight (started, not finished): what Ctrl-C says it stops.
static IN_FLIGHT: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn track_in_flight(events: &EventSink) {
    events.subscribe(|e| {
        let mut set = IN_FLIGHT.lock().expect("in flight");
        match e {
            Event::JobStarted { job, .. } => {
                set.insert(job.index);
            }
            Event::JobFinished { job, .. } => {
                set.remove(&job.index);
            }
            _ => {}
        }
    });
}

/// How many jobs are running now.
pub fn in_flight() -> usize {
    IN_FLIGHT.lock().map(|s| s.len()).unwrap_or(0)
}

/// Plain lines start with the wall-clock time (UTC): a log read the next morning says
/// when each thing happened.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!("{} {}", term::dim(&rfc3339(now_secs())), format_args!($($arg)*))
    };
}

fn attach_plain(events: &EventSink, setup: Option<Setup>) {
    let state = Mutex::new((0usize, 0usize));
    events.subscribe(move |e| {
        let mut st = state.lock().expect("reporter");
        match e {
            Event::RunStarted { videos, jobs, .. } => {
                st.1 = *jobs;
                match &setup {
                    Some(s) => {
                        let cached = s.jobs.iter().filter(|(_, c)| *c).count();
                        say!(
                            "vsum: {videos} video(s), {jobs} job(s): {cached} cached, {} to run; {} with {} thread(s)",
                            jobs.saturating_sub(cached),
                            s.lane_name(Lane::Gpu),
                            s.threads
                        )
                    }
                    None => say!("vsum: {videos} video(s), {jobs} job(s)"),
                }
            }
            Event::Warning { message } => say!("{}", warning(message)),
            Event::JobRetrying { job, attempt, error, delay_ms } => say!(
                "retry   {} (attempt {attempt} failed: {}; next in {delay_ms} ms)",
                job.describe(),
                error.lines().next().unwrap_or("")
            ),
            Event::JobFinished { job, outcome, error, start_ms, end_ms, .. } => {
                st.0 += 1;
                let width = st.1.to_string().len();
                let mut line = format!(
                    "[{:>width$}/{}] {} {} ({:.1}s)",
                    st.0,
                    st.1,
                    outcome_painted(*outcome, 9),
                    job.describe(),
                    (end_ms - start_ms.min(end_ms)) as f64 / 1000.0
                );
                if let Some(err) = error {
                    line.push_str(": ");
                    line.push_str(err.lines().next().unwrap_or(""));
                }
                say!("{line}");
            }
            Event::BreakerOpened { kind, failures } => say!(
                "circuit breaker: {failures} '{kind}' jobs failed in a row; no more '{kind}' jobs will start in this run"
            ),
            Event::Interrupted => say!("interrupted: in-flight jobs were stopped; rerun to continue"),
            Event::Alert(a) => say!("{}: {}", level_word(a.level), a.message),
            e => {
                if let Some(line) = run_state(e) {
                    say!("{line}");
                }
            }
        }
    });
}

/// Appends every event as a JSON line to `path`, and routes `tracing` records (the
/// stages' and libraries' own logs) into the same file as JSON lines.
pub fn attach_log(events: &EventSink, path: &std::path::Path) {
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    if let Ok(for_tracing) = file.try_clone() {
        super::term::log_to(for_tracing);
    }
    let file = Mutex::new(std::io::BufWriter::new(file));
    events.subscribe(move |e| {
        let mut f = file.lock().expect("log");
        if let Ok(line) = serde_json::to_string(e) {
            let _ = writeln!(f, "{line}");
        }
        // Flushed per event: `tail -f` and a crash both see every line written so far.
        let _ = f.flush();
    });
}

/// The completion screen. `published`: the files the manifest's batch stages publish
/// (`publish:`), shown when they are in the output folder.
/// `log`: the run's log file, shown when it is there.
pub fn completion(
    summary: &RunSummary,
    manifest_arg: &str,
    published: &[String],
    log: Option<&std::path::Path>,
) -> String {
    let c = &summary.counts;
    let mut s = String::new();
    let ok = c.ran + c.cached;
    let rate = if c.jobs == 0 {
        100.0
    } else {
        ok as f64 * 100.0 / c.jobs as f64
    };
    s.push_str(&format!(
        "\n{} video(s), {} job(s): {} ran, {} cached, {} failed, {} skipped{} — {:.0}% succeeded in {:.1}s\n",
        summary.videos,
        c.jobs,
        c.ran,
        c.cached,
        c.failed,
        c.skipped,
        if c.cancelled > 0 { format!(", {} cancelled", c.cancelled) } else { String::new() },
        rate,
        summary.wall_ms as f64 / 1000.0
    ));
    s.push_str(&format!("outputs: {}\n", summary.output_dir.display()));
    for name in published {
        let p = summary.output_dir.join(name);
        if p.is_file() {
            s.push_str(&format!("index:   {}\n", p.display()));
        }
    }
    if let Some(log) = log.filter(|l| l.is_file()) {
        s.push_str(&format!("log:     {}\n", log.display()));
    }
    if let Some(why) = &summary.stopped {
        s.push_str(&format!("stopped early: {why}\n"));
    }
    for p in &summary.problems {
        s.push_str(&format!("input problem: {p}\n"));
    }
    let failures: Vec<_> = summary
        .jobs
        .iter()
        .filter(|j| j.outcome == Outcome::Failed)
        .collect();
    if !failures.is_empty() {
        s.push_str("failures:\n");
        for f in &failures {
            s.push_str(&format!(
                "  {}: {}\n",
                f.label.describe(),
                f.error.as_deref().unwrap_or("?")
            ));
            if let Some(h) = &f.hint {
                s.push_str(&format!("    hint: {h}\n"));
            }
        }
        s.push_str(&format!(
            "fix the causes, then retry only the failures: vsum run {manifest_arg} --retry-failed\n"
        ));
    }
    if summary.interrupted {
        s.push_str(&format!(
            "interrupted: rerun `vsum run {manifest_arg}` to continue where it stopped\n"
        ));
    }
    s
}
