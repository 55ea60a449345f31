//! Who may use the proxy and where it may go: Basic proxy authentication (plain, Argon2 and
//! bcrypt credentials), client access rules, CONNECT ports, denied hosts and networks, the
//! private-destination guard (DNS rebinding included), and the open-proxy refusal at startup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::Engine as _;
use http::StatusCode;
use sluice::config::Config;
use support::client::{
    assert_still_serves, connect_tunnel, forward_get, raw_exchange, raw_exchange_from,
    raw_header_values, read_response_head, status_of, via_proxy,
};
use support::config::{BOTH, listener, route};
use support::proxy::TestProxy;
use support::upstream::{Origin, tcp_echo};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REALM: &str = "sluice tests";
const CLIENT_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// A second loopback address (all of 127.0.0.0/8 is local on Linux), so one test can be a
/// refused client and an accepted one.
const CLIENT_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A reqwest client whose proxy settings carry `user`/`password` as Basic credentials.
fn via_proxy_as(proxy: SocketAddr, user: &str, password: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap().basic_auth(user, password))
        .build()
        .unwrap()
}

/// An Argon2id PHC string for `password` (fixed salt, so the test is deterministic).
fn argon2_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"fixed-test-salt!").unwrap();
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

/// A forward proxy on loopback with three users: `alice` (plain password from the environment
/// variable `ALICE_PASSWORD`, supplied by a fake environment), `argon` and `bcrypt` (hashes).
async fn authenticating_proxy() -> TestProxy {
    let text = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n\
         [auth]\nrealm = \"{REALM}\"\n\n\
         [[auth.user]]\nname = \"alice\"\npassword = \"${{ALICE_PASSWORD}}\"\n\n\
         [[auth.user]]\nname = \"argon\"\npassword_hash = \"{}\"\n\n\
         [[auth.user]]\nname = \"bcrypt\"\npassword_hash = \"{}\"\n",
        argon2_hash("argon secret"),
        bcrypt::hash("bcrypt secret", 4).unwrap(),
    );
    let env = |name: &str| (name == "ALICE_PASSWORD").then(|| "alice secret".to_owned());
    let config = Config::from_toml_with_env(&text, "auth.toml", &env).expect("valid config");
    assert!(config.listeners[0].policy.auth_required, "users configured: auth is required");
    TestProxy::with_config(config).await
}

const USERS: [(&str, &str); 3] =
    [("alice", "alice secret"), ("argon", "argon secret"), ("bcrypt", "bcrypt secret")];

/// Sends `request` on a fresh connection and returns the response head (the connection may
/// stay open; nothing after the head is read).
async fn head_of(proxy: SocketAddr, request: &str) -> String {
    let mut stream = within(TcpStream::connect(proxy)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    within(read_response_head(&mut stream)).await
}

/// An origin-form GET for a reverse route that closes the connection afterwards.
fn reverse_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n")
}

/// A CONNECT for `target` that closes the connection after a refusal.
fn connect_request(target: &str, extra: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}Connection: close\r\n\r\n")
}

/// Asserts a 407 with the configured Basic challenge.
fn assert_challenge(what: &str, response: &str) {
    assert_eq!(status_of(response), 407, "{what}: {response}");
    assert_eq!(
        raw_header_values(response, "proxy-authenticate"),
        [format!("Basic realm=\"{REALM}\"")],
        "{what}: {response}"
    );
}

#[tokio::test]
async fn right_credentials_of_every_kind_are_served_and_never_reach_the_origin() {
    let origin = Origin::echo().await;
    let proxy = authenticating_proxy().await;
    for (user, password) in USERS {
        let client = via_proxy_as(proxy.addr, user, password);
        let response =
            within(client.post(origin.url(&format!("/{user}"))).body(user).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{user}");
        assert_eq!(within(response.text()).await.unwrap(), user);
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), USERS.len());
    for request in &seen {
        assert!(
            !request.headers.contains_key("proxy-authorization"),
            "Proxy-Authorization leaked to the origin: {request:?}"
        );
    }
}

