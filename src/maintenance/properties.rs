//! Reconciling a table's properties and format version with what its policy desires.
//!
//! Drift is computed purely ([`compute_drift`]); [`reconcile`] commits the difference through
//! iceberg's transaction API. Keys the policy does not name are never touched, the format version
//! is only ever upgraded, and tables no policy selects are never passed here.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::FormatVersion;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use serde::Serialize;

use crate::catalog::fenced::FencedCatalog;
use crate::catalog::{CatalogHandle, format_version_number};
use crate::fence::{Fence, FenceError};
use crate::policy::Policy;

/// Errors while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    #[error("committing properties to {table}: {source}")]
    Commit {
        table: String,
        #[source]
        source: iceberg::Error,
    },
    #[error(transparent)]
    Fenced(#[from] FenceError),
}

impl PropertiesError {
    pub fn is_retryable(&self) -> bool {
        match self {
            PropertiesError::Commit { source, .. } => source.retryable(),
            PropertiesError::Fenced(e) => e.is_retryable(),
        }
    }
}

/// One property that differs from the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PropertyDrift {
    pub key: String,
    pub current: Option<String>,
    pub desired: String,
}

/// Everything about a table that differs from its policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub properties: Vec<PropertyDrift>,
    /// (current, desired) when the table's format version is below the desired one.
    pub format_version: Option<(u8, u8)>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty() && self.format_version.is_none()
    }

    /// Drifted keys, `format-version` included, for reports.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.properties.iter().map(|d| d.key.clone()).collect();
        if self.format_version.is_some() {
            keys.push("format-version".to_string());
        }
        keys.sort();
        keys
    }

    pub fn len(&self) -> usize {
        self.properties.len() + usize::from(self.format_version.is_some())
    }
}

/// What must change for the table to match `desired` (pure).
pub fn compute_drift(
    current: &HashMap<String, String>,
    current_format_version: u8,
    desired: &BTreeMap<String, String>,
    desired_format_version: Option<u8>,
) -> Drift {
    let properties = desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| PropertyDrift {
            key: k.clone(),
            current: current.get(k).cloned(),
            desired: v.clone(),
        })
        .collect();
    let format_version = desired_format_version
        .filter(|d| *d > current_format_version)
        .map(|d| (current_format_version, d));
    Drift {
        properties,
        format_version,
    }
}

/// The drift of a loaded table against its policy.
pub fn table_drift(table: &Table, policy: &Policy) -> Drift {
    let md = table.metadata();
    compute_drift(
        md.properties(),
        format_version_number(md.format_version()),
        &policy.properties,
        policy.format_version,
    )
}

