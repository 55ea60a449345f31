//! Human-readable views of a configuration: the start-up table of listeners and routes, and
//! the full effective settings `sluice check` and the admin `/config` show. Secrets never
//! appear: header rules are shown as written (`${VAR}` unexpanded), users by name only.

use std::fmt::Write as _;

use super::{
    Config, cache, gateway, headers, list, listener, observe, pac, parent, route, security,
};

/// The listeners and routes as two aligned tables, for the start-up log.
pub fn table(config: &Config) -> String {
    let mut out = format!("{:<24} {:<16} PROTOCOL\n", "LISTENER", "MODES");
    for listener in &config.listeners {
        let _ = writeln!(
            out,
            "{:<24} {:<16} {}",
            listener.address.to_string(),
            listener.modes.to_string(),
            listener.protocol_label()
        );
    }
    if !config.routes.is_empty() {
        let _ = writeln!(out, "\n{:<20} {:<24} {:<40} OPTIONS", "ROUTE", "MATCH", "UPSTREAM");
    }
    for route in &config.routes {
        let matched = format!(
            "{}{}",
            route.host.as_ref().map_or(String::new(), |h| format!("{h} ")),
            route.prefix
        );
        let mut options = Vec::new();
        if route.strip_prefix {
            options.push("strip_prefix".to_owned());
        }
        if route.preserve_host {
            options.push("preserve_host".to_owned());
        }
        if !route.allow_upgrades.is_empty() {
            options.push(format!("upgrades={}", route.allow_upgrades.join("+")));
        }
        let _ = writeln!(
            out,
            "{:<20} {:<24} {:<40} {}",
            route.name,
            matched,
            route.upstream_label(),
            options.join(" ")
        );
    }
    out
}

/// The effective configuration as `sluice check` prints it: the tables, then each section
/// in turn, each written by its own module.
pub fn effective(config: &Config, origin: impl std::fmt::Display) -> String {
    let mut out = format!("{origin}: OK\n\n{}\nlisteners:\n", table(config));
    listener::write_summary(&mut out, &config.listeners);
    let t = &config.timeouts;
    let l = &config.limits;
    let d = |d| humantime::format_duration(d).to_string();
    let _ = write!(
        out,
        "\nworkers: {}\n\ntimeouts:\n  connect          {}\n  response_header  {}\n  \
         request_header   {}\n  tunnel_idle      {}\n  upstream_idle    {}\n  \
         shutdown_grace   {}\n  body_idle        {}\n  websocket_idle   {}\n  tunnel_max_lifetime     {}\n  websocket_max_lifetime  {}\n  \
         client_send      {}\n  http2_idle       {}\n\nlimits:\n  max_request_head_bytes      {}\n  \
         max_request_headers         {}\n  max_connections             {}\n  \
         max_idle_upstream_per_host  {}\n  max_request_line_bytes      {}\n  max_request_body_bytes      {}\n  max_requests_per_connection {}\n  \
         max_concurrent_streams      {}\n  max_upstream_connections    {}\n  max_response_head_bytes     {}\n",
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
        d(t.client_send),
        d(t.http2_idle),
        l.max_request_head_bytes,
        l.max_request_headers,
        l.max_connections,
        l.max_idle_upstream_per_host,
        l.max_request_line_bytes,
        l.max_request_body_bytes,
        l.max_requests_per_connection,
        l.max_concurrent_streams,
        l.max_upstream_connections,
        l.max_response_head_bytes,
    );
    headers::write_summary(&mut out, &config.headers);
    security::write_summary(&mut out, config);
    for (name, addresses) in &config.dns_hosts {
        let _ = writeln!(out, "  dns {name} -> {}", list(addresses.iter()));
    }
    observe::write_summary(&mut out, config);
    pac::write_summary(&mut out, config.pac.as_ref());
    parent::write_summary(&mut out, &config.parents);
    route::write_summary(&mut out, &config.routes);
    cache::write_summary(&mut out, config);
    gateway::write_summary(&mut out, &config.gateway, &config.routes);
    out
}
