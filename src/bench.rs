//! Benchmarks behind the hidden `icemaint bench` subcommand (`bench/run.sh` drives them; see
//! `bench/README.md`).
//!
//! - [`limit`]: the machine's limit for a compaction of the same bytes. A bare arrow-rs loop, no
//!   Iceberg: every Parquet file under a table's data directory is read and the files of each
//!   partition directory are written as one Parquet file with the writer settings icemaint uses
//!   ([`crate::compaction::rewrite::writer_properties`], so zstd level 3 by default). Partition
//!   directories are spread over worker threads like icemaint spreads file groups. Reports MB of
//!   compressed input per CPU-second (user + system time of the whole process).
//! - [`plan`]: planning alone on a large table. Creates a SQL catalog (SQLite) in a directory,
//!   fast-appends synthetic `DataFile` entries (metadata only: the files do not exist) in a few
//!   commits, then times [`crate::compaction::prepare`] (table load, manifest scan, plan) in a
//!   fresh child process, so its peak RSS (`VmHWM`) covers planning and nothing else.
//!
//! - [`orphans::orphans`] (`bench remove-orphans`), [`manifests::manifests`]
//!   (`bench rewrite-manifests`) and [`expire::expire`] (`bench expire`): orphan removal, the
//!   manifest rewrite and snapshot expiry on synthetic tables of the same kind, timed in a child
//!   process likewise.
//! - [`latency_proxy`] (`bench latency-proxy`): a delaying TCP proxy in front of the local S3
//!   server, for `bench/run.sh --s3-latency-ms`.
//!
//! Each prints one JSON object on stdout. MB are 10^6 bytes.

pub mod expire;
pub mod latency_proxy;
pub mod manifests;
pub mod orphans;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, FormatVersion, Literal,
    Struct,
};
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::{NamespaceIdent, TableCreation, TableIdent};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::catalog::CatalogHandle;
use crate::compaction::rewrite::{
    plain_encoded_columns, without_dictionary_for, writer_properties,
};
use crate::config::{CatalogConfig, CatalogType};
use orphans::S3Dir;

/// CPU time and peak memory of this process so far.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
}

impl Usage {
    /// `getrusage(RUSAGE_SELF)`: every thread of the process, finished ones included.
    pub fn now() -> Usage {
        // SAFETY: getrusage only writes into the struct it is given.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            ru
        };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Usage {
            user: tv(ru.ru_utime),
            system: tv(ru.ru_stime),
        }
    }

    pub fn cpu_since(&self, start: &Usage) -> (f64, f64) {
        (
            self.user.saturating_sub(start.user).as_secs_f64(),
            self.system.saturating_sub(start.system).as_secs_f64(),
        )
    }
}

/// A field of `/proc/self/status` in MiB (`VmHWM`: peak resident set, `VmRSS`: current).
pub fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round2(kib / 1024.0))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

// ------------------------------------------------------------------------------------------------
// limit

/// Options of `icemaint bench limit`.
#[derive(Debug, Clone)]
pub struct LimitOptions {
    /// A table's data directory: every `*.parquet` below it is read.
    pub input: PathBuf,
    /// Where the output files go (one per partition directory, same relative path); must not exist
    /// or be empty.
    pub output: PathBuf,
    /// Worker threads (partition directories are handed out one at a time).
    pub threads: usize,
    /// Rows per batch from the Parquet reader.
    pub batch_size: usize,
    /// Table properties for [`writer_properties`] (`write.parquet.*`); empty = icemaint's defaults.
    pub properties: HashMap<String, String>,
    pub dictionary: Dictionary,
}

/// Which columns get a dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Dictionary {
    /// Like icemaint: none for columns the input's writer stored plain
    /// ([`plain_encoded_columns`]).
    LikeInput,
    /// parquet-rs's default: every column, until the dictionary page limit.
    All,
}

