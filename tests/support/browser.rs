//! Headless Chromium driven over the Chrome DevTools Protocol, for the status page's tests:
//! one browser process per test, a fresh profile, one page, every wait bounded.
//!
//! Chromium comes from the Debian package `chromium`, which `tools/test` (the suite's command,
//! which CI runs) installs. A test that needs it fails, saying so, when it is not on the `PATH`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::within;

/// The flags every launch uses: headless, no sandbox (tests may run as root in containers),
/// and nothing that reaches for the network or a GPU on its own.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
];

/// A running headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    /// Uncaught exceptions, console errors and browser log errors (such as a
    /// Content-Security-Policy violation) seen on the page so far.
    pub problems: Vec<String>,
    profile: PathBuf,
}

/// The Chromium executable on the `PATH`; panics with how to install it when there is none.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "this test drives a headless Chromium, and none is on the PATH: run the suite with \
         `tools/test`, which installs it, or `apt-get install -y chromium` (Debian/Ubuntu)"
    );
}

/// `target/test-artifacts`, created if needed: where screenshots are kept after the run.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens a blank page of `width` × `height`.
    pub async fn launch(width: u32, height: u32) -> Browser {
        static LAUNCHED: AtomicUsize = AtomicUsize::new(0);
        let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "chromium-profile-{}-{}",
            std::process::id(),
            LAUNCHED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new(chromium())
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        // Chromium announces its DevTools endpoint on stderr; the rest of stderr is drained
        // in the background so the pipe never fills.
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let endpoint = within(async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                if let Some(at) = line.find("ws://") {
                    return line[at..].trim().to_owned();
                }
            }
            panic!("chromium exited without announcing its DevTools endpoint");
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let (socket, _) = within(tokio_tungstenite::connect_async(endpoint)).await.unwrap();
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            problems: Vec::new(),
            profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" })).await;
        let target = target["targetId"].clone();
        let attached = browser
            .call("Target.attachToTarget", json!({ "targetId": target, "flatten": true }))
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser.resize(width, height, false).await;
        browser
    }

    /// Sends one command (to the page once attached) and returns its result, recording the
    /// problems reported by the events that arrive meanwhile.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        within(self.socket.send(Message::text(command.to_string()))).await.unwrap();
        loop {
            let message = within(self.socket.next()).await.expect("DevTools socket open").unwrap();
            let Message::Text(text) = message else { continue };
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("DevTools {method} failed: {error}");
                }
                return message["result"].clone();
            }
            self.note(&message);
        }
    }

    /// Keeps what an event says went wrong on the page.
    fn note(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                self.problems.push(format!("exception: {}", params["exceptionDetails"]));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                self.problems.push(format!("console.error: {}", params["args"]));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.problems.push(format!("log: {}", params["entry"]["text"]));
            }
            _ => {}
        }
    }

    /// Loads `url` and waits for its load event.
    pub async fn goto(&mut self, url: &str) {
        let navigated = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(navigated.get("errorText").is_none(), "navigating to {url}: {navigated}");
        self.wait_for("document.readyState === 'complete'").await;
    }

    /// The value of a JavaScript expression on the page (promises awaited).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let params =
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let result = self.call("Runtime.evaluate", params).await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("evaluating {expression}: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true`, failing the test after the suite's bound.
    pub async fn wait_for(&mut self, expression: &str) {
        let deadline = tokio::time::Instant::now() + super::WAIT;
        while self.eval(expression).await != json!(true) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for `{expression}`; page problems: {:?}",
                self.problems
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes the viewport `width` × `height` CSS pixels, as a phone when `mobile`.
    pub async fn resize(&mut self, width: u32, height: u32, mobile: bool) {
        let params = json!({
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile
        });
        self.call("Emulation.setDeviceMetricsOverride", params).await;
    }

    /// Saves a PNG of the whole page (not only the viewport) at `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let metrics = self.call("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let clip = json!({
            "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1
        });
        let params = json!({ "format": "png", "captureBeyondViewport": true, "clip": clip });
        let shot = self.call("Page.captureScreenshot", params).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
    }

    /// Closes the browser and removes its profile.
    pub async fn close(mut self) {
        self.session.clear();
        let _ = self
            .socket
            .send(Message::text(json!({ "id": 0, "method": "Browser.close" }).to_string()))
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
