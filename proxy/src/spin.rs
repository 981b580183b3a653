//! Busy polling: a node keeps polling its sockets for a short while after
//! the last client batch before its thread sleeps (D116).
//!
//! Why: on loopback and fast networks, a client's write to a server whose
//! thread sleeps in `epoll_wait` pays for waking that thread (a scheduler
//! wake-up and an inter-processor interrupt, in the client's system call).
//! A server that drains its queue faster than clients refill it sleeps and
//! is woken again thousands of times a second, and its clients slow down by
//! what the wake-ups cost them: measured with `redis-benchmark -P 1` on two
//! cores, the client spent 10.1 µs of CPU per request against a sleeping
//! server and 9.0 µs against a polling one (the server slept 170–190 times
//! per 1,000 requests, and once when it polls). Linux's `busy_poll` and
//! user-space network stacks make the same trade.
//!
//! The cost is CPU while polling, so polling is adaptive: after each sleep
//! the poller measures how soon work came back, and polls before the next
//! sleep only if it came back within the budget (`busy-poll-us`, CONFIG
//! SET; 0 turns polling off). A steady trickle of requests further apart
//! than the budget never makes the node poll; a busy node fills its gaps.
//! It runs only on a single-threaded runtime (a node given one CPU, as in
//! the benchmark); on a multi-threaded one the scheduler's own parking
//! applies.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The default polling budget in microseconds (`busy-poll-us`).
pub const BUSY_POLL_US_DEFAULT: u64 = 50;

/// The largest budget CONFIG SET accepts (one second).
pub const BUSY_POLL_US_MAX: u64 = 1_000_000;

/// One server's busy-poll state: the connections mark each batch they
/// serve; the poller task spins the runtime while batches keep coming.
#[derive(Debug)]
pub struct BusyPoll {
    /// Batches served, as a changing stamp (one thread writes it when the
    /// poller runs: single-threaded runtimes only).
    batches: AtomicU64,
    /// The poller sleeps and wants a wake-up at the next batch.
    parked: AtomicBool,
    wake: Notify,
    /// The budget in microseconds; 0 = off.
    budget_us: AtomicU64,
    /// CONFIG SET changed the budget (wakes a poller that was off).
    reconfigured: Notify,
}

impl Default for BusyPoll {
    fn default() -> Self {
        BusyPoll::new(BUSY_POLL_US_DEFAULT)
    }
}

/// Whether polling before the next sleep is worth its CPU: work came back
/// within the budget after the last sleep.
pub fn worth_polling(slept: Duration, budget: Duration) -> bool {
    !budget.is_zero() && slept < budget
}

impl BusyPoll {
    /// A poller with a budget of `budget_us` microseconds (0 = off).
    pub fn new(budget_us: u64) -> BusyPoll {
        BusyPoll {
            batches: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            wake: Notify::new(),
            budget_us: AtomicU64::new(budget_us.min(BUSY_POLL_US_MAX)),
            reconfigured: Notify::new(),
        }
    }

    /// A connection served a batch: the poller keeps polling, or wakes.
    #[inline]
    pub fn batch(&self) {
        // Not a read-modify-write: only the stamp's change matters.
        self.batches.store(self.batches.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        if self.parked.load(Ordering::Relaxed) {
            self.parked.store(false, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// The budget in microseconds (0 = off).
    pub fn budget_us(&self) -> u64 {
        self.budget_us.load(Ordering::Relaxed)
    }

    /// Sets the budget (CONFIG SET busy-poll-us), clamped to
    /// [`BUSY_POLL_US_MAX`].
    pub fn set_budget_us(&self, budget_us: u64) {
        self.budget_us.store(budget_us.min(BUSY_POLL_US_MAX), Ordering::Relaxed);
        self.reconfigured.notify_one();
    }

    /// True while the poller sleeps until the next batch (not polling).
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    /// The poller: run as a task of the server's single-threaded runtime
    /// for the server's lifetime. While polling it yields at every turn, so
    /// the runtime checks its sockets without sleeping; once no batch has
    /// come for the budget (or polling is not worth it), it sleeps until the
    /// next batch.
    pub async fn run(&self) {
        let mut seen = self.batches.load(Ordering::Relaxed);
        let mut since = Instant::now();
        let mut polling = true;
        loop {
            let budget = Duration::from_micros(self.budget_us());
            if budget.is_zero() {
                // Off: no task turns, no wake-ups from the connections.
                self.reconfigured.notified().await;
                continue;
            }
            let now = self.batches.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                since = Instant::now();
                polling = true;
            } else if !polling || since.elapsed() >= budget {
                let woken = self.wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                self.parked.store(true, Ordering::Relaxed);
                let slept_at = Instant::now();
                tokio::select! {
                    _ = woken => {}
                    _ = self.reconfigured.notified() => {}
                }
                self.parked.store(false, Ordering::Relaxed);
                polling = worth_polling(slept_at.elapsed(), budget);
                seen = self.batches.load(Ordering::Relaxed);
                since = Instant::now();
                continue;
            }
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn polling_pays_only_when_work_came_back_within_the_budget() {
        let budget = Duration::from_micros(50);
        assert!(worth_polling(Duration::from_micros(10), budget));
        assert!(!worth_polling(Duration::from_micros(50), budget));
        assert!(!worth_polling(Duration::from_millis(1), budget));
        assert!(!worth_polling(Duration::ZERO, Duration::ZERO), "a zero budget never polls");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_poller_sleeps_when_batches_stop_and_wakes_at_the_next() {
        let poll = Arc::new(BusyPoll::new(200));
        let poller = tokio::spawn({
            let poll = poll.clone();
            async move { poll.run().await }
        });
        // Busy: batches a few microseconds apart keep it polling.
        for _ in 0..100 {
            poll.batch();
            tokio::task::yield_now().await;
            assert!(!poll.is_parked(), "parked while batches keep coming");
        }
        // Idle: it parks once the budget has passed with no batch.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !poll.is_parked() {
            assert!(Instant::now() < deadline, "the poller never parked");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A batch wakes it.
        poll.batch();
        assert!(!poll.is_parked());
        tokio::task::yield_now().await;
        // Off: it parks on the configuration instead, and batches do not
        // wake it.
        poll.set_budget_us(0);
        tokio::time::sleep(Duration::from_millis(5)).await;
        poll.batch();
        assert!(!poll.is_parked());
        assert_eq!(poll.budget_us(), 0);
        poll.set_budget_us(u64::MAX);
        assert_eq!(poll.budget_us(), BUSY_POLL_US_MAX);
        poller.abort();
    }
}
