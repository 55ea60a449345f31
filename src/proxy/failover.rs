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
use http::{Request, StatusCode};

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
    Endpoint, Group, InFlight, Moment, Rng, TargetSet, Tried, Unavailable, affinity,
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
    group.budget().record_request(now);
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
    let (mut index, mut slot) = group.enter(&set, key, &tried, now, &mut rng).map_err(|why| {
        metrics.upstreams.unavailable(group.route());
        ProxyError::NoUpstream(why)
    })?;
    loop {
        tried.add(index);
        ctx.attempts = ctx.attempts.saturating_add(1);
        let Some(member) = set.member(index) else {
            return Err(ProxyError::NoUpstream(Unavailable::NoHealthyTarget));
        };
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
                let verdict = Verdict::of_response(status, retry_after, now, &settings.outlier);
                record(group, metrics, &set, index, verdict, elapsed, now, outcome_of(status));
                let failure = AttemptFailure::Status(status);
                let next = if retry::retries(policy, &ctx.method, failure) {
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
            Err(error) => {
                let failure = match &error {
                    UpstreamError::Connect { .. }
                    | UpstreamError::Tls { .. }
                    | UpstreamError::Parent { .. } => AttemptFailure::NotSent,
                    UpstreamError::ResponseTimeout { .. } | UpstreamError::Exchange { .. } => {
                        AttemptFailure::NoResponse
                    }
                };
                (failure, ProxyError::Upstream(error))
            }
        };
        // No answer: `outcome` is the error the client gets if nothing else is tried.
        let kind = outcome.kind();
        let verdict = if kind.is_upstream() { Verdict::Failure } else { Verdict::Neutral };
        let failed = AttemptOutcome::Failed(kind.as_str());
        record(group, metrics, &set, index, verdict, elapsed, now, failed);
        drop(slot);
        // A broken or oversized request body is the client's doing: another target would
        // get the same. A target found with every connection open (`max_connections`) was
        // sent nothing, and another may have room.
        let elsewhere = kind.is_upstream() || kind == ErrorKind::UpstreamAtCapacity;
        let next = if elsewhere && retry::retries(policy, &ctx.method, failure) {
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
fn retried(set: &TargetSet, index: usize, metrics: &Metrics) {
    if let Some(member) = set.member(index) {
        member.state.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics.upstreams.retry(&member.series);
    }
}

/// Where a retry starts from: the set and key of the request, the targets it tried, the one
/// that just failed, and when.
struct Step<'a> {
    set: &'a TargetSet,
    key: Option<u64>,
    tried: &'a Tried,
    previous: &'a Endpoint,
    now: Moment,
}

/// The metric outcome of an answer with `status`.
fn outcome_of(status: StatusCode) -> AttemptOutcome {
    if status.is_server_error() { AttemptOutcome::ServerError } else { AttemptOutcome::Answered }
}

/// Records an attempt's verdict in the group (ejecting the target if it failed once too
/// often) and in the metrics.
#[allow(clippy::too_many_arguments)]
fn record(
    group: &Group,
    metrics: &Metrics,
    set: &TargetSet,
    index: usize,
    verdict: Verdict,
    elapsed: Duration,
    now: Moment,
    outcome: AttemptOutcome,
) {
    let ejected = group.report(set, index, verdict, elapsed, now);
    if let Some(member) = set.member(index) {
        metrics.upstreams.attempt(&member.series, elapsed, outcome);
        if ejected.is_some() {
            metrics.upstreams.ejected(&member.series);
        }
    }
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
    if u32::from(ctx.attempts) >= group.settings().retry.max_attempts {
        return None;
    }
    let (index, slot) = group.enter(from.set, from.key, from.tried, from.now, rng).ok()?;
    let body = match &attempt.replay {
        None => Body::empty(),
        // Hyper may still be finishing the previous attempt's body; wait for it as long as an
        // attempt may wait for its answer.
        Some(replay) => {
            let wait = from.previous.upstream.settings().response_header;
            Body::Replay(Box::new(replay.again(wait).await?))
        }
    };
    if !group.budget().try_retry(from.now) {
        metrics.upstreams.budget_exhausted(group.route());
        tracing::debug!(route = %group.name(), request_id = %ctx.id, "retry budget spent");
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
