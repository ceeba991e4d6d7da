//! `corecast [--config PATH]`: load the config, run the shards, exit 0 on
//! SIGTERM/SIGINT. `--check-config PATH` validates a file and exits;
//! `--version` and `--help` print and exit.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: corecast [flags]

  -c, --config PATH        run with this config (default: configs/corecast.toml)
      --check-config PATH  validate PATH (types, unknown keys, ranges) and exit 0 or 1
  -V, --version            print the version and git commit, and exit
  -h, --help               print this help, and exit

Every config key is listed with its default in configs/corecast.toml (docs/configuration.md).";

fn main() -> ExitCode {
    let mut path = PathBuf::from("configs/corecast.toml");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => match args.next() {
                Some(value) => path = PathBuf::from(value),
                None => return usage_error("--config needs a path"),
            },
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" | "-V" => {
                println!("corecast {} (commit {})", env!("CARGO_PKG_VERSION"), env!("CORECAST_GIT_COMMIT"));
                return ExitCode::SUCCESS;
            }
            "--check-config" => {
                let Some(value) = args.next() else { return usage_error("--check-config needs a path") };
                return match corecast::server::check::load(std::path::Path::new(&value)) {
                    Ok(_) => {
                        println!("corecast: {value}: ok");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("corecast: {value}: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            other => return usage_error(&format!("unknown argument {other:?}")),
        }
    }
    let config = match corecast::server::check::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("corecast: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(level) = corecast::log::Level::parse(&config.server.log_level) {
        corecast::log::set_level(level);
    }
    if let Err(e) = corecast::log::set_format(&config.server.log_format) {
        eprintln!("corecast: {e}");
        return ExitCode::from(2);
    }
    let result = corecast::server::runtime::run(config, |bound| {
        // The one line on stdout: tests and scripts wait for it.
        let mut stdout = std::io::stdout();
        let ws = bound.ws.map(|addr| format!(" ws={addr}")).unwrap_or_default()
            + &bound.wss.map(|addr| format!(" wss={addr}")).unwrap_or_default();
        let _ = writeln!(stdout, "corecast ready tcp={} http={}{ws}", bound.tcp, bound.http);
        let _ = stdout.flush();
        corecast::log_info!("listening: clients tcp={} api http={}", bound.tcp, bound.http);
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corecast: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("corecast: {message}\n{USAGE}");
    ExitCode::from(2)
}
