//! Hop-by-hop fields removed both ways (RFC 9110 §7.6.1) and Via added (RFC 9110 §7.6.3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use http::Request;
use hyper::body::Incoming;
use support::client::{raw_exchange, status_of};
use support::proxy::TestProxy;
use support::upstream::{Origin, full};

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "upgrade",
    "x-named-by-connection",
    "x-named-on-second-line",
];

#[tokio::test]
async fn origin_never_sees_hop_by_hop_request_fields() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::forward().await;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Named-By-Connection\r\n\
         Connection: x-named-on-second-line\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         Proxy-Authenticate: Basic\r\nTE: trailers\r\nUpgrade: h2c\r\n\
         X-Named-By-Connection: 1\r\nX-Named-On-Second-Line: 2\r\nX-End-To-End: kept\r\n\
         Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
        origin.url("/")
    );
    let mut bytes = request.into_bytes();
    // Close after one exchange so the raw reader sees EOF.
    bytes.extend_from_slice(
        format!("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", origin.url("/"))
            .as_bytes(),
    );
    let response = raw_exchange(proxy.addr, &bytes).await;
    assert_eq!(status_of(&response), 200);
    let seen = &origin.seen()[0];
    for name in HOP_BY_HOP {
        assert!(seen.headers.get(name).is_none(), "{name} reached the origin");
    }
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert_eq!(seen.headers.get_all("set-cookie").iter().count(), 2);
    // The pseudonym is this instance's own: `sluice-` and a per-process suffix.
    assert!(seen.headers["via"].to_str().unwrap().starts_with("1.1 sluice-"));
}

#[tokio::test]
async fn client_never_sees_hop_by_hop_response_fields() {
    let origin = Origin::start(|_request: Request<Incoming>| async move {
        let mut response = full("ok");
        let headers = response.headers_mut();
        headers.append("connection", "X-Origin-Private".parse().unwrap());
        headers.append("x-origin-private", "secret".parse().unwrap());
        headers.append("keep-alive", "timeout=5".parse().unwrap());
        headers.append("proxy-authenticate", "Basic realm=\"origin\"".parse().unwrap());
        headers.append("upgrade", "h2c".parse().unwrap());
        headers.append("set-cookie", "a=1".parse().unwrap());
        headers.append("set-cookie", "b=2".parse().unwrap());
        headers.append("via", "1.1 origin-cache".parse().unwrap());
        response
    })
    .await;
    let proxy = TestProxy::forward().await;
    let response =
        support::within(support::client::via_proxy(proxy.addr).get(origin.url("/")).send())
            .await
            .unwrap();
    let headers = response.headers();
    for name in ["x-origin-private", "keep-alive", "proxy-authenticate", "upgrade"] {
        assert!(headers.get(name).is_none(), "{name} reached the client");
    }
    assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
    let via: Vec<_> = headers.get_all("via").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(via.len(), 2);
    assert_eq!(via[0], "1.1 origin-cache");
    assert!(via[1].starts_with("1.1 sluice-"), "{via:?}");
}

#[tokio::test]
async fn via_can_be_switched_off() {
    let origin = Origin::echo().await;
    let proxy =
        TestProxy::start("[[listener]]\naddress = \"127.0.0.1:0\"\n[headers]\nvia = false\n").await;
    let response =
        support::within(support::client::via_proxy(proxy.addr).get(origin.url("/")).send())
            .await
            .unwrap();
    assert!(response.headers().get("via").is_none());
    assert!(origin.only_request().headers.get("via").is_none());
}

#[tokio::test]
async fn underscore_lookalikes_of_fields_sluice_writes_never_reach_the_origin() {
    let origin = Origin::echo().await;
    let config = support::config::reverse_config(&format!(
        "[headers.request]\nset = {{ \"x-tenant\" = \"gateway\" }}\n\n{}\
         [route.headers.request]\nset = {{ \"x-api-key\" = \"server-key\" }}\n",
        support::config::route("/api", &origin.url(""), "")
    ));
    let proxy = TestProxy::start(&config).await;
    let response = support::client::raw_get(
        proxy.addr,
        "/api/x",
        "front.test",
        "X_Api_Key: client-key\r\nX-Api_Key: client-key\r\nX_Forwarded_For: 6.6.6.6\r\n\
         X_Forwarded_Host: evil.test\r\nX_Request_Id: forged\r\nX_Tenant: other\r\n\
         X_Unrelated: kept\r\nX-Api-Key: client-dash\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = origin.only_request();
    for name in [
        "x_api_key",
        "x-api_key",
        "x_forwarded_for",
        "x_forwarded_host",
        "x_request_id",
        "x_tenant",
    ] {
        assert!(seen.headers.get(name).is_none(), "{name} reached the origin: {:?}", seen.headers);
    }
    assert_eq!(seen.headers["x-api-key"], "server-key");
    assert_eq!(seen.headers["x-tenant"], "gateway");
    assert_eq!(seen.headers["x_unrelated"], "kept", "other underscored fields pass");
    assert_ne!(seen.headers["x-forwarded-for"], "6.6.6.6");
}
