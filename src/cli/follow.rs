//! `vsum run --watch`: libraries grow every day. After the first run, vsum watches the
//! inputs (notify, debounced), waits until the new or changed videos stop growing (a
//! copy in progress is never read half-written), then runs the batch again: the cache
//! restores what is done, the new videos run, and the index is rebuilt. Until Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant, SystemTime};

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use super::common::{Fail, exit};
use super::term;

/// How long a changed video must keep the same size and time before it is read.
const SETTLE: Duration = Duration::from_secs(1);

/// A video's size and modification time, or `None` when it is gone.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn is_video(p: &Path, exts: &[String]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Moves the videos named by the events waiting in `rx` into `pending`.
fn drain(rx: &Receiver<DebounceEventResult>, exts: &[String], pending: &mut BTreeSet<PathBuf>) {
    while let Ok(result) = rx.try_recv() {
        take(result, exts, pending);
    }
}

fn take(result: DebounceEventResult, exts: &[String], pending: &mut BTreeSet<PathBuf>) {
    match result {
        Ok(events) => {
            for e in events {
                if e.kind.is_access() {
                    continue;
                }
                pending.extend(e.paths.iter().filter(|p| is_video(p, exts)).cloned());
            }
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{} watching the inputs: {e}", term::yellow("warning:"));
            }
        }
    }
}

/// Sleeps `d` in short steps; false when Ctrl-C came.
fn nap(d: Duration, cancel: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !cancel.load(Ordering::Relaxed)
}

/// Waits until every pending video has kept its size and time for [`SETTLE`] (more
/// events meanwhile join the wait). False when Ctrl-C came.
fn settle(
    rx: &Receiver<DebounceEventResult>,
    exts: &[String],
    pending: &mut BTreeSet<PathBuf>,
    cancel: &AtomicBool,
) -> bool {
    let mut last: BTreeMap<PathBuf, Stamp> = BTreeMap::new();
    loop {
        drain(rx, exts, pending);
        let now: BTreeMap<PathBuf, Stamp> = pending.iter().map(|p| (p.clone(), stamp(p))).collect();
        if now == last {
            return true;
        }
        last = now;
        if !nap(SETTLE, cancel) {
            return false;
        }
    }
}

/// Watches `roots` until Ctrl-C; `rerun` runs the batch again after each settled change
/// (given how many videos changed) and returns its exit code. Returns the last run's.
pub fn follow(
    roots: &[PathBuf],
    exts: &[String],
    cancel: &AtomicBool,
    mut code: u8,
    mut rerun: impl FnMut(usize) -> Result<u8, Fail>,
) -> Result<u8, Fail> {
    let (tx, rx) = channel();
    let mut debouncer = new_debouncer(Duration::from_millis(500), None, tx)
        .map_err(|e| Fail::failed(format!("error: cannot watch the inputs: {e}")))?;
    for root in roots {
        let mode = if root.is_dir() {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        debouncer
            .watch(root, mode)
            .map_err(|e| Fail::failed(format!("error: cannot watch {}: {e}", root.display())))?;
    }
    let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    term::note(format_args!(
        "watching {} for new or changed videos (Ctrl-C to stop)",
        shown.join(", ")
    ));
    let mut pending = BTreeSet::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(result) => take(result, exts, &mut pending),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        if pending.is_empty() {
            continue;
        }
        if !settle(&rx, exts, &mut pending, cancel) {
            break;
        }
        let names: Vec<String> = pending
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        term::note(format_args!(
            "watch: {} video(s) new, changed or gone: {}",
            names.len(),
            names.join(", ")
        ));
        let n = pending.len();
        pending.clear();
        code = rerun(n)?;
        if cancel.load(Ordering::Relaxed) {
            return Ok(exit::INTERRUPTED);
        }
        term::note("watching for more (Ctrl-C to stop)");
    }
    term::note("watch: stopped");
    Ok(code)
}
