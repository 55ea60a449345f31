//! The kinds of traffic sluice logs and counts, a fixed set used as a log field and a metric
//! label.

/// What kind of traffic an event describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// An absolute-form request through the forward proxy.
    Forward,
    /// A CONNECT tunnel.
    Tunnel,
    /// An origin-form request for a route.
    Reverse,
    /// An upgraded connection (WebSocket), through either mode.
    WebSocket,
    /// A SOCKS tunnel.
    Socks,
}

impl Mode {
    /// Name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Forward => "forward",
            Mode::Tunnel => "tunnel",
            Mode::Reverse => "reverse",
            Mode::WebSocket => "websocket",
            Mode::Socks => "socks",
        }
    }
}
