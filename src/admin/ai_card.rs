//! The status page's AI usage card: requests and tokens per model and per virtual key since
//! start, and each AI route's provider keys by id (`Status::ai_usage`). `page.js` draws the
//! same tables from `status.json`. Names only: no key or key hash ever reaches the status.

use std::fmt::Write as _;
use std::time::Duration;

use crate::admin::format::{escape, span, thousands};
use crate::admin::status::{AiCounts, AiProviderKey, AiUsage};

/// The card for `usage`; rendered hidden when no route serves an AI provider, so the script
/// can show it once one does.
pub fn render(out: &mut String, usage: Option<&AiUsage>) {
    let hidden = if usage.is_none() { " hidden" } else { "" };
    let _ = write!(
        out,
        "<section class=\"card\" id=\"ai-card\" aria-labelledby=\"ai-title\"{hidden}>\n\
         <div class=\"card-head\"><h2 id=\"ai-title\">AI usage</h2>\
         <span class=\"muted small\">since start</span></div>\n<div id=\"ai-body\">\n"
    );
    if let Some(usage) = usage {
        let models = usage.models.iter().map(|m| (m.model.as_str(), &m.usage));
        counts_table(out, "Model", models);
        let keys = usage.virtual_keys.iter().map(|k| (k.name.as_str(), &k.usage));
        counts_table(out, "Virtual key", keys);
        out.push_str(
            "<div class=\"scroll\"><table>\n<thead><tr><th>Route</th><th>Provider key</th>\
             <th class=\"num\">State</th></tr></thead>\n<tbody>\n",
        );
        for route in &usage.routes {
            let _ = writeln!(
                out,
                "<tr><td class=\"name\">{}</td><td class=\"muted small\" colspan=\"2\">{} fallbacks</td></tr>",
                escape(&route.route),
                thousands(route.fallbacks),
            );
            for key in &route.keys {
                let _ = writeln!(
                    out,
                    "<tr class=\"target\"><td></td><td class=\"mono\">{}</td><td class=\"num\">\
                     <span class=\"pill {}\">{}</span> <span class=\"muted small\">{}</span></td></tr>",
                    escape(&key.key_id),
                    key_class(key.state),
                    escape(key.state),
                    escape(&key_detail(key)),
                );
            }
        }
        out.push_str("</tbody></table></div>\n");
    }
    out.push_str("</div>\n</section>\n");
}

/// A table of requests and tokens, one row per name (`""` reads as `none`).
fn counts_table<'a>(
    out: &mut String,
    title: &str,
    rows: impl ExactSizeIterator<Item = (&'a str, &'a AiCounts)>,
) {
    let _ = write!(
        out,
        "<div class=\"scroll\"><table class=\"counts\">\n<thead><tr><th>{title}</th><th class=\"num\">Requests</th>\
         <th class=\"num\">Input tokens</th><th class=\"num\">Output tokens</th>\
         <th class=\"num hide-narrow\">Cached</th></tr></thead>\n<tbody>\n"
    );
    if rows.len() == 0 {
        out.push_str("<tr><td class=\"empty\" colspan=\"5\">No AI requests yet.</td></tr>\n");
    }
    for (name, counts) in rows {
        let _ = writeln!(
            out,
            "<tr><td class=\"name\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num hide-narrow\">{}</td></tr>",
            escape(if name.is_empty() { "none" } else { name }),
            thousands(counts.requests),
            thousands(counts.input_tokens),
            thousands(counts.output_tokens),
            thousands(counts.cached_tokens),
        );
    }
    out.push_str("</tbody></table></div>\n");
}

/// The pill colour of a provider key's state.
fn key_class(state: &str) -> &'static str {
    match state {
        "ready" => "ok",
        "removed" => "bad",
        _ => "warn",
    }
}

/// When a resting or removed key is back, and how often it was set aside.
fn key_detail(key: &AiProviderKey) -> String {
    let mut parts = Vec::new();
    if let Some(ms) = key.back_in_ms {
        parts.push(format!("back in {}", span(Duration::from_millis(ms))));
    }
    parts.push(times(key.cooldowns, "rest"));
    parts.push(times(key.removals, "removal"));
    parts.join(" · ")
}

/// `1 rest`, `3 rests`.
fn times(n: u64, noun: &str) -> String {
    format!("{} {noun}{}", thousands(n), if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::status::{AiKeyUsage, AiModelUsage, AiRouteStatus};

    #[test]
    fn the_card_lists_models_keys_and_provider_keys() {
        let counts =
            AiCounts { requests: 1200, input_tokens: 30, output_tokens: 7, cached_tokens: 0 };
        let usage = AiUsage {
            models: vec![AiModelUsage { model: "<gpt>".to_owned(), usage: counts }],
            virtual_keys: vec![AiKeyUsage { name: String::new(), usage: counts }],
            routes: vec![AiRouteStatus {
                route: "chat".to_owned(),
                fallbacks: 2,
                keys: vec![AiProviderKey {
                    key_id: "primary".to_owned(),
                    state: "resting",
                    back_in_ms: Some(4_000),
                    cooldowns: 1,
                    removals: 0,
                }],
            }],
        };
        let mut out = String::new();
        render(&mut out, Some(&usage));
        for part in ["&lt;gpt&gt;", "1,200", ">none<", "2 fallbacks", "primary", "pill warn"] {
            assert!(out.contains(part), "{part} missing in {out}");
        }
        assert!(out.contains("back in 4s · 1 rest · 0 removals"), "{out}");
        assert!(!out.contains(" hidden"), "{out}");
        let mut empty = String::new();
        render(&mut empty, None);
        assert!(empty.contains("id=\"ai-card\" aria-labelledby=\"ai-title\" hidden"), "{empty}");
    }
}
