//! The `echo-reactor` binary: parse arguments, start logging, run a
//! subcommand, and map its outcome to an exit code (0 ok, 1 runtime
//! failure, 2 usage error from clap).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use log::info;

use echo_reactor::cli::{Cli, Command, ServeArgs};
use echo_reactor::server::cluster::Cluster;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match cli.command {
        Command::Serve(args) => serve(&args),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let server = match Cluster::bind(args.to_config(), usize::from(args.threads)) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("echo-reactor: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The contract other programs read: one line per socket, flushed now.
    let mut out = std::io::stdout().lock();
    let lines = server
        .tcp_addrs()
        .iter()
        .map(|a| format!("listening on tcp://{a}"))
        .chain(
            server
                .udp_addrs()
                .iter()
                .map(|a| format!("listening on udp://{a}")),
        );
    for line in lines {
        info!("{line}");
        // A closed stdout must not stop the server; the log has the line.
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    drop(out);
    match server.run() {
        Ok(stats) => {
            info!("final stats: {stats}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo-reactor: poll loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
