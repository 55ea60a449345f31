//! Sending a request again when the upstream closed the reused connection it went out on.
//!
//! An upstream closes a keep-alive connection that stayed idle for its own timeout (5 s for
//! Node.js, 75 s for nginx). A request written on that connection just as it closes gets no
//! response: the connection ends (EOF or a reset) before a response head arrives. That is the
//! keep-alive race, and RFC 9112 §9.3.1 expects a client to recover from it: RFC 9110 §9.2.2
//! lets an idempotent request be repeated automatically after such a failure. A request that
//! was never written is sent again by both pools already (hyper hands it back); this module
//! decides about one that was written, as nginx and HAProxy do. It goes out once more when
//!
//! - its method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), and it is not an
//!   upgrade;
//! - its body is empty, or one sluice holds whole, so it can be sent again as it was
//!   ([`Replay::of`]); a streamed request body is gone once written;
//! - the connection was reused: it existed before the request set off (a failure on a
//!   connection opened for the request says something about the upstream, not the race);
//! - the connection closed before a response head was complete ([`connection_closed`]): not
//!   a timeout, not a malformed response.
//!
//! It is sent again once, on a new connection by a route's own pool; hyper-util's client
//! takes whichever connection its pool offers next (the closed one is gone from it).

use std::error::Error;
use std::io;

use http::{Extensions, Method, Request};
use http_body::Body as _;
use tokio::time::Instant;

use crate::body::Body;
use crate::upstream::connect::DialedAt;

/// A copy of a request's head and body, to send it again.
#[derive(Debug)]
pub struct Replay(Request<Body>);

impl Replay {
    /// A copy of `request` when it may be sent again after losing the race: an idempotent
    /// method and an empty body, or a complete one sluice wrote itself. `None` otherwise.
    pub fn of(request: &Request<Body>) -> Option<Replay> {
        if !idempotent(request.method()) {
            return None;
        }
        let body = match request.body() {
            Body::Message(whole) => Body::Message(whole.clone()),
            // A client request without a body, or with `Content-Length: 0`.
            other if other.is_end_stream() => Body::Empty,
            _ => return None,
        };
        let mut copy = Request::new(body);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(Replay(copy))
    }

    /// The request to send again.
    pub fn into_request(self) -> Request<Body> {
        self.0
    }
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2).
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether an exchange failed because the connection closed before a complete response head
/// arrived: hyper's "connection closed before message completed", or the socket reset,
/// aborted or closed under a write. A timeout, a malformed response or a failure to connect
/// is not that.
pub fn connection_closed(err: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(hyper) = current.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() {
                return true;
            }
            if hyper.is_parse() || hyper.is_timeout() || hyper.is_user() {
                return false;
            }
        }
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            );
        }
        cause = current.source();
    }
    false
}

/// Whether an error of hyper-util's client came from a connection that was opened before
/// `started`, when the request set off: one the request took from the pool.
pub fn reused_before(err: &(dyn Error + 'static), started: Instant) -> bool {
    let Some(client) = err.downcast_ref::<hyper_util::client::legacy::Error>() else {
        return false;
    };
    let Some(connected) = client.connect_info() else {
        return false;
    };
    let mut extras = Extensions::new();
    connected.get_extras(&mut extras);
    extras.get::<DialedAt>().is_some_and(|dialed| dialed.0 < started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_requests_with_a_replayable_body_are_copied() {
        let cases: &[(Method, Option<&'static str>, bool)] = &[
            (Method::GET, None, true),
            (Method::HEAD, None, true),
            (Method::DELETE, None, true),
            (Method::PUT, Some("whole"), true),
            (Method::OPTIONS, None, true),
            (Method::POST, None, false),
            (Method::PATCH, Some("x"), false),
            (Method::CONNECT, None, false),
        ];
        for (method, body, copied) in cases {
            let body = body.map_or(Body::Empty, Body::message);
            let mut request = Request::new(body);
            *request.method_mut() = method.clone();
            request.headers_mut().insert("x-a", "1".parse().unwrap());
            let replay = Replay::of(&request);
            assert_eq!(replay.is_some(), *copied, "{method}");
            if let Some(replay) = replay {
                let again = replay.into_request();
                assert_eq!(again.method(), method);
                assert_eq!(again.headers()["x-a"], "1");
            }
        }
    }

    #[test]
    fn closed_connections_are_told_from_other_failures() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(connection_closed(&reset));
        let pipe = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(connection_closed(&pipe));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(!connection_closed(&refused));
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert!(!connection_closed(&timeout));
        let other = std::fmt::Error;
        assert!(!connection_closed(&other));
    }
}
