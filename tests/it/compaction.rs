//! Binpack compaction end to end, against real catalogs, storages and third-party readers.
//!
//! Tables are written by PyIceberg (`make_table.py`, `pyiceberg_ops.py`), Spark (position deletes)
//! or, for delete files placed at a precise moment and for equality deletes (which no installed
//! third-party writer produces), by iceberg-rust's writers, committed through icemaint's own
//! snapshot producer (iceberg-rust 0.10.1's `fast_append` takes data files only). They are
//! compacted by the `icemaint compact` CLI, the daemon's API, or (to put another writer's commit
//! deterministically between planning and committing) the library's `prepare` / `execute`.
//!
//! Every case checks, against the state read BEFORE the compaction:
//! - rows and the order-independent checksum through PyIceberg and DuckDB (`verify.py`; Spark in
//!   the Spark case; DuckDB alone while equality deletes are live) are unchanged (or, with a
//!   concurrent writer, equal to a twin table that got the same writes), and the readers agree;
//! - the file count went down as planned (`--dry-run --json` plan, `table_info` data files);
//! - the catalog accepted the commit: a new current `replace` snapshot (exactly one unless a
//!   conflict split the commit), child of the starting one, with `icemaint.job-id` and the right
//!   `added-data-files` / `deleted-data-files`.
//!
//! Cases: unpartitioned (SQL catalog, local files); identity + day partitions with files per
//! partition bounded by the target and no group crossing a partition (REST); partition spec
//! evolution (SQL); schema evolution, old rows null in the new column (SQL catalog on s3s-fs);
//! Spark position deletes, then Spark reading and appending to the compacted table (REST);
//! equality deletes, one of them committed during the rewrite (SQL); an append during the rewrite
//! (REST); a copy-on-write delete (SQL) or a position delete (REST) during the rewrite refusing
//! only the groups it touched (partial progress); a group that cannot be rewritten, without partial
//! progress (nothing commits); empty and already-compacted tables (no-op); the daemon stopped
//! (SIGTERM) and the CLI killed (SIGKILL) mid-rewrite; bad options on the CLI and the API (400);
//! the daemon's API with a lock held by another process (409) on a SQL catalog with moto S3; and
//! the `icemaint demo` acceptance run.
//!
//! Tables are named `metrics.*` and selected by a policy the fixture writes (compaction on a
//! schedule that never fires during a test); `--option min-input-files=2` suits their few files
//! per partition. Each test prints `[compaction] <name> finished in <s>` (see `--nocapture`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use iceberg::spec::{
    DataContentType, DataFile, DataFileFormat, ManifestContentType, NestedField, Operation,
    PrimitiveType, Schema, Struct, Type,
};
use iceberg::writer::base_writer::equality_delete_writer::{
    EqualityDeleteFileWriterBuilder, EqualityDeleteWriterConfig,
};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use icemaint::catalog::CatalogHandle;
use icemaint::commit::summary::{SummaryDelta, build_summary};
use icemaint::commit::{
    BuiltSnapshot, ReplaceError, RetryPolicy, SnapshotChange, SnapshotProducer, commit_change,
};
use icemaint::compaction::{self, Env, Report};
use icemaint::fence::Fence;
use icemaint::telemetry::Metrics;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::daemon::{Daemon, icemaint, repo_policies, write_config};
use crate::harness::{
    CatalogSpec, RestCatalogServer, S3Server, TestDir, Verify, make_table, path_str, pyiceberg_ops,
    table_info, tool, verify,
};

/// The test policy: every table of namespace `metrics`, compaction on a schedule that never fires
/// during a test (only the tests start compactions), no properties to reconcile.
const POLICY: &str = r#"version = 1
name = "compaction-it"
tables = ["metrics.*"]

[compaction]
schedule = "0 0 0 1 1 *"
strategy = "binpack"
"#;

/// `--option min-input-files=2`: the test tables have a few small files per partition.
const MIN2: &[&str] = &["min-input-files=2"];

// ---------------------------------------------------------------------------------------------
// Fixture: a catalog + storage, a policy directory and an icemaint config
// ---------------------------------------------------------------------------------------------

struct Fx {
    name: &'static str,
    started: Instant,
    spec: CatalogSpec,
    config: PathBuf,
    /// Where the tables' files are on this machine (`None` for moto, which keeps them in memory).
    data_root: Option<PathBuf>,
    _rest: Option<RestCatalogServer>,
    _s3: Option<S3Server>,
    dir: TestDir,
}

