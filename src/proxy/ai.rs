//! The request path of an AI route (`[route.ai]`), after the route phase:
//!
//! 1. **admit**: the client's virtual key (401 when missing or unknown), the routes and
//!    models it may use (403), then every budget of the key and the route, checked and
//!    charged one request in one atomic step of the shared counters (429 with
//!    `Retry-After`);
//! 2. **read**: the JSON body, whole but bounded (`max_request_bytes`, else 413), for its
//!    `model` and `stream`, so the model can be checked, mapped per tier and the body sent
//!    again to another key or provider;
//! 3. **cache**: an exact repeat of an earlier completion is answered from the cache;
//! 4. **send** ([`send`]): one attempt per key of the route's pool, tier after tier (the
//!    group picks, balancing and skipping keys that rest or are out), while nothing has
//!    reached the client. A `429` rests the key for its `Retry-After` (or the provider's reset
//!    headers), a `401`/`403` takes it out of service, a `5xx` or a failure to connect counts
//!    against it, and each moves on to the next key or tier. A streamed answer passes the
//!    **first-event gate**: its head is held until its first event arrives (within
//!    `first_event_timeout`), so a stream that breaks, ends or reports an error at once still
//!    falls back. After that, never.
//! 5. **respond**: the answer's usage is read as it passes ([`UsageTap`]), the usage-only
//!    chunk sluice asked for is removed, and a complete answer is stored in the cache.
//!
//! Every refusal is answered in the provider's JSON error shape. Operations without a model
//! (model lists, files) are admitted by key and then take the plain path.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, TRANSFER_ENCODING,
};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::body::{Body, BodyTooLarge};
use crate::cache::exact;
use crate::cache::fill::Tee;
use crate::cache::key::CacheKey;
use crate::config::AiRoute;
use crate::config::group::HashOn;
use crate::error::{self, ProxyError};
use crate::gateway::Gateway;
use crate::gateway::budget::{BudgetCounters, admission};
use crate::gateway::cooldown::provider_reset;
use crate::gateway::gate::{self, GateFailure};
use crate::gateway::metering::{CacheResult, Metered};
use crate::gateway::provider::{ErrorCategory, Operation, Provider};
use crate::gateway::refusal::Refusal;
use crate::gateway::request::{
    self, FieldError, PeekUntil, RequestFields, add_include_usage, replace_model,
};
use crate::gateway::scanner::ObjectScanner;
use crate::gateway::tap::{ResponseFormat, UsageTap};
use crate::gateway::usage::UsageMeter;
use crate::gateway::virtual_key::VirtualKey;
use crate::headers::rules;
use crate::observe::Failure;
use crate::proxy::context::RequestContext;
use crate::proxy::exchange;
use crate::proxy::log::Reply;
use crate::proxy::reverse::{self, Routed};
use crate::proxy::state::Proxy;
use crate::state::{Admission, Counters, UnixTime};
use crate::upstream::client::Answered;
use crate::upstream::group::outlier::{self, Verdict};
use crate::upstream::group::{Endpoint, Group, Moment, Rng, Tried, Unavailable, affinity};

/// What the AI phases made of a request.
#[derive(Debug)]
pub enum Served<'p> {
    /// The answer (or the refusal, in the provider's shape).
    Reply(Reply),
    /// An operation without a model: admitted, credentials removed, to be proxied as any
    /// request of the route.
    Plain(Box<(Request<Incoming>, Routed<'p>)>),
}

/// Serves a request on an AI route; refusals become the provider's error shape here.
pub async fn serve<'p>(
    request: Request<Incoming>,
    routed: Routed<'p>,
    ctx: &mut RequestContext,
    proxy: &'p Proxy,
) -> Served<'p> {
    let Some(ai) = routed.route.config.ai.as_ref() else {
        return Served::Plain(Box::new((request, routed)));
    };
    let provider = ai.provider;
    match phases(request, routed, ai, ctx, proxy).await {
        Ok(served) => served,
        Err(err) => {
            ctx.failure = Some(Failure::Proxy(err.kind()));
            Served::Reply(Reply::plain(render(provider, &err)))
        }
    }
}

/// `err` as the provider's JSON error, with the status, `Retry-After` and `Proxy-Status` the
/// plain rendering has.
pub fn render(provider: Provider, err: &ProxyError) -> Response<Body> {
    let code = match err {
        ProxyError::Gateway(refusal) => refusal.code(),
        other => other.kind().as_str(),
    };
    let category = ErrorCategory::for_status(err.status());
    error::render_json(err, |message| provider.error_body(category, code, message))
}

