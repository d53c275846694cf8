//! The deployment files in `deploy/` checked against the code they deploy: every Kubernetes
//! manifest parses, its cross-references hold (ports, probe paths, Secret keys, ConfigMaps,
//! selectors), its configuration is one `icemaint::config::Config` accepts with the environment
//! the Deployment sets, its policies are the repository's, the probes answer on the real daemon,
//! the Dockerfile copies what exists and runs the crate's binary, and the systemd unit reloads
//! policies with SIGHUP.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::ops_util::{Daemon, find_tool, repo_file, repo_root, wait_for};

const K8S: &str = "deploy/kubernetes";

/// Every YAML document of a file.
fn yaml_docs(rel: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(&repo_file(rel))
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

/// `a.b.0.c` navigation; panics naming the missing step.
fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for step in path.split('.') {
        cur = match step.parse::<usize>() {
            Ok(i) => cur.get(i),
            Err(_) => cur.get(step),
        }
        .unwrap_or_else(|| panic!("missing {path} (at {step})"));
    }
    cur
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_string(),
                        v.as_str().map(str::to_string).unwrap_or_else(|| {
                            serde_yaml_ng::to_string(v).unwrap().trim().to_string()
                        }),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The Kustomize base: resources by kind, generated ConfigMaps by name (key -> file content).
struct Base {
    by_kind: BTreeMap<String, Value>,
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
}

fn base() -> Base {
    let k = &yaml_docs(&format!("{K8S}/kustomization.yaml"))[0];
    assert_eq!(s(k, "kind"), "Kustomization");
    let mut by_kind = BTreeMap::new();
    for r in get(k, "resources").as_sequence().unwrap() {
        let rel = format!("{K8S}/{}", r.as_str().unwrap());
        for doc in yaml_docs(&rel) {
            let kind = s(&doc, "kind").to_string();
            assert!(
                by_kind.insert(kind.clone(), doc).is_none(),
                "two {kind} objects; the tests expect one of each"
            );
        }
    }
    let mut config_maps = BTreeMap::new();
    for g in get(k, "configMapGenerator").as_sequence().unwrap() {
        let mut files = BTreeMap::new();
        for f in get(g, "files").as_sequence().unwrap() {
            let rel = f.as_str().unwrap();
            // `key=path` or just `path` (the key is then the file name).
            let (key, path) = rel
                .split_once('=')
                .unwrap_or_else(|| (Path::new(rel).file_name().unwrap().to_str().unwrap(), rel));
            files.insert(key.to_string(), repo_file(&format!("{K8S}/{path}")));
        }
        config_maps.insert(s(g, "name").to_string(), files);
    }
    for kind in [
        "Deployment",
        "Service",
        "Secret",
        "ServiceMonitor",
        "PodDisruptionBudget",
    ] {
        assert!(by_kind.contains_key(kind), "no {kind} in the base");
    }
    Base {
        by_kind,
        config_maps,
    }
}

impl Base {
    fn kind(&self, k: &str) -> &Value {
        &self.by_kind[k]
    }
    fn container(&self) -> &Value {
        let cs = get(self.kind("Deployment"), "spec.template.spec.containers");
        assert_eq!(cs.as_sequence().unwrap().len(), 1, "one container");
        &cs[0]
    }
    fn config_toml(&self) -> &str {
        &self.config_maps["icemaint-config"]["icemaint.toml"]
    }
    /// The Deployment's `ICEMAINT__*` environment with a placeholder for each Secret reference.
    fn icemaint_env(&self) -> Vec<(String, String)> {
        get(self.container(), "env")
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| {
                let value = match e.get("value") {
                    Some(v) => v.as_str().unwrap().to_string(),
                    None => format!("from-secret-{}", s(e, "valueFrom.secretKeyRef.key")),
                };
                (s(e, "name").to_string(), value)
            })
            .filter(|(k, _)| k.starts_with("ICEMAINT__"))
            .collect()
    }
    fn config(&self) -> icemaint::config::Config {
        icemaint::config::Config::parse(self.config_toml(), "icemaint.toml", &self.icemaint_env())
            .unwrap_or_else(|e| {
                panic!("the ConfigMap's icemaint.toml with the Deployment's env: {e}")
            })
    }
}

fn listen_port(listen: &str) -> u16 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in listen = {listen:?}"))
}

