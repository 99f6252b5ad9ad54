//! Counting the requests a piece of work sends to P100 (one job run), across the tasks it
//! spawns: the work runs inside [`counted`], and a task it spawns inside [`propagate`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

tokio::task_local! {
    static CALLS: Arc<AtomicU64>;
}

/// The P100 requests of the work run through [`Counter::count`]; readable even when that
/// work was stopped part-way (a job whose lease was taken).
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Runs `work`, counting its requests here.
    pub async fn count<F: Future>(&self, work: F) -> F::Output {
        CALLS.scope(self.0.clone(), work).await
    }

    /// Requests counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// `work`, counted with the caller's count when the caller is counted: wrap a future before
/// `tokio::spawn`, which does not carry task-locals.
pub fn propagate<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let calls = CALLS.try_with(Arc::clone).ok();
    async move {
        match calls {
            Some(calls) => CALLS.scope(calls, work).await,
            None => work.await,
        }
    }
}

/// One request sent.
pub(crate) fn record() {
    let _ = CALLS.try_with(|calls| calls.fetch_add(1, Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_across_spawned_tasks_and_only_inside() {
        record();
        let counter = Counter::default();
        counter
            .count(async {
                record();
                tokio::spawn(propagate(async { record() })).await.unwrap();
                tokio::spawn(async { record() }).await.unwrap(); // not propagated: not counted
            })
            .await;
        assert_eq!(counter.get(), 2);
        // Work stopped part-way keeps what it sent.
        let stopped = Counter::default();
        let work = stopped.count(async {
            record();
            std::future::pending::<()>().await;
        });
        let _ = tokio::time::timeout(std::time::Duration::from_millis(10), work).await;
        assert_eq!(stopped.get(), 1);
    }
}
