//! Reading a manifest a slice at a time, so a 100 000-entry manifest is never decoded whole.
//!
//! iceberg 0.10.1 decodes a manifest in one go (`ManifestFile::load_manifest`): every entry with
//! its column metrics, ~2-3 KiB each, so ~280 MiB for 100 000 entries. A manifest is an Avro
//! object container file: a header (magic, metadata, sync marker) followed by independent blocks
//! (entry count, byte size, encoded entries, sync marker). [`EntrySlices`] cuts the file's bytes
//! into slices of whole blocks of about [`SLICE_ENTRIES`] entries and hands each one, behind a
//! copy of the header, to iceberg's own decoder (`Manifest::parse_avro`): the entries come out
//! exactly as `load_manifest` makes them (v1 and v2 layouts, partition types, bounds), and the
//! inheritance `load_manifest` then applies (null snapshot id and sequence numbers taken from the
//! manifest list's entry) is [`inherit`]. Only the file's bytes and one slice's entries are held.

use iceberg::spec::{
    Manifest, ManifestEntry, ManifestEntryRef, ManifestFile, ManifestMetadata, ManifestStatus,
};

/// Entries decoded at once, about (whole blocks are taken; a block holds at most a few hundred).
pub const SLICE_ENTRIES: u64 = 2_048;

/// Avro's object container magic.
const MAGIC: &[u8; 4] = b"Obj\x01";
/// Length of a container's sync marker.
const SYNC_LEN: usize = 16;

/// A manifest file's bytes, however the storage layer holds them (iceberg's `Bytes`, a `Vec`).
pub type RawManifest = Box<dyn AsRef<[u8]> + Send + Sync>;

/// Errors of the slice reader's framing (the entries' decoding errors are iceberg's).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("manifest {path} is not an avro container file: {reason}")]
    Framing { path: String, reason: &'static str },
    #[error(transparent)]
    Iceberg(#[from] iceberg::Error),
}

impl From<ReadError> for iceberg::Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Iceberg(e) => e,
            e @ ReadError::Framing { .. } => {
                iceberg::Error::new(iceberg::ErrorKind::DataInvalid, e.to_string())
            }
        }
    }
}

/// The entries of one manifest, decoded a slice at a time.
pub struct EntrySlices {
    manifest: ManifestFile,
    bytes: RawManifest,
    /// End of the header (after its sync marker).
    header_end: usize,
    /// Start of the next block not yet decoded.
    pos: usize,
    /// Entries per slice, about.
    slice: u64,
    metadata: ManifestMetadata,
    /// Entries already decoded whole (an encrypted manifest, read through iceberg), handed out as
    /// one slice.
    whole: Option<Vec<ManifestEntryRef>>,
}

impl EntrySlices {
    /// The entries of a manifest iceberg decoded whole (`load_manifest`, inheritance applied).
    pub fn decoded(manifest: ManifestFile, decoded: Manifest) -> Self {
        let (entries, metadata) = decoded.into_parts();
        Self {
            manifest,
            bytes: Box::new(Vec::new()),
            header_end: 0,
            pos: 0,
            slice: 1,
            metadata,
            whole: Some(entries),
        }
    }

    /// Reads the header of `bytes`, the content of `manifest`; decodes nothing yet.
    pub fn new(manifest: ManifestFile, bytes: RawManifest, slice: u64) -> Result<Self, ReadError> {
        let framing = |reason| ReadError::Framing {
            path: manifest.manifest_path.clone(),
            reason,
        };
        let raw = (*bytes).as_ref();
        let header_end = header_len(raw).ok_or_else(|| framing("bad header"))?;
        // The header alone is a valid empty container: iceberg parses its metadata.
        let (_, metadata) = Manifest::parse_avro(&raw[..header_end])?.into_parts();
        Ok(Self {
            manifest,
            bytes,
            header_end,
            pos: header_end,
            slice: slice.max(1),
            metadata,
            whole: None,
        })
    }

    /// The manifest's metadata (spec, schema, format version, content).
    pub fn metadata(&self) -> &ManifestMetadata {
        &self.metadata
    }

    /// The manifest list's entry for this manifest.
    pub fn manifest(&self) -> &ManifestFile {
        &self.manifest
    }

