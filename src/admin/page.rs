//! The status page (`GET /`): one self-contained HTML document, its style and script inline,
//! nothing fetched from elsewhere. The server renders every table from a [`Status`], so the
//! page reads the same without script (refreshed by reloading it); the script (`page.js`)
//! then polls `status.json` every two seconds, redraws the tables and draws the per-route
//! charts. Every value is escaped here and inserted as text by the script.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use sha2::Digest as _;

use crate::admin::format::{escape, span, thousands};
use crate::admin::status::{RouteStatus, SeriesStatus, Status, TargetHealth, TargetStatus};

/// The page's style sheet.
const STYLE: &str = include_str!("page.css");

/// The page's script.
const SCRIPT: &str = include_str!("page.js");

/// The tab icon, inline so the browser does not ask for `/favicon.ico`.
const FAVICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' \
    viewBox='0 0 16 16'%3E%3Crect width='16' height='16' rx='4' fill='%230b63ce'/%3E\
    %3Cpath d='M3 10c2-3 4 1 6-2s3-1 4-2' stroke='white' stroke-width='1.6' fill='none'/%3E%3C/svg%3E";

/// The `Content-Security-Policy` of the page: nothing may load from anywhere, only the inline
/// style and script with exactly these hashes run, and the script may fetch from the admin
/// listener itself. A value that somehow slipped past escaping still could not run.
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = |text: &str| {
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()))
    };
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        hash(SCRIPT),
        hash(STYLE)
    )
});

/// The whole page for `status`.
pub fn render(status: &Status) -> String {
    let mut out = String::with_capacity(32 * 1024 + STYLE.len() + SCRIPT.len());
    let uptime = Duration::from_millis(
        status.generated_unix_ms - status.started_unix_ms.min(status.generated_unix_ms),
    );
    let (state_class, state) =
        if status.state == "serving" { ("ok", "serving") } else { ("warn", status.state) };
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>sluice status</title>\n<link rel=\"icon\" href=\"{FAVICON}\">\n\
         <style>{STYLE}</style>\n</head>\n<body>\n\
         <header class=\"bar\">\n<div class=\"brand\"><span class=\"mark\"></span>\
         <strong>sluice</strong><span>status</span></div>\n<div class=\"meta\">\
         <span id=\"state\" class=\"pill {state_class}\">{}</span>\
         <span>v{} · up <span id=\"uptime\">{}</span></span>\
         <span id=\"updated\">as of {}</span></div>\n</header>\n<main>\n",
        escape(state),
        escape(status.version),
        span(uptime),
        clock(status.generated_unix_ms),
    );
    tiles(&mut out, status);
    let traffic = &status.traffic;
    let _ = write!(
        out,
        "<section class=\"card\" aria-labelledby=\"traffic-title\">\n<div class=\"card-head\">\
         <h2 id=\"traffic-title\">Traffic</h2><span id=\"traffic-span\" class=\"muted small\">\
         last {} · {} s samples</span></div>\n<div id=\"charts\" class=\"charts\">\
         <p class=\"empty\">The charts need JavaScript; the routes below show the last \
         minute as of this page load.</p></div>\n</section>\n",
        span(Duration::from_secs(traffic.history_seconds)),
        traffic.interval_seconds,
    );
    routes(&mut out, status);
    listeners(&mut out, status);
    reload(&mut out, status);
    crate::admin::ai_card::render(&mut out, status.ai_usage.as_ref());
    let _ = write!(
        out,
        "</main>\n<footer><a href=\"status.json\">status.json</a><a href=\"metrics\">metrics</a>\
         <a href=\"config\">config</a></footer>\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    );
    out
}