impl Fx {
    fn with(
        name: &'static str,
        dir: TestDir,
        spec: CatalogSpec,
        data_root: Option<PathBuf>,
        rest: Option<RestCatalogServer>,
        s3: Option<S3Server>,
    ) -> Fx {
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("compaction-it.toml"), POLICY).unwrap();
        let config = write_config(&dir, &spec, &policies, "");
        Fx {
            name,
            started: Instant::now(),
            spec,
            config,
            data_root,
            _rest: rest,
            _s3: s3,
            dir,
        }
    }

    /// SQL catalog (SQLite) with a local `file://` warehouse.
    fn sql(name: &'static str) -> Fx {
        let dir = TestDir::new(name);
        let spec = CatalogSpec::sql(dir.join("catalog.db"), dir.uri("warehouse"));
        let root = dir.join("warehouse");
        Fx::with(name, dir, spec, Some(root), None, None)
    }

    /// The Java REST catalog server (JdbcCatalog, local warehouse; its locations are `file:/x`).
    fn rest(name: &'static str) -> Fx {
        let dir = TestDir::new(name);
        let rest = RestCatalogServer::start(&dir.join("warehouse"));
        let spec = CatalogSpec::rest(rest.uri());
        let root = rest.warehouse().to_path_buf();
        Fx::with(name, dir, spec, Some(root), Some(rest), None)
    }

    /// SQL catalog with an `s3://lake/wh` warehouse on s3s-fs (objects are files under its
    /// data directory, so the tests can still list and read them).
    fn sql_s3s(name: &'static str) -> Fx {
        let dir = TestDir::new(name);
        let s3 = S3Server::start_s3s(&dir.join("s3"));
        std::fs::create_dir_all(dir.join("s3/lake")).unwrap();
        let spec = CatalogSpec::sql(dir.join("catalog.db"), "s3://lake/wh").with_s3(s3.access());
        let root = s3.data_dir().unwrap().join("lake/wh");
        Fx::with(name, dir, spec, Some(root), None, Some(s3))
    }

    /// SQL catalog with an `s3://lake/wh` warehouse on moto (in memory).
    fn sql_moto(name: &'static str) -> Fx {
        let dir = TestDir::new(name);
        let s3 = S3Server::start_moto();
        let spec = CatalogSpec::sql(dir.join("catalog.db"), "s3://lake/wh").with_s3(s3.access());
        Fx::with(name, dir, spec, None, None, Some(s3))
    }

    fn config_str(&self) -> &str {
        path_str(&self.config)
    }

    /// `icemaint compact TABLE --config C --json [--option O]... [extra]...`.
    fn cli(&self, table: &str, options: &[&str], extra: &[&str]) -> (i32, String, String) {
        let mut args = vec!["compact", table, "--config", self.config_str(), "--json"];
        for o in options {
            args.extend(["--option", o]);
        }
        args.extend(extra);
        icemaint(&args)
    }

    /// The `--dry-run --json` plan.
    fn plan(&self, table: &str, options: &[&str]) -> Value {
        let (code, out, err) = self.cli(table, options, &["--dry-run"]);
        assert_eq!(code, 0, "dry run failed:\n{out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("dry-run JSON: {e}\n{out}"))
    }

    /// Runs a compaction through the CLI; asserts exit 0 and returns its JSON.
    fn compact(&self, table: &str, options: &[&str]) -> Value {
        let (code, out, err) = self.cli(table, options, &[]);
        assert_eq!(code, 0, "compaction failed:\n{out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("compact JSON: {e}\n{out}"))
    }

    /// Rows and checksum through PyIceberg and DuckDB; the readers must agree.
    fn verify(&self, table: &str) -> Verify {
        let v = verify(&self.spec, table, true, false);
        assert!(v.agree, "readers disagree on {table}: {}", v.raw);
        v
    }

    fn info(&self, table: &str) -> Value {
        table_info(&self.spec, table)
    }

    /// A local path for a table file location (`file:/x`, `file:///x`, or `s3://lake/...` on
    /// s3s-fs); `None` on moto.
    fn local_file(&self, location: &str) -> Option<PathBuf> {
        if let Some(rest) = location.strip_prefix("file:") {
            return Some(PathBuf::from(format!("/{}", rest.trim_start_matches('/'))));
        }
        let key = location.strip_prefix("s3://lake/wh/")?;
        Some(self.data_root.as_ref()?.join(key))
    }

    /// Every Parquet file under the warehouse (data and delete files of all tables).
    fn parquet_files(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        if let Some(root) = &self.data_root {
            walk(root, &mut out);
        }
        out
    }

    fn done(self) {
        eprintln!(
            "[compaction] {} finished in {:.1} s",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}

fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.insert(p);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What a compaction must have done
// ---------------------------------------------------------------------------------------------

fn u(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

fn files(info: &Value) -> &Vec<Value> {
    info["data_files"].as_array().expect("data_files")
}

fn snapshots(info: &Value) -> &Vec<Value> {
    info["snapshots"].as_array().expect("snapshots")
}

/// The snapshot with this id in `table_info` output.
fn snapshot<'a>(info: &'a Value, id: &Value) -> &'a Value {
    snapshots(info)
        .iter()
        .find(|s| s["snapshot_id"] == *id)
        .unwrap_or_else(|| panic!("no snapshot {id} in {info}"))
}

/// `spec_id|partition` of a data file in `table_info` output.
fn partition_key(f: &Value) -> String {
    format!("{}|{}", f["spec_id"], f["partition"])
}

/// Checks the catalog side of one successful compaction (one snapshot, as without partial
/// progress): the CLI/job `report` against `plan` and the tables before and after.
/// `outputs_as_planned`: the written file count equals the plan's estimate (not when rows move to
/// another partition spec, where one input partition fans out).
fn assert_replace_commit(
    report: &Value,
    job_id: &str,
    plan: &Value,
    before: &Value,
    after: &Value,
    outputs_as_planned: bool,
) {
    let p = &plan["plan"];
    let groups = p["groups"].as_array().unwrap().len() as u64;
    assert!(groups > 0, "nothing planned: {plan}");
    assert_eq!(u(&report["groups_planned"]), groups, "{report}");
    assert_eq!(u(&report["groups_committed"]), groups, "{report}");
    assert_eq!(u(&report["conflicts"]), 0, "{report}");
    assert_eq!(u(&report["groups_failed"]), 0, "{report}");
    assert_eq!(u(&report["files_read"]), u(&p["rewrite_files"]), "{report}");
    assert_eq!(u(&report["bytes_read"]), u(&p["rewrite_bytes"]), "{report}");
    if outputs_as_planned {
        assert_eq!(
            u(&report["files_written"]),
            u(&p["expected_output_files"]),
            "{report}\n{plan}"
        );
    }
    assert_eq!(
        report["starting_snapshot_id"],
        before["current_snapshot_id"]
    );
    assert_eq!(report["starting_snapshot_id"], plan["snapshot_id"]);
    let ids = report["snapshot_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "one replace snapshot: {report}");

    // The catalog: exactly one new snapshot, the current one, a child of the starting one.
    assert_eq!(
        snapshots(after).len(),
        snapshots(before).len() + 1,
        "one new snapshot"
    );
    assert_eq!(after["current_snapshot_id"], ids[0]);
    let s = snapshot(after, &ids[0]);
    assert_eq!(s["operation"], "replace", "{s}");
    assert_eq!(s["parent_id"], before["current_snapshot_id"], "{s}");
    let sum = &s["summary"];
    assert_eq!(sum["icemaint.job-id"], job_id, "{s}");
    assert_eq!(
        u(&sum["added-data-files"]),
        u(&report["files_written"]),
        "{s}"
    );
    assert_eq!(
        u(&sum["deleted-data-files"]),
        u(&report["files_read"]),
        "{s}"
    );
    assert_eq!(
        u(&sum["total-data-files"]),
        files(after).len() as u64,
        "{s}"
    );
    assert_eq!(
        u(&sum["added-files-size"]),
        u(&report["bytes_written"]),
        "{s}"
    );

    // Live files: the planned inputs are gone, the outputs are the files the snapshot added.
    let planned: HashSet<&str> = p["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["files"].as_array().unwrap())
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let live_before: HashSet<&str> = files(before)
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let live_after: HashSet<&str> = files(after)
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(planned.is_subset(&live_before), "planned files were live");
    assert!(planned.is_disjoint(&live_after), "replaced files are gone");
    let added: Vec<&Value> = files(after)
        .iter()
        .filter(|f| !live_before.contains(f["path"].as_str().unwrap()))
        .collect();
    assert_eq!(added.len() as u64, u(&report["files_written"]));
    assert!(added.iter().all(|f| f["snapshot_id"] == ids[0]), "{after}");
    assert_eq!(
        files(after).len(),
        files(before).len() - planned.len() + added.len(),
        "file count went down as planned"
    );
    // The rewritten rows keep the starting snapshot's data sequence number.
    let start_seq = &snapshot(before, &before["current_snapshot_id"])["sequence_number"];
    assert!(
        added.iter().all(|f| f["sequence_number"] == *start_seq),
        "new files carry the starting sequence number {start_seq}: {added:?}"
    );
}

/// Rows, checksum and reader agreement unchanged.
fn assert_same_rows(before: &Verify, after: &Verify) {
    assert!(
        after.agree,
        "readers disagree after compaction: {}",
        after.raw
    );
    assert_eq!(
        (after.rows, &after.checksum),
        (before.rows, &before.checksum),
        "rows changed"
    );
}

/// One compaction through the CLI and what the table looked like around it.
struct Compacted {
    /// The CLI's JSON (`job_id`, `status`, `result`: the report).
    out: Value,
    before: Value,
    after: Value,
    before_v: Verify,
    after_v: Verify,
}

/// One compaction through the CLI with the full set of checks.
fn compact_and_check(
    fx: &Fx,
    table: &str,
    options: &[&str],
    outputs_as_planned: bool,
) -> Compacted {
    let before_v = fx.verify(table);
    let before = fx.info(table);
    let plan = fx.plan(table, options);
    let out = fx.compact(table, options);
    assert_eq!(out["status"], "succeeded", "{out}");
    assert!(out.get("error").is_none(), "{out}");
    let job_id = out["job_id"].as_str().unwrap();
    let after = fx.info(table);
    assert_replace_commit(
        &out["result"],
        job_id,
        &plan,
        &before,
        &after,
        outputs_as_planned,
    );
    let after_v = fx.verify(table);
    assert_same_rows(&before_v, &after_v);
    assert_eq!(after_v.data_files, files(&after).len() as u64);
    Compacted {
        out,
        before,
        after,
        before_v,
        after_v,
    }
}

// ---------------------------------------------------------------------------------------------
// Library access (for commits placed deterministically between planning and committing)
// ---------------------------------------------------------------------------------------------

/// A library catalog handle on `spec`, as icemaint's config would give it.
pub async fn connect(spec: &CatalogSpec) -> CatalogHandle {
    #[derive(serde::Deserialize)]
    struct Root {
        catalog: icemaint::config::CatalogConfig,
    }
    let c = toml::from_str::<Root>(&spec.config_toml())
        .expect("catalog config")
        .catalog;
    CatalogHandle::connect(&c).await.expect("connect catalog")
}

fn overrides(options: &[&str]) -> BTreeMap<String, String> {
    options
        .iter()
        .map(|o| {
            let (k, v) = o.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

async fn execute(catalog: &CatalogHandle, prepared: compaction::Prepared, job_id: &str) -> Report {
    let metrics = Metrics::new();
    let env = Env {
        catalog,
        backend: catalog.committer().await.expect("commit backend"),
        metrics: &metrics,
        cancel: CancellationToken::new(),
        fence: &Fence::none(),
        job_id: job_id.to_string(),
        progress: Box::new(|_| {}),
    };
    compaction::execute(&env, prepared)
        .await
        .expect("execute compaction")
}

/// A row delta adding delete files (iceberg-rust 0.10.1's `fast_append` accepts data files only):
/// the parent's manifests carried, one new delete manifest, operation `delete`.
struct AddDeletes {
    files: Vec<DataFile>,
}

#[async_trait::async_trait]
impl SnapshotChange for AddDeletes {
    fn describe(&self) -> String {
        format!("add {} delete files", self.files.len())
    }

    async fn build(
        &self,
        producer: &mut SnapshotProducer<'_>,
    ) -> Result<BuiltSnapshot, ReplaceError> {
        let table = producer.table();
        let md = table.metadata();
        let parent = md.current_snapshot().expect("table has a snapshot");
        let list = table.manifest_list_reader(parent).load().await?;
        let seq = producer.sequence_number();
        let mut writer = producer.new_manifest_writer(
            ManifestContentType::Deletes,
            md.current_schema().clone(),
            md.default_partition_spec().as_ref().clone(),
        )?;
        let mut records = 0;
        let mut size = 0;
        for f in &self.files {
            records += f.record_count();
            size += f.file_size_in_bytes();
            writer.add_file(f.clone(), seq)?;
        }
        let mut manifests = vec![writer.write_manifest_file().await?];
        manifests.extend(list.entries().iter().cloned());
        let n = self.files.len().to_string();
        let kind = match self.files[0].content_type() {
            DataContentType::EqualityDeletes => "equality",
            _ => "position",
        };
        let props = HashMap::from([
            ("added-delete-files".to_string(), n.clone()),
            (format!("added-{kind}-delete-files"), n),
            (format!("added-{kind}-deletes"), records.to_string()),
            ("added-files-size".to_string(), size.to_string()),
        ]);
        let summary = build_summary(
            &SummaryDelta::default(),
            Some(&parent.summary().additional_properties),
            &props,
        );
        Ok(BuiltSnapshot {
            operation: Operation::Delete,
            manifests,
            summary,
        })
    }
}

/// Writes one position-delete file deleting rows `positions` of data file `data_path` (its path as
/// the manifests spell it) of an unpartitioned table, and commits it. Returns the new snapshot id.
async fn commit_position_delete(
    catalog: &CatalogHandle,
    table: &str,
    data_path: &str,
    positions: std::ops::Range<i64>,
) -> i64 {
    let t = catalog.load(table).await.unwrap();
    let md = t.metadata();
    assert!(md.default_partition_spec().is_unpartitioned());
    // The spec's position delete schema: file_path (2147483546), pos (2147483545).
    let schema = Arc::new(
        Schema::builder()
            .with_fields(vec![
                NestedField::required(
                    2_147_483_546,
                    "file_path",
                    Type::Primitive(PrimitiveType::String),
                )
                .into(),
                NestedField::required(2_147_483_545, "pos", Type::Primitive(PrimitiveType::Long))
                    .into(),
            ])
            .build()
            .unwrap(),
    );
    let parquet = ParquetWriterBuilder::new(WriterProperties::default(), schema.clone());
    let mut writer = RollingFileWriterBuilder::new_with_default_file_size(
        parquet,
        t.file_io().clone(),
        DefaultLocationGenerator::new(md).unwrap(),
        DefaultFileNameGenerator::new(
            format!("it-pos-delete-{}", uuid::Uuid::new_v4()),
            None,
            DataFileFormat::Parquet,
        ),
    )
    .build();
    let n = (positions.end - positions.start) as usize;
    let batch = RecordBatch::try_new(
        Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema).unwrap()),
        vec![
            Arc::new(StringArray::from(vec![data_path; n])),
            Arc::new(Int64Array::from_iter_values(positions)),
        ],
    )
    .unwrap();
    writer.write(&None, &batch).await.unwrap();
    let files: Vec<DataFile> = writer
        .close()
        .await
        .unwrap()
        .into_iter()
        .map(|mut b| {
            b.content(DataContentType::PositionDeletes)
                .partition(Struct::empty())
                .partition_spec_id(md.default_partition_spec_id())
                .referenced_data_file(Some(data_path.to_string()));
            b.build().unwrap()
        })
        .collect();
    assert_eq!(files.len(), 1);
    let backend = catalog.committer().await.unwrap();
    commit_change(
        catalog.catalog.as_ref(),
        backend.as_ref(),
        t.identifier(),
        &AddDeletes { files },
        &RetryPolicy::from_table_properties(md.properties()),
        &Fence::none(),
    )
    .await
    .expect("commit position delete")
    .snapshot_id
}

/// Writes one equality-delete file on `metric_name` (field id 2) for an unpartitioned metrics
/// table, deleting every row whose `metric_name` is one of `names`, and commits it. Returns the new
/// snapshot id.
async fn commit_equality_delete(catalog: &CatalogHandle, table: &str, names: &[&str]) -> i64 {
    let t = catalog.load(table).await.unwrap();
    let md = t.metadata();
    assert!(
        md.default_partition_spec().is_unpartitioned(),
        "one global delete file needs an unpartitioned table"
    );
    let schema = md.current_schema().clone();
    let config = EqualityDeleteWriterConfig::new(vec![2], schema.clone()).unwrap();
    let delete_schema =
        iceberg::arrow::arrow_schema_to_schema(config.projected_arrow_schema_ref()).unwrap();
    let parquet = ParquetWriterBuilder::new(WriterProperties::default(), Arc::new(delete_schema));
    let rolling = RollingFileWriterBuilder::new_with_default_file_size(
        parquet,
        t.file_io().clone(),
        DefaultLocationGenerator::new(md).unwrap(),
        // A unique prefix: the generator numbers files per writer, from 0.
        DefaultFileNameGenerator::new(
            format!("it-eq-delete-{}", uuid::Uuid::new_v4()),
            None,
            DataFileFormat::Parquet,
        ),
    );
    let mut writer = EqualityDeleteFileWriterBuilder::new(rolling, config)
        .build(None)
        .await
        .unwrap();
    // Rows in the table's full schema; the writer projects them onto the equality columns.
    let arrow_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema).unwrap());
    let columns: Vec<ArrayRef> = arrow_schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            if f.name() == "metric_name" {
                Arc::new(StringArray::from(names.to_vec()))
            } else {
                arrow_array::new_null_array(f.data_type(), names.len())
            }
        })
        .collect();
    writer
        .write(RecordBatch::try_new(arrow_schema, columns).unwrap())
        .await
        .unwrap();
    let files = writer.close().await.unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].content_type(), DataContentType::EqualityDeletes);
    let backend = catalog.committer().await.unwrap();
    let outcome = commit_change(
        catalog.catalog.as_ref(),
        backend.as_ref(),
        t.identifier(),
        &AddDeletes { files },
        &RetryPolicy::from_table_properties(md.properties()),
        &Fence::none(),
    )
    .await
    .expect("commit equality delete");
    outcome.snapshot_id
}

