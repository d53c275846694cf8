//! A catalog that proves the job's lease before every commit it forwards. iceberg-rust's
//! `Transaction::commit` reloads the table and sends the commit again by itself after a conflict,
//! so a fence checked once before calling it would not cover those retries; committing through
//! [`FencedCatalog`] checks the fence right before each attempt.

use std::collections::HashMap;
use std::sync::Mutex;

use iceberg::table::Table;
use iceberg::{
    Catalog, ErrorKind, Namespace, NamespaceIdent, TableCommit, TableCreation, TableIdent,
};

use crate::fence::{Fence, FenceError};

/// `inner` with `fence` checked before every `update_table`; everything else is forwarded as is.
#[derive(Debug)]
pub struct FencedCatalog<'a> {
    inner: &'a dyn Catalog,
    fence: &'a Fence,
    /// The fence's refusal, kept so the caller can return it as such (iceberg's error only carries
    /// its text).
    refused: Mutex<Option<FenceError>>,
}

impl<'a> FencedCatalog<'a> {
    pub fn new(inner: &'a dyn Catalog, fence: &'a Fence) -> Self {
        Self {
            inner,
            fence,
            refused: Mutex::new(None),
        }
    }

    /// The fence error that stopped a commit, if one did (nothing was sent then).
    pub fn refused(&self) -> Option<FenceError> {
        self.refused.lock().expect("not poisoned").clone()
    }
}

#[async_trait::async_trait]
impl Catalog for FencedCatalog<'_> {
    async fn list_namespaces(
        &self,
        parent: Option<&NamespaceIdent>,
    ) -> iceberg::Result<Vec<NamespaceIdent>> {
        self.inner.list_namespaces(parent).await
    }
    async fn create_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<Namespace> {
        self.inner.create_namespace(namespace, properties).await
    }
    async fn get_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<Namespace> {
        self.inner.get_namespace(namespace).await
    }
    async fn namespace_exists(&self, namespace: &NamespaceIdent) -> iceberg::Result<bool> {
        self.inner.namespace_exists(namespace).await
    }
    async fn update_namespace(
        &self,
        namespace: &NamespaceIdent,
        properties: HashMap<String, String>,
    ) -> iceberg::Result<()> {
        self.inner.update_namespace(namespace, properties).await
    }
    async fn drop_namespace(&self, namespace: &NamespaceIdent) -> iceberg::Result<()> {
        self.inner.drop_namespace(namespace).await
    }
    async fn list_tables(&self, namespace: &NamespaceIdent) -> iceberg::Result<Vec<TableIdent>> {
        self.inner.list_tables(namespace).await
    }
    async fn create_table(
        &self,
        namespace: &NamespaceIdent,
        creation: TableCreation,
    ) -> iceberg::Result<Table> {
        self.inner.create_table(namespace, creation).await
    }
    async fn load_table(&self, table: &TableIdent) -> iceberg::Result<Table> {
        self.inner.load_table(table).await
    }
    async fn drop_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.drop_table(table).await
    }
    async fn purge_table(&self, table: &TableIdent) -> iceberg::Result<()> {
        self.inner.purge_table(table).await
    }
    async fn table_exists(&self, table: &TableIdent) -> iceberg::Result<bool> {
        self.inner.table_exists(table).await
    }
    async fn rename_table(&self, src: &TableIdent, dest: &TableIdent) -> iceberg::Result<()> {
        self.inner.rename_table(src, dest).await
    }
    async fn register_table(
        &self,
        table: &TableIdent,
        metadata_location: String,
    ) -> iceberg::Result<Table> {
        self.inner.register_table(table, metadata_location).await
    }
    async fn update_table(&self, commit: TableCommit) -> iceberg::Result<Table> {
        if let Err(e) = self.fence.before_commit().await {
            let message = e.to_string();
            *self.refused.lock().expect("not poisoned") = Some(e);
            // Not retryable: the transaction must stop here, nothing sent.
            return Err(iceberg::Error::new(ErrorKind::Unexpected, message));
        }
        self.inner.update_table(commit).await
    }
}