#[test]
fn kubernetes_manifests_agree_with_the_code() {
    let b = base();
    let config = b.config();
    let dep = b.kind("Deployment");
    let c = b.container();

    // One replica (see the comment in deployment.yaml on the lease and the SQLite store).
    assert_eq!(get(dep, "spec.replicas").as_u64(), Some(1));

    // The container port is the port of [server] listen, which must bind all interfaces.
    let port = &get(c, "ports")[0];
    assert_eq!(
        get(port, "containerPort").as_u64(),
        Some(u64::from(listen_port(&config.server.listen))),
        "containerPort vs [server] listen = {}",
        config.server.listen
    );
    assert!(
        config.server.listen.starts_with("0.0.0.0:") || config.server.listen.starts_with("[::]:"),
        "listen {} is not reachable from outside the pod",
        config.server.listen
    );
    let port_name = s(port, "name");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            s(c, &format!("{probe}.httpGet.port")),
            port_name,
            "{probe} port"
        );
    }
    assert_eq!(s(c, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(s(c, "readinessProbe.httpGet.path"), "/readyz");

    // Service -> pod port, ServiceMonitor -> Service port; selectors pick the pod / Service.
    let pod_labels = string_map(get(dep, "spec.template.metadata.labels"));
    let svc = b.kind("Service");
    let svc_port = &get(svc, "spec.ports")[0];
    assert_eq!(s(svc_port, "targetPort"), port_name);
    let subset = |sel: &Value, labels: &BTreeMap<String, String>, what: &str| {
        let sel = string_map(sel);
        assert!(!sel.is_empty(), "{what}: empty selector");
        for (k, v) in &sel {
            assert_eq!(labels.get(k), Some(v), "{what}: selector {k}={v}");
        }
    };
    subset(get(svc, "spec.selector"), &pod_labels, "Service");
    subset(
        get(dep, "spec.selector.matchLabels"),
        &pod_labels,
        "Deployment",
    );
    subset(
        get(b.kind("PodDisruptionBudget"), "spec.selector.matchLabels"),
        &pod_labels,
        "PodDisruptionBudget",
    );
    let sm = b.kind("ServiceMonitor");
    subset(
        get(sm, "spec.selector.matchLabels"),
        &string_map(get(svc, "metadata.labels")),
        "ServiceMonitor",
    );
    let endpoint = &get(sm, "spec.endpoints")[0];
    assert_eq!(s(endpoint, "port"), s(svc_port, "name"));
    assert_eq!(s(endpoint, "path"), "/metrics");
    // The alert rules expect up{job="icemaint"}: the Operator names the job after the Service.
    assert_eq!(s(svc, "metadata.name"), "icemaint");
    assert!(sm.get("spec").unwrap().get("jobLabel").is_none());

    // The kubelet's SIGKILL must come after the daemon's own drain.
    let tgps = get(dep, "spec.template.spec.terminationGracePeriodSeconds")
        .as_u64()
        .unwrap();
    assert!(
        tgps > config.server.shutdown_grace_seconds,
        "terminationGracePeriodSeconds {tgps} <= shutdown-grace-seconds {}",
        config.server.shutdown_grace_seconds
    );

    // Memory: request 512Mi, limit 1.5Gi (the compaction benchmark's < 1 GiB peak plus headroom).
    assert_eq!(s(c, "resources.requests.memory"), "512Mi");
    assert_eq!(s(c, "resources.limits.memory"), "1536Mi");

    // Every environment variable from the Secret names a real key of that Secret, and the
    // credentials land where the config reads them (and are redacted there).
    let secret = b.kind("Secret");
    let secret_name = s(secret, "metadata.name");
    let mut secret_keys: BTreeSet<String> =
        string_map(get(secret, "stringData")).into_keys().collect();
    if let Some(data) = secret.get("data") {
        secret_keys.extend(string_map(data).into_keys());
    }
    let mut used = BTreeSet::new();
    for e in get(c, "env").as_sequence().unwrap() {
        if let Some(r) = e.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
            assert_eq!(s(r, "name"), secret_name, "{}", s(e, "name"));
            assert!(
                secret_keys.contains(s(r, "key")),
                "{}: key {} not in Secret {secret_name}",
                s(e, "name"),
                s(r, "key")
            );
            used.insert(s(r, "key").to_string());
        }
    }
    assert_eq!(used, secret_keys, "Secret keys the Deployment never uses");
    for (var, value) in b.icemaint_env() {
        if let Some(key) = var.strip_prefix("ICEMAINT__CATALOG__PROPERTIES__") {
            assert_eq!(config.catalog.properties.get(key), Some(&value), "{var}");
            // An access key id is an identifier kept next to its secret key, not a credential
            // on its own; everything else taken from the Secret must be masked in logs and API.
            if value.starts_with("from-secret-") && !key.ends_with("access-key-id") {
                assert!(
                    icemaint::config::is_secret_property(key),
                    "{var} comes from the Secret but `{key}` is not redacted as a credential"
                );
            }
        }
    }
    assert_eq!(
        config.server.token.as_ref().map(|t| t.expose().to_string()),
        Some("from-secret-api-token".to_string()),
        "ICEMAINT__SERVER__TOKEN"
    );

    // The config file and policy directory are mounted where the command line and the config
    // say, from the generated ConfigMaps.
    let args: Vec<&str> = get(c, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    assert_eq!(args[0], "serve");
    let volumes: BTreeMap<&str, &Value> = get(dep, "spec.template.spec.volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| (s(v, "name"), v))
        .collect();
    let mut mounted = BTreeMap::new();
    for m in get(c, "volumeMounts").as_sequence().unwrap() {
        let vol = volumes[s(m, "name")];
        if let Some(cm) = vol.get("configMap") {
            let name = s(cm, "name");
            assert!(
                b.config_maps.contains_key(name),
                "ConfigMap {name} is not generated"
            );
            mounted.insert(
                s(m, "mountPath").to_string(),
                (name.to_string(), m.get("subPath")),
            );
        }
    }
    let (cm, sub) = &mounted[config_path];
    assert_eq!(cm, "icemaint-config");
    assert_eq!(sub.and_then(|v| v.as_str()), Some("icemaint.toml"));
    let policy_dir = Path::new(config_path)
        .parent()
        .unwrap()
        .join(&config.policies.dir);
    assert_eq!(mounted[policy_dir.to_str().unwrap()].0, "icemaint-policies");

    // The policies are exactly the repository's.
    let mut repo_policies = BTreeMap::new();
    for e in std::fs::read_dir(repo_root().join("policies")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            repo_policies.insert(name, std::fs::read_to_string(&p).unwrap());
        }
    }
    assert_eq!(
        b.config_maps["icemaint-policies"], repo_policies,
        "deploy/kubernetes/policies/ differs from policies/: copy them again"
    );
}

/// `icemaint check` accepts the ConfigMap's config with its policies (the copies sit next to it
/// as they do in the pod).
#[test]
fn icemaint_check_accepts_the_kubernetes_config() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_icemaint"))
        .args(["check", "--config"])
        .arg(repo_root().join(K8S).join("icemaint.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 policies"));
}

