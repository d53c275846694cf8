//! `/api/v1/...`: tables, jobs, triggers.
