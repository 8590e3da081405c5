//! Running a child process as part of a job: its own process group (killed with the
//! job), a wait that sleeps in `poll(2)` until the child exits, its stderr has a line,
//! the cancel flag is set or a deadline passes, and the last lines of its stderr for
//! the error message. The command stage and the media helper both run children this way.

use std::collections::VecDeque;
use std::io::Read;
use std::process::{ChildStderr, ExitStatus};
use std::time::{Duration, Instant};

use vsum_engine::stage::JobCtx;

/// How a child that did not succeed ended, in words ("exited with status 2", "was
/// killed by signal 9").
pub(crate) fn how_it_ended(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".to_string(),
    }
}

/// Sees a whole stderr line; `true`: the line was a message for it, not kept.
type LineHook<'h> = Box<dyn FnMut(&str) -> bool + 'h>;

/// Lines of stderr kept for error messages.
pub(crate) const STDERR_TAIL: usize = 20;

/// A command's process group (the command is its leader). Killing it kills the
/// command and every process it started that stayed in the group.
pub(crate) struct ProcessGroup(Option<rustix::process::Pid>);

impl ProcessGroup {
    pub(crate) fn of(child: &std::process::Child) -> Self {
        ProcessGroup(Some(rustix::process::Pid::from_child(child)))
    }

    /// Kills the group, once (later calls do nothing: its id may be reused).
    pub(crate) fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            // ESRCH (all gone already) is the usual answer after a clean exit.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    /// A job that ends early (an error while it waits) still takes its processes along.
    fn drop(&mut self) {
        self.kill();
    }
}

/// How often a waiting job looks at the cancel flag (Ctrl-C, SIGTERM, a stop).
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// Why a command was stopped before it exited.
pub(crate) enum Stop {
    Cancelled,
    TimedOut,
    Failed(std::io::Error),
}

/// Waits for the command to exit, reading its stderr meanwhile, in this thread and
/// without polling: one `poll(2)` on a pidfd for the child (it becomes readable when the
/// child exits) and on the stderr pipe, woken by whichever comes first, or after
/// [`CANCEL_CHECK`] to look at the cancel flag, or at the deadline. A kernel without
/// pidfds (before Linux 5.3) gets the child checked every 15 ms instead. On return the
/// child has been reaped; stderr is drained to its end only once the group is killed
/// (a background process may hold it open), by [`StderrTail::finish`].
pub(crate) fn wait_for<'h>(
    child: &mut std::process::Child,
    mut tail: StderrTail<'h>,
    deadline: Option<Instant>,
    ctx: &JobCtx,
) -> Result<(ExitStatus, StderrTail<'h>), Stop> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_child(child),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
    loop {
        if let Some(status) = child.try_wait().map_err(Stop::Failed)? {
            return Ok((status, tail));
        }
        if ctx.cancelled() {
            return Err(Stop::Cancelled);
        }
        let mut wait = if pidfd.is_some() {
            CANCEL_CHECK
        } else {
            Duration::from_millis(15)
        };
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Stop::TimedOut);
            }
            wait = wait.min(left);
        }
        let ts = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 15_000_000,
        });
        let err_ready = {
            let mut fds = Vec::with_capacity(2);
            if let Some(fd) = &pidfd {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            if let Some(err) = &tail.pipe {
                fds.push(PollFd::new(err, PollFlags::IN));
            }
            match poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Stop::Failed(e.into())),
            }
            tail.pipe.is_some() && fds.last().is_some_and(|f| !f.revents().is_empty())
        };
        if err_ready {
            tail.read_some();
        }
    }
}

/// The last [`STDERR_TAIL`] lines of a command's stderr (each cut at 500 characters),
/// read as they come so the pipe never fills and blocks the command.
pub(crate) struct StderrTail<'h> {
    pub(crate) pipe: Option<ChildStderr>,
    /// Sees each whole line first; a line it returns `true` for is not kept.
    hook: Option<LineHook<'h>>,
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl<'h> StderrTail<'h> {
    pub(crate) fn new(pipe: ChildStderr) -> Self {
        StderrTail {
            pipe: Some(pipe),
            hook: None,
            lines: VecDeque::new(),
            partial: Vec::new(),
        }
    }

    /// A tail whose lines go through `hook` first (see [`StderrTail::hook`]).
    pub(crate) fn with_hook(pipe: ChildStderr, hook: impl FnMut(&str) -> bool + 'h) -> Self {
        StderrTail {
            hook: Some(Box::new(hook)),
            ..Self::new(pipe)
        }
    }

    /// One read (it does not block once poll said the pipe is ready); the pipe is
    /// closed at its end or on an error.
    fn read_some(&mut self) {
        let Some(pipe) = &mut self.pipe else { return };
        let mut buf = [0u8; 16 * 1024];
        match pipe.read(&mut buf) {
            Ok(0) => self.pipe = None,
            Ok(n) => {
                for &b in &buf[..n] {
                    if b == b'\n' {
                        self.push_line();
                    } else if self.partial.len() < self.line_cap() {
                        self.partial.push(b);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => self.pipe = None,
        }
    }

    /// Bytes kept of one line: a hooked line is a message, kept whole up to 1 MiB.
    fn line_cap(&self) -> usize {
        if self.hook.is_some() { 1 << 20 } else { 4096 }
    }

    fn push_line(&mut self) {
        let mut l = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        if self.hook.as_mut().is_some_and(|h| h(&l)) {
            return;
        }
        if self.lines.len() == STDERR_TAIL {
            self.lines.pop_front();
        }
        l.truncate(l.floor_char_boundary(500));
        self.lines.push_back(l);
    }

    /// Reads what is left until the pipe's end; the tail as one text.
    pub(crate) fn finish(mut self) -> String {
        while self.pipe.is_some() {
            self.read_some();
        }
        if !self.partial.is_empty() {
            self.push_line();
        }
        self.lines.into_iter().collect::<Vec<_>>().join("\n")
    }
}
