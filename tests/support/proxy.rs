//! Starts the real `sluice::run` in-process with a given configuration.

use std::net::SocketAddr;

use sluice::config::Config;
use sluice::server::shutdown::Drained;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::within;

/// A running proxy; dropping it leaves the task running until the test runtime ends.
pub struct TestProxy {
    /// Where the proxy's first listener accepts.
    pub addr: SocketAddr,
    /// Every listener's bound address, in config order.
    pub addrs: Vec<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Drained>,
}

impl TestProxy {
    /// A forward proxy with the default configuration on 127.0.0.1:0.
    pub async fn forward() -> TestProxy {
        TestProxy::start("[[listener]]\naddress = \"127.0.0.1:0\"\n").await
    }

    /// Starts with TOML config text; listener addresses should use port 0.
    pub async fn start(toml: &str) -> TestProxy {
        let config = Config::from_toml(toml, "test.toml").expect("test config is valid");
        TestProxy::with_config(config).await
    }

    /// Starts with an already-built configuration.
    pub async fn with_config(config: Config) -> TestProxy {
        let listeners = sluice::server::bind(&config.listeners).await.expect("bind");
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            sluice::run(config, listeners, stopped).await.expect("proxy starts")
        });
        TestProxy { addr: addrs[0], addrs, stop: Some(stop), task }
    }

    /// `http://addr`, for client proxy settings.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends the shutdown signal without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) -> Drained {
        self.signal_shutdown();
        within(self.task).await.expect("run task")
    }

    /// Waits for `run` to return after [`TestProxy::signal_shutdown`].
    pub async fn finished(self) -> Drained {
        within(self.task).await.expect("run task")
    }
}