/// What `icemaint bench limit` measured.
#[derive(Debug, Serialize)]
pub struct LimitReport {
    pub partitions: usize,
    pub files_in: usize,
    pub bytes_in: u64,
    pub rows: u64,
    pub files_out: usize,
    pub bytes_out: u64,
    pub threads: usize,
    pub batch_size: usize,
    pub compression: String,
    pub dictionary: Dictionary,
    pub wall_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub cpu_s: f64,
    pub peak_rss_mib: Option<f64>,
    /// MB of compressed input per CPU-second.
    pub mb_per_cpu_s: f64,
    /// MB of compressed input per wall-clock second.
    pub mb_per_s: f64,
}

/// Parquet files below `dir`, grouped by the directory holding them (sorted, deterministic).
fn parquet_files_by_dir(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, Vec<PathBuf>>> {
    let mut out: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.entry(d.clone()).or_default().push(path);
            }
        }
    }
    for files in out.values_mut() {
        files.sort();
    }
    Ok(out)
}

/// Reads every file of one partition directory and writes them as one file; returns
/// (rows, bytes written).
fn rewrite_dir(
    files: &[PathBuf],
    out_path: &Path,
    batch_size: usize,
    props: &parquet::file::properties::WriterProperties,
    dictionary: Dictionary,
) -> anyhow::Result<(u64, u64)> {
    if let Some(parent) = out_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut writer: Option<ArrowWriter<File>> = None;
    let mut rows = 0u64;
    for path in files {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("reading the footer of {}", path.display()))?;
        // The same per-column dictionary choice as icemaint's rewrite, from the first input.
        let props = match (&writer, dictionary) {
            (None, Dictionary::LikeInput) => without_dictionary_for(
                props.clone(),
                plain_encoded_columns(builder.metadata())
                    .into_iter()
                    .map(|(c, _)| c),
            ),
            _ => props.clone(),
        };
        let reader = builder.with_batch_size(batch_size).build()?;
        for batch in reader {
            let batch = batch.with_context(|| format!("decoding {}", path.display()))?;
            rows += batch.num_rows() as u64;
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(ArrowWriter::try_new(
                    File::create(out_path)
                        .with_context(|| format!("creating {}", out_path.display()))?,
                    batch.schema(),
                    Some(props.clone()),
                )?),
            };
            w.write(&batch).with_context(|| {
                format!("writing {} (from {})", out_path.display(), path.display())
            })?;
        }
    }
    let Some(writer) = writer else {
        return Ok((0, 0));
    };
    let written = writer.close()?;
    let written_rows = written.file_metadata().num_rows() as u64;
    if written_rows != rows {
        bail!(
            "{}: read {rows} rows, wrote {written_rows}",
            out_path.display()
        );
    }
    Ok((rows, std::fs::metadata(out_path)?.len()))
}

/// `icemaint bench limit`: see the module documentation.
pub fn limit(opts: &LimitOptions) -> anyhow::Result<LimitReport> {
    if opts.threads == 0 || opts.batch_size == 0 {
        bail!("--threads and --batch-size must be positive");
    }
    let props = writer_properties(&opts.properties)?;
    let compression = format!(
        "{:?}",
        props.compression(&parquet::schema::types::ColumnPath::new(vec![]))
    );
    let dirs: Vec<(PathBuf, Vec<PathBuf>)> =
        parquet_files_by_dir(&opts.input)?.into_iter().collect();
    if dirs.is_empty() {
        bail!("no parquet files below {}", opts.input.display());
    }
    let mut bytes_in = 0u64;
    for (_, files) in &dirs {
        for f in files {
            bytes_in += std::fs::metadata(f)?.len();
        }
    }
    let files_in = dirs.iter().map(|(_, f)| f.len()).sum();
    if std::fs::read_dir(&opts.output).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} is not empty", opts.output.display());
    }

    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let usage0 = Usage::now();
    let results: Vec<anyhow::Result<(u64, u64, usize)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..opts.threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<(u64, u64, usize)> {
                    let (mut rows, mut bytes, mut files) = (0u64, 0u64, 0usize);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((dir, inputs)) = dirs.get(i) else {
                            return Ok((rows, bytes, files));
                        };
                        let rel = dir.strip_prefix(&opts.input).unwrap_or(dir);
                        let out = opts.output.join(rel).join("limit-00000.parquet");
                        let (r, b) =
                            rewrite_dir(inputs, &out, opts.batch_size, &props, opts.dictionary)?;
                        rows += r;
                        bytes += b;
                        files += usize::from(r > 0);
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| bail!("a worker thread panicked"))
            })
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let (user, sys) = Usage::now().cpu_since(&usage0);
    let (mut rows, mut bytes_out, mut files_out) = (0u64, 0u64, 0usize);
    for r in results {
        let (r, b, f) = r?;
        rows += r;
        bytes_out += b;
        files_out += f;
    }
    let cpu = user + sys;
    Ok(LimitReport {
        partitions: dirs.len(),
        files_in,
        bytes_in,
        rows,
        files_out,
        bytes_out,
        threads: opts.threads,
        batch_size: opts.batch_size,
        compression,
        dictionary: opts.dictionary,
        wall_s: round2(wall),
        cpu_user_s: round2(user),
        cpu_sys_s: round2(sys),
        cpu_s: round2(cpu),
        peak_rss_mib: proc_status_mib("VmHWM:"),
        mb_per_cpu_s: round2(mb(bytes_in) / cpu.max(1e-9)),
        mb_per_s: round2(mb(bytes_in) / wall.max(1e-9)),
    })
}

