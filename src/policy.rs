//! Policies: which tables icemaint maintains and how (`policies/*.toml`).
//!
//! A policy selects tables by exact name (`metrics.events`) or glob (`metrics.rollups_*`, where `*`
//! matches within one dot-separated segment, `?` one character of a segment and `**` anything),
//! and declares desired table properties,
//! a reconciliation schedule, and `[compaction]`, `[expire]`, `[orphans]` and `[manifests]`
//! sections. Parsing collects *every* problem with its file and line instead of stopping at the
//! first, so `icemaint check` can report them all at once.
//!
//! When several policies select one table the most specific selector wins: an exact name beats a
//! glob, and a glob with more literal characters beats one with fewer. Two policies whose selectors
//! could select the same table with equal specificity are an error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::compaction::options as copts;
use crate::tomlcheck::{Checker, Problem, join, key_lines, line_of, one_line};
use crate::trigger::{self, TriggerSettings};
use crate::util::parse_duration;

/// The policy file format version this build understands.
pub const POLICY_VERSION: i64 = 1;

/// Errors loading a policy directory: every problem found.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl PolicyError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Invalid(p) => p,
        }
    }
}

/// A cron schedule. Five-field expressions (`*/10 * * * *`) are standard cron; six or seven fields
/// start with seconds (the `cron` crate's format); `@hourly`, `@daily` etc. work too.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expr: String,
    parsed: cron::Schedule,
}

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let trimmed = expr.trim();
        let fields = trimmed.split_whitespace().count();
        let normalized = if !trimmed.starts_with('@') && fields == 5 {
            format!("0 {trimmed}")
        } else {
            trimmed.to_string()
        };
        let parsed = cron::Schedule::from_str(&normalized).map_err(|e| {
            format!(
                "invalid cron expression '{expr}': {}",
                one_line(&e.to_string())
            )
        })?;
        Ok(Self {
            expr: expr.to_string(),
            parsed,
        })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parsed.after(&t).next()
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

/// A table selector: exact `namespace.table` or a glob over that full name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Selector(pub String);

impl Selector {
    pub fn is_glob(&self) -> bool {
        self.0.contains(['*', '?'])
    }

    /// Higher is more specific: exact names beat globs, then more literal characters win.
    pub fn specificity(&self) -> (bool, usize) {
        let literal = self.0.chars().filter(|c| *c != '*' && *c != '?').count();
        (!self.is_glob(), literal)
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }

    /// Whether some table name could match both selectors.
    pub fn overlaps(&self, other: &Selector) -> bool {
        globs_intersect(self.0.as_bytes(), other.0.as_bytes())
    }
}

// Hand-written on purpose: glob crates (globset, glob, wildmatch) match a pattern against a name,
// but policy loading must decide whether two *patterns* can match a common name (overlapping
// selectors of equal specificity are an error), which none of them answers. Matching is the
// special case of intersecting a pattern with a literal, so one small automaton does both.

/// A glob token: `*` and `?` stay inside one name segment (they never match `.`), `**` matches
/// anything, so `*.rollups_*` selects `metrics.rollups_1m` but not `a.b.rollups_1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    One,
    Star,
    DoubleStar,
}

fn tokens(glob: &[u8]) -> Vec<Tok> {
    let mut out = Vec::with_capacity(glob.len());
    let mut i = 0;
    while i < glob.len() {
        match glob[i] {
            b'*' if glob.get(i + 1) == Some(&b'*') => {
                out.push(Tok::DoubleStar);
                i += 2;
                while glob.get(i) == Some(&b'*') {
                    i += 1;
                }
                continue;
            }
            b'*' => out.push(Tok::Star),
            b'?' => out.push(Tok::One),
            c => out.push(Tok::Lit(c)),
        }
        i += 1;
    }
    out
}

fn glob_match(glob: &[u8], name: &[u8]) -> bool {
    let name: Vec<Tok> = name.iter().map(|c| Tok::Lit(*c)).collect();
    globs_intersect_tokens(&tokens(glob), &name)
}

/// Whether the languages of two globs intersect (dynamic programming over token positions).
fn globs_intersect(p: &[u8], q: &[u8]) -> bool {
    globs_intersect_tokens(&tokens(p), &tokens(q))
}

