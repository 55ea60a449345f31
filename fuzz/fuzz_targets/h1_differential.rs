//! The fast path's HTTP/1 request parser against the general path: the same bytes go through
//! `h1::request::parse` (then `h1::chunked` for a chunked body) and through the wire guard in
//! front of hyper's HTTP/1 server, in process over an in-memory pipe. The two must give the same
//! request (method, target, version, field lines, body) or the same refusal (the status hyper
//! answers is the refusal's status; a head cut short is served by neither).
//!
//! Input: a byte for the head limit (`8 KiB * (1 + b % 4)`), a byte for the field limit
//! (`1 + b`), then what the client sends before closing its side.

#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use sluice::downstream::wire::WireGuard;
use sluice::h1::body::{BodyRelay, Plan, relay_all};
use sluice::h1::{Framing, HeadLimits, Parsed, request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the general path's service was handed: the head, and the body or its failure.
#[derive(Debug, PartialEq)]
struct Served {
    method: String,
    target: String,
    version: http::Version,
    fields: Vec<(String, Vec<u8>)>,
    body: Option<Result<Vec<u8>, ()>>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
    })
}

/// The first request hyper serves from `input` behind the wire guard, and its answer's status
/// (when it answered anything but the service's own 200).
fn general_path(
    input: &[u8],
    limits: HeadLimits,
    read_body: bool,
) -> (Option<Served>, Option<u16>) {
    runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let guard = WireGuard::new(server, limits.max_bytes, Duration::from_secs(60));
        let first: Arc<Mutex<Option<Served>>> = Arc::default();
        let seen = first.clone();
        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = request.into_parts();
                let mut served = Served {
                    method: parts.method.to_string(),
                    target: parts.uri.to_string(),
                    version: parts.version,
                    fields: parts
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                        .collect(),
                    body: None,
                };
                if read_body {
                    let collected = body.collect().await;
                    served.body = Some(collected.map(|c| c.to_bytes().to_vec()).map_err(|_| ()));
                }
                let mut slot = seen.lock().unwrap();
                if slot.is_none() {
                    *slot = Some(served);
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
            }
        });
        // The client closes its side once it has sent everything; the general path's clients
        // do not, so that EOF must not cut the request short here.
        let connection = http1::Builder::new()
            .half_close(true)
            .max_header_size(limits.max_bytes)
            .max_headers(limits.max_fields)
            .serve_connection(TokioIo::new(guard), service)
            .with_upgrades();
        let serving = tokio::spawn(connection);
        let _ = client.write_all(input).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer)).await;
        serving.abort();
        let served = first.lock().unwrap().take();
        let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
            .ok()
            .and_then(|code| code.parse().ok())
            .filter(|&code| code != 200 || served.is_none());
        (served, status)
    })
}

fuzz_target!(|data: &[u8]| {
    let [size, count, input @ ..] = data else { return };
    let limits = HeadLimits {
        max_bytes: 8192 * (1 + usize::from(size % 4)),
        max_fields: 1 + usize::from(*count),
    };
    let mut fields = Vec::new();
    let ours = request::parse(input, limits, &mut fields);
    // A request that switches protocols leaves HTTP/1 behind after its head (the fast path
    // never takes one): only the heads are compared.
    let switching = matches!(&ours, Ok(Parsed::Complete(head)) if head.wants_upgrade);
    let (theirs, status) = general_path(input, limits, !switching);
    match ours {
        Ok(Parsed::Complete(head)) => {
            let Some(served) = theirs else {
                panic!("accepted here, refused there ({status:?}): {head:?}")
            };
            assert_eq!(served.method, head.method.as_str());
            assert_eq!(served.target, head.uri.to_string());
            assert_eq!(served.version, head.version.as_http());
            if head.method == http::Method::CONNECT {
                // hyper drops a Content-Length beside Transfer-Encoding; nothing is relayed.
                return;
            }
            let fields: Vec<(String, Vec<u8>)> = head
                .fields
                .iter()
                .map(|(n, v)| (String::from_utf8_lossy(n).to_ascii_lowercase(), v.to_vec()))
                .collect();
            // hyper's map groups lines by name; compare each name's values in order.
            let grouped = |list: &[(String, Vec<u8>)]| {
                let mut map = std::collections::BTreeMap::<String, Vec<Vec<u8>>>::new();
                for (n, v) in list {
                    map.entry(n.clone()).or_default().push(v.clone());
                }
                map
            };
            assert_eq!(grouped(&fields), grouped(&served.fields));
            let Some(their_body) = served.body else { return };
            let rest = &input[head.len..];
            let plan = match head.framing {
                Framing::Empty => Plan::Empty,
                Framing::Length(n) => Plan::Length(n),
                Framing::Chunked => Plan::Unchunk,
                Framing::CloseDelimited => unreachable!("requests are never close-delimited"),
            };
            let mut relay = BodyRelay::new(plan, limits.max_bytes);
            let mut data = Vec::new();
            let our_body = relay_all(&mut relay, rest, rest.len().max(1), false, &mut data)
                .map(|_| data)
                .map_err(|_| ());
            assert_eq!(our_body, their_body, "the bodies differ");
        }
        Ok(Parsed::Partial) => {
            assert!(theirs.is_none(), "partial here, served there: {theirs:?}");
            assert_eq!(status, None, "partial here, refused there");
        }
        Err(refusal) => {
            assert!(theirs.is_none(), "refused here ({refusal:?}), served there: {theirs:?}");
            if let Some(status) = status {
                assert_eq!(status, refusal.status(), "refused here as {refusal:?}");
            }
        }
    }
});
