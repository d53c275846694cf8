//! The daemon's TOML configuration: catalog, HTTP server, state store, policy directory and the
//! Spark cluster compactions may be handed to (`[spark]`, in [`spark`]).
//!
//! Every key can be overridden by an environment variable `ICEMAINT__SECTION__KEY` (for example
//! `ICEMAINT__CATALOG__URI`, `ICEMAINT__SERVER__SHUTDOWN_GRACE_SECONDS`); a single `_` in the key
//! part stands for `-`. Catalog properties are `ICEMAINT__CATALOG__PROPERTIES__<key>`, where the key
//! is taken as written when it contains `.` or `-` (Kubernetes allows such names) and lowercased
//! otherwise, so `ICEMAINT__CATALOG__PROPERTIES__TOKEN` sets `token`.
//!
//! Like the policies, the file is read leniently: [`Config::check`] collects *every* problem
//! (unknown keys, bad values, missing keys) with its file and line, or the environment variable
//! that caused it, so `icemaint check` reports them all in one run; it also tells the policy
//! directory whenever `[policies]` itself is sound, so the policies can be checked alongside a
//! broken config. [`Config::load`] and [`Config::parse`] are the same reading, failing when any
//! problem was found.
//!
//! Catalog property values are masked in `Debug` and [`CatalogConfig::redacted_properties`]
//! unless their key is on a short allow-list of settings known not to be credentials
//! ([`is_secret_property`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tomlcheck::{Checker, Problem, key_lines, line_of, one_line};

pub mod spark;
pub use spark::SparkConfig;

/// Errors reading or validating the configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, joined on one line (`icemaint check` prints one per line).
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems found (a read error is one problem without a line).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { path, source } => vec![Problem {
                file: path.clone(),
                line: 0,
                message: format!("cannot read: {source}"),
            }],
            ConfigError::Invalid(p) => p.clone(),
        }
    }
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

/// Catalog property keys whose values may be shown in logs and API output. An allow-list, not a
/// deny-list of credential-looking names: the catalog client and every FileIO backend take their
/// own credentials under names nobody can enumerate in advance (`adls.account-key`,
/// `gcs.oauth2.token`, `header.x-api-key`, a future backend's `...-key`), and a name missed by a
/// deny-list leaks its value, while a name missed here only hides a harmless value. So every key
/// not listed is masked, and so is every `header.*` (a header is as likely a credential as not).
/// Listed: endpoints, regions, names and switches of the REST and SQL catalogs and of the S3,
/// GCS, ADLS and OSS FileIO (iceberg-rust's property names). Deliberately absent although not
/// secret on their own: identifiers that are one half of a credential pair (`s3.access-key-id`,
/// `oss.access-key-id`, `adls.client-id`, `adls.tenant-id`) and `client.assume-role.external-id`
/// (a shared secret between accounts in AWS's own words). URL values are still shown through
/// [`crate::store::redact_url`], so a password or a credential query parameter inside them is
/// masked too.
const NON_SECRET_PROPERTIES: &[&str] = &[
    // Catalog (REST and SQL).
    "uri",
    "warehouse",
    "prefix",
    "oauth2-server-uri",
    "scope",
    "audience",
    "resource",
    "disable-header-redaction",
    "io-impl",
    "sql_bind_style",
    "pool.max-connections",
    // S3.
    "s3.endpoint",
    "s3.region",
    "client.region",
    "s3.path-style-access",
    "s3.allow-anonymous",
    "s3.disable-ec2-metadata",
    "s3.disable-config-load",
    "s3.sse.type",
    "s3.signer.uri",
    "client.assume-role.arn",
    "client.assume-role.session-name",
    // GCS.
    "gcs.project-id",
    "gcs.user-project",
    "gcs.service.path",
    "gcs.no-auth",
    "gcs.allow-anonymous",
    "gcs.disable-vm-metadata",
    "gcs.disable-config-load",
    // ADLS and OSS.
    "adls.account-name",
    "adls.authority-host",
    "oss.endpoint",
];

