//! Starting the fires that wait for their table under the daemon's budget: the ready fires
//! become [`budget::Candidate`]s (a compaction valued from its table's cached status), the most
//! valuable start while the budget lasts, and the rest stay queued — listed as `queued` jobs in
//! `GET /api/v1/jobs` with what they wait for, and counted in `icemaint_due_tables`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{BUSY_RETRY, Fire, FireQueue};
use crate::budget::{self, Budget, Candidate, Held};
use crate::daemon::Context;
use crate::dispatch;
use crate::inspect::TableStatus;
use crate::jobs::{JobKind, StartError};
use crate::store::JobRecord;

/// How long the last hour's rewritten bytes are reused before the store is asked again.
const SPENT_TTL: Duration = Duration::from_secs(5);

/// The most compaction jobs of the last hour read to add up their bytes.
const SPENT_JOBS: i64 = 1000;

/// The bytes compactions rewrote in the last hour, read from the shared store (so every
/// replica's compactions count) and kept for [`SPENT_TTL`].
#[derive(Debug, Default)]
pub struct Spent {
    read: Option<(Instant, u64)>,
}

impl Spent {
    async fn get(&mut self, ctx: &Context, now: DateTime<Utc>) -> u64 {
        if let Some((at, bytes)) = self.read
            && at.elapsed() < SPENT_TTL
        {
            return bytes;
        }
        let since = now.timestamp_millis() - 3_600_000;
        let bytes = match ctx.store.jobs(None, Some("compaction"), SPENT_JOBS).await {
            Ok(jobs) => rewritten_since(&jobs, since),
            Err(e) => {
                tracing::warn!(error = %e, "rewritten bytes not read; the last figure stands");
                self.read.map_or(0, |(_, b)| b)
            }
        };
        self.read = Some((Instant::now(), bytes));
        bytes
    }

    /// Counts a compaction this replica just started at its estimate, until the store is read
    /// again: its progress may not be recorded yet, and the budget must not forget it.
    fn charge(&mut self, bytes: u64) {
        if let Some((_, b)) = self.read.as_mut() {
            *b = b.saturating_add(bytes);
        }
    }
}

/// Bytes read by the compaction `jobs` running or finished since `since_ms` (a running job's
/// from its progress). Pure.
pub fn rewritten_since(jobs: &[JobRecord], since_ms: i64) -> u64 {
    jobs.iter()
        .filter(|j| j.finished_ms.is_none_or(|f| f >= since_ms))
        .map(|j| {
            let d = &j.detail;
            d["bytes_read"]
                .as_u64()
                .or_else(|| d["progress"]["bytes_read"].as_u64())
                .unwrap_or(0)
        })
        .sum()
}

/// The budget of the daemon's config.
fn budget_of(ctx: &Context) -> Budget {
    let s = &ctx.config.server;
    Budget {
        max_concurrent_jobs: s.max_concurrent_jobs.map(|n| n as usize),
        max_rewritten_bytes_per_hour: s.max_rewritten_bytes_per_hour,
    }
}

/// A ready fire as a candidate: a compaction valued by its table's cached status.
fn candidate(
    i: usize,
    fire: &Fire,
    status: Option<&TableStatus>,
    since: DateTime<Utc>,
) -> Candidate<usize> {
    let rewrites = fire.kind == JobKind::Compaction;
    let (value, bytes) = match status.filter(|_| rewrites) {
        Some(s) => {
            let target = s.small_file_threshold_bytes.saturating_mul(4) / 3;
            let v = budget::value(s.small_files, s.small_file_bytes, target, s.delete_files);
            (v, s.small_file_bytes)
        }
        None => (0.0, 0),
    };
    Candidate {
        key: i,
        rewrites,
        value,
        estimated_bytes: bytes,
        since_ms: since.timestamp_millis(),
    }
}

