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

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
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
use crate::gateway::metering::{CacheResult, Metered};
use crate::gateway::provider::{ErrorCategory, Provider};
use crate::gateway::refusal::Refusal;
use crate::gateway::request::{self, FieldError, PeekUntil};
use crate::gateway::tap::{ResponseFormat, UsageTap};
use crate::gateway::usage::UsageMeter;
use crate::gateway::virtual_key::VirtualKey;
use crate::observe::Failure;
use crate::proxy::context::RequestContext;
use crate::proxy::log::Reply;
use crate::proxy::reverse::{self, Routed};
use crate::proxy::state::Proxy;
use crate::state::{Admission, Counters, UnixTime};
use crate::upstream::group::{Unavailable, affinity};

mod attempt;

use attempt::{Plan, send, send_one};

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
