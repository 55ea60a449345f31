//! The AI provider APIs a route may speak: which request paths are which operation, how a
//! client presents its key, and the JSON shape errors take, so that a client library sees
//! sluice's refusals exactly as it would see the provider's own.

use bytes::Bytes;
use http::HeaderMap;
use http::header::AUTHORIZATION;

/// The API a route's upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI: chat completions, completions, embeddings, responses.
    OpenAi,
    /// Anthropic: messages.
    Anthropic,
    /// One of the many servers that copy OpenAI's API (vLLM, llama.cpp, Ollama, ...).
    OpenAiCompatible,
}

/// What a request asks the provider to do, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST …/chat/completions`.
    ChatCompletions,
    /// `POST …/completions` (the legacy text completions).
    Completions,
    /// `POST …/embeddings`.
    Embeddings,
    /// `POST …/responses`.
    Responses,
    /// `POST …/messages` (Anthropic).
    Messages,
    /// Anything else (model lists, files, token counting): passed through, no usage.
    Other,
}

impl Operation {
    /// Name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat_completions",
            Operation::Completions => "completions",
            Operation::Embeddings => "embeddings",
            Operation::Responses => "responses",
            Operation::Messages => "messages",
            Operation::Other => "other",
        }
    }

    /// Whether the request body names a model and the response reports token usage.
    pub fn metered(self) -> bool {
        self != Operation::Other
    }

    /// Whether the answer is a completion whose exact repetition may be served from cache.
    pub fn is_completion(self) -> bool {
        matches!(self, Operation::ChatCompletions | Operation::Completions | Operation::Messages)
    }
}

/// The category of an error, which each provider spells its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    /// 400: the request is malformed.
    InvalidRequest,
    /// 401: no key, or an unknown one.
    Authentication,
    /// 403: the key may not use this route or model.
    Permission,
    /// 413: the request body is too large.
    TooLarge,
    /// 429: a request or token budget is spent.
    RateLimit,
    /// 502: the provider failed or answered nonsense.
    Upstream,
    /// 503: no provider key is available.
    Overloaded,
    /// 504: the provider did not answer in time.
    Timeout,
}

impl ErrorCategory {
    /// The category of an error sent with `status`.
    pub fn for_status(status: http::StatusCode) -> ErrorCategory {
        match status.as_u16() {
            401 => ErrorCategory::Authentication,
            403 => ErrorCategory::Permission,
            413 => ErrorCategory::TooLarge,
            429 => ErrorCategory::RateLimit,
            503 => ErrorCategory::Overloaded,
            504 => ErrorCategory::Timeout,
            500..=599 => ErrorCategory::Upstream,
            _ => ErrorCategory::InvalidRequest,
        }
    }

    /// The HTTP status sent with an error of this category.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ErrorCategory::InvalidRequest => S::BAD_REQUEST,
            ErrorCategory::Authentication => S::UNAUTHORIZED,
            ErrorCategory::Permission => S::FORBIDDEN,
            ErrorCategory::TooLarge => S::PAYLOAD_TOO_LARGE,
            ErrorCategory::RateLimit => S::TOO_MANY_REQUESTS,
            ErrorCategory::Upstream => S::BAD_GATEWAY,
            ErrorCategory::Overloaded => S::SERVICE_UNAVAILABLE,
            ErrorCategory::Timeout => S::GATEWAY_TIMEOUT,
        }
    }
}

impl Provider {
    /// The provider named in a config file: `openai`, `anthropic` or `openai-compatible`.
    pub fn parse(name: &str) -> Option<Provider> {
        match name {
            "openai" => Some(Provider::OpenAi),
            "anthropic" => Some(Provider::Anthropic),
            "openai-compatible" => Some(Provider::OpenAiCompatible),
            _ => None,
        }
    }

    /// The name as written in a config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::OpenAiCompatible => "openai-compatible",
        }
    }

    /// Whether this provider speaks OpenAI's formats.
    pub fn is_openai_format(self) -> bool {
        self != Provider::Anthropic
    }

    /// The operation of a request for `path` (the path as the client sent it: the last
    /// segments decide, whatever prefix and version segment precede them).
    pub fn operation(self, path: &str) -> Operation {
        let path = path.trim_end_matches('/');
        let ends = |suffix: &str| {
            path.strip_suffix(suffix).is_some_and(|rest| rest.is_empty() || rest.ends_with('/'))
        };
        match self {
            Provider::Anthropic if ends("messages") => Operation::Messages,
            Provider::Anthropic => Operation::Other,
            _ if ends("chat/completions") => Operation::ChatCompletions,
            _ if ends("completions") => Operation::Completions,
            _ if ends("embeddings") => Operation::Embeddings,
            _ if ends("responses") => Operation::Responses,
            _ => Operation::Other,
        }
    }

    /// The key a client presented the way this provider's clients send it: `x-api-key` for
    /// Anthropic, `Authorization: Bearer` for OpenAI; either is accepted for every provider,
    /// since gateways are commonly called with the other convention.
    pub fn presented_key(self, headers: &HeaderMap) -> Option<&str> {
        let bearer = || {
            let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        };
        let api_key = || headers.get("x-api-key")?.to_str().ok().map(str::trim);
        let key = match self {
            Provider::Anthropic => api_key().or_else(bearer),
            _ => bearer().or_else(api_key),
        };
        key.filter(|key| !key.is_empty())
    }

    /// An error body in this provider's JSON shape.
    ///
    /// OpenAI: `{"error":{"message","type","param","code"}}`; Anthropic:
    /// `{"type":"error","error":{"type","message"}}`. `code` is a short machine-readable
    /// reason (`invalid_api_key`, `rate_limit_exceeded`, ...), sent where the shape has one.
    pub fn error_body(self, category: ErrorCategory, code: &str, message: &str) -> Bytes {
        let body = match self {
            Provider::Anthropic => serde_json::json!({
                "type": "error",
                "error": { "type": anthropic_type(category), "message": message },
            }),
            _ => serde_json::json!({
                "error": {
                    "message": message,
                    "type": openai_type(category, code),
                    "param": null,
                    "code": code,
                }
            }),
        };
        Bytes::from(body.to_string())
    }
}