/// Runs a blocking tool call off the async runtime's worker.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("tool thread")
}

// ---------------------------------------------------------------------------------------------
// Parquet contents of written files
// ---------------------------------------------------------------------------------------------

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The values of column `name` as strings (via Arrow's display; nulls as `None`).
fn column_strings(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", b.schema()));
        let fmt = arrow_cast::display::ArrayFormatter::try_new(
            col.as_ref(),
            &arrow_cast::display::FormatOptions::default(),
        )
        .unwrap();
        for i in 0..col.len() {
            out.push(col.is_valid(i).then(|| fmt.value(i).to_string()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// Case 1 (+ 8, 11): unpartitioned table on a SQL catalog, local files; a second run is a no-op.
#[test]
fn unpartitioned_table_compacts_then_second_run_is_a_noop() {
    let fx = Fx::sql("compact-unpartitioned");
    let t = "metrics.unpartitioned";
    make_table(
        &fx.spec,
        t,
        &["--partition", "none", "--appends", "10", "--rows", "300"],
    );
    let Compacted { out, after, .. } = compact_and_check(&fx, t, MIN2, true);
    assert_eq!(u(&out["result"]["files_read"]), 10);
    assert_eq!(u(&out["result"]["files_written"]), 1);
    assert_eq!(files(&after).len(), 1);
    assert_eq!(files(&after)[0]["partition"], json!({}));

    // Already compacted: nothing to do, no snapshot, job skipped (exit 0).
    let again = fx.compact(t, MIN2);
    assert_eq!(again["status"], "skipped", "{again}");
    assert_eq!(again["result"]["reason"], "nothing to compact", "{again}");
    let info = fx.info(t);
    assert_eq!(info["current_snapshot_id"], after["current_snapshot_id"]);
    assert_eq!(snapshots(&info).len(), snapshots(&after).len());
    fx.done();
}

/// Case 2 (+ 11): identity(org_id) + day(ts) partitions on the REST catalog; output files per
/// partition bounded by ceil(partition bytes / target), no group crosses a partition, and every
/// row of a written file belongs to the file's partition.
#[test]
fn partitioned_table_keeps_partitions_and_target_size() {
    let fx = Fx::rest("compact-partitioned");
    let t = "metrics.partitioned";
    // 5 orgs x 4 days = 20 partitions, 3 files of ~37 KB each.
    make_table(&fx.spec, t, &["--appends", "60", "--rows", "2000"]);
    let target: u64 = 60_000;
    let target_opt = format!("target-file-size-bytes={target}");
    let opts = ["min-input-files=2", target_opt.as_str()];

    // The plan: one group per partition, each group's files all in its partition.
    let plan = fx.plan(t, &opts);
    let groups = plan["plan"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 20, "{plan}");
    let mut seen = HashSet::new();
    for g in groups {
        assert!(seen.insert(g["partition"].as_str().unwrap()), "{g}");
        for f in g["files"].as_array().unwrap() {
            assert_eq!(
                f["partition"], g["partition"],
                "group crosses a partition: {g}"
            );
            assert_eq!(f["spec_id"], g["spec_id"]);
        }
    }

    // A `where` on partition columns plans only the matching partitions.
    let filtered = fx.plan(
        t,
        &[&opts[..], &["where=org_id = 3 AND ts < '2025-01-03'"]].concat(),
    );
    let parts: BTreeSet<&str> = filtered["plan"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["partition"].as_str().unwrap())
        .collect();
    assert_eq!(
        parts,
        BTreeSet::from(["org_id=3/ts_day=2025-01-01", "org_id=3/ts_day=2025-01-02"]),
        "{filtered}"
    );

    let Compacted { before, after, .. } = compact_and_check(&fx, t, &opts, true);

    // Per partition: the same records, and at most ceil(bytes / target) files.
    let mut records: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut bytes_before: BTreeMap<String, u64> = BTreeMap::new();
    for f in files(&before) {
        records.entry(partition_key(f)).or_default().0 += u(&f["records"]);
        *bytes_before.entry(partition_key(f)).or_default() += u(&f["size"]);
    }
    let mut count_after: BTreeMap<String, u64> = BTreeMap::new();
    for f in files(&after) {
        records.entry(partition_key(f)).or_default().1 += u(&f["records"]);
        *count_after.entry(partition_key(f)).or_default() += 1;
    }
    for (p, (b, a)) in &records {
        assert_eq!(b, a, "records of partition {p}");
    }
    assert_eq!(count_after.len(), 20);
    for (p, n) in &count_after {
        let bound = bytes_before[p].div_ceil(target);
        assert!(
            *n <= bound,
            "partition {p}: {n} files > ceil({} / {target})",
            bytes_before[p]
        );
        assert!(*n >= 1);
    }

    // The rows of each new file are in the file's partition.
    let before_paths: HashSet<&str> = files(&before)
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for f in files(&after)
        .iter()
        .filter(|f| !before_paths.contains(f["path"].as_str().unwrap()))
    {
        let path = fx.local_file(f["path"].as_str().unwrap()).unwrap();
        let batches = read_parquet(&path);
        let org = f["partition"]["org_id"].as_str().unwrap();
        let day = f["partition"]["ts_day"].as_str().unwrap();
        let orgs = column_strings(&batches, "org_id");
        assert_eq!(orgs.len() as u64, u(&f["records"]));
        assert!(orgs.iter().all(|o| o.as_deref() == Some(org)), "{f}");
        let ts = column_strings(&batches, "ts");
        assert!(
            ts.iter()
                .all(|t| t.as_deref().is_some_and(|t| t.starts_with(day))),
            "rows outside day {day} in {f}"
        );
    }
    fx.done();
}

/// Case 3: the partition spec evolved mid-history; the old spec's files, small and so candidates,
/// are packed together (as Spark does) and rewritten into the current spec.
#[test]
fn files_of_an_old_partition_spec_move_to_the_current_spec() {
    let fx = Fx::sql("compact-spec-evolution");
    let t = "metrics.spec_evolved";
    let shape = ["--rows", "300", "--orgs", "2", "--days", "2"];
    make_table(&fx.spec, t, &[&["--appends", "8"][..], &shape].concat());
    let evolved = pyiceberg_ops(
        &fx.spec,
        t,
        "evolve-spec",
        &["--remove-field", "ts_day", "--add-bucket", "metric_name:2"],
    );
    assert_eq!(evolved["spec_id"], 1, "{evolved}");
    pyiceberg_ops(
        &fx.spec,
        t,
        "append",
        &[
            &["--seed", "42", "--appends", "4", "--index", "8"][..],
            &shape,
        ]
        .concat(),
    );
    let before = fx.info(t);
    assert_eq!(before["default_spec_id"], 1);
    let old_spec = files(&before).iter().filter(|f| f["spec_id"] == 0).count();
    assert_eq!(old_spec, 8, "{before}");

    let plan = fx.plan(t, MIN2);
    assert_eq!(plan["output_spec_id"], 1);
    let after = compact_and_check(&fx, t, MIN2, false).after;
    assert!(
        files(&after).iter().all(|f| f["spec_id"] == 1),
        "every live file is in the current spec: {after}"
    );
    for f in files(&after) {
        let keys: Vec<&String> = f["partition"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["metric_name_bucket_2", "org_id"], "{f}");
    }
    fx.done();
}

/// Case 4 (+ 11 on s3s-fs): a column added mid-history; rows written before it read as null in
/// the new column, in the readers and in the rewritten Parquet files.
#[test]
fn schema_evolution_keeps_nulls_for_old_rows_on_s3() {
    let fx = Fx::sql_s3s("compact-schema-evolution");
    let t = "metrics.schema_evolved";
    let shape = ["--rows", "300", "--orgs", "2", "--days", "2"];
    make_table(&fx.spec, t, &[&["--appends", "8"][..], &shape].concat());
    pyiceberg_ops(&fx.spec, t, "add-column", &["--name", "note"]);
    pyiceberg_ops(
        &fx.spec,
        t,
        "append",
        &[
            &[
                "--seed",
                "42",
                "--appends",
                "4",
                "--index",
                "8",
                "--extra-column",
                "note",
            ][..],
            &shape,
        ]
        .concat(),
    );
    let Compacted { after, after_v, .. } = compact_and_check(&fx, t, MIN2, true);
    assert_eq!(after_v.rows, 3600);

    // The written files carry the new column: null for the 8 x 300 old rows, the values of the
    // 4 x 300 new ones.
    let mut nulls = 0;
    let mut values = 0;
    for f in files(&after) {
        let path = fx.local_file(f["path"].as_str().unwrap()).unwrap();
        for n in column_strings(&read_parquet(&path), "note") {
            match n {
                None => nulls += 1,
                Some(s) => {
                    assert!(s.starts_with("j-"), "{s}");
                    values += 1;
                }
            }
        }
    }
    assert_eq!((nulls, values), (2400, 1200));
    fx.done();
}

/// Case 5 (position deletes) + 12: a table written by Spark with merge-on-read position deletes
/// (REST catalog) compacts with the deletes applied and, with `remove-dangling-deletes`, the
/// delete files dropped in the same snapshot; Spark then reads the compacted table through the
/// catalog and appends to it, and every reader sees the union.
#[test]
fn spark_position_deletes_applied_then_spark_reads_and_appends() {
    let fx = Fx::rest("compact-spark");
    let t = "metrics.spark_deletes";
    let made = tool(
        "spark_make_table.py",
        &fx.spec,
        t,
        &[
            "--appends",
            "3",
            "--files-per-append",
            "4",
            "--rows",
            "500",
            "--orgs",
            "2",
            "--days",
            "2",
            "--delete-where",
            "value < 10",
            "--delete-mode",
            "merge-on-read",
        ],
    );
    let Compacted {
        before_v: before,
        after,
        after_v,
        out,
        ..
    } = compact_and_check(
        &fx,
        t,
        &["min-input-files=2", "remove-dangling-deletes=true"],
        true,
    );
    assert!(before.delete_files > 0, "{made}");
    assert!(before.rows < 6000, "the delete removed rows: {made}");
    // Every data file Spark's position deletes named was replaced: the deletes went with them.
    assert_eq!(after_v.delete_files, 0, "{}", after_v.raw);
    assert_eq!(
        u(&out["result"]["delete_files_removed"]),
        before.delete_files,
        "{out}"
    );
    let snap = snapshot(&after, &after["current_snapshot_id"]);
    assert_eq!(
        u(&snap["summary"]["removed-delete-files"]),
        before.delete_files,
        "{snap}"
    );
    // Deletes are applied in the output: the live data files hold exactly the visible rows.
    let records: u64 = files(&after).iter().map(|f| u(&f["records"])).sum();
    assert_eq!(records, before.rows);
    assert_eq!(u(&after_v.files["data_records"]), before.rows);

    let spark = tool(
        "spark_append.py",
        &fx.spec,
        t,
        &["--rows", "300", "--orgs", "2", "--days", "2"],
    );
    assert_eq!(
        (
            u(&spark["before"]["rows"]),
            spark["before"]["checksum"].as_str().unwrap()
        ),
        (before.rows, before.checksum.as_str()),
        "Spark reads the compacted table: {spark}"
    );
    assert_eq!(spark["snapshot"]["operation"], "append", "{spark}");
    assert_eq!(
        spark["snapshot"]["summary"]["added-records"], "300",
        "{spark}"
    );
    let sum = |a: &Value, b: &Value| {
        let p = |v: &Value| u64::from_str_radix(v.as_str().unwrap(), 16).unwrap();
        format!("{:016x}", p(a).wrapping_add(p(b)))
    };
    assert_eq!(
        spark["after"]["checksum"].as_str().unwrap(),
        sum(&spark["before"]["checksum"], &spark["appended"]["checksum"]),
        "{spark}"
    );
    // Every reader, Spark included, sees the compacted rows plus Spark's.
    let appended = verify(&fx.spec, t, true, true);
    assert!(appended.agree, "{}", appended.raw);
    assert!(appended.reader("spark").is_some(), "{}", appended.raw);
    assert_eq!(appended.rows, before.rows + 300);
    assert_eq!(
        appended.checksum,
        spark["after"]["checksum"].as_str().unwrap()
    );
    fx.done();
}

/// Case 5 (equality deletes) + 7 (an equality delete committed during the rewrite). PyIceberg
/// 0.12 reads no equality deletes and Spark SQL writes none, so iceberg-rust writes them and
/// DuckDB reads them; the expected rows come from twin tables where PyIceberg deleted the same
/// rows copy-on-write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equality_deletes_applied_and_a_concurrent_one_still_applies() {
    let fx = Fx::sql("compact-equality-deletes");
    let t = "metrics.eq_deletes";
    let shape = ["--partition", "none", "--appends", "6", "--rows", "400"];
    let (spec, twin_spec) = (fx.spec.clone(), fx.spec.clone());
    blocking(move || {
        make_table(&spec, "metrics.eq_deletes", &shape);
        let del = [
            "--delete-where",
            "metric_name in ('metric_07', 'metric_13')",
        ];
        let cow = ["--delete-mode", "copy-on-write"];
        make_table(
            &twin_spec,
            "metrics.eq_twin",
            &[&shape[..], &del, &cow].concat(),
        );
    })
    .await;
    let catalog = connect(&fx.spec).await;
    let first = commit_equality_delete(&catalog, t, &["metric_07", "metric_13"]).await;

    let (spec, fxs) = (fx.spec.clone(), fx.spec.clone());
    let (twin1, v1) = blocking(move || {
        (
            verify(&spec, "metrics.eq_twin", true, false),
            verify(&fxs, "metrics.eq_deletes", true, false),
        )
    })
    .await;
    assert!(twin1.agree && twin1.rows < 2400, "{}", twin1.raw);
    let duck = |v: &Verify| v.reader("duckdb").expect("duckdb read the table");
    assert_eq!(
        duck(&v1),
        (twin1.rows, twin1.checksum.clone()),
        "{}",
        v1.raw
    );
    assert!(
        v1.raw["readers"]["pyiceberg"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("equality deletes")),
        "{}",
        v1.raw
    );

    // Plan, then another equality delete lands, then rewrite and commit.
    let prepared = compaction::prepare(&catalog, t, &BTreeMap::new(), &overrides(MIN2))
        .await
        .unwrap();
    assert_eq!(prepared.plan.groups.len(), 1);
    assert_eq!(prepared.plan.groups[0].files.len(), 6);
    let second = commit_equality_delete(&catalog, t, &["metric_21"]).await;
    let report = execute(&catalog, prepared, "it-eq-deletes").await;
    assert_eq!(
        (
            report.groups_committed,
            report.conflicts,
            report.files_written
        ),
        (1, 0, 1),
        "equality deletes added after the start do not conflict: {report:?}"
    );

    let spec = fx.spec.clone();
    let (twin2, v2, info) = blocking(move || {
        pyiceberg_ops(
            &spec,
            "metrics.eq_twin",
            "delete",
            &["--where", "metric_name == 'metric_21'"],
        );
        (
            verify(&spec, "metrics.eq_twin", true, false),
            verify(&spec, "metrics.eq_deletes", true, false),
            table_info(&spec, "metrics.eq_deletes"),
        )
    })
    .await;
    assert!(twin2.agree && twin2.rows < twin1.rows, "{}", twin2.raw);
    // No deleted row came back: DuckDB sees exactly the twin's rows.
    assert_eq!(
        duck(&v2),
        (twin2.rows, twin2.checksum.clone()),
        "{}",
        v2.raw
    );
    // The first delete is applied in the output file; the second still applies to it through
    // sequence numbers: the file keeps the starting snapshot's, below the second delete's.
    let live = files(&info);
    assert_eq!(live.len(), 1, "{info}");
    assert_eq!(u(&live[0]["records"]), twin1.rows);
    let seq = |id: i64| snapshot(&info, &json!(id))["sequence_number"].clone();
    assert_eq!(live[0]["sequence_number"], seq(first), "{info}");
    assert!(u(&live[0]["sequence_number"]) < u(&seq(second)), "{info}");
    let replace = snapshot(&info, &info["current_snapshot_id"]);
    assert_eq!(replace["operation"], "replace");
    assert_eq!(replace["parent_id"], json!(second));
    assert_eq!(replace["summary"]["icemaint.job-id"], "it-eq-deletes");
    fx.done();
}

/// Case 6 (+ REST): another writer appends between planning and committing; its rows survive.
/// The expected table is a twin that got the same appends and no compaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_during_the_rewrite_survives() {
    let fx = Fx::rest("compact-concurrent-append");
    let t = "metrics.concurrent_append";
    let shape = ["--rows", "300", "--orgs", "2", "--days", "2"];
    let spec = fx.spec.clone();
    let before = blocking(move || {
        make_table(
            &spec,
            "metrics.concurrent_append",
            &[&["--appends", "12"][..], &shape].concat(),
        );
        let v = verify(&spec, "metrics.concurrent_append", true, false);
        (v, table_info(&spec, "metrics.concurrent_append"))
    })
    .await;
    let catalog = connect(&fx.spec).await;
    let prepared = compaction::prepare(&catalog, t, &BTreeMap::new(), &overrides(MIN2))
        .await
        .unwrap();
    assert_eq!(prepared.plan.groups.len(), 4);

    // The same generator as make_table (seed 42), appends 12 and 13.
    let spec = fx.spec.clone();
    let appended = blocking(move || {
        let args = [
            &["--seed", "42", "--appends", "2", "--index", "12"][..],
            &shape,
        ]
        .concat();
        pyiceberg_ops(&spec, "metrics.concurrent_append", "append", &args)
    })
    .await;
    let report = execute(&catalog, prepared, "it-concurrent-append").await;
    assert_eq!(
        (
            report.groups_committed,
            report.conflicts,
            report.files_read,
            report.files_written
        ),
        (4, 0, 12, 4),
        "{report:?}"
    );

    let spec = fx.spec.clone();
    let (twin, after_v, after) = blocking(move || {
        make_table(
            &spec,
            "metrics.twin",
            &[&["--appends", "14"][..], &shape].concat(),
        );
        (
            verify(&spec, "metrics.twin", true, false),
            verify(&spec, "metrics.concurrent_append", true, false),
            table_info(&spec, "metrics.concurrent_append"),
        )
    })
    .await;
    assert!(after_v.agree, "{}", after_v.raw);
    assert_eq!(
        (after_v.rows, &after_v.checksum),
        (twin.rows, &twin.checksum)
    );
    assert_eq!(after_v.rows, before.0.rows + 600);
    // 4 compacted files + the 2 appended ones; the replace sits on top of the appends.
    assert_eq!(files(&after).len(), 6, "{after}");
    let appends: HashSet<&Value> = appended["snapshot_ids"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(
        files(&after)
            .iter()
            .filter(|f| appends.contains(&f["snapshot_id"]))
            .count(),
        2
    );
    let replace = snapshot(&after, &after["current_snapshot_id"]);
    assert_eq!(replace["operation"], "replace");
    assert_eq!(replace["parent_id"], appended["snapshot_id"]);
    assert_eq!(replace["summary"]["added-data-files"], "4");
    assert_eq!(replace["summary"]["deleted-data-files"], "12");
    assert_eq!(snapshots(&after).len(), snapshots(&before.1).len() + 3);
    fx.done();
}

/// Case 7 with partial progress: a copy-on-write delete rewrites files of two planned groups
/// between planning and committing: those groups are refused, the others commit, no deleted row
/// comes back, and the files the refused groups wrote are removed. (Without partial progress
/// nothing commits: `compaction_parity`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_during_the_rewrite_refuses_only_the_groups_it_touched() {
    let fx = Fx::sql("compact-concurrent-delete");
    let t = "metrics.concurrent_delete";
    let spec = fx.spec.clone();
    let before = blocking(move || {
        let args = [
            "--appends",
            "12",
            "--rows",
            "300",
            "--orgs",
            "2",
            "--days",
            "2",
        ];
        make_table(&spec, "metrics.concurrent_delete", &args);
        verify(&spec, "metrics.concurrent_delete", true, false)
    })
    .await;
    let catalog = connect(&fx.spec).await;
    let opts = overrides(&[MIN2[0], "partial-progress.enabled=true"]);
    let prepared = compaction::prepare(&catalog, t, &BTreeMap::new(), &opts)
        .await
        .unwrap();
    assert_eq!(prepared.plan.groups.len(), 4);

    let spec = fx.spec.clone();
    let (deleted, after_delete) = blocking(move || {
        let t = "metrics.concurrent_delete";
        let d = pyiceberg_ops(
            &spec,
            t,
            "delete",
            &["--where", "org_id == 0 and value < 10.0"],
        );
        (d, verify(&spec, t, true, false))
    })
    .await;
    assert!(after_delete.agree);
    assert!(after_delete.rows < before.rows, "{deleted}");
    let on_disk_before = fx.parquet_files();

    let report = execute(&catalog, prepared, "it-concurrent-delete").await;
    assert_eq!(report.groups_planned, 4, "{report:?}");
    assert_eq!(report.groups_rewritten, 4, "{report:?}");
    assert_eq!(
        report.conflicts, 2,
        "the org 0 groups are refused: {report:?}"
    );
    assert_eq!(
        report.groups_committed, 2,
        "the org 1 groups commit: {report:?}"
    );
    assert_eq!(report.groups_failed, 0, "{report:?}");
    assert_eq!(report.errors.len(), 2, "{report:?}");
    assert!(
        report
            .errors
            .iter()
            .all(|e| e.contains("validation failed: missing required files to delete")),
        "{report:?}"
    );
    // One commit per group (4 groups, up to 10 commits): the refused ones are dropped.
    assert_eq!(report.snapshot_ids.len(), 2, "{report:?}");

    let spec = fx.spec.clone();
    let (v, info) = blocking(move || {
        (
            verify(&spec, "metrics.concurrent_delete", true, false),
            table_info(&spec, "metrics.concurrent_delete"),
        )
    })
    .await;
    assert!(v.agree, "{}", v.raw);
    assert_eq!(
        (v.rows, &v.checksum),
        (after_delete.rows, &after_delete.checksum)
    );
    let ids: Vec<Value> = report.snapshot_ids.iter().map(|id| json!(id)).collect();
    assert_eq!(info["current_snapshot_id"], ids[1]);
    let mut parent = deleted["snapshot_id"].clone();
    for id in &ids {
        let s = snapshot(&info, id);
        assert_eq!(s["operation"], "replace", "{s}");
        assert_eq!(s["parent_id"], parent, "{s}");
        assert_eq!(
            s["summary"]["icemaint.job-id"], "it-concurrent-delete",
            "{s}"
        );
        assert_eq!(s["summary"]["deleted-data-files"], "3", "{s}");
        assert_eq!(s["summary"]["added-data-files"], "1", "{s}");
        parent = id.clone();
    }
    for f in files(&info) {
        let org1 = f["partition"]["org_id"] == "1";
        let by_replace = ids.contains(&f["snapshot_id"]);
        assert_eq!(
            org1, by_replace,
            "org 1 compacted, org 0 left to the delete: {f}"
        );
    }

    // Files the refused groups wrote are gone: every new Parquet file is live.
    let live: HashSet<PathBuf> = files(&info)
        .iter()
        .map(|f| fx.local_file(f["path"].as_str().unwrap()).unwrap())
        .collect();
    let on_disk_after = fx.parquet_files();
    let new: Vec<&PathBuf> = on_disk_after
        .difference(&on_disk_before)
        .filter(|p| !live.contains(*p))
        .collect();
    assert!(new.is_empty(), "uncommitted files left behind: {new:?}");
    assert_eq!(report.files_written, 2);
    fx.done();
}

/// Case 7 with a position delete (merge-on-read, as Spark writes them) on a planned file,
/// committed between planning and committing on the REST catalog, with partial progress: the
/// group holding that file is refused, the other one commits, and the deleted rows stay deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_delete_during_the_rewrite_refuses_its_group() {
    let fx = Fx::rest("compact-concurrent-position-delete");
    let t = "metrics.concurrent_position_delete";
    let spec = fx.spec.clone();
    let before = blocking(move || {
        let args = ["--partition", "none", "--appends", "8", "--rows", "300"];
        make_table(&spec, "metrics.concurrent_position_delete", &args);
        verify(&spec, "metrics.concurrent_position_delete", true, false)
    })
    .await;
    assert!(before.agree);
    let catalog = connect(&fx.spec).await;
    // Groups of at most ~half the bytes: two groups in the one (unpartitioned) partition.
    let plan = compaction::prepare(&catalog, t, &BTreeMap::new(), &overrides(MIN2))
        .await
        .unwrap()
        .plan;
    let half = plan.groups[0].input_bytes / 2 + 1000;
    let opts = overrides(&[
        MIN2[0],
        "partial-progress.enabled=true",
        &format!("max-file-group-size-bytes={half}"),
    ]);
    let prepared = compaction::prepare(&catalog, t, &BTreeMap::new(), &opts)
        .await
        .unwrap();
    assert_eq!(prepared.plan.groups.len(), 2, "{:?}", prepared.plan);
    let victim = prepared.plan.groups[0].files[0].path.clone();
    let untouched: Vec<String> = prepared.plan.groups[1]
        .files
        .iter()
        .map(|f| f.path.to_string())
        .collect();

    let delete_snapshot = commit_position_delete(&catalog, t, &victim, 0..50).await;
    let spec = fx.spec.clone();
    let after_delete =
        blocking(move || verify(&spec, "metrics.concurrent_position_delete", true, false)).await;
    assert!(after_delete.agree, "{}", after_delete.raw);
    assert_eq!(after_delete.rows, before.rows - 50);
    let on_disk_before = fx.parquet_files();

    let report = execute(&catalog, prepared, "it-concurrent-position-delete").await;
    assert_eq!(
        (
            report.groups_committed,
            report.conflicts,
            report.groups_failed
        ),
        (1, 1, 0),
        "{report:?}"
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("validation failed")),
        "{report:?}"
    );

    let spec = fx.spec.clone();
    let (v, info) = blocking(move || {
        let t = "metrics.concurrent_position_delete";
        (verify(&spec, t, true, false), table_info(&spec, t))
    })
    .await;
    assert!(v.agree, "{}", v.raw);
    assert_eq!(
        (v.rows, &v.checksum),
        (after_delete.rows, &after_delete.checksum)
    );
    let replace = snapshot(&info, &info["current_snapshot_id"]);
    assert_eq!(replace["operation"], "replace");
    assert_eq!(replace["parent_id"], json!(delete_snapshot));
    assert_eq!(
        u(&replace["summary"]["deleted-data-files"]),
        untouched.len() as u64
    );
    let live: HashSet<&str> = files(&info)
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        live.contains(victim.as_str()),
        "the refused group's files stay"
    );
    assert!(untouched.iter().all(|p| !live.contains(p.as_str())));
    assert_eq!(info["delete_files"], 1);
    let live_local: HashSet<PathBuf> = live.iter().map(|p| fx.local_file(p).unwrap()).collect();
    let on_disk_after = fx.parquet_files();
    let leaked: Vec<&PathBuf> = on_disk_after
        .difference(&on_disk_before)
        .filter(|p| !live_local.contains(*p))
        .collect();
    assert!(
        leaked.is_empty(),
        "uncommitted files left behind: {leaked:?}"
    );
    fx.done();
}

