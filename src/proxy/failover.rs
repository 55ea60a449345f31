//! The send phase of a route with several targets: the group picks a target for each attempt
//! (`Group::enter`: tier, health, caps, balancing), and a failed attempt is tried again on
//! another target while the route's policy, its retry budget and the request body allow.
//!
//! Nothing reaches the client until an attempt's answer is final: a retry is decided on the
//! response head alone, before its status line or any body byte is passed on, so the client
//! never sees part of one answer followed by another. Which attempt answered shows only in
//! the access log (`target`, `attempts`) and the metrics.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HOST, RETRY_AFTER};
use http::request::Parts;
use http::{Method, Request, StatusCode};

use crate::body::Body;
use crate::body::replay::Replay;
use crate::error::{ErrorKind, ProxyError};
use crate::headers::rules;
use crate::observe::metrics::Metrics;
use crate::observe::upstream::AttemptOutcome;
use crate::proxy::context::RequestContext;
use crate::proxy::reverse::Routed;
use crate::upstream::client::{Answered, UpstreamError};
use crate::upstream::group::outlier::{self, Verdict};
use crate::upstream::group::retry::{self, AttemptFailure};
use crate::upstream::group::{
    Endpoint, Group, InFlight, Member, Moment, Rng, TargetSet, Tried, Unavailable, affinity,
};

/// The answer of the attempt that ended the send phase, and what the respond phase needs
/// from its target.
#[derive(Debug)]
pub struct Sent {
    /// The response head.
    pub answered: Answered,
    /// The target that answered: its response rules and body timeout.
    pub endpoint: Arc<Endpoint>,
}

/// The request of one attempt: the prepared head, and the body it carries.
struct Attempt {
    head: Parts,
    replay: Option<Replay>,
}

/// Sends `request` (prepared for the route) to the targets of `group`, one attempt at a time,
/// until one answers in a way that is not retried or no retry is allowed. Records in `ctx`
/// which target answered, after how many attempts, and keeps that target's in-flight slot
/// with the request until its response body ends.
pub async fn send(
    group: &Group,
    routed: &Routed<'_>,
    request: Request<Body>,
    upgrade: bool,
    ctx: &mut RequestContext,
    metrics: &Metrics,
) -> Result<Sent, ProxyError> {
    let settings = group.settings();
    let policy = &settings.retry;
    let set = group.targets();
    let mut now = Moment::now();
    let key = settings
        .hash_on
        .as_ref()
        .and_then(|on| affinity::key(on, request.headers(), ctx.downstream.addr.ip()));
    let mut rng = Rng::per_request();
    let (head, body) = request.into_parts();
    let (replay, mut body) = match body {
        // Nothing to replay: every attempt sends an empty body.
        body if http_body::Body::is_end_stream(&body) => (None, Body::empty()),
        body if policy.max_attempts > 1 && set.members().len() > 1 => {
            let (replay, first) = Replay::new(body, policy.buffer_bytes);
            (Some(replay), Body::Replay(Box::new(first)))
        }
        body => (None, body),
    };
    let attempt = Attempt { head, replay };
    let mut tried = Tried::default();
    let (mut index, mut slot) = first_target(group, &set, key, now, &mut rng, metrics)?;
    loop {
        let member = begin_attempt(&set, index, &mut tried, ctx)?;
        let endpoint = &member.spec.endpoint;
        let request = attempt.request(endpoint, routed, ctx, body)?;
        // The moment the previous step ended: one clock read per attempt.
        let sent_at = now;
        let result = endpoint.upstream.send(request, &endpoint.url.authority, upgrade).await;
        now = Moment::now();
        let elapsed = now.since(sent_at);
        let (failure, outcome) = match result {
            Ok(answered) => {
                let status = answered.response.status();
                let retry_after = answered
                    .response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| outlier::retry_after(value, SystemTime::now()));
                let at = Recorded { set: &set, index, elapsed, now };
                let next = if answered_with(group, metrics, &at, status, retry_after, &ctx.method) {
                    let from = Step { set: &set, key, tried: &tried, previous: endpoint, now };
                    next_attempt(group, &from, &attempt, ctx, metrics, &mut rng).await
                } else {
                    None
                };
                match next {
                    Some((next_index, next_slot, next_body)) => {
                        // Dropped unread: its status line never reached the client.
                        drop(answered);
                        (index, slot, body) = (next_index, next_slot, next_body);
                        retried(&set, index, metrics);
                        continue;
                    }
                    None => {
                        ctx.upstream_target = Some(member.spec.name.clone());
                        ctx.upstream_slot = Some(slot);
                        ctx.answered_by(answered.peer);
                        return Ok(Sent { answered, endpoint: endpoint.clone() });
                    }
                }
            }
            Err(error) => (failure_of(&error), ProxyError::Upstream(error)),
        };
        // No answer: `outcome` is the error the client gets if nothing else is tried.
        let at = Recorded { set: &set, index, elapsed, now };
        let elsewhere = failed_with(group, metrics, &at, &outcome, failure, &ctx.method);
        drop(slot);
        let next = if elsewhere {
            let from = Step { set: &set, key, tried: &tried, previous: endpoint, now };
            next_attempt(group, &from, &attempt, ctx, metrics, &mut rng).await
        } else {
            None
        };
        match next {
            Some((next_index, next_slot, next_body)) => {
                (index, slot, body) = (next_index, next_slot, next_body);
                retried(&set, index, metrics);
            }
            None => {
                ctx.upstream_target = Some(member.spec.name.clone());
                return Err(outcome);
            }
        }
    }
}