    /// The next slice of entries, inherited values filled in; `None` at the end.
    pub fn next_slice(&mut self) -> Result<Option<Vec<ManifestEntryRef>>, ReadError> {
        if let Some(whole) = self.whole.take() {
            return Ok(Some(whole));
        }
        let raw = (*self.bytes).as_ref();
        if self.pos >= raw.len() {
            return Ok(None);
        }
        let start = self.pos;
        let mut count = 0u64;
        while self.pos < raw.len() && count < self.slice {
            let (n, end) = block_end(raw, self.pos).ok_or_else(|| ReadError::Framing {
                path: self.manifest.manifest_path.clone(),
                reason: "truncated block",
            })?;
            count += n;
            self.pos = end;
        }
        let mut container = Vec::with_capacity(self.header_end + self.pos - start);
        container.extend_from_slice(&raw[..self.header_end]);
        container.extend_from_slice(&raw[start..self.pos]);
        let (entries, _) = Manifest::parse_avro(&container)?.into_parts();
        drop(container);
        let entries = entries
            .into_iter()
            .map(|e| {
                let mut e = std::sync::Arc::unwrap_or_clone(e);
                inherit(&mut e, &self.manifest);
                std::sync::Arc::new(e)
            })
            .collect();
        Ok(Some(entries))
    }
}

/// Every entry of `m`, read through [`EntrySlices`] with slices of about `slice` entries: what
/// `m.load_manifest(io)` returns, without decoding the manifest whole at once (for tests and
/// tools comparing the two).
pub async fn load_sliced(
    io: &iceberg::io::FileIO,
    m: &ManifestFile,
    slice: u64,
) -> Result<Vec<ManifestEntryRef>, iceberg::Error> {
    let bytes: RawManifest = Box::new(io.new_input(&m.manifest_path)?.read().await?);
    let mut slices = EntrySlices::new(m.clone(), bytes, slice)?;
    let mut out = Vec::new();
    while let Some(entries) = slices.next_slice()? {
        out.extend(entries);
    }
    Ok(out)
}

/// What `ManifestFile::load_manifest` does to each entry after decoding (`inherit_data`, private
/// in iceberg 0.10.1): a null snapshot id is the manifest's; null sequence numbers are the
/// manifest's for ADDED entries, and for every entry of a manifest of the initial sequence number.
pub fn inherit(entry: &mut ManifestEntry, m: &ManifestFile) {
    /// `INITIAL_SEQUENCE_NUMBER` in iceberg.
    const INITIAL: i64 = 0;
    if entry.snapshot_id.is_none() {
        entry.snapshot_id = Some(m.added_snapshot_id);
    }
    let inherits = entry.status == ManifestStatus::Added || m.sequence_number == INITIAL;
    if entry.sequence_number.is_none() && inherits {
        entry.sequence_number = Some(m.sequence_number);
    }
    if entry.file_sequence_number.is_none() && inherits {
        entry.file_sequence_number = Some(m.sequence_number);
    }
}

/// Reads an Avro `long` (zigzag varint) at `*pos`, advancing it.
fn read_long(bytes: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// Skips `len` bytes at `*pos` (a length read from the file), checking they are there.
fn skip(bytes: &[u8], pos: &mut usize, len: i64) -> Option<()> {
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len)?;
    (end <= bytes.len()).then(|| *pos = end)
}

/// Length of the container header: magic, metadata map (blocks of string keys and bytes
/// values), sync marker. `None` when the bytes are not a container.
fn header_len(bytes: &[u8]) -> Option<usize> {
    if bytes.get(..4)? != MAGIC {
        return None;
    }
    let mut pos = 4;
    loop {
        let count = read_long(bytes, &mut pos)?;
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            let size = read_long(bytes, &mut pos)?;
            skip(bytes, &mut pos, size)?;
            continue;
        }
        for _ in 0..count {
            let key = read_long(bytes, &mut pos)?;
            skip(bytes, &mut pos, key)?;
            let value = read_long(bytes, &mut pos)?;
            skip(bytes, &mut pos, value)?;
        }
    }
    skip(bytes, &mut pos, SYNC_LEN as i64)?;
    Some(pos)
}