#[tokio::test]
async fn connect_with_right_credentials_opens_a_tunnel_and_never_leaks_them() {
    let origin = Origin::echo().await;
    let proxy = authenticating_proxy().await;
    for (user, password) in USERS {
        let mut stream = within(TcpStream::connect(proxy.addr)).await.unwrap();
        let target = origin.addr.to_string();
        let request = format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\n\r\n",
            basic(user, password)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = within(read_response_head(&mut stream)).await;
        assert_eq!(status_of(&head), 200, "{user}: {head}");
        // Speak HTTP to the origin through the tunnel.
        let inner =
            format!("GET /tunnel/{user} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        stream.write_all(inner.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        within(stream.read_to_end(&mut answer)).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(status_of(&answer), 200, "{user}: {answer}");
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), USERS.len());
    assert!(seen.iter().all(|s| !s.headers.contains_key("proxy-authorization")), "{seen:?}");
}

#[tokio::test]
async fn missing_wrong_or_malformed_credentials_get_407_with_the_basic_challenge() {
    let origin = Origin::echo().await;
    let proxy = authenticating_proxy().await;
    let target = origin.addr.to_string();
    let refused = [
        ("missing", String::new()),
        ("wrong password", basic("alice", "not it")),
        ("wrong argon2 password", basic("argon", "not it")),
        ("wrong bcrypt password", basic("bcrypt", "not it")),
        ("unknown user", basic("mallory", "alice secret")),
        ("another user's password", basic("argon", "bcrypt secret")),
        ("not Basic", "Bearer alice secret".to_owned()),
        ("bad base64", "Basic !!!not-base64!!!".to_owned()),
        (
            "no colon",
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice")),
        ),
        ("no token", "Basic".to_owned()),
    ];
    for (what, credentials) in &refused {
        let extra = if credentials.is_empty() {
            String::new()
        } else {
            format!("Proxy-Authorization: {credentials}\r\n")
        };
        let absolute = format!(
            "GET http://{target}/{} HTTP/1.1\r\nHost: {target}\r\n{extra}Connection: close\r\n\r\n",
            what.replace(' ', "-")
        );
        assert_challenge(&format!("absolute-form, {what}"), &head_of(proxy.addr, &absolute).await);
        let connect = connect_request(&target, &extra);
        assert_challenge(&format!("CONNECT, {what}"), &head_of(proxy.addr, &connect).await);
    }
    // reqwest's own proxy credentials, wrong.
    let response = within(via_proxy_as(proxy.addr, "alice", "wrong").get(origin.url("/r")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(response.headers()["proxy-authenticate"], format!("Basic realm=\"{REALM}\""));
    assert!(origin.seen().is_empty(), "a refused request reached the origin: {:?}", origin.seen());
    assert_eq!(origin.connections(), 0, "a refused CONNECT reached the origin");

    // The proxy still serves a client with the right credentials.
    let response =
        within(via_proxy_as(proxy.addr, "alice", "alice secret").get(origin.url("/after")).send())
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(origin.only_request().uri, "/after");
}

/// A listener serving both modes, with `/api` routed to `origin`, and `access` as the
/// `[access]` table body.
fn both_modes_with_access(origin: &Origin, access: &str) -> String {
    format!("{}[access]\n{access}\n\n{}", listener(BOTH, ""), route("/api", &origin.url(""), ""))
}

/// Asserts that a client at `client` is refused with 403 in forward, CONNECT and reverse mode.
async fn assert_client_refused(proxy: &TestProxy, origin: &Origin, client: IpAddr) {
    let forward =
        raw_exchange_from(client, proxy.addr, forward_get(origin.addr, "/f").as_bytes()).await;
    assert_eq!(status_of(&forward), 403, "forward from {client}: {forward}");
    let reverse = raw_exchange_from(client, proxy.addr, reverse_get("/api/r").as_bytes()).await;
    assert_eq!(status_of(&reverse), 403, "reverse from {client}: {reverse}");
    let connect = raw_exchange_from(
        client,
        proxy.addr,
        connect_request(&origin.addr.to_string(), "").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&connect), 403, "CONNECT from {client}: {connect}");
}

/// Asserts that a client at `client` is served in forward and reverse mode; two requests
/// reach `origin`.
async fn assert_client_served(proxy: &TestProxy, origin: &Origin, client: IpAddr) {
    let before = origin.seen().len();
    let forward =
        raw_exchange_from(client, proxy.addr, forward_get(origin.addr, "/f").as_bytes()).await;
    assert_eq!(status_of(&forward), 200, "forward from {client}: {forward}");
    let reverse = raw_exchange_from(client, proxy.addr, reverse_get("/api/r").as_bytes()).await;
    assert_eq!(status_of(&reverse), 200, "reverse from {client}: {reverse}");
    assert_eq!(origin.seen().len(), before + 2);
}

#[tokio::test]
async fn client_outside_the_allow_list_gets_403_in_every_mode() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&both_modes_with_access(
        &origin,
        "allow = [\"10.0.0.0/8\", \"127.0.0.2/32\"]",
    ))
    .await;
    assert_client_refused(&proxy, &origin, CLIENT_A).await;
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    assert_eq!(origin.connections(), 0);
    // An allowed client on the same proxy is served.
    assert_client_served(&proxy, &origin, CLIENT_B).await;
}