/// Whether a catalog property's value must be masked in logs and API output: every key but the
/// known-harmless ones of [`NON_SECRET_PROPERTIES`] (matched exactly, so `S3.ENDPOINT` or an
/// unknown `foo.bar` is masked), and always `header.*`.
pub fn is_secret_property(key: &str) -> bool {
    key.starts_with("header.") || !NON_SECRET_PROPERTIES.contains(&key)
}

/// `[catalog]`. `Debug` masks credentials (see [`is_secret_property`]).
#[derive(Clone)]
pub struct CatalogConfig {
    pub kind: CatalogType,
    /// REST: the catalog's base URI. SQL: `sqlite:///path/catalog.db` or `postgres://...`.
    pub uri: String,
    /// SQL catalog name (`iceberg_tables.catalog_name`); PyIceberg's default is `default`.
    pub name: String,
    pub warehouse: Option<String>,
    /// Passed to the catalog and FileIO: `token`, `credential`, `oauth2-server-uri`, `header.*`,
    /// `s3.endpoint`, `s3.path-style-access`, ...
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogConfig")
            .field("kind", &self.kind)
            .field("uri", &crate::store::redact_url(&self.uri))
            .field("name", &self.name)
            .field(
                "warehouse",
                &self.warehouse.as_deref().map(crate::store::redact_url),
            )
            .field("properties", &self.redacted_properties())
            .finish()
    }
}

impl CatalogConfig {
    /// The properties with every value not known to be harmless masked, for logs and API output.
    pub fn redacted_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_property(k) {
                    "***".to_string()
                } else {
                    // Harmless keys include URLs, which may still carry a password.
                    crate::store::redact_url(v)
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// A `[catalog]` section on its own (tests and library users embed one in their own documents),
/// with the checks of [`Config::check_text`]: every problem, joined on one line.
impl<'de> Deserialize<'de> for CatalogConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = toml::Table::deserialize(d)?;
        let mut cx = Checker::new(String::new(), HashMap::new(), 0);
        match catalog_config(&mut cx, &t) {
            Some(c) if cx.problems.is_empty() => Ok(c),
            _ => Err(serde::de::Error::custom(
                cx.problems
                    .iter()
                    .map(|p| p.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }
}

fn default_catalog_name() -> String {
    "default".to_string()
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: String,
    /// When set, mutating API endpoints require `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// How long a shutdown waits for in-flight jobs (commits are never cut off).
    pub shutdown_grace_seconds: u64,
    /// How often readiness checks (catalog, store) and table gauges are refreshed.
    pub refresh_interval_seconds: u64,
    /// How long a job's table lease lasts between renewals (at least 3).
    pub lease_seconds: u64,
    /// The budget across tables of this replica's scheduler: jobs it runs at once (`None`:
    /// unlimited).
    pub max_concurrent_jobs: Option<u64>,
    /// Bytes compactions may rewrite per hour (counted from the shared store; `None`: unlimited).
    pub max_rewritten_bytes_per_hour: Option<u64>,
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
            max_concurrent_jobs: None,
            max_rewritten_bytes_per_hour: None,
        }
    }
}

/// `[store]`. `Debug` masks a database password.
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://icemaint-state.db` (created when missing) or `postgres://...`.
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
#[derive(Debug, Clone)]
pub struct PoliciesConfig {
    /// Directory of `*.toml` policy files, relative to the config file.
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
#[derive(Debug, Clone)]
pub struct Config {
    pub catalog: CatalogConfig,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub policies: PoliciesConfig,
    /// `[spark]`: for the rewrites handed to Spark (`engine = "spark"`).
    pub spark: SparkConfig,
}

/// What reading a configuration found.
#[derive(Debug)]
pub struct ConfigReport {
    /// The configuration, when there is no problem.
    pub config: Option<Config>,
    /// The policy directory whenever `[policies]` is sound (its `dir`, or the default), even when
    /// other keys are bad: `icemaint check` checks the policies too. `None` when the file could
    /// not be read or parsed as TOML, or `[policies]` / its `dir` has the wrong type.
    pub policies_dir: Option<PathBuf>,
    /// Every problem, in file-format order (sections as documented, then their keys).
    pub problems: Vec<Problem>,
}

const ENV_PREFIX: &str = "ICEMAINT__";

impl Config {
    /// Reads `path`, applies `ICEMAINT__*` overrides from the process environment and resolves the
    /// policy directory relative to the file. Fails when the file cannot be read, or with every
    /// problem found.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let report = Self::check_read(path, &text);
        report.config.ok_or(ConfigError::Invalid(report.problems))
    }

    /// Like [`Config::load`], but never stops early: every problem, and the policy directory
    /// (resolved relative to the file) whenever it can be told.
    pub fn check(path: &Path) -> ConfigReport {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::check_read(path, &text),
            Err(source) => ConfigReport {
                config: None,
                policies_dir: None,
                problems: ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                }
                .problems(),
            },
        }
    }

