//! A minimal HTTP forward proxy to chain through: it takes absolute-form requests (RFC 9112
//! §3.2.2), checks `Proxy-Authorization` when it wants credentials, and forwards each request
//! to the origin it names. It is an [`Origin`], so what passed through it is in its `seen()`:
//! the request-targets as the parent received them and their `Proxy-Authorization`.

use base64::Engine as _;
use http::header::{PROXY_AUTHENTICATE, PROXY_AUTHORIZATION};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::upstream::{Origin, TestBody, full};

/// `Basic base64(user:password)`, as a parent expects it.
pub fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

fn answer(status: StatusCode, body: &'static str) -> Response<TestBody> {
    let mut response = full(body);
    *response.status_mut() = status;
    response
}

/// Starts a forwarding HTTP parent; with `wanted`, a request without exactly that
/// `Proxy-Authorization` is answered `407` and not forwarded.
pub async fn http_parent(wanted: Option<String>) -> Origin {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    Origin::start(move |mut request: Request<Incoming>| {
        let client = client.clone();
        let wanted = wanted.clone();
        async move {
            let given = request.headers_mut().remove(PROXY_AUTHORIZATION);
            if let Some(wanted) = wanted
                && given.as_ref().and_then(|v| v.to_str().ok()) != Some(wanted.as_str())
            {
                let mut refused = answer(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "who?");
                refused.headers_mut().insert(PROXY_AUTHENTICATE, "Basic".parse().unwrap());
                return refused;
            }
            if request.uri().scheme().is_none() {
                return answer(StatusCode::BAD_REQUEST, "not absolute-form");
            }
            match client.request(request).await {
                Ok(response) => response.map(BodyExt::boxed),
                Err(_) => answer(StatusCode::BAD_GATEWAY, "origin unreachable"),
            }
        }
    })
    .await
}