/// Starts, per table free in this process, its oldest claimed fire while the budget lasts, most
/// valuable first; the rest wait (listed as queued jobs). A fire whose table another process
/// holds waits and asks again.
pub async fn start_due(
    ctx: &Arc<Context>,
    queue: &mut FireQueue,
    spent: &mut Spent,
    now: DateTime<Utc>,
) -> HashMap<String, Held> {
    let budget = budget_of(ctx);
    // Under a budget, fires that became due together are chosen among together: none starts
    // while one still waits for its claim (at most the claim delay, under 2 s).
    if budget != Budget::default() && queue.has_unclaimed() {
        publish_queued(ctx, queue, &HashMap::new());
        return HashMap::new();
    }
    let ready = queue.to_start(now, |t| ctx.jobs.running_on(t).is_some());
    if ready.is_empty() {
        publish_queued(ctx, queue, &HashMap::new());
        return HashMap::new();
    }
    let statuses: HashMap<String, TableStatus> = ctx
        .cached_tables()
        .into_iter()
        .map(|s| (s.table.clone(), s))
        .collect();
    let candidates: Vec<Candidate<usize>> = ready
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let since = queue.entry(f).map_or(now, |(_, s)| s);
            candidate(i, f, statuses.get(&f.table), since)
        })
        .collect();
    let spent_bytes = match budget.max_rewritten_bytes_per_hour {
        Some(_) if candidates.iter().any(|c| c.rewrites) => spent.get(ctx, now).await,
        _ => 0,
    };
    let (start, wait) = budget::admit(candidates, budget, ctx.jobs.running_count(), spent_bytes);
    for c in start {
        if ctx.shutdown.is_cancelled() {
            break;
        }
        if start_one(ctx, queue, &ready[c.key], now).await && c.rewrites {
            spent.charge(c.estimated_bytes);
        }
    }
    let held: HashMap<String, Held> = wait
        .into_iter()
        .map(|(c, h)| (ready[c.key].table.clone(), h))
        .collect();
    publish_queued(ctx, queue, &held);
    held
}

/// Starts one fire (true when it started); a table busy elsewhere makes it wait and ask again.
async fn start_one(
    ctx: &Arc<Context>,
    queue: &mut FireQueue,
    fire: &Fire,
    now: DateTime<Utc>,
) -> bool {
    let (table, kind) = (fire.table.as_str(), fire.kind.as_str());
    let fire_ms = fire.at.timestamp_millis();
    let id = queue.entry(fire).map(|(id, _)| id);
    match dispatch::start_fire(ctx, table, fire.kind, fire.origin(id)).await {
        Ok(_) => {
            queue.done(fire);
            return true;
        }
        Err(StartError::Busy { job_id, .. }) => {
            let retry = chrono::Duration::from_std(BUSY_RETRY).unwrap_or_default();
            if queue.retry_at(fire, now + retry) {
                tracing::info!(
                    table,
                    kind,
                    fire_ms,
                    busy_with = job_id,
                    "table busy; the fire waits for it"
                );
            }
        }
        Err(StartError::Store(e)) if e.is_retryable() => {
            tracing::warn!(table, kind, fire_ms, error = %e, "job could not start; retrying");
            queue.retry_at(fire, now + chrono::Duration::seconds(5));
        }
        Err(e) => {
            tracing::warn!(table, kind, fire_ms, error = %e, "job could not start; fire skipped");
            queue.done(fire);
        }
    }
    false
}

/// Lists the claimed fires still waiting as `queued` jobs (with what each waits for) and sets
/// `icemaint_due_tables` to the tables with a compaction among them.
fn publish_queued(ctx: &Context, queue: &FireQueue, held: &HashMap<String, Held>) {
    let mut due = HashSet::new();
    let queued: Vec<JobRecord> = queue
        .claimed_fires()
        .into_iter()
        .map(|(fire, id, since)| {
            if fire.kind == JobKind::Compaction {
                due.insert(fire.table.clone());
            }
            let waiting_for = match held.get(&fire.table) {
                Some(h) => format!("budget: {}", h.as_str()),
                None if ctx.jobs.running_on(&fire.table).is_some() => "table busy".to_string(),
                None => "its turn".to_string(),
            };
            let origin = fire.origin(Some(id.clone()));
            JobRecord {
                status: "queued".into(),
                started_ms: None,
                fire_ms: origin.fire_ms,
                reason: Some(origin.reason),
                detail: serde_json::json!({ "waiting_for": waiting_for }),
                ..JobRecord::running(
                    &id,
                    &fire.table,
                    fire.kind.as_str(),
                    origin.trigger.as_str(),
                    since.timestamp_millis(),
                )
            }
        })
        .collect();
    ctx.metrics.due_tables.set(due.len() as i64);
    ctx.set_queued_jobs(queued);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_bytes_count_the_last_hour_and_running_jobs() {
        let job = |id: &str, finished: Option<i64>, detail: serde_json::Value| JobRecord {
            finished_ms: finished,
            detail,
            ..JobRecord::running(id, "m.t", "compaction", "schedule", 0)
        };
        let jobs = [
            job("old", Some(100), serde_json::json!({ "bytes_read": 1_000 })),
            job(
                "recent",
                Some(5_000),
                serde_json::json!({ "bytes_read": 20 }),
            ),
            job(
                "skipped",
                Some(5_000),
                serde_json::json!({ "reason": "nothing" }),
            ),
            job(
                "running",
                None,
                serde_json::json!({ "progress": { "bytes_read": 3 } }),
            ),
        ];
        assert_eq!(rewritten_since(&jobs, 1_000), 23);
    }
}