    /// [`Config::check_text`] on the file's text with the process environment, the policy
    /// directory resolved relative to the file.
    fn check_read(path: &Path, text: &str) -> ConfigReport {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let mut report = Self::check_text(text, &path.display().to_string(), &env);
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let resolve = |dir: &mut PathBuf| {
            if dir.is_relative() {
                *dir = base.join(&*dir);
            }
        };
        if let Some(dir) = &mut report.policies_dir {
            resolve(dir);
        }
        if let Some(c) = &mut report.config {
            resolve(&mut c.policies.dir);
        }
        report
    }

    /// Parses TOML text (named `origin` in errors) with the given environment overrides.
    pub fn parse(text: &str, origin: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let report = Self::check_text(text, origin, env);
        report.config.ok_or(ConfigError::Invalid(report.problems))
    }

    /// Parses TOML text (named `origin` in problems) with the given environment overrides,
    /// collecting every problem. The policy directory is left as written.
    pub fn check_text(text: &str, origin: &str, env: &[(String, String)]) -> ConfigReport {
        let mut doc: toml::Table = match toml::from_str(text) {
            Ok(d) => d,
            Err(e) => {
                // Not TOML: nothing further can be told, not even the policy directory.
                let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
                return ConfigReport {
                    config: None,
                    policies_dir: None,
                    problems: vec![Problem {
                        file: origin.to_string(),
                        line,
                        message: one_line(e.message()),
                    }],
                };
            }
        };
        let mut cx = Checker::new(origin.to_string(), key_lines(text), 0);
        apply_env(&mut doc, env, &mut cx);

        // Sections in the documented order, so problems come out in a stable order.
        cx.unknown_keys("", &doc, TOP_KEYS);
        let catalog = match doc.get("catalog") {
            None => {
                cx.missing("", "[catalog] section");
                None
            }
            Some(_) => cx
                .section(&doc, "catalog")
                .and_then(|t| catalog_config(&mut cx, t)),
        };
        let server = cx
            .section(&doc, "server")
            .map(|t| server_config(&mut cx, t))
            .unwrap_or_default();
        let store = cx
            .section(&doc, "store")
            .map(|t| store_config(&mut cx, t))
            .unwrap_or_default();
        let policies = match doc.get("policies") {
            None => Some(PoliciesConfig::default()),
            Some(_) => cx
                .section(&doc, "policies")
                .and_then(|t| policies_config(&mut cx, t)),
        };

        let spark = cx
            .section(&doc, "spark")
            .map(|t| spark::spark_config(&mut cx, t))
            .unwrap_or_default();

        let policies_dir = policies.as_ref().map(|p| p.dir.clone());
        let config = match (catalog, policies) {
            (Some(catalog), Some(policies)) if cx.problems.is_empty() => Some(Config {
                catalog,
                server,
                store,
                policies,
                spark,
            }),
            _ => None,
        };
        ConfigReport {
            config,
            policies_dir,
            problems: cx.problems,
        }
    }
}

const TOP_KEYS: &[&str] = &["catalog", "server", "store", "policies", "spark"];
const CATALOG_KEYS: &[&str] = &["type", "uri", "name", "warehouse", "properties"];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "token",
    "shutdown-grace-seconds",
    "refresh-interval-seconds",
    "lease-seconds",
    "max-concurrent-jobs",
    "max-rewritten-bytes-per-hour",
];
const STORE_KEYS: &[&str] = &["url"];
const POLICIES_KEYS: &[&str] = &["dir"];

