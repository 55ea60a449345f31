//! The `sluice` command: parse the CLI, load and validate config, set up logging, bind, run.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice::config::{Config, HeaderRules, ListenerConfig, Modes, RouteConfig};
use sluice::server::shutdown::Drained;

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
                print!("{}", effective(&loaded, config.display()));
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
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    for spec in &cli.route {
        let mut route = RouteConfig::from_cli(spec, &config.timeouts)
            .map_err(|message| anyhow::anyhow!("--route {spec}: {message}"))?;
        route.max_body_bytes = config.limits.max_request_body_bytes;
        config.routes.push(route);
    }
    if cli.listen.is_empty() && cli.config.is_none() && !cli.route.is_empty() {
        // `sluice --route ...` alone: the default listener serves those routes.
        for listener in &mut config.listeners {
            listener.modes = Modes { forward: cli.forward, reverse: true };
        }
    }
    if !cli.listen.is_empty() {
        // Listeners named on the command line serve the routes when there are any (from the
        // file or from --route), and stay forward proxies unless --route was given without
        // --forward.
        let modes = Modes {
            forward: cli.route.is_empty() || cli.forward,
            reverse: !config.routes.is_empty(),
        };
        let users = !config.auth.users.is_empty();
        config.listeners = cli
            .listen
            .iter()
            .map(|&address| ListenerConfig::plain(address, modes, users))
            .collect();
    }
    config.check_assembled()?;
    if cli.workers.is_some() {
        config.workers = cli.workers;
    }
    init_tracing();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers.get());
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listeners = sluice::server::bind(&config.listeners).await?;
        for listener in &listeners {
            tracing::info!(
                address = %listener.local_addr()?,
                modes = %listener.config.modes,
                "listening"
            );
        }
        match sluice::run(config, listeners, shutdown_signal()).await? {
            Drained::Complete | Drained::GraceExpired => Ok(()),
        }
    })
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

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(err) => {
                    tracing::warn!("cannot watch SIGTERM: {err}");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// The effective configuration as `sluice check` prints it.
fn effective(config: &Config, origin: impl std::fmt::Display) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{origin}: OK\n\nlisteners:\n");
    for listener in &config.listeners {
        let protocol = match (&listener.tls, listener.h2c) {
            (Some(_), _) => "https (h2, http/1.1)",
            (None, true) => "http (http/1.1, h2c)",
            (None, false) => "http (http/1.1)",
        };
        let _ = writeln!(
            out,
            "  {:<24} {:<16} {protocol}",
            listener.address.to_string(),
            listener.modes.to_string()
        );
        let policy = &listener.policy;
        if listener.modes.forward {
            let ports = if policy.connect_ports.is_empty() {
                "any".to_owned()
            } else {
                policy.connect_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            };
            let _ = writeln!(
                out,
                "    forward: auth {}, CONNECT ports {ports}, private destinations {}{}",
                if policy.auth_required { "required" } else { "off" },
                if policy.allow_private_destinations { "allowed" } else { "refused" },
                if policy.open { ", open = true" } else { "" },
            );
        }
        let _ = writeln!(
            out,
            "    max connections per client address {}",
            policy.max_connections_per_ip
        );
        if let Some(tls) = &listener.tls {
            let _ = writeln!(
                out,
                "    certificate {} (key {}), checked every {}",
                tls.default.certificate.display(),
                tls.default.key.display(),
                humantime::format_duration(tls.reload_interval)
            );
            for sni in &tls.sni {
                let _ = writeln!(
                    out,
                    "    sni {} -> {}",
                    sni.names.join(", "),
                    sni.files.certificate.display()
                );
            }
        }
    }
    let t = &config.timeouts;
    let l = &config.limits;
    let d = |d| humantime::format_duration(d).to_string();
    let _ = write!(
        out,
        "\nworkers: {}\n\ntimeouts:\n  connect          {}\n  response_header  {}\n  \
         request_header   {}\n  tunnel_idle      {}\n  upstream_idle    {}\n  \
         shutdown_grace   {}\n  body_idle        {}\n  websocket_idle   {}\n  tunnel_max_lifetime     {}\n  websocket_max_lifetime  {}\n\nlimits:\n  max_request_head_bytes      {}\n  \
         max_request_headers         {}\n  max_connections             {}\n  \
         max_idle_upstream_per_host  {}\n  max_request_line_bytes      {}\n  max_request_body_bytes      {}\n  max_requests_per_connection {}\n\nheaders:\n  via  {}\n",
        config.workers.map_or("auto".to_owned(), |w| w.to_string()),
        d(t.connect),
        d(t.response_header),
        d(t.request_header),
        d(t.tunnel_idle),
        d(t.upstream_idle),
        d(t.shutdown_grace),
        d(t.body_idle),
        d(t.websocket_idle),
        d(t.tunnel_max_lifetime),
        d(t.websocket_max_lifetime),
        l.max_request_head_bytes,
        l.max_request_headers,
        l.max_connections,
        l.max_idle_upstream_per_host,
        l.max_request_line_bytes,
        l.max_request_body_bytes,
        l.max_requests_per_connection,
        config.headers.via,
    );
    let h = &config.headers;
    let _ = writeln!(
        out,
        "  x_forwarded_for    {}\n  x_forwarded_proto  {}\n  x_forwarded_host   {}\n  forwarded          {}",
        h.x_forwarded_for.as_str(),
        h.x_forwarded_proto.as_str(),
        h.x_forwarded_host.as_str(),
        h.forwarded.as_str(),
    );
    write_rules(&mut out, "  request", &h.request);
    write_rules(&mut out, "  response", &h.response);
    let _ = writeln!(
        out,
        "\naccess:\n  realm    {}\n  users    {}\n  allow    {}\n  deny     {}\n  deny_hosts     {}\n  \
         deny_networks  {}\n  rate per client {}",
        config.auth.realm,
        if config.auth.users.is_empty() {
            "(none)".to_owned()
        } else {
            config.auth.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", ")
        },
        list(config.access.allow.iter()),
        list(config.access.deny.iter()),
        list(config.destinations.deny_hosts.iter()),
        list(config.destinations.deny_networks.iter()),
        config
            .rate_limit_per_ip
            .map_or("unlimited".to_owned(), |r| format!("{}/s, burst {}", r.rate, r.burst)),
    );
    for (name, addresses) in &config.dns_hosts {
        let _ = writeln!(out, "  dns {name} -> {}", list(addresses.iter()));
    }
    if !config.routes.is_empty() {
        let _ = writeln!(out, "\nroutes:");
    }
    for route in &config.routes {
        let _ = writeln!(
            out,
            "  {:<20} {}{} -> {}  (strip_prefix={}, preserve_host={}, upgrades=[{}])",
            route.name,
            route.host.as_ref().map_or(String::new(), |h| format!("{h} ")),
            route.prefix,
            route.upstream,
            route.strip_prefix,
            route.preserve_host,
            route.allow_upgrades.join(", "),
        );
        let _ = writeln!(
            out,
            "    protocol {}, max body {} bytes, rate {}",
            route.protocol.as_str(),
            route.max_body_bytes,
            route
                .rate_limit
                .map_or("unlimited".to_owned(), |r| format!("{}/s, burst {}", r.rate, r.burst)),
        );
        let tls = &route.tls;
        for ca in &tls.extra_roots {
            let _ = writeln!(out, "    tls ca {}", ca.display());
        }
        if let Some(client) = &tls.client_certificate {
            let _ = writeln!(out, "    tls client certificate {}", client.certificate.display());
        }
        if let Some(name) = &tls.server_name {
            let _ = writeln!(out, "    tls server name {name}");
        }
        if tls.insecure_skip_verify {
            let _ = writeln!(out, "    tls VERIFICATION DISABLED (insecure_skip_verify)");
        }
        write_rules(&mut out, "    request", &route.request_headers);
        write_rules(&mut out, "    response", &route.response_headers);
    }
    out
}

/// Items joined with ", ", or "(none)".
fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let joined = items.map(|item| item.to_string()).collect::<Vec<_>>().join(", ");
    if joined.is_empty() { "(none)".to_owned() } else { joined }
}

/// Header rules as written: templates only, so `${SECRET}` values are never printed expanded.
fn write_rules(out: &mut String, label: &str, rules: &HeaderRules) {
    use std::fmt::Write as _;
    for name in &rules.remove {
        let _ = writeln!(out, "{label} remove {name}");
    }
    for rule in &rules.set {
        let _ = writeln!(out, "{label} set    {rule}");
    }
    for rule in &rules.append {
        let _ = writeln!(out, "{label} append {rule}");
    }
}
