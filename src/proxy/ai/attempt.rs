//! The send phase of an AI route: attempts over the route's key pool, tier after tier, while
//! nothing has reached the client, with the first-event gate on streams; and the provider
//! keys' rests, shared between instances when the counters are in Redis.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderValue, Request, StatusCode};
use http_body::Body as _;

use crate::body::Body;
use crate::config::AiRoute;
use crate::error::ProxyError;
use crate::gateway::cooldown::provider_reset;
use crate::gateway::gate::{self, GateFailure};
use crate::gateway::provider::Operation;
use crate::gateway::refusal::Refusal;
use crate::gateway::request::{RequestFields, add_include_usage, replace_model};
use crate::gateway::scanner::ObjectScanner;
use crate::gateway::tap::ResponseFormat;
use crate::headers::rules;
use crate::proxy::context::RequestContext;
use crate::proxy::exchange;
use crate::proxy::log::Reply;
use crate::proxy::reverse::Routed;
use crate::proxy::state::Proxy;
use crate::state::{Counters, SharedState, UnixTime};
use crate::upstream::client::Answered;
use crate::upstream::group::outlier::{self, Verdict};
use crate::upstream::group::{Endpoint, Group, Moment, Rng, TargetSet, Tried, Unavailable};

/// What every attempt of a request shares.
pub(super) struct Plan<'a> {
    pub(super) ai: &'a AiRoute,
    pub(super) operation: Operation,
    pub(super) fields: RequestFields,
    pub(super) head: Bytes,
    pub(super) scanner: ObjectScanner,
}

impl Plan<'_> {
    /// The body for a provider of `tier`: the model it is asked for, and
    /// `stream_options.include_usage` added when sluice reads usage from streams and the
    /// client did not ask for it. Returns the body, the model and whether usage was added.
    fn body_for(&self, tier: u8) -> (Bytes, Option<String>, bool) {
        let provider = self.ai.provider_of(tier);
        let mut body = self.head.clone();
        let add_usage = self.ai.include_usage
            && provider.is_openai_format()
            && self.fields.stream
            && !self.fields.has_stream_options
            && matches!(self.operation, Operation::ChatCompletions | Operation::Completions);
        let mut added = false;
        if add_usage
            && let Some(with_usage) =
                self.scanner.closed_at().and_then(|at| add_include_usage(&body, at))
        {
            body = with_usage;
            added = true;
        }
        let requested = self.fields.model.as_deref();
        let model = requested.map(|requested| self.ai.model_for(tier, requested).to_owned());
        if let (Some(model), Some(requested), Some(member)) =
            (&model, requested, self.scanner.member("model"))
            && model != requested
            && let Some(renamed) = replace_model(&body, member, model)
        {
            // The model comes before the closing brace, so adding usage first kept its place.
            body = renamed;
        }
        (body, model, added)
    }
}

/// The attempt that answered.
pub(super) struct Sent {
    pub(super) reply: Reply,
    pub(super) model: Option<String>,
    pub(super) key_id: Option<Arc<str>>,
    pub(super) fallbacks: u32,
    pub(super) added_usage: bool,
}

/// The request of one attempt: the prepared head with `body`, its length, and the target's
/// URI, `Host` and header rules (its provider key).
fn attempt_request(
    head: &Parts,
    endpoint: Option<&Endpoint>,
    routed: &Routed<'_>,
    ctx: &RequestContext,
    body: Bytes,
) -> Result<Request<Body>, ProxyError> {
    let route = &routed.route.config;
    let mut request = Request::new(Body::Empty);
    *request.method_mut() = head.method.clone();
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers.clone();
    let headers = request.headers_mut();
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    match endpoint {
        Some(endpoint) => {
            *request.uri_mut() = endpoint.uri(route, &ctx.target, &routed.uri)?;
            if !route.preserve_host {
                request.headers_mut().insert(HOST, endpoint.host.clone());
            }
            rules::apply(&endpoint.request_headers, request.headers_mut());
        }
        None => *request.uri_mut() = head.uri.clone(),
    }
    *request.body_mut() = Body::message(body);
    Ok(request)
}

/// The send phase of an AI route with one upstream: one attempt, nothing to fall back to,
/// so no gate either.
pub(super) async fn send_one(
    routed: &Routed<'_>,
    head: Parts,
    plan: &Plan<'_>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Result<Sent, ProxyError> {
    let route = routed.route;
    let (body, model, added_usage) = plan.body_for(0);
    let request = attempt_request(&head, None, routed, ctx, body)?;
    let target = &route.config.upstream.authority;
    let answered = exchange::send(&route.upstream, request, target, false, ctx).await?;
    let rules = [&route.config.response_headers, &proxy.config.headers.response];
    let body_idle = route.upstream.settings().body_idle;
    let reply = exchange::respond(answered, target, None, &rules, body_idle, ctx, proxy)?;
    Ok(Sent { reply, model, key_id: None, fallbacks: 0, added_usage })
}