// ------------------------------------------------------------------------------------------------
// plan

/// Options of `icemaint bench plan` (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct PlanOptions {
    #[arg(long, default_value_t = 100_000)]
    pub files: usize,
    #[arg(long, default_value_t = 1_000)]
    pub partitions: usize,
    /// Fast-append commits holding the files.
    #[arg(long, default_value_t = 10)]
    pub commits: usize,
    #[command(flatten)]
    pub dir: BenchDir,
}

/// What `icemaint bench plan` measured.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct PlanReport {
    pub files: usize,
    pub partitions: usize,
    pub commits: usize,
    /// Seconds to create the table and commit the synthetic files (not part of the target).
    pub setup_s: Option<f64>,
    /// `compaction::prepare`: load, manifest scan, plan.
    pub prepare_s: f64,
    pub cpu_s: f64,
    /// Peak RSS of the planning process (`VmHWM`), runtime and catalog client included.
    pub peak_rss_mib: Option<f64>,
    /// RSS of the planning process before `prepare` started.
    pub rss_before_mib: Option<f64>,
    pub candidate_files: usize,
    pub groups: usize,
    pub rewrite_files: usize,
}

const PLAN_TABLE: &str = "bench.metrics";
/// The options the benchmark plans with (the same as `bench/run.sh` compacts with).
fn plan_overrides() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "target-file-size-bytes".to_string(),
            "536870912".to_string(),
        ),
        ("min-input-files".to_string(), "2".to_string()),
    ])
}

/// `icemaint bench plan`: see the module documentation.
pub async fn plan(opts: &PlanOptions) -> anyhow::Result<PlanReport> {
    if opts.files == 0 || opts.partitions == 0 || opts.commits == 0 {
        bail!("--files, --partitions and --commits must be positive");
    }
    let work = opts.dir.open("plan")?;
    if opts.dir.run_only {
        time_prepare(work.path(), opts).await
    } else {
        plan_in(work.path(), opts).await
    }
}

