//! Tests of the replace commit against a real iceberg-catalog-sql catalog on SQLite.