#[tokio::test]
async fn allow_list_of_only_other_networks_refuses_loopback_clients() {
    let origin = Origin::echo().await;
    let proxy =
        TestProxy::start(&both_modes_with_access(&origin, "allow = [\"10.0.0.0/8\"]")).await;
    assert_client_refused(&proxy, &origin, CLIENT_A).await;
    // Still answering (not hung, not crashed): the same refusal again.
    assert_client_refused(&proxy, &origin, CLIENT_A).await;
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    assert_eq!(origin.connections(), 0);
}

#[tokio::test]
async fn denied_client_gets_403_in_every_mode() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&both_modes_with_access(&origin, "deny = [\"127.0.0.1\"]")).await;
    assert_client_refused(&proxy, &origin, CLIENT_A).await;
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
    assert_eq!(origin.connections(), 0);
    // A client not denied is served.
    assert_client_served(&proxy, &origin, CLIENT_B).await;
}

#[tokio::test]
async fn allow_list_containing_loopback_serves_it_and_deny_still_wins() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&both_modes_with_access(
        &origin,
        "allow = [\"10.0.0.0/8\", \"127.0.0.0/8\"]\ndeny = [\"127.0.0.2\"]",
    ))
    .await;
    assert_client_served(&proxy, &origin, CLIENT_A).await;
    // Deny is checked before allow.
    assert_client_refused(&proxy, &origin, CLIENT_B).await;
    assert_eq!(origin.seen().len(), 2, "the refused client reached the origin");
}

#[tokio::test]
async fn connect_to_a_port_not_listed_is_403_and_a_listed_port_is_tunnelled() {
    let refused = Origin::echo().await;
    let allowed = tcp_echo().await;
    let proxy = TestProxy::start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nconnect_ports = [443, {}]\n",
        allowed.port()
    ))
    .await;
    let response = support::client::raw_exchange(
        proxy.addr,
        connect_request(&refused.addr.to_string(), "").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 403, "{response}");
    assert!(
        response.contains(&format!("port {}", refused.addr.port())),
        "names the port: {response}"
    );
    assert_eq!(refused.connections(), 0, "the refused CONNECT reached the origin");

    let mut tunnel = connect_tunnel(proxy.addr, &allowed.to_string()).await;
    tunnel.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    within(tunnel.read_exact(&mut pong)).await.unwrap();
    assert_eq!(&pong, b"ping");
}

