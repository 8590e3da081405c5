//! The live screen of `vsum run` on a terminal, for batches that run overnight: cached
//! and to-run jobs kept apart, an ETA from the to-run jobs only (per-stage durations
//! from past runs), videos done, each lane's jobs in flight with their elapsed time, the
//! machine, and a clock that keeps ticking while no job finishes.
//!
//! [`Board`] is the bookkeeping (no terminal, unit-tested); [`attach`] draws it with
//! indicatif and redraws it from a ticker thread twice a second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vsum_engine::events::{Event, EventSink, JobLabel, Outcome};
use vsum_engine::fsutil::human_bytes;
use vsum_engine::run::RunSummary;
use vsum_engine::stage::Lane;

use super::term;

/// "42s", "3m 07s", "2h 05m".
pub fn human_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s / 60) % 60),
    }
}

/// What the screen knows before the run starts.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Every job as planned: cached or to run.
    pub jobs: Vec<(JobLabel, bool)>,
    /// Mean ms per stage from past runs.
    pub means: BTreeMap<String, f64>,
    /// Threads of the CPU lane.
    pub threads: usize,
    /// No GPU: the GPU lane runs its models on the CPU.
    pub cpu_mode: bool,
}

impl Setup {
    /// From the plan (a dry run's summary) and the per-stage mean job times (ms) of
    /// past runs (`run::stage_means`).
    pub fn new(
        plan: &RunSummary,
        means: BTreeMap<String, f64>,
        threads: usize,
        cpu_mode: bool,
    ) -> Setup {
        Setup {
            jobs: plan
                .jobs
                .iter()
                .map(|j| (j.label.clone(), j.outcome == Outcome::Cached))
                .collect(),
            means,
            threads: threads.max(1),
            cpu_mode,
        }
    }

    pub fn lane_name(&self, lane: Lane) -> &'static str {
        match lane {
            Lane::Cpu => "cpu lane",
            Lane::Gpu if self.cpu_mode => "gpu lane (CPU mode)",
            Lane::Gpu => "gpu lane",
        }
    }
}

/// The run as the screen sees it: counts, videos, jobs in flight, and the ETA.
#[derive(Debug)]
pub struct Board {
    setup: Setup,
    /// Job index -> (label, planned as cached).
    planned: BTreeMap<usize, (JobLabel, bool)>,
    finished: BTreeSet<usize>,
    running: BTreeMap<usize, (JobLabel, Instant)>,
    /// Jobs not yet finished, per video.
    left: BTreeMap<String, usize>,
    videos: usize,
    counts: BTreeMap<&'static str, usize>,
    /// Durations seen in this run, per stage (for stages never timed before).
    seen: BTreeMap<String, (f64, usize)>,
    started: Instant,
}

impl Board {
    pub fn new(setup: Setup) -> Board {
        let mut left: BTreeMap<String, usize> = BTreeMap::new();
        for (l, _) in &setup.jobs {
            if let Some(v) = &l.video {
                *left.entry(v.clone()).or_default() += 1;
            }
        }
        Board {
            planned: setup
                .jobs
                .iter()
                .map(|(l, c)| (l.index, (l.clone(), *c)))
                .collect(),
            videos: left.len(),
            left,
            setup,
            finished: BTreeSet::new(),
            running: BTreeMap::new(),
            counts: BTreeMap::new(),
            seen: BTreeMap::new(),
            started: Instant::now(),
        }
    }

    fn to_run(&self) -> usize {
        self.planned.values().filter(|(_, c)| !c).count()
    }

    fn cached_planned(&self) -> usize {
        self.planned.len() - self.to_run()
    }

    /// To-run jobs finished so far (the bar's position).
    pub fn to_run_done(&self) -> usize {
        self.finished
            .iter()
            .filter(|i| self.planned.get(i).is_some_and(|(_, c)| !c))
            .count()
    }

    pub fn videos_done(&self) -> usize {
        self.left.values().filter(|n| **n == 0).count()
    }

    pub fn started(&mut self, job: &JobLabel, now: Instant) {
        self.running.entry(job.index).or_insert((job.clone(), now));
    }

    pub fn finished(&mut self, job: &JobLabel, outcome: Outcome, ms: u64) {
        self.running.remove(&job.index);
        if !self.finished.insert(job.index) {
            return;
        }
        if let Some(v) = &job.video
            && let Some(n) = self.left.get_mut(v)
        {
            *n = n.saturating_sub(1);
        }
        let word = match outcome {
            Outcome::Ran => "ran",
            Outcome::Cached => "cached",
            Outcome::Failed => "failed",
            _ => "skipped",
        };
        *self.counts.entry(word).or_default() += 1;
        if outcome == Outcome::Ran {
            let e = self.seen.entry(job.stage.clone()).or_default();
            e.0 += ms as f64;
            e.1 += 1;
        }
    }