/// Without partial progress a run is all or nothing, as in Spark: when one group cannot be
/// rewritten (here a planned data file vanished from storage), the groups that were rewritten are
/// not committed either and their files are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_commits_nothing_without_partial_progress() {
    let fx = Fx::sql("compact-all-or-nothing");
    let t = "metrics.all_or_nothing";
    let spec = fx.spec.clone();
    let before = blocking(move || {
        let args = [
            "--appends",
            "8",
            "--rows",
            "200",
            "--orgs",
            "2",
            "--days",
            "2",
        ];
        make_table(&spec, "metrics.all_or_nothing", &args);
        table_info(&spec, "metrics.all_or_nothing")
    })
    .await;
    let catalog = connect(&fx.spec).await;
    let prepared = compaction::prepare(&catalog, t, &BTreeMap::new(), &overrides(MIN2))
        .await
        .unwrap();
    assert_eq!(prepared.plan.groups.len(), 4);
    let victim = fx
        .local_file(&prepared.plan.groups[0].files[0].path)
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    let on_disk = fx.parquet_files();

    let report = execute(&catalog, prepared, "it-all-or-nothing").await;
    assert_eq!(
        (report.groups_committed, report.groups_failed),
        (0, 4),
        "{report:?}"
    );
    assert!(report.snapshot_ids.is_empty(), "{report:?}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.contains("not committed: another group failed")),
        "{report:?}"
    );
    assert_eq!(fx.parquet_files(), on_disk, "written files are removed");
    let spec = fx.spec.clone();
    let after = blocking(move || table_info(&spec, "metrics.all_or_nothing")).await;
    assert_eq!(after["current_snapshot_id"], before["current_snapshot_id"]);
    fx.done();
}

