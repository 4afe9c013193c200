//! `~/.windflow/config`: where the CLI finds its server, token and trusted CA.
//! `WINDFLOW_ADDR`, `WINDFLOW_TOKEN` and `WINDFLOW_CA_CERT` (or `--addr`, `--token`,
//! `--ca-cert`) override it.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The address the CLI uses when nothing else is configured.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:7480";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// One or more server URLs, comma-separated; the CLI moves to the next when one is down.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    /// The CA (PEM file) the servers' HTTPS certificates must chain to; `windflow login`
    /// stores the cluster CA it was asked to trust next to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

impl CliConfig {
    /// `$HOME/.windflow/config`.
    pub fn default_path() -> anyhow::Result<PathBuf> {
        let home = std::env::var_os("HOME")
            .context("HOME is not set, so there is no ~/.windflow/config")?;
        Ok(PathBuf::from(home).join(".windflow").join("config"))
    }

    /// Reads the config file; a missing file is an empty config.
    pub fn load_default() -> anyhow::Result<Self> {
        let path = Self::default_path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid Windflow CLI config", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the config file (mode 0600, it holds a token) and returns its path.
    pub fn save_default(&self) -> anyhow::Result<PathBuf> {
        let path = Self::default_path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::server::write_secret_file(&path, &serde_json::to_string_pretty(self)?)?;
        Ok(path)
    }
}

/// The server URLs of an address setting: `host:port` gains `http://`.
pub fn server_urls(address: &str) -> Vec<String> {
    address
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            let a = a.trim_end_matches('/');
            if a.contains("://") {
                a.to_owned()
            } else {
                format!("http://{a}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_urls() {
        assert_eq!(
            server_urls("127.0.0.1:7480, https://b:1/"),
            vec!["http://127.0.0.1:7480".to_owned(), "https://b:1".to_owned()]
        );
        assert!(server_urls(" , ").is_empty());
    }
}
