//! The daemon's TOML configuration: catalog, HTTP server, state store and policy directory.
//!
//! Every key can be overridden by an environment variable `ICEMAINT__SECTION__KEY` (for example
//! `ICEMAINT__CATALOG__URI`, `ICEMAINT__SERVER__SHUTDOWN_GRACE_SECONDS`); a single `_` in the key
//! part stands for `-`. Catalog properties are `ICEMAINT__CATALOG__PROPERTIES__<key>`, where the key
//! is taken as written when it contains `.` or `-` (Kubernetes allows such names) and lowercased
//! otherwise, so `ICEMAINT__CATALOG__PROPERTIES__TOKEN` sets `token`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors reading or validating the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// Which catalog implementation holds the watched tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogType {
    Rest,
    Sql,
}

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Catalog property keys whose values are credentials: never logged or returned by the API.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "token"
        || k == "credential"
        || k.contains("secret")
        || k.contains("password")
        || k.contains("session-token")
        || k == "header.authorization"
}

/// `[catalog]`. `Debug` masks credentials (see [`is_secret_property`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    #[serde(rename = "type")]
    pub kind: CatalogType,
    /// REST: the catalog's base URI. SQL: `sqlite:///path/catalog.db` or `postgres://...`.
    pub uri: String,
    /// SQL catalog name (`iceberg_tables.catalog_name`); PyIceberg's default is `default`.
    #[serde(default = "default_catalog_name")]
    pub name: String,
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Passed to the catalog and FileIO: `token`, `credential`, `oauth2-server-uri`, `header.*`,
    /// `s3.endpoint`, `s3.path-style-access`, ...
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogConfig")
            .field("kind", &self.kind)
            .field("uri", &crate::store::redact_url(&self.uri))
            .field("name", &self.name)
            .field("warehouse", &self.warehouse)
            .field("properties", &self.redacted_properties())
            .finish()
    }
}

impl CatalogConfig {
    /// The properties with credentials masked, for logs and API output.
    pub fn redacted_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_property(k) {
                    "***".to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

fn default_catalog_name() -> String {
    "default".to_string()
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// When set, mutating API endpoints require `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// How long a shutdown waits for in-flight jobs (commits are never cut off).
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    /// How often readiness checks (catalog, store) and table gauges are refreshed.
    #[serde(default = "default_refresh")]
    pub refresh_interval_seconds: u64,
    /// How long a job's table lease lasts between renewals (at least 3).
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
}

fn default_listen() -> String {
    "127.0.0.1:9090".to_string()
}
fn default_grace() -> u64 {
    30
}
fn default_refresh() -> u64 {
    15
}
fn default_lease() -> u64 {
    60
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token: None,
            shutdown_grace_seconds: default_grace(),
            refresh_interval_seconds: default_refresh(),
            lease_seconds: default_lease(),
        }
    }
}

/// `[store]`. `Debug` masks a database password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://icemaint-state.db` (created when missing) or `postgres://...`.
    #[serde(default = "default_store_url")]
    pub url: String,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &crate::store::redact_url(&self.url))
            .finish()
    }
}

fn default_store_url() -> String {
    "sqlite://icemaint-state.db".to_string()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: default_store_url(),
        }
    }
}

/// `[policies]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// Directory of `*.toml` policy files, relative to the config file.
    #[serde(default = "default_policies_dir")]
    pub dir: PathBuf,
}

fn default_policies_dir() -> PathBuf {
    PathBuf::from("policies")
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        Self {
            dir: default_policies_dir(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub catalog: CatalogConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub policies: PoliciesConfig,
}

const ENV_PREFIX: &str = "ICEMAINT__";

impl Config {
    /// Reads `path`, applies `ICEMAINT__*` overrides from the process environment and resolves the
    /// policy directory relative to the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        let mut cfg = Self::parse(&text, &path.display().to_string(), &env)?;
        if cfg.policies.dir.is_relative() {
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            cfg.policies.dir = base.join(&cfg.policies.dir);
        }
        Ok(cfg)
    }

    /// Parses TOML text (named `origin` in errors) with the given environment overrides.
    pub fn parse(text: &str, origin: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| invalid(origin, text, &e))?;
        apply_env(&mut table, env)?;
        let merged = toml::to_string(&table).expect("a toml table serializes");
        // Spans from the merged document would not match the file; report against the file when
        // the error is in it, and say "after environment overrides" otherwise.
        toml::from_str::<Config>(&merged).map_err(|e| match toml::from_str::<Config>(text) {
            Err(orig) => invalid(origin, text, &orig),
            Ok(_) => ConfigError::Invalid {
                path: origin.to_string(),
                line: 0,
                message: format!("after environment overrides: {}", e.message().trim_end()),
            },
        })
    }
}

fn invalid(origin: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    ConfigError::Invalid {
        path: origin.to_string(),
        line,
        message: e.message().trim_end().to_string(),
    }
}