/// Case 8 (empty table), the daemon's API (202 -> succeeded, plan, 400s, 409 while another
/// process holds the table's lock) and 11 (SQL catalog, moto S3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_api_compacts_skips_empty_tables_and_refuses_bad_requests() {
    let fx = Fx::sql_moto("compact-api");
    let (empty, t) = ("metrics.empty", "metrics.via_api");
    let spec = fx.spec.clone();
    let (before_v, before) = blocking(move || {
        make_table(&spec, "metrics.empty", &["--appends", "0"]);
        let args = [
            "--appends",
            "12",
            "--rows",
            "300",
            "--orgs",
            "2",
            "--days",
            "2",
        ];
        make_table(&spec, "metrics.via_api", &args);
        (
            verify(&spec, "metrics.via_api", true, false),
            table_info(&spec, "metrics.via_api"),
        )
    })
    .await;
    assert!(before_v.agree);
    let d = Daemon::start(&fx.config, &[]);

    // An empty table: the job is skipped, nothing is committed.
    let (s, v) = d
        .post(&format!("/api/v1/tables/{empty}/compact"), None, None)
        .await;
    assert_eq!(s, 202, "{v}");
    let job = d.wait_job(v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "skipped", "{job}");
    assert_eq!(job["kind"], "compaction");

    // The plan endpoint.
    let body = json!({"min-input-files": 2});
    let (s, plan) = d
        .post(
            &format!("/api/v1/tables/{t}/plan"),
            Some(body.clone()),
            None,
        )
        .await;
    assert_eq!(s, 200, "{plan}");
    assert_eq!(
        plan["plan"]["groups"].as_array().unwrap().len(),
        4,
        "{plan}"
    );

    // Bad input: 400 with a one-line message naming the option, no job recorded.
    let jobs_before = d.get(&format!("/api/v1/jobs?table={t}")).await.1["jobs"]
        .as_array()
        .unwrap()
        .len();
    for (bad, needle) in [
        (
            json!({"target-file-size-bytes": "abc"}),
            "target-file-size-bytes",
        ),
        (json!({"where": "nosuchcol = 1"}), "nosuchcol"),
        (json!({"no-such-option": 1}), "no-such-option"),
        (json!({"min-input-files": 0}), "min-input-files"),
    ] {
        for endpoint in ["compact", "plan"] {
            let (s, v) = d
                .post(
                    &format!("/api/v1/tables/{t}/{endpoint}"),
                    Some(bad.clone()),
                    None,
                )
                .await;
            assert_eq!(s, 400, "{endpoint} {bad}: {v}");
            let e = v["error"].as_str().unwrap();
            assert!(e.contains(needle) && !e.contains('\n'), "{bad}: {e}");
        }
    }
    let jobs_after = d.get(&format!("/api/v1/jobs?table={t}")).await.1["jobs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(jobs_after, jobs_before, "no job for bad input");

    // Another process (e.g. `icemaint compact`) holds the table's lock: 409 naming its job.
    let store =
        icemaint::store::Store::connect(&format!("sqlite://{}", fx.dir.join("state.db").display()))
            .await
            .unwrap();
    let epoch = store
        .try_lock(t, "it-other-process", "it-held-job", 120_000)
        .await
        .unwrap()
        .expect("lock taken");
    let (s, v) = d
        .post(
            &format!("/api/v1/tables/{t}/compact"),
            Some(body.clone()),
            None,
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["job_id"], "it-held-job", "{v}");
    store.unlock(t, "it-held-job", epoch).await.unwrap();

    // 202, then the job succeeds.
    let (s, v) = d
        .post(&format!("/api/v1/tables/{t}/compact"), Some(body), None)
        .await;
    assert_eq!(s, 202, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let job = d.wait_job(&id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["trigger"], "manual");
    assert_eq!(d.stop(), 0);

    let spec = fx.spec.clone();
    let (after_v, after, empty_info) = blocking(move || {
        (
            verify(&spec, "metrics.via_api", true, false),
            table_info(&spec, "metrics.via_api"),
            table_info(&spec, "metrics.empty"),
        )
    })
    .await;
    assert_replace_commit(&job["detail"], &id, &plan, &before, &after, true);
    assert_same_rows(&before_v, &after_v);
    assert_eq!(empty_info["current_snapshot_id"], Value::Null);
    assert!(snapshots(&empty_info).is_empty(), "{empty_info}");
    fx.done();
}

/// Waits (polling every 2 ms) until a Parquet file that is not in `known` appears under the
/// warehouse; panics when `finished()` says the writer is done before that.
fn wait_for_new_file(fx: &Fx, known: &BTreeSet<PathBuf>, mut finished: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            !finished(),
            "compaction finished before an output file was seen"
        );
        if fx.parquet_files().difference(known).next().is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "no output file appeared");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Case 9: a compaction interrupted while rewriting. The daemon stopped with SIGTERM cancels the
