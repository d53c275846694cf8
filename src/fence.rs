//! The fencing token of a job's table lease: the (job id, epoch) the job got when it took the
//! lease, checked in the state store right before every catalog commit and every deletion of a
//! table's files.
//!
//! A lease alone does not stop a job whose process paused (GC, SIGSTOP, a slow disk) past its
//! expiry: another replica takes the table over, and the paused job, when it resumes, would
//! commit on top. The epoch grows with every acquisition of a table's lease, so a job proves the
//! lease is still the one it took by finding its job id and epoch in the store with enough time
//! left — at least [`MARGIN_FRACTION`] of the lease — that the commit it is about to send cannot
//! outlive the lease. A job that cannot prove it stops without committing or deleting, with
//! [`FenceError::Lost`].
//!
//! Tests and benchmarks that call the engines directly, holding no lease, pass [`Fence::none`];
//! every job the dispatcher runs gets a real one.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store::{LeaseView, Store};

/// The share of the lease that must be left when a job commits or deletes: a third, so the
/// heartbeat (every third of the lease) has missed at least one renewal before a job is refused.
pub const MARGIN_FRACTION: u32 = 3;

/// Why a job may no longer change its table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    #[error("lease on {table} lost: {reason}")]
    Lost { table: String, reason: String },
}

impl FenceError {
    /// Never: the job must stop; a new job takes a new lease.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// A lease a job holds: the table, the job and the epoch the acquisition got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub table: String,
    pub job_id: String,
    pub epoch: i64,
}

/// The fence of one job (cheap to clone; clones share the state).
#[derive(Debug, Clone, Default)]
pub struct Fence {
    held: Option<Arc<Held>>,
}

#[derive(Debug)]
struct Held {
    store: Store,
    lease: Lease,
    ttl: Duration,
    margin: Duration,
    /// The job's token: cancelled when the lease is found lost, so no new work starts.
    cancel: CancellationToken,
    /// The first reason the lease was found lost; once set, every check fails.
    lost: OnceLock<String>,
    /// Until when (monotonic) the last successful check or renewal proves the lease ours with
    /// the margin to spare: nobody can take a lease over before it expires.
    proven_until: Mutex<Option<Instant>>,
}

impl Fence {
    /// No lease, no checks: for engines called directly by tests and benchmarks.
    pub fn none() -> Self {
        Self::default()
    }

    /// The fence of `lease`, which lasts `ttl` from each renewal; `cancel` is the job's token.
    pub fn new(store: Store, lease: Lease, ttl: Duration, cancel: CancellationToken) -> Self {
        Self {
            held: Some(Arc::new(Held {
                store,
                lease,
                ttl,
                margin: ttl / MARGIN_FRACTION,
                cancel,
                lost: OnceLock::new(),
                proven_until: Mutex::new(None),
            })),
        }
    }

    /// The lease this fence guards, if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.held.as_ref().map(|h| &h.lease)
    }

    /// Records that the lease is lost (the first reason wins) and cancels the job.
    pub fn lose(&self, reason: impl Into<String>) {
        if let Some(h) = &self.held {
            let reason = reason.into();
            if h.lost.set(reason.clone()).is_ok() {
                tracing::error!(
                    table = h.lease.table,
                    job_id = h.lease.job_id,
                    epoch = h.lease.epoch,
                    reason,
                    "table lease lost; the job commits and deletes nothing more"
                );
            }
            h.cancel.cancel();
        }
    }

    /// The error of a lease found lost, if it was.
    pub fn lost(&self) -> Option<FenceError> {
        let h = self.held.as_ref()?;
        h.lost.get().map(|reason| FenceError::Lost {
            table: h.lease.table.clone(),
            reason: reason.clone(),
        })
    }

    /// At the end of a job: records a loss no commit or renewal noticed (the job paused past its
    /// lease and failed for another reason first), so the job's outcome tells. A store error
    /// proves nothing either way.
    pub async fn recheck(&self) {
        let Some(h) = &self.held else {
            return;
        };
        if h.lost.get().is_some() {
            return;
        }
        if let Ok(view) = h.store.lease(&h.lease.table).await
            && let Err(reason) = judge(view.as_ref(), &h.lease, 0)
        {
            self.lose(reason);
        }
    }

    /// A renewal sent at `asked` succeeded: the lease is ours for `ttl` from then.
    pub fn renewed(&self, asked: Instant) {
        if let Some(h) = &self.held {
            *h.proven_until.lock().expect("not poisoned") = Some(asked + h.ttl - h.margin);
        }
    }

    /// Checks in the store, right before a catalog commit, that the lease is still ours with at
    /// least the margin left. A failure other than an unreachable store marks the lease lost.
    pub async fn before_commit(&self) -> Result<(), FenceError> {
        let Some(h) = &self.held else {
            return Ok(());
        };
        if let Some(e) = self.lost() {
            return Err(e);
        }
        let asked = Instant::now();
        let view = h.store.lease(&h.lease.table).await.map_err(|e| {
            // Unproven is refused, but the heartbeat decides whether the lease is gone.
            self.error(format!("cannot check it in the state store: {e}"))
        })?;
        let margin_ms = i64::try_from(h.margin.as_millis()).unwrap_or(i64::MAX);
        match judge(view.as_ref(), &h.lease, margin_ms) {
            Ok(remaining_ms) => {
                let proven = Duration::from_millis((remaining_ms - margin_ms).max(0) as u64);
                *h.proven_until.lock().expect("not poisoned") = Some(asked + proven);
                Ok(())
            }
            Err(reason) => {
                self.lose(reason.clone());
                Err(self.lost().unwrap_or_else(|| self.error(reason)))
            }
        }
    }

    /// Before deleting one of the table's files: free while an earlier check or renewal still
    /// proves the lease ours (deletions come by the thousand), else [`Fence::before_commit`].
    pub async fn before_delete(&self) -> Result<(), FenceError> {
        let Some(h) = &self.held else {
            return Ok(());
        };
        if let Some(e) = self.lost() {
            return Err(e);
        }
        let proven = *h.proven_until.lock().expect("not poisoned");
        if proven.is_some_and(|until| Instant::now() < until) {
            return Ok(());
        }
        self.before_commit().await
    }

    fn error(&self, reason: String) -> FenceError {
        FenceError::Lost {
            table: self.lease().map(|l| l.table.clone()).unwrap_or_default(),
            reason,
        }
    }
}

