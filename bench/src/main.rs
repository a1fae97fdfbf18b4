//! `valora-load`: the gRPC load generator of `scripts/bench.sh`.
//!
//! It makes unary gRPC calls over h2c, TLS or mutual TLS (with a mesh
//! identity loaded by `valora_mesh::tls`), at a fixed concurrency or a
//! target rate. It prints one JSON report with latency percentiles from an
//! HDR histogram and the count of every gRPC status. Only the expected status
//! (OK unless `--expect-status` says otherwise) counts as success; any other
//! status or transport error makes the exit code 1.
//!
//! Besides `run` it has the set-up helpers the benchmark needs: `seed`
//! (a published listing and a user), `frame` (a request body file for
//! h2load and wrk), `principal` (the header the edge forwards for a static
//! key), `hold` (idle connections) and `argon2` (the time of one password
//! hash with the auth service's own hasher).

mod grpc;
mod load;
mod setup;
mod target;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::target::{Target, TargetArgs};

#[derive(Debug, Parser)]
#[command(name = "valora-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Makes calls under load and prints a JSON report.
    Run {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        rpc: setup::RpcArgs,
        #[command(flatten)]
        load: load::LoadArgs,
    },
    /// Creates a published listing (and, with --email, registers a user);
    /// prints the listing id as JSON.
    Seed {
        #[command(flatten)]
        target: TargetArgs,
        /// Also register this user (an existing one is fine).
        #[arg(long)]
        email: Option<String>,
        /// Password of the registered user.
        #[arg(long, requires = "email")]
        password: Option<String>,
    },
    /// Writes the framed request message of an RPC to a file, as the
    /// request body for h2load (-d) and wrk.
    Frame {
        #[command(flatten)]
        rpc: setup::RpcArgs,
        /// The file to write.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Prints the x-valora-principal value the edge forwards for a static
    /// API key.
    Principal {
        /// The static key.
        #[arg(long, env = "VALORA_LOAD_API_KEY", hide_env_values = true)]
        api_key: String,
    },
    /// Opens connections, makes one call on each, prints a JSON line and
    /// keeps them open and idle.
    Hold {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        rpc: setup::RpcArgs,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to keep them open.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Times argon2id hashes with the auth service's hasher and settings
    /// (AUTH_ARGON2_* or the service's defaults), one at a time.
    Argon2 {
        /// Hashes to time.
        #[arg(long, default_value_t = 10)]
        hashes: usize,
        #[arg(long, env = "AUTH_ARGON2_MEMORY_KIB", default_value_t = 19 * 1024)]
        memory_kib: u32,
        #[arg(long, env = "AUTH_ARGON2_ITERATIONS", default_value_t = 2)]
        iterations: u32,
        #[arg(long, env = "AUTH_ARGON2_PARALLELISM", default_value_t = 1)]
        parallelism: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    valora_mesh::tls::install_default_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("valora-load: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("valora-load: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn print(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run { target, rpc, load } => {
            let target = Target::new(&target)?;
            let call = rpc.call(&target)?;
            let (report, passed) = load::run(target, call, &load).await?;
            print(&report);
            if !passed {
                eprintln!(
                    "valora-load: {} of {} calls failed (expected {}); first: {}",
                    report["failed"],
                    report["calls"],
                    report["expect_status"],
                    report["first_failure"]
                );
            }
            Ok(passed)
        }
        Command::Seed { target, email, password } => {
            let target = Target::new(&target)?;
            let report = setup::seed(&target, email.as_deref(), password.as_deref()).await?;
            print(&report);
            Ok(true)
        }
        Command::Frame { rpc, out } => {
            std::fs::write(&out, grpc::frame(&rpc.message()?))?;
            Ok(true)
        }
        Command::Principal { api_key } => {
            println!("{}", setup::principal(&api_key)?);
            Ok(true)
        }
        Command::Hold { target, rpc, connections, seconds } => {
            let target = Target::new(&target)?;
            let call = rpc.call(&target)?;
            setup::hold(target, call, connections, seconds, print).await?;
            Ok(true)
        }
        Command::Argon2 { hashes, memory_kib, iterations, parallelism } => {
            let report = setup::argon2(hashes, memory_kib, iterations, parallelism).await?;
            print(&report);
            Ok(true)
        }
    }
}
