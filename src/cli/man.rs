//! `vsum man [COMMAND]`: the manual page in roff, made by clap_mangen from the same
//! clap definitions the commands parse with, so it never drifts from `--help`.
//! `vsum man | man -l -` reads it; `vsum man > vsum.1` installs it.

use clap::CommandFactory;

use super::common::Fail;

/// Prints the page for `vsum`, or for one of its commands (`vsum man run`: vsum-run(1)).
pub fn cmd(command: Option<String>) -> Result<u8, Fail> {
    let top = super::Cli::command();
    let page = match &command {
        None => top,
        Some(name) => {
            let names: Vec<String> = top
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            let Some(sub) = top.find_subcommand(name) else {
                return Err(Fail::usage(format!(
                    "error: no command '{name}'; commands are: {}",
                    names.join(", ")
                )));
            };
            let sub = sub.clone();
            let title = format!("vsum-{}", sub.get_name());
            let usage = format!("vsum {}", sub.get_name());
            sub.display_name(title)
                .bin_name(usage)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    match clap_mangen::Man::new(page).render(&mut std::io::stdout()) {
        // `vsum man | head`: the reader chose to stop.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fail::failed(format!("error: cannot write the page: {e}")))
        }
        _ => Ok(super::exit::OK),
    }
}