    fn estimate(&self, stage: &str) -> Option<f64> {
        self.setup
            .means
            .get(stage)
            .copied()
            .or_else(|| self.seen.get(stage).map(|(t, n)| t / *n as f64))
    }

    /// Seconds left, from the to-run jobs not finished (a running job counts what is
    /// left of its estimate): the CPU lane's work spread over its threads, or the GPU
    /// lane's, whichever is longer. `None` while some stage was never timed.
    pub fn eta(&self, now: Instant) -> Option<f64> {
        let (mut cpu, mut gpu) = (0.0, 0.0);
        for (i, (l, cached)) in &self.planned {
            if *cached || self.finished.contains(i) {
                continue;
            }
            let mut ms = self.estimate(&l.stage)?;
            if let Some((_, t)) = self.running.get(i) {
                ms = (ms - now.duration_since(*t).as_millis() as f64).max(0.0);
            }
            match l.lane {
                Lane::Gpu => gpu += ms,
                Lane::Cpu => cpu += ms,
            }
        }
        Some((cpu / self.setup.threads as f64).max(gpu) / 1000.0)
    }

    /// The message after the bar: cached apart, videos done, failures, ETA.
    pub fn headline(&self, now: Instant) -> String {
        let n = |w: &str| self.counts.get(w).copied().unwrap_or(0);
        let mut s = match self.cached_planned() {
            0 => "none cached".to_string(),
            c => format!("{}/{c} cached", self.finished.len() - self.to_run_done()),
        };
        s.push_str(&format!(
            " · videos done {}/{}",
            self.videos_done(),
            self.videos
        ));
        if n("failed") > 0 {
            s.push_str(&format!(
                " · {}",
                term::red(&format!("{} failed", n("failed")))
            ));
        }
        if n("skipped") > 0 {
            s.push_str(&format!(" · {} skipped", n("skipped")));
        }
        if self.to_run() > self.to_run_done() {
            match self.eta(now) {
                Some(eta) => s.push_str(&format!(" · eta {}", human_secs(eta))),
                None => s.push_str(" · eta ? (a stage never timed)"),
            }
        }
        s
    }

    /// Jobs that ran per minute, once one has.
    pub fn throughput(&self, now: Instant) -> Option<String> {
        let ran = self.counts.get("ran").copied().unwrap_or(0);
        let mins = now.duration_since(self.started).as_secs_f64() / 60.0;
        (ran > 0 && mins > 0.0).then(|| format!("{:.1} jobs/min", ran as f64 / mins))
    }

    /// Jobs in flight on `lane`, oldest first, with how long each has run.
    pub fn running(&self, lane: Lane, now: Instant) -> Vec<(String, Duration)> {
        let mut v: Vec<_> = self
            .running
            .values()
            .filter(|(l, _)| l.lane == lane)
            .map(|(l, t)| (l.describe(), now.duration_since(*t)))
            .collect();
        v.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        v
    }
}

/// The machine's CPU time so far: (busy, total) jiffies from `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU in use between two readings, percent.
fn cpu_pct(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1).filter(|t| *t > 0)?;
    let busy = after.0.saturating_sub(before.0);
    Some(busy as f64 * 100.0 / total as f64)
}