fn globs_intersect_tokens(p: &[Tok], q: &[Tok]) -> bool {
    fn is_star(t: Tok) -> bool {
        matches!(t, Tok::Star | Tok::DoubleStar)
    }
    // Can star `s` produce the single character that token `t` stands for?
    fn absorbs(s: Tok, t: Tok) -> bool {
        s == Tok::DoubleStar || t != Tok::Lit(b'.')
    }
    fn compatible(a: Tok, b: Tok) -> bool {
        match (a, b) {
            (Tok::Lit(x), Tok::Lit(y)) => x == y,
            (Tok::Lit(c), Tok::One) | (Tok::One, Tok::Lit(c)) => c != b'.',
            _ => true,
        }
    }
    let mut memo = vec![vec![None; q.len() + 1]; p.len() + 1];
    fn go(p: &[Tok], q: &[Tok], i: usize, j: usize, memo: &mut Vec<Vec<Option<bool>>>) -> bool {
        if let Some(v) = memo[i][j] {
            return v;
        }
        let r = if i == p.len() && j == q.len() {
            true
        } else if i < p.len() && is_star(p[i]) {
            go(p, q, i + 1, j, memo)
                || (j < q.len()
                    && (is_star(q[j]) || absorbs(p[i], q[j]))
                    && go(p, q, i, j + 1, memo))
        } else if j < q.len() && is_star(q[j]) {
            go(p, q, i, j + 1, memo)
                || (i < p.len() && absorbs(q[j], p[i]) && go(p, q, i + 1, j, memo))
        } else if i < p.len() && j < q.len() {
            compatible(p[i], q[j]) && go(p, q, i + 1, j + 1, memo)
        } else {
            false
        };
        memo[i][j] = Some(r);
        r
    }
    go(p, q, 0, 0, &mut memo)
}

/// `[compaction]`: binpack with Spark's `rewrite_data_files` option names.
#[derive(Debug, Clone, Serialize)]
pub struct CompactionPolicy {
    pub enabled: bool,
    /// `None`: triggered only (a `[compaction.trigger]` table and no `schedule`).
    pub schedule: Option<Schedule>,
    /// `[compaction.trigger]`: health conditions that start a compaction between schedules.
    pub trigger: Option<TriggerSettings>,
    pub strategy: String,
    /// Spark option names to values (as strings), validated by [`copts::resolve`].
    pub options: BTreeMap<String, String>,
    /// `engine`: who rewrites the files (see [`Engine`]).
    pub engine: Engine,
    /// `spark-min-input-bytes`: with `engine = "auto"`, plans reading more than this go to Spark.
    pub spark_min_input_bytes: u64,
}

/// `[compaction] engine`: icemaint's own rewrite, Spark's `rewrite_data_files` through
/// `spark-submit` (the `[spark]` section of the config), or Spark when the plan's input exceeds
/// `spark-min-input-bytes` and native otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Native,
    Spark,
    Auto,
}

impl Engine {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "native" => Some(Self::Native),
            "spark" => Some(Self::Spark),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Spark => "spark",
            Self::Auto => "auto",
        }
    }
}

/// The default `spark-min-input-bytes`: 10 GiB, several minutes of one native rewriter.
pub const DEFAULT_SPARK_MIN_INPUT_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// `[expire]`: Spark `expire_snapshots`.
#[derive(Debug, Clone, Serialize)]
pub struct ExpirePolicy {
    pub enabled: bool,
    pub schedule: Schedule,
    /// Expire snapshots older than this; `None` uses `history.expire.max-snapshot-age-ms` (5 days).
    #[serde(with = "opt_duration")]
    pub older_than: Option<Duration>,
    /// Keep at least this many; `None` uses `history.expire.min-snapshots-to-keep` (1).
    pub retain_last: Option<u32>,
    pub max_concurrent_deletes: usize,
}

/// `[orphans]`: Spark `remove_orphan_files`.
#[derive(Debug, Clone, Serialize)]
pub struct OrphansPolicy {
    pub enabled: bool,
    pub schedule: Schedule,
    #[serde(with = "opt_duration")]
    pub older_than: Option<Duration>,
    pub dry_run: bool,
    pub max_concurrent_deletes: usize,
}

/// `[manifests]`: Spark `rewrite_manifests`.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestsPolicy {
    pub enabled: bool,
    pub schedule: Schedule,
    /// Rewrite when the current snapshot has more manifests than this.
    pub min_manifests: usize,
    /// `commit.manifest.target-size-bytes` unless set.
    pub target_size_bytes: Option<u64>,
}

mod opt_duration {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

/// One parsed policy file.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub name: String,
    pub file: PathBuf,
    pub tables: Vec<Selector>,
    /// Desired table properties (without `format-version`).
    pub properties: BTreeMap<String, String>,
    /// Desired minimum format version (`format-version` under `[properties]`).
    pub format_version: Option<u8>,
    /// When property reconciliation runs.
    pub reconcile_schedule: Schedule,
    pub compaction: Option<CompactionPolicy>,
    pub expire: Option<ExpirePolicy>,
    pub orphans: Option<OrphansPolicy>,
    pub manifests: Option<ManifestsPolicy>,
}

impl Policy {
    /// The most specific of this policy's selectors that matches `table`, if any.
    pub fn best_match(&self, table: &str) -> Option<&Selector> {
        self.tables
            .iter()
            .filter(|s| s.matches(table))
            .max_by_key(|s| s.specificity())
    }
}

/// All loaded policies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
}

impl PolicySet {
    /// The policy that governs `table` (`namespace.name`), if any.
    pub fn resolve(&self, table: &str) -> Option<&Policy> {
        self.policies
            .iter()
            .filter_map(|p| p.best_match(table).map(|s| (s.specificity(), p)))
            .max_by_key(|(spec, _)| *spec)
            .map(|(_, p)| p)
    }

