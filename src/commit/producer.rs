//! Writing a new snapshot on `main` and committing it with retries: the part of Java's
//! `SnapshotProducer` that every icemaint snapshot-producing operation shares (compaction's data
//! file replace now, manifest rewrite later).
//!
//! An operation implements [`SnapshotChange`]: given a freshly loaded table, it validates itself and
//! writes its manifests through a [`SnapshotProducer`]. [`commit_change`] does the rest: manifest
//! list, `Snapshot`, metadata updates and requirements, the backend call, and what each outcome
//! requires (clean up and retry on conflict, look for the snapshot when the state is unknown, clean
//! up and stop on a definite failure).

use std::collections::HashMap;
use std::time::Instant;

use iceberg::spec::{
    FormatVersion, MAIN_BRANCH, ManifestContentType, ManifestFile, ManifestListWriter,
    ManifestStatus, ManifestWriter, ManifestWriterBuilder, Operation, PartitionSpec, SchemaRef,
    Snapshot, Summary,
};
use iceberg::table::Table;
use iceberg::{Catalog, TableIdent, TableRequirement, TableUpdate};
use uuid::Uuid;

use super::retry::RetryPolicy;
use super::{CommitOutcome, ReplaceError};
use crate::catalog::{CommitBackend, CommitError};
use crate::crashpoint::{self, CrashPoint};
use crate::fence::Fence;

/// Table property naming where metadata files (and so manifests) go; default
/// `<table location>/metadata`.
const PROP_WRITE_METADATA_PATH: &str = "write.metadata.path";

/// How many times the table is reloaded to find out whether a commit with an unknown outcome
/// landed (Java's `commit.status-check.num-retries` default is 3).
const STATUS_CHECK_ATTEMPTS: u32 = 3;

/// What an operation produced for one attempt: the new snapshot's manifests (in manifest list
/// order) and summary.
#[derive(Debug, Clone)]
pub struct BuiltSnapshot {
    pub operation: Operation,
    pub manifests: Vec<ManifestFile>,
    /// Summary entries besides `operation` (see [`super::summary::build_summary`]).
    pub summary: HashMap<String, String>,
}

/// An operation that produces one snapshot on `main` and can be rebuilt on a newer parent when the
/// first try loses a race.
#[async_trait::async_trait]
pub trait SnapshotChange: Send + Sync {
    /// Short description for logs.
    fn describe(&self) -> String;

    /// Validates the change against `producer.table()` (loaded for this attempt) and writes its
    /// manifests through `producer`, which remembers every file it hands out so that a failed
    /// attempt can be cleaned up. Errors are final unless [`ReplaceError::is_retryable`] says
    /// otherwise; nothing is retried here.
    async fn build(
        &self,
        producer: &mut SnapshotProducer<'_>,
    ) -> Result<BuiltSnapshot, ReplaceError>;
}

/// Identity of one logical commit, kept across attempts: Java keeps the snapshot id and commit
/// UUID for all retries and numbers manifests with one counter.
#[derive(Debug)]
struct CommitIdentity {
    snapshot_id: i64,
    commit_uuid: Uuid,
    next_manifest: u64,
}

impl CommitIdentity {
    /// The identity for the next attempt on `table`: the one kept in `slot`, with a new snapshot
    /// id when `table` already has a snapshot with its id, or a new one stored in `slot`.
    fn for_attempt<'s>(slot: &'s mut Option<CommitIdentity>, table: &Table) -> &'s mut Self {
        match slot {
            Some(id) => {
                // Earlier attempts definitely failed, so their id is free unless someone else
                // drew the same one meanwhile.
                if table.metadata().snapshot_by_id(id.snapshot_id).is_some() {
                    id.snapshot_id = new_snapshot_id(table);
                }
                id
            }
            None => slot.insert(CommitIdentity {
                snapshot_id: new_snapshot_id(table),
                commit_uuid: Uuid::new_v4(),
                next_manifest: 0,
            }),
        }
    }
}

