//! WebSocket through reverse routes and through the forward proxy: the handshake with its
//! Sec-WebSocket-* fields, messages of every kind and size both ways, close codes, and
//! Upgrade protocols that are not allowed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use support::client::{http1_conn, raw_get, raw_header_values, status_of};
use support::config::{reverse_config, route};
use support::proxy::TestProxy;
use support::upstream::{Origin, WsOrigin};
use support::{payload, sha256, within};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A proxy with route `/ws` to `origin`.
async fn ws_proxy(origin: &WsOrigin, extra_toml: &str) -> TestProxy {
    TestProxy::start(&format!(
        "{extra_toml}{}",
        reverse_config(&route("/ws", &format!("http://{}", origin.addr), ""))
    ))
    .await
}

/// Connects through the proxy's `/ws` route.
async fn connect(proxy: &TestProxy, path: &str) -> Ws {
    let (ws, response) =
        within(tokio_tungstenite::connect_async(format!("ws://{}{path}", proxy.addr)))
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// The next data or control message, skipping nothing; fails on end of stream.
async fn next_message(ws: &mut Ws) -> Message {
    within(ws.next()).await.expect("the WebSocket ended").expect("WebSocket error")
}

#[tokio::test]
async fn text_binary_and_large_messages_echo_through_a_route() {
    let origin = WsOrigin::start().await;
    let proxy = ws_proxy(&origin, "").await;
    let mut ws = connect(&proxy, "/ws/chat?room=1").await;

    within(ws.send(Message::text("héllo, wörld"))).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("héllo, wörld"));

    let small = Bytes::from(payload(1000, 1));
    within(ws.send(Message::binary(small.clone()))).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::binary(small));

    let big = payload(1024 * 1024, 2);
    within(ws.send(Message::binary(big.clone()))).await.unwrap();
    match next_message(&mut ws).await {
        Message::Binary(echoed) => {
            assert_eq!(echoed.len(), big.len());
            assert_eq!(sha256(&echoed), sha256(&big));
        }
        other => panic!("expected the 1 MiB binary echo, got {other:?}"),
    }

    let handshakes = origin.handshakes();
    assert_eq!(handshakes.len(), 1);
    assert_eq!(handshakes[0].uri, "/chat?room=1");
    let headers = &handshakes[0].headers;
    assert!(headers["upgrade"].to_str().unwrap().eq_ignore_ascii_case("websocket"));
    assert!(headers.get("sec-websocket-key").is_some());
    assert_eq!(headers["sec-websocket-version"], "13");
    within(ws.close(None)).await.unwrap();
}

#[tokio::test]
async fn ping_is_answered_with_pong_through_the_route() {
    let origin = WsOrigin::start().await;
    let proxy = ws_proxy(&origin, "").await;
    let mut ws = connect(&proxy, "/ws/").await;
    within(ws.send(Message::Ping(Bytes::from_static(b"are you there")))).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::Pong(Bytes::from_static(b"are you there")));
    // Still usable afterwards.
    within(ws.send(Message::text("after ping"))).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("after ping"));
}

#[tokio::test]
async fn client_close_code_and_reason_reach_the_origin() {
    let origin = WsOrigin::start().await;
    let proxy = ws_proxy(&origin, "").await;
    let mut ws = connect(&proxy, "/ws/").await;
    let frame = CloseFrame { code: CloseCode::from(4001), reason: Utf8Bytes::from_static("bye") };
    within(ws.close(Some(frame.clone()))).await.unwrap();
    let seen = origin.next_close().await.expect("a close without a code");
    assert_eq!(seen.code, CloseCode::from(4001));
    assert_eq!(seen.reason.as_str(), "bye");
    // The origin's close reply comes back and the stream ends.
    match next_message(&mut ws).await {
        Message::Close(Some(reply)) => assert_eq!(reply.code, CloseCode::from(4001)),
        other => panic!("expected the close reply, got {other:?}"),
    }
}

#[tokio::test]
async fn origin_close_code_and_reason_reach_the_client() {
    let origin = WsOrigin::start().await;
    let proxy = ws_proxy(&origin, "").await;
    let mut ws = connect(&proxy, "/ws/").await;
    within(ws.send(Message::text("close-me"))).await.unwrap();
    match next_message(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::from(4002));
            assert_eq!(frame.reason.as_str(), "server bye");
        }
        other => panic!("expected the origin's close, got {other:?}"),
    }
}

