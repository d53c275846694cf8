//! The driver process under supervision: started in its own process group, its output streamed
//! line by line into icemaint's log (and the protocol lines collected), killed as a group on
//! timeout, on cancellation (shutdown, a lost lease) and when supervision is dropped, so no
//! Spark process outlives its job.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::SparkError;
use super::report::{self, Event, ResultRow};

/// How long a driver asked to stop (SIGTERM: Spark unregisters its application) gets before
/// its group is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Lines of the driver's output kept to explain a failure.
const TAIL_LINES: usize = 40;

/// What the driver said and how it ended.
#[derive(Debug, Default)]
pub struct Driven {
    pub pid: u32,
    pub application_id: Option<String>,
    pub row: Option<ResultRow>,
    /// The driver's own `error` event.
    pub error: Option<String>,
    /// The last lines of its output.
    pub tail: Vec<String>,
    pub status: Option<ExitStatus>,
}

/// Why supervision stopped the driver.
enum Stop {
    Timeout,
    Cancelled,
}

/// Kills the driver's process group when dropped (an aborted job, a panic), unless disarmed.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn signal(&self, sig: libc::c_int) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) has no memory effects; a negative pid names the process group,
            // which still exists while its leader (our unreaped child) does.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Runs `program args` to its end, the timeout or `cancel`, whichever comes first. `table` is
/// a field of every log line.
pub async fn drive(
    program: &Path,
    args: &[String],
    timeout: Duration,
    cancel: &CancellationToken,
    table: &str,
) -> Result<Driven, SparkError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SparkError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let pid = child.id().unwrap_or_default();
    let mut guard = GroupGuard(i32::try_from(pid).ok().filter(|p| *p > 0));
    tracing::info!(table, pid, program = %program.display(), "spark driver started");
    let (tx, mut rx) = mpsc::channel::<String>(256);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(err, tx));
    }
    let mut driven = Driven {
        pid,
        ..Default::default()
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let stop = loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(line) => observe(&mut driven, line, table),
                None => break None,
            },
            () = &mut deadline => break Some(Stop::Timeout),
            () = cancel.cancelled() => break Some(Stop::Cancelled),
        }
    };
    if stop.is_some() {
        stop_group(&guard, &mut child).await;
    }
    // Whatever the driver left behind in its group goes too, before the leader is reaped (the
    // group id cannot be reused while it is unreaped).
    guard.signal(libc::SIGKILL);
    driven.status = child.wait().await.ok();
    // Reaped: the group id may now be reused by an unrelated process.
    guard.0 = None;
    match stop {
        None => Ok(driven),
        Some(Stop::Timeout) => Err(SparkError::Timeout(crate::util::human_duration(timeout))),
        Some(Stop::Cancelled) => Err(SparkError::Cancelled),
    }
}

/// SIGTERM to the group (Spark stops its context and unregisters the application), then
/// SIGKILL after [`STOP_GRACE`].
async fn stop_group(guard: &GroupGuard, child: &mut tokio::process::Child) {
    guard.signal(libc::SIGTERM);
    // Poll for the leader's exit without reaping it, so the group id stays ours.
    let wait = async {
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(STOP_GRACE, wait).await.is_err() {
        tracing::warn!(
            pid = child.id(),
            "spark driver ignored SIGTERM; killing its group"
        );
    }
    guard.signal(libc::SIGKILL);
}

/// Sends each line of `r` to `tx` until the pipe closes.
async fn forward(r: impl AsyncRead + Unpin, tx: mpsc::Sender<String>) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

/// One line of the driver's output: a protocol event, or a log line passed on to tracing.
fn observe(d: &mut Driven, line: String, table: &str) {
    match report::parse_line(&line) {
        Some(Ok(Event::Started { application_id })) => {
            tracing::info!(table, application_id, "spark application started");
            d.application_id = Some(application_id);
        }
        Some(Ok(Event::Result { row })) => d.row = Some(row),
        Some(Ok(Event::Error { message })) => d.error = Some(message),
        Some(Err(e)) => d.error = Some(e),
        None => {
            if line.contains(" ERROR ") {
                tracing::error!(table, spark = %line, "spark");
            } else if line.contains(" WARN ") {
                tracing::warn!(table, spark = %line, "spark");
            } else {
                tracing::info!(table, spark = %line, "spark");
            }
            if d.tail.len() == TAIL_LINES {
                d.tail.remove(0);
            }
            d.tail.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["-c".into(), script.into()]
    }

    #[tokio::test]
    async fn events_and_log_lines_are_collected() {
        let script = r#"echo 'some log'; echo 'ICEMAINT_SPARK {"event":"started","application_id":"app-7"}'; echo 'boom ERROR x' >&2"#;
        let d = drive(
            Path::new("sh"),
            &sh(script),
            Duration::from_secs(600),
            &CancellationToken::new(),
            "t",
        )
        .await
        .unwrap();
        assert_eq!(d.application_id.as_deref(), Some("app-7"));
        assert_eq!(d.tail.len(), 2);
        assert!(d.status.unwrap().success());
    }

    /// The whole group goes: the shell's background child too.
    #[tokio::test]
    async fn cancellation_kills_the_group() {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let run = tokio::spawn(async move {
            drive(
                Path::new("sh"),
                &sh("sleep 301 & echo $!; wait"),
                Duration::from_secs(600),
                &c2,
                "t",
            )
            .await
        });
        // Bound by work: wait until the background child's pid is readable in /proc.
        let pgid_child = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let found = std::fs::read_dir("/proc").unwrap().find_map(|e| {
                let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
                (cmd == "sleep\u{0}301\u{0}").then_some(pid)
            });
            if let Some(p) = found {
                break p;
            }
        };
        cancel.cancel();
        let e = run.await.unwrap().unwrap_err();
        assert!(matches!(e, SparkError::Cancelled), "{e}");
        // Reaped by init or a zombie at most: not running.
        let state = std::fs::read_to_string(format!("/proc/{pgid_child}/stat")).unwrap_or_default();
        let state = state.rsplit(')').next().unwrap_or("").trim_start();
        assert!(state.is_empty() || state.starts_with('Z'), "{state}");
    }

    #[tokio::test]
    async fn the_timeout_kills_the_driver() {
        let e = drive(
            Path::new("sh"),
            &sh("sleep 300"),
            Duration::from_millis(200),
            &CancellationToken::new(),
            "t",
        )
        .await
        .unwrap_err();
        assert!(matches!(e, SparkError::Timeout(_)), "{e}");
    }
}
