//! The threads one-thread groups run on: one per CPU, started on first use and kept for the
//! process's life (idle, they wait on a channel).
//!
//! Why not tokio's blocking pool: it starts another thread whenever all of its threads are busy
//! and keeps idle ones for ten seconds, so over a job the groups land on many different threads.
//! glibc's allocator gives threads their own arenas, and an arena keeps the memory it once held
//! (a group's output row group is tens of MiB at 10x): on tokio's pool, 10x peak RSS went from
//! 163-186 MiB to 432-814 MiB. A fixed thread per CPU keeps as many arenas busy as the async path's
//! runtime workers did, and bounds the groups running at once to the cores (more would only
//! share them). Jobs wait in order of submission.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// What a job returned, or its panic.
pub(super) type Outcome<T> = std::thread::Result<T>;

fn queue() -> &'static Mutex<Sender<Job>> {
    static QUEUE: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("icemaint-rewrite-{i}"))
                .spawn(move || work(&rx))
                .expect("cannot start a rewrite thread");
        }
        Mutex::new(tx)
    })
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Runs `job` on one of the pool's threads; the receiver gets its result (or its panic) when
/// it is done. Dropping the receiver does not stop the job: it has to notice by itself.
pub(super) fn spawn<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> oneshot::Receiver<Outcome<T>> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move || {
        // A panic stays with its job: the thread lives on for the next one.
        let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(job)));
    });
    // The threads never exit while the process lives, so the channel stays open.
    let _ = queue().lock().unwrap_or_else(|e| e.into_inner()).send(job);
    rx
}