/// Writes the files of one attempt and builds its snapshot. Handed to [`SnapshotChange::build`].
#[derive(Debug)]
pub struct SnapshotProducer<'a> {
    table: &'a Table,
    identity: &'a mut CommitIdentity,
    attempt: u32,
    metadata_dir: String,
    written: Vec<String>,
}

impl<'a> SnapshotProducer<'a> {
    fn new(table: &'a Table, identity: &'a mut CommitIdentity, attempt: u32) -> Self {
        let md = table.metadata();
        let metadata_dir = match md.properties().get(PROP_WRITE_METADATA_PATH) {
            Some(p) if !p.trim().is_empty() => p.trim().trim_end_matches('/').to_string(),
            _ => format!("{}/metadata", md.location().trim_end_matches('/')),
        };
        Self {
            table,
            identity,
            attempt,
            metadata_dir,
            written: Vec::new(),
        }
    }

    /// The table this attempt builds on (its current snapshot is the new snapshot's parent).
    pub fn table(&self) -> &'a Table {
        self.table
    }

    /// Id of the snapshot being produced.
    pub fn snapshot_id(&self) -> i64 {
        self.identity.snapshot_id
    }

    /// Sequence number the new snapshot will get.
    pub fn sequence_number(&self) -> i64 {
        self.table.metadata().next_sequence_number()
    }

    /// Files written so far by this attempt.
    pub fn written_files(&self) -> &[String] {
        &self.written
    }

    /// The table's format version (1 or 2: [`check_format_version`] refuses the others).
    pub fn format_version(&self) -> FormatVersion {
        self.table.metadata().format_version()
    }

    /// A manifest writer for `content` under `spec` (bound to `schema`) in the table's format
    /// version, named like Java's (`<commit-uuid>-m<n>.avro` in the metadata directory), owned by
    /// the new snapshot. A v1 manifest has no sequence numbers (those handed to the writer are
    /// not written) and holds data files only, so delete content on a v1 table is refused.
    pub fn new_manifest_writer(
        &mut self,
        content: ManifestContentType,
        schema: SchemaRef,
        spec: PartitionSpec,
    ) -> Result<ManifestWriter, ReplaceError> {
        if self.format_version() == FormatVersion::V1 && content == ManifestContentType::Deletes {
            return Err(ReplaceError::Unsupported(format!(
                "table {} has format version 1, which has no delete files",
                self.table.identifier()
            )));
        }
        let n = self.identity.next_manifest;
        self.identity.next_manifest += 1;
        let path = format!(
            "{}/{}-m{}.avro",
            self.metadata_dir, self.identity.commit_uuid, n
        );
        let output = self.table.file_io().new_output(&path)?;
        // Recorded before anything is written, so a half-written file is cleaned up too.
        self.written.push(path);
        let builder =
            ManifestWriterBuilder::new(output, Some(self.identity.snapshot_id), schema, spec);
        Ok(match (self.format_version(), content) {
            (FormatVersion::V1, _) => builder.build_v1(),
            (_, ManifestContentType::Data) => builder.build_v2_data(),
            (_, ManifestContentType::Deletes) => builder.build_v2_deletes(),
        })
    }

    /// Builds `change` on this attempt's table and writes its manifest list; on failure deletes
    /// every file the attempt wrote.
    async fn prepare(
        &mut self,
        change: &dyn SnapshotChange,
    ) -> Result<PreparedCommit, ReplaceError> {
        let prepared = match change.build(self).await {
            Ok(built) => self.finish(built).await,
            Err(e) => Err(e),
        };
        if prepared.is_err() {
            self.cleanup().await;
        }
        prepared
    }

    /// Deletes every file this attempt wrote (best effort: a leftover is an orphan, not an error).
    async fn cleanup(&mut self) {
        for path in self.written.drain(..) {
            if let Err(e) = self.table.file_io().delete(&path).await {
                tracing::warn!(path = %path, error = %e, "could not delete uncommitted metadata file");
            }
        }
    }

    /// Writes the manifest list and returns the metadata updates and requirements that put the
    /// new snapshot on `main`.
    async fn finish(&mut self, built: BuiltSnapshot) -> Result<PreparedCommit, ReplaceError> {
        let md = self.table.metadata();
        let snapshot_id = self.identity.snapshot_id;
        let parent_id = md.current_snapshot_id();
        let sequence_number = md.next_sequence_number();
        let list_path = format!(
            "{}/snap-{}-{}-{}.avro",
            self.metadata_dir, snapshot_id, self.attempt, self.identity.commit_uuid
        );
        let output = self.table.file_io().new_output(&list_path)?;
        self.written.push(list_path.clone());
        // A v1 manifest list has no sequence numbers; v1 snapshots all read as sequence 0.
        let mut list = match md.format_version() {
            FormatVersion::V1 => {
                ManifestListWriter::v1(output.writer().await?, snapshot_id, parent_id)
            }
            _ => ManifestListWriter::v2(
                output.writer().await?,
                snapshot_id,
                parent_id,
                sequence_number,
            ),
        };
        let manifests = match md.format_version() {
            FormatVersion::V1 => with_v1_counts(self.table, built.manifests).await?,
            _ => built.manifests,
        };
        list.add_manifests(manifests.into_iter())?;
        list.close().await?;

        // `TableMetadataBuilder::add_snapshot` rejects a snapshot more than a minute older than
        // the last one or than `last-updated-ms`: never go behind either, whatever this host's
        // clock says.
        let last_snapshot_ms = md.history().last().map(|l| l.timestamp_ms());
        let timestamp_ms = chrono::Utc::now()
            .timestamp_millis()
            .max(md.last_updated_ms())
            .max(last_snapshot_ms.unwrap_or(i64::MIN));

        let summary = Summary {
            operation: built.operation,
            additional_properties: built.summary,
        };
        let snapshot = Snapshot::builder()
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(parent_id)
            .with_sequence_number(sequence_number)
            .with_timestamp_ms(timestamp_ms)
            .with_manifest_list(list_path)
            .with_summary(summary.clone())
            .with_schema_id(md.current_schema_id())
            .build();

        // Let the metadata builder derive the updates: it runs `add_snapshot`'s checks locally
        // (a bad snapshot fails here, not at the catalog) and `set_branch_snapshot` keeps `main`'s
        // retention settings, as Java's `setBranchSnapshot` does, where a hand-made
        // `SetSnapshotRef` would erase them.
        let result = md
            .clone()
            .into_builder(None)
            .set_branch_snapshot(snapshot, MAIN_BRANCH)?
            .build()?;
        let updates: Vec<TableUpdate> = result
            .changes
            .into_iter()
            .filter(|u| {
                matches!(
                    u,
                    TableUpdate::AddSnapshot { .. } | TableUpdate::SetSnapshotRef { .. }
                )
            })
            .collect();
        let requirements = vec![
            TableRequirement::UuidMatch { uuid: md.uuid() },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: MAIN_BRANCH.to_string(),
                snapshot_id: parent_id,
            },
        ];
        Ok(PreparedCommit {
            requirements,
            updates,
            summary: summary.additional_properties,
        })
    }
}

