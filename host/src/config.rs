//! The server's own configuration file (`rapport serve --config FILE`), TOML.
//!
//! Unknown fields are errors, reported with file, line and field, because a
//! misspelt setting silently falling back to its default is the worst kind of
//! configuration bug.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// `[delivery]`: this node's outbox workers (see `delivery.rs`). Several
/// nodes on one PostgreSQL share the outbox; each claims messages with a
/// lease, so any number of nodes may run workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Run delivery workers on this node. Default true; false leaves
    /// delivery to other nodes (messages are still accepted and stored).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Concurrent delivery workers. Default 2.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How long a claimed message is reserved for this node, in ms. A node
    /// that dies mid-delivery holds its messages this long before another
    /// node retries them; a delivery that may take longer than this could be
    /// attempted twice (the connector gets the same message id both times).
    /// Default 30000.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How often an idle worker looks for due messages, in ms. Default 200.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn yes() -> bool {
    true
}
fn default_workers() -> usize {
    2
}
fn default_lease_ms() -> u64 {
    30_000
}
fn default_poll_ms() -> u64 {
    200
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            enabled: true,
            workers: default_workers(),
            lease_ms: default_lease_ms(),
            poll_ms: default_poll_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (default, embedded) or `postgres://...`.
    #[serde(default = "default_db_url")]
    pub url: String,
}

/// `[plugins]`: where the plugin manifest is. Relative paths resolve against
/// the config file's directory (see [`Config::load`]), so a config and its
/// manifest can be moved together.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// The plugin manifest (TOML); no plugins run when unset.
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    /// Where compiled components are cached between restarts.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// How often this node drains the rescore queue (customers with new
    /// interactions), in milliseconds; 0 turns the worker off on this node
    /// (another node, or batch jobs, keep scores fresh). Default 1000.
    #[serde(default)]
    pub rescore_interval_ms: Option<u64>,
    /// The most linear memory any plugin may be granted (`memory_mb` in the
    /// manifest), in MiB; the engine sizes its instance pool slots by it.
    /// Default 256. Population fits over large tenants need more (rfm on
    /// 1,000,000 customers: about 300 MiB; churn-bgnbd about 400 MiB).
    #[serde(default)]
    pub max_memory_mb: Option<u32>,
    /// Plugin instances (calls in flight plus batch sessions) all tenants
    /// together may hold on this node. Default 240, below the engine's pool
    /// of 256 (the rest is kept for loading plugins).
    #[serde(default)]
    pub max_concurrent_calls: Option<u32>,
    /// Plugin instances one tenant may hold, all its plugins together. A
    /// call beyond it waits up to its plugin's `timeout_ms`, then fails with
    /// `plugin_busy` (HTTP 429) for that tenant only. Default 4.
    #[serde(default)]
    pub max_concurrent_calls_per_tenant: Option<u32>,
    /// Plugin instances one tenant may hold of one plugin. Default 2.
    #[serde(default)]
    pub max_concurrent_calls_per_plugin: Option<u32>,
    /// A TOML file of `name = "value"` secrets that plugin configs reference
    /// as `{"secret": "file:name"}` (see `manifest::config_schema`). Read
    /// when a plugin is called, so a rotated secret applies at once; keep it
    /// readable by the server only.
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// Guests that may run at once, all tenants together; the CPU they get
    /// passes round-robin between tenants every epoch tick. Default: one
    /// less than the cores (at least 1), leaving a core to request handling.
    #[serde(default)]
    pub guest_run_slots: Option<u32>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_db_url() -> String {
    "sqlite://rapport.db".to_string()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: default_db_url() }
    }
}

/// A configuration file that could not be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Line and column (1-based) of a byte offset, for error messages.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// Parses TOML into `T`, turning errors into `file:line:column: message`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |span| line_col(text, span.start));
        ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

impl Config {
    /// Reads a config file; relative `[plugins]` paths resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = parse_toml(path, &text)?;
        if let Some(dir) = path.parent() {
            let resolve = |p: &mut Option<PathBuf>| {
                if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                    *p = dir.join(&*p);
                }
            };
            resolve(&mut config.plugins.manifest);
            resolve(&mut config.plugins.cache_dir);
            resolve(&mut config.plugins.secrets_file);
        }
        if config.plugins.guest_run_slots == Some(0) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "[plugins]: guest_run_slots must be at least 1".into(),
            });
        }
        let runtime = crate::server::runtime_config(&config);
        runtime
            .admission()
            .check(runtime.max_instances)
            .map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: format!("[plugins]: {message}"),
            })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[database]\nurl = \"sqlite://x.db\"\npool = 3\n";
        let err = parse_toml::<Config>(Path::new("rapport.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("rapport.toml:6:1:"), "{err}");
        assert!(err.contains("pool"), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let config = parse_toml::<Config>(Path::new("x.toml"), "").unwrap();
        assert_eq!(config.database.url, "sqlite://rapport.db");
        assert!(config.delivery.enabled);
        assert_eq!((config.delivery.workers, config.delivery.lease_ms), (2, 30_000));
    }
}
