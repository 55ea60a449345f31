//! The cache phase, between route and pick upstream, and its part of the respond phase.
//!
//! [`lookup`] answers what the shared cache can answer from the store (a hit, a stale response
//! under `stale-while-revalidate` with a background refresh, a 304 or a range from a stored
//! response, or the 504 of `only-if-cached`), makes a request that goes on to the origin
//! conditional when it validates a stored response, and lets requests for a URI whose response
//! is already on its way wait for it instead (request collapsing). What goes on is carried to
//! the respond phase in a [`Cached`]: [`Cached::respond`] stores the origin's response while
//! it streams to the client, refreshes the stored response from a 304, or stands in with a
//! stale one for an error; [`Cached::failed`] does the same when the origin could not be
//! reached. The RFC 9111 decisions themselves are in [`crate::cache::plan`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::HeaderMap;
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{Body, IdleBody};
use crate::cache::answer::{self, AnswerBody, Validated};
use crate::cache::body::BodyEnd;
use crate::cache::collapse::{Leader, Role, Settled};
use crate::cache::fill::Tee;
use crate::cache::key::CacheKey;
use crate::cache::plan::{self, AfterFetch, Exchange, Plan, Rules};
use crate::cache::policy::directives::RequestDirectives;
use crate::cache::policy::invalidation;
use crate::cache::policy::validation::{self, CONDITIONAL_FIELDS};
use crate::cache::status::{CacheStatus, Forward, Outcome};
use crate::cache::store::Lookup;
use crate::cache::store::Object;
use crate::cache::{Cache, Tier};
use crate::error::ProxyError;
use crate::headers::hop_by_hop;
use crate::observe::cache_metrics::{CacheMetrics, Revalidation};
use crate::proxy::context::RequestContext;
use crate::proxy::log::Reply;
use crate::proxy::reverse::Routed;
use crate::proxy::state::{ListenerContext, Proxy};
use crate::upstream::client::Upstream;
use crate::uri::target::Target;

/// Where a cacheable request is addressed, as the client saw it: the cache key's parts.
#[derive(Debug, Clone, Copy)]
pub struct Address<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The host (and port) the client asked for.
    pub authority: &'a str,
    /// How long past freshness a stored response may stand in for a down upstream.
    pub stale_when_down: Option<Duration>,
}

/// The cache address of a routed request, when its route caches: the scheme and host the
/// client used. Upgrade requests (WebSocket) never go through the cache.
pub fn route_address<'a>(routed: &'a Routed<'_>, ctx: &RequestContext) -> Option<Address<'a>> {
    let cache = routed.route.config.cache;
    if !cache.enabled || routed.upgrade.is_some() {
        return None;
    }
    let authority =
        routed.client_host.as_ref().and_then(|host| host.to_str().ok()).unwrap_or_default();
    Some(Address { scheme: ctx.scheme, authority, stale_when_down: cache.stale_when_down })
}

/// The cache address of a forward-proxy request, when its listener caches and the request is
/// a plain `http://` one (an `https://` exchange is the client's own, end to end).
pub fn forward_address<'a>(
    request: &Request<Incoming>,
    target: &'a Target,
    listener: &ListenerContext,
) -> Option<Address<'a>> {
    let plain = request.uri().scheme() == Some(&http::uri::Scheme::HTTP);
    let upgrade = request.headers().contains_key(http::header::UPGRADE);
    (listener.cache && plain && !upgrade).then(|| Address {
        scheme: "http",
        authority: target.authority.as_str(),
        stale_when_down: None,
    })
}

/// What the cache phase found.
#[derive(Debug)]
pub enum Looked {
    /// Answered from the cache; `refresh`, when present, is a background revalidation to
    /// start once the request has been prepared for the upstream.
    Answered {
        /// The answer.
        reply: Reply,
        /// The revalidation `stale-while-revalidate` asks for.
        refresh: Option<Refresh>,
    },
    /// The request goes on to the origin.
    Forward(Cached),
}

/// What the respond phase needs from the cache phase; empty when the cache is not in play.
#[derive(Debug, Default)]
pub struct Cached(Option<Box<Flight>>);