/// `[catalog]`: `None` when a required key is missing or bad (the problems say which).
fn catalog_config(cx: &mut Checker, t: &toml::Table) -> Option<CatalogConfig> {
    cx.unknown_keys("catalog", t, CATALOG_KEYS);
    let kind = match t.get("type") {
        None => {
            cx.missing("catalog", "'catalog.type' (\"rest\" or \"sql\")");
            None
        }
        Some(toml::Value::String(s)) if s == "rest" => Some(CatalogType::Rest),
        Some(toml::Value::String(s)) if s == "sql" => Some(CatalogType::Sql),
        Some(other) => {
            let got = match other {
                toml::Value::String(s) => format!("{s:?}"),
                v => v.type_str().to_string(),
            };
            cx.err(
                "catalog.type",
                format!("'catalog.type' must be \"rest\" or \"sql\", not {got}"),
            );
            None
        }
    };
    let uri = match t.get("uri") {
        None => {
            cx.missing(
                "catalog",
                "'catalog.uri' (the catalog's base uri or database url)",
            );
            None
        }
        Some(_) => cx.string("catalog", t, "uri"),
    };
    let name = cx
        .string("catalog", t, "name")
        .unwrap_or_else(default_catalog_name);
    let warehouse = cx.string("catalog", t, "warehouse");
    let mut properties = BTreeMap::new();
    if let Some(props) = cx.section(t, "catalog.properties") {
        for (k, v) in props {
            match v {
                toml::Value::String(s) => {
                    properties.insert(k.clone(), s.clone());
                }
                // The value itself is never quoted: it may be a credential.
                other => cx.err(
                    &format!("catalog.properties.{k}"),
                    format!(
                        "catalog property '{k}' must be a string, not {}",
                        other.type_str()
                    ),
                ),
            }
        }
    }
    Some(CatalogConfig {
        kind: kind?,
        uri: uri?,
        name,
        warehouse,
        properties,
    })
}

/// `[server]`, with defaults where values are missing or bad.
fn server_config(cx: &mut Checker, t: &toml::Table) -> ServerConfig {
    cx.unknown_keys("server", t, SERVER_KEYS);
    ServerConfig {
        listen: cx
            .string("server", t, "listen")
            .unwrap_or_else(default_listen),
        token: cx.string("server", t, "token").map(Secret::new),
        shutdown_grace_seconds: cx
            .uint("server", t, "shutdown-grace-seconds", 0)
            .unwrap_or_else(default_grace),
        refresh_interval_seconds: cx
            .uint("server", t, "refresh-interval-seconds", 0)
            .unwrap_or_else(default_refresh),
        lease_seconds: cx
            .uint("server", t, "lease-seconds", 3)
            .unwrap_or_else(default_lease),
        max_concurrent_jobs: cx.uint("server", t, "max-concurrent-jobs", 1),
        max_rewritten_bytes_per_hour: cx.uint("server", t, "max-rewritten-bytes-per-hour", 1),
    }
}

/// `[store]`, with the default where the value is missing or bad.
fn store_config(cx: &mut Checker, t: &toml::Table) -> StoreConfig {
    cx.unknown_keys("store", t, STORE_KEYS);
    StoreConfig {
        url: cx
            .string("store", t, "url")
            .unwrap_or_else(default_store_url),
    }
}

/// `[policies]`: `None` when `dir` is not a string (the directory cannot be told).
fn policies_config(cx: &mut Checker, t: &toml::Table) -> Option<PoliciesConfig> {
    cx.unknown_keys("policies", t, POLICIES_KEYS);
    match t.get("dir") {
        None => Some(PoliciesConfig::default()),
        Some(_) => cx.string("policies", t, "dir").map(|d| PoliciesConfig {
            dir: PathBuf::from(d),
        }),
    }
}

