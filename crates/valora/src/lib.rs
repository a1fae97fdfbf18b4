//! The `valora` command: runs the development mesh, each component on its
//! own, migrations and the development PKI.

mod auth;
pub mod cli;
mod commands;
mod components;
mod edge;
mod settings;
mod webhooks;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use clap::error::{ContextKind, ContextValue, ErrorKind};

use cli::{Cli, Command};

/// Parses the command line, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    valora_mesh::tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("valora: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = describe(&error);
            tracing::error!(error = %message, "exiting");
            eprintln!("valora: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// line already contains (some errors repeat their source in their own
/// message).
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    valora_telemetry::install_metrics();
    match &cli.command {
        Command::Dev(args) => {
            valora_telemetry::init_logging(args.common.log_format);
            commands::dev::run(args).await
        }
        Command::Serve(command) => {
            let common = match command {
                cli::ServeCommand::Edge(args) => &args.common,
                cli::ServeCommand::Marketplace(args) => &args.common,
                cli::ServeCommand::Auth(args) => &args.common,
            };
            valora_telemetry::init_logging(common.log_format);
            commands::serve::run(command).await
        }
        Command::Migrate(args) => {
            valora_telemetry::init_logging(valora_telemetry::LogFormat::Human);
            commands::migrate::run(args).await
        }
        Command::Certs(cli::CertsCommand::Dev(args)) => commands::certs::run(args),
        Command::Users(command) => {
            valora_telemetry::init_logging(valora_telemetry::LogFormat::Human);
            commands::admin::users(command).await
        }
        Command::Apikey(command) => {
            valora_telemetry::init_logging(valora_telemetry::LogFormat::Human);
            commands::admin::apikey(command).await
        }
        Command::Auth(cli::AuthCommand::NewSigningKey { dir }) => commands::admin::new_signing_key(dir),
        Command::Audit(cli::AuditCommand::Verify { service, database_url }) => {
            commands::admin::verify_audit(*service, database_url).await
        }
    }
}

/// Parses arguments. A bad value is reported on one line that names the
/// flag, its environment variable and the problem.
fn parse() -> Result<Cli, ExitCode> {
    let command = Cli::command();
    let result = command.clone().try_get_matches().and_then(|m| Cli::from_arg_matches(&m));
    match result {
        Ok(cli) => Ok(cli),
        Err(error) if matches!(error.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) => {
            eprintln!("valora: {}", one_line(&command, &error));
            Err(ExitCode::from(2))
        }
        Err(error) => {
            let _ = error.print();
            Err(if error.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
    }
}

fn one_line(command: &clap::Command, error: &clap::Error) -> String {
    let arg = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.clone(),
        _ => String::new(),
    };
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.clone(),
        _ => String::new(),
    };
    let long = arg.trim_start_matches("--").split(' ').next().unwrap_or_default().to_owned();
    let env = find_env(command, &long).map(|e| format!(" ({e})")).unwrap_or_default();
    let reason = std::error::Error::source(error)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "not an accepted value".to_owned());
    format!("invalid value {value:?} for --{long}{env}: {reason}; see --help for the expected form")
}

fn find_env(command: &clap::Command, long: &str) -> Option<String> {
    for arg in command.get_arguments() {
        if arg.get_long() == Some(long) {
            return arg.get_env().map(|e| e.to_string_lossy().into_owned());
        }
    }
    command.get_subcommands().find_map(|sub| find_env(sub, long))
}
