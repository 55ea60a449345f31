//! A real `redis-server` (Debian package `redis-server`; `tools/test` installs it) for the
//! shared-state tests: on a free loopback port, with its own directory, nothing saved, killed
//! when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::within;

/// A running Redis server.
pub struct RedisServer {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

static STARTED: AtomicUsize = AtomicUsize::new(0);

impl RedisServer {
    /// Starts a server on a free port.
    pub async fn start() -> RedisServer {
        for _ in 0..5 {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(server) = RedisServer::try_start(port).await {
                return server;
            }
        }
        panic!("redis-server did not start (run the tests with tools/test, which installs it)");
    }

    /// Starts a server on `port` (again, after [`RedisServer::stop`]); `None` if it exits
    /// at once (the port was taken).
    pub async fn try_start(port: u16) -> Option<RedisServer> {
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is missing: run the tests with tools/test, which installs it");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let ready = within(async {
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
                if ping(addr).await {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        ready.then_some(RedisServer { addr, child, dir })
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Kills the server and waits until it is gone; returns its port for a restart.
    pub async fn stop(mut self) -> u16 {
        self.child.start_kill().unwrap();
        let _ = within(self.child.wait()).await;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.addr.port()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// Waits until the key `key` exists (what sluice writes in the background, such as a
    /// provider key's rest).
    pub async fn wait_for_key(&self, key: &str) {
        let addr = self.addr;
        within(async {
            loop {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(format!("EXISTS {key}\r\n").as_bytes()).await.unwrap();
                let mut answer = [0u8; 4];
                stream.read_exact(&mut answer).await.unwrap();
                if &answer == b":1\r\n" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

/// Whether a Redis server answers `PING` at `addr`.
async fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else { return false };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut answer)).await;
    matches!(read, Ok(Ok(_))) && &answer == b"+PONG\r\n"
}