/// Commits `drift` to the table in one transaction and returns the table after it; `fence`
/// proves the job's lease right before each attempt of the commit.
pub async fn reconcile(
    catalog: &CatalogHandle,
    table: &Table,
    drift: &Drift,
    fence: &Fence,
) -> Result<Table, PropertiesError> {
    let name = crate::catalog::ident_name(table.identifier());
    let err = |source| PropertiesError::Commit {
        table: name.clone(),
        source,
    };
    let mut tx = Transaction::new(table);
    if let Some((_, desired)) = drift.format_version {
        let v = if desired >= 2 {
            FormatVersion::V2
        } else {
            FormatVersion::V1
        };
        tx = tx
            .upgrade_table_version()
            .set_format_version(v)
            .apply(tx)
            .map_err(err)?;
    }
    if !drift.properties.is_empty() {
        let mut action = tx.update_table_properties();
        for d in &drift.properties {
            action = action.set(d.key.clone(), d.desired.clone());
        }
        tx = action.apply(tx).map_err(err)?;
    }
    // iceberg-rust retries a conflicting commit by itself: the fence is proven before each try.
    let fenced = FencedCatalog::new(catalog.catalog.as_ref(), fence);
    match tx.commit(&fenced).await {
        Ok(t) => Ok(t),
        Err(e) => Err(match fenced.refused() {
            Some(lost) => lost.into(),
            None => err(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn desired() -> BTreeMap<String, String> {
        [
            ("read.split.target-size", "268435456"),
            ("write.distribution-mode", "hash"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn drift_cases() {
        struct Case {
            current: HashMap<String, String>,
            fv: u8,
            want_fv: Option<u8>,
            keys: Vec<&'static str>,
            fv_drift: Option<(u8, u8)>,
        }
        let cases = [
            Case {
                current: map(&[]),
                fv: 1,
                want_fv: Some(2),
                keys: vec!["read.split.target-size", "write.distribution-mode"],
                fv_drift: Some((1, 2)),
            },
            Case {
                current: map(&[
                    ("read.split.target-size", "268435456"),
                    ("write.distribution-mode", "hash"),
                    ("other", "x"),
                ]),
                fv: 2,
                want_fv: Some(2),
                keys: vec![],
                fv_drift: None,
            },
            Case {
                current: map(&[
                    ("read.split.target-size", "134217728"),
                    ("write.distribution-mode", "hash"),
                ]),
                fv: 2,
                want_fv: None,
                keys: vec!["read.split.target-size"],
                fv_drift: None,
            },
            // Never downgrade.
            Case {
                current: map(&[
                    ("read.split.target-size", "268435456"),
                    ("write.distribution-mode", "hash"),
                ]),
                fv: 3,
                want_fv: Some(2),
                keys: vec![],
                fv_drift: None,
            },
        ];
        for c in cases {
            let d = compute_drift(&c.current, c.fv, &desired(), c.want_fv);
            let keys: Vec<&str> = d.properties.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, c.keys);
            assert_eq!(d.format_version, c.fv_drift);
            assert_eq!(d.is_empty(), c.keys.is_empty() && c.fv_drift.is_none());
        }
    }

    #[test]
    fn drift_reports_old_values() {
        let d = compute_drift(
            &map(&[("write.distribution-mode", "none")]),
            2,
            &desired(),
            None,
        );
        assert_eq!(
            d.properties[1],
            PropertyDrift {
                key: "write.distribution-mode".into(),
                current: Some("none".into()),
                desired: "hash".into()
            }
        );
        assert_eq!(
            d.keys(),
            vec!["read.split.target-size", "write.distribution-mode"]
        );
    }
}

/// iceberg-rust's transaction retries a conflicting commit by itself; committed through
/// [`FencedCatalog`], each retry proves the lease again.
#[cfg(test)]
mod retry_fence_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use iceberg::{
        Catalog, ErrorKind, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
    };

    use super::*;
    use crate::commit::tests::Env;
    use crate::fence::Lease;
    use crate::store::Store;

    /// A catalog whose commits always conflict (retryable); the first one also hands the table's
    /// lease to another job, as a takeover during a paused commit would.
    #[derive(Debug)]
    struct ConflictAndTakeOver {
        inner: Arc<dyn Catalog>,
        store: Store,
        epoch: i64,
        sent: AtomicU32,
    }

    #[async_trait::async_trait]
    impl Catalog for ConflictAndTakeOver {
        async fn list_namespaces(
            &self,
            p: Option<&NamespaceIdent>,
        ) -> iceberg::Result<Vec<NamespaceIdent>> {
            self.inner.list_namespaces(p).await
        }
        async fn create_namespace(
            &self,
            n: &NamespaceIdent,
            p: HashMap<String, String>,
        ) -> iceberg::Result<Namespace> {
            self.inner.create_namespace(n, p).await
        }
        async fn get_namespace(&self, n: &NamespaceIdent) -> iceberg::Result<Namespace> {
            self.inner.get_namespace(n).await
        }
        async fn namespace_exists(&self, n: &NamespaceIdent) -> iceberg::Result<bool> {
            self.inner.namespace_exists(n).await
        }
        async fn update_namespace(
            &self,
            n: &NamespaceIdent,
            p: HashMap<String, String>,
        ) -> iceberg::Result<()> {
            self.inner.update_namespace(n, p).await
        }
        async fn drop_namespace(&self, n: &NamespaceIdent) -> iceberg::Result<()> {
            self.inner.drop_namespace(n).await
        }
        async fn list_tables(&self, n: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
            self.inner.list_tables(n).await
        }
        async fn create_table(
            &self,
            n: &NamespaceIdent,
            c: TableCreation,
        ) -> iceberg::Result<Table> {
            self.inner.create_table(n, c).await
        }
        async fn load_table(&self, t: &TableIdent) -> iceberg::Result<Table> {
            self.inner.load_table(t).await
        }
        async fn drop_table(&self, t: &TableIdent) -> iceberg::Result<()> {
            self.inner.drop_table(t).await
        }
        async fn purge_table(&self, t: &TableIdent) -> iceberg::Result<()> {
            self.inner.purge_table(t).await
        }
        async fn table_exists(&self, t: &TableIdent) -> iceberg::Result<bool> {
            self.inner.table_exists(t).await
        }
        async fn rename_table(&self, a: &TableIdent, b: &TableIdent) -> iceberg::Result<()> {
            self.inner.rename_table(a, b).await
        }
        async fn register_table(&self, t: &TableIdent, l: String) -> iceberg::Result<Table> {
            self.inner.register_table(t, l).await
        }
        async fn update_table(&self, _c: TableCommit) -> iceberg::Result<Table> {
            if self.sent.fetch_add(1, Ordering::SeqCst) == 0 {
                self.store.unlock("db.t", "j1", self.epoch).await.unwrap();
                let taken = self.store.try_lock("db.t", "q", "j2", 60_000).await;
                assert!(taken.is_ok_and(|t| t.is_ok()));
            }
            Err(
                iceberg::Error::new(ErrorKind::CatalogCommitConflicts, "requirement failed")
                    .with_retryable(true),
            )
        }
    }

    #[tokio::test]
    async fn a_retry_after_the_lease_was_lost_is_not_sent() {
        let env = Env::new().await;
        let table = env.table().await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let store = Store::connect(&url).await.unwrap();
        let epoch = store.try_lock("db.t", "p", "j1", 60_000).await.unwrap();
        let epoch = epoch.unwrap();
        let lease = Lease {
            table: "db.t".into(),
            job_id: "j1".into(),
            epoch,
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let fence = Fence::new(store.clone(), lease, Duration::from_secs(60), cancel);
        let inner = ConflictAndTakeOver {
            inner: env.catalog.clone(),
            store,
            epoch,
            sent: AtomicU32::new(0),
        };
        let fenced = FencedCatalog::new(&inner, &fence);
        let tx = Transaction::new(&table);
        let tx = tx
            .update_table_properties()
            .set("k".into(), "v".into())
            .apply(tx)
            .unwrap();
        let err = tx.commit(&fenced).await.unwrap_err();
        assert!(!err.retryable(), "{err}");
        assert_eq!(inner.sent.load(Ordering::SeqCst), 1, "the retry was sent");
        let refused = fenced.refused().expect("the retry was fenced");
        assert!(
            refused
                .to_string()
                .starts_with("lease on db.t lost: taken over by job j2"),
            "{refused}"
        );
        assert!(!env.table().await.metadata().properties().contains_key("k"));
    }
}
