//! The `pushgate` command: parses flags, wires the crates together, and sets
//! the exit code in one place.

mod cli;
mod client;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each level of the error says its own part; the causes follow.
            let mut line = format!("pushgate: {e}");
            let mut cause = e.source();
            while let Some(c) = cause {
                line.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("{line}");
            ExitCode::FAILURE
        }
    }
}
