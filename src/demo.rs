//! `icemaint demo`: the embedded default. Creates (or reuses) a directory holding a SQLite SQL
//! catalog and a `file://` warehouse with two tables shaped like the metrics platform's
//! (`metrics.repartitioned_data`, `metrics.rollups_1m`), seeded with many small Parquet files over
//! several snapshots, format v1 and none of the desired properties. The CLI then runs the daemon on
//! them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use arrow_array::{
    ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use iceberg::spec::{
    DataFileFormat, FormatVersion, Literal, NestedField, PartitionKey, PrimitiveType, Schema,
    Struct, Transform, Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use iceberg::{Catalog, NamespaceIdent, TableCreation, TableIdent};
use parquet::file::properties::WriterProperties;

use crate::catalog::CatalogHandle;
use crate::config::{CatalogConfig, CatalogType, Config};

/// The demo tables: (name, snapshots, orgs, days, rows per file).
pub const DEMO_TABLES: &[(&str, usize, i32, i32, usize)] = &[
    ("repartitioned_data", 12, 4, 4, 400),
    ("rollups_1m", 12, 3, 3, 200),
];

/// The metrics schema of the platform's tables.
pub fn metrics_schema() -> Schema {
    Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "org_id", Type::Primitive(PrimitiveType::Int)).into(),
            NestedField::required(2, "metric_name", Type::Primitive(PrimitiveType::String)).into(),
            NestedField::required(3, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
            NestedField::optional(4, "value", Type::Primitive(PrimitiveType::Double)).into(),
            NestedField::optional(5, "resolution", Type::Primitive(PrimitiveType::Int)).into(),
        ])
        .build()
        .expect("valid schema")
}

/// Partitioned by `org_id` and `day(ts)`.
pub fn metrics_spec() -> UnboundPartitionSpec {
    UnboundPartitionSpec::builder()
        .add_partition_field(1, "org_id", Transform::Identity)
        .expect("valid field")
        .add_partition_field(3, "ts_day", Transform::Day)
        .expect("valid field")
        .build()
}

/// The platform's two policies (`policies/` in the repository), compiled in so that the demo runs
/// from any directory and from the container image.
pub const EMBEDDED_POLICIES: &[(&str, &str)] = &[
    (
        "repartitioned.toml",
        include_str!("../policies/repartitioned.toml"),
    ),
    ("rollups.toml", include_str!("../policies/rollups.toml")),
];

