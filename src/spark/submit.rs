//! What one Spark run is, built without I/O: the options Spark may be given, the Iceberg catalog
//! settings derived from icemaint's `[catalog]`, the driver's spec and the `spark-submit`
//! command line. Credentials go only into the spec (a 0600 file the driver reads), never onto
//! the command line, where `ps` would show them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compaction::options as copts;
use crate::config::{CatalogConfig, CatalogType, SparkConfig};

use super::SparkError;

pub use crate::compaction::options::SPARK_OPTIONS;

/// Splits the merged options (the policy's, then the run's) into Spark's `options => map(...)`
/// and the `where` filter; an option Spark does not know is an error naming it.
pub fn spark_options(
    merged: &BTreeMap<String, String>,
) -> Result<(BTreeMap<String, String>, Option<String>), SparkError> {
    let mut options = BTreeMap::new();
    let mut filter = None;
    for (k, v) in merged {
        if k == copts::WHERE {
            filter = Some(v.clone());
        } else if SPARK_OPTIONS.contains(&k.as_str()) {
            options.insert(k.clone(), v.clone());
        } else {
            return Err(SparkError::Unsupported(k.clone()));
        }
    }
    Ok((options, filter))
}

/// The Spark catalog settings (`spark.sql.catalog.<name>.*`) for icemaint's `[catalog]`: REST as
/// `type=rest` with every catalog property (token, credential, S3 settings); SQL as Iceberg's
/// `JdbcCatalog` on the same database, under the same catalog name (the rows' `catalog_name`).
pub fn catalog_conf(c: &CatalogConfig) -> Result<BTreeMap<String, String>, SparkError> {
    let p = format!("spark.sql.catalog.{}", c.name);
    let mut conf = BTreeMap::new();
    conf.insert(p.clone(), "org.apache.iceberg.spark.SparkCatalog".into());
    match c.kind {
        CatalogType::Rest => {
            conf.insert(format!("{p}.type"), "rest".into());
            conf.insert(format!("{p}.uri"), c.uri.clone());
        }
        CatalogType::Sql => {
            conf.insert(format!("{p}.type"), "jdbc".into());
            // iceberg-catalog-sql's tables carry the `V1` columns (`iceberg_type`).
            conf.insert(format!("{p}.jdbc.schema-version"), "V1".into());
            for (k, v) in jdbc_url(&c.uri)? {
                conf.insert(format!("{p}.{k}"), v);
            }
        }
    }
    if let Some(w) = &c.warehouse {
        conf.insert(format!("{p}.warehouse"), w.clone());
    }
    for (k, v) in &c.properties {
        conf.insert(format!("{p}.{k}"), v.clone());
    }
    Ok(conf)
}

/// `sqlite:///abs/path.db` → `jdbc:sqlite:/abs/path.db`; `postgres://user:pw@host:port/db` →
/// `jdbc:postgresql://host:port/db` with `jdbc.user` and `jdbc.password`.
fn jdbc_url(uri: &str) -> Result<Vec<(String, String)>, SparkError> {
    if let Some(path) = uri.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        return Ok(vec![("uri".into(), format!("jdbc:sqlite:{path}"))]);
    }
    let u = url::Url::parse(uri)
        .map_err(|e| SparkError::Catalog(format!("catalog uri is not a URL: {e}")))?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        return Err(SparkError::Catalog(format!(
            "no JDBC URL for a '{}' catalog database",
            u.scheme()
        )));
    }
    let host = u.host_str().unwrap_or("localhost");
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let mut out = vec![(
        "uri".into(),
        format!("jdbc:postgresql://{host}{port}{}", u.path()),
    )];
    if !u.username().is_empty() {
        out.push(("jdbc.user".into(), u.username().to_string()));
    }
    if let Some(pw) = u.password() {
        out.push(("jdbc.password".into(), pw.to_string()));
    }
    Ok(out)
}

/// What the driver reads (`spark/rewrite_data_files.py`): the session settings, then the call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Spec {
    pub app_name: String,
    /// Spark catalog name the call goes through (`CALL <catalog>.system.rewrite_data_files`).
    pub catalog: String,
    /// Namespace levels and table name, quoted by the driver.
    pub table: Vec<String>,
    pub options: BTreeMap<String, String>,
    #[serde(rename = "where")]
    pub filter: Option<String>,
    /// Session settings, the catalog's credentials among them.
    pub conf: BTreeMap<String, String>,
}

impl Spec {
    pub fn new(
        catalog: &CatalogConfig,
        table: &str,
        job_id: &str,
        merged_options: &BTreeMap<String, String>,
    ) -> Result<Self, SparkError> {
        let (options, filter) = spark_options(merged_options)?;
        let parts: Vec<String> = table.split('.').map(str::to_string).collect();
        if parts.len() < 2 || parts.iter().any(String::is_empty) {
            return Err(SparkError::Catalog(format!("bad table name '{table}'")));
        }
        Ok(Self {
            app_name: format!("icemaint-compact-{table}-{job_id}"),
            catalog: catalog.name.clone(),
            table: parts,
            options,
            filter,
            conf: catalog_conf(catalog)?,
        })
    }
}

/// The `spark-submit` to run: `[spark] submit`, else `$SPARK_HOME/bin/spark-submit`, else the
/// one on `PATH`.
pub fn submit_program(cfg: &SparkConfig, spark_home: Option<&str>) -> PathBuf {
    match (&cfg.submit, spark_home) {
        (Some(s), _) => s.clone(),
        (None, Some(home)) if !home.is_empty() => Path::new(home).join("bin/spark-submit"),
        _ => PathBuf::from("spark-submit"),
    }
}

