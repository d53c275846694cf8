//! The scheduler: refreshes table status and readiness in the background, reconciles every
//! watched table at start-up, and fires each policy's cron schedules per table.
//!
//! Fire times are computed per (table, kind) from the policy's schedule ([`due`], pure), each
//! shifted by a fixed per-(table, kind) [`jitter`] so that all tables do not fire in the same
//! second. Every replica computes the same fires; each waits a per-(replica, table)
//! [`claim_delay`] and then claims the fire in the state store, keyed by its un-jittered time:
//! only the replica whose claim was first runs it, so a fire runs at most once across replicas
//! and tables spread over them. A claimed fire whose table is busy waits in this replica's
//! [`FireQueue`] and starts when the table frees, oldest fire first, so kinds take turns behind
//! a long job; a fire of a kind that fires again while it waits runs once. Nothing new starts
//! once shutdown began.
//!
//! Health triggers (`scheduler/watch.rs`) add compaction fires for tables whose
//! `[compaction.trigger]` conditions hold, claimed like a schedule's per cooldown window; every
//! ready fire starts under the daemon's budget (`scheduler/start.rs`), most valuable first, and
//! the held ones are listed as queued jobs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::daemon::Context;
use crate::dispatch::{self, JobRequest};
use crate::jobs::{JobKind, Origin, StartError, Trigger};
use crate::policy::{Policy, Schedule};
use crate::trigger::Condition;

mod start;
mod watch;

/// The largest jitter of a schedule (a quarter of its period when that is shorter).
const MAX_JITTER: Duration = Duration::from_secs(60);

/// The longest a replica waits before claiming a fire.
const MAX_CLAIM_DELAY: Duration = Duration::from_secs(2);

/// How often the scheduler looks for due fires, claims and free tables: finer than the claim
/// delays, so they order the replicas' claims.
const TICK: Duration = Duration::from_millis(250);

/// How long a fire waits before asking again for a table another process holds.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// How long fire claims are kept in the store: replicas only race for a fire within seconds of
/// it, so a day is plenty even for a replica whose clock is far off.
pub const FIRE_CLAIM_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// One scheduled run: a table, a job kind and the fire time it belongs to, before jitter. Every
/// replica computes the same one, so it names the fire in the store's claims. A health trigger's
/// fire carries its condition; its time is the start of its cooldown window
/// (`watch::window`), the same on every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub table: String,
    pub kind: JobKind,
    pub at: DateTime<Utc>,
    /// `None`: the schedule's fire.
    pub condition: Option<Condition>,
}

impl Fire {
    /// The `kind` of its claim in the store: a trigger's fires are claimed apart from the
    /// schedule's, so one never takes the other's slot.
    pub fn claim_kind(&self) -> &'static str {
        match self.condition {
            Some(_) => "compaction:trigger",
            None => self.kind.as_str(),
        }
    }

    /// Its id while queued and its job's id once started: derived from what names the fire
    /// (table, claim kind, time), so it reads no clock; a fire is claimed, so run, once.
    pub fn id(&self) -> String {
        let at = self.at.timestamp_millis().to_string();
        let (t, k) = (self.table.as_str(), self.claim_kind());
        let hi = stable_hash(&[t, k, &at]).to_be_bytes();
        let lo = stable_hash(&[&at, k, t]).to_be_bytes();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi);
        bytes[8..].copy_from_slice(&lo);
        uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// Why its job starts: the trigger, the reason and the fire time recorded with the job.
    pub fn origin(&self, id: Option<String>) -> Origin {
        let (trigger, reason) = match self.condition {
            Some(c) => (Trigger::Condition, c.reason()),
            None => (Trigger::Schedule, Trigger::Schedule.as_str()),
        };
        Origin {
            trigger,
            reason: reason.to_string(),
            fire_ms: Some(self.at.timestamp_millis()),
            id,
        }
    }
}

/// FNV-1a over `parts`: the same in every process and build (std's hasher promises neither), so
/// replicas agree on jitters.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn spread(hash: u64, bound: Duration) -> Duration {
    let bound_ms = bound.as_millis() as u64;
    if bound_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(hash % bound_ms)
}