/// job and removes what it wrote; `icemaint compact` killed with SIGKILL leaves unreferenced
/// files. Either way the table is unchanged and reads the same, and a later run compacts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_mid_rewrite_leaves_the_table_unchanged() {
    let fx = Fx::sql("compact-interrupted");
    let t = "metrics.interrupted";
    let spec = fx.spec.clone();
    let (before_v, before) = blocking(move || {
        // 20 partitions x 2 files of 5000 rows: 20 groups, rewritten one at a time.
        let t = "metrics.interrupted";
        make_table(&spec, t, &["--appends", "40", "--rows", "5000"]);
        let v = verify(&spec, t, true, false);
        (v, table_info(&spec, t))
    })
    .await;
    assert!(before_v.agree);
    let on_disk_before = fx.parquet_files();
    let opts = ["min-input-files=2", "max-concurrent-file-group-rewrites=1"];
    let unchanged = |fx: &Fx| {
        let after = fx.info(t);
        assert_eq!(after["current_snapshot_id"], before["current_snapshot_id"]);
        assert_eq!(snapshots(&after).len(), snapshots(&before).len());
        assert_eq!(after["data_files"], before["data_files"]);
        assert_same_rows(&before_v, &fx.verify(t));
    };

    // SIGTERM to the daemon: the job is cancelled, nothing committed, its files removed.
    let d = Daemon::start(&fx.config, &[]);
    let body = json!({"min-input-files": 2, "max-concurrent-file-group-rewrites": 1});
    let (s, v) = d
        .post(&format!("/api/v1/tables/{t}/compact"), Some(body), None)
        .await;
    assert_eq!(s, 202, "{v}");
    let job_id = v["job_id"].as_str().unwrap().to_string();
    wait_for_new_file(&fx, &on_disk_before, || false);
    assert_eq!(d.stop(), 0, "clean exit after SIGTERM");
    let store =
        icemaint::store::Store::connect(&format!("sqlite://{}", fx.dir.join("state.db").display()))
            .await
            .unwrap();
    let job = store.job(&job_id).await.unwrap().expect("job recorded");
    assert_eq!(job.status, "failed", "{job:?}");
    assert!(
        job.error
            .as_deref()
            .is_some_and(|e| e.contains("cancelled by shutdown")),
        "{job:?}"
    );
    unchanged(&fx);
    assert_eq!(
        fx.parquet_files(),
        on_disk_before,
        "the cancelled job's files are removed"
    );

    // SIGKILL to `icemaint compact`.
    let mut args = vec!["compact", t, "--config", fx.config_str(), "--json"];
    for o in opts {
        args.extend(["--option", o]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_icemaint"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_new_file(&fx, &on_disk_before, || child.try_wait().unwrap().is_some());
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed, not finished: {status}"
    );
    unchanged(&fx);
    let leftovers = fx.parquet_files().difference(&on_disk_before).count();
    assert!(leftovers >= 1);

    // The killed job's lock lasts until its TTL; a run with a fresh state store (as after the
    // TTL) compacts the table normally, the orphans notwithstanding.
    let config2 = fx.dir.join("icemaint2.toml");
    let text = std::fs::read_to_string(&fx.config)
        .unwrap()
        .replace("state.db", "state2.db");
    std::fs::write(&config2, text).unwrap();
    let mut args = vec!["compact", t, "--config", path_str(&config2), "--json"];
    for o in opts {
        args.extend(["--option", o]);
    }
    let (code, out, err) = icemaint(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["status"], "succeeded", "{out}");
    assert_eq!(u(&out["result"]["files_written"]), 20, "{out}");
    assert_same_rows(&before_v, &fx.verify(t));
    fx.done();
}