/// Applies `ICEMAINT__*` overrides to the document, recording which variable set which key so
/// that problems with those values name the variable rather than a line of the file.
fn apply_env(doc: &mut toml::Table, env: &[(String, String)], cx: &mut Checker) {
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = rest.split("__").collect();
        let (section, props, key) = match parts.as_slice() {
            [section, key] => (
                section.to_ascii_lowercase(),
                false,
                key.to_ascii_lowercase().replace('_', "-"),
            ),
            [section, props, key] if props.eq_ignore_ascii_case("properties") => {
                let key = if key.contains('.') || key.contains('-') {
                    key.to_string()
                } else {
                    key.to_ascii_lowercase()
                };
                (section.to_ascii_lowercase(), true, key)
            }
            _ => {
                cx.env_problem(var, "expected ICEMAINT__SECTION__KEY");
                continue;
            }
        };
        if !doc.contains_key(&section) {
            cx.set_from_env(section.clone(), var.clone());
        }
        let entry = doc
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(t) = entry else {
            cx.env_problem(var, &format!("'{section}' is not a table"));
            continue;
        };
        if props {
            let path = format!("{section}.properties");
            if !t.contains_key("properties") {
                cx.set_from_env(path.clone(), var.clone());
            }
            let p = t
                .entry("properties")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(p) = p else {
                cx.env_problem(var, &format!("'{path}' is not a table"));
                continue;
            };
            cx.set_from_env(format!("{path}.{key}"), var.clone());
            p.insert(key, toml::Value::String(value.clone()));
        } else {
            cx.set_from_env(format!("{section}.{key}"), var.clone());
            let v = env_value(&section, &key, value);
            t.insert(key, v);
        }
    }
}