/// The offset added to every fire time of `kind` on `table` for a schedule firing every
/// `period`: fixed per (table, kind), under min(60 s, a quarter of the period), so tables with
/// the same schedule do not all fire in the same second and no fire runs into the next one.
pub fn jitter(table: &str, kind: JobKind, period: Duration) -> Duration {
    spread(
        stable_hash(&[table, kind.as_str()]),
        MAX_JITTER.min(period / 4),
    )
}

/// How long `replica` waits before claiming a fire on `table` (under 2 s): different per
/// (replica, table), so replicas do not race every claim in the same millisecond with the same
/// one always winning, and each table's fires tend to go to one replica, tables spread over all.
pub fn claim_delay(replica: &str, table: &str) -> Duration {
    spread(stable_hash(&[replica, table]), MAX_CLAIM_DELAY)
}

/// The schedules of a policy that are enabled, by job kind.
pub fn schedules(policy: &Policy, implemented: &[JobKind]) -> Vec<(JobKind, Schedule)> {
    let mut out = vec![(JobKind::Reconcile, policy.reconcile_schedule.clone())];
    // A compaction with triggers and no schedule starts on conditions only.
    if let Some(s) = policy
        .compaction
        .as_ref()
        .filter(|c| c.enabled)
        .and_then(|c| c.schedule.as_ref())
    {
        out.push((JobKind::Compaction, s.clone()));
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

fn after(schedule: &Schedule, t: DateTime<Utc>) -> DateTime<Utc> {
    schedule.next_after(t).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Fires due at `now` (their jitter included), advancing `next`, the next un-jittered fire time
/// per (table, kind). Pure: the clock is passed in.
pub fn due(
    next: &mut HashMap<(String, JobKind), DateTime<Utc>>,
    watched: &[(String, Policy)],
    implemented: &[JobKind],
    now: DateTime<Utc>,
) -> Vec<Fire> {
    let mut fire = Vec::new();
    let mut live = HashSet::new();
    for (table, policy) in watched {
        for (kind, schedule) in schedules(policy, implemented) {
            let key = (table.clone(), kind);
            live.insert(key.clone());
            let at = *next
                .entry(key.clone())
                .or_insert_with(|| after(&schedule, now));
            if at == DateTime::<Utc>::MAX_UTC {
                continue;
            }
            let period = (after(&schedule, at) - at).to_std().unwrap_or_default();
            if at + jitter(table, kind, period) <= now {
                fire.push(Fire {
                    table: table.clone(),
                    kind,
                    at,
                    condition: None,
                });
                next.insert(key, after(&schedule, now));
            }
        }
    }
    next.retain(|k, _| live.contains(k));
    fire
}

/// A fire waiting on this replica.
#[derive(Debug, Clone)]
struct Waiting {
    fire: Fire,
    /// The id it is listed under while queued, and its job's id once it starts.
    id: String,
    /// When it was pushed.
    since: DateTime<Utc>,
    /// Claimed in the store by this replica (else: waiting for its claim).
    claimed: bool,
    /// Not claimed or started before this time (the claim delay, then the busy retry).
    not_before: DateTime<Utc>,
    /// Refused once because another process held the table.
    waited: bool,
}

/// What claiming a fire came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Another replica claimed it first: dropped.
    Lost,
    /// Ours: waits for its table.
    Queued,
    /// Ours, but a claimed fire of the same table and kind still waits: that one runs for both.
    Coalesced { into: DateTime<Utc> },
}

/// The fires this replica waits on, first for their claim, then for their table. Pure: the
/// clock is passed in.
#[derive(Debug, Default)]
pub struct FireQueue {
    waiting: Vec<Waiting>,
}

impl FireQueue {
    /// Adds `fire`, to be claimed at `claim_at`; false (and dropped) when an unclaimed fire of
    /// the same table and kind already waits for its claim.
    pub fn push(&mut self, fire: Fire, claim_at: DateTime<Utc>) -> bool {
        self.push_at(fire, claim_at, claim_at)
    }

    /// [`FireQueue::push`], recording `now` as when it became due.
    pub fn push_at(&mut self, fire: Fire, now: DateTime<Utc>, claim_at: DateTime<Utc>) -> bool {
        let pending = self
            .waiting
            .iter()
            .any(|w| !w.claimed && w.fire.table == fire.table && w.fire.kind == fire.kind);
        if pending {
            return false;
        }
        self.waiting.push(Waiting {
            id: fire.id(),
            fire,
            since: now,
            claimed: false,
            not_before: claim_at,
            waited: false,
        });
        true
    }

    /// Fires whose claim is due at `now`.
    pub fn to_claim(&self, now: DateTime<Utc>) -> Vec<Fire> {
        self.waiting
            .iter()
            .filter(|w| !w.claimed && w.not_before <= now)
            .map(|w| w.fire.clone())
            .collect()
    }

    /// Records the claim of `fire`: `won` when this replica's claim created it.
    pub fn claimed(&mut self, fire: &Fire, won: bool) -> Claim {
        let Some(i) = self.waiting.iter().position(|w| w.fire == *fire) else {
            return Claim::Lost;
        };
        if !won {
            self.waiting.remove(i);
            return Claim::Lost;
        }
        let earlier = self
            .waiting
            .iter()
            .find(|w| w.claimed && w.fire.table == fire.table && w.fire.kind == fire.kind)
            .map(|w| w.fire.at);
        match earlier {
            Some(into) => {
                self.waiting.remove(i);
                Claim::Coalesced { into }
            }
            None => {
                self.waiting[i].claimed = true;
                Claim::Queued
            }
        }
    }

    /// For each table not `busy` here, its oldest claimed fire (ties: in kind order) when it may
    /// start at `now`: one per table, since a table runs one job at a time.
    pub fn to_start(&self, now: DateTime<Utc>, busy: impl Fn(&str) -> bool) -> Vec<Fire> {
        let mut oldest: HashMap<&str, &Waiting> = HashMap::new();
        for w in self.waiting.iter().filter(|w| w.claimed) {
            let slot = oldest.entry(w.fire.table.as_str()).or_insert(w);
            if (w.fire.at, w.fire.kind) < (slot.fire.at, slot.fire.kind) {
                *slot = w;
            }
        }
        let mut out: Vec<Fire> = oldest
            .into_values()
            .filter(|w| w.not_before <= now && !busy(&w.fire.table))
            .map(|w| w.fire.clone())
            .collect();
        out.sort_by(|a, b| (a.at, &a.table, a.kind).cmp(&(b.at, &b.table, b.kind)));
        out
    }

    /// `fire` started (or will never start): forget it.
    pub fn done(&mut self, fire: &Fire) {
        self.waiting.retain(|w| w.fire != *fire);
    }

    /// `fire`'s table is busy elsewhere: ask again at `at`. True the first time (worth a log).
    pub fn retry_at(&mut self, fire: &Fire, at: DateTime<Utc>) -> bool {
        match self.waiting.iter_mut().find(|w| w.fire == *fire) {
            Some(w) => {
                w.not_before = at;
                !std::mem::replace(&mut w.waited, true)
            }
            None => false,
        }
    }

    /// Keeps only fires for which `keep` holds (still watched and scheduled or triggered).
    pub fn retain(&mut self, keep: impl Fn(&Fire) -> bool) {
        self.waiting.retain(|w| keep(&w.fire));
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether some fire still waits for its claim.
    pub fn has_unclaimed(&self) -> bool {
        self.waiting.iter().any(|w| !w.claimed)
    }

    /// Whether a fire of `kind` on `table` waits (for its claim or its table).
    pub fn has(&self, table: &str, kind: JobKind) -> bool {
        self.waiting
            .iter()
            .any(|w| w.fire.table == table && w.fire.kind == kind)
    }

    /// The id and due time of a waiting `fire`.
    pub fn entry(&self, fire: &Fire) -> Option<(String, DateTime<Utc>)> {
        self.waiting
            .iter()
            .find(|w| w.fire == *fire)
            .map(|w| (w.id.clone(), w.since))
    }

    /// The claimed fires, oldest first, with their ids and due times.
    pub fn claimed_fires(&self) -> Vec<(Fire, String, DateTime<Utc>)> {
        let mut out: Vec<_> = self
            .waiting
            .iter()
            .filter(|w| w.claimed)
            .map(|w| (w.fire.clone(), w.id.clone(), w.since))
            .collect();
        out.sort_by(|a, b| (a.2, &a.1).cmp(&(b.2, &b.1)));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
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
    let mut start_up = StartUp::default();
    start_up.retry(&ctx).await;
    let mut next: HashMap<(String, JobKind), DateTime<Utc>> = HashMap::new();
    let mut queue = FireQueue::default();
    let mut watcher = watch::Watcher::default();
    let mut spent = start::Spent::default();
    let mut watched = ctx.watched_tables().await.unwrap_or_default();
    watcher
        .evaluate(&ctx, &watched, &mut queue, Utc::now(), true)
        .await;
    let mut last_refresh = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let refreshed = last_refresh.elapsed() >= refresh_every;
        if refreshed {
            ctx.refresh().await;
            if let Ok(w) = ctx.watched_tables().await {
                watched = w;
            }
            start_up.retry(&ctx).await;
            last_refresh = tokio::time::Instant::now();
        }
        let now = Utc::now();
        for fire in due(&mut next, &watched, IMPLEMENTED, now) {
            let claim_at = now + claim_delay(ctx.jobs.owner(), &fire.table);
            if !queue.push_at(fire.clone(), now, claim_at) {
                tracing::debug!(table = fire.table, kind = fire.kind.as_str(), fire_at = %fire.at, "fire dropped: the previous one still waits for its claim");
            }
        }
        // After a refresh every table, else those whose current snapshot changed (a writer's
        // commit seen by a job's refresh), is checked against its triggers.
        watcher
            .evaluate(&ctx, &watched, &mut queue, now, refreshed)
            .await;
        // A table no longer watched, or a kind no longer scheduled or triggered, drops its fires.
        let triggered: HashSet<&str> = watched
            .iter()
            .filter(|(_, p)| {
                p.compaction
                    .as_ref()
                    .is_some_and(|c| c.enabled && c.trigger.is_some())
            })
            .map(|(t, _)| t.as_str())
            .collect();
        queue.retain(|f| match f.condition {
            Some(_) => triggered.contains(f.table.as_str()),
            None => next.contains_key(&(f.table.clone(), f.kind)),
        });
        claim_due(&ctx, &mut queue, Utc::now()).await;
        let held = start::start_due(&ctx, &mut queue, &mut spent, Utc::now()).await;
        publish_watch(&ctx, &watcher, &held);
    }
}

/// Publishes every table's verdict, a due table held back by the budget as `queued`.
fn publish_watch(
    ctx: &Context,
    watcher: &watch::Watcher,
    held: &HashMap<String, crate::budget::Held>,
) {
    let mut verdicts = watcher.verdicts.clone();
    for (table, h) in held {
        if let Some(w) = verdicts.get_mut(table).filter(|w| w.state == "due") {
            w.state = "queued";
            w.why = format!("{}; waits for the budget ({})", w.why, h.as_str());
        }
    }
    ctx.set_watch(verdicts);
}

/// Claims the fires whose claim delay is over; a fire another replica claimed is skipped.
async fn claim_due(ctx: &Arc<Context>, queue: &mut FireQueue, now: DateTime<Utc>) {
    for fire in queue.to_claim(now) {
        if ctx.shutdown.is_cancelled() {
            return;
        }
        let (table, kind) = (fire.table.as_str(), fire.claim_kind());
        let fire_ms = fire.at.timestamp_millis();
        let won = match ctx
            .store
            .claim_fire(table, kind, fire_ms, ctx.jobs.owner())
            .await
        {
            Ok(won) => won,
            Err(e) => {
                // Running it unclaimed could run it twice; the next fire comes.
                tracing::warn!(table, kind, fire_ms, error = %e, "fire not claimed: the state store failed; skipped");
                false
            }
        };
        match queue.claimed(&fire, won) {
            Claim::Lost => tracing::debug!(
                table,
                kind,
                fire_ms,
                "fire claimed by another replica; skipped"
            ),
            Claim::Queued => tracing::debug!(table, kind, fire_ms, "fire claimed"),
            Claim::Coalesced { into } => tracing::info!(
                table,
                kind,
                fire_ms,
                waiting_fire_ms = into.timestamp_millis(),
                "fire coalesced into the one still waiting for the table"
            ),
        }
    }
}

/// The start-up reconciliation of `table` (every replica's own; not a fire, so not claimed): a
/// busy table is skipped, its lease holder or the schedule reconciles it.
/// The start-up reconciliation: every table watched when the catalog first answers, once. A
/// catalog that is down at boot, or a table whose job could not start (the store failed), is
/// tried again at each refresh until it is done, so a daemon that came up first still converges.
#[derive(Debug, Default)]
struct StartUp {
    /// `None` until the catalog has listed the watched tables.
    pending: Option<Vec<String>>,
}

impl StartUp {
    async fn retry(&mut self, ctx: &Arc<Context>) {
        if self.pending.is_none() {
            match ctx.watched_tables().await {
                Ok(w) => self.pending = Some(w.into_iter().map(|(t, _)| t).collect()),
                Err(e) => {
                    tracing::warn!(error = %e, "start-up reconciliation waits for the catalog");
                    return;
                }
            }
        }
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        let mut still = Vec::new();
        for table in pending.drain(..) {
            if ctx.shutdown.is_cancelled() || !start_up(ctx, &table).await {
                still.push(table);
            }
        }
        *pending = still;
    }
}

/// Starts one table's start-up reconciliation; true when that is settled (started, or the table
/// is busy with another job, which reconciles it soon enough).
async fn start_up(ctx: &Arc<Context>, table: &str) -> bool {
    let kind = JobKind::Reconcile;
    match dispatch::start(ctx, table, JobRequest::Reconcile, Trigger::Startup).await {
        Ok(_) => true,
        Err(StartError::Busy { job_id, .. }) => {
            tracing::info!(
                table,
                kind = kind.as_str(),
                busy_with = job_id,
                "skipped: table busy"
            );
            true
        }
        Err(e) => {
            tracing::warn!(table, kind = kind.as_str(), error = %e, "job could not start; retried at the next refresh");
            false
        }
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

    fn at(h: u32, m: u32, sec: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, m, sec).unwrap()
    }

    fn fire(table: &str, kind: JobKind, at: DateTime<Utc>) -> Fire {
        Fire {
            table: table.into(),
            kind,
            at,
            condition: None,
        }
    }

    #[test]
    fn fires_on_schedule_with_injected_clock_and_jitter() {
        let p =
            policy("version = 1\ntables = [\"m.*\"]\n[reconcile]\nschedule = \"*/10 * * * *\"\n");
        let watched = vec![("m.a".to_string(), p.clone()), ("m.b".to_string(), p)];
        let ten_minutes = Duration::from_secs(600);
        let ja =
            chrono::Duration::from_std(jitter("m.a", JobKind::Reconcile, ten_minutes)).unwrap();
        let jb =
            chrono::Duration::from_std(jitter("m.b", JobKind::Reconcile, ten_minutes)).unwrap();
        assert_ne!(ja, jb, "tables with one schedule fire at different seconds");
        let mut next = HashMap::new();
        assert!(due(&mut next, &watched, IMPLEMENTED, at(12, 3, 0)).is_empty());
        assert!(due(&mut next, &watched, IMPLEMENTED, at(12, 9, 59)).is_empty());
        let slot = at(12, 10, 0);
        let (first, second) = if ja < jb {
            (("m.a", ja), ("m.b", jb))
        } else {
            (("m.b", jb), ("m.a", ja))
        };
        if first.1 > chrono::Duration::zero() {
            assert!(
                due(&mut next, &watched, IMPLEMENTED, slot).is_empty(),
                "not before its jitter"
            );
        }
        // Each fires at its slot plus its jitter, named by the un-jittered slot.
        let fired = due(&mut next, &watched, IMPLEMENTED, slot + first.1);
        assert_eq!(fired, vec![fire(first.0, JobKind::Reconcile, slot)]);
        let fired = due(&mut next, &watched, IMPLEMENTED, slot + second.1);
        assert_eq!(fired, vec![fire(second.0, JobKind::Reconcile, slot)]);
        // Not again until the next slot.
        assert!(due(&mut next, &watched, IMPLEMENTED, slot + second.1).is_empty());
        let fired = due(&mut next, &watched, IMPLEMENTED, at(12, 21, 0));
        assert_eq!(fired.len(), 2);
        assert!(fired.iter().all(|f| f.at == at(12, 20, 0)), "{fired:?}");
        // A table that stops being watched is forgotten.
        due(&mut next, &watched[..1], IMPLEMENTED, at(12, 21, 0));
        assert_eq!(next.len(), 1);
    }

    #[test]
    fn jitter_is_fixed_per_table_and_kind_and_bounded_by_the_period() {
        let hour = Duration::from_secs(3600);
        let ten_s = Duration::from_secs(10);
        let tables: Vec<String> = (0..50).map(|i| format!("m.t{i}")).collect();
        let mut seconds = HashSet::new();
        for t in &tables {
            let j = jitter(t, JobKind::Compaction, hour);
            assert_eq!(j, jitter(t, JobKind::Compaction, hour), "deterministic");
            assert!(j < MAX_JITTER, "{t}: {j:?}");
            assert!(jitter(t, JobKind::Compaction, ten_s) < Duration::from_millis(2_500));
            seconds.insert(j.as_secs());
        }
        assert!(seconds.len() > 20, "spread over the minute: {seconds:?}");
        assert_ne!(
            jitter("m.t0", JobKind::Compaction, hour),
            jitter("m.t0", JobKind::Expire, hour)
        );
        assert_eq!(
            jitter("m.t0", JobKind::Compaction, Duration::ZERO),
            Duration::ZERO
        );
        // A 10 s schedule still fires every slot: the jitter is under a quarter of the period.
        let p =
            policy("version = 1\ntables = [\"m.*\"]\n[reconcile]\nschedule = \"*/10 * * * * *\"\n");
        let watched = vec![("m.a".to_string(), p)];
        let mut next = HashMap::new();
        let mut slots = Vec::new();
        let start = at(12, 0, 0);
        for ms in (0..60_000).step_by(250) {
            let now = start + chrono::Duration::milliseconds(ms);
            slots.extend(
                due(&mut next, &watched, IMPLEMENTED, now)
                    .into_iter()
                    .map(|f| f.at),
            );
        }
        let expected: Vec<DateTime<Utc>> = (1..6)
            .map(|i| start + chrono::Duration::seconds(10 * i))
            .collect();
        assert_eq!(slots, expected);
    }

    #[test]
    fn claim_delays_differ_per_replica_and_table() {
        let tables: Vec<String> = (0..30).map(|i| format!("m.t{i}")).collect();
        let mut winners = HashSet::new();
        for t in &tables {
            let delays: Vec<Duration> = ["replica-a", "replica-b", "replica-c"]
                .iter()
                .map(|r| claim_delay(r, t))
                .collect();
            assert!(delays.iter().all(|d| *d < MAX_CLAIM_DELAY), "{delays:?}");
            assert_eq!(claim_delay("replica-a", t), delays[0], "deterministic");
            let first = (0..3).min_by_key(|i| delays[*i]).unwrap();
            winners.insert(first);
        }
        assert_eq!(winners.len(), 3, "each replica is first for some tables");
    }

    #[test]
    fn queued_fires_are_claimed_after_their_delay_and_start_oldest_first() {
        let mut q = FireQueue::default();
        let t0 = at(12, 0, 0);
        let compaction = fire("m.a", JobKind::Compaction, t0);
        let reconcile = fire("m.a", JobKind::Reconcile, at(12, 0, 5));
        let other = fire("m.b", JobKind::Expire, at(12, 0, 7));
        assert!(q.push(compaction.clone(), t0 + chrono::Duration::seconds(1)));
        assert!(q.to_claim(t0).is_empty(), "not before the claim delay");
        assert_eq!(q.to_claim(at(12, 0, 1)), vec![compaction.clone()]);
        assert_eq!(q.claimed(&compaction, true), Claim::Queued);
        assert!(q.push(reconcile.clone(), at(12, 0, 5)));
        assert!(q.push(other.clone(), at(12, 0, 7)));
        assert_eq!(q.claimed(&reconcile, true), Claim::Queued);
        assert_eq!(q.claimed(&other, false), Claim::Lost, "another replica's");
        assert_eq!(q.len(), 2);

        // m.a is busy (a long compaction elsewhere): the oldest fire waits, nothing jumps it.
        let now = at(12, 0, 8);
        assert_eq!(q.to_start(now, |_| false), vec![compaction.clone()]);
        assert!(q.retry_at(&compaction, now + chrono::Duration::seconds(1)));
        assert!(
            !q.retry_at(&compaction, now + chrono::Duration::seconds(1)),
            "logged once"
        );
        assert!(q.to_start(now, |_| false).is_empty());
        // Busy in this process: nothing starts on it either.
        assert!(q.to_start(at(12, 0, 9), |t| t == "m.a").is_empty());
        // Free: the compaction, then the reconcile — kinds take turns.
        assert_eq!(
            q.to_start(at(12, 0, 9), |_| false),
            vec![compaction.clone()]
        );
        q.done(&compaction);
        assert_eq!(q.to_start(at(12, 0, 9), |_| false), vec![reconcile.clone()]);
        q.done(&reconcile);
        assert!(q.is_empty());
    }

    #[test]
    fn a_trigger_fire_is_claimed_apart_and_keeps_its_queued_id() {
        let scheduled = fire("m.a", JobKind::Compaction, at(12, 0, 0));
        let triggered = Fire {
            condition: Some(Condition::SmallFiles),
            ..scheduled.clone()
        };
        assert_eq!(scheduled.claim_kind(), "compaction");
        assert_eq!(triggered.claim_kind(), "compaction:trigger");
        let o = triggered.origin(Some("q".into()));
        assert_eq!(o.trigger, Trigger::Condition);
        assert_eq!(o.reason, "trigger:small-files");
        assert_eq!(o.fire_ms, Some(at(12, 0, 0).timestamp_millis()));
        assert_eq!(o.id.as_deref(), Some("q"));
        assert_eq!(scheduled.origin(None).reason, "schedule");
        // Ids: valid UUIDs, fixed per fire, different between fires.
        assert!(uuid::Uuid::parse_str(&triggered.id()).is_ok());
        assert_eq!(triggered.id(), triggered.clone().id());
        assert_ne!(triggered.id(), scheduled.id());
        let later = fire("m.a", JobKind::Compaction, at(12, 0, 1));
        assert_ne!(later.id(), scheduled.id());

        let mut q = FireQueue::default();
        assert!(q.push_at(triggered.clone(), at(12, 0, 0), at(12, 0, 1)));
        assert!(q.has("m.a", JobKind::Compaction));
        assert!(q.has_unclaimed());
        let (id, since) = q.entry(&triggered).unwrap();
        assert_eq!(since, at(12, 0, 0));
        assert!(q.claimed_fires().is_empty(), "not claimed yet");
        assert_eq!(q.claimed(&triggered, true), Claim::Queued);
        assert!(!q.has_unclaimed());
        assert_eq!(q.claimed_fires(), vec![(triggered, id, since)]);
    }

    #[test]
    fn a_kind_that_fires_again_while_queued_runs_once() {
        let mut q = FireQueue::default();
        let first = fire("m.a", JobKind::Compaction, at(12, 0, 0));
        let again = fire("m.a", JobKind::Compaction, at(12, 0, 10));
        let third = fire("m.a", JobKind::Compaction, at(12, 0, 20));
        q.push(first.clone(), at(12, 0, 0));
        assert_eq!(q.claimed(&first, true), Claim::Queued);
        q.push(again.clone(), at(12, 0, 10));
        // Claimed (so no other replica runs it), then folded into the waiting one.
        assert_eq!(q.to_claim(at(12, 0, 11)), vec![again.clone()]);
        assert_eq!(q.claimed(&again, true), Claim::Coalesced { into: first.at });
        // A fire still waiting for its claim drops the next one of its kind.
        q.push(third.clone(), at(12, 0, 22));
        assert!(!q.push(
            fire("m.a", JobKind::Compaction, at(12, 0, 21)),
            at(12, 0, 23)
        ));
        assert_eq!(q.claimed(&third, true), Claim::Coalesced { into: first.at });
        assert_eq!(q.to_start(at(12, 0, 30), |_| false), vec![first.clone()]);
        q.done(&first);
        assert!(q.is_empty());
        // A table no longer watched (or a kind no longer scheduled) drops its fires.
        q.push(fire("m.gone", JobKind::Expire, at(12, 1, 0)), at(12, 1, 0));
        q.retain(|f| f.table != "m.gone");
        assert!(q.is_empty());
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
