-- icemaint state store: job history, property changes and per-table maintenance locks.
-- Portable between SQLite and PostgreSQL (no AUTOINCREMENT/SERIAL: ids are UUIDv7 strings,
-- times are milliseconds since the epoch).
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    detail TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_table_created ON jobs (table_name, created_ms);

CREATE TABLE IF NOT EXISTS property_changes (
    id TEXT PRIMARY KEY,
    table_name TEXT NOT NULL,
    property_key TEXT NOT NULL,
    old_value TEXT,
    new_value TEXT,
    changed_ms BIGINT NOT NULL,
    job_id TEXT
);
CREATE INDEX IF NOT EXISTS property_changes_table ON property_changes (table_name, changed_ms);

CREATE TABLE IF NOT EXISTS table_locks (
    table_name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    job_id TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