fn tiles(out: &mut String, status: &Status) {
    let (rps, ratio) = totals(&status.traffic.series);
    let targets = status.routes.iter().flat_map(|route| &route.targets);
    let (healthy, total) = targets
        .fold((0, 0), |(up, all), t| (up + usize::from(t.state == TargetHealth::Healthy), all + 1));
    let connections = &status.connections;
    let tiles = [
        ("Requests/s", "t-rps", rate(Some(rps)), "last minute"),
        ("5xx rate", "t-errors", percent(ratio), "last minute"),
        ("Connections", "t-open", connections.open.to_string(), "open now"),
        ("Parked", "t-parked", connections.parked.to_string(), "idle, socket only"),
        ("Tunnels", "t-tunnels", connections.tunnels.to_string(), "CONNECT"),
        ("WebSockets", "t-websockets", connections.websockets.to_string(), "open now"),
        ("Targets", "t-targets", format!("{healthy} / {total}"), "healthy"),
    ];
    out.push_str("<section class=\"tiles\" aria-label=\"summary\">\n");
    for (label, id, value, hint) in tiles {
        let failing = match id {
            "t-errors" => ratio.is_some_and(|r| r > 0.0),
            "t-targets" => healthy < total,
            _ => false,
        };
        let class = if failing { "value bad-text" } else { "value" };
        // The targets tile is there for the script to show once a route has targets.
        let hidden = if id == "t-targets" && total == 0 { " hidden" } else { "" };
        let _ = writeln!(
            out,
            "<div class=\"tile\" id=\"{id}-tile\"{hidden}><div class=\"label\">{label}</div>\
             <div id=\"{id}\" class=\"{class}\">{}</div><div class=\"hint\">{hint}</div></div>",
            escape(&value)
        );
    }
    out.push_str("</section>\n");
}

/// Requests per second over every series, and the share of them that were 5xx.
fn totals(series: &[SeriesStatus]) -> (f64, Option<f64>) {
    let rps: f64 = series.iter().map(|s| s.recent.requests_per_second).sum();
    let errors: f64 = series
        .iter()
        .map(|s| s.recent.requests_per_second * s.recent.error_ratio.unwrap_or(0.0))
        .sum();
    (rps, (rps > 0.0).then(|| errors / rps))
}

fn routes(out: &mut String, status: &Status) {
    out.push_str(
        "<section class=\"card\" aria-labelledby=\"routes-title\">\n<div class=\"card-head\">\
         <h2 id=\"routes-title\">Routes</h2><span class=\"muted small\">last minute</span></div>\n\
         <div class=\"scroll\"><table>\n<thead><tr><th>Route</th>\
         <th class=\"hide-narrow\">Upstream</th><th class=\"num\">Req/s</th>\
         <th class=\"num\">5xx</th><th class=\"num hide-narrow\">p50</th><th class=\"num\">p99</th></tr></thead>\n\
         <tbody id=\"routes-body\">\n",
    );
    for route in &status.routes {
        let matched = format!("{}{}", route.host.as_deref().unwrap_or(""), route.prefix);
        let series = status.series(Some(&route.name));
        let upstream = match route.balance {
            Some(balance) => format!("{} targets, {balance}", route.targets.len()),
            None => route.upstream.clone(),
        };
        route_row(out, &route.name, &matched, &upstream, series, Some(route));
        for target in &route.targets {
            target_row(out, target);
        }
    }
    if let Some(forward) = status.series(None) {
        let (name, matched, upstream) =
            ("forward proxy", "absolute-form, CONNECT", "the request's target");
        route_row(out, name, matched, upstream, Some(forward), None);
    }
    if status.routes.is_empty() && status.series(None).is_none() {
        out.push_str("<tr><td class=\"empty\" colspan=\"6\">No routes configured.</td></tr>\n");
    }
    out.push_str("</tbody></table></div>\n</section>\n");
}

