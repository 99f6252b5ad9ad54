//! Counting the requests a piece of work sends to P100 (one job run), across the tasks it
//! spawns: the work runs inside [`counted`], and a task it spawns inside [`propagate`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

tokio::task_local! {
    static CALLS: Arc<AtomicU64>;
}

/// Runs `work`; returns its output and the P100 requests it sent.
pub async fn counted<F: Future>(work: F) -> (F::Output, u64) {
    let calls = Arc::new(AtomicU64::new(0));
    let output = CALLS.scope(calls.clone(), work).await;
    (output, calls.load(Ordering::Relaxed))
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
        let ((), n) = counted(async {
            record();
            tokio::spawn(propagate(async { record() })).await.unwrap();
            tokio::spawn(async { record() }).await.unwrap(); // not propagated: not counted
        })
        .await;
        assert_eq!(n, 2);
    }
}
