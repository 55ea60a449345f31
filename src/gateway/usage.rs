//! Token usage as providers report it, read into one shape, and the [`UsageMeter`] a
//! response's tap fills in as the body passes and the log phase reads at the end.
//!
//! OpenAI reports `prompt_tokens` / `completion_tokens` (chat, completions, embeddings) or
//! `input_tokens` / `output_tokens` (responses), cached prompt tokens under
//! `*_tokens_details.cached_tokens`. Anthropic reports `input_tokens` (not counting cached
//! reads or cache writes), `output_tokens`, `cache_read_input_tokens` and
//! `cache_creation_input_tokens`; its stream sends the input in `message_start` and the
//! running output total in `message_delta`. [`Usage`] counts every prompt token as input,
//! whatever the provider calls it, so budgets charge the same for the same work.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Tokens one request used, in one shape for every provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_tokens: u64,
}

impl Usage {
    /// What a budget is charged: every token, in and out.
    pub fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A `usage` object as any provider writes it; absent fields stay `None`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
}

impl WireUsage {
    /// Parses a `usage` object's JSON text; `None` when it is not one (or is `null`).
    pub fn parse(text: &[u8]) -> Option<WireUsage> {
        serde_json::from_slice::<Option<WireUsage>>(text).ok().flatten()
    }

    /// Updates `usage` with what this report states; a later report (Anthropic's
    /// `message_delta`) overrides only the fields it carries.
    pub fn apply(&self, usage: &mut Usage) {
        let details = self.prompt_tokens_details.as_ref().or(self.input_tokens_details.as_ref());
        let cached_detail = details.and_then(|d| d.cached_tokens);
        let anthropic_cache =
            self.cache_read_input_tokens.is_some() || self.cache_creation_input_tokens.is_some();
        if let Some(input) = self.prompt_tokens.or(self.input_tokens) {
            usage.input_tokens = if anthropic_cache {
                // Anthropic's input_tokens excludes cache reads and writes.
                input
                    .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
                    .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            } else {
                input
            };
        }
        if let Some(output) = self.completion_tokens.or(self.output_tokens) {
            usage.output_tokens = output;
        }
        if let Some(cached) = cached_detail.or(self.cache_read_input_tokens) {
            usage.cached_tokens = cached;
        }
    }
}

/// What a response's tap learns as the body passes, read by the log phase at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRecord {
    /// The model the provider says answered.
    pub model: Option<String>,
    /// The tokens it reported, once it did.
    pub usage: Option<Usage>,
    /// When the first event (or the first body byte of a plain response) passed.
    pub first_event: Option<Instant>,
    /// When the last body byte passed.
    pub last_byte: Option<Instant>,
}

impl UsageRecord {
    /// Time to first token: from `started` (the request's arrival) to the first event.
    pub fn time_to_first_token(&self, started: Instant) -> Option<Duration> {
        self.first_event.map(|first| first.saturating_duration_since(started))
    }

    /// Output tokens per second, from the first event to the last byte; `None` without a
    /// usage report or when the answer took no measurable time.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let usage = self.usage?;
        let spent = self.last_byte?.saturating_duration_since(self.first_event?);
        let seconds = spent.as_secs_f64();
        (seconds > 0.0 && usage.output_tokens > 0).then(|| usage.output_tokens as f64 / seconds)
    }
}

/// A [`UsageRecord`] shared between a response body's tap and the request's context.
#[derive(Debug, Default)]
pub struct UsageMeter(Mutex<UsageRecord>);

impl UsageMeter {
    /// An empty meter.
    pub fn new() -> UsageMeter {
        UsageMeter::default()
    }

    /// Runs `update` on the record.
    pub fn update(&self, update: impl FnOnce(&mut UsageRecord)) {
        let mut record = self.0.lock().unwrap_or_else(|p| p.into_inner());
        update(&mut record);
    }

    /// A copy of the record as it stands.
    pub fn snapshot(&self) -> UsageRecord {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(reports: &[&str]) -> Usage {
        let mut usage = Usage::default();
        for report in reports {
            WireUsage::parse(report.as_bytes()).unwrap().apply(&mut usage);
        }
        usage
    }

    #[test]
    fn every_providers_usage_reads_into_one_shape() {
        let u = |input, output, cached| Usage {
            input_tokens: input,
            output_tokens: output,
            cached_tokens: cached,
        };
        let cases: &[(&[&str], Usage)] = &[
            // OpenAI chat completions, with cached prompt tokens.
            (
                &[r#"{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
                    "prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0}}"#],
                u(19, 10, 4),
            ),
            // Embeddings: no completion tokens.
            (&[r#"{"prompt_tokens":8,"total_tokens":8}"#], u(8, 0, 0)),
            // OpenAI responses.
            (
                &[r#"{"input_tokens":5,"output_tokens":7,"total_tokens":12,
                    "input_tokens_details":{"cached_tokens":2}}"#],
                u(5, 7, 2),
            ),
            // Anthropic message_start then message_delta.
            (
                &[
                    r#"{"input_tokens":25,"output_tokens":1,"cache_read_input_tokens":100,
                    "cache_creation_input_tokens":10}"#,
                    r#"{"output_tokens":15}"#,
                ],
                u(135, 15, 100),
            ),
            (
                &[r#"{"input_tokens":25,"output_tokens":1}"#, r#"{"output_tokens":15}"#],
                u(25, 15, 0),
            ),
        ];
        for (reports, expected) in cases {
            assert_eq!(read(reports), *expected, "{reports:?}");
        }
        assert_eq!(u(3, 4, 1).total(), 7);
        assert!(WireUsage::parse(b"null").is_none());
        assert!(WireUsage::parse(b"[1]").is_none());
    }

    #[test]
    fn rates_need_a_report_and_time() {
        let start = Instant::now();
        let mut record = UsageRecord {
            first_event: Some(start + Duration::from_millis(100)),
            last_byte: Some(start + Duration::from_millis(600)),
            ..UsageRecord::default()
        };
        assert_eq!(record.time_to_first_token(start), Some(Duration::from_millis(100)));
        assert_eq!(record.tokens_per_second(), None);
        record.usage = Some(Usage { input_tokens: 1, output_tokens: 50, cached_tokens: 0 });
        assert_eq!(record.tokens_per_second(), Some(100.0));
        record.last_byte = record.first_event;
        assert_eq!(record.tokens_per_second(), None);
    }
}