#[tokio::test]
async fn denied_host_patterns_are_403_before_any_connection() {
    let origin = Origin::echo().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n\
         [destinations]\ndeny_hosts = [\"*.internal.test\", \"metadata.test\"]\n\n\
         [dns.hosts]\n\"api.internal.test\" = [\"127.0.0.1\"]\n\
         \"deep.a.internal.test\" = [\"127.0.0.1\"]\n\"metadata.test\" = [\"127.0.0.1\"]\n\
         \"public.test\" = [\"127.0.0.1\"]\n",
    )
    .await;
    let client = via_proxy(proxy.addr);
    for host in ["api.internal.test", "deep.a.internal.test", "API.Internal.Test", "metadata.test"]
    {
        let response =
            within(client.get(format!("http://{host}:{port}/denied")).send()).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{host}");
        let response = head_of(proxy.addr, &connect_request(&format!("{host}:{port}"), "")).await;
        assert_eq!(status_of(&response), 403, "CONNECT {host}: {response}");
    }
    assert_eq!(origin.connections(), 0, "a denied host was connected to");
    // The same static DNS mapping for a host not denied works, so the refusals were the rule.
    let response =
        within(client.get(format!("http://public.test:{port}/ok")).send()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(origin.only_request().uri, "/ok");
}

fn assert_ip_prohibited(what: &str, status: u16, proxy_status: &[String]) {
    assert_eq!(status, 403, "{what}");
    assert!(
        proxy_status.iter().any(|value| value.contains("error=destination_ip_prohibited")),
        "{what}: Proxy-Status {proxy_status:?}"
    );
}

#[tokio::test]
async fn denied_networks_are_403_with_destination_ip_prohibited() {
    let origin = Origin::echo().await;
    let port = origin.addr.port();
    let proxy = TestProxy::start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nforward = true\nreverse = true\n\n\
         [destinations]\ndeny_networks = [\"127.0.0.0/8\"]\n\n\
         [dns.hosts]\n\"named.test\" = [\"127.0.0.1\"]\n\n{}",
        route("/api", &origin.url(""), "")
    ))
    .await;
    for target in [format!("127.0.0.1:{port}"), format!("named.test:{port}")] {
        let response = support::client::raw_exchange(
            proxy.addr,
            format!(
                "GET http://{target}/x HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_ip_prohibited(
            &format!("GET {target}"),
            status_of(&response),
            &raw_header_values(&response, "proxy-status"),
        );
        let response = head_of(proxy.addr, &connect_request(&target, "")).await;
        assert_ip_prohibited(
            &format!("CONNECT {target}"),
            status_of(&response),
            &raw_header_values(&response, "proxy-status"),
        );
    }
    assert_eq!(origin.connections(), 0, "a denied network was connected to");
    assert_route_still_serves(&proxy, &origin).await;
}

/// The destination rules are for the forward proxy only: the operator's own route to the same
/// loopback origin still serves, so the proxy is up and the refusals were the rules.
async fn assert_route_still_serves(proxy: &TestProxy, origin: &Origin) {
    let response =
        support::client::raw_exchange(proxy.addr, reverse_get("/api/routed").as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(origin.only_request().uri, "/routed");
}

#[tokio::test]
async fn denied_networks_refuse_only_the_listed_addresses() {
    let origin = Origin::echo().await;
    let port = origin.addr.port();
    // `blocked.test` resolves (statically) into the denied network; 127.0.0.1 is not in it.
    let proxy = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\n\
         [destinations]\ndeny_networks = [\"127.0.0.2/32\"]\n\n\
         [dns.hosts]\n\"blocked.test\" = [\"127.0.0.2\"]\n",
    )
    .await;
    let response = within(via_proxy(proxy.addr).get(format!("http://blocked.test:{port}/")).send())
        .await
        .unwrap();
    let proxy_status: Vec<String> = response
        .headers()
        .get_all("proxy-status")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_ip_prohibited("blocked.test", response.status().as_u16(), &proxy_status);
    assert_still_serves(proxy.addr).await;
}

/// The guarded requests: absolute-form to an IP literal, a name that statically resolves to
/// loopback (DNS rebinding) and `localhost`; CONNECT to the rebinding name and the literal.
async fn guarded_requests(proxy: &TestProxy, port: u16) -> Vec<(String, u16, Vec<String>)> {
    let mut outcomes = Vec::new();
    for host in ["127.0.0.1", "rebind.test", "localhost"] {
        let target = format!("{host}:{port}");
        let response = support::client::raw_exchange(
            proxy.addr,
            format!(
                "GET http://{target}/guarded HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        outcomes.push((
            format!("GET http://{target}/"),
            status_of(&response),
            raw_header_values(&response, "proxy-status"),
        ));
    }
    for host in ["rebind.test", "127.0.0.1"] {
        let target = format!("{host}:{port}");
        let response = head_of(proxy.addr, &connect_request(&target, "")).await;
        outcomes.push((
            format!("CONNECT {target}"),
            status_of(&response),
            raw_header_values(&response, "proxy-status"),
        ));
    }
    outcomes
}

const REBIND_DNS: &str = "[dns.hosts]\n\"rebind.test\" = [\"127.0.0.1\"]\n";

#[tokio::test]
async fn private_destination_guard_refuses_loopback_even_behind_a_name() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nforward = true\nreverse = true\n\
         allow_private_destinations = false\n\n{REBIND_DNS}\n{}",
        route("/api", &origin.url(""), "")
    ))
    .await;
    for (what, status, proxy_status) in guarded_requests(&proxy, origin.addr.port()).await {
        assert_ip_prohibited(&what, status, &proxy_status);
    }
    assert_eq!(origin.connections(), 0, "the guard let a connection through");
    assert!(origin.seen().is_empty());
    assert_route_still_serves(&proxy, &origin).await;
}

#[tokio::test]
async fn loopback_listener_allows_private_destinations_by_default() {
    let origin = Origin::echo().await;
    let proxy =
        TestProxy::start(&format!("[[listener]]\naddress = \"127.0.0.1:0\"\n\n{REBIND_DNS}")).await;
    for (what, status, _) in guarded_requests(&proxy, origin.addr.port()).await {
        assert_eq!(status, 200, "{what}");
    }
    assert_eq!(origin.seen().len(), 3, "the three absolute-form requests arrived");
}

