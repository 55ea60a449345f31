//! The access log: one line per request, tunnel and WebSocket session, as text or JSON lines.
//!
//! Lines are formatted on the request's task and handed to a writer thread through a bounded
//! queue, so a slow disk never stalls the proxy: when the queue is full the line is dropped and
//! counted (`sluice_access_log_dropped_total`). The writer appends whole lines in batches, so
//! two writers (before and after a reload) never interleave within a line.
//!
//! Secrets never reach the log: the target's userinfo is replaced by `***`, the query string
//! is left out when `drop_query` is set, and of the request headers the config asks to log,
//! `Authorization`, `Proxy-Authorization`, `Cookie` and any header a rule fills from the
//! environment are written as `***`.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use http::{HeaderName, Uri, header};

use crate::config::{ACCESS_LOG_QUEUE_LINES, Config, HeaderRules, LogDestination, LogFormat};
use crate::observe::ai::AiRecord;
use crate::observe::event::Event;
use crate::observe::metrics::Metrics;

/// Largest batch of lines written with one `write` call.
const BATCH_BYTES: usize = 64 * 1024;

/// The access log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file could not be opened for appending.
    #[error("cannot open access log {}", path.display())]
    Open {
        /// The configured path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the access-log writer")]
    Thread(#[source] io::Error),
}

/// An open access log.
#[derive(Debug)]
pub struct AccessLog {
    lines: SyncSender<Vec<u8>>,
    format: LogFormat,
    drop_query: bool,
    headers: Vec<HeaderName>,
    secret: Vec<HeaderName>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Opens the destination `config` names and starts its writer thread.
    pub fn open(config: &Config, metrics: Arc<Metrics>) -> Result<AccessLog, AccessLogError> {
        let settings = &config.access_log;
        let out: Box<dyn io::Write + Send> = match &settings.destination {
            LogDestination::Stdout => Box::new(io::stdout()),
            LogDestination::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError::Open { path: path.clone(), source })?,
            ),
        };
        let (lines, queue) = sync_channel(ACCESS_LOG_QUEUE_LINES);
        std::thread::Builder::new()
            .name("sluice-access-log".to_owned())
            .spawn(move || write_lines(&queue, out))
            .map_err(AccessLogError::Thread)?;
        Ok(AccessLog {
            lines,
            format: settings.format,
            drop_query: settings.drop_query,
            headers: settings.headers.clone(),
            secret: secret_headers(config),
            metrics,
        })
    }

    /// Request header fields to copy into entries.
    pub fn wanted_headers(&self) -> &[HeaderName] {
        &self.headers
    }

    /// Formats `event` (which lasted `duration`) and queues the line.
    pub fn write(&self, event: &Event<'_>, duration: Duration) {
        let received = event.received;
        let now = SystemTime::now();
        let time = now.checked_sub(duration).unwrap_or(now);
        let line = match self.format {
            LogFormat::Text => self.text(event, time, duration, received),
            LogFormat::Json => self.json(event, time, duration, received),
        };
        if let Err(TrySendError::Full(_)) = self.lines.try_send(line.into_bytes()) {
            self.metrics.access_log_dropped();
        }
    }

    fn text(
        &self,
        event: &Event<'_>,
        time: SystemTime,
        duration: Duration,
        received: u64,
    ) -> String {
        let mut line = String::with_capacity(256);
        let _ = write!(
            line,
            "{} - - [{}] \"{} ",
            event.peer.ip(),
            humantime::format_rfc3339_millis(time),
            event.method,
        );
        // A target may hold `"` or raw UTF-8; escaped so the quoted field stays parseable.
        escape_text(&mut line, self.target(event.target).as_bytes());
        let _ = write!(
            line,
            " {}\" {} {} id={} mode={} route={} in={} out={} duration_ms={:.3} ttfb_ms=",
            Protocol(event),
            event.status,
            event.sent,
            event.id,
            event.mode.as_str(),
            event.route.0.as_deref().unwrap_or("-"),
            received,
            event.sent,
            millis(duration),
        );
        match event.upstream_ttfb {
            Some(ttfb) => {
                let _ = write!(line, "{:.3}", millis(ttfb));
            }
            None => line.push('-'),
        }
        let _ = write!(line, " upstream=");
        match event.upstream {
            Some(addr) => {
                let _ = write!(line, "{addr}");
            }
            None => line.push('-'),
        }
        if let Some(target) = event.upstream_target {
            let _ = write!(line, " upstream_target=");
            escape_text(&mut line, target.as_bytes());
            let _ = write!(line, " attempts={}", event.attempts);
        }
        let _ = write!(line, " error={}", event.failure.map_or("-", |f| f.as_str()));
        if let Some(close) = event.close {
            let _ = write!(line, " close={close}");
        }
        if let Some(cache) = event.cache {
            let _ = write!(line, " cache={cache}");
        }
        if let Some(ai) = event.ai {
            write_ai_text(&mut line, ai);
        }
        for (name, value) in event.headers {
            let _ = write!(line, " {name}=\"");
            if self.secret.contains(name) {
                line.push_str("***");
            } else {
                escape_text(&mut line, value.as_bytes());
            }
            line.push('"');
        }
        line.push('\n');
        line
    }

    fn json(
        &self,
        event: &Event<'_>,
        time: SystemTime,
        duration: Duration,
        received: u64,
    ) -> String {
        let headers: serde_json::Map<String, serde_json::Value> = event
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if self.secret.contains(name) {
                    "***".to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.as_str().to_owned(), serde_json::Value::String(shown))
            })
            .collect();
        let record = JsonLine {
            time: humantime::format_rfc3339_millis(time).to_string(),
            client: event.peer.to_string(),
            request_id: event.id.to_string(),
            mode: event.mode.as_str(),
            method: event.method.as_str(),
            target: self.target(event.target),
            version: Protocol(event).to_string(),
            route: event.route.0.as_deref(),
            status: event.status,
            bytes_in: received,
            bytes_out: event.sent,
            duration_ms: millis(duration),
            upstream_ttfb_ms: event.upstream_ttfb.map(millis),
            upstream: event.upstream.map(|addr| addr.to_string()),
            upstream_target: event.upstream_target,
            attempts: event.upstream_target.map(|_| event.attempts),
            error: event.failure.map(|f| f.as_str()),
            close: event.close,
            cache: event.cache,
            ai: event.ai.map(AiJson::of),
            headers,
        };
        let mut line = serde_json::to_string(&record).unwrap_or_default();
        line.push('\n');
        line
    }

    /// The target as logged: userinfo hidden, query dropped when configured.
    fn target(&self, uri: &Uri) -> String {
        let text = match (self.drop_query, uri.query()) {
            (true, Some(_)) => {
                let mut parts = uri.clone().into_parts();
                parts.path_and_query = uri.path_and_query().and_then(|pq| pq.path().parse().ok());
                Uri::from_parts(parts).map_or_else(|_| uri.path().to_owned(), |u| u.to_string())
            }
            _ => uri.to_string(),
        };
        match uri.authority().and_then(|a| a.as_str().rsplit_once('@')) {
            Some((userinfo, _)) => text.replacen(&format!("{userinfo}@"), "***@", 1),
            None => text,
        }
    }
}