/// Writes [`EMBEDDED_POLICIES`] into `dir` where a file of that name is missing.
fn write_embedded_policies(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in EMBEDDED_POLICIES {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(dir.to_path_buf())
}

/// The config a demo directory runs with.
pub fn demo_config(dir: &Path, listen: &str, policies: &Path) -> Config {
    let abs = |p: PathBuf| -> String { p.display().to_string() };
    Config {
        catalog: CatalogConfig {
            kind: CatalogType::Sql,
            uri: format!("sqlite://{}", abs(dir.join("catalog.db"))),
            name: "default".into(),
            warehouse: Some(format!("file://{}", abs(dir.join("warehouse")))),
            properties: Default::default(),
        },
        server: crate::config::ServerConfig {
            listen: listen.to_string(),
            ..Default::default()
        },
        store: crate::config::StoreConfig {
            url: format!("sqlite://{}", abs(dir.join("state.db"))),
        },
        policies: crate::config::PoliciesConfig {
            dir: policies.to_path_buf(),
        },
        spark: crate::config::SparkConfig::default(),
    }
}

fn config_toml(c: &Config) -> String {
    format!(
        "# Written by `icemaint demo`; run it again with `icemaint serve --config {{this file}}`.\n\
         [catalog]\ntype = \"sql\"\nuri = \"{}\"\nname = \"{}\"\nwarehouse = \"{}\"\n\n\
         [server]\nlisten = \"{}\"\n\n[store]\nurl = \"{}\"\n\n[policies]\ndir = \"{}\"\n",
        c.catalog.uri,
        c.catalog.name,
        c.catalog.warehouse.as_deref().unwrap_or_default(),
        c.server.listen,
        c.store.url,
        c.policies.dir.display()
    )
}

/// Creates the demo catalog and tables when missing; returns the config to run with.
/// Without `policies`, the platform's policies compiled into the binary are written to
/// `<dir>/policies/` (files already there are kept, so edits survive a restart).
pub async fn setup(dir: &Path, listen: &str, policies: Option<&Path>) -> anyhow::Result<Config> {
    std::fs::create_dir_all(dir.join("warehouse"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let policies = match policies {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("policy directory {} not found", p.display()))?,
        None => write_embedded_policies(&dir.join("policies"))?,
    };
    let db = dir.join("catalog.db");
    if !db.exists() {
        std::fs::File::create(&db).with_context(|| format!("cannot create {}", db.display()))?;
    }
    let config = demo_config(&dir, listen, &policies);
    std::fs::write(dir.join("icemaint.toml"), config_toml(&config))?;
    let catalog = CatalogHandle::connect(&config.catalog).await?;
    let ns = NamespaceIdent::new("metrics".into());
    if !catalog.catalog.namespace_exists(&ns).await? {
        catalog
            .catalog
            .create_namespace(&ns, Default::default())
            .await?;
    }
    for (seed, (name, snapshots, orgs, days, rows)) in DEMO_TABLES.iter().enumerate() {
        let ident = TableIdent::new(ns.clone(), name.to_string());
        if catalog.catalog.table_exists(&ident).await? {
            continue;
        }
        let creation = TableCreation::builder()
            .name(name.to_string())
            .schema(metrics_schema())
            .partition_spec(metrics_spec())
            .format_version(FormatVersion::V1)
            .build();
        let mut table = catalog.catalog.create_table(&ns, creation).await?;
        for snap in 0..*snapshots {
            table = append_batch(
                catalog.catalog.as_ref(),
                &table,
                *orgs,
                *days,
                *rows,
                (seed * 1000 + snap) as u64,
            )
            .await?;
        }
        tracing::info!(table = %ident, snapshots, "demo table created");
    }
    Ok(config)
}

/// Appends one snapshot with one small file per (org, day) partition.
pub async fn append_batch(
    catalog: &dyn Catalog,
    table: &Table,
    orgs: i32,
    days: i32,
    rows: usize,
    seed: u64,
) -> anyhow::Result<Table> {
    let md = table.metadata();
    let schema = md.current_schema().clone();
    let spec = md.default_partition_spec().as_ref().clone();
    let arrow_schema = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema)?);
    let mut files = Vec::new();
    for org in 0..orgs {
        for day in 0..days {
            let day_start_us: i64 = (20_089 + day as i64) * 86_400_000_000; // 2025-01-01 + day
            let mut x = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add((org * 31 + day) as u64);
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let names = ["cpu", "mem", "disk", "net_in", "net_out", "latency_p99"];
            let mut name_col = Vec::with_capacity(rows);
            let mut ts_col = Vec::with_capacity(rows);
            let mut value_col = Vec::with_capacity(rows);
            for _ in 0..rows {
                let r = next();
                name_col.push(names[(r % names.len() as u64) as usize]);
                ts_col.push(day_start_us + (r >> 20) as i64 % 86_400_000_000);
                value_col.push((r % 100_000) as f64 / 100.0);
            }
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int32Array::from(vec![org; rows])),
                Arc::new(StringArray::from(name_col)),
                Arc::new(TimestampMicrosecondArray::from(ts_col).with_timezone("+00:00")),
                Arc::new(Float64Array::from(value_col)),
                Arc::new(Int32Array::from(vec![60; rows])),
            ];
            let batch = RecordBatch::try_new(arrow_schema.clone(), columns)?;
            let key = PartitionKey::new(
                spec.clone(),
                schema.clone(),
                Struct::from_iter([
                    Some(Literal::int(org)),
                    Some(Literal::date((20_089 + day as i64) as i32)),
                ]),
            );
            let parquet = ParquetWriterBuilder::new(
                WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build(),
                schema.clone(),
            );
            let rolling = RollingFileWriterBuilder::new_with_default_file_size(
                parquet,
                table.file_io().clone(),
                DefaultLocationGenerator::new(md)?,
                DefaultFileNameGenerator::new(
                    format!("demo-{seed}"),
                    None,
                    DataFileFormat::Parquet,
                ),
            );
            let mut writer = DataFileWriterBuilder::new(rolling).build(Some(key)).await?;
            writer.write(batch).await?;
            files.extend(writer.close().await?);
        }
    }
    let tx = Transaction::new(table);
    let tx = tx.fast_append().add_data_files(files).apply(tx)?;
    Ok(tx.commit(catalog).await?)
}