fn route_row(
    out: &mut String,
    name: &str,
    matched: &str,
    upstream: &str,
    series: Option<&SeriesStatus>,
    route: Option<&RouteStatus>,
) {
    let recent = series.map(|s| s.recent);
    let failing = recent.and_then(|r| r.error_ratio).is_some_and(|r| r > 0.0);
    let tags: String = route
        .map(|route| {
            let tag = |u: &String| format!("<span class=\"tag\">{}</span>", escape(u));
            route.upgrades.iter().map(tag).collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "<tr><td><div class=\"name\">{}</div><div class=\"match mono\">{}</div></td>\
         <td class=\"mono wrap hide-narrow\">{} {tags}</td><td class=\"num\">{}</td>\
         <td class=\"num{}\">{}</td><td class=\"num hide-narrow\">{}</td><td class=\"num\">{}</td></tr>",
        escape(name),
        escape(matched),
        escape(upstream),
        recent.map_or("–".to_owned(), |r| rate(Some(r.requests_per_second))),
        if failing { " bad-text" } else { "" },
        percent(recent.and_then(|r| r.error_ratio)),
        ms(recent.and_then(|r| r.p50_ms)),
        ms(recent.and_then(|r| r.p99_ms)),
    );
}

/// A target's row under its route: its health, where it is, and what it is doing.
fn target_row(out: &mut String, target: &TargetStatus) {
    let _ = writeln!(
        out,
        "<tr class=\"target\"><td><div class=\"target-name\">{}</div></td>\
         <td class=\"mono wrap hide-narrow\">{} <span class=\"tag\">tier {}</span>\
         <span class=\"tag\">weight {}</span></td><td class=\"num\" colspan=\"4\">\
         <span class=\"pill {}\">{}</span> <span class=\"muted small\">{}</span></td></tr>",
        escape(&target.name),
        escape(&target.url),
        target.tier,
        target.weight,
        health_class(target.state),
        target.state.as_str(),
        escape(&target_detail(target)),
    );
}

/// The pill colour of a target's state: red while its checks fail, amber while it sits out a
/// timed ejection or cooling.
fn health_class(state: TargetHealth) -> &'static str {
    match state {
        TargetHealth::Healthy => "ok",
        TargetHealth::Down => "bad",
        TargetHealth::Ejected | TargetHealth::Cooling => "warn",
    }
}

/// What else there is to say about a target: why it is out, and its load.
fn target_detail(target: &TargetStatus) -> String {
    let left = |ms: Option<u64>| span(Duration::from_millis(ms.unwrap_or(0)));
    let mut parts = Vec::new();
    match target.state {
        TargetHealth::Down => parts.push("failing its checks".to_owned()),
        TargetHealth::Ejected => parts.push(format!("back in {}", left(target.ejected_for_ms))),
        TargetHealth::Cooling => parts.push(format!("back in {}", left(target.cooling_for_ms))),
        TargetHealth::Healthy if target.consecutive_failures > 0 => {
            parts.push(format!("{} failed in a row", target.consecutive_failures));
        }
        TargetHealth::Healthy => {}
    }
    parts.push(format!("{} in flight", target.in_flight));
    parts.join(" · ")
}

fn listeners(out: &mut String, status: &Status) {
    out.push_str(
        "<section class=\"card\" aria-labelledby=\"listeners-title\">\n<div class=\"card-head\">\
         <h2 id=\"listeners-title\">Listeners</h2></div>\n<div class=\"scroll\"><table>\n\
         <thead><tr><th>Address</th><th>Modes</th><th>Protocol</th><th>Auth</th></tr></thead>\n\
         <tbody id=\"listeners-body\">\n",
    );
    for listener in &status.listeners {
        let modes: String = listener
            .modes
            .split('+')
            .map(|mode| format!("<span class=\"tag\">{}</span>", escape(mode)))
            .collect();
        let _ = writeln!(
            out,
            "<tr><td class=\"name mono\">{}</td><td>{modes}</td><td>{}</td><td>{}</td></tr>",
            escape(&listener.address),
            escape(listener.protocol),
            if listener.auth { "required" } else { "–" },
        );
    }
    out.push_str("</tbody></table></div>\n</section>\n");
}

fn reload(out: &mut String, status: &Status) {
    out.push_str(
        "<section class=\"card\" aria-labelledby=\"reload-title\">\n<div class=\"card-head\">\
         <h2 id=\"reload-title\">Last reload</h2></div>\n",
    );
    match &status.reload {
        None => {
            let _ = writeln!(
                out,
                "<div id=\"reload-body\"><p class=\"empty\">No reload since start ({}).</p></div>",
                clock(status.started_unix_ms)
            );
        }
        Some(reload) => {
            let class = if reload.result == "applied" { "ok" } else { "bad" };
            let _ = writeln!(
                out,
                "<div id=\"reload-body\"><div><span class=\"pill {class}\">{}</span>\
                 <span class=\"muted small\">  {}</span><pre class=\"message\">{}</pre></div></div>",
                escape(reload.result),
                clock(reload.at_unix_ms),
                escape(&reload.message),
            );
        }
    }
    out.push_str("</section>\n");
}

// The formats below match the script's (`rate`, `ms`, `percent`, `span`, `clock` in page.js).