/// A request the cache is involved in, from lookup to response.
#[derive(Debug)]
struct Flight {
    cache: Arc<Cache>,
    metrics: Arc<crate::observe::metrics::Metrics>,
    key: CacheKey,
    /// The client's method.
    method: Method,
    /// The client's request fields as received (`Vary` selects on them; the client's own
    /// conditions are answered from them).
    request: HeaderMap,
    directives: RequestDirectives,
    rules: Rules,
    /// The stored response being validated (and the fallback if the origin fails).
    stored: Option<Arc<Object>>,
    /// Whether the origin's answer may be stored (a fetch), or only passes through.
    fetch: bool,
    /// Whether a success invalidates stored responses (unsafe method).
    invalidate: bool,
    /// Why it went to the origin.
    reason: Forward,
    /// Leads the requests waiting for this one's response.
    leader: Option<Leader>,
    /// When the request set off for the origin.
    request_time: SystemTime,
}

/// A background revalidation of a stored response (`stale-while-revalidate`).
#[derive(Debug)]
pub struct Refresh(Box<Flight>);

/// The cache phase: for a request with a cache `address` (its route or listener caches),
/// answers it from the store or marks what to do with the origin's answer.
pub async fn lookup(
    request: &mut Request<Incoming>,
    address: Option<Address<'_>>,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Looked {
    let (Some(address), Some(cache)) = (address, proxy.cache.as_ref()) else {
        return Looked::Forward(Cached::default());
    };
    let now = SystemTime::now();
    let method = request.method().clone();
    let path = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let key = CacheKey::new(&method, address.scheme, address.authority, path);
    let directives = RequestDirectives::parse(request.headers());
    let (found, tier) = if plan::consults_store(&method, request.headers()) {
        cache.lookup(&key, request.headers()).await
    } else {
        (Lookup::Miss, Tier::Memory)
    };
    let plan = plan::plan(&method, request.headers(), &directives, || found, now);
    let mut flight = Box::new(Flight {
        cache: Arc::clone(cache),
        metrics: Arc::clone(&proxy.observer.metrics),
        key,
        method,
        request: request.headers().clone(),
        directives,
        rules: cache.rules_with(address.stale_when_down),
        stored: None,
        fetch: false,
        invalidate: false,
        reason: Forward::Bypass,
        leader: None,
        request_time: now,
    });
    match plan {
        Plan::Pass { reason, invalidate } => {
            flight.reason = reason;
            flight.invalidate = invalidate;
            Looked::Forward(Cached(Some(flight)))
        }
        Plan::Unavailable => {
            let status = CacheStatus::forward(Forward::Miss);
            let mut response =
                Response::new(Body::message("only-if-cached: nothing usable is stored\n"));
            *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            flight.finish(&mut response, &status, Outcome::Unavailable, ctx);
            Looked::Answered { reply: Reply::plain(response), refresh: None }
        }
        Plan::Serve { object, mut status, refresh } => {
            if tier == Tier::Disk && status.detail.is_none() {
                status.detail = Some("disk");
            }
            if !flight.usable_body(&object).await {
                flight.reason = Forward::UriMiss;
                return go_on(flight, request, None, ctx).await;
            }
            let outcome = if refresh || status.ttl.is_some_and(|ttl| ttl <= 0) {
                Outcome::Stale
            } else {
                Outcome::Hit
            };
            let reply = flight.answer(&object, Validated::No, status, outcome, ctx);
            let refresh = if refresh { flight.refresh(object, request) } else { None };
            Looked::Answered { reply, refresh }
        }
        Plan::Fetch { stored, reason } => {
            flight.reason = reason;
            go_on(flight, request, stored, ctx).await
        }
    }
}