/// Counts a retry on the target at `index`, the one it goes to.
pub fn retried(set: &TargetSet, index: usize, metrics: &Metrics) {
    if let Some(member) = set.member(index) {
        member.state.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics.upstreams.retry(&member.series);
    }
}

/// Where a retry starts from: the set and key of the request, the targets it tried, the one
/// that just failed, and when.
pub struct Step<'a> {
    /// The request's set.
    pub set: &'a TargetSet,
    /// Its hash key.
    pub key: Option<u64>,
    /// The targets it tried.
    pub tried: &'a Tried,
    /// The target that just failed.
    pub previous: &'a Endpoint,
    /// When that attempt ended.
    pub now: Moment,
}

/// The attempt to record: the target at `index` of `set`, answered or failed `elapsed` after
/// it was sent, at `now`.
pub struct Recorded<'a> {
    /// The request's set.
    pub set: &'a TargetSet,
    /// The target's place in it.
    pub index: usize,
    /// From sending to the answer (or the failure).
    pub elapsed: Duration,
    /// When the attempt ended.
    pub now: Moment,
}

/// The target and in-flight slot of a request's first attempt, its request counted in the
/// route's retry budget; when no target can take it, the error the client gets.
pub fn first_target(
    group: &Group,
    set: &TargetSet,
    key: Option<u64>,
    now: Moment,
    rng: &mut Rng,
    metrics: &Metrics,
) -> Result<(usize, InFlight), ProxyError> {
    group.budget().record_request(now);
    group.enter(set, key, &Tried::default(), now, rng).map_err(|why| {
        metrics.upstreams.unavailable(group.route());
        ProxyError::NoUpstream(why)
    })
}

/// Starts an attempt on the target at `index`: counted as tried, and in the request's
/// attempts; its member of `set`.
pub fn begin_attempt<'s>(
    set: &'s TargetSet,
    index: usize,
    tried: &mut Tried,
    ctx: &mut RequestContext,
) -> Result<&'s Member, ProxyError> {
    tried.add(index);
    ctx.attempts = ctx.attempts.saturating_add(1);
    set.member(index).ok_or(ProxyError::NoUpstream(Unavailable::NoHealthyTarget))
}

/// Records an answer with `status` (whose `Retry-After`, if any, asked for `retry_after`)
/// and returns whether the route's policy tries a `method` request that got it again.
pub fn answered_with(
    group: &Group,
    metrics: &Metrics,
    at: &Recorded<'_>,
    status: StatusCode,
    retry_after: Option<Duration>,
    method: &Method,
) -> bool {
    let settings = group.settings();
    let verdict = Verdict::of_response(status, retry_after, at.now, &settings.outlier);
    record(group, metrics, at, verdict, outcome_of(status));
    retry::retries(&settings.retry, method, AttemptFailure::Status(status))
}

/// Records an attempt that got no answer (`outcome`, the error the client gets if nothing
/// else is tried) and returns whether another target may be tried for a `method` request.
pub fn failed_with(
    group: &Group,
    metrics: &Metrics,
    at: &Recorded<'_>,
    outcome: &ProxyError,
    failure: AttemptFailure,
    method: &Method,
) -> bool {
    let kind = outcome.kind();
    let verdict = if kind.is_upstream() { Verdict::Failure } else { Verdict::Neutral };
    record(group, metrics, at, verdict, AttemptOutcome::Failed(kind.as_str()));
    // A broken or oversized request body is the client's doing: another target would
    // get the same. A target found with every connection open (`max_connections`) was
    // sent nothing, and another may have room.
    let elsewhere = kind.is_upstream() || kind == ErrorKind::UpstreamAtCapacity;
    elsewhere && retry::retries(&group.settings().retry, method, failure)
}