/// Whether `view` (the table's lease in the store now) is still `lease` with more than
/// `margin_ms` left: the time left, or why not (pure).
pub fn judge(view: Option<&LeaseView>, lease: &Lease, margin_ms: i64) -> Result<i64, String> {
    let Some(v) = view else {
        return Err("the lease is gone from the state store".to_string());
    };
    if v.job_id != lease.job_id || v.epoch != lease.epoch {
        return Err(format!(
            "taken over by job {} (epoch {}; this job held epoch {})",
            v.job_id, v.epoch, lease.epoch
        ));
    }
    if v.remaining_ms <= 0 {
        return Err(format!(
            "expired {} ms ago (not renewed in time)",
            -v.remaining_ms
        ));
    }
    if v.remaining_ms < margin_ms {
        return Err(format!(
            "only {} ms left, under the {margin_ms} ms safety margin",
            v.remaining_ms
        ));
    }
    Ok(v.remaining_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            table: "m.t".into(),
            job_id: "j1".into(),
            epoch: 4,
        }
    }

    fn view(job: &str, epoch: i64, remaining_ms: i64) -> LeaseView {
        LeaseView {
            job_id: job.into(),
            epoch,
            remaining_ms,
        }
    }

    #[test]
    fn a_lease_is_judged_by_job_epoch_and_time_left() {
        let l = lease();
        assert_eq!(judge(Some(&view("j1", 4, 50_000)), &l, 20_000), Ok(50_000));
        let e = judge(Some(&view("j2", 5, 60_000)), &l, 20_000).unwrap_err();
        assert!(e.contains("taken over by job j2 (epoch 5"), "{e}");
        // The same job id under a newer epoch is a new acquisition, not ours.
        assert!(judge(Some(&view("j1", 5, 60_000)), &l, 20_000).is_err());
        let e = judge(Some(&view("j1", 4, -300)), &l, 20_000).unwrap_err();
        assert!(e.contains("expired 300 ms ago"), "{e}");
        let e = judge(Some(&view("j1", 4, 19_999)), &l, 20_000).unwrap_err();
        assert!(e.contains("safety margin"), "{e}");
        assert!(judge(None, &l, 20_000).unwrap_err().contains("gone"));
    }

    #[tokio::test]
    async fn no_fence_allows_everything() {
        let f = Fence::none();
        assert!(f.before_commit().await.is_ok());
        assert!(f.before_delete().await.is_ok());
        f.lose("ignored");
        assert!(f.lost().is_none());
    }

    #[tokio::test]
    async fn a_fence_refuses_once_the_lease_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url).await.unwrap();
        let epoch = store.try_lock("m.t", "p", "j1", 30).await.unwrap().unwrap();
        let cancel = CancellationToken::new();
        let held = Lease {
            table: "m.t".into(),
            job_id: "j1".into(),
            epoch,
        };
        let f = Fence::new(
            store.clone(),
            held,
            Duration::from_millis(30),
            cancel.clone(),
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        store
            .try_lock("m.t", "q", "j2", 60_000)
            .await
            .unwrap()
            .unwrap();
        let e = f.before_commit().await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("lease on m.t lost: taken over by job j2"),
            "{e}"
        );
        assert!(!e.is_retryable());
        assert!(cancel.is_cancelled(), "the job is stopped");
        assert_eq!(f.lost(), Some(e.clone()));
        assert_eq!(f.before_delete().await.unwrap_err(), e);
    }
}
