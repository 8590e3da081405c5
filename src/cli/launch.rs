//! The launch screen of `vsum run`: what was found, what is cached, how long the rest
//! should take, where results go, and (on a terminal, without `--yes`) a go/no-go.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use vsum_engine::events::Outcome;
use vsum_engine::fsutil::human_bytes;
use vsum_engine::run::RunSummary;

use super::screen::human_secs;

/// The launch screen text from a dry-run plan and the per-stage mean job times (ms).
pub fn screen(plan: &RunSummary, means: &BTreeMap<String, f64>, threads: usize) -> String {
    let c = &plan.counts;
    let mut s = String::new();
    s.push_str(&format!(
        "vsum: {} video(s), {} on disk",
        plan.videos,
        human_bytes(plan.video_bytes)
    ));
    s.push('\n');
    s.push_str(&format!(
        "jobs: {} in all, {} cached, {} to run\n",
        c.jobs, c.cached, c.would_run
    ));
    let (mut cpu_ms, mut gpu_ms, mut unknown) = (0.0, 0.0, 0usize);
    for j in plan.jobs.iter().filter(|j| j.outcome == Outcome::WouldRun) {
        match means.get(&j.label.stage) {
            Some(ms) if j.label.lane == vsum_engine::stage::Lane::Gpu => gpu_ms += ms,
            Some(ms) => cpu_ms += ms,
            None => unknown += 1,
        }
    }
    if c.would_run > 0 {
        let est = (cpu_ms / threads.max(1) as f64).max(gpu_ms) / 1000.0;
        if unknown == c.would_run {
            s.push_str("estimate: none yet (no job of these stages has run here before)\n");
        } else if unknown == 0 {
            s.push_str(&format!(
                "estimate: about {} (from earlier runs)\n",
                human_secs(est)
            ));
        } else {
            s.push_str(&format!(
                "estimate: {} for the jobs seen before; {unknown} job(s) never timed yet\n",
                human_secs(est)
            ));
        }
    }
    s.push_str(&format!("output: {}\n", plan.output_dir.display()));
    for p in &plan.problems {
        s.push_str(&format!("input problem: {p}\n"));
    }
    s
}

/// Asks "Start?" on a terminal; anything but no goes. Non-terminals never ask.
pub fn confirm() -> bool {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return true;
    }
    eprint!("start? [Y/n] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    !matches!(line.trim().to_ascii_lowercase().as_str(), "n" | "no")
}
