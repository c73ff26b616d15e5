//! `pushgate-bench`: the stand-alone binary; `pushgate bench` mounts the same flags.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushgate_bench::publish_load::{self, PublishArgs};
use pushgate_bench::{BenchArgs, BenchCommand, BenchError, ErrorKind};

/// Loopback-only load generator for pushgate and other push servers
#[derive(Parser)]
#[command(name = "pushgate-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Subscribers(BenchCommand),
    /// Publish on N connections with no subscriber and measure acknowledged
    /// publishes a second and their latency (pushgate, a plain POST, or Redis)
    Publish(PublishArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Subscribers(command) => {
            let args = BenchArgs { command };
            let json = args.json();
            match pushgate_bench::run_blocking(args) {
                Ok(report) => {
                    print!("{}", report.render(json));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, json),
            }
        }
        Command::Publish(args) => match publish_load::run_blocking(&args) {
            Ok(report) => {
                print!("{}", report.render(args.json));
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, args.json),
        },
    }
}

fn fail(e: &BenchError, json: bool) -> ExitCode {
    if json {
        let obj = serde_json::json!({
            "error": { "kind": e.kind().as_str(), "message": e.message() }
        });
        println!("{obj}");
    }
    eprintln!("pushgate-bench: {e}");
    // 2 for "fix your command line or environment", 1 for everything else.
    match e.kind() {
        ErrorKind::Config | ErrorKind::NotLoopback | ErrorKind::FdLimit => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}
