//! `pushgate-bench`: the stand-alone binary; `pushgate bench` mounts the same flags.

use std::process::ExitCode;

use clap::Parser;
use pushgate_bench::{BenchArgs, BenchCommand, ErrorKind};

/// Loopback-only load generator for pushgate and other push servers
#[derive(Parser)]
#[command(name = "pushgate-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    let args = BenchArgs {
        command: Cli::parse().command,
    };
    let json = args.json();
    match pushgate_bench::run_blocking(args) {
        Ok(report) => {
            print!("{}", report.render(json));
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                let obj = serde_json::json!({
                    "error": { "kind": e.kind().as_str(), "message": e.message() }
                });
                println!("{obj}");
            }
            eprintln!("pushgate-bench: {e}");
            // 2 for "fix your command line or environment", 1 for everything else.
            match e.kind() {
                ErrorKind::Config | ErrorKind::NotLoopback | ErrorKind::FdLimit => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}