/// The host's own addresses outside the private ranges (a public or documentation address on
/// an interface) reach the host's services as loopback does: a guarded listener refuses them.
/// On a host whose interfaces all have private addresses there is nothing beyond the private
/// ranges to check, and the test says so.
#[tokio::test]
async fn the_hosts_own_public_addresses_are_refused_like_private_ones() {
    use sluice::policy::destination::{is_private, own_addresses};
    let public: Vec<IpAddr> =
        own_addresses().iter().copied().filter(|ip| !is_private(*ip)).collect();
    if public.is_empty() {
        eprintln!("this host has no address outside the private ranges; nothing more to check");
        return;
    }
    // An origin on every interface, counting the connections it accepts.
    let listener = tokio::net::TcpListener::bind("[::]:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted, mut accepts) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = accepted.send(());
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
        }
    });
    let guarded = TestProxy::start(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nallow_private_destinations = false\n",
    )
    .await;
    let trusted = TestProxy::forward().await;
    for ip in public {
        let target = SocketAddr::new(ip, port);
        let request =
            format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        // Reachable: a trusted listener gets there.
        let response = raw_exchange(trusted.addr, request.as_bytes()).await;
        assert_eq!(status_of(&response), 204, "{target} is reachable: {response}");
        within(accepts.recv()).await.unwrap();
        // Refused on a guarded one, before any connection.
        let response = raw_exchange(guarded.addr, request.as_bytes()).await;
        let proxy_status = raw_header_values(&response, "proxy-status");
        assert_ip_prohibited(&target.to_string(), status_of(&response), &proxy_status);
        let tunnel = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let response = raw_exchange(guarded.addr, tunnel.as_bytes()).await;
        assert_eq!(status_of(&response), 403, "CONNECT {target}: {response}");
    }
    assert!(accepts.try_recv().is_err(), "a guarded request reached the host's own address");
}

fn exposed(rest: &str) -> Result<Config, String> {
    Config::from_toml(&format!("[[listener]]\naddress = \"0.0.0.0:0\"\n{rest}"), "open.toml")
        .map_err(|err| err.to_string())
}

#[test]
fn exposed_forward_listener_without_auth_or_allow_list_is_refused_at_load() {
    let err = exposed("").expect_err("an open proxy must be refused");
    assert!(err.contains("open = true"), "{err}");
    assert!(err.contains("listener[0]"), "names the listener: {err}");
    // Any one of the three ways out is accepted.
    exposed("open = true\n").expect("explicitly open");
    exposed("\n[auth]\n[[auth.user]]\nname = \"alice\"\npassword = \"secret\"\n")
        .expect("authenticated");
    exposed("\n[access]\nallow = [\"10.0.0.0/8\"]\n").expect("client allow list");
    // A reverse-only listener is not a forward proxy at all.
    exposed("forward = false\nreverse = true\n").expect("reverse-only listener");
}

#[test]
fn exposed_listener_gets_hardened_defaults_and_loopback_stays_trusted() {
    let config = exposed("open = true\n").unwrap();
    let policy = &config.listeners[0].policy;
    assert_eq!(policy.connect_ports, [443]);
    assert!(!policy.allow_private_destinations);
    assert!(!policy.auth_required);

    let config =
        exposed("\n[auth]\n[[auth.user]]\nname = \"alice\"\npassword = \"secret\"\n").unwrap();
    assert!(config.listeners[0].policy.auth_required);

    let local =
        Config::from_toml("[[listener]]\naddress = \"127.0.0.1:0\"\n", "local.toml").unwrap();
    let policy = &local.listeners[0].policy;
    assert!(policy.connect_ports.is_empty(), "any port on loopback: {policy:?}");
    assert!(policy.allow_private_destinations);
}

#[tokio::test]
async fn binary_refuses_to_start_an_open_proxy_from_the_command_line() {
    let child = support::process::command("info").args(["--listen", "0.0.0.0:0"]).spawn().unwrap();
    // If it started serving instead, this wait fails (and the child is killed on drop).
    let out = within(child.wait_with_output()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an open proxy started: {stderr}");
    assert!(stderr.contains("open = true"), "{stderr}");
    assert!(!stderr.contains("listening"), "nothing may be bound: {stderr}");
}
