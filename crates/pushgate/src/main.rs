//! The `pushgate` command: parses flags, wires the crates together, and sets
//! the exit code in one place.

mod cli;
mod client;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushgate: {e}");
            ExitCode::FAILURE
        }
    }
}