/// Kustomize (in kubectl) builds the base. kubectl is a test prerequisite
/// (`scripts/ops-test-deps.sh` installs Debian's package): without it this test fails rather
/// than passing unchecked.
#[test]
fn kustomize_builds_the_base() {
    let kubectl = find_tool("kubectl")
        .expect("kubectl not installed: run scripts/ops-test-deps.sh (Debian package kubectl)");
    let out = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(repo_root().join(K8S))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let kinds: BTreeSet<String> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            use serde::Deserialize;
            let v = Value::deserialize(d).unwrap();
            s(&v, "kind").to_string()
        })
        .collect();
    let want: BTreeSet<String> = [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceMonitor",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds, want);
    // The generated names (with their hash) are what the Deployment mounts.
    assert!(text.contains("name: icemaint-config-"), "{text}");
    assert!(text.contains("image: icemaint:0.1.0"), "{text}");
}

/// The probe paths of the Deployment answer 200 on the real daemon.
#[test]
fn probes_answer_on_the_real_daemon() {
    let b = base();
    let c = b.container();
    let d = Daemon::demo();
    for probe in ["livenessProbe", "readinessProbe"] {
        let path = s(c, &format!("{probe}.httpGet.path"));
        let r = d.get(path).unwrap();
        assert_eq!(r.status, 200, "{probe} {path}: {}", r.body);
    }
}

