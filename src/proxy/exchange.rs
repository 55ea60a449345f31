//! One proxied HTTP exchange: the steps the forward proxy and the reverse routes share once
//! they know where a request goes.
//!
//! [`prepare_head`] turns the client's request head into the upstream's (hop-by-hop fields
//! out, `Host`, `Via`, an allowed upgrade kept); [`send`] sends it through an [`Upstream`];
//! [`respond`] shapes the response the client receives, splicing the two connections when an
//! upgrade succeeds.

use std::time::Duration;

use http::header::{HOST, UPGRADE};
use http::uri::Authority;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version, request};

use crate::body::{Body, FedBody, IdleBody};
use crate::config::HeaderRules;
use crate::error::ProxyError;
use crate::headers::edit::{self, Edit, Edits};
use crate::headers::via::Via;
use crate::headers::{hop_by_hop, rules};
use crate::observe::metrics::Rejection;
use crate::proxy::context::RequestContext;
use crate::proxy::log::Reply;
use crate::proxy::state::Proxy;
use crate::proxy::upgrade::PendingUpgrade;
use crate::upstream::client::{Answered, Upstream};

/// Rewrites a client's request head for the upstream, then applies `edits` (made by
/// [`head_edits`] and the mode's own additions): the map form of what the HTTP/1 fast path does
/// while copying the head (`h1::write::fields`).
pub fn prepare_head<'a>(
    parts: &mut request::Parts,
    uri: Uri,
    upgrade: Option<&PendingUpgrade>,
    edits: impl IntoIterator<Item = Edit<'a>>,
) {
    let received = parts.version;
    parts.uri = uri;
    // Upstream connections are pooled HTTP/1.1 whatever the client spoke.
    parts.version = Version::HTTP_11;
    hop_by_hop::strip(&mut parts.headers);
    if received == Version::HTTP_2 {
        merge_cookies(&mut parts.headers);
    }
    if let Some(upgrade) = upgrade {
        upgrade.restore(parts);
    }
    edit::apply(edits, &mut parts.headers);
}

static HOST_NAME: HeaderName = HOST;

/// The edits every mode makes to a request head once hop-by-hop fields are gone: `Host` set to
/// `host`, and this proxy's `Via` entry for a request received with `received`.
pub fn head_edits<'a>(
    host: &'a HeaderValue,
    via: Option<&'a Via>,
    received: Version,
    out: &mut Edits<'a>,
) {
    out.push(Edit::Set(&HOST_NAME, host));
    if let Some(edit) = via.and_then(|via| via.edit(received)) {
        out.push(edit);
    }
}

/// The edits the respond phase makes to a response head once hop-by-hop fields are gone:
/// `rules` in order, then this proxy's `Via` entry for a response received with `received`.
pub fn response_edits<'a>(
    rules: &[&'a HeaderRules],
    via: Option<&'a Via>,
    received: Version,
    out: &mut Edits<'a>,
) {
    for rule_set in rules {
        rules::push_edits(rule_set, out);
    }
    if let Some(edit) = via.and_then(|via| via.edit(received)) {
        out.push(edit);
    }
}

/// HTTP/2 clients may split `Cookie` into several fields; HTTP/1.1 allows only one, so they
/// are joined with "; " before the request goes upstream (RFC 9113 §8.2.3).
fn merge_cookies(headers: &mut http::HeaderMap) {
    let mut cookies = headers.get_all(http::header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else { return };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(http::header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, value);
    }
}

/// The send phase: sends `request` to `target` through `upstream` and waits for the response
/// head, recording in `ctx` which upstream answered and when. An upgrade request always goes
/// over HTTP/1.1.
pub async fn send(
    upstream: &Upstream,
    request: Request<Body>,
    target: &Authority,
    upgrade: bool,
    ctx: &mut RequestContext,
) -> Result<Answered, ProxyError> {
    let answered = upstream.send(request, target, upgrade).await?;
    ctx.answered_by(answered.peer);
    Ok(answered)
}

/// The respond phase: shapes the upstream's response for the client.
///
/// Hop-by-hop fields are removed and `response_rules` applied in order. When the client asked
/// for an allowed upgrade and the upstream switched protocols, the 101 is passed on and both
/// connections are relayed; otherwise the body streams through, failing if the upstream goes
/// quiet for `body_idle` (and, to an HTTP/2 client, if the client takes nothing for
/// `timeouts.client_send`).
pub fn respond(
    answered: Answered,
    target: &Authority,
    upgrade: Option<PendingUpgrade>,
    response_rules: &[&HeaderRules],
    body_idle: Duration,
    ctx: &mut RequestContext,
    proxy: &Proxy,
) -> Result<Reply, ProxyError> {
    let mut response = answered.response;
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switched && upgrade.is_none() {
        // We never ask for an upgrade we did not keep, so this upstream broke the protocol.
        return Err(ProxyError::UnexpectedUpgrade { target: target.clone() });
    }
    let upstream_upgrade = switched.then(|| hyper::upgrade::on(&mut response));
    let (mut parts, body) = response.into_parts();
    let accepted = parts.headers.get(UPGRADE).cloned();
    hop_by_hop::strip(&mut parts.headers);
    let mut edits = Edits::new();
    response_edits(response_rules, proxy.via(), parts.version, &mut edits);
    edit::apply(edits, &mut parts.headers);
    // The status line is ours: an HTTP/1.0 origin must not downgrade the client's connection.
    parts.version = Version::default();
    match (upgrade, upstream_upgrade) {
        (Some(pending), Some(upstream_side)) => {
            let session = pending.splice(&mut parts, accepted, upstream_side, proxy, ctx);
            let response = Response::from_parts(parts, Body::empty());
            Ok(Reply { response, session: Some(session) })
        }
        _ => {
            let body = IdleBody::new(body, body_idle);
            let body = if ctx.version == Version::HTTP_2 {
                // hyper stops polling the body of a stream whose window the client keeps
                // closed; a task of its own gives up on such a client (`body::FedBody`).
                let metrics = proxy.observer.metrics.clone();
                let stalled = move || metrics.reject(Rejection::ClientSendTimeout);
                Body::Fed(FedBody::spawn(body, proxy.config.timeouts.client_send, stalled))
            } else {
                Body::Upstream(body)
            };
            Ok(Reply::plain(Response::from_parts(parts, body)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cookies_are_joined() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(http::header::COOKIE, HeaderValue::from_static("b=2"));
        merge_cookies(&mut headers);
        let all: Vec<_> = headers.get_all(http::header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2"]);
    }
}
