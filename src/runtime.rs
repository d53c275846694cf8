//! The serve runtime: starts the daemon's named tasks (HTTP server, scheduler, job sweeper,
//! signal watchers) in one `JoinSet` under the context's root `CancellationToken`, and on
//! SIGTERM/Ctrl-C or a failed task cancels them and drains running jobs for a grace period.
//!
//! A job is never cut off in the middle of a commit: cancellation stops new work from starting,
//! and the drain waits for commits already sent.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::Context;

/// `icemaint serve`: runs the daemon until SIGTERM / Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen.clone();
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let ctx = Context::new(config).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, tables_policies = ctx.policies().policies.len(), "icemaint serving");
    run(ctx, listener, grace).await
}

/// Runs the server, refresher and scheduler on `listener` until the context's shutdown token is
/// cancelled (signals cancel it), then drains jobs for at most `grace`.
pub async fn run(
    ctx: Arc<Context>,
    listener: tokio::net::TcpListener,
    grace: Duration,
) -> anyhow::Result<()> {
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let token = ctx.shutdown.clone();
    {
        let token = token.clone();
        tasks.spawn(async move { ("signals", wait_for_signals(token).await) });
    }
    {
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move { ("signals-hup", reload_on_sighup(ctx).await) });
    }
    {
        let app = crate::server::router(Arc::clone(&ctx));
        let token = token.clone();
        tasks.spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .map_err(anyhow::Error::from);
            ("http", r)
        });
    }
    {
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move { ("scheduler", crate::scheduler::run(ctx).await) });
    }
    {
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move { ("job-sweeper", sweep_abandoned_jobs(ctx).await) });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((name, Ok(()))) => tracing::debug!(task = name, "task finished"),
            Ok((name, Err(e))) => {
                tracing::error!(task = name, error = %e, "task failed; shutting down");
                first_error.get_or_insert(e);
                token.cancel();
            }
            Err(e) if e.is_panic() => {
                tracing::error!(error = %e, "task panicked; shutting down");
                token.cancel();
            }
            Err(_) => {}
        }
        if token.is_cancelled() && tasks.len() <= 1 {
            // Only the signal watcher may remain; it ends on cancellation too.
            tasks.abort_all();
        }
    }
    tracing::info!(grace_seconds = grace.as_secs(), "draining running jobs");
    if !ctx.jobs.drain(grace).await {
        tracing::warn!(
            "jobs still running after the grace period; exiting (commits already sent are not cut off)"
        );
    }
    tracing::info!("icemaint stopped");
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Fails the jobs of processes that died (this one's predecessor, a crashed CLI run, another
/// replica) so the job history does not show them running forever, and forgets old schedule
/// fire claims. A store error is logged and retried at the next tick: it must not stop the
/// daemon.
async fn sweep_abandoned_jobs(ctx: Arc<Context>) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(ctx.jobs.sweep_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention = crate::scheduler::FIRE_CLAIM_RETENTION.as_millis() as i64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = ctx.jobs.fail_abandoned().await {
                    tracing::warn!(error = %e, "looking for abandoned jobs failed");
                }
                if let Err(e) = ctx.store.prune_fire_claims(retention).await {
                    tracing::warn!(error = %e, "forgetting old fire claims failed");
                }
            }
            _ = ctx.shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn wait_for_signals(token: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received; shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = token.cancelled() => {}
    }
    token.cancel();
    Ok(())
}

async fn reload_on_sighup(ctx: Arc<Context>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = ctx.reload_policies() {
                    tracing::error!(error = %e, "policy reload failed; keeping the old policies");
                }
            }
            _ = ctx.shutdown.cancelled() => return Ok(()),
        }
    }
}
