//! `[spark]`: where and how icemaint submits the rewrites it hands to Spark (`engine = "spark"`
//! or `"auto"` in a policy's `[compaction]`). The Iceberg catalog Spark uses is derived from
//! `[catalog]` when the run is built, so it is configured once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::tomlcheck::Checker;

/// `[spark]`. Every key is optional; a Spark run without `master` is refused with a clear error.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkConfig {
    /// `spark://host:7077`, `k8s://https://...`, `yarn`, `local[N]`.
    pub master: Option<String>,
    /// The `spark-submit` to run; `None`: `$SPARK_HOME/bin/spark-submit`, else `spark-submit`
    /// on `PATH` (resolved when a run starts, so the daemon starts without Spark installed).
    pub submit: Option<PathBuf>,
    /// `client` (default: the driver runs beside icemaint) or `cluster`.
    pub deploy_mode: Option<String>,
    /// Extra jars (`--jars`): the Iceberg Spark runtime, a JDBC driver, cloud FileIO bundles.
    pub jars: Vec<String>,
    /// Spark settings passed as `--conf key=value`.
    pub conf: BTreeMap<String, String>,
    /// The driver application; `None`: the copy built into icemaint, written next to the run's
    /// spec file (client mode). In cluster mode point this at a path the cluster can read.
    pub driver: Option<String>,
    /// How long one Spark run may take before its driver is killed and the job fails.
    pub timeout: Duration,
}

/// The default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

impl Default for SparkConfig {
    fn default() -> Self {
        Self {
            master: None,
            submit: None,
            deploy_mode: None,
            jars: Vec::new(),
            conf: BTreeMap::new(),
            driver: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

const SPARK_KEYS: &[&str] = &[
    "master",
    "submit",
    "deploy-mode",
    "jars",
    "conf",
    "driver",
    "timeout",
];

/// `[spark]`, with defaults where values are missing or bad (the problems say which).
pub(super) fn spark_config(cx: &mut Checker, t: &toml::Table) -> SparkConfig {
    cx.unknown_keys("spark", t, SPARK_KEYS);
    let deploy_mode = cx.string("spark", t, "deploy-mode");
    if let Some(m) = deploy_mode.as_deref()
        && !matches!(m, "client" | "cluster")
    {
        cx.err(
            "spark.deploy-mode",
            format!("'spark.deploy-mode' must be \"client\" or \"cluster\", not \"{m}\""),
        );
    }
    let timeout = match cx.string("spark", t, "timeout") {
        None => DEFAULT_TIMEOUT,
        Some(s) => match crate::util::parse_duration(&s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                cx.err("spark.timeout", "'spark.timeout' must be more than zero");
                DEFAULT_TIMEOUT
            }
            Err(e) => {
                cx.err("spark.timeout", format!("'spark.timeout': {e}"));
                DEFAULT_TIMEOUT
            }
        },
    };
    SparkConfig {
        master: cx.string("spark", t, "master"),
        submit: cx.string("spark", t, "submit").map(PathBuf::from),
        deploy_mode,
        jars: jars(cx, t),
        conf: conf(cx, t),
        driver: cx.string("spark", t, "driver"),
        timeout,
    }
}

/// `jars`: a list of strings.
fn jars(cx: &mut Checker, t: &toml::Table) -> Vec<String> {
    match t.get("jars") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) if a.iter().all(toml::Value::is_str) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            cx.err("spark.jars", "'spark.jars' must be a list of strings");
            Vec::new()
        }
    }
}

/// `conf`: a table of scalar Spark settings (`"spark.executor.memory" = "4g"`).
fn conf(cx: &mut Checker, t: &toml::Table) -> BTreeMap<String, String> {
    let Some(c) = cx.section(t, "spark.conf") else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (k, v) in c {
        let value = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                cx.err(
                    &format!("spark.conf.{k}"),
                    format!(
                        "'spark.conf.{k}' must be a scalar, not {}",
                        other.type_str()
                    ),
                );
                continue;
            }
        };
        out.insert(k.clone(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (SparkConfig, Vec<String>) {
        let t: toml::Table = toml::from_str(text).unwrap();
        let mut cx = Checker::new("x.toml".into(), Default::default(), 0);
        let c = spark_config(&mut cx, &t);
        (c, cx.problems.into_iter().map(|p| p.message).collect())
    }

    #[test]
    fn every_key_is_read() {
        let (c, problems) = parse(
            "master = \"spark://127.0.0.1:7077\"\nsubmit = \"/opt/spark/bin/spark-submit\"\n\
             deploy-mode = \"client\"\njars = [\"a.jar\", \"b.jar\"]\ntimeout = \"30m\"\n\
             driver = \"local:///opt/d.py\"\n[conf]\n\"spark.executor.memory\" = \"2g\"\n\
             \"spark.executor.cores\" = 2\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.master.as_deref(), Some("spark://127.0.0.1:7077"));
        assert_eq!(c.jars, ["a.jar", "b.jar"]);
        assert_eq!(c.timeout, Duration::from_secs(1800));
        assert_eq!(c.conf["spark.executor.cores"], "2");
        assert_eq!(c.driver.as_deref(), Some("local:///opt/d.py"));
    }

    #[test]
    fn defaults_and_bad_values() {
        let (c, problems) = parse("");
        assert_eq!(c, SparkConfig::default());
        assert!(problems.is_empty());
        let (_, problems) =
            parse("deploy-mode = \"remote\"\ntimeout = \"0s\"\njars = \"a.jar\"\nbogus = 1\n");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("'spark.deploy-mode'")));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("unknown key 'spark.bogus'"))
        );
    }
}