/// The protocol of the request line: the HTTP version, or `SOCKS` for a SOCKS tunnel (whose
/// line reads `CONNECT host:port SOCKS`).
struct Protocol<'a>(&'a Event<'a>);

impl std::fmt::Display for Protocol<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.mode {
            crate::observe::mode::Mode::Socks => f.write_str("SOCKS"),
            _ => write!(f, "{:?}", self.0.version),
        }
    }
}

/// One JSON access-log line.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: String,
    client: String,
    request_id: String,
    mode: &'static str,
    method: &'a str,
    target: String,
    version: String,
    route: Option<&'a str>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    upstream_ttfb_ms: Option<f64>,
    upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u8>,
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ai: Option<AiJson<'a>>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    headers: serde_json::Map<String, serde_json::Value>,
}

/// The AI fields of a JSON line.
#[derive(serde::Serialize)]
struct AiJson<'a> {
    model: Option<&'a str>,
    virtual_key: Option<&'a str>,
    key_id: Option<&'a str>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    ttft_ms: Option<f64>,
    tokens_per_second: Option<f64>,
    fallbacks: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<&'static str>,
}

impl<'a> AiJson<'a> {
    fn of(ai: &'a AiRecord) -> AiJson<'a> {
        AiJson {
            model: ai.model.as_deref(),
            virtual_key: ai.virtual_key.as_deref(),
            key_id: ai.key_id.as_deref(),
            input_tokens: ai.usage.map(|u| u.input_tokens),
            output_tokens: ai.usage.map(|u| u.output_tokens),
            cached_tokens: ai.usage.map(|u| u.cached_tokens),
            ttft_ms: ai.time_to_first_token.map(millis),
            tokens_per_second: ai.tokens_per_second.map(|rate| (rate * 10.0).round() / 10.0),
            fallbacks: ai.fallbacks,
            cache: ai.cache.map(|c| c.as_str()),
        }
    }
}

/// The AI fields of a text line: `model=… vkey=… key=… tokens_in=… tokens_out=…
/// tokens_cached=… ttft_ms=… tps=… fallbacks=…`; names and models are escaped like header
/// values, since a model name comes from the provider.
fn write_ai_text(line: &mut String, ai: &AiRecord) {
    let mut field = |name: &str, value: Option<&str>| {
        let _ = write!(line, " {name}=");
        match value {
            Some(value) => {
                line.push('"');
                escape_text(line, value.as_bytes());
                line.push('"');
            }
            None => line.push('-'),
        }
    };
    field("model", ai.model.as_deref());
    field("vkey", ai.virtual_key.as_deref());
    field("key", ai.key_id.as_deref());
    let number = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
    let _ = write!(
        line,
        " tokens_in={} tokens_out={} tokens_cached={} ttft_ms={} tps={} fallbacks={}",
        number(ai.usage.map(|u| u.input_tokens)),
        number(ai.usage.map(|u| u.output_tokens)),
        number(ai.usage.map(|u| u.cached_tokens)),
        ai.time_to_first_token.map_or("-".to_owned(), |t| format!("{:.3}", millis(t))),
        ai.tokens_per_second.map_or("-".to_owned(), |r| format!("{r:.1}")),
        ai.fallbacks,
    );
    if let Some(cache) = ai.cache {
        let _ = write!(line, " ai_cache={}", cache.as_str());
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Header fields always hidden, plus every header a rule sets from the environment.
fn secret_headers(config: &Config) -> Vec<HeaderName> {
    let mut secret = vec![
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        // Anthropic's clients send their (virtual) key here.
        HeaderName::from_static("x-api-key"),
        header::COOKIE,
        header::SET_COOKIE,
    ];
    let rule_sets = [&config.headers.request, &config.headers.response]
        .into_iter()
        .chain(config.routes.iter().flat_map(|r| [&r.request_headers, &r.response_headers]));
    for rules in rule_sets {
        add_sensitive(&mut secret, rules);
    }
    secret
}

fn add_sensitive(secret: &mut Vec<HeaderName>, rules: &HeaderRules) {
    for rule in rules.set.iter().chain(&rules.append) {
        if rule.value.is_sensitive() && !secret.contains(&rule.name) {
            secret.push(rule.name.clone());
        }
    }
}

/// Writes a header value inside double quotes: `"` and `\` escaped, other bytes outside
/// printable ASCII as `\xNN`, so a client cannot forge a line.
fn escape_text(out: &mut String, bytes: &[u8]) {
    for &byte in bytes {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
}

/// The writer thread: takes lines off the queue and appends them in batches until every
/// sender (every generation using this log) is gone.
fn write_lines(queue: &Receiver<Vec<u8>>, mut out: Box<dyn io::Write + Send>) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(line) = queue.recv() {
        batch.extend_from_slice(&line);
        while batch.len() < BATCH_BYTES {
            match queue.try_recv() {
                Ok(line) => batch.extend_from_slice(&line),
                Err(_) => break,
            }
        }
        if let Err(err) = out.write_all(&batch).and_then(|()| out.flush()) {
            tracing::warn!("cannot write the access log: {err}");
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_logged_without_userinfo_and_optionally_without_query() {
        let metrics = Arc::new(Metrics::new());
        let mut config = Config::default();
        config.access_log.destination = LogDestination::Stdout;
        let log = AccessLog::open(&config, metrics.clone()).unwrap();
        let uri: Uri = "http://alice:S3cret@example.com/x?token=abc".parse().unwrap();
        assert_eq!(log.target(&uri), "http://***@example.com/x?token=abc");
        config.access_log.drop_query = true;
        let log = AccessLog::open(&config, metrics).unwrap();
        assert_eq!(log.target(&uri), "http://***@example.com/x");
        assert_eq!(log.target(&"/path?q=1".parse().unwrap()), "/path");
    }

    #[test]
    fn header_values_cannot_break_a_line() {
        let mut out = String::new();
        escape_text(&mut out, b"a\"b\\c\n\xff");
        assert_eq!(out, "a\\\"b\\\\c\\x0a\\xff");
    }
}