/// The AI phases, in order.
async fn phases<'p>(
    mut request: Request<Incoming>,
    routed: Routed<'p>,
    ai: &'p AiRoute,
    ctx: &mut RequestContext,
    proxy: &'p Proxy,
) -> Result<Served<'p>, ProxyError> {
    let route = routed.route;
    let Some(gateway) = proxy.gateway.as_deref() else {
        // Built for every configuration with an AI route; without it nothing can be admitted.
        return Err(ProxyError::NoUpstream(Unavailable::NoHealthyTarget));
    };
    let provider = ai.provider;
    let operation = provider.operation(request.uri().path());
    let hash_on = route.group.as_ref().and_then(|group| group.settings().hash_on.as_ref());
    let mut affinity =
        hash_on.and_then(|on| affinity::key(on, request.headers(), ctx.downstream.addr.ip()));
    let virtual_key = if ai.virtual_keys {
        let key = admit_key(request.headers(), provider, &route.config.name, gateway)?;
        if hash_on == Some(&HashOn::VirtualKey) {
            affinity = Some(affinity::of_name(&key.name));
        }
        // The client's key never goes upstream.
        request.headers_mut().remove(AUTHORIZATION);
        request.headers_mut().remove("x-api-key");
        Some(key)
    } else {
        None
    };
    let meter = Arc::new(UsageMeter::new());
    ctx.ai = Some(Box::new(Metered {
        meter: meter.clone(),
        virtual_key: virtual_key.clone(),
        route_budget: route.ai_budget.clone(),
        state: gateway.state.clone(),
        requested_model: None,
        model: None,
        key_id: None,
        fallbacks: 0,
        cache: None,
    }));
    if !operation.metered() {
        let route_budget = route.ai_budget.as_deref();
        charge_request(route_budget, virtual_key.as_deref(), gateway, ctx, proxy).await?;
        return Ok(Served::Plain(Box::new((request, routed))));
    }

    // Read: the whole JSON body, within the bound.
    let request = Body::limit_request(request, route.config.max_body_bytes, ctx.received.clone())?;
    let (mut parts, body) = request.into_parts();
    let limit = usize::try_from(ai.max_request_bytes).unwrap_or(usize::MAX);
    let peeked = request::peek(body, PeekUntil::ObjectEnd, limit).await.map_err(|err| {
        if err.downcast_ref::<BodyTooLarge>().is_some() {
            ProxyError::BodyTooLarge { limit: route.config.max_body_bytes }
        } else {
            Refusal::Body(FieldError::Broken).into()
        }
    })?;
    if peeked.rest.is_some() || peeked.head.len() > limit {
        return Err(ProxyError::BodyTooLarge { limit: ai.max_request_bytes });
    }
    let fields = peeked.fields().map_err(Refusal::Body)?;
    if let Some(key) = &virtual_key
        && !key.allows_model(fields.model.as_deref())
    {
        let model = fields.model.clone().unwrap_or_default();
        return Err(Refusal::ModelNotAllowed { key: key.name.clone(), model }.into());
    }
    if let Some(metered) = ctx.ai.as_mut() {
        metered.requested_model = fields.model.clone();
    }
    let route_budget = route.ai_budget.as_deref();
    charge_request(route_budget, virtual_key.as_deref(), gateway, ctx, proxy).await?;

    // Cache: an exact repeat of a completion.
    let cache = match (&proxy.cache, ai.cache_ttl) {
        (Some(cache), Some(ttl)) if operation.is_completion() => {
            let model = fields.model.as_deref().unwrap_or_default();
            exact::key(&route.config.name, model, &peeked.head).map(|key| (cache, key, ttl))
        }
        _ => None,
    };
    if let Some((cache, key, _)) = &cache {
        let result = match exact::lookup(&cache.store, key, SystemTime::now()) {
            Some(object) => {
                let name = &cache.config.name;
                let mut response = Response::new(Body::Cached(object.body.reader()));
                *response.headers_mut() = object.headers.clone();
                insert_cache_status(response.headers_mut(), &format!("{name}; hit"));
                record_cache(ctx, proxy, CacheResult::Hit);
                return Ok(Served::Reply(Reply::plain(response)));
            }
            None => CacheResult::Miss,
        };
        record_cache(ctx, proxy, result);
    }

    // Send, then respond.
    reverse::prepare_head(&mut parts, &routed, ctx, proxy);
    let plan = Plan { ai, operation, fields, head: peeked.head, scanner: peeked.scanner };
    let started = std::time::Instant::now();
    let mut sent = match &route.group {
        Some(group) => send(group, &routed, &parts, &plan, affinity, ctx, proxy).await?,
        None => send_one(&routed, parts, &plan, ctx, proxy).await?,
    };
    tracing::trace!(elapsed_us = started.elapsed().as_micros() as u64, "ai send phase");
    let status = sent.reply.response.status();
    if let Some(metered) = ctx.ai.as_mut() {
        metered.model = sent.model.clone();
        metered.key_id = sent.key_id.clone();
        metered.fallbacks = sent.fallbacks;
    }
    let response = &mut sent.reply.response;
    let format = ResponseFormat::of(response.headers().get(CONTENT_TYPE));
    if let (Some(format), true) = (format, status.is_success()) {
        let body = std::mem::replace(response.body_mut(), Body::Empty);
        let tapped = UsageTap::new(body, format, meter, sent.added_usage);
        *response.body_mut() = Body::Tapped(Box::new(tapped));
        // The usage-only chunk's removal changes the length.
        if sent.added_usage {
            response.headers_mut().remove(CONTENT_LENGTH);
        }
    }
    if let Some((cache, key, ttl)) = cache {
        store(&mut sent.reply, cache, key, ttl);
    }
    Ok(Served::Reply(sent.reply))
}

