//! A precise sleep for simulated latency.
//!
//! Tokio's timer has millisecond resolution and rounds every deadline up, and the runtime
//! parks with a millisecond timeout: on this kind of machine a `sleep(50ms)` ends about
//! 1.2 ms late on average. A simulated call stands in for a network round trip, which has
//! no such rounding, so a chain of simulated calls would drift 2–3% behind the latency it
//! claims to model. This timer keeps the deadlines in one background thread that waits on
//! a condition variable with nanosecond timeouts (the kernel's high-resolution timers,
//! typically within ~0.1 ms) and completes a oneshot channel for each deadline.
//!
//! It runs on real time, so it does not follow tokio's paused test clock; the simulated
//! provider uses tokio's timer instead when [`crate::SimConfig::precise_timer`] is off.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Wait `d` of real time, precisely.
pub async fn sleep(d: Duration) {
    if d.is_zero() {
        return;
    }
    let (tx, rx) = oneshot::channel();
    if timer().schedule(Instant::now() + d, tx) {
        let _ = rx.await;
    } else {
        // The timer thread could not be started: tokio's coarser timer still works.
        // (Boxed: a tokio `Sleep` would add 112 bytes to every waiting call's future.)
        Box::pin(tokio::time::sleep(d)).await;
    }
}

struct Entry {
    at: Instant,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so the max-heap pops the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Timer {
    state: Mutex<(BinaryHeap<Entry>, u64)>,
    wake: Condvar,
    running: bool,
}

impl Timer {
    /// Queue a deadline; false when the timer thread is not running.
    fn schedule(&self, at: Instant, tx: oneshot::Sender<()>) -> bool {
        if !self.running {
            return false;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let earliest = st.0.peek().is_none_or(|e| at < e.at);
        st.1 += 1;
        let seq = st.1;
        st.0.push(Entry { at, seq, tx });
        drop(st);
        // Only a new earliest deadline changes how long the thread must wait.
        if earliest {
            self.wake.notify_one();
        }
        true
    }

    fn run(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            match st.0.peek() {
                None => st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(e) if e.at <= now => {
                    if let Some(e) = st.0.pop() {
                        let _ = e.tx.send(());
                    }
                }
                Some(e) => {
                    let wait = e.at - now;
                    st = self.wake.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
    }
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let probe = Timer { state: Mutex::new((BinaryHeap::new(), 0)), wake: Condvar::new(), running: true };
        let timer: &'static Timer = Box::leak(Box::new(probe));
        let started =
            std::thread::Builder::new().name("belt-sim-timer".into()).spawn(move || timer.run()).is_ok();
        if started {
            timer
        } else {
            Box::leak(Box::new(Timer {
                state: Mutex::new((BinaryHeap::new(), 0)),
                wake: Condvar::new(),
                running: false,
            }))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_at_least_as_long_and_in_deadline_order() {
        let start = Instant::now();
        let (a, b, c) = tokio::join!(
            async {
                sleep(Duration::from_millis(30)).await;
                Instant::now()
            },
            async {
                sleep(Duration::from_millis(10)).await;
                Instant::now()
            },
            async {
                sleep(Duration::from_millis(20)).await;
                Instant::now()
            },
        );
        assert!(b - start >= Duration::from_millis(10));
        assert!(c - start >= Duration::from_millis(20));
        assert!(a - start >= Duration::from_millis(30));
        assert!(b <= c && c <= a);
        sleep(Duration::ZERO).await;
    }
}
