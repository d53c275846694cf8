-- Fenced table leases and exactly-once schedule fires (portable between SQLite and PostgreSQL).
--
-- A lease row now stays once written: releasing it only expires it, so its epoch keeps growing
-- across releases and takeovers and a job can prove that the lease it holds is still the one it
-- took (same job id, same epoch).
ALTER TABLE table_locks ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;

-- The un-jittered schedule fire time a scheduled job ran for (ms since the epoch).
ALTER TABLE jobs ADD COLUMN fire_ms BIGINT;

-- One row per (table, kind, fire time) some replica claimed: the replica whose insert created the
-- row runs that fire; the others skip it.
CREATE TABLE IF NOT EXISTS schedule_fires (
    table_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    fire_ms BIGINT NOT NULL,
    owner TEXT NOT NULL,
    claimed_ms BIGINT NOT NULL,
    PRIMARY KEY (table_name, kind, fire_ms)
);
CREATE INDEX IF NOT EXISTS schedule_fires_claimed ON schedule_fires (claimed_ms);
