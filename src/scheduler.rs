//! The scheduler: refreshes table status and readiness in the background, reconciles every
//! watched table at start-up, and fires each policy's cron schedules per table.
//!
//! Fire times are computed per (table, kind) from the policy's schedule; a table that is busy
//! with another job is skipped for that fire (the next one comes), and nothing new starts once
//! shutdown began.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::daemon::Context;
use crate::dispatch::{self, JobRequest};
use crate::jobs::{JobKind, StartError, Trigger};
use crate::policy::{Policy, Schedule};

/// The schedules of a policy that are enabled, by job kind.
pub fn schedules(policy: &Policy, implemented: &[JobKind]) -> Vec<(JobKind, Schedule)> {
    let mut out = vec![(JobKind::Reconcile, policy.reconcile_schedule.clone())];
    if let Some(c) = policy.compaction.as_ref().filter(|c| c.enabled) {
        out.push((JobKind::Compaction, c.schedule.clone()));
    }
    if let Some(e) = policy.expire.as_ref().filter(|e| e.enabled) {
        out.push((JobKind::Expire, e.schedule.clone()));
    }
    if let Some(o) = policy.orphans.as_ref().filter(|o| o.enabled) {
        out.push((JobKind::RemoveOrphans, o.schedule.clone()));
    }
    if let Some(m) = policy.manifests.as_ref().filter(|m| m.enabled) {
        out.push((JobKind::RewriteManifests, m.schedule.clone()));
    }
    out.retain(|(k, _)| implemented.contains(k));
    out
}

/// Due jobs at `now`, advancing `next` (pure: the clock is passed in).
pub fn due(
    next: &mut HashMap<(String, JobKind), DateTime<Utc>>,
    watched: &[(String, Policy)],
    implemented: &[JobKind],
    now: DateTime<Utc>,
) -> Vec<(String, JobKind)> {
    let mut fire = Vec::new();
    let mut live = std::collections::HashSet::new();
    for (table, policy) in watched {
        for (kind, schedule) in schedules(policy, implemented) {
            let key = (table.clone(), kind);
            live.insert(key.clone());
            let at = next
                .entry(key.clone())
                .or_insert_with(|| schedule.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC));
            if *at <= now {
                fire.push(key.clone());
                *at = schedule.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC);
            }
        }
    }
    next.retain(|k, _| live.contains(k));
    fire
}

/// Job kinds this build can run.
pub const IMPLEMENTED: &[JobKind] = &[
    JobKind::Reconcile,
    JobKind::Compaction,
    JobKind::Expire,
    JobKind::RemoveOrphans,
    JobKind::RewriteManifests,
];

/// Runs until the context's shutdown token is cancelled.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let refresh_every = Duration::from_secs(ctx.config.server.refresh_interval_seconds.max(1));
    ctx.refresh().await;
    // Start-up reconciliation: every watched table once.
    if let Ok(watched) = ctx.watched_tables().await {
        for (table, _) in &watched {
            if ctx.shutdown.is_cancelled() {
                break;
            }
            start(&ctx, table, JobKind::Reconcile, Trigger::Startup).await;
        }
    }
    let mut next: HashMap<(String, JobKind), DateTime<Utc>> = HashMap::new();
    let mut watched = ctx.watched_tables().await.unwrap_or_default();
    let mut last_refresh = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if last_refresh.elapsed() >= refresh_every {
            ctx.refresh().await;
            if let Ok(w) = ctx.watched_tables().await {
                watched = w;
            }
            last_refresh = tokio::time::Instant::now();
        }
        for (table, kind) in due(&mut next, &watched, IMPLEMENTED, Utc::now()) {
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            start(&ctx, &table, kind, Trigger::Schedule).await;
        }
    }
}

async fn start(ctx: &Arc<Context>, table: &str, kind: JobKind, trigger: Trigger) {
    match dispatch::start(ctx, table, JobRequest::as_policy_says(kind), trigger).await {
        Ok(_) => {}
        Err(StartError::Busy { job_id, .. }) => {
            tracing::info!(
                table,
                kind = kind.as_str(),
                busy_with = job_id,
                "skipped: table busy"
            )
        }
        Err(e) => tracing::warn!(table, kind = kind.as_str(), error = %e, "job could not start"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::Path;

    fn policy(text: &str) -> Policy {
        crate::policy::parse_policy(Path::new("p.toml"), text)
            .unwrap()
            .0
    }

    #[test]
    fn fires_on_schedule_with_injected_clock() {
        let p =
            policy("version = 1\ntables = [\"m.*\"]\n[reconcile]\nschedule = \"*/10 * * * *\"\n");
        let watched = vec![("m.a".to_string(), p.clone()), ("m.b".to_string(), p)];
        let mut next = HashMap::new();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 3, 0).unwrap();
        assert!(due(&mut next, &watched, IMPLEMENTED, t0).is_empty());
        let t1 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 9, 59).unwrap();
        assert!(due(&mut next, &watched, IMPLEMENTED, t1).is_empty());
        let t2 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 10, 0).unwrap();
        let mut fired = due(&mut next, &watched, IMPLEMENTED, t2);
        fired.sort();
        assert_eq!(
            fired,
            vec![
                ("m.a".to_string(), JobKind::Reconcile),
                ("m.b".to_string(), JobKind::Reconcile)
            ]
        );
        // Not again until the next slot.
        assert!(due(&mut next, &watched, IMPLEMENTED, t2).is_empty());
        // A table that stops being watched is forgotten.
        due(&mut next, &watched[..1], IMPLEMENTED, t2);
        assert_eq!(next.len(), 1);
    }

    #[test]
    fn disabled_and_unimplemented_kinds_do_not_fire() {
        let p = policy(
            "version = 1\ntables = [\"m.*\"]\n[compaction]\nenabled = false\n[expire]\nolder-than = \"1d\"\n",
        );
        let kinds: Vec<JobKind> = schedules(
            &p,
            &[JobKind::Reconcile, JobKind::Compaction, JobKind::Expire],
        )
        .into_iter()
        .map(|(k, _)| k)
        .collect();
        assert_eq!(kinds, vec![JobKind::Reconcile, JobKind::Expire]);
        assert_eq!(schedules(&p, &[JobKind::Reconcile]).len(), 1);
    }
}
