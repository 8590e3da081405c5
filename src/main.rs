//! `vsum`: the command line. The commands are in `cli/`; all the work is in the
//! `vsum-engine` and `vsum-stages` crates.

mod cli;

use std::process::ExitCode;

/// `vsum stages | head -1`: when the reader goes away, printing fails with a broken
/// pipe. Rust ignores SIGPIPE and `println!` panics on that error; like other command
/// line tools, vsum then just stops, quietly (exit 0: the reader chose to stop).
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload_as_str().unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(cli::exit::OK as i32);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    ExitCode::from(cli::main())
}
