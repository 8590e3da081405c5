//! `vsum completions SHELL`: a completion script for bash, zsh, fish (or elvish,
//! PowerShell), generated from the same clap definitions the commands parse with.

use clap::CommandFactory;
use clap_complete::Shell;

/// Prints the completion script for `shell` on stdout.
pub fn cmd(shell: Shell) {
    let mut command = super::Cli::command();
    clap_complete::generate(shell, &mut command, "vsum", &mut std::io::stdout());
}