    /// Loads every `*.toml` file of `dir` (sorted by name) and checks overlaps between them.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            PolicyError::Invalid(vec![Problem {
                file: dir.display().to_string(),
                line: 0,
                message: format!("cannot read policy directory: {e}"),
            }])
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(text) => sources.push((f, text)),
                Err(e) => problems.push(Problem {
                    file: f.display().to_string(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        match Self::parse_sources(&sources) {
            Ok(set) if problems.is_empty() => Ok(set),
            Ok(_) => Err(PolicyError::Invalid(problems)),
            Err(PolicyError::Invalid(mut more)) => {
                problems.append(&mut more);
                Err(PolicyError::Invalid(problems))
            }
        }
    }

    /// Parses policy sources given as (path, text) and checks overlaps between them.
    pub fn parse_sources(sources: &[(PathBuf, String)]) -> Result<Self, PolicyError> {
        let mut problems = Vec::new();
        let mut policies = Vec::new();
        let mut lines: Vec<LineIndex> = Vec::new();
        for (path, text) in sources {
            let (policy, idx, mut ps) = parse_policy_lenient(path, text);
            problems.append(&mut ps);
            if let Some(p) = policy {
                policies.push(p);
                lines.push(idx);
            }
        }
        let mut names: HashMap<&str, &Path> = HashMap::new();
        for p in &policies {
            if let Some(prev) = names.insert(&p.name, &p.file) {
                problems.push(Problem {
                    file: p.file.display().to_string(),
                    line: 1,
                    message: format!(
                        "policy name '{}' is also used by {}",
                        p.name,
                        prev.display()
                    ),
                });
            }
        }
        for (i, a) in policies.iter().enumerate() {
            for (j, b) in policies.iter().enumerate().skip(i + 1) {
                for sa in &a.tables {
                    for sb in &b.tables {
                        if sa.specificity() == sb.specificity() && sa.overlaps(sb) {
                            problems.push(Problem {
                                file: b.file.display().to_string(),
                                line: lines[j].table_line(&sb.0),
                                message: format!(
                                    "selector '{}' overlaps '{}' of policy '{}' ({}:{}) with equal specificity: make one more specific",
                                    sb.0,
                                    sa.0,
                                    a.name,
                                    a.file.display(),
                                    lines[i].table_line(&sa.0)
                                ),
                            });
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(Self { policies })
        } else {
            Err(PolicyError::Invalid(problems))
        }
    }
}

/// Line numbers of keys (dotted paths) and of `tables` entries in one policy file.
#[derive(Debug, Default)]
pub struct LineIndex {
    keys: HashMap<String, usize>,
    tables: HashMap<String, usize>,
}

impl LineIndex {
    fn build(text: &str) -> Self {
        let mut tables = HashMap::new();
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            let entries = doc.get_ref().iter().find(|(k, _)| k.get_ref() == "tables");
            if let Some((_, v)) = entries
                && let toml::de::DeValue::Array(items) = v.get_ref()
            {
                for item in items.iter() {
                    if let Some(s) = item.get_ref().as_str() {
                        tables.insert(s.to_string(), line_of(text, item.span().start));
                    }
                }
            }
        }
        LineIndex {
            keys: key_lines(text),
            tables,
        }
    }

    fn line(&self, path: &str) -> usize {
        self.keys.get(path).copied().unwrap_or(1)
    }

    fn table_line(&self, selector: &str) -> usize {
        self.tables
            .get(selector)
            .copied()
            .unwrap_or_else(|| self.line("tables"))
    }
}

/// The policy-specific readers on top of [`Checker`]'s.
trait PolicyValues {
    fn schedule(&mut self, section: &str, t: &toml::Table, default: &str) -> Schedule;
    fn duration(&mut self, section: &str, t: &toml::Table, key: &str) -> Option<Duration>;
}

impl PolicyValues for Checker {
    fn schedule(&mut self, section: &str, t: &toml::Table, default: &str) -> Schedule {
        let key = join(section, "schedule");
        match t.get("schedule") {
            None => Schedule::parse(default).expect("default schedules are valid"),
            Some(toml::Value::String(s)) => match Schedule::parse(s) {
                Ok(s) => s,
                Err(e) => {
                    self.err(&key, format!("'{key}': {e}"));
                    Schedule::parse(default).expect("default schedules are valid")
                }
            },
            Some(other) => {
                self.err(
                    &key,
                    format!("'{key}' must be a cron string, not {}", other.type_str()),
                );
                Schedule::parse(default).expect("default schedules are valid")
            }
        }
    }

    fn duration(&mut self, section: &str, t: &toml::Table, key: &str) -> Option<Duration> {
        let path = join(section, key);
        match t.get(key)? {
            toml::Value::String(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(&path, format!("'{path}': {e}"));
                    None
                }
            },
            other => {
                self.err(
                    &path,
                    format!(
                        "'{path}' must be a duration string like \"5d\" or \"12h\", not {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "version",
    "name",
    "tables",
    "properties",
    "reconcile",
    "compaction",
    "expire",
    "orphans",
    "manifests",
];
const DEFAULT_RECONCILE: &str = "0 */10 * * * *";
const DEFAULT_COMPACTION: &str = "0 0 * * * *";
const DEFAULT_EXPIRE: &str = "0 15 * * * *";
const DEFAULT_ORPHANS: &str = "0 0 4 * * *";
const DEFAULT_MANIFESTS: &str = "0 30 4 * * *";
/// Deletes in flight per expiry or orphan-removal run (Spark deletes with a thread pool too).
pub const DEFAULT_MAX_CONCURRENT_DELETES: usize = 16;

/// Parses one policy file; on failure returns every problem found.
pub fn parse_policy(path: &Path, text: &str) -> Result<(Policy, LineIndex), Vec<Problem>> {
    let (policy, idx, problems) = parse_policy_lenient(path, text);
    match policy {
        Some(p) if problems.is_empty() => Ok((p, idx)),
        _ => Err(problems),
    }
}

/// Parses one policy file as far as it can: the policy (with defaults where values were bad, so
/// cross-file checks still run), its line index, and every problem. `None` when the file is not
/// TOML at all.
fn parse_policy_lenient(path: &Path, text: &str) -> (Option<Policy>, LineIndex, Vec<Problem>) {
    let file = path.display().to_string();
    let doc: toml::Table = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            let problem = Problem {
                file,
                line,
                message: one_line(e.message()),
            };
            return (None, LineIndex::default(), vec![problem]);
        }
    };
    let idx = LineIndex::build(text);
    // Line 1 for a key the file does not have: the problem is still about this file.
    let mut cx = Checker::new(file, idx.keys.clone(), 1);
    // The sections are checked in file-format order so problems come out in a stable order.
    cx.unknown_keys("", &doc, TOP_KEYS);
    check_version(&mut cx, &doc);
    let name = policy_name(&mut cx, &doc, path);
    let tables = policy_tables(&mut cx, &idx, &doc);
    let (properties, format_version) = policy_properties(&mut cx, &doc);
    let reconcile_schedule = reconcile_schedule(&mut cx, &doc);
    let compaction = cx
        .section(&doc, "compaction")
        .map(|t| compaction_policy(&mut cx, t));
    let expire = cx
        .section(&doc, "expire")
        .map(|t| expire_policy(&mut cx, t));
    let orphans = cx
        .section(&doc, "orphans")
        .map(|t| orphans_policy(&mut cx, t));
    let manifests = cx
        .section(&doc, "manifests")
        .map(|t| manifests_policy(&mut cx, t));

    let problems = cx.problems;
    (
        Some(Policy {
            name,
            file: path.to_path_buf(),
            tables,
            properties,
            format_version,
            reconcile_schedule,
            compaction,
            expire,
            orphans,
            manifests,
        }),
        idx,
        problems,
    )
}

/// Top-level `version`: must be [`POLICY_VERSION`].
fn check_version(cx: &mut Checker, doc: &toml::Table) {
    match doc.get("version") {
        Some(toml::Value::Integer(POLICY_VERSION)) => {}
        Some(v) => cx.err(
            "version",
            format!("unsupported policy version {v} (this build reads version = {POLICY_VERSION})"),
        ),
        None => cx.problem_at(1, format!("missing 'version = {POLICY_VERSION}'")),
    }
}

/// Top-level `name`, defaulting to the file's stem.
fn policy_name(cx: &mut Checker, doc: &toml::Table, path: &Path) -> String {
    match doc.get("name") {
        Some(toml::Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => {
            cx.err("name", "'name' must be a non-empty string");
            String::new()
        }
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default(),
    }
}

/// Top-level `tables`: valid, distinct selectors, each problem on the line of its entry.
fn policy_tables(cx: &mut Checker, idx: &LineIndex, doc: &toml::Table) -> Vec<Selector> {
    let mut tables = Vec::new();
    match doc.get("tables") {
        Some(toml::Value::Array(items)) if !items.is_empty() => {
            let mut seen = HashSet::new();
            for item in items {
                match item {
                    toml::Value::String(s) => {
                        let line = idx.table_line(s);
                        match validate_selector(s) {
                            Ok(()) if seen.insert(s.clone()) => tables.push(Selector(s.clone())),
                            Ok(()) => cx.problem_at(line, format!("duplicate selector '{s}'")),
                            Err(m) => cx.problem_at(line, m),
                        }
                    }
                    other => cx.err(
                        "tables",
                        format!("'tables' entries must be strings, not {}", other.type_str()),
                    ),
                }
            }
        }
        Some(_) => cx.err(
            "tables",
            "'tables' must be a non-empty array of names or globs, e.g. [\"metrics.rollups_*\"]",
        ),
        None => cx.problem_at(
            1,
            "missing 'tables = [...]' (table names or globs this policy selects)",
        ),
    }
    tables
}

/// `[properties]`: desired table properties as strings, with `format-version` split off.
fn policy_properties(
    cx: &mut Checker,
    doc: &toml::Table,
) -> (BTreeMap<String, String>, Option<u8>) {
    let mut properties = BTreeMap::new();
    let mut format_version = None;
    if let Some(props) = cx.section(doc, "properties") {
        for (k, v) in props {
            let path = format!("properties.{k}");
            let value = match v {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(n) => Some(n.to_string()),
                toml::Value::Boolean(b) => Some(b.to_string()),
                toml::Value::Float(f) => Some(f.to_string()),
                other => {
                    cx.err(
                        &path,
                        format!(
                            "property '{k}' must be a string, integer or boolean, not {}",
                            other.type_str()
                        ),
                    );
                    None
                }
            };
            let Some(value) = value else { continue };
            if k == "format-version" {
                match value.parse::<u8>() {
                    Ok(v @ 1..=2) => format_version = Some(v),
                    _ => cx.err(
                        &path,
                        format!("'format-version' must be 1 or 2, not {value}"),
                    ),
                }
            } else if let Some(problem) = check_property(k, &value) {
                cx.err(&path, problem);
            } else {
                properties.insert(k.clone(), value);
            }
        }
    }
    (properties, format_version)
}

/// `[reconcile]`: when property reconciliation runs.
fn reconcile_schedule(cx: &mut Checker, doc: &toml::Table) -> Schedule {
    match cx.section(doc, "reconcile") {
        Some(t) => {
            cx.unknown_keys("reconcile", t, &["schedule"]);
            cx.schedule("reconcile", t, DEFAULT_RECONCILE)
        }
        None => Schedule::parse(DEFAULT_RECONCILE).expect("valid"),
    }
}

/// `[compaction]`: every key besides `enabled`, `schedule`, `strategy` and the `trigger` table
/// (read by [`trigger::parse`]) is a Spark option,
/// checked by [`copts::resolve`] rather than against a fixed key list.
fn compaction_policy(cx: &mut Checker, t: &toml::Table) -> CompactionPolicy {
    let enabled = cx.bool("compaction", t, "enabled", true);
    let trigger = cx
        .section(t, "compaction.trigger")
        .map(|tt| trigger::parse(cx, tt));
    // A trigger table without a schedule means "on conditions only".
    let schedule = (trigger.is_none() || t.contains_key("schedule"))
        .then(|| cx.schedule("compaction", t, DEFAULT_COMPACTION));
    let strategy = compaction_strategy(cx, t);
    let mut options = BTreeMap::new();
    for (k, v) in t {
        if matches!(
            k.as_str(),
            "enabled" | "schedule" | "strategy" | "trigger" | "engine" | "spark-min-input-bytes"
        ) {
            continue;
        }
        let path = format!("compaction.{k}");
        let value = match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => {
                cx.err(
                    &path,
                    format!("option '{k}' must be a scalar, not {}", other.type_str()),
                );
                continue;
            }
        };
        options.insert(k.clone(), value);
    }
    if let Err(errors) = copts::resolve(&options, &HashMap::new()) {
        for e in errors {
            let path = format!("compaction.{}", e.key);
            cx.err(&path, e.to_string());
        }
    }
    let engine = compaction_engine(cx, t);
    if engine != Engine::Native {
        spark_only_options(cx, &options);
    }
    CompactionPolicy {
        enabled,
        schedule,
        trigger,
        strategy,
        options,
        engine,
        spark_min_input_bytes: cx
            .uint("compaction", t, "spark-min-input-bytes", 1)
            .unwrap_or(DEFAULT_SPARK_MIN_INPUT_BYTES),
    }
}

/// With `engine = "spark"` or `"auto"` a run may go to Spark, which is given only the options
/// its `rewrite_data_files` knows: report icemaint's own options here, as the run would refuse them.
fn spark_only_options(cx: &mut Checker, options: &BTreeMap<String, String>) {
    for k in options.keys() {
        if k != copts::WHERE && !copts::SPARK_OPTIONS.contains(&k.as_str()) {
            cx.err(
                &format!("compaction.{k}"),
                format!(
                    "option '{k}' is icemaint's own, not a Spark rewrite_data_files option: unset it or use engine native"
                ),
            );
        }
    }
}

/// `compaction.engine`: `native` (default), `spark` or `auto`.
fn compaction_engine(cx: &mut Checker, t: &toml::Table) -> Engine {
    let Some(s) = cx.string("compaction", t, "engine") else {
        return Engine::default();
    };
    Engine::parse(&s).unwrap_or_else(|| {
        cx.err(
            "compaction.engine",
            format!("unknown engine '{s}' (expected native, spark or auto)"),
        );
        Engine::default()
    })
}

/// `compaction.strategy`: only `binpack` is implemented.
fn compaction_strategy(cx: &mut Checker, t: &toml::Table) -> String {
    match t.get("strategy") {
        None => "binpack".to_string(),
        Some(toml::Value::String(s)) if s == "binpack" => s.clone(),
        Some(toml::Value::String(s)) => {
            cx.err(
                "compaction.strategy",
                format!("unsupported strategy '{s}' (icemaint implements 'binpack')"),
            );
            s.clone()
        }
        Some(other) => {
            cx.err(
                "compaction.strategy",
                format!(
                    "'compaction.strategy' must be a string, not {}",
                    other.type_str()
                ),
            );
            "binpack".to_string()
        }
    }
}

/// `[expire]`.
fn expire_policy(cx: &mut Checker, t: &toml::Table) -> ExpirePolicy {
    cx.unknown_keys(
        "expire",
        t,
        &[
            "enabled",
            "schedule",
            "older-than",
            "retain-last",
            "max-concurrent-deletes",
        ],
    );
    ExpirePolicy {
        enabled: cx.bool("expire", t, "enabled", true),
        schedule: cx.schedule("expire", t, DEFAULT_EXPIRE),
        older_than: cx.duration("expire", t, "older-than"),
        retain_last: cx.uint("expire", t, "retain-last", 1).map(|n| n as u32),
        max_concurrent_deletes: cx
            .uint("expire", t, "max-concurrent-deletes", 1)
            .unwrap_or(DEFAULT_MAX_CONCURRENT_DELETES as u64)
            as usize,
    }
}

/// `[orphans]`.
fn orphans_policy(cx: &mut Checker, t: &toml::Table) -> OrphansPolicy {
    cx.unknown_keys(
        "orphans",
        t,
        &[
            "enabled",
            "schedule",
            "older-than",
            "dry-run",
            "max-concurrent-deletes",
        ],
    );
    let older_than = cx.duration("orphans", t, "older-than");
    if let Some(d) = older_than
        && d < Duration::from_secs(86_400)
    {
        cx.err(
            "orphans.older-than",
            "'orphans.older-than' under 1d could delete files of commits still in flight; use at least 1d",
        );
    }
    OrphansPolicy {
        enabled: cx.bool("orphans", t, "enabled", true),
        schedule: cx.schedule("orphans", t, DEFAULT_ORPHANS),
        older_than,
        dry_run: cx.bool("orphans", t, "dry-run", false),
        max_concurrent_deletes: cx
            .uint("orphans", t, "max-concurrent-deletes", 1)
            .unwrap_or(DEFAULT_MAX_CONCURRENT_DELETES as u64)
            as usize,
    }
}

/// `[manifests]`.
fn manifests_policy(cx: &mut Checker, t: &toml::Table) -> ManifestsPolicy {
    cx.unknown_keys(
        "manifests",
        t,
        &["enabled", "schedule", "min-manifests", "target-size-bytes"],
    );
    ManifestsPolicy {
        enabled: cx.bool("manifests", t, "enabled", true),
        schedule: cx.schedule("manifests", t, DEFAULT_MANIFESTS),
        min_manifests: cx.uint("manifests", t, "min-manifests", 2).unwrap_or(100) as usize,
        target_size_bytes: cx.uint("manifests", t, "target-size-bytes", 1),
    }
}

fn validate_selector(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("empty table selector".into());
    }
    if let Some(c) = s.chars().find(|c| matches!(c, '[' | ']' | '{' | '}' | ' ')) {
        return Err(format!(
            "selector '{s}': unsupported character '{c}' (use exact names or '*' and '?' globs)"
        ));
    }
    if !s.contains('.') {
        return Err(format!(
            "selector '{s}' must name namespace and table, e.g. 'metrics.{s}' or '*.{s}'"
        ));
    }
    Ok(())
}

/// Checks values of well-known Iceberg properties; unknown keys pass (tables carry custom ones).
fn check_property(key: &str, value: &str) -> Option<String> {
    let positive_int = |v: &str| v.parse::<u64>().ok().filter(|n| *n > 0).is_some();
    match key {
        "read.split.target-size"
        | "write.target-file-size-bytes"
        | "write.metadata.previous-versions-max"
        | "commit.manifest.target-size-bytes"
        | "history.expire.max-snapshot-age-ms"
        | "history.expire.min-snapshots-to-keep"
        | "write.parquet.row-group-size-bytes"
        | "write.parquet.page-size-bytes"
            if !positive_int(value) =>
        {
            Some(format!(
                "property '{key}' must be a positive integer, not '{value}'"
            ))
        }
        "write.metadata.delete-after-commit.enabled" | "gc.enabled"
            if value != "true" && value != "false" =>
        {
            Some(format!(
                "property '{key}' must be true or false, not '{value}'"
            ))
        }
        "write.distribution-mode" if !matches!(value, "none" | "hash" | "range") => Some(format!(
            "property 'write.distribution-mode' must be none, hash or range, not '{value}'"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn parse(text: &str) -> Result<Policy, Vec<Problem>> {
        parse_policy(Path::new("p.toml"), text).map(|(p, _)| p)
    }

    const GOOD: &str = r#"
version = 1
tables = ["*.rollups_*", "metrics.special"]

[properties]
"read.split.target-size" = 268435456
"write.distribution-mode" = "hash"
format-version = 2

[compaction]
schedule = "*/30 * * * *"
strategy = "binpack"
target-file-size-bytes = 536870912
min-input-files = 2

[expire]
older-than = "5d"
retain-last = 3

[orphans]
older-than = "3d"
dry-run = true
"#;

    #[test]
    fn parses_a_full_policy() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.name, "p");
        assert_eq!(p.tables.len(), 2);
        assert_eq!(p.format_version, Some(2));
        assert_eq!(p.properties["read.split.target-size"], "268435456");
        assert!(!p.properties.contains_key("format-version"));
        let c = p.compaction.unwrap();
        assert_eq!(c.options["min-input-files"], "2");
        assert_eq!(c.schedule.as_ref().unwrap().expr, "*/30 * * * *");
        assert!(c.trigger.is_none());
        let e = p.expire.unwrap();
        assert_eq!(e.older_than, Some(Duration::from_secs(5 * 86400)));
        assert_eq!(e.retain_last, Some(3));
        assert!(p.orphans.unwrap().dry_run);
    }

    #[test]
    fn the_compaction_engine_is_read_and_checked() {
        let c = parse(GOOD).unwrap().compaction.unwrap();
        assert_eq!(c.engine, Engine::Native);
        assert_eq!(c.spark_min_input_bytes, DEFAULT_SPARK_MIN_INPUT_BYTES);
        let text = "version = 1\ntables = [\"a.b\"]\n[compaction]\nengine = \"auto\"\nspark-min-input-bytes = 1000\n";
        let c = parse(text).unwrap().compaction.unwrap();
        assert_eq!((c.engine, c.spark_min_input_bytes), (Engine::Auto, 1000));
        assert!(c.options.is_empty(), "{:?}", c.options);
        let bad = "version = 1\ntables = [\"a.b\"]\n[compaction]\nengine = \"flink\"\nspark-min-input-bytes = 0\n";
        let rendered: Vec<String> = parse(bad)
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(rendered.len(), 2, "{rendered:#?}");
        assert!(
            rendered[0].contains("unknown engine 'flink'"),
            "{rendered:#?}"
        );
    }

    #[test]
    fn icemaint_only_options_are_reported_for_a_spark_engine() {
        let text = "version = 1\ntables = [\"a.b\"]\n[compaction]\nengine = \"auto\"\nhot-partition-age = \"1h\"\nmin-input-files = 2\n";
        let problems: Vec<String> = parse(text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("p.toml:5:")
                && problems[0].contains("option 'hot-partition-age' is icemaint's own"),
            "{problems:#?}"
        );
        let native = text.replace("engine = \"auto\"\n", "");
        assert!(parse(&native).is_ok());
    }

    #[test]
    fn a_trigger_table_without_a_schedule_compacts_on_conditions_only() {
        let base = "version = 1\ntables = [\"a.b\"]\n[compaction]\ntarget-file-size-bytes = 1000\n[compaction.trigger]\nsmall-file-count = 8\nmin-interval = \"30m\"\n";
        let c = parse(base).unwrap().compaction.unwrap();
        assert!(c.schedule.is_none());
        let t = c.trigger.unwrap();
        assert_eq!(t.small_file_count, Some(8));
        assert_eq!(t.min_interval, Duration::from_secs(1800));
        assert!(!c.options.contains_key("trigger"), "not a Spark option");
        let both = base.replace(
            "[compaction]\n",
            "[compaction]\nschedule = \"0 0 * * * *\"\n",
        );
        let c = parse(&both).unwrap().compaction.unwrap();
        assert_eq!(c.schedule.unwrap().expr, "0 0 * * * *");
        // No trigger table: the default hourly schedule, as before.
        let plain = parse("version = 1\ntables = [\"a.b\"]\n[compaction]\n").unwrap();
        assert!(plain.compaction.unwrap().schedule.is_some());
        // `icemaint check` reports bad trigger settings on their lines.
        let bad = base.replace("small-file-count = 8", "small-file-count = -1");
        let problems: Vec<String> = parse(&bad)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            ["p.toml:6: 'compaction.trigger.small-file-count' must be at least 1, not -1"]
        );
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = "version = 1\ntables = [\"nodot\"]\nbogus = 1\n[compaction]\nschedule = \"not a cron\"\ntarget-file-size-bytes = \"big\"\nno-such-option = 1\n[expire]\nolder-than = \"5x\"\n";
        let problems = parse(text).unwrap_err();
        let rendered: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let has = |line: usize, needle: &str| {
            rendered
                .iter()
                .any(|r| r.starts_with(&format!("p.toml:{line}:")) && r.contains(needle))
        };
        assert!(has(2, "nodot"), "{rendered:#?}");
        assert!(has(3, "unknown key 'bogus'"), "{rendered:#?}");
        assert!(has(5, "invalid cron"), "{rendered:#?}");
        assert!(has(6, "target-file-size-bytes"), "{rendered:#?}");
        assert!(has(7, "no-such-option"), "{rendered:#?}");
        assert!(has(9, "unknown unit"), "{rendered:#?}");
        assert!(rendered.iter().all(|r| !r.contains('\n')), "{rendered:#?}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let problems = parse("version = 1\ntables = [\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].line >= 2, "{:?}", problems[0]);
    }

    #[test]
    fn bad_values_are_rejected() {
        let cases = [
            (
                "version = 2\ntables=[\"a.b\"]\n",
                "unsupported policy version",
            ),
            (
                "version = 1\ntables=[\"a.b\"]\n[properties]\nformat-version = 3\n",
                "format-version",
            ),
            (
                "version = 1\ntables=[\"a.b\"]\n[properties]\n\"read.split.target-size\" = \"-1\"\n",
                "positive integer",
            ),
            (
                "version = 1\ntables=[\"a.b\"]\n[properties]\n\"write.distribution-mode\" = \"zorder\"\n",
                "none, hash or range",
            ),
            (
                "version = 1\ntables=[\"a.b\"]\n[orphans]\nolder-than = \"2h\"\n",
                "under 1d",
            ),
            (
                "version = 1\ntables=[\"a.b\"]\n[compaction]\nstrategy = \"sort\"\n",
                "unsupported strategy",
            ),
            ("version = 1\ntables=[]\n", "non-empty array"),
            ("version = 1\ntables=[\"a.[b]\"]\n", "unsupported character"),
        ];
        for (text, needle) in cases {
            let problems = parse(text).unwrap_err();
            assert!(
                problems.iter().any(|p| p.message.contains(needle)),
                "{text:?}: {problems:?}"
            );
        }
    }

    #[test]
    fn glob_matching() {
        let cases = [
            ("*.rollups_*", "metrics.rollups_1m", true),
            ("*.rollups_*", "metrics.rollups_", true),
            ("*.rollups_*", "metrics.repartitioned_data", false),
            ("*.repartitioned_data*", "metrics.repartitioned_data", true),
            (
                "*.repartitioned_data*",
                "metrics.repartitioned_data_v2",
                true,
            ),
            ("metrics.t?", "metrics.t1", true),
            ("metrics.t?", "metrics.t12", false),
            ("metrics.events", "metrics.events", true),
            ("metrics.events", "metrics.events2", false),
            ("*.rollups_*", "a.b.rollups_1m", false),
            ("**.rollups_*", "a.b.rollups_1m", true),
            ("metrics.*", "metrics.a.b", false),
        ];
        for (glob, name, want) in cases {
            assert_eq!(Selector(glob.into()).matches(name), want, "{glob} {name}");
        }
    }

    #[test]
    fn glob_overlap() {
        let cases = [
            ("*.rollups_*", "metrics.*", true),
            ("*.rollups_*", "*.repartitioned_data*", false),
            ("a.b", "a.b", true),
            ("a.?", "a.bb", false),
            ("*x", "y*", true),
            ("a.*z", "a.*y", false),
            ("metrics.*", "**", true),
            ("a.*", "*.b", true),
            ("a.?", "*.b.c", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                Selector(a.into()).overlaps(&Selector(b.into())),
                want,
                "{a} {b}"
            );
            assert_eq!(
                Selector(b.into()).overlaps(&Selector(a.into())),
                want,
                "{b} {a}"
            );
        }
    }

    fn src(name: &str, tables: &str) -> (PathBuf, String) {
        (
            PathBuf::from(format!("{name}.toml")),
            format!("version = 1\ntables = [{tables}]\n"),
        )
    }

    #[test]
    fn most_specific_selector_wins() {
        let set = PolicySet::parse_sources(&[
            src("broad", "\"metrics.*\""),
            src("rollups", "\"metrics.rollups_*\""),
            src("exact", "\"metrics.rollups_1m\""),
        ])
        .unwrap();
        assert_eq!(set.resolve("metrics.rollups_1m").unwrap().name, "exact");
        assert_eq!(set.resolve("metrics.rollups_5m").unwrap().name, "rollups");
        assert_eq!(set.resolve("metrics.other").unwrap().name, "broad");
        assert!(set.resolve("other.table").is_none());
    }

    #[test]
    fn equal_specificity_overlap_is_an_error() {
        let err = PolicySet::parse_sources(&[src("a", "\"*.rollups\""), src("b", "\"metrics.*\"")])
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("b.toml:2:"), "{msg}");
        assert!(msg.contains("overlaps"), "{msg}");
        // Different specificity: fine.
        PolicySet::parse_sources(&[src("a", "\"*.rollups_*\""), src("b", "\"metrics.*\"")])
            .unwrap();
    }

    #[test]
    fn cron_next_fire_with_injected_clock() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 12, 3, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 12, 10, 0).unwrap())
        );
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(
            daily.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap())
        );
        let six = Schedule::parse("30 0 * * * *").unwrap();
        assert_eq!(
            six.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 13, 0, 30).unwrap())
        );
        assert!(Schedule::parse("61 * * * *").is_err());
    }

    #[test]
    fn shipped_policies_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let set = PolicySet::load_dir(&dir).unwrap();
        let rollups = set.resolve("metrics.rollups_1m").unwrap();
        let raw = set.resolve("metrics.repartitioned_data").unwrap();
        for p in [rollups, raw] {
            assert_eq!(p.format_version, Some(2));
            assert_eq!(p.properties["read.split.target-size"], "268435456");
            assert_eq!(p.properties["write.distribution-mode"], "hash");
            assert_eq!(
                p.properties["write.metadata.delete-after-commit.enabled"],
                "true"
            );
            assert_eq!(p.properties["write.metadata.previous-versions-max"], "10");
            let c = p.compaction.as_ref().unwrap();
            assert_eq!(c.options["target-file-size-bytes"], "536870912");
        }
        assert_ne!(rollups.name, raw.name);
    }
}