/// Environment values are strings; numeric keys get numbers so that typed fields accept them.
fn env_value(section: &str, key: &str, value: &str) -> toml::Value {
    let numeric = matches!(
        (section, key),
        ("server", "shutdown-grace-seconds")
            | ("server", "refresh-interval-seconds")
            | ("server", "lease-seconds")
            | ("server", "max-concurrent-jobs")
            | ("server", "max-rewritten-bytes-per-hour")
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
    fn budget_keys_default_to_unlimited_and_are_checked() {
        let base = "[catalog]\ntype = \"sql\"\nuri = \"sqlite://x\"\n\n[server]\n";
        let c = Config::parse(base, "c.toml", &[]).unwrap();
        assert_eq!(
            (
                c.server.max_concurrent_jobs,
                c.server.max_rewritten_bytes_per_hour
            ),
            (None, None)
        );
        let env = [(
            "ICEMAINT__SERVER__MAX_REWRITTEN_BYTES_PER_HOUR".to_string(),
            "1000".to_string(),
        )];
        let text = format!("{base}max-concurrent-jobs = 2\n");
        let c = Config::parse(&text, "c.toml", &env).unwrap();
        assert_eq!(c.server.max_concurrent_jobs, Some(2));
        assert_eq!(c.server.max_rewritten_bytes_per_hour, Some(1000));
        let bad = format!("{base}max-concurrent-jobs = 0\n");
        let err = Config::parse(&bad, "c.toml", &[]).unwrap_err().to_string();
        assert!(
            err.contains("c.toml:6: 'server.max-concurrent-jobs' must be at least 1, not 0"),
            "{err}"
        );
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
        assert_eq!(
            err,
            "c.toml: environment variable ICEMAINT__SERVER__NOPE: unknown key 'server.nope' \
             (expected one of: listen, token, shutdown-grace-seconds, refresh-interval-seconds, lease-seconds, max-concurrent-jobs, max-rewritten-bytes-per-hour)"
        );
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let mut c = Config::parse(FULL, "c.toml", &[]).unwrap();
        c.catalog.uri = "postgres://u:pw@h/db".into();
        c.store.url = "postgres://u:pw@h/state".into();
        c.server.token = Some(Secret::new("tok3n"));
        c.catalog.properties.extend(
            [
                ("header.x-api-key", "k3y-header"),
                ("header.Authorization", "Bearer b3arer"),
                ("adls.account-key", "k3y-adls"),
                ("gcs.oauth2.token", "t0ken-gcs"),
                ("foo.bar", "unkn0wn"),
                ("s3.access-key-id", "AKIA1D"),
                ("oauth2-server-uri", "https://u:pw2@idp/token"),
                ("uri", "postgres://h/db?user=u&password=pw3"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let dbg = format!("{c:?}");
        let redacted = format!("{:?}", c.catalog.redacted_properties());
        for secret in [
            "t0ps3cret",
            "tok3n",
            ":pw@",
            "k3y-header",
            "b3arer",
            "k3y-adls",
            "t0ken-gcs",
            "unkn0wn",
            "AKIA1D",
            "pw2",
            "pw3",
        ] {
            assert!(!dbg.contains(secret), "{secret} leaked in {dbg}");
            assert!(!redacted.contains(secret), "{secret} leaked in {redacted}");
        }
        // Harmless values stay readable.
        assert!(dbg.contains("http://127.0.0.1:9000"), "{dbg}");
        assert!(dbg.contains("https://u:***@idp/token"), "{dbg}");
    }

    #[test]
    fn a_catalog_section_deserializes_with_the_same_checks() {
        #[derive(Deserialize)]
        struct Root {
            catalog: CatalogConfig,
        }
        let c = toml::from_str::<Root>(FULL.split("[server]").next().unwrap())
            .unwrap()
            .catalog;
        assert_eq!((c.kind, c.name.as_str()), (CatalogType::Rest, "default"));
        assert_eq!(c.properties.len(), 2);
        let err = toml::from_str::<Root>("[catalog]\ntype = \"hive\"\nx = 1\n")
            .err()
            .unwrap()
            .to_string();
        for part in [
            "unknown key 'catalog.x'",
            "\"hive\"",
            "missing 'catalog.uri'",
        ] {
            assert!(err.contains(part), "{part} not in {err}");
        }
    }

    #[test]
    fn only_allow_listed_properties_are_shown() {
        for key in [
            "token",
            "credential",
            "header.x-api-key",
            "header.authorization",
            "header.X-Tenant",
            "adls.account-key",
            "adls.sas-token",
            "gcs.oauth2.token",
            "gcs.credentials-json",
            "s3.secret-access-key",
            "s3.session-token",
            "s3.access-key-id",
            "s3.sse.key",
            "client.assume-role.external-id",
            "oss.access-key-secret",
            "foo.bar",
            "S3.ENDPOINT",
            "",
        ] {
            assert!(is_secret_property(key), "{key:?} must be masked");
        }
        for key in NON_SECRET_PROPERTIES {
            assert!(!is_secret_property(key), "{key} is allow-listed");
            assert!(
                !key.starts_with("header."),
                "{key}: headers are always masked"
            );
        }
        assert!(!is_secret_property("s3.endpoint"));
        assert!(!is_secret_property("warehouse"));
    }

    /// Two bad keys in different sections, a bad type, a bad enum value and a missing required
    /// key: every one reported, each on its line.
    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "\
[catalog]
type = \"hive\"
warehouse = 3
colour = \"blue\"
[catalog.properties]
\"s3.endpoint\" = \"http://x\"
\"s3.region\" = 1
[server]
listen = \"127.0.0.1:1\"
bogus = 1
shutdown-grace-seconds = -2
[policies]
dir = \"pol\"
[extra]
";
        let r = Config::check_text(text, "c.toml", &[]);
        assert!(r.config.is_none());
        let got: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            got,
            [
                "c.toml:14: unknown key 'extra' (expected one of: catalog, server, store, policies, spark)",
                "c.toml:4: unknown key 'catalog.colour' (expected one of: type, uri, name, warehouse, properties)",
                "c.toml:2: 'catalog.type' must be \"rest\" or \"sql\", not \"hive\"",
                "c.toml:1: missing 'catalog.uri' (the catalog's base uri or database url)",
                "c.toml:3: 'catalog.warehouse' must be a string, not integer",
                "c.toml:7: catalog property 's3.region' must be a string, not integer",
                "c.toml:10: unknown key 'server.bogus' (expected one of: listen, token, shutdown-grace-seconds, refresh-interval-seconds, lease-seconds, max-concurrent-jobs, max-rewritten-bytes-per-hour)",
                "c.toml:11: 'server.shutdown-grace-seconds' must be zero or more, not -2",
            ],
            "{got:#?}"
        );
        // The policy directory is still known, so `icemaint check` checks the policies too.
        assert_eq!(r.policies_dir, Some(PathBuf::from("pol")));
        // `parse` fails with all of them on one line.
        let err = Config::parse(text, "c.toml", &[]).unwrap_err().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("'extra'") && err.contains("-2"), "{err}");
    }

    #[test]
    fn policies_dir_is_known_unless_policies_is_broken() {
        let no_catalog = "[server]\nlisten = 1\n";
        let r = Config::check_text(no_catalog, "c.toml", &[]);
        assert_eq!(r.policies_dir, Some(PathBuf::from("policies")));
        let got: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            got,
            [
                "c.toml: missing [catalog] section",
                "c.toml:2: 'server.listen' must be a string, not integer",
            ]
        );

        let r = Config::check_text("[policies]\ndir = 5\nx = 1\n", "c.toml", &[]);
        assert_eq!(r.policies_dir, None);
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        let r = Config::check_text("policies = \"p\"\n", "c.toml", &[]);
        assert_eq!(r.policies_dir, None);
        assert!(
            r.problems.iter().any(|p| p.to_string()
                == "c.toml:1: 'policies' must be a table ([policies]), not string"),
            "{:?}",
            r.problems
        );
        // Environment overrides count: the directory the daemon would use.
        let env = [(
            "ICEMAINT__POLICIES__DIR".to_string(),
            "elsewhere".to_string(),
        )];
        let r = Config::check_text(no_catalog, "c.toml", &env);
        assert_eq!(r.policies_dir, Some(PathBuf::from("elsewhere")));
    }

    #[test]
    fn not_toml_is_one_problem_and_no_policy_dir() {
        let r = Config::check_text("[catalog\ntype = 1\n", "c.toml", &[]);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].to_string().starts_with("c.toml:1: "));
        assert_eq!(r.policies_dir, None);
        assert!(r.config.is_none());
    }

    #[test]
    fn env_problems_name_the_variable() {
        let env = [
            (
                "ICEMAINT__SERVER__REFRESH_INTERVAL_SECONDS".to_string(),
                "soon".to_string(),
            ),
            ("ICEMAINT__NOPE".to_string(), "1".to_string()),
            ("ICEMAINT__EXTRA__KEY".to_string(), "1".to_string()),
        ];
        let r = Config::check_text(FULL, "c.toml", &env);
        let got: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            got,
            [
                "c.toml: environment variable ICEMAINT__NOPE: expected ICEMAINT__SECTION__KEY",
                "c.toml: environment variable ICEMAINT__EXTRA__KEY: unknown key 'extra' (expected one of: catalog, server, store, policies, spark)",
                "c.toml: environment variable ICEMAINT__SERVER__REFRESH_INTERVAL_SECONDS: 'server.refresh-interval-seconds' must be an integer, not string",
            ],
            "{got:#?}"
        );
        // A bad value in the file that the environment replaces is not a problem.
        let text = FULL.replace("listen = \"127.0.0.1:9191\"", "listen = 5");
        let env = [(
            "ICEMAINT__SERVER__LISTEN".to_string(),
            "127.0.0.1:1".to_string(),
        )];
        let c = Config::parse(&text, "c.toml", &env).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:1");
    }

    #[test]
    fn load_and_check_resolve_the_policy_dir_next_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("icemaint.toml");
        std::fs::write(&path, FULL).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.policies.dir, dir.path().join("pol"));
        std::fs::write(&path, FULL.replace("[server]", "[server]\nbogus = 1")).unwrap();
        let r = Config::check(&path);
        assert_eq!(r.policies_dir, Some(dir.path().join("pol")));
        assert_eq!(r.problems.len(), 1);
        assert!(Config::load(&path).is_err());

        let missing = dir.path().join("missing.toml");
        let r = Config::check(&missing);
        assert_eq!(r.policies_dir, None);
        assert_eq!(r.problems.len(), 1);
        let shown = r.problems[0].to_string();
        assert!(
            shown.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{shown}"
        );
        let err = Config::load(&missing).unwrap_err().to_string();
        assert_eq!(err, shown);
    }
}
