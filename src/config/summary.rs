//! Human-readable views of a configuration: the start-up table of listeners and routes, and
//! the full effective settings `sluice check` and the admin `/config` show. Secrets never
//! appear: header rules are shown as written (`${VAR}` unexpanded), users by name only.

use crate::config::{Config, HeaderRules};

/// The listeners and routes as two aligned tables, for the start-up log.
pub fn table(config: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{:<24} {:<16} PROTOCOL\n", "LISTENER", "MODES");
    for listener in &config.listeners {
        let _ = writeln!(
            out,
            "{:<24} {:<16} {}",
            listener.address.to_string(),
            listener.modes.to_string(),
            protocol(listener)
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
            route.upstream.to_string(),
            options.join(" ")
        );
    }
    out
}

fn protocol(listener: &crate::config::ListenerConfig) -> &'static str {
    match (&listener.tls, listener.h2c) {
        (Some(_), _) => "https (h2, http/1.1)",
        (None, true) => "http (http/1.1, h2c)",
        (None, false) => "http (http/1.1)",
    }
}

/// The effective configuration as `sluice check` prints it.
pub fn effective(config: &Config, origin: impl std::fmt::Display) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{origin}: OK\n\n{}\nlisteners:\n", table(config));
    for listener in &config.listeners {
        let protocol = protocol(listener);
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
    let log = &config.access_log;
    let _ = writeln!(
        out,
        "\naccess_log:\n  {}",
        if log.enabled {
            format!(
                "{} to {}{}{}",
                log.format.as_str(),
                log.destination,
                if log.drop_query { ", query strings dropped" } else { "" },
                if log.headers.is_empty() {
                    String::new()
                } else {
                    format!(", headers {}", list(log.headers.iter()))
                },
            )
        } else {
            "off".to_owned()
        }
    );
    let _ = writeln!(
        out,
        "\nadmin: {}\nrequest_id: header {}, {}",
        config.admin.map_or("off".to_owned(), |admin| admin.address.to_string()),
        config.request_id.header,
        if config.request_id.trust_incoming { "client ids trusted" } else { "always generated" },
    );
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