/// The Dockerfile copies sources that exist, builds and runs the crate's binary, and agrees with
/// the Deployment on command, port and user.
#[test]
fn dockerfile_matches_the_crate() {
    let text = repo_file("deploy/Dockerfile");
    // Join continuation lines, drop comments.
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_icemaint"))
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(bin, "icemaint");
    let from: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "multi-stage: builder and runtime");
    assert!(
        from[0].contains("rust:") && from[0].ends_with("AS builder"),
        "{}",
        from[0]
    );
    assert!(
        from[1].contains("debian:") && from[1].contains("-slim"),
        "{}",
        from[1]
    );

    // The Rust version of the builder is the crate's rust-version.
    let manifest: toml::Table = toml::from_str(&repo_file("Cargo.toml")).unwrap();
    let rust_version = manifest["package"]["rust-version"].as_str().unwrap();
    assert!(
        lines.contains(&format!("ARG RUST_VERSION={rust_version}").as_str()),
        "ARG RUST_VERSION should be {rust_version}"
    );

    for l in lines.iter().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = l.split_whitespace().skip(1).collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let (dest, sources) = words.split_last().unwrap();
        assert!(!dest.is_empty());
        for src in sources.iter().filter(|w| !w.starts_with("--")) {
            assert!(
                repo_root().join(src.trim_end_matches('/')).exists(),
                "Dockerfile copies {src}, which is not in the repository"
            );
        }
    }
    assert!(
        joined.contains(&format!("cargo build --release --locked --bin {bin}")),
        "the builder builds --bin {bin}"
    );
    assert!(joined.contains(&format!("target/release/{bin}")));

    let json_list = |prefix: &str| -> Vec<String> {
        let l = lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}"));
        serde_json::from_str(l[prefix.len()..].trim()).unwrap()
    };
    let entry = json_list("ENTRYPOINT");
    assert_eq!(Path::new(&entry[0]).file_name().unwrap(), bin);
    let cmd = json_list("CMD");
    assert_eq!(cmd, ["serve", "--config", "/etc/icemaint/icemaint.toml"]);

    // Same command, port and user as the Deployment.
    let b = base();
    let c = b.container();
    let args: Vec<String> = serde_yaml_ng::from_value(get(c, "args").clone()).unwrap();
    assert_eq!(args, cmd);
    let expose = lines.iter().find(|l| l.starts_with("EXPOSE ")).unwrap();
    assert_eq!(
        expose[7..].trim().parse::<u64>().unwrap(),
        get(&get(c, "ports")[0], "containerPort").as_u64().unwrap()
    );
    let user = lines.iter().find(|l| l.starts_with("USER ")).unwrap()[5..].trim();
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER");
    assert_ne!(uid, 0, "runs as root");
    assert_eq!(
        get(
            b.kind("Deployment"),
            "spec.template.spec.securityContext.runAsUser"
        )
        .as_u64(),
        Some(uid)
    );
}

/// The unit's commands and timeouts fit the daemon, systemd accepts it, and the reload it
/// sends (SIGHUP) really reloads the policies.
#[test]
fn systemd_unit_fits_the_daemon() {
    let text = repo_file("deploy/systemd/icemaint.service");
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in text.lines().map(str::trim) {
        if l.starts_with('#') || l.starts_with('[') || l.is_empty() {
            continue;
        }
        let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("bad line {l}"));
        keys.entry(k.to_string()).or_default().push(v.to_string());
    }
    let one = |k: &str| keys[k][0].as_str();
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(Path::new(exec[0]).file_name().unwrap(), "icemaint");
    assert_eq!(
        exec[1..],
        ["serve", "--config", "/etc/icemaint/icemaint.toml"]
    );
    let stop: u64 = one("TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    let grace = icemaint::config::ServerConfig::default().shutdown_grace_seconds;
    assert!(
        stop > grace,
        "TimeoutStopSec {stop} <= default shutdown-grace-seconds {grace}"
    );
    for hardening in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
    ] {
        assert!(keys.contains_key(hardening), "{hardening} missing");
    }

    {
        // systemd-analyze is a test prerequisite (`scripts/ops-test-deps.sh`): a missing one fails.
        let analyze = find_tool("systemd-analyze")
            .expect("systemd-analyze not installed: run scripts/ops-test-deps.sh (Debian systemd)");
        // verify wants the ExecStart binary to exist: point it at the one cargo built.
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("icemaint.service");
        std::fs::write(&unit, text.replace(exec[0], env!("CARGO_BIN_EXE_icemaint"))).unwrap();
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && msg.trim().is_empty(),
            "systemd-analyze verify: {msg}"
        );
    }

    // What ExecReload sends reloads the policies.
    let d = Daemon::demo();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(
        Duration::from_secs(20),
        "policies reloaded in the log",
        || d.log().contains("policies reloaded").then_some(()),
    );
    assert_eq!(d.get("/healthz").unwrap().status, 200, "still serving");
}