#[tokio::test]
async fn subprotocol_chosen_by_the_origin_reaches_the_client() {
    let origin = WsOrigin::start().await;
    let proxy = ws_proxy(&origin, "").await;
    let mut request = format!("ws://{}/ws/proto", proxy.addr).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "chat.v2, chat.v1".parse().unwrap());
    let (mut ws, response) = within(tokio_tungstenite::connect_async(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    let handshake = &origin.handshakes()[0];
    assert_eq!(handshake.headers["sec-websocket-protocol"], "chat.v2, chat.v1");
    within(ws.send(Message::text("v1 talk"))).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("v1 talk"));
}

#[tokio::test]
async fn websocket_through_the_forward_proxy_in_absolute_form() {
    let origin = WsOrigin::start().await;
    let proxy = TestProxy::forward().await;
    let mut sender = http1_conn::<Empty<Bytes>>(proxy.addr).await;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = Request::get(format!("http://{}/echo", origin.addr))
        .header("host", origin.addr.to_string())
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", key)
        .body(Empty::new())
        .unwrap();
    let response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers()["sec-websocket-accept"],
        derive_accept_key(key.as_bytes()).as_str()
    );
    assert!(response.headers()["upgrade"].to_str().unwrap().eq_ignore_ascii_case("websocket"));
    let upgraded = within(hyper::upgrade::on(response)).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    within(ws.send(Message::text("through the forward proxy"))).await.unwrap();
    let echoed = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("through the forward proxy"));
    let payload_bytes = Bytes::from(payload(200_000, 8));
    within(ws.send(Message::binary(payload_bytes.clone()))).await.unwrap();
    let echoed = within(ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(payload_bytes));
    assert_eq!(origin.handshakes()[0].uri, "/echo");
}

#[tokio::test]
async fn non_websocket_upgrade_is_dropped_and_served_as_plain_http() {
    let origin = Origin::echo().await;
    let proxy = TestProxy::start(&reverse_config(&route("/h", &origin.url(""), ""))).await;
    let response = raw_get(
        proxy.addr,
        "/h/x",
        "front.test",
        "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(raw_header_values(&response, "upgrade").is_empty(), "{response}");
    let seen = origin.only_request();
    assert!(seen.headers.get("upgrade").is_none(), "{:?}", seen.headers);
    assert!(seen.headers.get("http2-settings").is_none(), "{:?}", seen.headers);
    assert!(seen.headers.get("connection").is_none(), "{:?}", seen.headers);
}

#[tokio::test]
async fn websocket_upgrade_is_dropped_when_the_route_allows_none() {
    let origin = Origin::echo().await;
    let proxy =
        TestProxy::start(&reverse_config(&route("/h", &origin.url(""), "allow_upgrades = []")))
            .await;
    let response = raw_get(
        proxy.addr,
        "/h/ws",
        "front.test",
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    )
    .await;
    assert_ne!(status_of(&response), 101, "{response}");
    let seen = origin.only_request();
    assert!(seen.headers.get("upgrade").is_none(), "{:?}", seen.headers);
}

#[tokio::test]
async fn idle_websocket_is_closed_after_websocket_idle() {
    let origin = WsOrigin::start().await;
    let proxy = ws_proxy(&origin, "[timeouts]\nwebsocket_idle = \"300ms\"\n").await;
    let mut ws = connect(&proxy, "/ws/").await;
    within(ws.send(Message::text("one"))).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("one"));
    // Now silence: the proxy must end the connection on its own.
    let started = std::time::Instant::now();
    match within(ws.next()).await {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("unexpected message while idle: {other:?}"),
    }
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(200),
        "closed before the idle timeout: {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "closed only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn websocket_over_http2_extended_connect_reaches_an_http1_upstream() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let origin = WsOrigin::start().await;
    let proxy = TestProxy::start(&format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nforward = false\nreverse = true\nh2c = true\n\
         [[route]]\nprefix = \"/ws\"\nupstream = \"http://{}\"\n",
        origin.addr
    ))
    .await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    // RFC 8441 §4: CONNECT with :protocol = websocket, :scheme and :path.
    let mut request = http::Request::connect(format!("http://{}/ws/chat", proxy.addr))
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "chat.v1")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    request.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = within(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 200, "RFC 8441 success is 200");
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v1");
    let upgraded = within(hyper::upgrade::on(&mut response)).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Client,
        None,
    )
    .await;
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().unwrap(), Message::text("over h2"));

    // The upstream got a classic HTTP/1.1 upgrade with a key sluice generated.
    let handshake = &origin.handshakes()[0];
    assert_eq!(handshake.uri, "/chat");
    assert_eq!(handshake.headers["upgrade"].to_str().unwrap().to_lowercase(), "websocket");
    assert_eq!(handshake.headers["sec-websocket-key"].len(), 24);
}
