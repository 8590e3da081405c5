//! Reporters: subscribers that turn engine events into what a person or a script sees.
//!
//! `bar` draws indicatif bars (overall + one line per lane), `plain` prints one line per
//! finished job (for logs and non-terminals), `none` stays quiet. Every mode also
//! appends each event as a JSON line to the run's log file under `.vsum/logs/`.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vsum_engine::alerts::Level;
use vsum_engine::events::{Event, EventSink, Outcome};
use vsum_engine::fsutil::human_bytes;
use vsum_engine::run::RunSummary;
use vsum_engine::stage::Lane;

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

fn level_word(l: Level) -> &'static str {
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

/// Subscribes the chosen reporter to `events`.
pub fn attach(events: &EventSink, mode: Progress) {
    match mode.resolve() {
        Progress::Bar => attach_bars(events),
        Progress::Plain => attach_plain(events),
        Progress::None | Progress::Auto => events.subscribe(|e| {
            if let Event::Warning { message } = e {
                eprintln!("{}", warning(message));
            }
        }),
    }
}

fn attach_plain(events: &EventSink) {
    let state = Mutex::new((0usize, 0usize));
    events.subscribe(move |e| {
        let mut st = state.lock().expect("reporter");
        match e {
            Event::RunStarted { videos, jobs, .. } => {
                st.1 = *jobs;
                eprintln!("vsum: {videos} video(s), {jobs} job(s)");
            }
            Event::Warning { message } => eprintln!("{}", warning(message)),
            Event::JobRetrying { job, attempt, error, delay_ms } => eprintln!(
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
                eprintln!("{line}");
            }
            Event::BreakerOpened { kind, failures } => eprintln!(
                "circuit breaker: {failures} '{kind}' jobs failed in a row; no more '{kind}' jobs will start in this run"
            ),
            Event::Interrupted => eprintln!("interrupted: in-flight jobs were stopped; rerun to continue"),
            Event::Alert(a) => eprintln!("{}: {}", level_word(a.level), a.message),
            Event::Paused { reason } => eprintln!("paused: {reason}"),
            Event::Resumed => eprintln!("resumed: new jobs start again"),
            Event::Stopped { reason } => eprintln!("stopping the batch: {reason}"),
            _ => {}
        }
    });
}

fn attach_bars(events: &EventSink) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let overall = multi.add(ProgressBar::new(0));
    overall.set_style(
        ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} jobs  {msg}  [{elapsed_precise}, eta {eta}]",
        )
        .expect("template"),
    );
    let lane_style =
        ProgressStyle::with_template("  {prefix:>4} {spinner} {wide_msg}").expect("template");
    let cpu = multi.add(
        ProgressBar::new_spinner()
            .with_style(lane_style.clone())
            .with_prefix("cpu"),
    );
    let gpu = multi.add(
        ProgressBar::new_spinner()
            .with_style(lane_style.clone())
            .with_prefix("gpu"),
    );
    let machine = multi.add(
        ProgressBar::new_spinner()
            .with_style(lane_style)
            .with_prefix("host"),
    );
    for b in [&cpu, &gpu, &machine] {
        b.enable_steady_tick(Duration::from_millis(120));
        b.set_message("idle");
    }
    let counts = Arc::new(Mutex::new([0usize; 3]));
    events.subscribe(move |e| match e {
        Event::RunStarted { jobs, .. } => overall.set_length(*jobs as u64),
        Event::Warning { message } => multi.suspend(|| eprintln!("{}", warning(message))),
        Event::JobStarted { job, .. } => {
            let bar = if job.lane == Lane::Gpu { &gpu } else { &cpu };
            bar.set_message(job.describe());
        }
        Event::JobFinished { job, outcome, error, .. } => {
            let mut c = counts.lock().expect("counts");
            match outcome {
                Outcome::Ran => c[0] += 1,
                Outcome::Cached => c[1] += 1,
                Outcome::Failed => c[2] += 1,
                _ => {}
            }
            overall.set_message(format!("done {} cached {} failed {}", c[0], c[1], c[2]));
            overall.inc(1);
            if *outcome == Outcome::Failed {
                let err = error.as_deref().unwrap_or("").lines().next().unwrap_or("");
                multi.suspend(|| eprintln!("FAILED {}: {err}", job.describe()));
            }
        }
        Event::Alert(a) => multi.suspend(|| eprintln!("{}: {}", level_word(a.level), a.message)),
        Event::Paused { reason } => multi.suspend(|| eprintln!("paused: {reason}")),
        Event::Resumed => multi.suspend(|| eprintln!("resumed: new jobs start again")),
        Event::Stopped { reason } => multi.suspend(|| eprintln!("stopping the batch: {reason}")),
        Event::Sample(s) => {
            let disk = s.disks.iter().map(|d| d.free_bytes).min().map(human_bytes).unwrap_or_default();
            let gpu = s
                .gpu
                .as_ref()
                .map(|g| format!(", GPU {}% {} C {}", g.utilization_pct, g.temperature_c, human_bytes(g.memory_used)))
                .unwrap_or_default();
            machine.set_message(format!("RSS {}, memory {:.0}%, disk free {disk}{gpu}", human_bytes(s.rss_bytes), s.memory_pct));
        }
        Event::BreakerOpened { kind, failures } => multi.suspend(|| {
            eprintln!("circuit breaker: {failures} '{kind}' jobs failed in a row; no more '{kind}' jobs will start")
        }),
        Event::RunFinished { .. } => {
            for b in [&cpu, &gpu, &machine, &overall] {
                b.finish_and_clear();
            }
        }
        _ => {}
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
pub fn completion(summary: &RunSummary, manifest_arg: &str, published: &[String]) -> String {
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