/// A request that must ask the origin (to fetch, or to validate `stored`): it leads the
/// others for its key, or waits for the one that does and answers from its response.
async fn go_on(
    mut flight: Box<Flight>,
    request: &mut Request<Incoming>,
    stored: Option<Arc<Object>>,
    ctx: &mut RequestContext,
) -> Looked {
    flight.fetch = true;
    match flight.cache.collapser.join(&flight.key) {
        Role::Leader(leader) => flight.leader = Some(leader),
        Role::Follower(follower) => {
            flight.metrics.cache().collapsed_wait();
            let settled = follower.wait(flight.cache.config.collapse_timeout).await;
            let now = SystemTime::now();
            match settled {
                Some(Settled::Stored(object))
                    if flight.acceptable(&object, now) && flight.usable_body(&object).await =>
                {
                    let status =
                        CacheStatus { collapsed: true, ..CacheStatus::forward(flight.reason) };
                    let reply =
                        flight.answer(&object, Validated::Yes, status, Outcome::Collapsed, ctx);
                    return Looked::Answered { reply, refresh: None };
                }
                Some(Settled::Failed) => {
                    if let Some(stale) = stored.as_ref().filter(|stale| {
                        stale.freshness.usable_on_error(
                            &flight.directives,
                            flight.rules.stale_when_down,
                            now,
                        )
                    }) {
                        let status = CacheStatus {
                            detail: Some("stale-if-error"),
                            collapsed: true,
                            ..CacheStatus::forward(Forward::Stale)
                        };
                        let reply =
                            flight.answer(stale, Validated::No, status, Outcome::Stale, ctx);
                        return Looked::Answered { reply, refresh: None };
                    }
                }
                _ => {}
            }
        }
    }
    let headers = request.headers_mut();
    match &stored {
        Some(stored) => {
            validation::make_conditional(headers, &stored.headers);
            // A HEAD is validated with a GET, whose full answer can be stored.
            *request.method_mut() = Method::GET;
        }
        // A fetch asks for the whole response, so that it can be stored; the client's own
        // conditions are answered from it afterwards.
        None => {
            for name in &CONDITIONAL_FIELDS {
                headers.remove(name);
            }
        }
    }
    flight.stored = stored;
    flight.request_time = SystemTime::now();
    Looked::Forward(Cached(Some(flight)))
}

impl Flight {
    /// Whether a response that another request fetched can answer this one: its `Vary`
    /// matches, and it is fresh for this request or at least as recent as this request.
    fn acceptable(&self, object: &Object, now: SystemTime) -> bool {
        let vary = object.vary.matches(&object.vary_key, &object.vary.key(&self.request));
        let recent = object.freshness.response_time >= self.request_time
            || object.freshness.reuse(&self.directives, now)
                != crate::cache::policy::freshness::Reuse::Validate;
        vary && recent
    }

    /// Whether a stored body can be streamed: complete, or arriving with a known length.
    /// One of unknown length could still be abandoned for growing past the object size
    /// limit, so a reader waits (bounded) for its end rather than risk a truncated answer.
    async fn usable_body(&self, object: &Object) -> bool {
        match object.body.ended() {
            Some(end) => end == BodyEnd::Complete,
            None if object.body.expected_len().is_some() => true,
            None => {
                object.body.wait_end(self.cache.config.collapse_timeout).await
                    == Some(BodyEnd::Complete)
            }
        }
    }

    /// The response `object` gives this request, with `status` in `Cache-Status`.
    fn answer(
        &self,
        object: &Arc<Object>,
        validated: Validated,
        status: CacheStatus,
        outcome: Outcome,
        ctx: &mut RequestContext,
    ) -> Reply {
        let answer =
            answer::answer(object, &self.method, &self.request, validated, SystemTime::now());
        let body = match answer.body {
            AnswerBody::Empty => Body::empty(),
            AnswerBody::Whole => Body::Cached(object.body.reader()),
            AnswerBody::Range { start, length } => {
                Body::Cached(object.body.range_reader(start, length))
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        self.finish(&mut response, &status, outcome, ctx);
        Reply::plain(response)
    }

    /// Adds `Cache-Status` and records the outcome for the access log and the metrics.
    fn finish<B>(
        &self,
        response: &mut Response<B>,
        status: &CacheStatus,
        outcome: Outcome,
        ctx: &mut RequestContext,
    ) {
        let config = &self.cache.config;
        if config.cache_status {
            status.append_to(response.headers_mut(), &config.name);
        }
        ctx.cache = Some(outcome);
        self.metrics.cache().request(outcome.as_str());
    }

    /// A background revalidation of `object` for this request, unless one is on its way.
    fn refresh(&mut self, object: Arc<Object>, request: &mut Request<Incoming>) -> Option<Refresh> {
        let Role::Leader(leader) = self.cache.collapser.join(&self.key) else {
            return None;
        };
        validation::make_conditional(request.headers_mut(), &object.headers);
        *request.method_mut() = Method::GET;
        let flight = Box::new(Flight {
            cache: Arc::clone(&self.cache),
            metrics: Arc::clone(&self.metrics),
            key: self.key.clone(),
            method: Method::GET,
            request: self.request.clone(),
            directives: self.directives.clone(),
            rules: self.rules.clone(),
            stored: Some(object),
            fetch: true,
            invalidate: false,
            reason: Forward::Stale,
            leader: Some(leader),
            request_time: SystemTime::now(),
        });
        Some(Refresh(flight))
    }

    fn metrics(&self) -> &CacheMetrics {
        self.metrics.cache()
    }

    fn settle(&mut self, settled: Settled) {
        if let Some(leader) = self.leader.take() {
            leader.settle(settled);
        }
    }

    /// What to do with the origin's response head: store, refresh, stand in, or pass.
    fn decide(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        response_time: SystemTime,
    ) -> AfterFetch {
        let exchange = self.exchange(response_time);
        plan::after_fetch(exchange, self.stored.as_ref(), status, headers, &self.rules)
    }

    fn exchange(&self, response_time: SystemTime) -> Exchange<'_> {
        Exchange {
            method: &Method::GET,
            request: &self.request,
            directives: &self.directives,
            request_time: self.request_time,
            response_time,
        }
    }
}

impl Cached {
    /// The origin could not be reached or did not answer: a stored response may stand in
    /// (`stale-if-error`, or the route's allowance while the upstream is down); otherwise the
    /// error stands.
    pub fn failed(self, err: ProxyError, ctx: &mut RequestContext) -> Result<Reply, ProxyError> {
        let Some(mut flight) = self.0 else {
            return Err(err);
        };
        let now = SystemTime::now();
        if flight.stored.is_some() {
            flight.metrics().revalidated(Revalidation::Failed);
        }
        let stale = flight.stored.clone().filter(|stored| {
            stored.freshness.usable_on_error(&flight.directives, flight.rules.stale_when_down, now)
        });
        flight.settle(Settled::Failed);
        match stale {
            Some(stored) => {
                let status = CacheStatus {
                    detail: Some("stale-if-error"),
                    ..CacheStatus::forward(Forward::Stale)
                };
                Ok(flight.answer(&stored, Validated::No, status, Outcome::Stale, ctx))
            }
            None => {
                ctx.cache = Some(Outcome::Miss);
                flight.metrics().request(Outcome::Miss.as_str());
                Err(err)
            }
        }
    }

