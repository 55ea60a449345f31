//! Expanding a target given by host name into one target per address, re-resolved
//! periodically (a Kubernetes headless service, a DNS round-robin name).
//!
//! Each refresh that changes the set of addresses hands the new set over; a failed or empty
//! lookup keeps the last good set (a DNS hiccup must not empty a group), and is logged once
//! per change between failing and succeeding.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::group::MAX_TARGETS;
use crate::upstream::connect::{ConnectError, StaticHosts};

/// The addresses `host:port` resolves to, static hosts first, sorted and without duplicates,
/// at most [`MAX_TARGETS`] of them (so a group's order does not depend on the resolver's).
pub async fn resolve(
    host: &str,
    port: u16,
    hosts: &StaticHosts,
) -> Result<Vec<SocketAddr>, ConnectError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs: Vec<SocketAddr> = if let Ok(ip) = bare.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else if let Some(ips) = hosts.get(&bare.trim_end_matches('.').to_ascii_lowercase()) {
        ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
    } else {
        tokio::net::lookup_host((bare, port))
            .await
            .map_err(|source| ConnectError::Dns {
                host: bare.to_owned(),
                source: std::sync::Arc::new(source),
            })?
            .collect()
    };
    addrs.sort();
    addrs.dedup();
    addrs.truncate(MAX_TARGETS);
    if addrs.is_empty() {
        return Err(ConnectError::NoAddresses { host: bare.to_owned() });
    }
    Ok(addrs)
}

/// Called with the new addresses when a refresh finds a different set.
pub type OnChange = Box<dyn Fn(&[SocketAddr]) + Send + Sync>;

/// Looks `host:port` up at once and then every `every` until `stop` is cancelled, and calls
/// `changed` with the new addresses whenever they differ from `current` (the addresses the
/// group was built with; empty when it dials the name itself).
pub fn spawn(
    host: String,
    port: u16,
    every: Duration,
    hosts: StaticHosts,
    mut current: Vec<SocketAddr>,
    changed: OnChange,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = every;
            match resolve(&host, port, &hosts).await {
                Ok(addrs) => {
                    if failing {
                        tracing::info!(host = %host, "upstream host name resolves again");
                        failing = false;
                    }
                    if addrs != current {
                        tracing::info!(
                            host = %host,
                            addresses = addrs.len(),
                            "upstream host name resolves to a new set of addresses"
                        );
                        changed(&addrs);
                        current = addrs;
                    }
                }
                Err(error) if !failing => {
                    tracing::warn!(
                        host = %host,
                        error = %error,
                        "upstream host name lookup failed: keeping the last addresses"
                    );
                    failing = true;
                }
                Err(_) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    fn hosts(entries: &[(&str, &[&str])]) -> StaticHosts {
        let map: BTreeMap<String, Vec<IpAddr>> = entries
            .iter()
            .map(|(name, ips)| {
                ((*name).to_owned(), ips.iter().map(|ip| ip.parse().unwrap()).collect())
            })
            .collect();
        Arc::new(map)
    }

    #[tokio::test]
    async fn resolve_sorts_and_deduplicates() {
        let table = hosts(&[("svc.test", &["10.0.0.3", "10.0.0.1", "10.0.0.3", "::1"])]);
        let addrs = resolve("svc.test.", 8080, &table).await.unwrap();
        let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.1:8080", "10.0.0.3:8080", "[::1]:8080"]);
        assert_eq!(resolve("[::1]", 80, &table).await.unwrap().len(), 1);
        assert_eq!(resolve("127.0.0.1", 80, &table).await.unwrap().len(), 1);
        let empty = hosts(&[("none.test", &[])]);
        assert!(matches!(
            resolve("none.test", 80, &empty).await,
            Err(ConnectError::NoAddresses { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_reports_only_changes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let stop = CancellationToken::new();
        let hosts = hosts(&[("svc.test", &["10.0.0.1", "10.0.0.2"])]);
        let first = resolve("svc.test", 80, &hosts).await.unwrap();
        let task = spawn(
            "svc.test".into(),
            80,
            Duration::from_secs(5),
            hosts,
            first[..1].to_vec(),
            Box::new(move |addrs| record.lock().unwrap().push(addrs.len())),
            stop.clone(),
        );
        // Paused time: each sleep completes as soon as every task waits.
        tokio::time::sleep(Duration::from_secs(16)).await;
        stop.cancel();
        task.await.unwrap();
        // One change (1 -> 2 addresses) at once, then the same set three times: reported once.
        assert_eq!(*seen.lock().unwrap(), [2]);
    }
}
