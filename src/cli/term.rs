//! How much vsum says on stderr, and how: `-q`/`-v`, colour on terminals (`--color`,
//! `NO_COLOR`), and the `tracing` setup (`VSUM_LOG`) that sends the stages' own logs to
//! the run's log file and, with `-v`, to stderr. Decided once, at start.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set (or TERM is dumb)
    #[default]
    Auto,
    Always,
    Never,
}

/// The flags every command takes, before or after its name.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Global {
    /// Say less: results, warnings and errors only (no progress, screens or notes)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more: the stages' logs on stderr (-v info, -vv debug, -vvv trace; env VSUM_LOG
    /// sets the filter, e.g. VSUM_LOG=vsum_stages=debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Colour on stderr
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub color: ColorChoice,
}

struct Term {
    quiet: bool,
    verbose: u8,
    color: bool,
}

static TERM: OnceLock<Term> = OnceLock::new();

/// Whether colour goes out: `always`/`never` as said; `auto` on a terminal unless
/// `NO_COLOR` is set to anything but empty (no-color.org), or `TERM=dumb`.
pub fn wants_color(
    choice: ColorChoice,
    terminal: bool,
    no_color: Option<&str>,
    term: Option<&str>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => terminal && no_color.is_none_or(str::is_empty) && term != Some("dumb"),
    }
}

/// The `--color` of the arguments (the last one wins), for clap's own help and errors,
/// which it prints before the flags are parsed; `auto` lets clap look at the terminal and
/// `NO_COLOR` itself.
pub fn clap_color(args: &[std::ffi::OsString]) -> clap::ColorChoice {
    let mut choice = clap::ColorChoice::Auto;
    let mut it = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        let value = match a.strip_prefix("--color=") {
            Some(v) => Some(v.to_string()),
            None if a == "--color" => it.next().map(|v| v.into_owned()),
            None => None,
        };
        choice = match value.as_deref() {
            Some("always") => clap::ColorChoice::Always,
            Some("never") => clap::ColorChoice::Never,
            Some("auto") => clap::ColorChoice::Auto,
            _ => choice,
        };
    }
    choice
}

/// Decides quiet, verbose and colour for this process, and sets up `tracing`.
pub fn init(g: &Global) {
    let color = wants_color(
        g.color,
        std::io::stderr().is_terminal(),
        std::env::var("NO_COLOR").ok().as_deref(),
        std::env::var("TERM").ok().as_deref(),
    );
    let _ = TERM.set(Term {
        quiet: g.quiet,
        verbose: g.verbose,
        color,
    });
    init_tracing(g.verbose, color);
}

fn term() -> &'static Term {
    TERM.get_or_init(|| Term {
        quiet: false,
        verbose: 0,
        color: false,
    })
}

/// `-q`: notes, screens and progress stay off.
pub fn quiet() -> bool {
    term().quiet
}

/// `-v` given (how many times).
pub fn verbose() -> u8 {
    term().verbose
}

/// Colour on stderr.
pub fn color() -> bool {
    term().color
}

/// A note for a person (which manifest was chosen, ...): on stderr, unless `-q`.
pub fn note(msg: impl std::fmt::Display) {
    if !quiet() {
        eprintln!("{msg}");
    }
}

fn paint(code: &str, s: &str) -> String {
    if color() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

pub fn red(s: &str) -> String {
    paint("1;31", s)
}

pub fn yellow(s: &str) -> String {
    paint("33", s)
}

pub fn green(s: &str) -> String {
    paint("32", s)
}

pub fn dim(s: &str) -> String {
    paint("2", s)
}

/// An error message as printed: its leading `error:` (and `hint:` lines) coloured.
pub fn error_text(msg: &str) -> String {
    msg.lines()
        .map(|l| {
            if let Some(rest) = l.strip_prefix("error:") {
                format!("{}{rest}", red("error:"))
            } else if let Some(i) = l.find("hint:").filter(|i| l[..*i].trim().is_empty()) {
                format!("{}{}{}", &l[..i], green("hint:"), &l[i + 5..])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a run's log file is, once `vsum run` knows it: `tracing` records go there.
static LOG_FILE: Mutex<Option<File>> = Mutex::new(None);

/// Sends `tracing` records (as JSON lines) to `file` from now on.
pub fn log_to(file: File) {
    *LOG_FILE.lock().expect("log file") = Some(file);
}

struct LogFile;

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match LOG_FILE.lock().expect("log file").as_mut() {
            Some(f) => f.write_all(buf).map(|()| buf.len()),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match LOG_FILE.lock().expect("log file").as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// The filter: `VSUM_LOG` when set, else `default`.
fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("VSUM_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

/// Two outlets: the run's log file (JSON lines, `VSUM_LOG` or info), and with `-v` stderr
/// (`VSUM_LOG`, else info, debug or trace by the number of `-v`).
fn init_tracing(verbose: u8, color: bool) {
    let file = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(|| LogFile)
        .with_filter(filter("info"));
    let stderr = (verbose > 0).then(|| {
        let level = match verbose {
            1 => "info",
            2 => "debug",
            _ => "trace",
        };
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(color)
            .with_filter(filter(level))
    });
    let _ = tracing_subscriber::registry()
        .with(file)
        .with(stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_is_told_the_last_color_flag_before_any_double_dash() {
        let args = |a: &[&str]| -> Vec<std::ffi::OsString> {
            std::iter::once("vsum")
                .chain(a.iter().copied())
                .map(Into::into)
                .collect()
        };
        use clap::ColorChoice as C;
        assert_eq!(clap_color(&args(&["run", "--help"])), C::Auto);
        assert_eq!(clap_color(&args(&["--color", "always", "run"])), C::Always);
        assert_eq!(
            clap_color(&args(&["run", "--color=never", "--color", "always"])),
            C::Always
        );
        assert_eq!(
            clap_color(&args(&["--color=never", "--", "--color=always"])),
            C::Never
        );
        assert_eq!(clap_color(&args(&["--color", "bogus"])), C::Auto);
    }

    #[test]
    fn colour_follows_the_flag_then_no_color_then_the_terminal() {
        use ColorChoice::*;
        assert!(wants_color(Auto, true, None, Some("xterm")));
        assert!(
            wants_color(Auto, true, Some(""), None),
            "empty NO_COLOR is unset"
        );
        assert!(!wants_color(Auto, true, Some("1"), None));
        assert!(!wants_color(Auto, true, None, Some("dumb")));
        assert!(!wants_color(Auto, false, None, None), "not a terminal");
        assert!(wants_color(Always, false, Some("1"), None), "the flag wins");
        assert!(!wants_color(Never, true, None, None));
    }
}
