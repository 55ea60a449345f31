//! The `sluice` command: parse the CLI, load and validate config, set up logging, bind, run.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice::config::Config;
use sluice::config::source::{ConfigSource, Overrides};
use sluice::shutdown::Drained;

/// A fast, safe HTTP proxy: forward proxy and reverse proxy on one listener.
///
/// With no arguments, sluice is a forward proxy on 127.0.0.1:8080.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on (repeatable); replaces the config file's listeners.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen: Vec<SocketAddr>,
    /// Configuration file (TOML); see docs/CONFIG.md.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Runtime worker threads [default: the CPUs this process may use].
    #[arg(long, value_name = "N")]
    workers: Option<NonZeroUsize>,
    /// Reverse-proxy route PREFIX=URL (repeatable), e.g. /defm=https://api.example.com;
    /// added to the file's routes.
    #[arg(long, value_name = "PREFIX=URL")]
    route: Vec<String>,
    /// With --route: --listen listeners also serve as a forward proxy.
    #[arg(long)]
    forward: bool,
    /// Serve the admin endpoints (/healthz, /readyz, /metrics, /config, POST /reload) on ADDR.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    admin: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and print the effective settings.
    Check {
        /// Configuration file to check.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// `--listen` accepts what the config file accepts: `ip:port`, `[v6]:port`, `localhost:port`.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    sluice::config::parse_listen_address(text)
        .ok_or_else(|| format!("`{text}` is not an address such as 127.0.0.1:8080 or [::1]:8080"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Check { config }) = &cli.command {
        return match Config::load(config) {
            Ok(loaded) => {
                print!("{}", sluice::config::summary::effective(&loaded, config.display()));
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {:#}", anyhow::Error::new(err));
                ExitCode::from(2)
            }
        };
    }
    match serve(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: Cli) -> anyhow::Result<()> {
    let source = ConfigSource::Command {
        file: cli.config,
        overrides: Overrides {
            listen: cli.listen,
            routes: cli.route,
            forward: cli.forward,
            workers: cli.workers,
            admin: cli.admin,
        },
    };
    let config = source.load()?;
    init_tracing();
    raise_descriptor_limit(&config);
    let workers = config
        .workers
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    // One worker means one thread: the current-thread scheduler runs every task where the
    // I/O driver wakes it, with no cross-thread hand-offs (and no idle second thread).
    let mut runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        runtime.worker_threads(workers);
        runtime
    };
    runtime.enable_all();
    let runtime = runtime.build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let stop = shutdown_signal();
        tokio::spawn(sluice::memory::release_freed_heap());
        let bound = sluice::server::bind(&config).await?;
        match sluice::run(source, config, bound, stop).await? {
            Drained::Complete | Drained::GraceExpired => Ok(()),
        }
    })
}

/// Raises the soft limit on open files to the hard limit, and logs it: every client
/// connection, upstream connection and tunnel is a descriptor, and distributions still start
/// services with a soft limit of 1,024, which a few HTTP/2 clients can exhaust. Warns when
/// the limit is below two descriptors (client and upstream) per connection the listeners may
/// hold.
fn raise_descriptor_limit(config: &Config) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(err) => {
            tracing::warn!("cannot read the open file limit: {err}");
            return;
        }
    };
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(err) => {
                tracing::warn!(soft, hard, "cannot raise the open file limit: {err}");
                soft
            }
        }
    } else {
        soft
    };
    tracing::info!(limit, was = soft, "open file limit");
    let connections = config.listeners.len() as u64 * config.limits.max_connections as u64;
    let wanted = connections.saturating_mul(2);
    if limit < wanted {
        tracing::warn!(
            limit,
            wanted,
            "the open file limit is below two per connection the listeners may accept \
             (limits.max_connections); beyond it, accepts and upstream connections fail"
        );
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on SIGINT or SIGTERM. Both are caught from the moment this is called (not from
/// its first poll), so a signal during start-up still drains instead of killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (interrupt, terminate) => {
                    tracing::warn!(
                        "cannot watch SIGINT/SIGTERM ({:?}, {:?}); stop with SIGKILL",
                        interrupt.err(),
                        terminate.err()
                    );
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