    /// The respond phase's part: the origin's response as the client gets it, stored on the
    /// way, or replaced by the stored response it validated or the stale one it may not
    /// replace.
    pub fn respond(self, reply: Reply, ctx: &mut RequestContext) -> Reply {
        let Some(mut flight) = self.0 else {
            return reply;
        };
        if reply.session.is_some() {
            return reply;
        }
        let (mut parts, body) = reply.response.into_parts();
        let forwarded = CacheStatus {
            forward_status: Some(parts.status),
            ..CacheStatus::forward(flight.reason)
        };
        if !flight.fetch {
            if flight.invalidate {
                for key in invalidation::invalidated(
                    &flight.method,
                    &flight.key,
                    parts.status,
                    &parts.headers,
                ) {
                    flight.cache.invalidate(&key);
                }
            }
            let mut response = Response::from_parts(parts, body);
            let outcome = forwarded.outcome();
            flight.finish(&mut response, &forwarded, outcome, ctx);
            return Reply::plain(response);
        }
        let response_time = SystemTime::now();
        match flight.decide(parts.status, &parts.headers, response_time) {
            AfterFetch::Refresh => {
                let Some(stored) = flight.stored.clone() else {
                    return Reply::plain(Response::from_parts(parts, body));
                };
                let refreshed = plan::refreshed(
                    &stored,
                    &parts.headers,
                    flight.exchange(response_time),
                    &flight.rules,
                );
                let refreshed = flight.cache.replace(&flight.key, &stored, refreshed);
                flight.metrics().revalidated(Revalidation::NotModified);
                flight.settle(Settled::Stored(Arc::clone(&refreshed)));
                let status =
                    CacheStatus { ttl: Some(refreshed.freshness.ttl(response_time)), ..forwarded };
                flight.answer(&refreshed, Validated::Yes, status, Outcome::Revalidated, ctx)
            }
            AfterFetch::ServeStale => {
                let Some(stored) = flight.stored.clone() else {
                    return Reply::plain(Response::from_parts(parts, body));
                };
                flight.metrics().revalidated(Revalidation::Failed);
                flight.settle(Settled::Failed);
                let status = CacheStatus { detail: Some("stale-if-error"), ..forwarded };
                flight.answer(&stored, Validated::No, status, Outcome::Stale, ctx)
            }
            AfterFetch::Store(object) => {
                if flight.stored.is_some() {
                    flight.metrics().revalidated(Revalidation::Modified);
                }
                let Some(admission) = flight.cache.admit(flight.key.clone(), *object) else {
                    flight.settle(Settled::NotShared);
                    let mut response = Response::from_parts(parts, body);
                    flight.finish(&mut response, &forwarded, Outcome::Miss, ctx);
                    return Reply::plain(response);
                };
                let object = Arc::clone(admission.object());
                flight.settle(Settled::Stored(Arc::clone(&object)));
                let cache = &flight.cache;
                let tee =
                    Tee::new(body, Some(admission), cache.config.fill_timeout, &cache.background);
                let status = CacheStatus { stored: true, ..forwarded };
                let answer = answer::answer(
                    &object,
                    &flight.method,
                    &flight.request,
                    Validated::Yes,
                    response_time,
                );
                if answer.body == AnswerBody::Whole && answer.status == parts.status {
                    // The usual case: the client gets the origin's bytes as they arrive.
                    let mut response = Response::from_parts(parts, Body::Filling(Box::new(tee)));
                    flight.finish(&mut response, &status, Outcome::Miss, ctx);
                    return Reply::plain(response);
                }
                // The client asked for less (HEAD, or its copy is current): the rest is stored
                // in the background as the tee is dropped.
                drop(tee);
                parts.status = answer.status;
                parts.headers = answer.headers;
                let mut response = Response::from_parts(parts, Body::empty());
                flight.finish(&mut response, &status, Outcome::Miss, ctx);
                Reply::plain(response)
            }
            AfterFetch::Pass(_) => {
                flight.settle(Settled::NotShared);
                // A validated response the origin no longer lets us store is gone for good.
                if flight.stored.is_some()
                    && !plan::is_error(parts.status)
                    && parts.status != StatusCode::NOT_MODIFIED
                {
                    flight.metrics().revalidated(Revalidation::Modified);
                    flight.cache.invalidate(&flight.key);
                }
                let mut response = Response::from_parts(parts, body);
                flight.finish(&mut response, &forwarded, Outcome::Miss, ctx);
                Reply::plain(response)
            }
        }
    }
}

impl Refresh {
    /// Sends the prepared conditional `request` to `target` through `upstream` in the
    /// background and updates the store with the answer (`stale-while-revalidate`). The task
    /// is one of the cache's background tasks: graceful shutdown waits for it, and when all
    /// of their slots are taken it is skipped (its followers then ask the origin themselves).
    pub fn spawn(self, upstream: Upstream, request: Request<Body>, target: Authority) {
        let mut flight = self.0;
        let background = flight.cache.background.clone();
        let started = background.try_spawn(async move {
            let body_idle = upstream.settings().body_idle;
            let answered = match upstream.send(request, &target, false).await {
                Ok(answered) => answered,
                Err(err) => {
                    tracing::debug!(
                        key = flight.key.url(),
                        "background revalidation failed: {err}"
                    );
                    flight.metrics().revalidated(Revalidation::Failed);
                    flight.settle(Settled::Failed);
                    return;
                }
            };
            let (mut parts, body) = answered.response.into_parts();
            hop_by_hop::strip(&mut parts.headers);
            let response_time = SystemTime::now();
            match flight.decide(parts.status, &parts.headers, response_time) {
                AfterFetch::Refresh => {
                    if let Some(stored) = flight.stored.clone() {
                        let refreshed = plan::refreshed(
                            &stored,
                            &parts.headers,
                            flight.exchange(response_time),
                            &flight.rules,
                        );
                        let refreshed = flight.cache.replace(&flight.key, &stored, refreshed);
                        flight.metrics().revalidated(Revalidation::NotModified);
                        flight.settle(Settled::Stored(refreshed));
                    }
                }
                AfterFetch::Store(object) => {
                    flight.metrics().revalidated(Revalidation::Modified);
                    if let Some(admission) = flight.cache.admit(flight.key.clone(), *object) {
                        flight.settle(Settled::Stored(Arc::clone(admission.object())));
                        let fill_timeout = flight.cache.config.fill_timeout;
                        let body = Body::Upstream(IdleBody::new(body, body_idle));
                        let background = &flight.cache.background;
                        let tee = Tee::new(body, Some(admission), fill_timeout, background);
                        let _ = tokio::time::timeout(fill_timeout, tee.collect()).await;
                    }
                }
                AfterFetch::ServeStale | AfterFetch::Pass(_) => {
                    flight.metrics().revalidated(Revalidation::Failed);
                    flight.settle(Settled::Failed);
                }
            }
        });
        if !started {
            tracing::debug!("background revalidation skipped: every background slot is busy");
        }
    }
}
