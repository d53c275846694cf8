//! The memory bound shared by the manifest walks that decode a whole table's manifests (the
//! compaction's candidate listing, orphan removal's reference set): at most
//! [`MANIFEST_ENTRY_BUDGET`] entries decoded at once, each manifest weighing its entry count.

use iceberg::spec::ManifestFile;

/// Manifest entries being decoded or processed at once, at most (a larger manifest is read
/// alone). A decoded entry with column metrics weighs ~1-2 KiB, so this bounds a walk's memory
/// however large the manifests are, while small manifests are still fetched several at a time to
/// hide an object store's latency.
pub const MANIFEST_ENTRY_BUDGET: u32 = 32_768;

/// A manifest's share of [`MANIFEST_ENTRY_BUDGET`]: its entry count from the manifest list (the
/// whole budget when the list does not say, so such a manifest is read alone).
pub fn manifest_weight(m: &ManifestFile) -> u32 {
    match (
        m.added_files_count,
        m.existing_files_count,
        m.deleted_files_count,
    ) {
        (Some(a), Some(e), Some(d)) => a.saturating_add(e).saturating_add(d),
        _ => MANIFEST_ENTRY_BUDGET,
    }
    .clamp(1, MANIFEST_ENTRY_BUDGET)
}
