//! Egress: how a tunnel leaves sluice for its destination. The `[[parent]]` rules, in order,
//! decide by the destination's host: straight there, or through parent proxies tried in turn
//! until one opens the tunnel ([`ParentError::blames_parent`] decides whether the next is
//! worth trying). The destination guard still judges what the client asked for: a name by
//! the denied-host patterns (before this point), an address literal by the address rules
//! here, since the parent, not sluice, resolves and connects.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use rustls::pki_types::ServerName;

use crate::config::parent::{ParentRoute, ParentRule, ParentScheme};
use crate::pac::HostMatch;
use crate::policy::destination::DestinationGuard;
use crate::upstream::connect::{ConnectError, Connector, UpstreamTcp};
use crate::upstream::parent::{
    self, Parent, ParentCredentials, ParentError, ParentProtocol, ParentTls, ParentTunnel,
};

/// Where a tunnel's bytes go.
#[derive(Debug)]
pub enum Dialed {
    /// A TCP connection to the destination itself, counted under the connector's cap.
    Direct(UpstreamTcp),
    /// A tunnel through a parent.
    Parent {
        /// The tunnel.
        tunnel: ParentTunnel,
        /// The parent's address.
        parent: SocketAddr,
    },
}

impl Dialed {
    /// The address at the other end of sluice's socket: the destination, or the parent.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Dialed::Direct(stream) => stream.get_ref().peer_addr().ok(),
            Dialed::Parent { parent, .. } => Some(*parent),
        }
    }

    /// sluice's own end of that socket (a SOCKS reply's bound address).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Dialed::Direct(stream) => stream.get_ref().local_addr().ok(),
            Dialed::Parent { .. } => None,
        }
    }
}

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// Connecting straight to the destination failed.
    #[error(transparent)]
    Direct(#[from] ConnectError),
    /// Every parent tried failed; this is the last one's error.
    #[error("no parent proxy opened the tunnel (last tried: {parent})")]
    Parent {
        /// The last parent tried.
        parent: String,
        /// What it failed with.
        #[source]
        source: ParentError,
    },
}

/// One rule at run time: what it matches, and its parents (none: direct).
#[derive(Debug)]
struct Rule {
    hosts: Vec<HostMatch>,
    parents: Option<Vec<Parent>>,
}

/// The parent rules of a configuration, ready to dial.
#[derive(Debug)]
pub struct Egress {
    rules: Vec<Rule>,
    /// Dials parents: no destination guard (a parent is chosen by the operator, and is often
    /// on a private network), the global connect timeout.
    connector: Connector,
    /// The deadline of each parent's handshake.
    handshake: Duration,
}

impl Egress {
    /// The rules of `parents`, dialled by `connector` (which must not carry a guard), with
    /// TLS to HTTPS parents by `tls` and each handshake bounded by `handshake`.
    pub fn new(
        parents: &[ParentRule],
        connector: Connector,
        tls: &Arc<rustls::ClientConfig>,
        handshake: Duration,
    ) -> Egress {
        // CONNECT is HTTP/1.1: an HTTPS parent is offered nothing else.
        let mut http1 = (**tls).clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http1 = Arc::new(http1);
        let rules = parents
            .iter()
            .map(|rule| Rule {
                hosts: rule.hosts.clone(),
                parents: match &rule.route {
                    ParentRoute::Direct => None,
                    ParentRoute::Via(parents) => {
                        Some(parents.iter().filter_map(|p| runtime_parent(p, &http1)).collect())
                    }
                },
            })
            .collect();
        Egress { rules, connector, handshake }
    }

    /// The parents for `host`, or none for a direct connection.
    pub fn parents_for(&self, host: &str) -> Option<&[Parent]> {
        let rule = self
            .rules
            .iter()
            .find(|rule| rule.hosts.is_empty() || rule.hosts.iter().any(|m| m.matches(host)))?;
        rule.parents.as_deref()
    }

    /// Opens a tunnel to `host:port`: through the parents its rule names, else with `direct`
    /// (the listener's connector, whose guard judges every resolved address).
    pub async fn dial(
        &self,
        direct: &Connector,
        guard: &DestinationGuard,
        host: &str,
        port: u16,
    ) -> Result<Dialed, EgressError> {
        let Some(parents) = self.parents_for(host) else {
            return Ok(Dialed::Direct(direct.connect(host, port).await?));
        };
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>()
            && !guard.address_allowed(ip)
        {
            return Err(ConnectError::Prohibited { addr: SocketAddr::new(ip, port) }.into());
        }
        let mut last = None;
        for parent in parents {
            match self.through(parent, host, port).await {
                Ok(dialed) => return Ok(dialed),
                Err(err) => {
                    tracing::debug!(parent = %parent.address, "parent proxy failed: {err}");
                    let blames_parent = err.blames_parent();
                    last = Some(EgressError::Parent {
                        parent: parent.address.to_string(),
                        source: err,
                    });
                    if !blames_parent {
                        break;
                    }
                }
            }
        }
        Err(last
            .unwrap_or(EgressError::Direct(ConnectError::NoAddresses { host: host.to_owned() })))
    }

    async fn through(&self, parent: &Parent, host: &str, port: u16) -> Result<Dialed, ParentError> {
        let (parent_host, parent_port) =
            (parent.address.host(), parent.address.port_u16().unwrap_or(0));
        let stream =
            self.connector.connect(parent_host, parent_port).await.map_err(ParentError::Connect)?;
        // Parents are not capped (the operator sized them); the socket goes on bare.
        let (stream, _) = stream.into_parts();
        let at = stream.peer_addr().map_err(ParentError::Io)?;
        let tunnel = parent::open(stream, parent, host, port, self.handshake).await?;
        Ok(Dialed::Parent { tunnel, parent: at })
    }
}

/// A configured parent as the handshake needs it.
fn runtime_parent(
    config: &crate::config::parent::ParentProxy,
    tls: &Arc<rustls::ClientConfig>,
) -> Option<Parent> {
    let address: Authority = config.url().split_once("://")?.1.parse().ok()?;
    let protocol = match config.scheme {
        ParentScheme::Http => ParentProtocol::Http,
        ParentScheme::Socks5 => ParentProtocol::Socks5,
        ParentScheme::Https => ParentProtocol::Https(ParentTls {
            config: tls.clone(),
            server_name: ServerName::try_from(config.host.clone()).ok()?,
        }),
    };
    let credentials = config.credentials.as_ref().map(|(username, password)| ParentCredentials {
        username: username.clone(),
        password: password.clone(),
    });
    Some(Parent { address, protocol, credentials })
}