/// `manifests` with their file and row counts filled in where the parent's manifest list left
/// them out. Java (since 1.5) names the v1 count fields `added_files_count` etc., which
/// iceberg-rust's v1 reader does not map, so carried manifests come back without counts; written
/// so, Java refuses them ("data file counts are missing", e.g. in Spark's `files` table). The
/// counts are taken from the manifest's entries, as Java's writer computes them.
async fn with_v1_counts(
    table: &Table,
    manifests: Vec<ManifestFile>,
) -> Result<Vec<ManifestFile>, ReplaceError> {
    let mut out = Vec::with_capacity(manifests.len());
    for mut m in manifests {
        let complete = [
            m.added_files_count,
            m.existing_files_count,
            m.deleted_files_count,
        ]
        .iter()
        .all(Option::is_some)
            && [
                m.added_rows_count,
                m.existing_rows_count,
                m.deleted_rows_count,
            ]
            .iter()
            .all(Option::is_some);
        if !complete {
            let manifest = m.load_manifest(table.file_io()).await?;
            let (mut files, mut rows) = ([0u32; 3], [0u64; 3]);
            for e in manifest.entries() {
                let i = match e.status() {
                    ManifestStatus::Added => 0,
                    ManifestStatus::Existing => 1,
                    ManifestStatus::Deleted => 2,
                };
                files[i] += 1;
                rows[i] += e.data_file().record_count();
            }
            m.added_files_count = Some(files[0]);
            m.existing_files_count = Some(files[1]);
            m.deleted_files_count = Some(files[2]);
            m.added_rows_count = Some(rows[0]);
            m.existing_rows_count = Some(rows[1]);
            m.deleted_rows_count = Some(rows[2]);
        }
        out.push(m);
    }
    Ok(out)
}