/// Admits the client's virtual key for the route `route`.
fn admit_key(
    headers: &http::HeaderMap,
    provider: Provider,
    route: &str,
    gateway: &Gateway,
) -> Result<Arc<VirtualKey>, Refusal> {
    let presented = provider.presented_key(headers).ok_or(Refusal::MissingKey)?;
    let keys = gateway.keys.keys();
    let key = keys.find(presented).cloned().ok_or(Refusal::UnknownKey)?;
    if !key.allows_route(route) {
        return Err(Refusal::RouteNotAllowed { key: key.name.clone() });
    }
    Ok(key)
}

/// Checks every budget of the virtual key and the route, and counts the request in them, in
/// one atomic step.
async fn charge_request(
    route_budget: Option<&BudgetCounters>,
    key: Option<&VirtualKey>,
    gateway: &Gateway,
    ctx: &RequestContext,
    proxy: &Proxy,
) -> Result<(), ProxyError> {
    let budgets: Vec<&BudgetCounters> =
        key.map(|key| &key.budget).into_iter().chain(route_budget).collect();
    let (checks, owners) = admission(&budgets);
    if checks.is_empty() {
        return Ok(());
    }
    match gateway.state.admit(&checks, UnixTime::now()).await {
        Ok(Admission::Admitted) => Ok(()),
        Ok(Admission::Refused { check, retry_after }) => {
            let Some((owner, limit)) = owners.get(check) else { return Ok(()) };
            if let Some(route) = ctx.series.as_ref().and_then(|s| s.route().0.clone()) {
                let holder = match owner.holder {
                    crate::gateway::budget::Holder::VirtualKey => "virtual_key",
                    crate::gateway::budget::Holder::Route => "route",
                };
                proxy.observer.metrics.ai.budget_refused(
                    &route,
                    holder,
                    &owner.name,
                    limit.as_str(),
                );
            }
            Err(Refusal::Budget(owner.spent(*limit, retry_after)).into())
        }
        Err(err) => Err(Refusal::State(err).into()),
    }
}

/// Records the exact cache's part in the context and the metrics.
fn record_cache(ctx: &mut RequestContext, proxy: &Proxy, result: CacheResult) {
    if let Some(route) = ctx.series.as_ref().and_then(|s| s.route().0.clone()) {
        proxy.observer.metrics.ai.cache(&route, result);
    }
    if let Some(metered) = ctx.ai.as_mut() {
        metered.cache = Some(result);
    }
}

fn insert_cache_status(headers: &mut http::HeaderMap, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert("cache-status", value);
    }
}

/// Stores a complete `200` answer in the exact cache as it passes to the client.
fn store(reply: &mut Reply, cache: &crate::cache::Cache, key: CacheKey, ttl: Duration) {
    let response = &mut reply.response;
    let name = &cache.config.name;
    if response.status() != StatusCode::OK {
        insert_cache_status(response.headers_mut(), &format!("{name}; fwd=miss"));
        return;
    }
    let content_type = response.headers().get(CONTENT_TYPE);
    let admitted = exact::admit(&cache.store, key, content_type, ttl, SystemTime::now());
    let status = if admitted.is_some() { "; stored" } else { "" };
    insert_cache_status(response.headers_mut(), &format!("{name}; fwd=miss{status}"));
    if let Some(admission) = admitted {
        let body = std::mem::replace(response.body_mut(), Body::Empty);
        let tee = Tee::new(body, Some(admission), cache.config.fill_timeout, &cache.background);
        *response.body_mut() = Body::Filling(Box::new(tee));
    }
}

/// What every attempt of a request shares.
struct Plan<'a> {
    ai: &'a AiRoute,
    operation: Operation,
    fields: RequestFields,
    head: Bytes,
    scanner: ObjectScanner,
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
struct Sent {
    reply: Reply,
    model: Option<String>,
    key_id: Option<Arc<str>>,
    fallbacks: u32,
    added_usage: bool,
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
async fn send_one(
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
async fn send(
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
                    group.report(&set, index, Verdict::Cool(now.plus(rest)), elapsed, now);
                    metrics.ai.key_cooled(&route_name, key_id);
                } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    member.state.passive.cool(now.plus(plan.ai.key_removal));
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
