//! The queue behind `call_soon_threadsafe`.
//!
//! Any thread may [`Inbox::push`]; only the loop's thread drains. The `wake_pending` flag keeps
//! producers from writing the eventfd more than once per loop iteration, and doubles as a cheap
//! "anything to drain?" check so an iteration with no thread-safe calls costs one atomic load.
//!
//! Ordering argument: the consumer settles `wake_pending` while it holds the lock it takes the
//! items under: cleared when it took everything, left set when items remain (so the next drain
//! looks again without a wake-up). A producer pushes under that lock and sets the flag after it;
//! one that pushed after a drain that cleared the flag finds it clear, sets it and wakes the
//! reactor, so its item is picked up on the next iteration; a producer that pushed before the
//! drain had its item taken, or left for the next drain with the flag set. No item can sit in
//! the queue while the loop sleeps, as long as each iteration starts with a drain (the loop's
//! does) and does not sleep while anything drained is ready.
//!
//! A drain takes at most a given number of items: producers that push faster than the loop runs
//! their callbacks would otherwise make every iteration longer than the last, and timers and I/O
//! would wait behind the flood.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::reactor::Waker;

pub struct Inbox<T> {
    items: Mutex<VecDeque<T>>,
    wake_pending: AtomicBool,
    waker: Arc<Waker>,
}

impl<T> Inbox<T> {
    pub fn new(waker: Arc<Waker>) -> Self {
        Inbox {
            items: Mutex::new(VecDeque::new()),
            wake_pending: AtomicBool::new(false),
            waker,
        }
    }

    fn items(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `item` and makes sure the loop wakes up to take it. Returns how many items are
    /// queued now, this one included: the backlog the loop has yet to take.
    pub fn push(&self, item: T) -> std::io::Result<usize> {
        let backlog = {
            let mut items = self.items();
            items.push_back(item);
            items.len()
        };
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.waker.wake()?;
        }
        Ok(backlog)
    }

    /// Moves up to `max` of the items queued so far into `out`, in push order; returns how many.
    #[inline]
    pub fn drain_into(&self, out: &mut impl Extend<T>, max: usize) -> usize {
        // The common case, nothing from other threads, is one atomic load, inlined at the caller.
        if max == 0 || !self.wake_pending.load(Ordering::Acquire) {
            return 0;
        }
        self.drain_slow(out, max)
    }

    #[inline(never)]
    fn drain_slow(&self, out: &mut impl Extend<T>, max: usize) -> usize {
        let mut items = self.items();
        let n = items.len().min(max);
        out.extend(items.drain(..n));
        // Under the lock, see the module docs.
        self.wake_pending
            .store(!items.is_empty(), Ordering::Release);
        n
    }

    /// Drops everything still queued (the loop is closing).
    pub fn clear(&self) -> Vec<T> {
        let mut items = self.items();
        self.wake_pending.store(false, Ordering::Release);
        std::mem::take(&mut *items).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::{Events, Reactor};
    use std::time::Duration;

    /// Four threads pushing (thread, 0..10_000) each.
    fn spawn_producers(inbox: &Arc<Inbox<(u64, u64)>>) -> Vec<std::thread::JoinHandle<()>> {
        (0..4u64)
            .map(|t| {
                let inbox = inbox.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        inbox.push((t, i)).unwrap();
                    }
                })
            })
            .collect()
    }

    fn assert_per_thread_order(got: &[(u64, u64)]) {
        assert_eq!(got.len(), 40_000);
        for t in 0..4 {
            let seq: Vec<u64> = got.iter().filter(|x| x.0 == t).map(|x| x.1).collect();
            assert_eq!(seq, (0..10_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn items_from_many_threads_arrive_in_per_thread_order() {
        let mut reactor = Reactor::new().unwrap();
        let inbox = Arc::new(Inbox::new(reactor.waker().clone()));
        let threads = spawn_producers(&inbox);
        let mut got = Vec::new();
        let mut events = Events::with_capacity(4);
        while got.len() < 40_000 {
            reactor
                .poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            inbox.drain_into(&mut got, usize::MAX);
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_per_thread_order(&got);
    }

    #[test]
    fn push_wakes_a_sleeping_reactor_once() {
        let mut reactor = Reactor::new().unwrap();
        let inbox = Inbox::new(reactor.waker().clone());
        inbox.push(1).unwrap();
        inbox.push(2).unwrap();
        let mut events = Events::with_capacity(4);
        reactor
            .poll(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        assert!(events.woken());
        let mut got = Vec::new();
        inbox.drain_into(&mut got, usize::MAX);
        assert_eq!(got, vec![1, 2]);
        reactor
            .poll(&mut events, Some(Duration::from_millis(1)))
            .unwrap();
        assert!(!events.woken());
        inbox.drain_into(&mut got, usize::MAX);
        assert_eq!(got, vec![1, 2]);
    }

    #[test]
    fn a_bounded_drain_leaves_the_rest_for_the_next_without_a_wake_up() {
        let mut reactor = Reactor::new().unwrap();
        let inbox = Inbox::new(reactor.waker().clone());
        for i in 0..5 {
            inbox.push(i).unwrap();
        }
        let mut events = Events::with_capacity(4);
        reactor
            .poll(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        assert!(events.woken());
        let mut got = Vec::new();
        assert_eq!(inbox.drain_into(&mut got, 2), 2);
        assert_eq!(got, vec![0, 1]);
        // Nothing new was pushed, so nothing wakes the reactor, yet the rest is still found.
        reactor
            .poll(&mut events, Some(Duration::from_millis(1)))
            .unwrap();
        assert!(!events.woken());
        assert_eq!(inbox.drain_into(&mut got, 2), 2);
        assert_eq!(inbox.drain_into(&mut got, 2), 1);
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(inbox.drain_into(&mut got, 2), 0);
        // Emptied: the next push wakes the reactor again.
        inbox.push(5).unwrap();
        reactor
            .poll(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        assert!(events.woken());
        assert_eq!(inbox.drain_into(&mut got, 10), 1);
    }

    #[test]
    fn bounded_drains_from_racing_producers_lose_nothing() {
        let mut reactor = Reactor::new().unwrap();
        let inbox = Arc::new(Inbox::new(reactor.waker().clone()));
        let threads = spawn_producers(&inbox);
        let mut got = Vec::new();
        let mut events = Events::with_capacity(4);
        loop {
            // As the loop: block only when the last drain left nothing behind.
            let n = inbox.drain_into(&mut got, 7);
            if got.len() == 40_000 {
                break;
            }
            let timeout = if n == 7 {
                Duration::ZERO
            } else {
                Duration::from_secs(5)
            };
            reactor.poll(&mut events, Some(timeout)).unwrap();
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_per_thread_order(&got);
    }
}