/// `spark-submit` arguments: master, deploy mode, jars, `--conf`s (icemaint's defaults first, so
/// `[spark.conf]` wins), the driver and the spec file (a path only; its content stays private).
pub fn submit_args(cfg: &SparkConfig, master: &str, driver: &str, spec: &Path) -> Vec<String> {
    let mut args = vec!["--master".to_string(), master.to_string()];
    let cluster = cfg.deploy_mode.as_deref() == Some("cluster");
    if let Some(m) = &cfg.deploy_mode {
        args.extend(["--deploy-mode".into(), m.clone()]);
    }
    if !cfg.jars.is_empty() {
        args.extend(["--jars".into(), cfg.jars.join(",")]);
    }
    if cluster {
        // The driver runs in the cluster: ship the spec beside it.
        args.extend(["--files".into(), spec.display().to_string()]);
    }
    let mut conf = BTreeMap::from([
        (
            "spark.sql.extensions".to_string(),
            "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions".to_string(),
        ),
        ("spark.ui.showConsoleProgress".into(), "false".into()),
    ]);
    conf.extend(cfg.conf.clone());
    for (k, v) in conf {
        args.extend(["--conf".into(), format!("{k}={v}")]);
    }
    args.push(driver.to_string());
    args.push(spec.display().to_string());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(kind: CatalogType, uri: &str, props: &[(&str, &str)]) -> CatalogConfig {
        CatalogConfig {
            kind,
            uri: uri.into(),
            name: "prod".into(),
            warehouse: Some("s3://wh/".into()),
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn icemaint_only_options_are_refused_and_where_is_split_off() {
        let m = BTreeMap::from([
            ("min-input-files".to_string(), "2".to_string()),
            ("where".to_string(), "p = 1".to_string()),
        ]);
        let (o, w) = spark_options(&m).unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(w.as_deref(), Some("p = 1"));
        let mut bad = m.clone();
        bad.insert(copts::REWRITE_OLDER_SPECS.into(), "true".into());
        let e = spark_options(&bad).unwrap_err().to_string();
        assert!(e.contains("'rewrite-older-specs'"), "{e}");
    }

    #[test]
    fn every_spark_option_is_an_icemaint_option() {
        for o in SPARK_OPTIONS {
            assert!(copts::KNOWN_OPTIONS.contains(o), "{o}");
        }
    }

    #[test]
    fn rest_catalog_passes_properties_through() {
        let c = catalog(
            CatalogType::Rest,
            "http://cat:8181",
            &[("token", "s3cr3t"), ("s3.endpoint", "http://s3")],
        );
        let conf = catalog_conf(&c).unwrap();
        assert_eq!(conf["spark.sql.catalog.prod.type"], "rest");
        assert_eq!(conf["spark.sql.catalog.prod.uri"], "http://cat:8181");
        assert_eq!(conf["spark.sql.catalog.prod.token"], "s3cr3t");
        assert_eq!(conf["spark.sql.catalog.prod.warehouse"], "s3://wh/");
    }

    #[test]
    fn sql_catalogs_become_jdbc_urls() {
        let conf = catalog_conf(&catalog(CatalogType::Sql, "sqlite:///d/cat.db", &[])).unwrap();
        assert_eq!(conf["spark.sql.catalog.prod.type"], "jdbc");
        assert_eq!(conf["spark.sql.catalog.prod.uri"], "jdbc:sqlite:/d/cat.db");
        let pg = catalog(CatalogType::Sql, "postgres://u:pw@db:5433/iceberg", &[]);
        let conf = catalog_conf(&pg).unwrap();
        assert_eq!(
            conf["spark.sql.catalog.prod.uri"],
            "jdbc:postgresql://db:5433/iceberg"
        );
        assert_eq!(conf["spark.sql.catalog.prod.jdbc.user"], "u");
        assert_eq!(conf["spark.sql.catalog.prod.jdbc.password"], "pw");
        let bad = catalog(CatalogType::Sql, "mysql://x/y", &[]);
        assert!(catalog_conf(&bad).is_err());
    }

    #[test]
    fn the_command_line_never_carries_the_catalog_settings() {
        let cfg = SparkConfig {
            jars: vec!["a.jar".into(), "b.jar".into()],
            conf: BTreeMap::from([("spark.ui.showConsoleProgress".into(), "true".into())]),
            ..Default::default()
        };
        let args = submit_args(&cfg, "spark://h:7077", "d.py", Path::new("/t/spec.json"));
        assert_eq!(
            args[..4],
            ["--master", "spark://h:7077", "--jars", "a.jar,b.jar"]
        );
        assert!(args.contains(&"spark.ui.showConsoleProgress=true".to_string()));
        assert!(!args.iter().any(|a| a.contains("catalog")));
        assert_eq!(args[args.len() - 2..], ["d.py", "/t/spec.json"]);
    }

    #[test]
    fn submit_program_prefers_config_then_spark_home() {
        let mut cfg = SparkConfig::default();
        assert_eq!(submit_program(&cfg, None), PathBuf::from("spark-submit"));
        assert_eq!(
            submit_program(&cfg, Some("/opt/spark")),
            PathBuf::from("/opt/spark/bin/spark-submit")
        );
        cfg.submit = Some("/x/spark-submit".into());
        assert_eq!(
            submit_program(&cfg, Some("/opt/spark")),
            PathBuf::from("/x/spark-submit")
        );
    }
}
