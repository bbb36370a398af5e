//! [`Writer`]: the fixed pool of threads that write every stream's fragments. A stream's task hands its
//! [`super::Recording`] to the pool with the frame that completes a fragment and awaits it back, so
//! no runtime worker ever blocks on the disk and the recorder's thread count does not grow with the
//! number of streams (before, each fragment write left its worker with `block_in_place`, which hands
//! the worker's core to another thread: one more thread wake-up per fragment, and a blocking pool that
//! grew to dozens of threads).
//!
//! Each task awaits its own write before it reads on, so a stream's fragments stay in order; writes of
//! different streams run on any of the pool's threads.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Threads of the pool: one per core of the appliance this is sized for (2). A fragment write (copy
/// into the page cache, SHA-256, sometimes a segment's seal) takes well under a millisecond at 2 Mbit/s;
/// two threads keep one slow write (a seal's `fsync`) from holding up every other stream's fragment.
pub const WRITER_THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

/// A handle on the pool; the threads end when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// The pool could not run a write (its thread panicked or the pool is gone).
#[derive(Debug, thiserror::Error)]
#[error("fragment writer: {0}")]
pub struct WriterError(&'static str);

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Starts `threads` writer threads (named `fragment-writer-N`).
    pub fn start(threads: usize) -> std::io::Result<Writer> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("fragment-writer-{i}"))
                .spawn(move || work(&rx))?;
        }
        Ok(Writer { jobs })
    }

    /// Runs `f` on the pool and returns its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WriterError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| WriterError("the writer threads are gone"))?;
        rx.await
            .map_err(|_| WriterError("a write panicked; see the log"))
    }
}

fn work(rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = {
            let guard = match rx.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            guard.recv()
        };
        let Ok(job) = job else { return };
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a fragment write panicked; its stream reconnects");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_the_runtime_and_survives_a_panicking_one() {
        let writer = Writer::start(2).expect("start");
        let here = std::thread::current().id();
        let there = writer
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("run");
        assert!(there.is_some_and(|n| n.starts_with("fragment-writer-")));
        assert_ne!(
            writer
                .run(|| std::thread::current().id())
                .await
                .expect("run"),
            here
        );
        let panicked = writer.run(|| -> u32 { panic!("boom") }).await;
        assert!(panicked.is_err());
        // Both threads still work after the panic.
        for i in 0..4u32 {
            assert_eq!(writer.run(move || i * 2).await.expect("run"), i * 2);
        }
    }
}