/// Why an attempt did not end the send phase.
enum Miss {
    /// The provider answered with this (a 429, 401/403 or 5xx): passed on if nothing better
    /// comes.
    Answered(Box<Reply>),
    /// The stream failed before its first event.
    Gate(GateFailure),
    /// The exchange failed.
    Failed(ProxyError),
}

/// The send phase of an AI route with a key pool or fallback tiers: attempts over the
/// group's targets until one answers well, while nothing has reached the client.
pub(super) async fn send(
    group: &Group,
    routed: &Routed<'_>,
    head: &Parts,
    plan: &Plan<'_>,
    affinity: Option<u64>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Result<Sent, ProxyError> {
    let metrics = &proxy.observer.metrics;
    let route_name = group.route().clone();
    let settings = group.settings();
    let set = group.targets();
    let shared = proxy.gateway.as_ref().map(|g| g.state.clone()).filter(|s| s.is_shared());
    if let Some(state) = &shared {
        adopt_shared_rests(state, &route_name, &set, Moment::now()).await;
    }
    let mut rng = Rng::per_request();
    let mut now = Moment::now();
    group.budget().record_request(now);
    let mut tried = Tried::default();
    // Tiers that do not serve the requested model are never tried.
    for (index, member) in set.members().iter().enumerate() {
        if !plan.ai.serves(member.spec.tier, plan.fields.model.as_deref()) {
            tried.add(index);
        }
    }
    let mut last: Option<Miss> = None;
    let mut fallbacks = 0u32;
    for attempt in 0..settings.retry.max_attempts.max(1) {
        if attempt > 0 && !group.budget().try_retry(now) {
            metrics.upstreams.budget_exhausted(group.route());
            break;
        }
        let (index, slot) = match group.enter(&set, affinity, &tried, now, &mut rng) {
            Ok(entered) => entered,
            Err(why) if last.is_none() => {
                metrics.upstreams.unavailable(group.route());
                return Err(ProxyError::NoUpstream(why));
            }
            Err(_) => break,
        };
        tried.add(index);
        ctx.attempts = ctx.attempts.saturating_add(1);
        let Some(member) = set.member(index) else { break };
        let endpoint = &member.spec.endpoint;
        let (body, model, added_usage) = plan.body_for(member.spec.tier);
        let request = attempt_request(head, Some(endpoint), routed, ctx, body)?;
        let sent_at = now;
        let result = endpoint.upstream.send(request, &endpoint.url.authority, false).await;
        now = Moment::now();
        let elapsed = now.since(sent_at);
        let miss = match result {
            Err(error) => {
                group.report(&set, index, Verdict::Failure, elapsed, now);
                Miss::Failed(ProxyError::Upstream(error))
            }
            Ok(answered) => {
                let status = answered.response.status();
                let key_id = &member.spec.name;
                if status == StatusCode::TOO_MANY_REQUESTS {
                    let rest = rest_after_429(&answered, plan.ai, &settings.outlier);
                    share_rest(shared.as_ref(), &route_name, key_id, rest);
                    group.report(&set, index, Verdict::Cool(now.plus(rest)), elapsed, now);
                    metrics.ai.key_cooled(&route_name, key_id);
                } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    member.state.passive.cool(now.plus(plan.ai.key_removal));
                    share_rest(shared.as_ref(), &route_name, key_id, plan.ai.key_removal);
                    metrics.ai.key_removed(&route_name, key_id);
                    tracing::error!(
                        route = %route_name,
                        key_id = %key_id,
                        status = status.as_u16(),
                        for_s = plan.ai.key_removal.as_secs(),
                        "the provider refused this key: taken out of service"
                    );
                } else if status.is_server_error() {
                    let retry_after = answered
                        .response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|value| outlier::retry_after(value, SystemTime::now()));
                    let verdict = Verdict::of_response(status, retry_after, now, &settings.outlier);
                    group.report(&set, index, verdict, elapsed, now);
                } else {
                    let format = ResponseFormat::of(answered.response.headers().get(CONTENT_TYPE));
                    let stream = status.is_success() && format == Some(ResponseFormat::EventStream);
                    let reply = respond(answered, endpoint, routed, ctx, proxy)?;
                    let reply = if stream {
                        let deadline = tokio::time::Instant::now() + plan.ai.first_event_timeout;
                        match open_gate(reply, deadline).await {
                            Ok(reply) => reply,
                            Err(failure) => {
                                now = Moment::now();
                                group.report(
                                    &set,
                                    index,
                                    Verdict::Failure,
                                    now.since(sent_at),
                                    now,
                                );
                                let miss = Miss::Gate(failure);
                                fallback(&mut last, &mut fallbacks, miss, metrics, &route_name);
                                drop(slot);
                                continue;
                            }
                        }
                    } else {
                        reply
                    };
                    group.report(&set, index, Verdict::Success, elapsed, now);
                    ctx.upstream_target = Some(member.spec.name.clone());
                    ctx.upstream_slot = Some(slot);
                    let key_id = Some(member.spec.name.clone());
                    return Ok(Sent { reply, model, key_id, fallbacks, added_usage });
                }
                ctx.upstream_target = Some(member.spec.name.clone());
                Miss::Answered(Box::new(respond(answered, endpoint, routed, ctx, proxy)?))
            }
        };
        drop(slot);
        fallback(&mut last, &mut fallbacks, miss, metrics, &route_name);
    }
    // Nothing better came: the last provider answer stands as it was, else the last failure.
    match last {
        Some(Miss::Answered(reply)) => {
            Ok(Sent { reply: *reply, model: None, key_id: None, fallbacks, added_usage: false })
        }
        Some(Miss::Gate(failure)) => Err(Refusal::FirstEvent(failure).into()),
        Some(Miss::Failed(err)) => Err(err),
        None => Err(ProxyError::NoUpstream(Unavailable::NoHealthyTarget)),
    }
}