/// Requests per second: two decimals below 10, one below 100, then whole with separators.
fn rate(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(v) if v >= 100.0 => thousands(v.round() as u64),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// Milliseconds: two decimals below 10, one below 100, whole below a second, then seconds.
fn ms(value: Option<f64>) -> String {
    match value {
        None => "–".to_owned(),
        Some(v) if v >= 1000.0 => format!("{:.2} s", v / 1000.0),
        Some(v) if v >= 100.0 => format!("{} ms", v.round()),
        Some(v) if v >= 10.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.2} ms"),
    }
}

/// A ratio as a percentage.
fn percent(ratio: Option<f64>) -> String {
    match ratio.map(|r| r * 100.0) {
        None => "–".to_owned(),
        Some(0.0) => "0 %".to_owned(),
        Some(p) if p < 10.0 => format!("{p:.2} %"),
        Some(p) => format!("{p:.1} %"),
    }
}

/// A time as `2026-12-07 15:49:03 UTC`.
fn clock(unix_ms: u64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    format!("{} UTC", text.trim_end_matches('Z').replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain /api"), "plain /api");
    }

    #[test]
    fn figures_are_formatted_as_the_script_formats_them() {
        let rates = [
            (None, "–"),
            (Some(0.0), "0.00"),
            (Some(3.256), "3.26"),
            (Some(42.04), "42.0"),
            (Some(1234.5), "1,235"),
            (Some(1_234_567.0), "1,234,567"),
        ];
        for (value, text) in rates {
            assert_eq!(rate(value), text);
        }
        let latencies = [
            (Some(0.4213), "0.42 ms"),
            (Some(12.34), "12.3 ms"),
            (Some(250.4), "250 ms"),
            (Some(2500.0), "2.50 s"),
            (None, "–"),
        ];
        for (value, text) in latencies {
            assert_eq!(ms(value), text);
        }
        let ratios =
            [(Some(0.0), "0 %"), (Some(0.0123), "1.23 %"), (Some(0.5), "50.0 %"), (None, "–")];
        for (value, text) in ratios {
            assert_eq!(percent(value), text);
        }
        let spans = [
            (7, "7s"),
            (250, "4m 10s"),
            (300, "5m"),
            (7500, "2h 5m"),
            (7200, "2h"),
            (273_600, "3d 4h"),
        ];
        for (seconds, text) in spans {
            assert_eq!(span(Duration::from_secs(seconds)), text);
        }
        assert_eq!(clock(1_796_658_543_000), "2026-12-07 15:49:03 UTC");
    }

    fn target(state: TargetHealth, failures: u32, ejected_ms: Option<u64>) -> TargetStatus {
        TargetStatus {
            name: "a".to_owned(),
            url: "http://127.0.0.1:9000/".to_owned(),
            tier: 0,
            weight: 1,
            state,
            checks: None,
            ejected_for_ms: ejected_ms,
            cooling_for_ms: Some(4_000),
            consecutive_failures: failures,
            in_flight: 3,
            max_in_flight: 1024,
        }
    }

    #[test]
    fn a_target_reads_as_its_state_and_load() {
        let cases = [
            (target(TargetHealth::Healthy, 0, None), "ok", "3 in flight"),
            (target(TargetHealth::Healthy, 2, None), "ok", "2 failed in a row · 3 in flight"),
            (target(TargetHealth::Down, 5, None), "bad", "failing its checks · 3 in flight"),
            (target(TargetHealth::Ejected, 5, Some(21_400)), "warn", "back in 21s · 3 in flight"),
            (target(TargetHealth::Cooling, 0, None), "warn", "back in 4s · 3 in flight"),
        ];
        for (target, class, detail) in cases {
            assert_eq!(health_class(target.state), class, "{target:?}");
            assert_eq!(target_detail(&target), detail, "{target:?}");
        }
        let mut out = String::new();
        let mut odd = target(TargetHealth::Healthy, 0, None);
        odd.name = "<b>".to_owned();
        target_row(&mut out, &odd);
        assert!(out.contains("&lt;b&gt;") && !out.contains("<b>"), "{out}");
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style() {
        let policy = CONTENT_SECURITY_POLICY.as_str();
        assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(policy.matches("'sha256-").count(), 2);
    }
}