/// 1-based line number of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = rest.split("__").collect();
        let bad = |message: &str| ConfigError::Env {
            var: var.clone(),
            message: message.to_string(),
        };
        match parts.as_slice() {
            [section, key] => {
                let section = section.to_ascii_lowercase();
                let key = key.to_ascii_lowercase().replace('_', "-");
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(t) = entry else {
                    return Err(bad("section is not a table"));
                };
                t.insert(key.clone(), env_value(&section, &key, value));
            }
            [section, props, key] if props.eq_ignore_ascii_case("properties") => {
                let section = section.to_ascii_lowercase();
                let key = if key.contains('.') || key.contains('-') {
                    key.to_string()
                } else {
                    key.to_ascii_lowercase()
                };
                let entry = table
                    .entry(section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(t) = entry else {
                    return Err(bad("section is not a table"));
                };
                let p = t
                    .entry("properties")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(p) = p else {
                    return Err(bad("properties is not a table"));
                };
                p.insert(key, toml::Value::String(value.clone()));
            }
            _ => return Err(bad("expected ICEMAINT__SECTION__KEY")),
        }
    }
    Ok(())
}

/// Environment values are strings; numeric keys get numbers so that typed fields accept them.
fn env_value(section: &str, key: &str, value: &str) -> toml::Value {
    let numeric = matches!(
        (section, key),
        ("server", "shutdown-grace-seconds")
            | ("server", "refresh-interval-seconds")
            | ("server", "lease-seconds")
    );
    if numeric && let Ok(n) = value.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    toml::Value::String(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[catalog]
type = "rest"
uri = "http://127.0.0.1:8181"
warehouse = "s3://bucket/warehouse"
[catalog.properties]
token = "t0ps3cret"
"s3.endpoint" = "http://127.0.0.1:9000"
[server]
listen = "127.0.0.1:9191"
[store]
url = "sqlite://state.db"
[policies]
dir = "pol"
"#;

    #[test]
    fn parses_full_example() {
        let c = Config::parse(FULL, "c.toml", &[]).unwrap();
        assert_eq!(c.catalog.kind, CatalogType::Rest);
        assert_eq!(c.catalog.name, "default");
        assert_eq!(c.server.listen, "127.0.0.1:9191");
        assert_eq!(c.server.shutdown_grace_seconds, 30);
        assert_eq!(c.store.url, "sqlite://state.db");
        assert_eq!(c.policies.dir, PathBuf::from("pol"));
        assert_eq!(c.catalog.redacted_properties()["token"], "***");
        assert_eq!(
            c.catalog.redacted_properties()["s3.endpoint"],
            "http://127.0.0.1:9000"
        );
    }

    #[test]
    fn unknown_key_is_an_error_with_line() {
        let text = "[catalog]\ntype = \"sql\"\nuri = \"sqlite://x\"\n\n[server]\nlisten = \"1\"\nbogus = 1\n";
        let err = Config::parse(text, "c.toml", &[]).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:7:"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_catalog_type_names_the_line() {
        let text = "[catalog]\ntype = \"hive\"\nuri = \"x\"\n";
        let err = Config::parse(text, "c.toml", &[]).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:2:"), "{err}");
    }

    #[test]
    fn env_overrides_keys_and_properties() {
        let env = vec![
            (
                "ICEMAINT__CATALOG__URI".to_string(),
                "http://other".to_string(),
            ),
            (
                "ICEMAINT__SERVER__SHUTDOWN_GRACE_SECONDS".to_string(),
                "5".to_string(),
            ),
            (
                "ICEMAINT__CATALOG__PROPERTIES__TOKEN".to_string(),
                "abc".to_string(),
            ),
            (
                "ICEMAINT__CATALOG__PROPERTIES__s3.secret-access-key".to_string(),
                "k".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::parse(FULL, "c.toml", &env).unwrap();
        assert_eq!(c.catalog.uri, "http://other");
        assert_eq!(c.server.shutdown_grace_seconds, 5);
        assert_eq!(c.catalog.properties["token"], "abc");
        assert_eq!(c.catalog.properties["s3.secret-access-key"], "k");
        assert_eq!(
            c.catalog.redacted_properties()["s3.secret-access-key"],
            "***"
        );
    }

    #[test]
    fn bad_env_override_is_reported() {
        let env = vec![("ICEMAINT__SERVER__NOPE".to_string(), "1".to_string())];
        let err = Config::parse(FULL, "c.toml", &env).unwrap_err().to_string();
        assert!(err.contains("after environment overrides"), "{err}");
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let mut c = Config::parse(FULL, "c.toml", &[]).unwrap();
        c.catalog.uri = "postgres://u:pw@h/db".into();
        c.store.url = "postgres://u:pw@h/state".into();
        c.server.token = Some(Secret::new("tok3n"));
        let dbg = format!("{c:?}");
        for secret in ["t0ps3cret", "tok3n", ":pw@"] {
            assert!(!dbg.contains(secret), "{secret} leaked in {dbg}");
        }
    }
}
