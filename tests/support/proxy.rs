//! Starts the real `sluice::run` in-process with a given configuration.

use std::net::SocketAddr;
use std::path::Path;

use sluice::config::source::ConfigSource;
use sluice::config::{Config, LogDestination};
use sluice::shutdown::Drained;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::within;

/// With `SLUICE_TEST_PATH=general`, every request takes the general path: CI runs the protocol
/// tests once that way and once with the HTTP/1 fast path on (the default).
fn force_path(config: &mut Config) {
    if std::env::var("SLUICE_TEST_PATH").as_deref() == Ok("general") {
        config.http1_fast_path = false;
    }
}

/// A running proxy; dropping it leaves the task running until the test runtime ends.
pub struct TestProxy {
    /// Where the proxy's first listener accepts.
    pub addr: SocketAddr,
    /// Every listener's bound address, in config order.
    pub addrs: Vec<SocketAddr>,
    /// The admin listener's address, when configured.
    pub admin: Option<SocketAddr>,
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

    /// Starts with an already-built configuration. An access log to standard output is turned
    /// off (it would bypass the test harness's output capture); tests read a log file instead.
    pub async fn with_config(mut config: Config) -> TestProxy {
        if config.access_log.destination == LogDestination::Stdout {
            config.access_log.enabled = false;
        }
        force_path(&mut config);
        TestProxy::launch(ConfigSource::Fixed(Box::new(config.clone())), config).await
    }

    /// Starts from a config file, as `sluice --config FILE` does; reloads read it again.
    pub async fn from_file(path: &Path) -> TestProxy {
        let source =
            ConfigSource::Command { file: Some(path.to_owned()), overrides: Default::default() };
        let mut config = source.load().expect("test config is valid");
        force_path(&mut config);
        TestProxy::launch(source, config).await
    }

    async fn launch(source: ConfigSource, config: Config) -> TestProxy {
        let bound = sluice::server::bind(&config).await.expect("bind");
        let addrs: Vec<_> = bound.listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let admin = bound.admin.as_ref().map(|a| a.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            sluice::run(source, config, bound, stopped).await.expect("proxy starts")
        });
        TestProxy { addr: addrs[0], addrs, admin, stop: Some(stop), task }
    }

    /// `http://admin/path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.expect("the config has an [admin] listener"))
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
