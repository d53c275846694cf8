//! The routing of a manifest rewrite's second pass: each live entry goes to the output manifest
//! the first pass fixed for it, through per-output buffers whose entries together stay under a
//! bound. A buffer that grows too large, or the largest one when all of them together hold too
//! many, is spilled as a chunk: a small temporary manifest in a local temporary directory,
//! written and read back with iceberg's own manifest code (so every field of an entry survives
//! the trip). An output whose entries have all arrived is handed back (after the input manifest
//! being routed is dropped), its chunks read and deleted, in the order they were routed: outputs complete while the inputs are still being
//! read when the inputs are clustered, and the spill only holds what is still waiting.
//!
//! The directory lives outside the table location (the system's temporary directory unless told
//! otherwise) and is removed when the [`Spill`] is dropped: on success, on error, and when the
//! rewrite's future is dropped by cancellation.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use iceberg::io::FileIO;
use iceberg::spec::{
    Manifest, ManifestEntryRef, ManifestWriter, ManifestWriterBuilder, PartitionSpec, SchemaRef,
};

use crate::commit::ReplaceError;

/// Live entries a rewrite holds in memory instead of counting and spilling them, at most: a
/// decoded entry with column metrics like Spark's weighs ~1.5-2.5 KiB, so ~250 MiB at most.
pub const IN_MEMORY_ENTRIES: u64 = 131_072;
/// Entries held in the per-output buffers together, at most: past it the largest buffer is
/// spilled. A decoded entry with column metrics weighs ~1-2 KiB.
pub const SPILL_HELD_ENTRIES: usize = 16_384;
/// Entries in one buffer, at most: a buffer this full is spilled as one chunk.
pub const SPILL_CHUNK_ENTRIES: usize = 8_192;

/// How much the routing holds in memory before it spills, and where it spills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillOptions {
    /// Entries held in all buffers together, at most.
    pub held: usize,
    /// Entries in one buffer (so in one chunk), at most.
    pub chunk: usize,
    /// Parent of the temporary directory; the system's temporary directory when `None`.
    pub parent: Option<PathBuf>,
    /// Live entries of the whole rewrite held in memory (read once, nothing spilled), at most.
    pub in_memory: u64,
}

impl Default for SpillOptions {
    fn default() -> Self {
        Self {
            held: SPILL_HELD_ENTRIES,
            chunk: SPILL_CHUNK_ENTRIES,
            parent: None,
            in_memory: IN_MEMORY_ENTRIES,
        }
    }
}

/// One live entry on its way to an output manifest, with the ids `add_existing_file` keeps.
#[derive(Debug)]
pub struct Routed {
    pub(super) entry: ManifestEntryRef,
    pub(super) snapshot_id: i64,
    pub(super) seq: i64,
    pub(super) file_seq: i64,
}

impl Routed {
    /// `entry` of a manifest added by `added_snapshot_id` (the snapshot id an entry without one
    /// inherits). Its data sequence number must be known: the entry stays EXISTING with it.
    pub fn new(entry: ManifestEntryRef, added_snapshot_id: i64) -> Result<Self, ReplaceError> {
        let seq = entry.sequence_number.ok_or_else(|| {
            ReplaceError::InvalidChange(format!(
                "an entry for {} has no data sequence number",
                entry.file_path()
            ))
        })?;
        Ok(Self {
            snapshot_id: entry.snapshot_id.unwrap_or(added_snapshot_id),
            file_seq: entry.file_sequence_number.unwrap_or(seq),
            seq,
            entry,
        })
    }

    /// Adds the entry to `writer` as EXISTING, with its snapshot id and sequence numbers. Moves
    /// the data file out when nothing else shares the entry (a chunk's entries), else copies it.
    pub fn add_to(self, writer: &mut ManifestWriter) -> Result<(), iceberg::Error> {
        let file = Arc::unwrap_or_clone(self.entry).data_file;
        writer.add_existing_file(file, self.snapshot_id, self.seq, Some(self.file_seq))
    }
}

/// Pass 2's routing of one (spec, schema) group into `outputs` output manifests.
pub struct Spill {
    options: SpillOptions,
    schema: SchemaRef,
    spec: PartitionSpec,
    /// Entries each output still waits for; an output leaves the map when it is complete.
    missing: HashMap<u64, u64>,
    buffers: HashMap<u64, Vec<Routed>>,
    held: usize,
    chunks: HashMap<u64, Vec<String>>,
    chunks_written: u64,
    /// Created at the first spill; removed (with every chunk left) when dropped.
    dir: Option<tempfile::TempDir>,
    io: FileIO,
}