async fn plan_in(dir: &Path, opts: &PlanOptions) -> anyhow::Result<PlanReport> {
    let setup_s = create_plan_table(dir, opts).await?;
    // Plan in a fresh process so that its peak RSS is planning's alone.
    let args: Vec<String> = [
        ("--files", opts.files),
        ("--partitions", opts.partitions),
        ("--commits", opts.commits),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    let mut report: PlanReport = run_child("plan", dir, &args, &[]).await?;
    report.setup_s = setup_s;
    Ok(report)
}

/// Creates `bench.metrics` in `dir` with the synthetic files, unless it exists already. Returns
/// the seconds spent, `None` when reused.
async fn create_plan_table(dir: &Path, opts: &PlanOptions) -> anyhow::Result<Option<f64>> {
    let catalog = synthetic_catalog(dir, None).await?;
    let started = Instant::now();
    let table = Synthetic {
        name: PLAN_TABLE,
        files: opts.files,
        partitions: opts.partitions,
        commits: opts.commits,
        metrics: true,
    };
    let created = create_synthetic_table(&catalog, &table, |_| Ok(())).await?;
    Ok(created.map(|_| round2(started.elapsed().as_secs_f64())))
}

/// File `i` of a synthetic table: partition `i % partitions` (org = p / 10, day = p % 10),
/// ~200 kB and 15 000 rows like the standard benchmark input, with column metrics like Spark's
/// when `metrics`.
fn synthetic_file(
    location: &str,
    spec_id: i32,
    i: usize,
    partitions: usize,
    metrics: bool,
) -> anyhow::Result<DataFile> {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    let p = i % partitions;
    let org = (p / 10) as i32;
    let day = DAY0 + (p % 10) as i32;
    let rows = 15_000u64;
    let day_us = i64::from(day) * MICROS_PER_DAY;
    let counts: HashMap<i32, u64> = (1..=5).map(|id| (id, rows)).collect();
    let nulls: HashMap<i32, u64> = (1..=5).map(|id| (id, 0)).collect();
    let sizes = HashMap::from([(1, 90), (2, 15_000), (3, 115_000), (4, 135_000), (5, 4_000)]);
    let lower = HashMap::from([
        (1, Datum::int(org)),
        (2, Datum::string("metric_00")),
        (3, Datum::timestamptz_micros(day_us + (i as i64 % 1000))),
        (4, Datum::double(0.0)),
        (5, Datum::int(10)),
    ]);
    let upper = HashMap::from([
        (1, Datum::int(org)),
        (2, Datum::string("metric_49")),
        (
            3,
            Datum::timestamptz_micros(day_us + MICROS_PER_DAY - 1 - (i as i64 % 1000)),
        ),
        (4, Datum::double(99.999)),
        (5, Datum::int(300)),
    ]);
    let mut builder = DataFileBuilder::default();
    if metrics {
        builder
            .column_sizes(sizes)
            .value_counts(counts)
            .null_value_counts(nulls)
            .lower_bounds(lower)
            .upper_bounds(upper);
    }
    builder
        .content(DataContentType::Data)
        .file_path(format!(
            "{location}/data/org_id={org}/ts_day={day}/{i:08}-synthetic.parquet"
        ))
        .file_format(DataFileFormat::Parquet)
        .partition(Struct::from_iter([
            Some(Literal::int(org)),
            Some(Literal::date(day)),
        ]))
        .partition_spec_id(spec_id)
        .record_count(rows)
        .file_size_in_bytes(200_000 + (i as u64 % 997))
        .split_offsets(Some(vec![4]))
        .build()
        .context("building a synthetic data file")
}

async fn time_prepare(dir: &Path, opts: &PlanOptions) -> anyhow::Result<PlanReport> {
    let catalog = synthetic_catalog(dir, None).await?;
    let rss_before = proc_status_mib("VmRSS:");
    let usage0 = Usage::now();
    let started = Instant::now();
    let prepared =
        crate::compaction::prepare(&catalog, PLAN_TABLE, &BTreeMap::new(), &plan_overrides())
            .await?;
    let prepare_s = started.elapsed().as_secs_f64();
    let (user, sys) = Usage::now().cpu_since(&usage0);
    let p = &prepared.plan;
    if p.total_files != opts.files {
        bail!(
            "planned {} files, the table should hold {}",
            p.total_files,
            opts.files
        );
    }
    Ok(PlanReport {
        files: p.total_files,
        partitions: p.total_partitions,
        commits: opts.commits,
        setup_s: None,
        prepare_s: round2(prepare_s),
        cpu_s: round2(user + sys),
        peak_rss_mib: proc_status_mib("VmHWM:"),
        rss_before_mib: rss_before,
        candidate_files: p.candidate_files,
        groups: p.groups.len(),
        rewrite_files: p.rewrite_files,
    })
}

// ------------------------------------------------------------------------------------------------
// synthetic tables (plan, remove-orphans, rewrite-manifests)

/// 2025-01-01 in days since the epoch: the synthetic tables' first day.
const DAY0: i32 = 20_089;

/// A synthetic table: `files` data files over `partitions` partitions (org = p / 10, day = p % 10),
/// fast-appended in `commits` commits (one manifest each). The files do not exist.
pub(crate) struct Synthetic<'a> {
    /// `namespace.table`.
    pub name: &'a str,
    pub files: usize,
    pub partitions: usize,
    pub commits: usize,
    /// Column metrics like Spark's on every entry (what makes a real manifest heavy).
    pub metrics: bool,
}

