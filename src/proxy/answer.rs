//! Requests sluice answers itself instead of forwarding: `OPTIONS` and `TRACE` whose
//! `Max-Forwards` has reached 0 (RFC 9110 §7.6.2), and `GET /proxy.pac` on a forward listener
//! with `[pac]` configured.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::body::Body;
use crate::headers::max_forwards::{self, Hop};
use crate::pac::{self, PacProxy, PacRules};

/// The path browsers are pointed at for the proxy auto-configuration file.
pub const PAC_PATH: &str = "/proxy.pac";

/// Fields a reflected `TRACE` never echoes: credentials and cookies (RFC 9110 §9.3.8).
const SECRET_FIELDS: [http::HeaderName; 4] = [
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
    http::header::COOKIE,
    http::header::SET_COOKIE,
];

/// Applies `Max-Forwards` to `request` (decrementing it for forwarding) and returns sluice's
/// own answer when the value has reached 0: `OPTIONS` gets 200 with `Allow`, `TRACE` gets the
/// request reflected when `trace` is on and 405 otherwise, since a reflected request hands
/// cookies and credentials to whatever script can make the browser send it.
pub fn max_forwards<B>(request: &mut Request<B>, trace: bool) -> Option<Response<Body>> {
    // Only these two methods count down; everything else passes without a second look.
    if request.method() != Method::TRACE && request.method() != Method::OPTIONS {
        return None;
    }
    let method = request.method().clone();
    match max_forwards::apply(&method, request.headers_mut()) {
        Hop::Forward => None,
        Hop::Answer => Some(final_recipient(request, trace)),
    }
}

fn final_recipient<B>(request: &Request<B>, trace: bool) -> Response<Body> {
    let allow = HeaderValue::from_static(if trace {
        "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"
    } else {
        "GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, PATCH"
    });
    let (status, body, content_type) = match (request.method(), trace) {
        (&Method::TRACE, true) => (StatusCode::OK, reflect(request), Some("message/http")),
        (&Method::TRACE, false) => {
            let refusal = "TRACE is not answered here\n";
            (StatusCode::METHOD_NOT_ALLOWED, Bytes::from_static(refusal.as_bytes()), None)
        }
        _ => (StatusCode::OK, Bytes::new(), None),
    };
    let mut response = Response::new(Body::message(body));
    *response.status_mut() = status;
    response.headers_mut().insert(ALLOW, allow);
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    response
}

/// The request head as received, without its secrets, as a `message/http` body.
fn reflect<B>(request: &Request<B>) -> Bytes {
    let mut text =
        format!("{} {} {:?}\r\n", request.method(), request.uri(), request.version()).into_bytes();
    for (name, value) in request.headers() {
        if SECRET_FIELDS.contains(name) || value.is_sensitive() {
            continue;
        }
        text.extend_from_slice(name.as_str().as_bytes());
        text.extend_from_slice(b": ");
        text.extend_from_slice(value.as_bytes());
        text.extend_from_slice(b"\r\n");
    }
    text.extend_from_slice(b"\r\n");
    Bytes::from(text)
}

/// Whether a request with this method and target asks for the PAC file.
pub fn is_pac(method: &Method, uri: &http::Uri) -> bool {
    (method == Method::GET || method == Method::HEAD) && uri.path() == PAC_PATH
}

/// The PAC file for `rules`, served as `application/x-ns-proxy-autoconfig`. With no proxies
/// configured, the file names the address the browser fetched it from (its `Host`), for
/// HTTP and, when the listener speaks it, SOCKS5.
pub fn pac_file<B>(request: &Request<B>, rules: &PacRules, socks: bool) -> Response<Body> {
    let mut rules = rules.clone();
    if rules.proxies.is_empty()
        && let Some(host) = request.headers().get(HOST).and_then(|h| h.to_str().ok())
    {
        rules.proxies.push(PacProxy::Http(host.to_owned()));
        if socks {
            rules.proxies.push(PacProxy::Socks5(host.to_owned()));
        }
    }
    let mut response = Response::new(Body::message(pac::generate(&rules)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(pac::CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use http::header::MAX_FORWARDS;

    use super::*;

    fn request(method: Method, max_forwards: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri("http://example.com/x")
            .header(MAX_FORWARDS, max_forwards)
            .header(HOST, "example.com")
            .header(http::header::COOKIE, "session=secret")
            .header("x-trace-me", "yes")
            .body(())
            .unwrap()
    }

    #[test]
    fn zero_is_answered_here_and_other_values_counted_down() {
        let mut options = request(Method::OPTIONS, "0");
        let answer = max_forwards(&mut options, false).unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(!answer.headers()[ALLOW].to_str().unwrap().contains("TRACE"));

        let mut trace = request(Method::TRACE, "0");
        let refused = max_forwards(&mut trace, false).unwrap();
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(refused.headers().contains_key(ALLOW));

        let reflected = reflect(&request(Method::TRACE, "0"));
        let text = String::from_utf8(reflected.to_vec()).unwrap();
        assert!(text.starts_with("TRACE http://example.com/x HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("x-trace-me: yes\r\n") && !text.contains("secret"), "{text}");

        let mut onward = request(Method::OPTIONS, "5");
        assert!(max_forwards(&mut onward, false).is_none());
        assert_eq!(onward.headers()[MAX_FORWARDS], "4");
    }
}