/// Case 10: bad options on the CLI: a clear one-line error, non-zero exit, no job, no file, no
/// snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_fail_cleanly_and_write_nothing() {
    let fx = Fx::sql("compact-bad-options");
    let t = "metrics.bad_options";
    let spec = fx.spec.clone();
    let before = blocking(move || {
        let args = [
            "--appends",
            "12",
            "--rows",
            "100",
            "--orgs",
            "2",
            "--days",
            "2",
        ];
        make_table(&spec, "metrics.bad_options", &args);
        table_info(&spec, "metrics.bad_options")
    })
    .await;
    let on_disk = fx.parquet_files();
    for (opt, needle) in [
        (
            "target-file-size-bytes=abc",
            "option 'target-file-size-bytes'",
        ),
        ("where=nosuchcol = 1", "unknown column 'nosuchcol'"),
        ("no-such-option=1", "option 'no-such-option'"),
        ("output-spec-id=7", "no partition spec with id 7"),
        ("min-input-files", "expected key=value"),
    ] {
        for dry in [false, true] {
            let extra: &[&str] = if dry { &["--dry-run"] } else { &[] };
            let (code, out, err) = fx.cli(t, &["min-input-files=2", opt], extra);
            assert_ne!(code, 0, "{opt}: {out}\n{err}");
            assert!(out.trim().is_empty(), "{opt}: no JSON result: {out}");
            let lines: Vec<&str> = err.trim().lines().collect();
            assert_eq!(lines.len(), 1, "{opt}: one line: {err}");
            assert!(lines[0].starts_with("error: "), "{opt}: {err}");
            assert!(lines[0].contains(needle), "{opt}: {err}");
            // The message says it once (no repeated cause chain).
            assert_eq!(lines[0].matches(needle).count(), 1, "{opt}: {err}");
        }
    }
    let (code, _, err) = fx.cli("metrics.no_such_table", MIN2, &[]);
    assert_ne!(code, 0);
    assert!(
        err.trim().lines().count() == 1 && err.contains("not found"),
        "{err}"
    );

    assert_eq!(fx.parquet_files(), on_disk, "no file written");
    let spec = fx.spec.clone();
    let after = blocking(move || table_info(&spec, "metrics.bad_options")).await;
    assert_eq!(after["current_snapshot_id"], before["current_snapshot_id"]);
    assert_eq!(after["metadata_location"], before["metadata_location"]);
    let store =
        icemaint::store::Store::connect(&format!("sqlite://{}", fx.dir.join("state.db").display()))
            .await
            .unwrap();
    let jobs = store.jobs(None, None, 100).await.unwrap();
    assert!(jobs.is_empty(), "no job recorded: {jobs:?}");
    fx.done();
}