/// The entry count of the block at `pos` and where it ends (after its sync marker).
fn block_end(bytes: &[u8], mut pos: usize) -> Option<(u64, usize)> {
    let count = u64::try_from(read_long(bytes, &mut pos)?).ok()?;
    let size = read_long(bytes, &mut pos)?;
    skip(bytes, &mut pos, size)?;
    skip(bytes, &mut pos, SYNC_LEN as i64)?;
    Some((count, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of a container file: their entry counts.
    fn block_counts(bytes: &[u8]) -> Vec<u64> {
        let mut pos = header_len(bytes).unwrap();
        let mut out = Vec::new();
        while pos < bytes.len() {
            let (n, end) = block_end(bytes, pos).unwrap();
            out.push(n);
            pos = end;
        }
        out
    }

    #[tokio::test]
    async fn slices_decode_what_load_manifest_decodes() {
        use crate::commit::tests::Env;
        use iceberg::spec::{
            DataContentType, DataFileBuilder, DataFileFormat, Datum, Literal, Struct,
        };
        use std::collections::HashMap;
        let env = Env::new().await;
        let location = env.table().await.metadata().location().to_string();
        // Enough entries with metrics for several blocks; then a few small appends.
        let file = |i: usize| {
            DataFileBuilder::default()
                .content(DataContentType::Data)
                .file_path(format!(
                    "{location}/data/some/long/path/file-{i:06}.parquet"
                ))
                .file_format(DataFileFormat::Parquet)
                .partition(Struct::from_iter([Some(Literal::int((i % 7) as i32))]))
                .partition_spec_id(0)
                .record_count(i as u64 + 1)
                .file_size_in_bytes(1000 + i as u64)
                .column_sizes(HashMap::from([(1, 10 + i as u64), (2, 20)]))
                .value_counts(HashMap::from([(1, 5), (2, 5)]))
                .null_value_counts(HashMap::from([(1, 0), (2, i as u64 % 3)]))
                .lower_bounds(HashMap::from([
                    (1, Datum::long(i as i64)),
                    (2, Datum::string(format!("a{i}"))),
                ]))
                .upper_bounds(HashMap::from([(1, Datum::long(i as i64 + 9))]))
                .split_offsets(Some(vec![4, 100 + i as i64]))
                .build()
                .unwrap()
        };
        env.append((0..3000).map(file).collect()).await;
        for i in 0..3 {
            env.append(vec![file(10_000 + i)]).await;
        }
        // A rewrite makes EXISTING entries with explicit ids and sequence numbers too.
        let op = super::super::RewriteManifestsOp {
            settings: super::super::ManifestSettings {
                min_manifests: 0,
                target_size_bytes: super::super::DEFAULT_TARGET_SIZE_BYTES,
            },
            summary_properties: HashMap::new(),
            spill: Default::default(),
            loader: None,
        };
        for table in [env.table().await, {
            env.commit(&op).await.unwrap();
            env.table().await
        }] {
            let snap = table.metadata().current_snapshot().unwrap();
            let list = table.manifest_list_reader(snap).load().await.unwrap();
            let mut multi_block = false;
            for m in list.entries() {
                let whole = m.load_manifest(table.file_io()).await.unwrap();
                let bytes = table.file_io().new_input(&m.manifest_path).unwrap();
                let blocks = block_counts(&bytes.read().await.unwrap());
                multi_block |= blocks.len() > 2;
                for slice in [1, 100, 1_000_000] {
                    let sliced = load_sliced(table.file_io(), m, slice).await.unwrap();
                    assert_eq!(sliced.len(), whole.entries().len(), "{slice}");
                    assert!(sliced.iter().zip(whole.entries()).all(|(a, b)| a == b));
                }
            }
            assert!(multi_block, "the large manifest has several blocks");
        }
    }

    #[test]
    fn longs_are_zigzag_varints() {
        let mut pos = 0;
        let bytes = [0x00, 0x01, 0x02, 0x7f, 0x80, 0x01, 0xff, 0xff, 0x03];
        let got: Vec<i64> = std::iter::from_fn(|| read_long(&bytes, &mut pos)).collect();
        assert_eq!(got, [0, -1, 1, -64, 64, -32768]);
        // Truncated and over-long varints are errors, not panics.
        assert_eq!(read_long(&[0x80], &mut 0), None);
        assert_eq!(read_long(&[0xff; 11], &mut 0), None);
    }

    #[test]
    fn framing_errors_are_reported_not_panics() {
        assert_eq!(header_len(b"Obj"), None);
        assert_eq!(header_len(b"Nope\x00"), None);
        // Magic, one map entry whose value runs past the end.
        assert_eq!(header_len(b"Obj\x01\x02\x02k\x7f"), None);
        // Magic, empty map, but no sync marker.
        assert_eq!(header_len(b"Obj\x01\x00"), None);
        let mut ok = b"Obj\x01\x02\x02k\x02v\x00".to_vec();
        ok.extend([7u8; 16]);
        assert_eq!(header_len(&ok), Some(ok.len()));
        // A block of 3 entries, 2 bytes, and its sync marker; then a truncated one.
        let mut blocks = vec![0x06, 0x04, 1, 2];
        blocks.extend([7u8; 16]);
        assert_eq!(block_end(&blocks, 0), Some((3, blocks.len())));
        assert_eq!(block_end(&blocks[..10], 0), None);
    }
}