/// Where a synthetic-table benchmark keeps its catalog and warehouse: the command-line
/// arguments `bench plan`, `remove-orphans`, `rewrite-manifests` and `expire` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchDir {
    /// Catalog (and local warehouse) directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the directory (a table already in --dir is reused).
    #[arg(long)]
    pub keep: bool,
    /// Internal: only time the measured step on the table already in --dir (the child process
    /// the parent starts, so that its peak RSS is that step's alone).
    #[arg(long, hide = true)]
    pub run_only: bool,
}

impl BenchDir {
    /// The directory (created, with its `warehouse/`): `--dir`, or a new temporary one named
    /// after `label`, removed when the returned guard drops unless `--keep`.
    pub fn open(&self, label: &str) -> anyhow::Result<WorkDir> {
        if self.run_only && self.dir.is_none() {
            bail!("--run-only needs --dir");
        }
        let (dir, temporary) = match &self.dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir()
                    .join(format!("icemaint-bench-{label}-{}", uuid::Uuid::now_v7())),
                true,
            ),
        };
        std::fs::create_dir_all(dir.join("warehouse"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir {
            path: dir.canonicalize()?,
            remove: temporary && !self.keep,
        })
    }
}

/// A benchmark's directory ([`BenchDir::open`]); a temporary one is removed on drop, so on
/// error too.
pub struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The SQL catalog (SQLite) of a benchmark directory; the warehouse is `dir/warehouse`, or the
/// S3 bucket's `warehouse/` prefix.
async fn synthetic_catalog(dir: &Path, s3: Option<&S3Dir>) -> anyhow::Result<CatalogHandle> {
    let db = dir.join("catalog.db");
    if !db.exists() {
        File::create(&db).with_context(|| format!("creating {}", db.display()))?;
    }
    let (warehouse, properties) = match s3 {
        None => (
            format!("file://{}", dir.join("warehouse").display()),
            Default::default(),
        ),
        Some(s3) => (
            format!("s3://{}/warehouse", s3.bucket),
            [
                ("s3.endpoint", s3.endpoint.as_str()),
                ("s3.access-key-id", s3.access_key.as_str()),
                ("s3.secret-access-key", s3.secret_key.as_str()),
                ("s3.region", "us-east-1"),
                ("s3.path-style-access", "true"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ),
    };
    let config = CatalogConfig {
        kind: CatalogType::Sql,
        uri: format!("sqlite://{}", db.display()),
        name: "default".into(),
        warehouse: Some(warehouse),
        properties,
    };
    Ok(CatalogHandle::connect(&config).await?)
}

/// Creates the synthetic table unless it exists; `each` sees every data file before it is
/// committed. Returns the table's location, `None` when the table existed.
async fn create_synthetic_table(
    catalog: &CatalogHandle,
    t: &Synthetic<'_>,
    mut each: impl FnMut(&DataFile) -> anyhow::Result<()>,
) -> anyhow::Result<Option<String>> {
    let (ns, name) = t
        .name
        .split_once('.')
        .context("a synthetic table is ns.name")?;
    let ns = NamespaceIdent::new(ns.into());
    let ident = TableIdent::new(ns.clone(), name.into());
    if catalog.catalog.table_exists(&ident).await? {
        return Ok(None);
    }
    if !catalog.catalog.namespace_exists(&ns).await? {
        catalog
            .catalog
            .create_namespace(&ns, HashMap::new())
            .await?;
    }
    let creation = TableCreation::builder()
        .name(name.to_string())
        .schema(crate::demo::metrics_schema())
        .partition_spec(crate::demo::metrics_spec())
        .format_version(FormatVersion::V2)
        .build();
    let mut table = catalog.catalog.create_table(&ns, creation).await?;
    let spec_id = table.metadata().default_partition_spec_id();
    let location = table
        .metadata()
        .location()
        .trim_end_matches('/')
        .to_string();
    let per_commit = t.files.div_ceil(t.commits);
    let mut next = 0usize;
    while next < t.files {
        let end = (next + per_commit).min(t.files);
        let files: Vec<DataFile> = (next..end)
            .map(|i| synthetic_file(&location, spec_id, i, t.partitions, t.metrics))
            .collect::<anyhow::Result<_>>()?;
        files.iter().try_for_each(&mut each)?;
        let tx = Transaction::new(&table);
        let tx = tx.fast_append().add_data_files(files).apply(tx)?;
        table = tx.commit(catalog.catalog.as_ref()).await?;
        next = end;
    }
    Ok(Some(location))
}

/// Runs `icemaint bench SUBCOMMAND --run-only --dir DIR ARGS` (a fresh process, so its peak RSS
/// is the measured work's alone) and parses the JSON report it prints.
async fn run_child<T: serde::de::DeserializeOwned>(
    subcommand: &str,
    dir: &Path,
    args: &[String],
    envs: &[(&str, String)],
) -> anyhow::Result<T> {
    let exe = std::env::current_exe().context("locating the icemaint binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["bench", subcommand, "--run-only", "--dir"])
        .arg(dir)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stderr(std::process::Stdio::inherit());
    let output = cmd
        .output()
        .await
        .with_context(|| format!("running the {subcommand} child process"))?;
    if !output.status.success() {
        bail!("the {subcommand} child process failed ({})", output.status);
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("parsing the {subcommand} child's report"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_rss_are_readable() {
        let u = Usage::now();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let (user, sys) = Usage::now().cpu_since(&u);
        assert!(user >= 0.0 && sys >= 0.0);
        assert!(proc_status_mib("VmHWM:").is_some_and(|m| m > 0.0));
    }

    #[test]
    fn limit_rewrites_each_partition_directory_into_one_file() {
        use arrow_array::{Int64Array, RecordBatch};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("data");
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "x",
            arrow_schema::DataType::Int64,
            false,
        )]));
        for part in ["p=1", "p=2"] {
            std::fs::create_dir_all(input.join(part)).unwrap();
            for f in 0..3 {
                let path = input.join(part).join(format!("{f}.parquet"));
                let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema.clone(), None)
                    .unwrap();
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from_iter_values(0..100))],
                )
                .unwrap();
                w.write(&batch).unwrap();
                w.close().unwrap();
            }
        }
        let r = limit(&LimitOptions {
            input: input.clone(),
            output: dir.path().join("out"),
            threads: 2,
            batch_size: 64,
            properties: HashMap::new(),
            dictionary: Dictionary::LikeInput,
        })
        .unwrap();
        assert_eq!(
            (r.partitions, r.files_in, r.files_out, r.rows),
            (2, 6, 2, 600)
        );
        assert!(r.compression.contains("ZSTD"), "{}", r.compression);
        let out = parquet_files_by_dir(&dir.path().join("out")).unwrap();
        assert_eq!(out.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn synthetic_table_plans_every_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("warehouse")).unwrap();
        let opts = PlanOptions {
            files: 60,
            partitions: 20,
            commits: 3,
            dir: BenchDir {
                dir: Some(dir.path().to_path_buf()),
                keep: true,
                run_only: true,
            },
        };
        assert!(
            create_plan_table(dir.path(), &opts)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            create_plan_table(dir.path(), &opts)
                .await
                .unwrap()
                .is_none()
        );
        let r = time_prepare(dir.path(), &opts).await.unwrap();
        assert_eq!((r.files, r.partitions, r.groups), (60, 20, 20));
        assert_eq!(r.rewrite_files, 60);
    }
}