/// Records a failed attempt as the latest, counting the fallback it leads to.
fn fallback(
    last: &mut Option<Miss>,
    fallbacks: &mut u32,
    miss: Miss,
    metrics: &crate::observe::metrics::Metrics,
    route: &Arc<str>,
) {
    let reason = match &miss {
        Miss::Answered(reply) => match reply.response.status().as_u16() {
            429 => "rate_limited",
            401 | 403 => "key_refused",
            _ => "server_error",
        },
        Miss::Gate(GateFailure::Timeout) => "first_event_timeout",
        Miss::Gate(GateFailure::ErrorEvent(_)) => "error_event",
        Miss::Gate(_) => "stream_failed",
        Miss::Failed(err) => err.kind().as_str(),
    };
    metrics.ai.fallback(route, reason);
    *fallbacks += 1;
    *last = Some(miss);
}

/// How long a key that answered `429` rests: its `Retry-After`, else the provider's
/// rate-limit reset headers, else the route's `key_cooldown`; at most the route's
/// `max_cooldown`.
fn rest_after_429(
    answered: &Answered,
    ai: &AiRoute,
    outlier: &crate::config::health::OutlierSettings,
) -> Duration {
    let headers = answered.response.headers();
    let now = SystemTime::now();
    let asked = headers.get(RETRY_AFTER).and_then(|value| outlier::retry_after(value, now));
    asked
        .or_else(|| provider_reset(headers, now))
        .filter(|wait| !wait.is_zero())
        .unwrap_or(ai.key_cooldown)
        .min(outlier.max_cooldown)
}

/// Shapes a target's answer for the client (the respond phase's header work).
fn respond(
    answered: Answered,
    endpoint: &Endpoint,
    routed: &Routed<'_>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Result<Reply, ProxyError> {
    ctx.answered_by(answered.peer);
    let rules = [
        &endpoint.response_headers,
        &routed.route.config.response_headers,
        &proxy.config.headers.response,
    ];
    let body_idle = endpoint.upstream.settings().body_idle;
    let target = &endpoint.url.authority;
    exchange::respond(answered, target, None, &rules, body_idle, ctx, proxy)
}

/// Holds `reply` until its body's first event arrived (by `deadline`); the body then starts
/// with what was read.
async fn open_gate(mut reply: Reply, deadline: tokio::time::Instant) -> Result<Reply, GateFailure> {
    let body = std::mem::replace(reply.response.body_mut(), Body::Empty);
    if body.is_end_stream() {
        return Err(GateFailure::Ended);
    }
    let gated = gate::first_event(body, deadline).await?;
    *reply.response.body_mut() = Body::Gated(Box::new(gated));
    Ok(reply)
}

/// The name of a provider key's rest in the shared counters: the route and the key's id
/// (never the key).
fn rest_name(route: &str, key_id: &str) -> String {
    format!("key:{route}:{key_id}")
}

/// Tells the other instances that a key rests for `period` (a 429, or out after a 401/403),
/// without holding up this request: the write runs on its own.
fn share_rest(state: Option<&Arc<SharedState>>, route: &str, key_id: &str, period: Duration) {
    let Some(state) = state.cloned() else { return };
    let name = rest_name(route, key_id);
    tokio::spawn(async move {
        // A failure is logged and counted by the shared state; this instance's rest holds.
        let _ = state.cool(&name, period, UnixTime::now()).await;
    });
}

/// Rests the keys of `set` that another instance found rate limited or refused, for what is
/// left of their rest: one read of the shared counters for all of the route's keys, so a key
/// that answered 429 to one instance is not tried by every other one in turn.
async fn adopt_shared_rests(state: &SharedState, route: &str, set: &TargetSet, now: Moment) {
    let names: Vec<String> =
        set.members().iter().map(|member| rest_name(route, &member.spec.name)).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let Ok(rests) = state.cooling(&names, UnixTime::now()).await else { return };
    for (member, rest) in set.members().iter().zip(rests) {
        if let Some(rest) = rest.filter(|rest| !rest.is_zero()) {
            member.state.passive.cool(now.plus(rest));
        }
    }
}