/// The live screen's bars while they are drawn: other threads print above them.
static LIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Prints a line on stderr; above the live screen when it is drawn (it would paint over
/// a plain `eprintln!`).
pub fn println(line: &str) {
    match LIVE.lock().ok().and_then(|l| l.clone()) {
        Some(multi) => multi.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// Most jobs listed per lane; the rest are counted.
const SHOWN: usize = 8;

struct Bars {
    multi: MultiProgress,
    head: ProgressBar,
    /// Per lane: the lane's line, then one line per job shown.
    lanes: Vec<(Lane, ProgressBar, Vec<ProgressBar>)>,
    host: ProgressBar,
    /// The machine's last reading, as shown.
    machine: String,
    /// CPU in use over the last second, and the reading it was measured from.
    cpu: Option<f64>,
    cpu_times: Option<(u64, u64)>,
}

impl Bars {
    fn new(setup: &Setup, to_run: usize) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let bar = if term::color() {
            "{bar:30.cyan/blue}"
        } else {
            "{bar:30}"
        };
        let head = multi.add(ProgressBar::new(to_run as u64));
        head.set_style(
            ProgressStyle::with_template(&format!(
                "[{{elapsed_precise}}] {bar} {{pos}}/{{len}} to run · {{wide_msg}}"
            ))
            .expect("template")
            .progress_chars("=> "),
        );
        let line = ProgressStyle::with_template("  {wide_msg}").expect("template");
        let mut lanes = Vec::new();
        for lane in [Lane::Cpu, Lane::Gpu] {
            let l = multi.add(ProgressBar::new_spinner().with_style(line.clone()));
            l.set_message(format!("{}: idle", setup.lane_name(lane)));
            lanes.push((lane, l, Vec::new()));
        }
        let host = multi.add(ProgressBar::new_spinner().with_style(line));
        // The clock ticks on its own: it never freezes between job completions.
        head.enable_steady_tick(Duration::from_millis(250));
        *LIVE.lock().expect("live") = Some(multi.clone());
        Bars {
            multi,
            head,
            lanes,
            host,
            machine: String::new(),
            cpu: None,
            cpu_times: cpu_times(),
        }
    }

    /// Redraws everything from the board.
    fn draw(&mut self, board: &Board, setup: &Setup, now: Instant) {
        self.head.set_position(board.to_run_done() as u64);
        self.head.set_message(board.headline(now));
        let mut host = vec![format!("host: {}", self.machine)];
        host.extend(self.cpu.map(|c| format!("CPU {c:.0}%")));
        host.extend(board.throughput(now));
        self.host.set_message(host.join(" · "));
        for (lane, line, jobs) in &mut self.lanes {
            let running = board.running(*lane, now);
            let name = setup.lane_name(*lane);
            line.set_message(match running.len() {
                0 => format!("{name}: idle"),
                n => format!("{name}: {n} running"),
            });
            let want = running.len().min(SHOWN);
            while jobs.len() < want {
                let after = jobs.last().unwrap_or(line).clone();
                let b = self.multi.insert_after(
                    &after,
                    ProgressBar::new_spinner()
                        .with_style(ProgressStyle::with_template("    {wide_msg}").expect("t")),
                );
                jobs.push(b);
            }
            while jobs.len() > want {
                let b = jobs.pop().expect("a job line");
                b.finish_and_clear();
                self.multi.remove(&b);
            }
            for (b, (what, d)) in jobs.iter().zip(&running) {
                b.set_message(format!("{}  {what}", term::dim(&clock(*d))));
            }
            if running.len() > SHOWN
                && let Some(b) = jobs.last()
            {
                b.set_message(format!("... and {} more", running.len() - SHOWN + 1));
            }
        }
    }

    /// Measures CPU use since the last call.
    fn sample_cpu(&mut self) {
        let now = cpu_times();
        if let (Some(a), Some(b)) = (self.cpu_times, now) {
            self.cpu = cpu_pct(a, b).or(self.cpu);
        }
        self.cpu_times = now;
    }

    fn clear(&self) {
        *LIVE.lock().expect("live") = None;
        for (_, l, jobs) in &self.lanes {
            for b in jobs {
                b.finish_and_clear();
            }
            l.finish_and_clear();
        }
        self.host.finish_and_clear();
        self.head.finish_and_clear();
    }
}

/// Subscribes the live screen to `events`.
pub fn attach(events: &EventSink, setup: Setup) {
    let board = Board::new(setup.clone());
    let bars = Bars::new(&setup, board.to_run());
    let state = Arc::new(Mutex::new((board, bars)));
    let done = Arc::new(AtomicBool::new(false));
    {
        // The ticker: ETA and each job's elapsed time move while nothing happens.
        let state = state.clone();
        let done = done.clone();
        let setup = setup.clone();
        std::thread::Builder::new()
            .name("vsum-screen".into())
            .spawn(move || {
                let mut tick = 0u64;
                while !done.load(Ordering::Relaxed) {
                    {
                        let mut st = state.lock().expect("screen");
                        let (board, bars) = &mut *st;
                        if tick.is_multiple_of(2) {
                            bars.sample_cpu();
                        }
                        bars.draw(board, &setup, Instant::now());
                    }
                    tick += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
            .expect("spawn the screen ticker");
    }
    events.subscribe(move |e| {
        let mut st = state.lock().expect("screen");
        let (board, bars) = &mut *st;
        let say = |bars: &Bars, line: String| bars.multi.suspend(|| eprintln!("{line}"));
        match e {
            Event::JobStarted { job, .. } => board.started(job, Instant::now()),
            Event::JobFinished {
                job,
                outcome,
                error,
                start_ms,
                end_ms,
                ..
            } => {
                board.finished(job, *outcome, end_ms.saturating_sub(*start_ms));
                if *outcome == Outcome::Failed {
                    let err = error.as_deref().unwrap_or("").lines().next().unwrap_or("");
                    say(bars, format!("{} {}: {err}", term::red("FAILED"), job.describe()));
                }
            }
            Event::Warning { message } => {
                say(bars, format!("{} {message}", term::yellow("warning:")))
            }
            Event::Alert(a) => say(bars, format!("{}: {}", super::report::level_word(a.level), a.message)),
            Event::Paused { reason } => say(bars, format!("paused: {reason}")),
            Event::Resumed => say(bars, "resumed: new jobs start again".into()),
            Event::Stopped { reason } => say(bars, format!("stopping the batch: {reason}")),
            Event::BreakerOpened { kind, failures } => say(
                bars,
                format!("circuit breaker: {failures} '{kind}' jobs failed in a row; no more '{kind}' jobs will start"),
            ),
            Event::Sample(s) => {
                let disk = s
                    .disks
                    .iter()
                    .map(|d| d.free_bytes)
                    .min()
                    .map(human_bytes)
                    .unwrap_or_default();
                let gpu = s
                    .gpu
                    .as_ref()
                    .map(|g| {
                        format!(
                            " · GPU {}% · {} C · {}",
                            g.utilization_pct,
                            g.temperature_c,
                            human_bytes(g.memory_used)
                        )
                    })
                    .unwrap_or_default();
                bars.machine = format!(
                    "RSS {} · memory {:.0}% · disk free {disk}{gpu}",
                    human_bytes(s.rss_bytes),
                    s.memory_pct
                );
            }
            Event::RunFinished { .. } => {
                done.store(true, Ordering::Relaxed);
                bars.clear();
                return;
            }
            _ => return,
        }
        bars.draw(board, &setup, Instant::now());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(index: usize, stage: &str, video: &str, lane: Lane) -> JobLabel {
        JobLabel {
            index,
            stage: stage.into(),
            kind: "command".into(),
            video: Some(video.into()),
            lane,
        }
    }

    fn setup() -> Setup {
        Setup {
            jobs: vec![
                (label(0, "probe", "a.mp4", Lane::Cpu), true),
                (label(1, "whisper", "a.mp4", Lane::Gpu), false),
                (label(2, "probe", "b.mp4", Lane::Cpu), false),
                (label(3, "whisper", "b.mp4", Lane::Gpu), false),
            ],
            means: [
                ("probe".to_string(), 2000.0),
                ("whisper".to_string(), 60_000.0),
            ]
            .into(),
            threads: 2,
            cpu_mode: true,
        }
    }

    #[test]
    fn cached_jobs_are_apart_and_the_eta_counts_only_what_is_left_to_run() {
        let s = setup();
        assert_eq!(s.lane_name(Lane::Gpu), "gpu lane (CPU mode)");
        let mut b = Board::new(s);
        let t0 = Instant::now();
        // Two whisper jobs on the one GPU lane: 120 s, whatever the cached probe did.
        assert_eq!(b.eta(t0), Some(120.0));
        b.finished(&label(0, "probe", "a.mp4", Lane::Cpu), Outcome::Cached, 0);
        assert_eq!(
            b.to_run_done(),
            0,
            "a cached job is no progress on the work"
        );
        assert!(
            b.headline(t0).starts_with("1/1 cached · videos done 0/2"),
            "{}",
            b.headline(t0)
        );
        b.started(&label(1, "whisper", "a.mp4", Lane::Gpu), t0);
        // The clock moves the ETA down while nothing finishes.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.eta(later), Some(110.0));
        assert_eq!(
            b.running(Lane::Gpu, later),
            vec![("whisper [a.mp4]".to_string(), Duration::from_secs(10))]
        );
        b.finished(
            &label(1, "whisper", "a.mp4", Lane::Gpu),
            Outcome::Ran,
            58_000,
        );
        assert_eq!(b.videos_done(), 1);
        assert_eq!(b.to_run_done(), 1);
        assert!(
            b.headline(later).contains("videos done 1/2"),
            "{}",
            b.headline(later)
        );
        assert!(
            b.headline(later).contains("eta 1m 00s"),
            "{}",
            b.headline(later)
        );
    }

    #[test]
    fn a_stage_never_timed_gets_its_eta_from_this_run() {
        let mut s = setup();
        s.means.remove("probe");
        let mut b = Board::new(s);
        let t0 = Instant::now();
        assert_eq!(b.eta(t0), None);
        assert!(b.headline(t0).contains("eta ?"));
        b.finished(&label(0, "probe", "a.mp4", Lane::Cpu), Outcome::Cached, 0);
        b.finished(&label(2, "probe", "b.mp4", Lane::Cpu), Outcome::Ran, 4000);
        assert_eq!(b.eta(t0), Some(120.0));
    }

    #[test]
    fn cpu_use_is_busy_time_over_total_time() {
        assert_eq!(cpu_pct((100, 1000), (150, 1100)), Some(50.0));
        assert_eq!(cpu_pct((100, 1000), (100, 1000)), None);
        let (busy, total) = cpu_times().expect("/proc/stat");
        assert!(busy <= total);
    }

    #[test]
    fn the_clock_reads_hours_minutes_seconds() {
        assert_eq!(clock(Duration::from_secs(3 * 3600 + 62)), "03:01:02");
        assert_eq!(human_secs(3725.0), "1h 02m");
    }
}
