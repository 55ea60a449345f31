//! Where the configuration comes from, so a reload can read it again exactly as start-up did:
//! the file (or the defaults) with the command-line overrides applied on top.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use super::{
    AdminConfig, Config, ConfigError, ConfigIssue, ListenerConfig, MAX_WORKERS, Modes, RouteConfig,
};

/// Settings given on the command line, applied over the file on every load.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`: replaces the file's listeners.
    pub listen: Vec<SocketAddr>,
    /// `--route PREFIX=URL`: added to the file's routes.
    pub routes: Vec<String>,
    /// `--forward`: with `--route`, the listeners also serve as a forward proxy.
    pub forward: bool,
    /// `--workers`.
    pub workers: Option<NonZeroUsize>,
    /// `--admin`: the admin listener's address.
    pub admin: Option<SocketAddr>,
}

/// How to (re)load the configuration.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// Built in memory (embedding, tests): a reload applies it again, which re-reads
    /// certificate files and reopens the access log.
    Fixed(Box<Config>),
    /// Read from a file, or the defaults without one, with command-line overrides on top.
    Command {
        /// The config file, if any.
        file: Option<PathBuf>,
        /// The command-line settings.
        overrides: Overrides,
    },
}

impl ConfigSource {
    /// Loads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::Fixed(config) => Ok((**config).clone()),
            ConfigSource::Command { file, overrides } => {
                let mut config = match file {
                    Some(path) => Config::load(path)?,
                    None => Config::default(),
                };
                overrides.apply(&mut config, file.is_some())?;
                Ok(config)
            }
        }
    }

    /// The file a reload reads, if any.
    pub fn file(&self) -> Option<&PathBuf> {
        match self {
            ConfigSource::Fixed(_) => None,
            ConfigSource::Command { file, .. } => file.as_ref(),
        }
    }
}

impl Overrides {
    /// Applies the command-line settings to `config` (loaded from a file when `from_file`),
    /// then checks what the file's validation could not see: duplicate prefixes across file
    /// and command line, and listeners that would be open proxies.
    pub fn apply(&self, config: &mut Config, from_file: bool) -> Result<(), ConfigError> {
        let mut issues = Vec::new();
        for spec in &self.routes {
            match RouteConfig::from_cli(spec, &config.timeouts) {
                Ok(mut route) => {
                    route.max_body_bytes = config.limits.max_request_body_bytes;
                    config.routes.push(route);
                }
                Err(message) => {
                    issues.push(ConfigIssue { line: None, key: format!("--route {spec}"), message })
                }
            }
        }
        if !issues.is_empty() {
            return Err(ConfigError::Invalid { origin: "command line".to_owned(), issues });
        }
        if self.listen.is_empty() && !from_file && !self.routes.is_empty() {
            // `sluice --route ...` alone: the default listener serves those routes.
            for listener in &mut config.listeners {
                listener.modes =
                    Modes { forward: self.forward, reverse: true, socks: self.forward };
            }
        }
        if !self.listen.is_empty() {
            // Listeners named on the command line serve the routes when there are any (from
            // the file or from --route), and stay forward proxies unless --route was given
            // without --forward.
            let forward = self.routes.is_empty() || self.forward;
            let modes = Modes { forward, reverse: !config.routes.is_empty(), socks: forward };
            let users = !config.auth.users.is_empty();
            config.listeners = self
                .listen
                .iter()
                .map(|&address| ListenerConfig::plain(address, modes, users))
                .collect();
        }
        if let Some(workers) = self.workers {
            if workers.get() > MAX_WORKERS {
                let message = format!("must be at most {MAX_WORKERS}, got {workers}");
                let issue = ConfigIssue { line: None, key: "--workers".to_owned(), message };
                return Err(ConfigError::Invalid {
                    origin: "command line".to_owned(),
                    issues: vec![issue],
                });
            }
            config.workers = Some(workers);
        }
        if let Some(address) = self.admin {
            if !address.ip().is_loopback() {
                let message = format!(
                    "{address} is not a loopback address; a remote admin listener needs \
                     `[admin] address = \"{address}\"` with `allow_remote = true` in the config file"
                );
                let issue = ConfigIssue { line: None, key: "--admin".to_owned(), message };
                return Err(ConfigError::Invalid {
                    origin: "command line".to_owned(),
                    issues: vec![issue],
                });
            }
            // The address from the command line; the rest of `[admin]` from the file.
            let history = config.admin.map_or(AdminConfig::on(address).history, |a| a.history);
            config.admin = Some(AdminConfig { address, history });
        }
        config.check_assembled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_on_the_command_line_have_the_file_bound() {
        let too_many = Overrides { workers: NonZeroUsize::new(100_000_000), ..Default::default() };
        let err = too_many.apply(&mut Config::default(), false).unwrap_err().to_string();
        assert!(err.contains("--workers: must be at most 1024, got 100000000"), "{err}");
        let most = Overrides { workers: NonZeroUsize::new(MAX_WORKERS), ..Default::default() };
        let mut config = Config::default();
        most.apply(&mut config, false).unwrap();
        assert_eq!(config.workers, NonZeroUsize::new(MAX_WORKERS));
    }
}
