//! Per-request state carried down the request path.

use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use crate::observe::RequestId;
use crate::observe::metrics::RouteSeries;
use crate::server::listener::ConnectionHold;

/// The client end of a connection: its address, and its IP already in header form for
/// `X-Forwarded-For`, rendered once per connection instead of once per forwarded request.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client's IP address as a header value.
    pub ip_header: HeaderValue,
}

impl Downstream {
    /// The downstream end for a client connected from `addr`.
    pub fn new(addr: SocketAddr) -> Downstream {
        // An IP address's text form is always a valid header value.
        let ip_header = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Downstream { addr, ip_header }
    }
}

/// What is known about one request as it moves through sluice.
#[derive(Debug)]
pub struct RequestContext {
    /// The request id: logged, passed upstream on reverse routes, returned to the client.
    pub id: RequestId,
    /// The downstream peer that sent the request.
    pub peer: Downstream,
    /// `https` when the client reached sluice over TLS, else `http`.
    pub scheme: &'static str,
    /// The client connection's place under the connection limits, kept by tunnels.
    pub hold: Arc<ConnectionHold>,
    /// The route the request matched, once the router has chosen one: its name and its metric
    /// handles.
    pub route: OnceLock<Arc<RouteSeries>>,
    /// Request body bytes received so far, when the request has a body.
    pub received: Option<Arc<AtomicU64>>,
    /// The id as a header value, made once for the upstream request and the response.
    id_header: OnceLock<HeaderValue>,
}

impl RequestContext {
    /// Starts the context for request `id` just received from `downstream` over `scheme` on
    /// the connection holding `hold`; `has_body` asks for a byte count of the request body.
    pub fn new(
        id: RequestId,
        downstream: Downstream,
        scheme: &'static str,
        hold: Arc<ConnectionHold>,
        has_body: bool,
    ) -> RequestContext {
        RequestContext {
            id,
            peer: downstream,
            scheme,
            hold,
            route: OnceLock::new(),
            received: has_body.then(|| Arc::new(AtomicU64::new(0))),
            id_header: OnceLock::new(),
        }
    }

    /// The request id as a header value.
    pub fn id_header(&self) -> HeaderValue {
        self.id_header.get_or_init(|| self.id.to_header_value()).clone()
    }
}