/// What an upstream error means for retrying: the target saw nothing, or no answer came.
pub fn failure_of(error: &UpstreamError) -> AttemptFailure {
    match error {
        UpstreamError::Connect { .. }
        | UpstreamError::Tls { .. }
        | UpstreamError::Parent { .. } => AttemptFailure::NotSent,
        UpstreamError::ResponseTimeout { .. } | UpstreamError::Exchange { .. } => {
            AttemptFailure::NoResponse
        }
    }
}

/// The metric outcome of an answer with `status`.
fn outcome_of(status: StatusCode) -> AttemptOutcome {
    if status.is_server_error() { AttemptOutcome::ServerError } else { AttemptOutcome::Answered }
}

/// Records an attempt's verdict in the group (ejecting the target if it failed once too
/// often) and in the metrics.
fn record(
    group: &Group,
    metrics: &Metrics,
    at: &Recorded<'_>,
    verdict: Verdict,
    outcome: AttemptOutcome,
) {
    let ejected = group.report(at.set, at.index, verdict, at.elapsed, at.now);
    if let Some(member) = at.set.member(at.index) {
        metrics.upstreams.attempt(&member.series, at.elapsed, outcome);
        if ejected.is_some() {
            metrics.upstreams.ejected(&member.series);
        }
    }
}

/// The target and in-flight slot of another attempt, when the attempts left and the targets
/// not yet tried allow one (the body and the budget are the caller's to check).
pub fn next_target(
    group: &Group,
    from: &Step<'_>,
    ctx: &RequestContext,
    rng: &mut Rng,
) -> Option<(usize, InFlight)> {
    if u32::from(ctx.attempts) >= group.settings().retry.max_attempts {
        return None;
    }
    group.enter(from.set, from.key, from.tried, from.now, rng).ok()
}

/// Takes a retry from the route's budget at `now`; false (counted, and logged at debug) when
/// it is spent.
pub fn spend_retry(group: &Group, now: Moment, ctx: &RequestContext, metrics: &Metrics) -> bool {
    if group.budget().try_retry(now) {
        return true;
    }
    metrics.upstreams.budget_exhausted(group.route());
    tracing::debug!(route = %group.name(), request_id = %ctx.id, "retry budget spent");
    false
}

/// The target, in-flight slot and body of another attempt, when one is allowed: attempts
/// left, another target available, the body still whole, and the retry budget not spent
/// (checked last, since taking from it counts the retry).
async fn next_attempt(
    group: &Group,
    from: &Step<'_>,
    attempt: &Attempt,
    ctx: &RequestContext,
    metrics: &Metrics,
    rng: &mut Rng,
) -> Option<(usize, InFlight, Body)> {
    let (index, slot) = next_target(group, from, ctx, rng)?;
    let body = match &attempt.replay {
        None => Body::empty(),
        // Hyper may still be finishing the previous attempt's body; wait for it as long as an
        // attempt may wait for its answer.
        Some(replay) => {
            let wait = from.previous.upstream.settings().response_header;
            Body::Replay(Box::new(replay.again(wait).await?))
        }
    };
    if !spend_retry(group, from.now, ctx, metrics) {
        return None;
    }
    Some((index, slot, body))
}

impl Attempt {
    /// The request for one attempt on `endpoint`: the prepared head with the target's URI,
    /// its `Host` (unless the route keeps the client's) and its own request rules.
    fn request(
        &self,
        endpoint: &Endpoint,
        routed: &Routed<'_>,
        ctx: &RequestContext,
        body: Body,
    ) -> Result<Request<Body>, ProxyError> {
        let route = &routed.route.config;
        let uri = endpoint.uri(route, &ctx.target, &routed.uri)?;
        let mut request = Request::new(body);
        *request.method_mut() = self.head.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = self.head.version;
        *request.headers_mut() = self.head.headers.clone();
        if !route.preserve_host {
            request.headers_mut().insert(HOST, endpoint.host.clone());
        }
        rules::apply(&endpoint.request_headers, request.headers_mut());
        Ok(request)
    }
}