impl Spill {
    /// The routing of `entries` entries into outputs of `per` entries each (the last one takes
    /// the rest), written under `schema` and `spec`.
    pub fn new(
        options: SpillOptions,
        schema: SchemaRef,
        spec: PartitionSpec,
        entries: u64,
        per: u64,
    ) -> Self {
        let per = per.max(1);
        let missing = (0..entries.div_ceil(per))
            .map(|i| (i, per.min(entries - i * per)))
            .collect();
        Self {
            options,
            schema,
            spec,
            missing,
            buffers: HashMap::new(),
            held: 0,
            chunks: HashMap::new(),
            chunks_written: 0,
            dir: None,
            io: FileIO::new_with_fs(),
        }
    }

    /// Routes `entry` to output `index`. Returns `true` when this was the last entry the output
    /// waited for: its entries are then ready for [`Spill::take`]. The caller takes them after it
    /// dropped the input manifest it is routing, so the two are not held at once.
    pub async fn push(&mut self, index: u64, entry: Routed) -> Result<bool, ReplaceError> {
        let changed = || {
            ReplaceError::InvalidChange(
                "the manifests changed while they were rewritten (more entries than counted)"
                    .to_string(),
            )
        };
        let missing = self.missing.get_mut(&index).ok_or_else(changed)?;
        *missing -= 1;
        let complete = *missing == 0;
        let buffer = self.buffers.entry(index).or_default();
        buffer.push(entry);
        self.held += 1;
        if complete {
            self.missing.remove(&index);
            return Ok(true);
        }
        if buffer.len() >= self.options.chunk.max(1) {
            self.flush(index).await?;
        } else if self.held > self.options.held {
            // The largest buffer of an output still waiting (a complete one is about to be taken).
            let largest = self
                .buffers
                .iter()
                .filter(|(i, _)| self.missing.contains_key(i))
                .max_by_key(|(_, b)| b.len())
                .map(|(i, _)| *i);
            if let Some(largest) = largest {
                self.flush(largest).await?;
            }
        }
        Ok(false)
    }

    /// Checks that every output got all the entries the first pass counted.
    pub fn finish(&self) -> Result<(), ReplaceError> {
        if self.missing.is_empty() {
            return Ok(());
        }
        Err(ReplaceError::InvalidChange(
            "the manifests changed while they were rewritten (fewer entries than counted)"
                .to_string(),
        ))
    }

    /// Chunks written so far (for tests and reports).
    #[cfg(test)]
    pub fn chunks_written(&self) -> u64 {
        self.chunks_written
    }

    /// Writes output `index`'s buffer as a chunk.
    async fn flush(&mut self, index: u64) -> Result<(), ReplaceError> {
        let Some(entries) = self.buffers.remove(&index) else {
            return Ok(());
        };
        self.held -= entries.len();
        if self.dir.is_none() {
            self.dir = Some(self.create_dir()?);
        }
        let dir = self
            .dir
            .as_ref()
            .expect("the spill directory was just created");
        let path = dir
            .path()
            .join(format!("{index}-{}.avro", self.chunks_written))
            .display()
            .to_string();
        self.chunks_written += 1;
        let output = self.io.new_output(&path)?;
        // Chunks are format v2 whatever the table's version: v2 keeps every sequence number.
        let mut writer =
            ManifestWriterBuilder::new(output, None, self.schema.clone(), self.spec.clone())
                .build_v2_data();
        for entry in entries {
            entry.add_to(&mut writer)?;
        }
        writer.write_manifest_file().await?;
        self.chunks.entry(index).or_default().push(path);
        Ok(())
    }

    /// Output `index`'s entries: its chunks in the order they were written (deleted once read),
    /// then its buffer; so in the order they were routed.
    pub async fn take(&mut self, index: u64) -> Result<Vec<Routed>, ReplaceError> {
        let mut out = Vec::new();
        for path in self.chunks.remove(&index).unwrap_or_default() {
            let bytes = self.io.new_input(&path)?.read().await?;
            let (entries, _) = Manifest::parse_avro(&bytes)?.into_parts();
            drop(bytes);
            for entry in entries {
                // A chunk's entries carry their snapshot id, so the fallback is never used.
                out.push(Routed::new(entry, -1)?);
            }
            self.io.delete(&path).await?;
        }
        if let Some(buffer) = self.buffers.remove(&index) {
            self.held -= buffer.len();
            out.extend(buffer);
        }
        Ok(out)
    }

    fn create_dir(&self) -> Result<tempfile::TempDir, iceberg::Error> {
        let parent = self
            .options
            .parent
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        tempfile::Builder::new()
            .prefix("icemaint-manifests-")
            .tempdir_in(&parent)
            .map_err(|e| {
                iceberg::Error::new(
                    iceberg::ErrorKind::Unexpected,
                    format!(
                        "cannot create a spill directory for the manifest rewrite in {}",
                        parent.display()
                    ),
                )
                .with_source(e)
            })
    }
}