/// The issue's acceptance run: `icemaint demo --setup-only`, then `icemaint compact
/// metrics.rollups_1m` with the shipped policy: one new `replace` snapshot, at most
/// ceil(partition bytes / target) files per partition, identical rows and checksum.
#[test]
fn demo_table_compacts_with_the_shipped_policy() {
    let dir = TestDir::new("compact-demo");
    let started = Instant::now();
    let demo = dir.join("demo");
    let (code, out, err) = icemaint(&[
        "demo",
        "--dir",
        path_str(&demo),
        "--setup-only",
        "--policies",
        path_str(&repo_policies()),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let spec = CatalogSpec::sql(
        demo.join("catalog.db"),
        format!("file://{}", path_str(&demo.join("warehouse"))),
    );
    let t = "metrics.rollups_1m";
    let before_v = verify(&spec, t, true, false);
    assert!(before_v.agree, "{}", before_v.raw);
    let before = table_info(&spec, t);
    assert_eq!(before["format_version"], 1, "the demo starts at v1");
    assert_eq!(files(&before).len(), 108);

    let config = demo.join("icemaint.toml");
    let (code, out, err) = icemaint(&[
        "compact",
        t,
        "--config",
        path_str(&config),
        "--option",
        "min-input-files=2",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["status"], "succeeded", "{out}");
    let r = &out["result"];
    assert_eq!(
        (u(&r["files_read"]), u(&r["files_written"])),
        (108, 9),
        "{out}"
    );

    let after = table_info(&spec, t);
    // The policy asks for v2: the compaction upgraded the table first (no snapshot for that).
    assert_eq!(after["format_version"], 2);
    assert_eq!(snapshots(&after).len(), snapshots(&before).len() + 1);
    let replace = snapshot(&after, &after["current_snapshot_id"]);
    assert_eq!(replace["operation"], "replace");
    assert_eq!(replace["parent_id"], before["current_snapshot_id"]);
    assert_eq!(replace["summary"]["icemaint.job-id"], out["job_id"]);
    assert_eq!(replace["summary"]["deleted-data-files"], "108");
    assert_eq!(replace["summary"]["added-data-files"], "9");

    let target: u64 = 536_870_912; // the shipped rollups policy
    let mut bytes: BTreeMap<String, u64> = BTreeMap::new();
    for f in files(&before) {
        *bytes.entry(partition_key(f)).or_default() += u(&f["size"]);
    }
    let mut count: BTreeMap<String, u64> = BTreeMap::new();
    for f in files(&after) {
        *count.entry(partition_key(f)).or_default() += 1;
    }
    assert_eq!(count.len(), 9);
    for (p, n) in &count {
        assert!(*n <= bytes[p].div_ceil(target), "partition {p}: {n} files");
    }
    let after_v = verify(&spec, t, true, false);
    assert_same_rows(&before_v, &after_v);
    eprintln!(
        "[compaction] demo_table_compacts_with_the_shipped_policy finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