/// Anthropic's `error.type` for a category.
fn anthropic_type(category: ErrorCategory) -> &'static str {
    match category {
        ErrorCategory::InvalidRequest => "invalid_request_error",
        ErrorCategory::Authentication => "authentication_error",
        ErrorCategory::Permission => "permission_error",
        ErrorCategory::TooLarge => "request_too_large",
        ErrorCategory::RateLimit => "rate_limit_error",
        ErrorCategory::Upstream => "api_error",
        ErrorCategory::Overloaded => "overloaded_error",
        ErrorCategory::Timeout => "timeout_error",
    }
}

/// OpenAI's `error.type` for a category: its rate-limit errors say which budget ran out
/// (`requests` or `tokens`), the others name the class of error.
fn openai_type(category: ErrorCategory, code: &str) -> &'static str {
    match category {
        ErrorCategory::RateLimit if code.contains("token") => "tokens",
        ErrorCategory::RateLimit => "requests",
        ErrorCategory::InvalidRequest | ErrorCategory::TooLarge | ErrorCategory::Permission => {
            "invalid_request_error"
        }
        ErrorCategory::Authentication => "invalid_request_error",
        ErrorCategory::Upstream | ErrorCategory::Overloaded | ErrorCategory::Timeout => {
            "server_error"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn operations_come_from_the_last_segments() {
        use Operation as O;
        let cases = [
            (Provider::OpenAi, "/v1/chat/completions", O::ChatCompletions),
            (Provider::OpenAi, "/openai/v1/chat/completions/", O::ChatCompletions),
            (Provider::OpenAi, "/v1/completions", O::Completions),
            (Provider::OpenAi, "/v1/embeddings", O::Embeddings),
            (Provider::OpenAi, "/v1/responses", O::Responses),
            (Provider::OpenAi, "/v1/models", O::Other),
            (Provider::OpenAi, "/v1/xcompletions", O::Other),
            (Provider::OpenAi, "/v1/messages", O::Other),
            (Provider::OpenAiCompatible, "/chat/completions", O::ChatCompletions),
            (Provider::OpenAiCompatible, "completions", O::Completions),
            (Provider::Anthropic, "/v1/messages", O::Messages),
            (Provider::Anthropic, "/v1/messages/count_tokens", O::Other),
            (Provider::Anthropic, "/v1/chat/completions", O::Other),
        ];
        for (provider, path, expected) in cases {
            assert_eq!(provider.operation(path), expected, "{provider:?} {path}");
        }
        assert!(O::ChatCompletions.metered() && !O::Other.metered());
        assert!(O::Messages.is_completion() && !O::Embeddings.is_completion());
    }

    #[test]
    fn names_round_trip() {
        for provider in [Provider::OpenAi, Provider::Anthropic, Provider::OpenAiCompatible] {
            assert_eq!(Provider::parse(provider.as_str()), Some(provider));
        }
        assert_eq!(Provider::parse("OpenAI"), None);
    }

    #[test]
    fn keys_are_read_from_either_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(Provider::OpenAi.presented_key(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  sk-a "));
        assert_eq!(Provider::OpenAi.presented_key(&headers), Some("sk-a"));
        assert_eq!(Provider::Anthropic.presented_key(&headers), Some("sk-a"));
        headers.insert("x-api-key", HeaderValue::from_static("sk-b"));
        assert_eq!(Provider::OpenAi.presented_key(&headers), Some("sk-a"));
        assert_eq!(Provider::Anthropic.presented_key(&headers), Some("sk-b"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(Provider::OpenAi.presented_key(&headers), Some("sk-b"));
        headers.remove("x-api-key");
        assert_eq!(Provider::OpenAi.presented_key(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(Provider::OpenAi.presented_key(&headers), None);
    }

    #[test]
    fn error_bodies_take_each_providers_shape() {
        let body = Provider::OpenAi.error_body(
            ErrorCategory::RateLimit,
            "tokens_per_minute_exceeded",
            "slow \"down\"",
        );
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["message"], "slow \"down\"");
        assert_eq!(json["error"]["type"], "tokens");
        assert_eq!(json["error"]["code"], "tokens_per_minute_exceeded");
        assert!(json["error"]["param"].is_null());

        let body = Provider::Anthropic.error_body(ErrorCategory::Authentication, "x", "no");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["type"], "error");
        assert_eq!(json["error"]["type"], "authentication_error");
        assert_eq!(json["error"]["message"], "no");

        let statuses: Vec<u16> = [
            ErrorCategory::InvalidRequest,
            ErrorCategory::Authentication,
            ErrorCategory::Permission,
            ErrorCategory::TooLarge,
            ErrorCategory::RateLimit,
            ErrorCategory::Upstream,
            ErrorCategory::Overloaded,
            ErrorCategory::Timeout,
        ]
        .iter()
        .map(|c| c.status().as_u16())
        .collect();
        assert_eq!(statuses, [400, 401, 403, 413, 429, 502, 503, 504]);
    }
}
