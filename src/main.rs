//! `vsum`: the command line. The commands are in `cli/`; all the work is in the
//! `vsum-engine` and `vsum-stages` crates.

mod cli;

/// mimalloc, not glibc's malloc: a cached run is mostly small, short-lived strings and
/// paths made and freed on several threads at once, where glibc's malloc took about a
/// fifth of the samples. Paired runs: 10,000 cached jobs 296 -> 217 ms (engine bench),
/// the 600-job rerun 59 -> 48 ms (whole process). Built without transparent huge pages
/// (`no_thp`): with them each thread's first heap segment faulted in and zeroed 2 MiB
/// pages, a sixth of a rerun's samples and 38 MiB peak instead of 16.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