#[derive(Debug)]
struct PreparedCommit {
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
    summary: HashMap<String, String>,
}

/// A positive random snapshot id not used by the table (iceberg-rust and Java both draw random
/// positive longs).
fn new_snapshot_id(table: &Table) -> i64 {
    loop {
        let (hi, lo) = Uuid::new_v4().as_u64_pair();
        let id = ((hi ^ lo) & (i64::MAX as u64)) as i64;
        if id != 0 && table.metadata().snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// Refuses table versions the replace commit cannot write correctly.
pub(crate) fn check_format_version(table: &Table) -> Result<(), ReplaceError> {
    match table.metadata().format_version() {
        FormatVersion::V1 | FormatVersion::V2 => Ok(()),
        v => Err(ReplaceError::Unsupported(format!(
            "table {} has format version {v}; row lineage and deletion vectors are not supported by the replace commit",
            table.identifier()
        ))),
    }
}

/// Commits `change` to `ident`'s `main` branch through `backend`, retrying lost races within
/// `retry`: each attempt reloads the table through `catalog`, rebuilds the change on the current
/// parent and sends it with requirements "same table UUID, `main` still at that parent".
///
/// - conflict: this attempt's manifests and manifest list are deleted, then back off and retry;
/// - commit state unknown: the table is reloaded; when the snapshot is there the commit counts as
///   done, otherwise [`ReplaceError::StateUnknown`] is returned and nothing is deleted;
/// - any other failure: this attempt's files are deleted and the error returned.
///
/// Right before each send, `fence` proves the job still holds the table's lease; when it does
/// not, the attempt's files are deleted and [`ReplaceError::Fenced`] returned, nothing sent.
pub async fn commit_change(
    catalog: &dyn Catalog,
    backend: &dyn CommitBackend,
    ident: &TableIdent,
    change: &dyn SnapshotChange,
    retry: &RetryPolicy,
    fence: &Fence,
) -> Result<CommitOutcome, ReplaceError> {
    let started = Instant::now();
    let mut identity: Option<CommitIdentity> = None;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let table = catalog
            .load_table(ident)
            .await
            .map_err(ReplaceError::Catalog)?;
        check_format_version(&table)?;
        let identity = CommitIdentity::for_attempt(&mut identity, &table);
        let snapshot_id = identity.snapshot_id;
        let mut producer = SnapshotProducer::new(&table, identity, attempt);

        let prepared = producer.prepare(change).await?;

        let summary = prepared.summary;
        crashpoint::reached(CrashPoint::CommitBeforeCatalog);
        if let Err(e) = fence.before_commit().await {
            // Our own unsent manifests: no other writer can know them, so deleting them needs
            // no lease.
            producer.cleanup().await;
            return Err(e.into());
        }
        match backend
            .commit(&table, prepared.requirements, prepared.updates)
            .await
        {
            Ok(committed) => {
                crashpoint::reached(CrashPoint::CommitAfterCatalog);
                tracing::info!(
                    table = %ident,
                    snapshot_id,
                    attempts = attempt,
                    change = %change.describe(),
                    "committed snapshot"
                );
                return Ok(CommitOutcome {
                    snapshot_id,
                    attempts: attempt,
                    table: committed,
                    summary,
                });
            }
            Err(CommitError::Conflict(msg)) => {
                producer.cleanup().await;
                let wait = retry.backoff_with_jitter(attempt);
                if !retry.allows(attempt, started.elapsed(), wait) {
                    tracing::warn!(table = %ident, attempts = attempt, error = %msg, "commit conflicts exhausted the retry budget");
                    return Err(ReplaceError::RetriesExhausted {
                        attempts: attempt,
                        last: msg,
                    });
                }
                tracing::info!(
                    table = %ident,
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    error = %msg,
                    "commit conflict; rebuilding on the new table state"
                );
                tokio::time::sleep(wait).await;
            }
            Err(CommitError::StateUnknown(msg)) => {
                // The catalog may hold our snapshot: the files must stay.
                tracing::warn!(table = %ident, snapshot_id, error = %msg, "commit state unknown; checking the table");
                return match check_commit_status(catalog, ident, snapshot_id, retry).await {
                    Ok(committed) => {
                        tracing::info!(table = %ident, snapshot_id, attempts = attempt, "snapshot found after unknown commit state");
                        Ok(CommitOutcome {
                            snapshot_id,
                            attempts: attempt,
                            table: committed,
                            summary,
                        })
                    }
                    Err(why) => Err(ReplaceError::StateUnknown(format!("{msg}; {why}"))),
                };
            }
            Err(CommitError::NotFound(msg)) => {
                producer.cleanup().await;
                return Err(ReplaceError::NotFound(msg));
            }
            Err(CommitError::Failed(msg)) => {
                producer.cleanup().await;
                return Err(ReplaceError::Commit(msg));
            }
        }
    }
}

/// Reloads the table (a few times on load errors) and returns it when it contains `snapshot_id`.
async fn check_commit_status(
    catalog: &dyn Catalog,
    ident: &TableIdent,
    snapshot_id: i64,
    retry: &RetryPolicy,
) -> Result<Table, String> {
    let mut last_error = String::new();
    for check in 1..=STATUS_CHECK_ATTEMPTS {
        match catalog.load_table(ident).await {
            Ok(t) if t.metadata().snapshot_by_id(snapshot_id).is_some() => return Ok(t),
            // A slow catalog may still apply the request later, so absence is not proof.
            Ok(_) => {
                return Err(format!(
                    "snapshot {snapshot_id} is not in the reloaded table (the catalog may still apply it)"
                ));
            }
            Err(e) => {
                tracing::warn!(table = %ident, check, error = %e, "reload after unknown commit state failed");
                last_error = e.to_string();
            }
        }
        if check < STATUS_CHECK_ATTEMPTS {
            tokio::time::sleep(retry.backoff(check)).await;
        }
    }
    Err(format!("could not reload the table: {last_error}"))
}

#[cfg(test)]
mod tests {
    use iceberg::spec::FormatVersion;

    use super::*;
    use crate::commit::tests::Env;

    /// A v1 manifest list read without counts (Java 1.5+'s field names) gets them back from the
    /// manifests' entries, equal to what the writer had recorded.
    #[tokio::test]
    async fn missing_v1_manifest_counts_are_taken_from_the_entries() {
        let env = Env::with(FormatVersion::V1, &[]).await;
        for part in [1, 2] {
            let f = env.write(part, &[(1, "a"), (2, "b")]).await;
            env.append(vec![f]).await;
        }
        let table = env.table().await;
        let snap = table.metadata().current_snapshot().unwrap();
        let list = table.manifest_list_reader(snap).load().await.unwrap();
        let recorded: Vec<ManifestFile> = list.entries().to_vec();
        assert_eq!(recorded.len(), 2);
        let stripped = recorded
            .iter()
            .cloned()
            .map(|mut m| {
                m.added_files_count = None;
                m.existing_files_count = None;
                m.deleted_files_count = None;
                m.added_rows_count = None;
                m.existing_rows_count = None;
                m.deleted_rows_count = None;
                m
            })
            .collect();
        let filled = with_v1_counts(&table, stripped).await.unwrap();
        assert_eq!(filled, recorded);
        assert!(filled.iter().all(|m| m.added_files_count == Some(1)
            && m.added_rows_count == Some(2)
            && m.existing_files_count == Some(0)));
    }
}
