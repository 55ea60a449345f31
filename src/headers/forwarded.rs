//! Headers a proxy adds about the request it forwards: `X-Forwarded-*` and `Forwarded`
//! (RFC 7239). Its own `Via` entry is [`super::via::Via`].

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::headers::edit::{self, Edit, Edits};

use std::net::IpAddr;

/// A client's IP address, with its header form for `X-Forwarded-For` rendered once (per
/// connection) rather than once per forwarded request.
#[derive(Debug, Clone)]
pub struct ClientIp {
    /// The address.
    pub ip: IpAddr,
    /// The address as a header value.
    pub header: HeaderValue,
}

impl ClientIp {
    /// The client at `ip`.
    pub fn new(ip: IpAddr) -> ClientIp {
        // An IP address's text form is always a valid header value.
        let header = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientIp { ip, header }
    }
}

/// What a reverse-proxy hop knows about the request it forwards.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The downstream client.
    pub client: &'a ClientIp,
    /// `http` or `https`: the protocol the client used to reach sluice.
    pub proto: &'a str,
    /// The `Host` the client asked for, if any.
    pub host: Option<&'a HeaderValue>,
}

/// The forwarding headers `settings` has sluice write (or replace, or remove): the names
/// [`apply_forwarding`] owns on a routed request.
pub fn written_names(settings: &crate::config::HeaderSettings) -> Vec<HeaderName> {
    use crate::config::ForwardMode;
    [
        (&XFF, settings.x_forwarded_for),
        (&XFP, settings.x_forwarded_proto),
        (&XFH, settings.x_forwarded_host),
        (&FORWARDED, settings.forwarded),
    ]
    .into_iter()
    .filter(|(_, mode)| *mode != ForwardMode::Off)
    .map(|(name, _)| name.clone())
    .collect()
}

/// Writes `X-Forwarded-For`, `-Proto`, `-Host` and RFC 7239 `Forwarded` according to `settings`.
pub fn apply_forwarding(
    headers: &mut HeaderMap,
    hop: Hop<'_>,
    settings: &crate::config::HeaderSettings,
) {
    let forwarding = Forwarding::new(hop, settings);
    let mut edits = Edits::new();
    forwarding.edits(hop, settings, &mut edits);
    edit::apply(edits, headers);
}

static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = http::header::FORWARDED;
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// The value of a hop's `Forwarded` element, made once per request when that field is on.
#[derive(Debug)]
pub struct Forwarding {
    forwarded: Option<HeaderValue>,
}

impl Forwarding {
    /// What `hop` needs made for its forwarding fields under `settings`.
    pub fn new(hop: Hop<'_>, settings: &crate::config::HeaderSettings) -> Forwarding {
        let forwarded = (settings.forwarded != crate::config::ForwardMode::Off)
            .then(|| HeaderValue::from_str(&forwarded_element(hop)).ok())
            .flatten();
        Forwarding { forwarded }
    }

    /// The edits that write `hop`'s forwarding fields according to `settings`, in the order
    /// [`apply_forwarding`] makes them.
    pub fn edits<'a>(
        &'a self,
        hop: Hop<'a>,
        settings: &crate::config::HeaderSettings,
        out: &mut Edits<'a>,
    ) {
        use crate::config::ForwardMode;

        fn write<'a>(
            out: &mut Edits<'a>,
            name: &'a HeaderName,
            mode: ForwardMode,
            value: &'a HeaderValue,
        ) {
            match mode {
                ForwardMode::Off => {}
                ForwardMode::Replace => out.push(Edit::Set(name, value)),
                ForwardMode::Append => out.push(Edit::Append(name, value)),
            }
        }

        write(out, &XFF, settings.x_forwarded_for, &hop.client.header);
        let proto = if hop.proto == "https" { &HTTPS } else { &HTTP };
        write(out, &XFP, settings.x_forwarded_proto, proto);
        if let Some(host) = hop.host {
            write(out, &XFH, settings.x_forwarded_host, host);
        } else if settings.x_forwarded_host == ForwardMode::Replace {
            out.push(Edit::Remove(&XFH));
        }
        if let Some(value) = &self.forwarded {
            write(out, &FORWARDED, settings.forwarded, value);
        }
    }
}

/// One RFC 7239 forwarded-element: `for=...;host=...;proto=...` (§4, §5.2 and §6 for the
/// quoting of IPv6 addresses and of values that are not tokens).
fn forwarded_element(hop: Hop<'_>) -> String {
    let node = match hop.client.ip {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    let mut element = format!("for={node}");
    if let Some(host) = hop.host.and_then(|h| h.to_str().ok()) {
        element.push_str(";host=");
        element.push_str(&quoted(host));
    }
    element.push_str(";proto=");
    element.push_str(hop.proto);
    element
}

/// A value as an RFC 7230 token if it is one, otherwise as a quoted-string.
fn quoted(value: &str) -> String {
    let is_token = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if is_token {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod forwarding_tests {
    use super::*;
    use crate::config::{ForwardMode, HeaderSettings};

    fn settings(mode: ForwardMode) -> HeaderSettings {
        HeaderSettings {
            x_forwarded_for: mode,
            x_forwarded_proto: mode,
            x_forwarded_host: mode,
            forwarded: mode,
            ..HeaderSettings::default()
        }
    }

    fn incoming() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("forwarded", HeaderValue::from_static("for=10.0.0.1"));
        headers
    }

    fn all(headers: &HeaderMap, name: &str) -> Vec<String> {
        headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn append_replace_and_off() {
        let host = HeaderValue::from_static("gw.example:8080");
        let client = ClientIp::new("192.0.2.7".parse().unwrap());
        let hop = Hop { client: &client, proto: "http", host: Some(&host) };

        let mut headers = incoming();
        apply_forwarding(&mut headers, hop, &settings(ForwardMode::Append));
        assert_eq!(all(&headers, "x-forwarded-for"), ["10.0.0.1", "192.0.2.7"]);
        assert_eq!(all(&headers, "x-forwarded-proto"), ["https", "http"]);
        assert_eq!(all(&headers, "x-forwarded-host"), ["gw.example:8080"]);
        assert_eq!(
            all(&headers, "forwarded"),
            ["for=10.0.0.1", "for=192.0.2.7;host=\"gw.example:8080\";proto=http"]
        );

        let mut headers = incoming();
        apply_forwarding(&mut headers, hop, &settings(ForwardMode::Replace));
        assert_eq!(all(&headers, "x-forwarded-for"), ["192.0.2.7"]);
        assert_eq!(all(&headers, "x-forwarded-proto"), ["http"]);

        let mut headers = incoming();
        apply_forwarding(&mut headers, hop, &settings(ForwardMode::Off));
        assert_eq!(headers, incoming());
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let client = ClientIp::new("::1".parse().unwrap());
        let hop = Hop { client: &client, proto: "https", host: None };
        assert_eq!(forwarded_element(hop), "for=\"[::1]\";proto=https");
    }
}
