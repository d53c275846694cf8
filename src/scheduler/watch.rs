//! Health triggers in the scheduler: after every status refresh (and whenever a table's cached
//! current snapshot changes) each watched table's `[compaction.trigger]` conditions are
//! evaluated against its cached status ([`crate::trigger::decide`], pure) with the time of its
//! last compaction; a due table gets a compaction [`Fire`] carrying the condition, claimed in the
//! store like a schedule's so that one replica runs it. Every table's verdict (due or not, and
//! why) is kept for the status page.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Fire, FireQueue, claim_delay};
use crate::daemon::{Context, Watch};
use crate::inspect::TableStatus;
use crate::jobs::JobKind;
use crate::policy::Policy;
use crate::trigger::{self, TriggerSettings, Verdict};

/// The start of the cooldown window `now` falls in: a trigger's fire time, the same on every
/// replica, so each window's fire is claimed once. Pure.
pub fn window(now: DateTime<Utc>, min_interval: Duration) -> DateTime<Utc> {
    let ms = i64::try_from(min_interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let t = now.timestamp_millis();
    DateTime::from_timestamp_millis(t - t.rem_euclid(ms)).unwrap_or(now)
}

/// The scheduler's view of the triggers: the snapshot each table was last evaluated at, and
/// every table's verdict.
#[derive(Debug, Default)]
pub struct Watcher {
    seen: HashMap<String, Option<i64>>,
    pub verdicts: BTreeMap<String, Watch>,
}

impl Watcher {
    /// Evaluates the watched tables (`all`: every one, after a refresh; else only those whose
    /// cached current snapshot changed) and queues a fire for each due one.
    pub async fn evaluate(
        &mut self,
        ctx: &Arc<Context>,
        watched: &[(String, Policy)],
        queue: &mut FireQueue,
        now: DateTime<Utc>,
        all: bool,
    ) {
        let statuses: HashMap<String, TableStatus> = ctx
            .cached_tables()
            .into_iter()
            .map(|s| (s.table.clone(), s))
            .collect();
        for (table, policy) in watched {
            let Some(status) = statuses.get(table) else {
                continue;
            };
            let snapshot = status.current_snapshot_id;
            if !all && self.seen.get(table) == Some(&snapshot) {
                continue;
            }
            self.seen.insert(table.clone(), snapshot);
            let w = judge(ctx, table, policy, status, queue, now).await;
            self.verdicts.insert(table.clone(), w);
        }
        if all {
            let live: std::collections::HashSet<&str> =
                watched.iter().map(|(t, _)| t.as_str()).collect();
            self.seen.retain(|t, _| live.contains(t.as_str()));
            self.verdicts.retain(|t, _| live.contains(t.as_str()));
        }
    }
}

/// One table's verdict; queues its fire when due.
async fn judge(
    ctx: &Arc<Context>,
    table: &str,
    policy: &Policy,
    status: &TableStatus,
    queue: &mut FireQueue,
    now: DateTime<Utc>,
) -> Watch {
    let verdict = |state, why: String, last| Watch {
        state,
        why,
        last_compacted_ms: last,
    };
    let last_snapshot = status.last_compacted_ms;
    let Some(c) = policy.compaction.as_ref().filter(|c| c.enabled) else {
        return verdict(
            "disabled",
            "compaction is not enabled".into(),
            last_snapshot,
        );
    };
    let Some(settings) = &c.trigger else {
        let why = match &c.schedule {
            Some(s) => format!("no triggers: compacts on schedule '{}'", s.expr),
            None => "no schedule and no triggers".to_string(),
        };
        return verdict("schedule-only", why, last_snapshot);
    };
    if let Some(e) = &status.error {
        return verdict("unavailable", e.clone(), last_snapshot);
    }
    let health = status.health();
    let met = trigger::met(settings, &health);
    // The store is asked only when a condition holds: the cooldown counts from the last
    // compaction job of any replica and trigger, even one that found nothing to do.
    let last_job = if met.is_empty() {
        None
    } else {
        last_compaction_job(ctx, table).await
    };
    let last = last_snapshot.max(last_job);
    match trigger::decide(settings, &health, last, now.timestamp_millis()) {
        Verdict::Healthy => verdict(
            "healthy",
            format!("no trigger met ({})", settings.describe()),
            last,
        ),
        Verdict::CoolingDown { met, until_ms } => verdict(
            "cooling-down",
            format!(
                "{}: {}; min-interval until {}",
                met[0].condition.reason(),
                met[0],
                time(until_ms)
            ),
            last,
        ),
        Verdict::Due { met } => {
            let why = format!("{}: {}", met[0].condition.reason(), met[0]);
            queue_fire(ctx, table, settings, met[0].condition, queue, now);
            verdict("due", why, last)
        }
    }
}

fn time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Queues a due table's trigger fire, unless a compaction of it already waits.
fn queue_fire(
    ctx: &Arc<Context>,
    table: &str,
    settings: &TriggerSettings,
    condition: trigger::Condition,
    queue: &mut FireQueue,
    now: DateTime<Utc>,
) {
    if queue.has(table, JobKind::Compaction) {
        return;
    }
    let fire = Fire {
        table: table.to_string(),
        kind: JobKind::Compaction,
        at: window(now, settings.min_interval),
        condition: Some(condition),
    };
    tracing::info!(
        table,
        reason = condition.reason(),
        window_ms = fire.at.timestamp_millis(),
        "table due: a trigger holds"
    );
    let claim_at = now + claim_delay(ctx.jobs.owner(), table);
    queue.push_at(fire, now, claim_at);
}

/// When the last compaction job of `table` started (any replica, any trigger), from the store.
async fn last_compaction_job(ctx: &Context, table: &str) -> Option<i64> {
    match ctx.store.jobs(Some(table), Some("compaction"), 1).await {
        Ok(jobs) => jobs.first().map(|j| j.created_ms),
        Err(e) => {
            tracing::warn!(table, error = %e, "last compaction not read; the cooldown counts from the table's snapshots");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_window_is_the_same_for_every_instant_in_it() {
        let ten = Duration::from_secs(600);
        let t = |m, s| Utc.with_ymd_and_hms(2026, 1, 1, 12, m, s).unwrap();
        assert_eq!(window(t(0, 0), ten), t(0, 0));
        assert_eq!(window(t(9, 59), ten), t(0, 0));
        assert_eq!(window(t(10, 0), ten), t(10, 0));
        assert_eq!(window(t(17, 3), Duration::ZERO), t(17, 3), "at least 1 ms");
    }
}
