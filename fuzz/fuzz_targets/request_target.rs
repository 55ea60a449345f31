//! Request-target parsing (RFC 9112 §3.2): bytes -> `http::Uri` -> `forward::target::absolute`
//! and `::connect`. Neither may panic, and whatever they accept must be safe to forward.

#![no_main]

use http::{HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;
use sluice::uri::target;

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = Uri::try_from(data) else {
        return;
    };

    if let Ok((target, upstream)) = target::absolute(&uri) {
        // The upstream URI goes to the same host with the same scheme, query and port.
        assert_eq!(upstream.host(), uri.host(), "host changed: {uri} -> {upstream}");
        assert_eq!(Some(target.host()), uri.host());
        assert_eq!(upstream.scheme(), uri.scheme());
        assert_eq!(upstream.query(), uri.query(), "query changed: {uri} -> {upstream}");
        assert!(upstream.path().starts_with('/'), "path must start with '/': {upstream}");
        if let Some(port) = uri.port_u16() {
            assert_eq!(target.port, port);
        }
        // A port that was written is the port dialled: never the scheme's default instead.
        if let Some(port) = written_port(&uri).filter(|port| !port.is_empty()) {
            assert_eq!(port.parse::<u16>().ok(), Some(target.port), "port changed: {uri}");
        }
        assert_ne!(target.port, 0);
        // RFC 9110 §4.2.4: userinfo never reaches the upstream or its Host header.
        assert!(!target.authority.as_str().contains('@'), "userinfo kept: {uri}");
        assert_eq!(upstream.authority(), Some(&target.authority));
        // `forward::forward` turns the authority into the Host header.
        assert!(HeaderValue::from_str(target.authority.as_str()).is_ok());
        // The upstream URI must survive a round trip through its text form.
        let reparsed: Uri = upstream.to_string().parse().expect("upstream URI reparses");
        assert_eq!(reparsed, upstream);
    }

    if let Ok(target) = target::connect(&uri) {
        assert_ne!(target.port, 0);
        assert_eq!(Some(target.port), uri.port_u16(), "CONNECT needs an explicit port");
        assert!(!target.host().is_empty());
        // RFC 9110 §9.3.6: authority-form is host:port, with no userinfo at all.
        assert!(!uri.authority().is_some_and(|a| a.as_str().contains('@')), "userinfo: {uri}");
        assert!(HeaderValue::from_str(target.authority.as_str()).is_ok());
    }
});

/// The port text after the host (and after any userinfo and IPv6 brackets), when the authority
/// has a `:` there.
fn written_port(uri: &Uri) -> Option<&str> {
    let text = uri.authority()?.as_str();
    let host_and_port = text.rsplit_once('@').map_or(text, |(_, rest)| rest);
    let after_host = match host_and_port.rfind(']') {
        Some(bracket) => &host_and_port[bracket + 1..],
        None => host_and_port,
    };
    after_host.rsplit_once(':').map(|(_, port)| port)
}
